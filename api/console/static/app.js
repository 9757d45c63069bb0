// Mission Control: the session, the login form and the page router. Each
// page is a module whose render(view, params) draws it into view and
// returns a function that stops what it left running (timers, streams).
import { api, state, fill, toast } from './util.js';
import * as overview from './overview.js';
import * as triggers from './triggers.js';
import * as events from './events.js';
import * as sources from './sources.js';

const pages = { overview, triggers, events, sources };
const titles = { overview: 'Overview', triggers: 'Event Triggers', events: 'Event logs', sources: 'Sources' };

const $ = (id) => document.getElementById(id);
let stopPage = null;

// route draws the page the location's hash names: #/events?status=failed.
function route() {
  if (!state.session) return;
  const [path, qs] = location.hash.replace(/^#\/?/, '').split('?');
  const name = pages[path] ? path : 'overview';
  if (stopPage) stopPage();
  stopPage = null;
  for (const p of Object.keys(pages)) {
    const link = $('nav-' + p);
    if (p === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = titles[name] + ' · Mission Control';
  const view = $('view');
  fill(view);
  view.dataset.page = name;
  stopPage = pages[name].render(view, new URLSearchParams(qs || '')) || null;
}

// showApp shows the console for a session.
function showApp(session) {
  state.session = session;
  $('login').hidden = true;
  $('top').hidden = false;
  $('view').hidden = false;
  $('user').textContent = session.user;
  route();
}

// showLogin shows the login form, with a message when there is one.
function showLogin(msg) {
  state.session = null;
  if (stopPage) stopPage();
  stopPage = null;
  for (const d of document.querySelectorAll('dialog')) d.close();
  $('top').hidden = true;
  fill($('view'));
  $('view').hidden = true;
  $('login').hidden = false;
  const err = $('login-error');
  err.textContent = msg || '';
  err.hidden = !msg;
  $('login-password').value = '';
  ($('login-user').value ? $('login-password') : $('login-user')).focus();
}

state.onExpired = () => showLogin('Your session has ended: log in again.');

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const user = $('login-user').value.trim();
  const password = $('login-password').value;
  const err = $('login-error');
  if (!user || !password) {
    err.textContent = 'Enter the user and the password.';
    err.hidden = false;
    return;
  }
  const btn = $('login-submit');
  btn.disabled = true;
  try {
    showApp(await api('POST', '/mission-control/login', { user, password }));
  } catch (ex) {
    err.textContent = ex.status === 429 ? 'Too many failed logins from here: wait a minute, then try again.' : ex.message;
    err.hidden = false;
    $('login-password').select();
  } finally {
    btn.disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/mission-control/logout');
  } catch (ex) {
    if (ex.status !== 401) {
      toast('Logging out failed: ' + ex.message, 'bad');
      return;
    }
  }
  showLogin('You are logged out.');
});

window.addEventListener('hashchange', route);

// At start: the session, if the cookie still holds one.
(async () => {
  try {
    showApp(await api('GET', '/mission-control/session'));
  } catch (ex) {
    showLogin(ex.status === 401 ? '' : ex.message);
  }
})();
