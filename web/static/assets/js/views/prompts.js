// Prompts: the list, argument inputs with completion, and the messages prompts/get answers.

import { h, clear, linkify, uid, add } from '../dom.js';
import { api } from '../api.js';
import { promptMessages, iconFor } from '../render.js';
import { withCompletion } from '../complete.js';
import { button, busy, empty, errorText } from '../ui.js';

/**
 * promptsTab builds the Prompts tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function promptsTab(ctx) {
  let prompts = [];
  let selected = '';
  const list = h('ul', { class: 'item-list', 'aria-label': 'Prompts' });
  const detail = h('div', { class: 'detail' }, empty('Choose a prompt.'));
  const changed = h('div', { class: 'list-changed', hidden: true, role: 'status' }, 'The server changed its prompt list. ', button('Refresh', () => load(), { variant: 'small' }));
  const refreshBtn = button('Refresh', () => busy(refreshBtn, load), { variant: 'small' });
  const canComplete = () => !!ctx.store.session?.capabilities?.completions;

  async function load() {
    try {
      const r = await api.prompts(ctx.id);
      prompts = Array.isArray(r?.prompts) ? r.prompts : [];
      ctx.store.listChanged.prompts = false;
      changed.hidden = true;
      renderList();
      renderDetail();
    } catch (err) {
      clear(list).appendChild(h('li', { class: 'form-error', role: 'alert' }, `Could not list prompts: ${errorText(err)}`));
    }
  }

  function renderList() {
    clear(list);
    for (const p of prompts) {
      const name = String(p.name ?? '');
      list.appendChild(h('li', null, h('button', {
        type: 'button', class: ['item', name === selected ? 'selected' : null], 'aria-current': String(name === selected),
        dataset: { prompt: name }, onclick: () => ctx.go('prompts', name),
      }, iconFor(p.icons), h('span', { class: 'item-name' }, String(p.title || name)), p.title ? h('code', { class: 'item-sub' }, name) : null)));
    }
    if (prompts.length === 0) list.appendChild(h('li', null, empty('The server lists no prompts.')));
  }

  function renderDetail() {
    const p = prompts.find((x) => x.name === selected);
    clear(detail);
    if (!p) {
      detail.appendChild(empty(selected ? 'Loading…' : 'Choose a prompt.'));
      return;
    }
    const args = Array.isArray(p.arguments) ? p.arguments : [];
    const inputs = new Map();
    const values = () => {
      const o = {};
      for (const [k, inp] of inputs) if (inp.value !== '') o[k] = inp.value;
      return o;
    };
    const fields = args.map((a) => {
      const name = String(a.name ?? '');
      const inp = h('input', { class: 'input', type: 'text', id: uid('pa'), spellcheck: 'false', dataset: { arg: name } });
      if (a.required) inp.required = true;
      inputs.set(name, inp);
      const wrapped = withCompletion(inp, {
        session: ctx.id, argument: name, enabled: canComplete,
        ref: () => ({ type: 'ref/prompt', name: p.name }), context: values,
      });
      return h('div', { class: 'field' },
        h('label', { for: inp.id, class: 'field-label' }, String(a.title || name), a.required ? h('span', { class: 'req' }, ' *') : null),
        wrapped,
        a.description ? h('div', { class: 'field-hint' }, String(a.description)) : null);
    });
    const out = h('div', { class: 'prompt-out', 'aria-live': 'polite' });
    const getBtn = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Get prompt');
    const form = h('form', { class: 'prompt-form' }, fields.length ? fields : h('p', { class: 'muted' }, 'No arguments.'), h('div', { class: 'actions' }, getBtn));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      busy(getBtn, async () => {
        const r = await api.getPrompt(ctx.id, p.name, values());
        clear(out).appendChild(promptMessages(r));
      });
    });
    add(detail, 
      h('header', { class: 'detail-head' }, h('h2', null, iconFor(p.icons), String(p.title || p.name)), h('code', { class: 'muted' }, String(p.name))),
      p.description ? h('p', { class: 'description' }, linkify(String(p.description))) : null,
      form, out);
  }

  let loaded = false;
  const unsubs = [
    ctx.store.on('lists', () => { changed.hidden = !ctx.store.listChanged.prompts; }),
    ctx.store.on('session', () => { if (!loaded && ctx.store.session?.status === 'ready') { loaded = true; load(); } }),
  ];
  if (ctx.store.session?.status === 'ready') {
    loaded = true;
    load();
  }
  const el = h('div', { class: 'split prompts-tab' },
    h('aside', { class: 'sidebar card' }, h('div', { class: 'card-head' }, h('h2', null, 'Prompts'), refreshBtn), changed, list),
    h('section', { class: 'card main-pane', 'aria-label': 'Prompt' }, detail));
  return {
    el,
    show(item) {
      if (item !== undefined && item !== selected) {
        selected = item || '';
        renderList();
        renderDetail();
      }
    },
    destroy: () => unsubs.forEach((u) => u()),
  };
}
