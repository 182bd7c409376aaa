// Notifications: log messages (with a minimum-level filter that applies to log messages
// only), other server notifications, and the session's own status changes and moves.

import { h, clear, add } from '../dom.js';
import { api } from '../api.js';
import { LEVELS } from '../store.js';
import { VirtualList } from '../vlist.js';
import { jsonBlock, badge, timeText, button, busy, toast, empty } from '../ui.js';

const ROW_HEIGHT = 30;
const LEVEL_KIND = { debug: 'neutral', info: 'info', notice: 'info', warning: 'warn', error: 'err', critical: 'err', alert: 'err', emergency: 'err' };

/**
 * notificationsTab builds the Notifications tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function notificationsTab(ctx) {
  const store = ctx.store;
  let view = [];
  let scanned = 0;
  let selected = -1;
  const minLevel = h('select', { class: 'input', 'aria-label': 'Minimum log level' }, LEVELS.map((l) => h('option', { value: l }, `Logs: ${l} and above`)));
  const showOther = h('input', { type: 'checkbox', id: 'notes-other', checked: true });
  const showStatus = h('input', { type: 'checkbox', id: 'notes-status', checked: true });
  const search = h('input', { class: 'input', type: 'search', placeholder: 'Search', 'aria-label': 'Search notifications' });
  const count = h('span', { class: 'muted count' });
  const setLevel = h('select', { class: 'input', 'aria-label': 'Server log level' }, LEVELS.map((l) => h('option', { value: l }, l)));
  const setBtn = button('Set server level', () => busy(setBtn, async () => {
    await api.setLevel(ctx.id, setLevel.value);
    toast(`The server now logs ${setLevel.value} and above.`, 'ok');
  }), { variant: 'small' });
  const detail = h('div', { class: 'frame-detail' }, empty('Select a notification.'));

  const list = new VirtualList({
    rowHeight: ROW_HEIGHT,
    label: 'Notifications',
    idPrefix: 'note',
    renderRow: (row, i) => renderRow(row, store.notes[view[i]]),
    onSelect: (i) => {
      selected = view[i];
      renderDetail();
    },
  });

  function matches(n) {
    if (n.kind === 'log') {
      if (LEVELS.indexOf(n.level) < LEVELS.indexOf(minLevel.value)) return false;
    } else if (n.kind === 'status' || n.kind === 'system') {
      if (!showStatus.checked) return false;
    } else if (!showOther.checked) {
      return false;
    }
    const q = search.value.trim().toLowerCase();
    if (q) {
      let text = n._text;
      if (text === undefined) {
        try {
          text = `${n.method} ${JSON.stringify(n.params)}`.toLowerCase();
        } catch {
          text = n.method.toLowerCase();
        }
        n._text = text;
      }
      if (!text.includes(q)) return false;
    }
    return true;
  }

  function rebuild() {
    view = [];
    scanned = 0;
    extend();
    list.setCount(view.length, { keepSelection: false });
    updateCount();
  }

  function extend() {
    for (; scanned < store.notes.length; scanned++) if (matches(store.notes[scanned])) view.push(scanned);
  }

  function updateCount() {
    count.textContent = `${view.length.toLocaleString()} of ${store.notes.length.toLocaleString()}`;
  }

  function summary(n) {
    if (n.kind === 'log') {
      const p = n.params ?? {};
      const data = typeof p.data === 'string' ? p.data : JSON.stringify(p.data ?? null);
      return `${p.logger ? `[${p.logger}] ` : ''}${data}`;
    }
    if (n.kind === 'status') return `${n.method}${n.params?.error ? ` — ${n.params.error}` : ''}${n.params?.reason ? ` — ${typeof n.params.reason === 'string' ? n.params.reason : JSON.stringify(n.params.reason)}` : ''}`;
    let p = '';
    try {
      p = JSON.stringify(n.params ?? {});
    } catch {
      p = '';
    }
    return `${n.method} ${p === '{}' ? '' : p.slice(0, 200)}`;
  }

  function renderRow(row, n) {
    clear(row);
    if (!n) return;
    row.dataset.kind = n.kind;
    add(row, 
      h('span', { class: 'c-time' }, timeText(n.at)),
      h('span', { class: 'c-kind' }, n.kind === 'log' ? badge(n.level, LEVEL_KIND[n.level] ?? 'neutral') : badge(n.kind === 'notification' ? 'notice' : n.kind, n.kind === 'status' ? 'info' : 'neutral')),
      h('span', { class: 'c-sum' }, summary(n)));
  }

  function renderDetail() {
    const n = store.notes[selected];
    clear(detail);
    if (!n) return;
    add(detail, h('div', { class: 'frame-head' }, badge(n.kind === 'log' ? n.level : n.kind, 'neutral'), h('code', null, ` ${n.method}`), h('span', { class: 'muted' }, ` seq ${n.seq} · ${timeText(n.at)}`)),
      jsonBlock(n.params ?? {}, { label: 'Notification params' }));
  }

  minLevel.value = 'debug';
  for (const c of [minLevel, showOther, showStatus]) c.addEventListener('change', rebuild);
  let t = 0;
  search.addEventListener('input', () => { clearTimeout(t); t = setTimeout(rebuild, 150); });
  const unsub = store.on('notes', () => {
    const before = view.length;
    extend();
    if (view.length !== before) list.setCount(view.length);
    updateCount();
  });

  const el = h('div', { class: 'history-tab notes-tab' },
    h('div', { class: 'toolbar card' }, minLevel,
      h('label', { class: 'check', for: 'notes-other' }, showOther, ' Other notifications'),
      h('label', { class: 'check', for: 'notes-status' }, showStatus, ' Session status'),
      search, count, h('span', { class: 'spacer' }), setLevel, setBtn),
    h('div', { class: 'history-split' },
      h('div', { class: 'card list-pane' }, list.el),
      h('section', { class: 'card detail-pane', 'aria-label': 'Notification detail' }, detail)));
  rebuild();
  return {
    el,
    shown: () => list.setCount(view.length),
    destroy() {
      unsub();
      list.destroy();
    },
  };
}
