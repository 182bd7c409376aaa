// Tools: the list (search, annotations, icons), a form generated from the selected tool's
// input schema, Run with live progress and Cancel, every content type of the result, and
// the tool's earlier calls. Calls belong to the session, not the page: after a reload (or
// on a teammate's screen) the same call shows with its progress.

import { h, clear, linkify, add } from '../dom.js';
import { api } from '../api.js';
import { isFinished } from '../store.js';
import { createSchemaForm } from '../schema-form.js';
import { toolResult, rpcError, iconFor, resourceContents } from '../render.js';
import { button, busy, badge, statusBadge, jsonBlock, collapsible, empty, errorText, timeText, toast } from '../ui.js';

const ANNOTATION_BADGES = [
  ['readOnlyHint', 'read-only', 'ok'],
  ['destructiveHint', 'destructive', 'err'],
  ['idempotentHint', 'idempotent', 'info'],
  ['openWorldHint', 'open world', 'warn'],
];

/** annotationBadges shows a tool's hints. */
export function annotationBadges(a) {
  if (!a || typeof a !== 'object') return [];
  const out = [];
  for (const [key, label, kind] of ANNOTATION_BADGES) {
    if (a[key] === true) out.push(badge(label, kind, key));
  }
  for (const [k, v] of Object.entries(a)) {
    if (k === 'title' || ANNOTATION_BADGES.some(([key]) => key === k)) continue;
    out.push(badge(`${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`, 'accent'));
  }
  return out;
}

