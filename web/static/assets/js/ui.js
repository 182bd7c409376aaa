// Small shared widgets: toasts, labelled fields, buttons, badges, JSON blocks, copy buttons.

import { h, uid, clear } from './dom.js';

/**
 * toast shows a short message in the live region; errors stay until dismissed or 10 s.
 * @param {string} message
 * @param {'info'|'ok'|'error'} [kind]
 */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×');
  const el = h('div', { class: ['toast', `toast-${kind}`] }, h('span', null, message), close);
  box.appendChild(el);
  setTimeout(() => el.remove(), kind === 'error' ? 10_000 : 5_000);
}

/** errorText turns any thrown value into one readable line. */
export function errorText(err) {
  if (!err) return 'Unknown error';
  if (typeof err === 'string') return err;
  const field = err.problem?.field ? ` (${err.problem.field})` : '';
  return `${err.message || String(err)}${field}`;
}

/**
 * field wraps a control with its label (and an optional hint), wiring for= and
 * aria-describedby.
 * @param {string} label
 * @param {HTMLElement} control
 * @param {object} [o]
 * @param {string=} o.hint
 * @param {boolean=} o.required
 * @param {string=} o.className
 */
export function field(label, control, o = {}) {
  if (!control.id) control.id = uid('f');
  const parts = [h('label', { for: control.id, class: 'field-label' }, label, o.required ? h('span', { class: 'req', 'aria-hidden': 'true' }, ' *') : null)];
  parts.push(control);
  if (o.hint) {
    const hint = h('div', { class: 'field-hint', id: uid('hint') }, o.hint);
    control.setAttribute('aria-describedby', hint.id);
    parts.push(hint);
  }
  if (o.required) control.setAttribute('aria-required', 'true');
  return h('div', { class: ['field', o.className] }, parts);
}

/**
 * button makes a <button type=button>.
 * @param {string} label
 * @param {(ev: Event) => any} onclick
 * @param {object} [o] class (primary, danger, small, ghost) and extra attributes
 */
export function button(label, onclick, o = {}) {
  const { variant, ...rest } = o;
  return h('button', { type: 'button', class: ['btn', variant ? `btn-${variant}` : null], onclick, ...rest }, label);
}

/**
 * busy disables btn while fn runs and reports a failure as a toast. Returns fn's result.
 * @template T
 * @param {HTMLButtonElement|null} btn
 * @param {() => Promise<T>} fn
 * @returns {Promise<T|undefined>}
 */
export async function busy(btn, fn) {
  if (btn) {
    btn.disabled = true;
    btn.setAttribute('aria-busy', 'true');
  }
  try {
    return await fn();
  } catch (err) {
    toast(errorText(err), 'error');
    return undefined;
  } finally {
    if (btn) {
      btn.disabled = false;
      btn.removeAttribute('aria-busy');
    }
  }
}

/** badge is a small pill; kind picks the colour. */
export function badge(text, kind = 'neutral', title) {
  return h('span', { class: ['badge', `badge-${kind}`], title }, text);
}

/** statusBadge colours a session or call status. */
export function statusBadge(status) {
  const kinds = {
    ready: 'ok', succeeded: 'ok', answered: 'ok', live: 'ok',
    connecting: 'warn', running: 'warn', queued: 'warn', pending: 'warn', reconnecting: 'warn',
    error: 'err', failed: 'err', interrupted: 'err', expired: 'err', gone: 'err', offline: 'err',
    closed: 'neutral', cancelled: 'neutral',
  };
  return badge(status, kinds[status] ?? 'neutral');
}

