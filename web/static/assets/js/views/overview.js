// Overview: what the server said about itself (info, capabilities, instructions, the
// negotiated version), and the session's controls: ping, log level, roots, config export,
// history download and a raw JSON-RPC request for power users.

import { h, clear, linkify, safeLink, saveBlob, add } from '../dom.js';
import { api } from '../api.js';
import { LEVELS } from '../store.js';
import { field, button, busy, jsonBlock, toast, badge, pretty, dateTimeText } from '../ui.js';
import { iconFor } from '../render.js';

/**
 * overviewTab builds the Overview tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function overviewTab(ctx) {
  const info = h('div', { class: 'kv' });
  const instructions = h('div', { class: 'instructions' });
  const caps = h('div', { class: 'caps' });

  function renderInfo() {
    const s = ctx.store.session;
    if (!s) return;
    const si = s.server_info && typeof s.server_info === 'object' ? s.server_info : {};
    const rows = [
      ['Server', h('span', null, iconFor(si.icons), String(si.title || si.name || '—'), si.title && si.name ? h('code', { class: 'muted' }, ` ${si.name}`) : null)],
      ['Version', String(si.version ?? '—')],
      ['Negotiated protocol', s.protocol_version ? h('code', null, s.protocol_version) : h('span', { class: 'muted' }, 'not connected yet')],
      ['Requested era', h('code', null, String(s.target?.protocol_version ?? 'auto'))],
      ['Transport', String(s.target?.transport ?? '')],
      ['URL', h('code', null, String(s.target?.url ?? ''))],
      ['Headers', (s.target?.header_names ?? []).length ? (s.target.header_names).join(', ') : h('span', { class: 'muted' }, 'none')],
      ['Bearer token', s.target?.has_bearer_token ? 'set (hidden)' : h('span', { class: 'muted' }, 'none')],
      ['Status', h('span', null, badge(s.status, s.status === 'ready' ? 'ok' : s.status === 'error' ? 'err' : 'warn'), s.error ? ` ${s.error}` : '')],
      ['Created', `${dateTimeText(s.created_at)}${s.created_by ? ` by ${s.created_by}` : ''}`],
      ['Log level', s.logging_level || h('span', { class: 'muted' }, 'server default')],
    ];
    if (si.description) rows.splice(2, 0, ['Description', String(si.description)]);
    if (si.websiteUrl) rows.splice(2, 0, ['Website', safeLink(String(si.websiteUrl))]);
    clear(info);
    for (const [k, v] of rows) add(info, h('dt', null, k), h('dd', null, v));
    clear(instructions).appendChild(s.instructions ? h('pre', { class: 'content-text' }, linkify(s.instructions)) : h('p', { class: 'muted' }, 'The server gave no instructions.'));
    clear(caps).appendChild(s.capabilities ? capabilityList(s.capabilities) : h('p', { class: 'muted' }, 'Not connected yet.'));
    levelSel.value = s.logging_level || '';
    if (!rootsLoaded && s.roots) rootsEditor.set(s.roots);
  }

  // Ping.
  const pingOut = h('output', { class: 'muted', 'aria-live': 'polite' });
  const pingBtn = button('Ping', () => busy(pingBtn, async () => {
    const r = await api.ping(ctx.id);
    pingOut.textContent = `${Number(r.ms).toFixed(1)} ms round trip`;
  }));

  // Logging level.
  const levelSel = h('select', { class: 'input', 'aria-label': 'Log level' }, h('option', { value: '' }, '— choose —'), LEVELS.map((l) => h('option', { value: l }, l)));
  const levelBtn = button('Set level', () => busy(levelBtn, async () => {
    if (!levelSel.value) return;
    await api.setLevel(ctx.id, levelSel.value);
    toast(`Log level set to ${levelSel.value}.`, 'ok');
    if (ctx.store.session) ctx.store.session.logging_level = levelSel.value;
  }));

  // Roots.
  let rootsLoaded = false;
  const rootsEditor = rootsRows();
  const rootsSave = button('Save roots', () => busy(rootsSave, async () => {
    const roots = rootsEditor.get();
    const r = await api.setRoots(ctx.id, roots);
    rootsEditor.set(r.roots ?? roots);
    toast('Roots saved; the server was told they changed.', 'ok');
  }), { variant: 'primary' });
  api.roots(ctx.id).then((r) => { rootsLoaded = true; rootsEditor.set(r.roots ?? []); }).catch(() => {});

  // Config export and history download.
  const configOut = h('div', { class: 'config-out' });
  const configBtn = button('Show mcp.json', () => busy(configBtn, async () => {
    const cfg = await api.config(ctx.id);
    add(clear(configOut), 
      h('p', { class: 'field-hint' }, 'Secrets are ${ENV} placeholders: set them in the client\'s environment.'),
      jsonBlock(cfg, { label: 'mcp.json' }),
      button('Download mcp.json', () => saveBlob(new Blob([pretty(cfg)]), 'mcp.json'), { variant: 'small' }));
  }));
  const dl = (format) => {
    const b = button(format === 'jsonl' ? 'Download history (JSON lines)' : 'Download history (JSON)', () => busy(b, async () => {
      const blob = await api.exportBlob(ctx.id, format);
      saveBlob(blob, `session-${ctx.id}.${format}`);
    }));
    return b;
  };

  // Raw JSON-RPC request.
  const rpcMethod = h('input', { class: 'input mono', type: 'text', placeholder: 'tools/list', spellcheck: 'false' });
  const rpcParams = h('textarea', { class: 'input mono', rows: '4', spellcheck: 'false', placeholder: '{}' });
  const rpcOut = h('div', { class: 'rpc-out' });
  const rpcBtn = button('Send', () => busy(rpcBtn, async () => {
    let params;
    if (rpcParams.value.trim()) {
      try {
        params = JSON.parse(rpcParams.value);
      } catch (err) {
        throw new Error(`Params are not valid JSON: ${err.message}`);
      }
    }
    const r = await api.rpc(ctx.id, rpcMethod.value.trim(), params);
    clear(rpcOut).appendChild(r.error ? h('div', null, badge('error', 'err'), jsonBlock(r.error)) : jsonBlock(r.result ?? r));
  }), { variant: 'primary' });

  const el = h('div', { class: 'overview grid-cards' },
    h('section', { class: 'card', 'aria-labelledby': 'ov-server' }, h('h2', { id: 'ov-server' }, 'Server'), info),
    h('section', { class: 'card', 'aria-labelledby': 'ov-instr' }, h('h2', { id: 'ov-instr' }, 'Instructions'), instructions),
    h('section', { class: 'card', 'aria-labelledby': 'ov-caps' }, h('h2', { id: 'ov-caps' }, 'Capabilities'), caps),
    h('section', { class: 'card', 'aria-labelledby': 'ov-actions' }, h('h2', { id: 'ov-actions' }, 'Actions'),
      h('div', { class: 'row' }, pingBtn, pingOut),
      h('div', { class: 'row' }, field('Log level', levelSel), levelBtn),
      h('h3', null, 'Client config'), h('div', { class: 'row' }, configBtn, dl('json'), dl('jsonl')), configOut),
    h('section', { class: 'card', 'aria-labelledby': 'ov-roots' }, h('h2', { id: 'ov-roots' }, 'Roots'),
      h('p', { class: 'field-hint' }, 'Roots the inspector offers the server (roots/list).'), rootsEditor.el, h('div', { class: 'actions' }, rootsSave)),
    h('section', { class: 'card', 'aria-labelledby': 'ov-rpc' }, h('h2', { id: 'ov-rpc' }, 'Raw request'),
      h('p', { class: 'field-hint' }, 'Send any JSON-RPC request to the server. It shows in the history like any other.'),
      field('Method', rpcMethod), field('Params (JSON)', rpcParams), h('div', { class: 'actions' }, rpcBtn), rpcOut));

  const unsub = ctx.store.on('session', renderInfo);
  renderInfo();
  return { el, destroy: unsub };
}

/** capabilityList shows each capability as a badge, with the full JSON folded below. */
function capabilityList(caps) {
  const names = Object.keys(caps ?? {});
  const detail = h('details', { class: 'collapsible' }, h('summary', null, 'JSON'), jsonBlock(caps, { label: 'Capabilities' }));
  return h('div', null,
    h('div', { class: 'badges' }, names.length ? names.map((n) => {
      const sub = caps[n] && typeof caps[n] === 'object' ? Object.keys(caps[n]).filter((k) => caps[n][k]) : [];
      return badge(sub.length ? `${n} (${sub.join(', ')})` : n, 'accent');
    }) : h('span', { class: 'muted' }, 'none')),
    detail);
}

