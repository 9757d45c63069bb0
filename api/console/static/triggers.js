// Event Triggers: every project's triggers with their counts; add, edit
// and delete the console's; trigger an event of a trigger's type.
import {
  api, h, fill, pageHead, emptyState, errorBox, toast, dialog, confirm, field, setFieldError, clearErrors,
  projectPicker, state, num, pretty, ApiError,
} from './util.js';

let project = '';

export function render(view, params) {
  project = params.get('project') || project;
  const list = h('div', { id: 'triggers-list' }, h('p', { class: 'muted' }, 'Loading…'));
  const add = h('button', { type: 'button', class: 'primary', id: 'add-trigger' }, '+ Add trigger');
  add.addEventListener('click', () => editTrigger(null, reload));
  const picker = projectPicker(project, (p) => { project = p; reload(); });
  fill(view, pageHead('Event Triggers', picker, add), list);

  async function reload() {
    try {
      const [t, c] = await Promise.all([api('GET', '/v1/admin/triggers'), api('GET', '/v1/admin/counts?status=staged,failed')]);
      drawTable(list, t.triggers.filter((x) => !project || x.project === project), c.triggers, reload);
    } catch (ex) {
      if (ex.status !== 401) fill(list, errorBox(ex));
    }
  }
  reload();
}

// optionsText sums up a trigger's options (tables, columns, files).
function optionsText(o) {
  if (!o) return '';
  const parts = [];
  if (o.db) parts.push('db ' + o.db);
  if (o.col) parts.push('tables ' + o.col);
  if (o.columns) parts.push('columns ' + o.columns);
  if (o.store) parts.push('store ' + o.store);
  if (o.path) parts.push('path ' + o.path);
  return parts.join(' · ');
}

