// Helpers shared by Mission Control's pages: the admin API client, the
// session, building DOM nodes, dialogs and formatting.

// session is who is logged in: {user, csrf, expires_at, projects}; null
// while logged out.
export const state = { session: null, onExpired: () => {} };

// ApiError is an answer other than 2xx: its status, the server's message
// and the whole body (a 502 of a synchronous event carries its id).
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// api calls the admin API (or the console's own routes) with the session
// cookie, and the CSRF token on every change. A 401 means the session is
// over: the login form comes back.
export async function api(method, path, body) {
  const headers = {};
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  if (method !== 'GET' && state.session) headers['X-CSRF-Token'] = state.session.csrf;
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'the node did not answer: is it running? Try again.', null);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text.slice(0, 300) };
    }
  }
  if (!res.ok) {
    const msg = (data && data.error) || `${res.status} ${res.statusText}`;
    if (res.status === 401 && state.session && !path.endsWith('/login')) state.onExpired();
    throw new ApiError(res.status, msg, data);
  }
  return data;
}

// query writes the non-empty fields of an object as a query string.
export function query(fields) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

// h builds an element: h('button', {class: 'x', onclick: f, 'data-testid': 'y'}, 'text', child...).
// Attributes named on* become listeners; false, null and undefined ones are left out.
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : String(c));
  }
}

// svg builds an SVG element, as h does.
export const svg = (tag, attrs, ...children) => h('svg:' + tag, attrs, ...children);

// clear empties an element and fills it with children.
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// Formatting.
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const numFmt = new Intl.NumberFormat();

// when shows a time: the time of day for today's, with the date before.
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
}

// timeCell is a <time> showing when(iso), its full value on hover.
export function timeCell(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso }, when(iso));
}

export const num = (n) => (n === null || n === undefined ? '—' : numFmt.format(n));

// bytes shows a size in B, KiB, MiB or GiB.
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

// pretty writes JSON indented; a string that holds JSON is parsed first.
export function pretty(v) {
  if (typeof v === 'string') {
    try {
      return JSON.stringify(JSON.parse(v), null, 2);
    } catch {
      return v;
    }
  }
  return JSON.stringify(v, null, 2);
}

// badge is a status's colored label.
export const badge = (status) => h('span', { class: 'badge ' + status, 'data-testid': 'status' }, status);

// emptyState says there is nothing to show, and what to do about it.
export const emptyState = (title, ...what) => h('div', { class: 'empty', 'data-testid': 'empty' }, h('strong', null, title), h('p', null, ...what));

// errorBox shows an error of a call in a page.
export const errorBox = (err) => h('p', { class: 'error', role: 'alert' }, err.message || String(err));

// toast shows a short message at the foot of the window for a few seconds.
let toastTimer;
export function toast(msg, kind = '') {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.className = 'toast ' + kind;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

// dialog opens a modal dialog with a title and a body, focusing its
// first field; it closes with Escape or close(), and gives the focus back
// to what had it. onClose runs once it is closed.
export function dialog({ id, title, body, wide = false, onClose }) {
  const opener = document.activeElement;
  const closeBtn = h('button', { type: 'button', class: 'quiet close', 'aria-label': 'Close', 'data-testid': 'close' }, '×');
  const titleId = id + '-title';
  const d = h('dialog', { id, class: wide ? 'wide' : '', 'aria-labelledby': titleId },
    h('div', { class: 'dialog-head' }, h('h2', { id: titleId }, title), closeBtn),
    body);
  closeBtn.addEventListener('click', () => d.close());
  d.addEventListener('close', () => {
    d.remove();
    if (opener && opener.isConnected) opener.focus();
    if (onClose) onClose();
  });
  document.body.append(d);
  d.showModal();
  const first = d.querySelector('input:not([type=hidden]):not([disabled]), textarea, select:not([disabled]), .dialog-body button');
  (first || closeBtn).focus();
  return d;
}

// confirm asks a yes-or-no question in a dialog; it resolves to true
// when the action's button is pressed.
export function confirm(title, text, action) {
  return new Promise((resolve) => {
    let yes = false;
    const ok = h('button', { type: 'button', class: 'primary', id: 'confirm-ok' }, action);
    const cancel = h('button', { type: 'button', id: 'confirm-cancel' }, 'Cancel');
    const d = dialog({
      id: 'confirm-dialog', title,
      body: h('div', { class: 'dialog-body' }, h('p', { id: 'confirm-text' }, text), h('div', { class: 'actions' }, cancel, ok)),
      onClose: () => resolve(yes),
    });
    ok.addEventListener('click', () => { yes = true; d.close(); });
    cancel.addEventListener('click', () => d.close());
    cancel.focus();
  });
}

// field is a labelled input with a place for its error beside it: the
// input gets id prefix-name, the error prefix-name-error.
export function field(prefix, name, label, input, hint) {
  const fid = prefix + '-' + name.replaceAll('.', '-');
  input.id = fid;
  input.name = name;
  const err = h('p', { class: 'error field-error', id: fid + '-error', hidden: true, 'aria-live': 'polite' });
  input.setAttribute('aria-describedby', fid + '-error' + (hint ? ' ' + fid + '-hint' : ''));
  return h('div', { class: 'field', 'data-field': name },
    h('label', { for: fid }, label), input,
    hint ? h('p', { class: 'hint', id: fid + '-hint' }, hint) : null, err);
}

// setFieldError shows msg beside the field of name in form (hides it when
// msg is empty), and reports whether the form has such a field.
export function setFieldError(form, name, msg) {
  const wrap = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
  if (!wrap) return false;
  const err = wrap.querySelector('.field-error');
  const input = wrap.querySelector('input, select, textarea');
  err.textContent = msg || '';
  err.hidden = !msg;
  if (input) input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  return true;
}

// clearErrors hides every field error of a form.
export function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) { e.hidden = true; e.textContent = ''; }
  for (const i of form.querySelectorAll('[aria-invalid]')) i.setAttribute('aria-invalid', 'false');
}

// pageHead is a page's title with its tools on the right.
export const pageHead = (title, ...tools) => h('div', { class: 'page-head' }, h('h1', null, title), h('div', { class: 'tools' }, ...tools));

// projectPicker is a select of the session's projects (with "All
// projects" when allowAll), calling onchange with the chosen id.
export function projectPicker(value, onchange, allowAll = true) {
  const projects = state.session ? state.session.projects || [] : [];
  if (projects.length < 2 && allowAll) return null;
  const sel = h('select', { id: 'project-picker', 'aria-label': 'Project' },
    allowAll ? h('option', { value: '' }, 'All projects') : null,
    projects.map((p) => h('option', { value: p, selected: p === value }, p)));
  sel.addEventListener('change', () => onchange(sel.value));
  return sel;
}

// every calls f now and then every ms milliseconds while the page shows;
// the returned function stops it.
export function every(ms, f) {
  let stopped = false;
  let timer;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) await f();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}
