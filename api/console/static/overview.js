// Overview: per trigger, processed and failed in the last hour, and
// charts of deliveries per minute drawn as SVG from the admin API.
import { api, h, svg, fill, pageHead, emptyState, errorBox, every, num, projectPicker } from './util.js';

const minutes = 60;
let project = '';

export function render(view) {
  const body = h('div', { id: 'overview' }, h('p', { class: 'muted' }, 'Loading…'));
  const picker = projectPicker(project, (p) => { project = p; load(); });
  fill(view, pageHead('Overview', picker, h('span', { class: 'muted small' }, 'Last hour, per minute · refreshes every 10 s')), body);

  async function load() {
    const since = new Date(Math.floor(Date.now() / 60000) * 60000 - (minutes - 1) * 60000);
    try {
      const [act, trig, counts, nodes] = await Promise.all([
        api('GET', '/v1/admin/activity' + (project ? '?project=' + encodeURIComponent(project) + '&' : '?') + 'since=' + since.toISOString()),
        api('GET', '/v1/admin/triggers'),
        api('GET', '/v1/admin/counts?status=staged'),
        api('GET', '/v1/admin/nodes'),
      ]);
      draw(body, since, act.minutes || [], trig.triggers.filter((t) => !project || t.project === project),
        counts.triggers.filter((c) => !project || c.project === project), nodes.nodes);
    } catch (ex) {
      if (ex.status !== 401) fill(body, errorBox(ex));
    }
  }
  load();
  return every(10000, load);
}

// series sums the rows of one trigger (or of all, when key is null) per
// minute since start: [{processed, failed}] of length minutes.
function series(rows, start, key) {
  const out = Array.from({ length: minutes }, () => ({ processed: 0, failed: 0 }));
  for (const r of rows) {
    if (key && r.project + '/' + r.trigger !== key) continue;
    const i = Math.round((new Date(r.minute) - start) / 60000);
    if (i < 0 || i >= minutes) continue;
    out[i].processed += r.processed;
    out[i].failed += r.failed;
  }
  return out;
}

// niceMax is the top of a chart's scale: an even number, so that its half
// is a whole number too, of 2, 4, 6, 8 or 10 times a power of ten.
function niceMax(m) {
  const p = 10 ** Math.floor(Math.log10(m));
  for (const f of [2, 4, 6, 8, 10]) if (f * p >= m) return f * p;
  return 20 * p;
}

// chart draws stacked bars per minute: processed below, failed above.
function chart(data, start, { width, height, axis, label }) {
  const max = niceMax(Math.max(1, ...data.map((d) => d.processed + d.failed)));
  const padL = axis ? 36 : 0;
  const padB = axis ? 18 : 0;
  const plotH = height - padB - (axis ? 6 : 0);
  const bw = (width - padL) / minutes;
  const y = (v) => (v / max) * plotH;
  const base = height - padB;
  const parts = [];
  if (axis) {
    for (const f of [0, 0.5, 1]) {
      const yy = base - f * plotH;
      parts.push(svg('line', { x1: padL, x2: width, y1: yy, y2: yy, class: 'grid' }));
      parts.push(svg('text', { x: padL - 6, y: yy + 4, class: 'tick', 'text-anchor': 'end' }, num(Math.round(max * f))));
    }
    for (let i = 0; i < minutes; i += 15) {
      const t = new Date(start.getTime() + i * 60000);
      parts.push(svg('text', { x: padL + i * bw, y: height - 4, class: 'tick' }, t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })));
    }
  }
  data.forEach((d, i) => {
    if (d.processed + d.failed === 0) return;
    const x = padL + i * bw + bw * 0.1;
    const w = Math.max(1, bw * 0.8);
    const t = new Date(start.getTime() + i * 60000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const g = svg('g', null, svg('title', null, `${t}: ${d.processed} processed, ${d.failed} failed`));
    if (d.processed) g.append(svg('rect', { x, y: base - y(d.processed), width: w, height: y(d.processed), class: 'bar processed' }));
    if (d.failed) g.append(svg('rect', { x, y: base - y(d.processed) - y(d.failed), width: w, height: y(d.failed), class: 'bar failed' }));
    parts.push(g);
  });
  parts.push(svg('line', { x1: padL, x2: width, y1: base, y2: base, class: 'axis' }));
  return svg('svg', { viewBox: `0 0 ${width} ${height}`, class: axis ? 'chart' : 'spark', role: 'img', 'aria-label': label, preserveAspectRatio: axis ? null : 'none' }, ...parts);
}

function draw(body, since, rows, triggers, counts, nodes) {
  const total = series(rows, since, null);
  const sum = (s, k) => s.reduce((a, d) => a + d[k], 0);
  const staged = counts.reduce((a, c) => a + c.staged, 0);
  const alive = nodes.filter((n) => n.alive).length;
  const stat = (id, label, value, kind = '') => h('div', { class: 'stat ' + kind, 'data-testid': id }, h('div', { class: 'value' }, value), h('div', { class: 'muted' }, label));
  // The chart is drawn at the width it shows at, so that its labels keep their size.
  const width = Math.max(300, Math.min(1200, body.clientWidth - 40));
  const totalChart = chart(total, since, { width, height: 180, axis: true, label: 'Deliveries per minute, last hour' });
  totalChart.id = 'activity-chart';
  const cards = triggers.map((t) => {
    const key = t.project + '/' + t.name;
    const s = series(rows, since, key);
    const p = sum(s, 'processed');
    const f = sum(s, 'failed');
    return h('a', { class: 'trigger-card', href: `#/events?project=${encodeURIComponent(t.project)}&trigger=${encodeURIComponent(t.name)}`, 'data-trigger': key },
      h('div', { class: 'card-head' }, h('strong', null, t.name), h('code', { class: 'muted small' }, t.trigger.type)),
      h('div', { class: 'card-nums' },
        h('span', { class: 'good', 'data-testid': 'processed' }, num(p), h('small', null, ' processed')),
        h('span', { class: f ? 'bad' : 'muted', 'data-testid': 'failed' }, num(f), h('small', null, ' failed'))),
      chart(s, since, { width: 240, height: 40, axis: false, label: `${t.name}: deliveries per minute` }));
  });
  fill(body,
    h('div', { class: 'stats' },
      stat('stat-processed', 'processed, last hour', num(sum(total, 'processed')), 'good'),
      stat('stat-failed', 'failed, last hour', num(sum(total, 'failed')), sum(total, 'failed') ? 'bad' : ''),
      stat('stat-staged', 'staged now', num(staged)),
      stat('stat-nodes', 'nodes alive', `${alive} / ${nodes.length}`, alive ? '' : 'bad')),
    h('section', { class: 'card' },
      h('div', { class: 'card-title' }, h('h2', null, 'Deliveries per minute'),
        h('div', { class: 'legend' }, h('span', { class: 'key processed' }), 'processed', h('span', { class: 'key failed' }), 'failed')),
      totalChart),
    h('h2', null, 'Triggers'),
    cards.length ? h('div', { class: 'cards' }, cards)
      : emptyState('No triggers yet', 'Add one in ', h('a', { href: '#/triggers' }, 'Event Triggers'), ', or define them under a project\'s ', h('code', null, 'triggers:'), ' in the config.'));
}