/**
 * toolsTab builds the Tools tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function toolsTab(ctx) {
  /** @type {any[]} */
  let tools = [];
  let selected = '';
  /** The call shown in the detail pane. */
  let shownCall = '';
  let form = null;
  const search = h('input', { class: 'input', type: 'search', placeholder: 'Filter tools', 'aria-label': 'Filter tools' });
  const list = h('ul', { class: 'item-list', role: 'list', 'aria-label': 'Tools' });
  const changed = h('div', { class: 'list-changed', hidden: true, role: 'status' }, 'The server changed its tool list. ', button('Refresh', () => load(), { variant: 'small' }));
  const refreshBtn = button('Refresh', () => busy(refreshBtn, load), { variant: 'small' });
  const active = h('div', { class: 'active-calls' });
  const detail = h('div', { class: 'detail' }, empty('Choose a tool.'));

  async function load() {
    try {
      const r = await api.tools(ctx.id);
      tools = Array.isArray(r?.tools) ? r.tools : [];
      ctx.store.listChanged.tools = false;
      changed.hidden = true;
      renderList();
      if (selected) renderDetail();
    } catch (err) {
      clear(list).appendChild(h('li', { class: 'form-error', role: 'alert' }, `Could not list tools: ${errorText(err)}`));
    }
  }

  function renderList() {
    const q = search.value.trim().toLowerCase();
    clear(list);
    const shown = tools.filter((t) => !q || String(t.name).toLowerCase().includes(q) || String(t.title ?? t.annotations?.title ?? '').toLowerCase().includes(q) || String(t.description ?? '').toLowerCase().includes(q));
    for (const t of shown) {
      const name = String(t.name ?? '');
      const title = t.title || t.annotations?.title;
      const btn = h('button', {
        type: 'button', class: ['item', name === selected ? 'selected' : null], 'aria-current': name === selected ? 'true' : 'false',
        dataset: { tool: name },
        onclick: () => ctx.go('tools', name),
      }, iconFor(t.icons), h('span', { class: 'item-name' }, title ? String(title) : name), title ? h('code', { class: 'item-sub' }, name) : null,
      h('span', { class: 'item-badges' }, annotationBadges(t.annotations)));
      list.appendChild(h('li', null, btn));
    }
    if (shown.length === 0) list.appendChild(h('li', null, empty(tools.length ? 'No tool matches.' : 'The server lists no tools.')));
  }
  search.addEventListener('input', renderList);

  function callsOf(name) {
    const out = [];
    for (const c of ctx.store.calls.values()) if (c.name === name) out.push(c);
    out.sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')));
    return out;
  }

  function renderDetail() {
    const t = tools.find((x) => x.name === selected);
    clear(detail);
    if (!t) {
      detail.appendChild(selected ? empty(tools.length ? `No tool named “${selected}”.` : 'Loading…') : empty('Choose a tool.'));
      return;
    }
    form = createSchemaForm(t.inputSchema ?? { type: 'object' }, { label: `Arguments of ${t.name}` });
    const runBtn = h('button', { type: 'submit', class: 'btn btn-primary', dataset: { action: 'run' } }, 'Run');
    const f = h('form', { class: 'tool-form', 'aria-label': `Run ${t.name}` }, form.el, h('div', { class: 'actions' }, runBtn));
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      run(t, runBtn);
    });
    const callBox = h('div', { class: 'call-box', 'aria-live': 'polite' });
    const history = h('div', { class: 'tool-calls' });
    add(detail, 
      h('header', { class: 'detail-head' },
        h('h2', null, iconFor(t.icons), String(t.title || t.annotations?.title || t.name)),
        h('code', { class: 'muted' }, String(t.name)),
        h('div', { class: 'badges' }, annotationBadges(t.annotations))),
      t.description ? h('p', { class: 'description' }, linkify(String(t.description))) : null,
      f,
      callBox,
      history,
      collapsible('Definition', () => [
        h('h4', null, 'Input schema'), jsonBlock(t.inputSchema ?? {}),
        t.outputSchema ? [h('h4', null, 'Output schema'), jsonBlock(t.outputSchema)] : null,
        t.annotations ? [h('h4', null, 'Annotations'), jsonBlock(t.annotations)] : null,
        t._meta ? [h('h4', null, '_meta'), jsonBlock(t._meta)] : null,
      ].flat().filter(Boolean)));
    const mine = callsOf(t.name);
    if (!shownCall || !mine.some((c) => c.call_id === shownCall)) shownCall = mine[0]?.call_id ?? '';
    renderCall();
  }

  async function run(t, runBtn) {
    const v = form.getValue();
    if (!v.ok) return;
    if (t.annotations?.destructiveHint === true && !confirm(`“${t.name}” says it is destructive. Run it?`)) return;
    await busy(runBtn, async () => {
      const call = await api.startCall(ctx.id, t.name, v.value);
      ctx.store.addCall(call);
      shownCall = call.call_id;
      renderCall();
    });
  }

  /** renderCall draws the shown call and the tool's call list. */
  function renderCall() {
    const box = detail.querySelector('.call-box');
    const historyBox = detail.querySelector('.tool-calls');
    const t = tools.find((x) => x.name === selected);
    if (!box || !historyBox || !t) return;
    const c = ctx.store.calls.get(shownCall);
    // Redraw the call only when it changed, so an audio player or a scrolled result in it
    // is not reset by events about other calls.
    const sig = c ? `${c.call_id}|${c.status}|${JSON.stringify(c.progress ?? null)}|${!!c.result}|${!!c.error}|${ctx.store.pendingCount()}` : '';
    if (sig !== box.dataset.sig) {
      box.dataset.sig = sig;
      clear(box);
      if (c) box.appendChild(callView(c, t));
    }
    const mine = callsOf(t.name);
    clear(historyBox);
    if (mine.length > 1 || (mine.length === 1 && mine[0].call_id !== shownCall)) {
      add(historyBox, h('h3', null, 'Calls'), h('ul', { class: 'call-list' }, mine.slice(0, 30).map((x) => h('li', null,
        h('button', {
          type: 'button', class: ['linkish', x.call_id === shownCall ? 'selected' : null],
          onclick: () => { shownCall = x.call_id; renderCall(); },
        }, statusBadge(x.status), ` ${timeText(x.created_at) || x.call_id}`, x.progress && !isFinished(x.status) ? ` · ${progressText(x.progress)}` : '')))));
    }
  }

  /** callView shows one call: status, progress bar, Cancel, result or error. */
  function callView(c, t) {
    const parts = [h('div', { class: 'call-head' }, h('h3', null, 'Call'), statusBadge(c.status), h('code', { class: 'muted small' }, ` ${c.call_id}`))];
    if (!isFinished(c.status)) {
      const p = c.progress;
      const bar = h('progress', { class: 'progress', 'aria-label': `Progress of ${c.name || 'the call'}` });
      if (p && typeof p.total === 'number' && p.total > 0) {
        bar.max = p.total;
        bar.value = Math.min(p.progress, p.total);
      }
      const cancel = button('Cancel', () => busy(cancel, async () => {
        const r = await api.cancelCall(ctx.id, c.call_id);
        ctx.store.seedCalls([r]);
      }), { variant: 'danger', dataset: { action: 'cancel' } });
      parts.push(h('div', { class: 'progress-row', dataset: { progress: p ? String(p.progress) : '', total: p?.total !== undefined ? String(p.total) : '' } },
        bar, h('span', { class: 'progress-text' }, p ? progressText(p) : c.status === 'queued' ? 'Queued…' : 'Running…'), cancel));
      const waiting = [...ctx.store.pending.values()].filter((x) => x.status === 'pending');
      if (waiting.length) {
        parts.push(h('p', { class: 'pending-note' }, `The server is waiting for ${waiting.length === 1 ? 'an answer' : `${waiting.length} answers`}. `,
          button('Answer in Pending', () => ctx.go('pending'), { variant: 'small' })));
      }
    } else if (c.progress) {
      parts.push(h('div', { class: 'progress-row done', dataset: { progress: String(c.progress.progress), total: c.progress.total !== undefined ? String(c.progress.total) : '' } },
        h('progress', { class: 'progress', max: '1', value: '1', 'aria-label': 'Progress' }), h('span', { class: 'progress-text' }, `Finished · last progress ${progressText(c.progress)}`)));
    }
    if (c.result) {
      parts.push(toolResult(c.result, t.outputSchema, { onReadResource: (uri) => readInto(uri, box2) }));
    } else if (c.error) {
      parts.push(rpcError(c.error));
    }
    const box2 = h('div', { class: 'link-read' });
    parts.push(box2);
    if (c.arguments && Object.keys(c.arguments).length) parts.push(collapsible('Arguments sent', () => jsonBlock(c.arguments)));
    return h('div', { class: ['call', `call-${c.status}`], dataset: { callId: c.call_id, status: c.status } }, parts);
  }

  async function readInto(uri, box) {
    try {
      const r = await api.read(ctx.id, uri);
      add(clear(box), h('h4', null, 'Read ', h('code', null, uri)), ...(r?.contents ?? []).map((x) => resourceContents(x)));
    } catch (err) {
      toast(errorText(err), 'error');
    }
  }

  /** renderActive lists the session's unfinished calls, whichever tool they belong to. */
  function renderActive() {
    const running = [...ctx.store.calls.values()].filter((c) => !isFinished(c.status));
    clear(active);
    if (running.length === 0) return;
    add(active, h('h3', null, 'Running calls'), h('ul', { class: 'call-list' }, running.map((c) => h('li', null,
      h('button', {
        type: 'button', class: 'linkish', dataset: { callId: c.call_id },
        onclick: () => { shownCall = c.call_id; if (selected === c.name) renderCall(); else ctx.go('tools', c.name); },
      }, statusBadge(c.status), ` ${c.name || c.call_id}`, c.progress ? ` · ${progressText(c.progress)}` : '')))));
  }

  const unsubs = [
    ctx.store.on('calls', () => { renderCall(); renderActive(); }),
    ctx.store.on('pending', () => renderCall()),
    ctx.store.on('lists', () => { changed.hidden = !ctx.store.listChanged.tools; }),
    ctx.store.on('session', () => {
      if (tools.length === 0 && ctx.store.session?.status === 'ready') load();
    }),
  ];
  const el = h('div', { class: 'split tools-tab' },
    h('aside', { class: 'sidebar card', 'aria-label': 'Tool list' },
      h('div', { class: 'card-head' }, h('h2', null, 'Tools'), refreshBtn), changed, search, list, active),
    h('section', { class: 'card main-pane', 'aria-label': 'Tool' }, detail));
  if (ctx.store.session?.status === 'ready') load();
  renderActive();
  return {
    el,
    show(item) {
      if (item !== undefined && item !== selected) {
        const keep = ctx.store.calls.get(shownCall)?.name === item;
        selected = item || '';
        if (!keep) shownCall = '';
        renderList();
        renderDetail();
      }
    },
    shown() {
      if (tools.length === 0 && ctx.store.session?.status === 'ready') load();
    },
    destroy() {
      for (const u of unsubs) u();
    },
  };
}

/** progressText is "3 / 5 — message". */
export function progressText(p) {
  if (!p) return '';
  const n = Number(p.progress);
  const main = typeof p.total === 'number' && p.total > 0 ? `${n} / ${p.total} (${Math.round((Math.min(n, p.total) / p.total) * 100)}%)` : `${n}`;
  return p.message ? `${main} — ${p.message}` : main;
}