/** rootsRows edits a list of {uri, name}. */
function rootsRows() {
  const rows = h('div', { class: 'kv-rows roots' });
  const add = (r = { uri: '', name: '' }) => {
    const uri = h('input', { class: 'input mono', type: 'text', value: r.uri ?? '', placeholder: 'file:///work', 'aria-label': 'Root URI', spellcheck: 'false' });
    const name = h('input', { class: 'input', type: 'text', value: r.name ?? '', placeholder: 'Name (optional)', 'aria-label': 'Root name' });
    const row = h('div', { class: 'kv-row' }, uri, name);
    row.appendChild(button('×', () => row.remove(), { variant: 'ghost', 'aria-label': 'Remove root' }));
    rows.appendChild(row);
    return uri;
  };
  const el = h('div', null, rows, button('Add root', () => add().focus(), { variant: 'small' }));
  return {
    el,
    set(list) {
      clear(rows);
      for (const r of list ?? []) add(r);
    },
    get() {
      const out = [];
      for (const row of rows.children) {
        const [u, n] = row.querySelectorAll('input');
        if (!u.value.trim()) continue;
        out.push(n.value.trim() ? { uri: u.value.trim(), name: n.value.trim() } : { uri: u.value.trim() });
      }
      return out;
    },
  };
}