/** pretty formats JSON with two-space indent; non-JSON values as their string. */
export function pretty(v) {
  try {
    return JSON.stringify(v, null, 2) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * jsonBlock shows a value as formatted JSON text, with a copy button.
 * @param {any} value
 * @param {object} [o]
 * @param {string=} o.label accessible name
 * @param {number=} o.maxHeight css class picks a height cap
 */
export function jsonBlock(value, o = {}) {
  const text = typeof value === 'string' ? value : pretty(value);
  return h('div', { class: 'json-block' },
    copyButton(text),
    h('pre', { class: 'json', tabindex: '0', 'aria-label': o.label ?? 'JSON' }, text));
}

/** copyButton copies text to the clipboard. */
export function copyButton(text, label = 'Copy') {
  const btn = h('button', { type: 'button', class: 'btn btn-small btn-ghost copy-btn' }, label);
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(typeof text === 'function' ? text() : text);
      btn.textContent = 'Copied';
    } catch {
      btn.textContent = 'Copy failed';
    }
    setTimeout(() => { btn.textContent = label; }, 1500);
  });
  return btn;
}

/**
 * collapsible is a <details> with a summary.
 * @param {string|Node} summary
 * @param {() => Node|Node[]} body built on first open
 * @param {boolean} [open]
 */
export function collapsible(summary, body, open = false) {
  const d = h('details', { class: 'collapsible' }, h('summary', null, summary));
  let built = false;
  const build = () => {
    if (built) return;
    built = true;
    const b = body();
    for (const n of Array.isArray(b) ? b : [b]) if (n) d.appendChild(n);
  };
  d.addEventListener('toggle', () => { if (d.open) build(); });
  if (open) {
    d.open = true;
    build();
  }
  return d;
}

/** timeText formats an RFC 3339 time as local HH:MM:SS.mmm. */
export function timeText(at) {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** dateTimeText formats an RFC 3339 time for lists. */
export function dateTimeText(at) {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleString();
}

/** empty is the placeholder shown for an empty list. */
export function empty(text) {
  return h('p', { class: 'empty' }, text);
}

/**
 * tabList builds an accessible tab list: arrow keys, Home and End move between tabs and
 * activate them. It returns the element and functions to mark the active tab and to change
 * a tab's label (a count badge) without rebuilding, so focus is never lost.
 * @param {{id: string, label: string}[]} items
 * @param {(id: string) => void} onSelect
 * @param {string} label
 */
export function tabList(items, onSelect, label) {
  const el = h('div', { role: 'tablist', class: 'tabs', 'aria-label': label });
  const buttons = items.map((it) => h('button', {
    type: 'button', role: 'tab', id: `tab-${it.id}`, class: 'tab',
    'aria-selected': 'false', 'aria-controls': 'tabpanel', tabindex: '-1', dataset: { tab: it.id },
    onclick: () => onSelect(it.id),
  }, it.label));
  el.addEventListener('keydown', (e) => {
    const i = buttons.indexOf(/** @type {any} */ (document.activeElement));
    if (i < 0) return;
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % buttons.length;
    if (e.key === 'ArrowLeft') j = (i - 1 + buttons.length) % buttons.length;
    if (e.key === 'Home') j = 0;
    if (e.key === 'End') j = buttons.length - 1;
    if (j >= 0) {
      e.preventDefault();
      buttons[j].focus();
      onSelect(items[j].id);
    }
  });
  for (const b of buttons) el.appendChild(b);
  return {
    el,
    /** select marks id as the active tab. */
    select(id) {
      for (const b of buttons) {
        const on = b.dataset.tab === id;
        b.setAttribute('aria-selected', String(on));
        b.tabIndex = on ? 0 : -1;
      }
    },
    /** setExtra shows a node (a badge) after a tab's label, or nothing. */
    setExtra(id, node) {
      const b = buttons.find((x) => x.dataset.tab === id);
      if (!b) return;
      const it = items.find((x) => x.id === id);
      clear(b);
      b.append(it?.label ?? id);
      if (node) b.append(' ', node);
    },
  };
}

/** setChildren is replace() for views that rebuild a region. */
export function setChildren(el, ...children) {
  clear(el);
  for (const c of children.flat()) if (c) el.appendChild(c);
  return el;
}
