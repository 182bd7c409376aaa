// The team's sessions and the form that connects a new one.

import { h, navLink, clear } from '../dom.js';
import { api } from '../api.js';
import { field, button, busy, statusBadge, dateTimeText, empty, toast, errorText } from '../ui.js';

/** Protocol versions a session may be pinned to (openapi ProtocolVersionPreference). */
export const PROTOCOL_ERAS = ['auto', '2026-07-28', '2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'];

/**
 * sessionsView builds the sessions page.
 * @param {{navigate: (hash: string) => void}} o
 */
export function sessionsView(o) {
  const list = h('div', { class: 'session-list', 'aria-live': 'polite' });
  const filter = h('select', { class: 'input', 'aria-label': 'Show sessions' },
    h('option', { value: '' }, 'All'),
    h('option', { value: 'connecting,ready' }, 'Live'),
    h('option', { value: 'error' }, 'Failed'),
    h('option', { value: 'closed' }, 'Closed'));
  const more = button('Load more', () => load(true), { variant: 'small', hidden: true });
  let cursor = '';
  let alive = true;

  async function load(append) {
    try {
      const page = await api.listSessions({ status: filter.value || undefined, limit: 50, cursor: append ? cursor : undefined });
      if (!alive) return;
      if (!append) clear(list);
      for (const s of page.items ?? []) list.appendChild(sessionRow(s));
      if (!list.firstChild) list.appendChild(empty('No sessions yet. Connect one with the form.'));
      cursor = page.next_cursor ?? '';
      more.hidden = !cursor;
    } catch (err) {
      if (!alive) return;
      clear(list).appendChild(h('p', { class: 'form-error', role: 'alert' }, `Could not list sessions: ${errorText(err)}`));
    }
  }
  filter.addEventListener('change', () => load(false));
  load(false);
  const refreshTimer = setInterval(() => { if (!document.hidden) load(false); }, 15_000);

  const el = h('div', { class: 'page sessions-page' },
    h('section', { class: 'card', 'aria-labelledby': 'sessions-title' },
      h('div', { class: 'card-head' }, h('h1', { id: 'sessions-title' }, 'Team sessions'), h('div', { class: 'row' }, filter, button('Refresh', () => load(false), { variant: 'small' }))),
      list, more),
    connectForm(o));
  return {
    el,
    destroy() {
      alive = false;
      clearInterval(refreshTimer);
    },
  };
}

function sessionRow(s) {
  const name = s.name || s.server_info?.name || 'Untitled session';
  return h('article', { class: 'session-row', dataset: { session: s.id } },
    h('div', { class: 'session-main' },
      navLink(`#/s/${encodeURIComponent(s.id)}/overview`, { class: 'session-name' }, name),
      statusBadge(s.status)),
    h('div', { class: 'session-meta' },
      h('code', { class: 'target-url' }, String(s.target?.url ?? '')),
      h('span', { class: 'muted' }, ` ${s.target?.transport ?? ''} · ${s.protocol_version || s.target?.protocol_version || ''}`),
      h('span', { class: 'muted' }, ` · ${dateTimeText(s.created_at)}${s.created_by ? ` by ${s.created_by}` : ''}`),
      h('span', { class: 'muted' }, ` · ${s.last_seq ?? 0} events`)));
}

/** connectForm is the "connect a server" form. */
function connectForm(o) {
  const url = h('input', { class: 'input', type: 'url', name: 'url', required: true, placeholder: 'https://mcp.example.com/mcp', autocomplete: 'url', spellcheck: 'false' });
  const name = h('input', { class: 'input', type: 'text', name: 'name', maxlength: '200', placeholder: 'optional' });
  const transport = h('select', { class: 'input', name: 'transport' },
    h('option', { value: 'streamable_http' }, 'Streamable HTTP'),
    h('option', { value: 'sse' }, 'HTTP + SSE (legacy)'));
  const era = h('select', { class: 'input', name: 'protocol_version' }, PROTOCOL_ERAS.map((v) => h('option', { value: v }, v === 'auto' ? 'auto (newest both speak)' : v)));
  const bearer = h('input', { class: 'input', type: 'password', name: 'bearer_token', autocomplete: 'off', spellcheck: 'false', placeholder: 'optional' });
  const headers = headerRows();
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Connect');
  const form = h('form', { class: 'card connect-form', 'aria-labelledby': 'connect-title' },
    h('h2', { id: 'connect-title' }, 'Connect a server'),
    field('Server URL', url, { required: true, hint: 'The MCP endpoint. Tapline connects from its own network; private addresses may be refused.' }),
    h('div', { class: 'grid2' }, field('Transport', transport), field('Protocol version', era)),
    field('Name', name),
    field('Bearer token', bearer, { hint: 'Sent as Authorization: Bearer. Stored encrypted; never shown again.' }),
    headers.el,
    error,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const target = { url: url.value.trim(), transport: transport.value, protocol_version: era.value };
    const hdrs = headers.value();
    if (hdrs === null) {
      error.textContent = 'Every header needs a name.';
      error.hidden = false;
      return;
    }
    if (Object.keys(hdrs).length) target.headers = hdrs;
    if (bearer.value) target.bearer_token = bearer.value;
    const body = { target };
    if (name.value.trim()) body.name = name.value.trim();
    await busy(submit, async () => {
      try {
        const s = await api.createSession(body);
        bearer.value = '';
        toast(`Connecting to ${target.url}…`);
        o.navigate(`#/s/${encodeURIComponent(s.id)}/overview`);
      } catch (err) {
        error.textContent = errorText(err);
        error.hidden = false;
      }
    });
  });
  return form;
}

/** headerRows edits name/value pairs; value() is null when a row has a value but no name. */
function headerRows() {
  const rows = h('div', { class: 'kv-rows' });
  const add = () => {
    const k = h('input', { class: 'input', type: 'text', placeholder: 'Header name', 'aria-label': 'Header name', spellcheck: 'false' });
    const v = h('input', { class: 'input', type: 'password', placeholder: 'Value', 'aria-label': 'Header value', autocomplete: 'off' });
    const row = h('div', { class: 'kv-row' }, k, v);
    row.appendChild(button('×', () => row.remove(), { variant: 'ghost', 'aria-label': 'Remove header' }));
    rows.appendChild(row);
    k.focus();
  };
  const el = h('fieldset', { class: 'headers' }, h('legend', null, 'Headers'), h('p', { class: 'field-hint' }, 'Values are secret: stored encrypted, never returned.'), rows, button('Add header', add, { variant: 'small' }));
  return {
    el,
    value() {
      const out = {};
      for (const row of rows.children) {
        const [k, v] = row.querySelectorAll('input');
        const name = k.value.trim();
        if (!name && v.value) return null;
        if (name) out[name] = v.value;
      }
      return out;
    },
  };
}
