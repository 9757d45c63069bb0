// Event logs: the newest events first, with filters; a row opens to its
// data and attempts; redeliver, cancel, and redeliver every failed event
// matching the filters. The list follows the server's stream of changes.
import {
  api, h, fill, pageHead, emptyState, errorBox, toast, confirm, projectPicker, query, badge, timeCell, pretty, num,
} from './util.js';

// refreshEvery bounds how often the stream makes the page read the list
// again, so that a thousand changes a second cost two reads.
const refreshEvery = 500;
const pageSize = 50;

const filterNames = ['project', 'type', 'trigger', 'status', 'since', 'until', 'batch_id', 'id'];

export function render(view, params) {
  const filters = {};
  for (const k of filterNames) filters[k] = params.get(k) || '';
  // rows: id -> {event, tr, key}; order: the ids shown, newest first.
  const rows = new Map();
  let order = [];
  let cursor = null; // of the page after the last one shown
  let extra = []; // ids of the pages after the first ("Load more")
  const opened = new Map(); // id -> the detail row
  let stopped = false;

  const live = h('span', { id: 'live-status', class: 'live off', title: 'Changes show as they happen' }, 'Connecting…');
  const bulk = h('button', { type: 'button', id: 'bulk-redeliver' }, 'Redeliver failed…');
  const tbody = h('tbody', { id: 'events-body' });
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'events-table' },
    h('thead', null, h('tr', null, ['', 'Created', 'Status', 'Type', 'Trigger', 'Attempts', 'Row id', 'Actions'].map((x) => h('th', { scope: 'col' }, x)))),
    tbody));
  const listMsg = h('div', { id: 'events-message' });
  const more = h('button', { type: 'button', id: 'load-more', hidden: true }, 'Load older events');
  fill(view, pageHead('Event logs', live, bulk), filterForm(), listMsg, table, h('div', { class: 'more-row' }, more));

  function filterForm() {
    const input = (name, attrs) => h('input', { id: 'f-' + name, name, value: filters[name], autocomplete: 'off', ...attrs });
    const status = h('select', { id: 'f-status', name: 'status' },
      ['', 'staged', 'processed', 'failed', 'cancelled'].map((s) => h('option', { value: s, selected: s === filters.status }, s || 'Any status')));
    const localValue = (iso) => {
      if (!iso) return '';
      const d = new Date(iso);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    };
    const picker = projectPicker(filters.project, () => {});
    const form = h('form', { class: 'filters', id: 'event-filters' },
      picker ? h('div', { class: 'filter' }, h('label', { for: 'project-picker' }, 'Project'), picker) : null,
      h('div', { class: 'filter' }, h('label', { for: 'f-type' }, 'Type'), input('type', { placeholder: 'any' })),
      h('div', { class: 'filter' }, h('label', { for: 'f-trigger' }, 'Trigger'), input('trigger', { placeholder: 'any' })),
      h('div', { class: 'filter' }, h('label', { for: 'f-status' }, 'Status'), status),
      h('div', { class: 'filter' }, h('label', { for: 'f-since' }, 'Since'), input('since', { type: 'datetime-local', value: localValue(filters.since) })),
      h('div', { class: 'filter' }, h('label', { for: 'f-until' }, 'Until'), input('until', { type: 'datetime-local', value: localValue(filters.until) })),
      h('div', { class: 'filter wide' }, h('label', { for: 'f-batch_id' }, 'Event id'), input('batch_id', { placeholder: 'the id the queue answered', spellcheck: 'false' })),
      h('div', { class: 'filter wide' }, h('label', { for: 'f-id' }, 'Row id'), input('id', { placeholder: 'the CloudEvent id a webhook got', spellcheck: 'false' })),
      h('div', { class: 'filter buttons' }, h('button', { type: 'submit', class: 'primary', id: 'apply-filters' }, 'Filter'),
        h('button', { type: 'button', id: 'clear-filters', onclick: clear }, 'Clear')));
    function clear() {
      for (const el of form.elements) if (el.name) el.value = '';
      location.hash = '#/events';
    }
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const f = {};
      for (const k of filterNames) {
        const el = k === 'project' ? picker : form.elements[k];
        if (!el) continue;
        let v = el.value.trim();
        if (v && (k === 'since' || k === 'until')) v = new Date(v).toISOString();
        f[k] = v;
      }
      const next = '#/events' + query(f);
      if (location.hash === next) load();
      else location.hash = next;
    });
    return form;
  }

  // rowKey changes when anything a row shows changes.
  const rowKey = (e) => [e.status, e.attempt_count, e.updated_at].join('|');

  function drawRow(e) {
    const open = h('button', { type: 'button', class: 'link mono', 'data-testid': 'open', 'aria-expanded': opened.has(e.id) ? 'true' : 'false', title: 'Show data and attempts' }, e.id.slice(0, 8) + '…');
    open.addEventListener('click', () => toggle(e.id));
    const redeliver = h('button', { type: 'button', 'data-testid': 'redeliver', disabled: e.status === 'staged', title: e.status === 'staged' ? 'Staged: it is delivered already' : 'Stage it again for a new attempt' }, 'Redeliver');
    redeliver.addEventListener('click', () => change(e.id, 'redeliver'));
    const actions = [redeliver];
    if (e.status === 'staged') {
      const cancel = h('button', { type: 'button', class: 'danger', 'data-testid': 'cancel' }, 'Cancel');
      cancel.addEventListener('click', () => change(e.id, 'cancel'));
      actions.push(cancel);
    }
    const scheduled = e.status === 'staged' && e.fire_at && new Date(e.fire_at) > new Date();
    return h('tr', { 'data-event-id': e.id, 'data-batch-id': e.batch_id, 'data-status': e.status, class: opened.has(e.id) ? 'opened' : '' },
      h('td', { class: 'chev' }, opened.has(e.id) ? '▾' : '▸'),
      h('td', null, timeCell(e.created_at)),
      h('td', null, badge(e.status), scheduled ? h('div', { class: 'muted small' }, 'due ', timeCell(e.fire_at)) : null),
      h('td', null, h('code', null, e.type)),
      h('td', null, e.trigger, e.project && multiProject() ? h('div', { class: 'muted small' }, e.project) : null),
      h('td', { class: 'num' }, num(e.attempt_count)),
      h('td', null, open),
      h('td', null, h('div', { class: 'row-actions' }, actions)));
  }

  const multiProject = () => !filters.project && new Set([...rows.values()].map((r) => r.event.project)).size > 1;

  // show lays out the rows of order, rebuilding only those that changed.
  function show(events, firstPage) {
    for (const e of events) {
      const r = rows.get(e.id);
      const key = rowKey(e);
      if (r && r.key === key) { r.event = e; continue; }
      const tr = drawRow(e);
      if (r) r.tr.replaceWith(tr);
      rows.set(e.id, { event: e, tr, key });
      if (opened.has(e.id)) {
        dirty.delete(e.id);
        loadDetail(e.id);
      }
    }
    const ids = events.map((e) => e.id);
    if (firstPage) {
      const seen = new Set(ids);
      extra = extra.filter((id) => !seen.has(id));
      order = [...ids, ...extra];
    } else {
      extra.push(...ids);
      order.push(...ids);
    }
    // An open row stays until it is closed, even once newer events push it
    // off the first page: it moves down among the rows, newest first (ids
    // begin with their time), rather than vanish while it is read.
    const listed = new Set(order);
    const kept = [...opened.keys()].filter((id) => !listed.has(id) && rows.has(id));
    if (kept.length > 0) order = [...order, ...kept].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
    const keep = new Set(order);
    for (const [id, r] of rows) {
      if (!keep.has(id)) {
        r.tr.remove();
        rows.delete(id);
        const d = opened.get(id);
        if (d) { d.remove(); opened.delete(id); }
      }
    }
    // Put the rows in order, moving only those out of place.
    let at = tbody.firstChild;
    for (const id of order) {
      const nodes = [rows.get(id).tr];
      if (opened.has(id)) nodes.push(opened.get(id));
      for (const n of nodes) {
        if (at === n) at = at.nextSibling;
        else tbody.insertBefore(n, at);
      }
    }
    if (order.length === 0) {
      const f = Object.values(filters).some(Boolean);
      fill(listMsg, f
        ? emptyState('No events match these filters', 'Clear a filter, or widen the time range.')
        : emptyState('No events yet', 'Queue one with POST /v1/api/{project}/event-triggers/queue, press ', h('strong', null, 'Trigger'), ' on a trigger in ', h('a', { href: '#/triggers' }, 'Event Triggers'), ', or change a watched table or directory. New events show here as they come.'));
    } else {
      fill(listMsg);
    }
  }

  // load reads the first page again (with the filters) and shows it.
  let loading = null;
  let again = false;
  async function load() {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      do {
        again = false;
        try {
          const page = await api('GET', '/v1/admin/events' + query({ ...filters, limit: pageSize }));
          if (stopped) return;
          if (extra.length === 0) cursor = page.next_cursor;
          show(page.events, true);
          more.hidden = !cursor;
        } catch (ex) {
          if (ex.status !== 401 && !stopped) fill(listMsg, errorBox(ex));
        }
      } while (again && !stopped);
    })();
    await loading;
    loading = null;
  }

  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const page = await api('GET', '/v1/admin/events' + query({ ...filters, limit: pageSize, cursor }));
      cursor = page.next_cursor;
      show(page.events, false);
      more.hidden = !cursor;
    } catch (ex) {
      if (ex.status !== 401) toast(ex.message, 'bad');
    } finally {
      more.disabled = false;
    }
  });

  // toggle opens or closes a row's detail: its data and attempts.
  function toggle(id) {
    const r = rows.get(id);
    if (opened.has(id)) {
      opened.get(id).remove();
      opened.delete(id);
    } else {
      const d = h('tr', { class: 'detail', id: 'event-detail-' + id, 'data-testid': 'detail' },
        h('td', { colspan: 8 }, h('p', { class: 'muted' }, 'Loading…')));
      opened.set(id, d);
      r.tr.after(d);
      loadDetail(id);
    }
    const tr = drawRow(r.event);
    r.tr.replaceWith(tr);
    r.tr = tr;
    tr.querySelector('[data-testid=open]').focus();
  }

  async function loadDetail(id) {
    let e;
    try {
      e = await api('GET', '/v1/admin/events/' + id);
    } catch (ex) {
      const d = opened.get(id);
      if (d && ex.status !== 401) fill(d.firstChild, errorBox(ex));
      return;
    }
    const d = opened.get(id);
    if (!d) return;
    const attempts = e.attempts.length === 0
      ? h('p', { class: 'muted', 'data-testid': 'no-attempts' }, e.status === 'staged' ? 'No attempt yet: it is due ' + new Date(e.due_at || e.fire_at).toLocaleString() + '.' : 'No attempt was made.')
      : h('div', { class: 'table-wrap' }, h('table', { class: 'attempts', 'data-testid': 'attempts' },
        h('thead', null, h('tr', null, ['#', 'Started', 'Node', 'Duration', 'Status', 'Error', 'Bodies'].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', null, e.attempts.map((a) => h('tr', { 'data-testid': 'attempt' },
          h('td', null, a.attempt),
          h('td', null, timeCell(a.started_at)),
          h('td', null, h('code', null, a.node_id)),
          h('td', { class: 'num' }, a.duration_ms.toFixed(1) + ' ms'),
          h('td', null, a.response_status === null ? h('span', { class: 'muted' }, '—')
            : h('span', { class: 'code ' + (a.response_status < 300 ? 'good' : 'bad'), 'data-testid': 'response-status' }, a.response_status)),
          h('td', { class: 'err' }, a.error || ''),
          h('td', null,
            h('details', null, h('summary', null, 'Request'), h('pre', null, pretty(a.request_body || ''))),
            h('details', null, h('summary', null, 'Response'), h('pre', { 'data-testid': 'response-body' }, a.response_body || '(empty)'))))))));
    fill(d.firstChild, h('div', { class: 'detail-grid' },
      h('div', null,
        h('dl', { class: 'facts' },
          h('dt', null, 'Event id'), h('dd', null, h('code', null, e.batch_id)),
          h('dt', null, 'Row id'), h('dd', { title: 'The CloudEvent id its webhook gets' }, h('code', null, e.id)),
          h('dt', null, 'Project'), h('dd', null, e.project),
          h('dt', null, 'Event time'), h('dd', null, timeCell(e.event_time)),
          h('dt', null, 'Fires at'), h('dd', null, timeCell(e.fire_at)),
          e.due_at ? [h('dt', null, 'Next attempt'), h('dd', null, timeCell(e.due_at))] : null,
          e.remark ? [h('dt', null, 'Remark'), h('dd', null, e.remark)] : null,
          e.is_synchronous ? [h('dt', null, 'Synchronous'), h('dd', null, 'yes')] : null),
        h('p', { class: 'label' }, 'Data'), h('pre', { 'data-testid': 'event-data' }, pretty(e.data)),
        e.response !== null ? [h('p', { class: 'label' }, 'Response'), h('pre', null, pretty(e.response))] : null),
      h('div', null, h('p', { class: 'label' }, 'Attempts'), attempts)));
  }

  async function change(id, what) {
    try {
      await api('POST', `/v1/admin/events/${id}/${what}`);
      toast(what === 'cancel' ? 'Event cancelled.' : 'Event staged again: it is delivered shortly.', 'good');
    } catch (ex) {
      if (ex.status !== 401) toast(ex.message, 'bad');
    }
    load();
  }

  // Bulk: redeliver every failed event matching the filters, once the
  // user confirms the number of rows.
  bulk.addEventListener('click', async () => {
    const f = { ...filters, status: 'failed' };
    const body = {};
    for (const [k, v] of Object.entries(f)) if (v) body[k] = v;
    bulk.disabled = true;
    let n = 0;
    try {
      n = (await api('POST', '/v1/admin/events/redeliver', { ...body, dry_run: true })).matching;
    } catch (ex) {
      bulk.disabled = false;
      if (ex.status !== 401) toast(ex.message, 'bad');
      return;
    }
    bulk.disabled = false;
    if (n === 0) {
      toast('No failed event matches these filters: nothing to redeliver.');
      return;
    }
    const count = num(n);
    const ok = await confirm('Redeliver failed events?',
      `Redeliver ${count} failed event${n === 1 ? '' : 's'} matching these filters? They are staged again and delivered as new attempts.`,
      `Redeliver ${count}`);
    if (!ok) return;
    try {
      const res = await api('POST', '/v1/admin/events/redeliver', body);
      toast(`${num(res.redelivered)} event(s) staged again.`, 'good');
    } catch (ex) {
      if (ex.status !== 401) toast(ex.message, 'bad');
    }
    load();
  });

  // Live: the stream says which rows changed; the page reads the list at
  // most every refreshEvery ms.
  let es = null;
  let timer = null;
  let last = 0;
  const dirty = new Set(); // opened rows the stream named
  function changed(msg) {
    if (msg && msg.data) {
      try {
        for (const id of JSON.parse(msg.data).ids || []) if (opened.has(id)) dirty.add(id);
      } catch {
        // a malformed message still means something changed
      }
    }
    if (timer || stopped) return;
    timer = setTimeout(async () => {
      timer = null;
      last = Date.now();
      await load();
      for (const id of dirty) loadDetail(id);
      dirty.clear();
    }, Math.max(0, refreshEvery - (Date.now() - last)));
  }
  function connect() {
    // The stream names every changed row, whatever the filters: the
    // page reads its filtered first page again.
    es = new EventSource('/v1/admin/events/stream');
    es.addEventListener('open', () => {
      live.textContent = 'Live';
      live.className = 'live on';
    });
    // ready: the node listens for changes; what changed before is read now.
    es.addEventListener('ready', () => changed());
    es.addEventListener('changed', changed);
    es.addEventListener('error', async () => {
      if (stopped) return;
      live.textContent = 'Reconnecting…';
      live.className = 'live off';
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream: the session may be over.
        try {
          await api('GET', '/mission-control/session');
          setTimeout(() => { if (!stopped) connect(); }, 2000);
        } catch {
          // api shows the login form on 401.
        }
      }
    });
  }

  load();
  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (es) es.close();
  };
}
