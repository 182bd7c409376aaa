// History: every raw JSON-RPC frame, both directions, in a virtualised list that stays fast
// at tens of thousands of frames. Filters by direction and kind, a search over the frames'
// JSON, and request/response pairing by JSON-RPC id (select one to see both, with latency).

import { h, clear, saveBlob, add } from '../dom.js';
import { api } from '../api.js';
import { frameSummary, frameText } from '../store.js';
import { VirtualList } from '../vlist.js';
import { jsonBlock, badge, timeText, button, busy, empty } from '../ui.js';

const ROW_HEIGHT = 30;

/**
 * historyTab builds the History tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function historyTab(ctx) {
  const store = ctx.store;
  /** Indexes into store.frames that pass the filters. */
  let view = [];
  /** How many of store.frames the view has looked at. */
  let scanned = 0;
  let selectedFrame = -1;

  const dir = h('select', { class: 'input', 'aria-label': 'Direction' },
    h('option', { value: '' }, 'Both directions'), h('option', { value: 'send' }, 'Sent →'), h('option', { value: 'recv' }, 'Received ←'));
  const kind = h('select', { class: 'input', 'aria-label': 'Kind' },
    h('option', { value: '' }, 'All kinds'), h('option', { value: 'request' }, 'Requests'), h('option', { value: 'response' }, 'Results'),
    h('option', { value: 'error' }, 'Errors'), h('option', { value: 'notification' }, 'Notifications'), h('option', { value: 'truncated' }, 'Truncated'), h('option', { value: 'invalid' }, 'Not JSON'), h('option', { value: 'http' }, 'HTTP only'));
  const search = h('input', { class: 'input', type: 'search', placeholder: 'Search method, id or JSON', 'aria-label': 'Search frames' });
  const follow = h('input', { type: 'checkbox', id: 'hist-follow', checked: true });
  const count = h('span', { class: 'muted count', 'aria-live': 'polite' });
  const detail = h('div', { class: 'frame-detail', 'aria-live': 'polite' }, empty('Select a frame to see it (↑/↓ move through the list).'));
  const dlBtn = button('Download', () => busy(dlBtn, async () => saveBlob(await api.exportBlob(ctx.id, 'json'), `session-${ctx.id}.json`)), { variant: 'small' });

  const list = new VirtualList({
    rowHeight: ROW_HEIGHT,
    label: 'Frames',
    idPrefix: 'frame',
    renderRow: (row, i) => renderRow(row, store.frames[view[i]]),
    onSelect: (i) => {
      selectedFrame = view[i];
      renderDetail();
    },
  });

  function matches(f) {
    if (dir.value && f.dir !== dir.value) return false;
    if (kind.value && f.kind !== kind.value) return false;
    const q = search.value.trim().toLowerCase();
    if (q && !frameText(f).includes(q)) return false;
    return true;
  }

  /** rebuild recomputes the filtered view from scratch (filters changed). */
  function rebuild() {
    view = [];
    scanned = 0;
    extend();
    list.setCount(view.length, { keepSelection: false });
    const at = view.indexOf(selectedFrame);
    if (at >= 0) {
      list.selected = at;
      list.scrollToIndex(at);
    }
    updateCount();
  }

  /** extend adds frames that arrived since the last look. */
  function extend() {
    const frames = store.frames;
    for (; scanned < frames.length; scanned++) if (matches(frames[scanned])) view.push(scanned);
  }

  function updateCount() {
    const total = store.frames.length;
    count.textContent = view.length === total ? `${total.toLocaleString()} frames` : `${view.length.toLocaleString()} of ${total.toLocaleString()} frames`;
    count.dataset.shown = String(view.length);
    count.dataset.total = String(total);
  }

  function renderRow(row, f) {
    clear(row);
    if (!f) return;
    row.dataset.seq = String(f.seq);
    row.dataset.kind = f.kind;
    row.dataset.dir = f.dir;
    add(row, 
      h('span', { class: 'c-seq' }, String(f.seq)),
      h('span', { class: 'c-time' }, timeText(f.at)),
      h('span', { class: ['c-dir', `dir-${f.dir}`], title: f.dir === 'send' ? 'sent to the server' : 'received from the server' }, f.dir === 'send' ? '→' : '←'),
      h('span', { class: ['c-kind', `kind-${f.kind}`] }, f.kind),
      h('span', { class: 'c-sum' }, frameSummary(f)),
      h('span', { class: 'c-lat' }, f.latencyMs >= 0 ? `${f.latencyMs} ms` : f.kind === 'request' ? '…' : ''));
  }

  function renderDetail() {
    const f = store.frames[selectedFrame];
    clear(detail);
    if (!f) {
      detail.appendChild(empty('Select a frame.'));
      return;
    }
    const pair = f.pair >= 0 ? store.frames[f.pair] : null;
    const jump = pair ? button(f.kind === 'request' ? 'Go to response' : 'Go to request', () => {
      selectedFrame = f.pair;
      let at = view.indexOf(f.pair);
      if (at < 0) {
        // The partner is filtered out: clear the filters so it can be shown.
        dir.value = '';
        kind.value = '';
        search.value = '';
        rebuild();
        at = view.indexOf(f.pair);
      }
      list.select(at);
    }, { variant: 'small' }) : null;
    add(detail, 
      h('div', { class: 'frame-head' },
        badge(f.dir === 'send' ? 'sent →' : '← received', f.dir === 'send' ? 'info' : 'accent'),
        badge(f.kind, f.kind === 'error' ? 'err' : 'neutral'),
        h('span', { class: 'muted' }, ` seq ${f.seq} · ${timeText(f.at)}`),
        f.latencyMs >= 0 ? h('span', { class: 'muted' }, f.kind === 'request' ? ` · answered in ${f.latencyMs} ms` : ` · ${f.latencyMs} ms after its request`) : null,
        jump),
      f.truncated
        ? h('div', null, h('p', { class: 'refused' }, f.kind === 'invalid' ? `Not JSON: ${f.truncated.size} bytes; the first part:` : `Truncated: ${f.truncated.size} bytes; the first part:`), h('pre', { class: 'json' }, String(f.truncated.preview ?? '')))
        : f.kind === 'http' ? h('p', { class: 'muted' }, 'An HTTP exchange with no JSON-RPC body.') : jsonBlock(f.msg, { label: 'Frame JSON' }),
      f.http ? h('details', { class: 'collapsible' }, h('summary', null, `HTTP ${f.http.status ?? ''}`), jsonBlock(f.http)) : null,
      pair ? h('section', { class: 'pair' }, h('h3', null, f.kind === 'request' ? 'Its response' : 'Its request', ` (seq ${pair.seq})`), pair.truncated ? h('pre', { class: 'json' }, String(pair.truncated.preview ?? '')) : jsonBlock(pair.msg)) : null,
      !pair && f.kind === 'request' ? h('p', { class: 'muted' }, 'No response yet.') : null);
  }

  let searchTimer = 0;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(rebuild, 150);
  });
  dir.addEventListener('change', rebuild);
  kind.addEventListener('change', rebuild);
  follow.addEventListener('change', () => {
    list.follow = follow.checked;
    if (follow.checked) list.setCount(view.length);
  });

  const unsub = store.on('frames', () => {
    const before = view.length;
    extend();
    if (view.length !== before) {
      list.follow = follow.checked;
      list.setCount(view.length);
    }
    // A response pairs with a request already drawn: refresh the latency column.
    list.refresh();
    if (selectedFrame >= 0) {
      const f = store.frames[selectedFrame];
      if (f && f.kind === 'request' && f.pair >= 0 && !detail.querySelector('.pair')) renderDetail();
    }
    updateCount();
  });
  // Scrolling up stops following; scrolling back to the end resumes it.
  list.el.addEventListener('scroll', () => { follow.checked = list.follow; }, { passive: true });

  const el = h('div', { class: 'history-tab' },
    h('div', { class: 'toolbar card' }, dir, kind, search,
      h('label', { class: 'check', for: 'hist-follow' }, follow, ' Follow new frames'),
      count, h('span', { class: 'spacer' }), dlBtn),
    h('div', { class: 'history-split' },
      h('div', { class: 'card list-pane' },
        h('div', { class: 'vhead', 'aria-hidden': 'true' }, h('span', { class: 'c-seq' }, 'seq'), h('span', { class: 'c-time' }, 'time'), h('span', { class: 'c-dir' }, ''), h('span', { class: 'c-kind' }, 'kind'), h('span', { class: 'c-sum' }, 'summary'), h('span', { class: 'c-lat' }, 'latency')),
        list.el),
      h('section', { class: 'card detail-pane', 'aria-label': 'Frame detail' }, detail)));
  rebuild();
  return {
    el,
    list,
    shown() {
      // The list measures itself once visible.
      list.setCount(view.length);
    },
    destroy() {
      unsub();
      list.destroy();
    },
  };
}
