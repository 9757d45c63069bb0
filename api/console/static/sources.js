// Sources: each database (slot, streaming node, lag, last change), each
// watched directory (holding node, files indexed, last rescan), and the
// nodes sharing the store.
import { api, h, fill, pageHead, emptyState, errorBox, every, num, bytes, timeCell } from './util.js';

export function render(view) {
  const body = h('div', { id: 'sources' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(view, pageHead('Sources', h('span', { class: 'muted small' }, 'Refreshes every 5 s')), body);
  async function load() {
    try {
      const [src, nodes] = await Promise.all([api('GET', '/v1/admin/sources'), api('GET', '/v1/admin/nodes')]);
      draw(body, src, nodes.nodes);
    } catch (ex) {
      if (ex.status !== 401) fill(body, errorBox(ex));
    }
  }
  load();
  return every(5000, load);
}

const table = (id, heads, rows) => h('div', { class: 'table-wrap' }, h('table', { id },
  h('thead', null, h('tr', null, heads.map((x) => h('th', { scope: 'col' }, x)))), h('tbody', null, rows)));

const nodeCell = (n) => (n ? h('code', null, n) : h('span', { class: 'badge failed', title: 'No node reported it within three heartbeats' }, 'none'));

function slotCell(d) {
  if (!d.reachable) return h('span', { class: 'bad', title: d.error || '' }, 'unreachable');
  const state = !d.slot_exists ? h('span', { class: 'badge cancelled' }, 'not created') : d.slot_active ? h('span', { class: 'badge processed' }, 'active') : h('span', { class: 'badge staged' }, 'idle');
  return [h('code', null, d.slot), ' ', state];
}

function draw(body, src, nodes) {
  const dbs = src.databases.map((d) => h('tr', { 'data-database': d.project + '/' + d.database },
    h('td', null, h('strong', null, d.database), h('div', { class: 'muted small' }, d.project)),
    h('td', null, slotCell(d)),
    h('td', null, nodeCell(d.node)),
    h('td', { class: 'num', title: d.lag_bytes === null ? '' : num(d.lag_bytes) + ' bytes' }, bytes(d.lag_bytes)),
    h('td', null, timeCell(d.last_change_at)),
    h('td', null, timeCell(d.reported_at))));
  const dirs = src.directories.map((d) => h('tr', { 'data-storage': d.project + '/' + d.storage },
    h('td', null, h('strong', null, d.storage), h('div', { class: 'muted small' }, d.project)),
    h('td', null, h('code', null, d.path)),
    h('td', null, nodeCell(d.node)),
    h('td', { class: 'num' }, num(d.files_indexed)),
    h('td', null, timeCell(d.last_rescan_at)),
    h('td', null, timeCell(d.reported_at))));
  const ns = nodes.map((n) => h('tr', { 'data-node': n.id },
    h('td', null, h('code', null, n.id)),
    h('td', null, n.alive ? h('span', { class: 'badge processed' }, 'alive') : h('span', { class: 'badge failed' }, 'silent')),
    h('td', null, n.version),
    h('td', null, timeCell(n.started_at)),
    h('td', null, timeCell(n.last_heartbeat)),
    h('td', { class: 'num' }, num(n.rows_held))));
  fill(body,
    h('section', null, h('h2', null, 'Databases'),
      dbs.length ? table('databases-table', ['Database', 'Slot', 'Streaming node', 'Lag', 'Last change', 'Reported'], dbs)
        : emptyState('No databases', 'Add one under a project\'s ', h('code', null, 'databases:'), ' in the config to capture its row changes (DB_INSERT, DB_UPDATE, DB_DELETE triggers).')),
    h('section', null, h('h2', null, 'Watched directories'),
      dirs.length ? table('directories-table', ['Directory', 'Path', 'Holding node', 'Files indexed', 'Last rescan', 'Reported'], dirs)
        : emptyState('No watched directories', 'Add one under a project\'s ', h('code', null, 'storage:'), ' in the config to raise FILE_CREATE and FILE_DELETE events.')),
    h('section', null, h('h2', null, 'Nodes'),
      ns.length ? table('nodes-table', ['Node', 'State', 'Version', 'Started', 'Last heartbeat', 'Rows held'], ns)
        : emptyState('No nodes', 'No node has sent a heartbeat to this store yet.')));
}