function drawTable(list, triggers, counts, reload) {
  if (triggers.length === 0) {
    fill(list, emptyState('No triggers yet',
      'Add one with ', h('strong', null, '+ Add trigger'), ', or define them under a project\'s ', h('code', null, 'triggers:'), ' in the config.'));
    return;
  }
  const countOf = (t) => counts.find((c) => c.project === t.project && c.trigger === t.name) || {};
  const multi = new Set(triggers.map((t) => t.project)).size > 1 || (state.session.projects || []).length > 1;
  const rows = triggers.map((t) => {
    const c = countOf(t);
    const tr = t.trigger;
    // DB_* and FILE_* events are raised by the sources only: the API refuses them.
    const raised = /^(DB_|FILE_)/.test(tr.type);
    const fire = h('button', { type: 'button', 'data-testid': 'trigger-btn', disabled: raised,
      title: raised ? 'Its events come from a database or a watched directory, not from here' : 'Trigger an event of type ' + tr.type }, 'Trigger');
    fire.addEventListener('click', () => fireEvent(t));
    const actions = [fire];
    if (t.defined_in === 'store') {
      const edit = h('button', { type: 'button', 'data-testid': 'edit-btn' }, 'Edit');
      edit.addEventListener('click', () => editTrigger(t, reload));
      const del = h('button', { type: 'button', class: 'danger', 'data-testid': 'delete-btn' }, 'Delete');
      del.addEventListener('click', () => deleteTrigger(t, reload));
      actions.push(edit, del);
    }
    const eventsLink = (status, n) => (n ? h('a', { href: `#/events?project=${encodeURIComponent(t.project)}&trigger=${encodeURIComponent(t.name)}&status=${status}`, class: 'count ' + status }, num(n)) : h('span', { class: 'muted' }, '0'));
    return h('tr', { 'data-trigger': t.project + '/' + t.name },
      h('td', null, h('strong', null, t.name), multi ? h('div', { class: 'muted small' }, t.project) : null,
        t.problem ? h('div', { class: 'problem small', 'data-testid': 'problem' }, '⚠ ' + t.problem) : null),
      h('td', null, h('code', null, tr.type)),
      h('td', { class: 'url' }, h('span', { title: tr.url }, tr.url)),
      h('td', { class: 'num' }, num(tr.retries)),
      h('td', null, tr.timeout),
      h('td', { class: 'small' }, optionsText(tr.options) || h('span', { class: 'muted' }, '—'),
        tr.format && tr.format !== 'structured' ? h('div', { class: 'muted' }, 'format ' + tr.format) : null),
      h('td', null, t.defined_in === 'config'
        ? h('span', { class: 'tag', title: 'Defined in the config file: read-only here. Change it in the file of every node and send each a SIGHUP.' }, 'config')
        : h('span', { class: 'tag console', title: 'Defined here, kept in the store' }, 'console')),
      h('td', { class: 'num' }, eventsLink('staged', c.staged)),
      h('td', { class: 'num' }, eventsLink('failed', c.failed)),
      h('td', { class: 'actions-cell' }, h('div', { class: 'row-actions' }, actions)));
  });
  fill(list,
    h('div', { class: 'table-wrap' }, h('table', { id: 'triggers-table' },
      h('thead', null, h('tr', null, ['Name', 'Type', 'Webhook', 'Retries', 'Timeout', 'Filters / options', 'Defined in', 'Staged', 'Failed 24 h', 'Actions']
        .map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', null, rows))),
    h('p', { class: 'muted small note' }, 'Triggers defined in the config file are read-only here: change them in the file of every node and send each a SIGHUP. Counts: rows staged now, and failed in the last 24 hours.'));
}

// Go durations, as the config takes them: 500ms, 5s, 1m30s.
const durationRe = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
const nameRe = /^[A-Za-z0-9_.-]+$/;

// checkTrigger checks a trigger's fields as the API does, and returns
// {field: message} for those it refuses.
function checkTrigger(t, isNew) {
  const errs = {};
  if (isNew && !nameRe.test(t.name)) errs.name = t.name ? `"${t.name}" is not a valid trigger name: use letters, digits, _, . and -` : 'is required: use letters, digits, _, . and -';
  if (!t.type.trim()) errs.type = 'is required: the event type this trigger handles';
  let u = null;
  try {
    u = new URL(t.url);
  } catch {
    errs.url = t.url ? 'does not parse as a URL: write http://host/path or https://host/path' : 'is required: the webhook, http://host/path or https://host/path';
  }
  if (u && u.protocol !== 'http:' && u.protocol !== 'https:') errs.url = 'is not an http or https URL: write http://host/path or https://host/path';
  else if (u && !u.hostname) errs.url = 'has no host: write http://host/path or https://host/path';
  if (t.retries !== undefined && (!Number.isInteger(t.retries) || t.retries < 0 || t.retries > 100)) errs.retries = 'must be a whole number from 0 to 100';
  if (t.concurrency !== undefined && (!Number.isInteger(t.concurrency) || t.concurrency < 1)) errs.concurrency = 'must be 1 or more';
  for (const [k, v] of [['timeout', t.timeout], ['retry_backoff.initial', t.retry_backoff && t.retry_backoff.initial], ['retry_backoff.max', t.retry_backoff && t.retry_backoff.max]]) {
    if (v !== undefined && !durationRe.test(v)) errs[k] = `"${v}" is not a duration: write 500ms, 5s or 1m30s`;
  }
  return errs;
}

// editTrigger opens the form of a console trigger: a new one when t is null.
function editTrigger(t, reload) {
  const isNew = !t;
  const tr = t ? t.trigger : {};
  const o = tr.options || {};
  const projects = state.session.projects || [];
  const input = (v, attrs = {}) => h('input', { value: v ?? '', autocomplete: 'off', ...attrs });
  const projectSel = h('select', { disabled: !isNew }, projects.map((p) => h('option', { value: p, selected: p === (t ? t.project : project || projects[0]) }, p)));
  const format = h('select', null, ['structured', 'binary', 'envelope'].map((f) => h('option', { value: f, selected: f === (tr.format || 'structured') }, f)));
  const headers = h('textarea', { rows: 3, spellcheck: 'false', placeholder: '{"Authorization": "Bearer …"}' });
  const secrets = h('textarea', { rows: 2, spellcheck: 'false', placeholder: 'whsec_…' });
  const notes = [];
  if (tr.headers && Object.keys(tr.headers).length) notes.push(`It sends ${Object.keys(tr.headers).length} header(s) whose values are hidden: enter them again, or saving removes them.`);
  if (tr.webhook_secrets_set) notes.push(`It signs with ${tr.webhook_secrets_set} webhook secret(s), which are hidden: enter them again, or saving removes them.`);
  if (tr.url && tr.url.includes(':xxxxx@')) notes.push('Its URL\'s password is hidden (xxxxx): write it again.');
  const formError = h('p', { class: 'error', id: 'tf-error', role: 'alert', hidden: true });
  const save = h('button', { type: 'submit', class: 'primary', id: 'tf-save' }, isNew ? 'Add trigger' : 'Save');
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const form = h('form', { class: 'dialog-body form-grid', id: 'trigger-form', novalidate: true },
    notes.length ? h('div', { class: 'notice' }, notes.map((n) => h('p', null, n))) : null,
    projects.length > 1 ? field('tf', 'project', 'Project', projectSel) : null,
    field('tf', 'name', 'Name', input(t ? t.name : '', { required: true, readonly: !isNew }), isNew ? 'Letters, digits, _, . and -; it cannot be changed later.' : null),
    field('tf', 'type', 'Event type', input(tr.type, { required: true, placeholder: 'user-signed-up' }), 'Custom events of this type, or DB_INSERT, DB_UPDATE, DB_DELETE, FILE_CREATE, FILE_DELETE.'),
    field('tf', 'url', 'Webhook URL', input(tr.url, { required: true, type: 'url', placeholder: 'https://example.com/hooks/signup' })),
    h('div', { class: 'cols' },
      field('tf', 'retries', 'Retries', input(tr.retries ?? 3, { type: 'number', min: 0, max: 100, inputmode: 'numeric' })),
      field('tf', 'timeout', 'Timeout', input(tr.timeout || '5s'), 'Per attempt: 500ms, 5s, 1m'),
      field('tf', 'concurrency', 'Concurrency', input(tr.concurrency || 16, { type: 'number', min: 1, inputmode: 'numeric' }))),
    h('div', { class: 'cols' },
      field('tf', 'retry_backoff.initial', 'Backoff initial', input(tr.retry_backoff ? tr.retry_backoff.initial : '1s')),
      field('tf', 'retry_backoff.max', 'Backoff max', input(tr.retry_backoff ? tr.retry_backoff.max : '10m')),
      field('tf', 'format', 'Format', format)),
    h('details', { class: 'more', open: !!(o.db || o.col || o.columns || o.store || o.path) || null },
      h('summary', null, 'Database and file options'),
      h('div', { class: 'cols' },
        field('tf', 'options.db', 'Database', input(o.db, { placeholder: 'the only one' })),
        field('tf', 'options.col', 'Tables', input(o.col, { placeholder: 'every table' })),
        field('tf', 'options.columns', 'Columns (DB_UPDATE)', input(o.columns, { placeholder: 'any column' }))),
      h('div', { class: 'cols' },
        field('tf', 'options.store', 'Storage', input(o.store, { placeholder: 'the only one' })),
        field('tf', 'options.path', 'Path glob', input(o.path, { placeholder: 'every file' })))),
    h('details', { class: 'more', open: notes.length > 0 || null },
      h('summary', null, 'Headers and signing'),
      field('tf', 'headers', 'Headers (JSON object)', headers),
      field('tf', 'webhook_secrets', 'Webhook secrets (one per line)', secrets)),
    formError,
    h('div', { class: 'actions' }, cancel, save));
  const d = dialog({ id: 'trigger-form-dialog', title: isNew ? 'Add a trigger' : 'Edit ' + t.name, body: form, wide: true });
  cancel.addEventListener('click', () => d.close());

  const val = (name) => form.elements[name].value.trim();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    formError.hidden = true;
    const body = {
      name: val('name'), type: val('type'), url: val('url'),
      retries: val('retries') === '' ? undefined : Number(val('retries')),
      timeout: val('timeout') || undefined,
      concurrency: val('concurrency') === '' ? undefined : Number(val('concurrency')),
      retry_backoff: { initial: val('retry_backoff.initial') || undefined, max: val('retry_backoff.max') || undefined },
      format: format.value,
    };
    if (!body.retry_backoff.initial && !body.retry_backoff.max) delete body.retry_backoff;
    const opts = {};
    for (const k of ['db', 'col', 'columns', 'store', 'path']) if (val('options.' + k)) opts[k] = val('options.' + k);
    if (Object.keys(opts).length) body.options = opts;
    const errs = checkTrigger(body, isNew);
    if (headers.value.trim()) {
      try {
        const hd = JSON.parse(headers.value);
        if (typeof hd !== 'object' || hd === null || Array.isArray(hd) || Object.values(hd).some((v) => typeof v !== 'string')) throw new Error();
        body.headers = hd;
      } catch {
        errs.headers = 'must be a JSON object of header names to text values, such as {"Authorization": "Bearer …"}';
      }
    }
    const sec = secrets.value.split('\n').map((s) => s.trim()).filter(Boolean);
    if (sec.length) body.webhook_secrets = sec;
    if (Object.keys(errs).length) {
      for (const [k, m] of Object.entries(errs)) setFieldError(form, k, m);
      form.querySelector('[aria-invalid=true]').focus();
      return;
    }
    const p = projects.length > 1 ? projectSel.value : (t ? t.project : projects[0]);
    save.disabled = true;
    try {
      const res = await api('PUT', `/v1/admin/projects/${encodeURIComponent(p)}/triggers/${encodeURIComponent(body.name)}`, body);
      d.close();
      toast(res && res.warning ? res.warning : `Trigger ${body.name} ${isNew ? 'added' : 'saved'}.`, res && res.warning ? 'warn' : 'good');
      reload();
    } catch (ex) {
      if (ex.status === 401) return;
      const f = ex.body && ex.body.field;
      // The API's message reads "trigger: line 1: url: is not ...": beside the field, its tail.
      const msg = f ? ex.message.replace(/^.*?: line \d+: /, '').replace(f + ': ', '') : ex.message;
      if (!f || !setFieldError(form, f.replace(/^headers\..*/, 'headers'), msg)) {
        formError.textContent = ex.message;
        formError.hidden = false;
      } else {
        form.querySelector('[aria-invalid=true]').focus();
      }
    } finally {
      save.disabled = false;
    }
  });
}

async function deleteTrigger(t, reload) {
  const ok = await confirm('Delete ' + t.name + '?',
    `Trigger ${t.name} of project ${t.project} is deleted on every node, and its staged events are cancelled.`, 'Delete trigger');
  if (!ok) return;
  try {
    const res = await api('DELETE', `/v1/admin/projects/${encodeURIComponent(t.project)}/triggers/${encodeURIComponent(t.name)}`);
    toast(`Trigger ${t.name} deleted; ${res.cancelled} staged event(s) cancelled.`, 'good');
    reload();
  } catch (ex) {
    if (ex.status !== 401) toast(ex.message, 'bad');
  }
}

// fireEvent opens the form that triggers an event of t's type: its data
// as JSON, checked before it is sent, and whether to wait for the webhook.
function fireEvent(t) {
  const data = h('textarea', { rows: 8, spellcheck: 'false', class: 'mono' }, '{\n  \n}');
  const sync = h('input', { type: 'checkbox', id: 'fire-sync' });
  const result = h('div', { id: 'fire-result', 'aria-live': 'polite' });
  const send = h('button', { type: 'submit', class: 'primary', id: 'fire-submit' }, 'Trigger event');
  const close = h('button', { type: 'button' }, 'Close');
  const form = h('form', { class: 'dialog-body', id: 'fire-form', novalidate: true },
    h('p', { class: 'muted' }, 'An event of type ', h('code', null, t.trigger.type), ' in project ', h('strong', null, t.project),
      ': every trigger of that type takes it.'),
    field('fire', 'data', 'Event data (JSON)', data),
    h('label', { class: 'check', for: 'fire-sync' }, sync, ' Trigger event synchronously'),
    h('p', { class: 'hint' }, 'Synchronously: wait for the webhook and show its response here.'),
    result,
    h('div', { class: 'actions' }, close, send));
  const d = dialog({ id: 'fire-dialog', title: 'Trigger ' + t.name, body: form, wide: true });
  close.addEventListener('click', () => d.close());
  data.focus();
  data.setSelectionRange(4, 4);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    let parsed = null;
    const text = data.value.trim();
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch (ex) {
        setFieldError(form, 'data', 'is not JSON: ' + ex.message.replace(/^JSON\.parse: /, ''));
        data.focus();
        return;
      }
    }
    send.disabled = true;
    fill(result, h('p', { class: 'muted' }, sync.checked ? 'Waiting for the webhook…' : 'Sending…'));
    try {
      const res = await api('POST', `/v1/admin/projects/${encodeURIComponent(t.project)}/events`, { type: t.trigger.type, data: parsed, isSynchronous: sync.checked });
      fill(result, h('div', { class: 'outcome good' },
        h('p', null, 'Event ', h('code', { id: 'fire-id' }, res.id), sync.checked ? ' was delivered.' : ' is queued.',
          ' ', h('a', { href: '#/events?batch_id=' + res.id }, 'See it in Event logs')),
        sync.checked ? [h('p', { class: 'label' }, 'Webhook response'), h('pre', { id: 'fire-response' }, pretty(res.result))] : null));
    } catch (ex) {
      if (ex.status === 401) return;
      const b = ex instanceof ApiError && ex.body ? ex.body : {};
      fill(result, h('div', { class: 'outcome bad', id: 'fire-error', role: 'alert' },
        h('p', null, h('strong', null, ex.status ? `${ex.status} ` : ''), ex.message),
        b.id ? h('p', null, 'Event ', h('code', null, b.id), ' ', h('a', { href: '#/events?batch_id=' + b.id }, 'See its attempts')) : null));
    } finally {
      send.disabled = false;
    }
  });
}
