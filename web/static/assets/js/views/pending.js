// The pending queue: requests the server made of a person (sampling, elicitation in form
// and URL modes, and 2026-07-28 input_required rounds). Any teammate can answer; a card
// being edited is never redrawn under the person's hands, only marked when someone else
// answered it first.

import { h, clear, linkify, safeLink, add } from '../dom.js';
import { api } from '../api.js';
import { createSchemaForm } from '../schema-form.js';
import { contentBlock } from '../render.js';
import { button, busy, badge, statusBadge, jsonBlock, empty, toast, dateTimeText, field, collapsible, pretty } from '../ui.js';

/**
 * pendingTab builds the Pending tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function pendingTab(ctx) {
  /** @type {Map<string, {el: HTMLElement, status: string}>} */
  const cards = new Map();
  const open = h('div', { class: 'pending-open', 'aria-label': 'Waiting for an answer' });
  const done = h('div', { class: 'pending-done' });
  const emptyNote = empty('No requests are waiting. When the server asks for sampling or input, it shows here.');

  function render() {
    const items = [...ctx.store.pending.values()].sort((a, b) => String(a.created_at ?? '').localeCompare(String(b.created_at ?? '')));
    for (const p of items) {
      const have = cards.get(p.request_id);
      if (!have) {
        const el = card(p);
        cards.set(p.request_id, { el, status: p.status });
        (p.status === 'pending' ? open : done).appendChild(el);
        continue;
      }
      if (have.status !== p.status) {
        have.status = p.status;
        markResolved(have.el, p);
        done.prepend(have.el);
      }
    }
    emptyNote.hidden = [...cards.values()].some((c) => c.status === 'pending');
  }

  /** markResolved disables a card's answers and shows how it ended. */
  function markResolved(el, p) {
    el.dataset.status = p.status;
    el.classList.add('resolved');
    for (const b of el.querySelectorAll('button[data-answer]')) /** @type {HTMLButtonElement} */ (b).disabled = true;
    const st = el.querySelector('.pending-status');
    if (st) add(clear(st), statusBadge(p.status), p.answered_by ? h('span', { class: 'muted' }, ` by ${p.answered_by}`) : null, p.reason ? h('span', { class: 'muted' }, ` — ${p.reason}`) : null);
    const body = el.querySelector('.pending-body');
    if (body instanceof HTMLDetailsElement) body.open = false;
  }

  async function answer(p, body, btn) {
    await busy(btn, async () => {
      const r = await api.answer(ctx.id, p.request_id, body);
      ctx.store.seedPending([r]);
      toast(body.action ? `Answered: ${body.action}.` : body.error ? 'Rejected.' : 'Sent.', 'ok');
    });
  }

  function card(p) {
    let kind = p.kind;
    let params = p.params ?? {};
    let method = kind === 'sampling' ? 'sampling/createMessage' : kind === 'elicitation' ? 'elicitation/create' : '';
    if (kind === 'input_required') {
      method = String(params.method ?? '');
      params = params.params ?? {};
    }
    let body;
    if (method === 'sampling/createMessage') body = samplingBody(p, params);
    else if (method === 'elicitation/create') body = elicitationBody(p, params);
    else body = genericBody(p, params);
    const el = h('article', { class: ['card', 'pending-card', `pending-${kind}`], dataset: { requestId: p.request_id, kind, status: p.status } },
      h('header', { class: 'pending-head' },
        badge(kind === 'input_required' ? `input required · ${method}` : kind, 'warn'),
        h('code', { class: 'muted small' }, ` ${p.request_id}`),
        p.call_id || p.params?.call_id ? h('span', { class: 'muted small' }, ` · for call ${p.call_id || p.params.call_id}`) : null,
        h('span', { class: 'spacer' }),
        h('span', { class: 'pending-status' }, statusBadge(p.status)),
        p.expires_at ? h('span', { class: 'muted small' }, ` expires ${dateTimeText(p.expires_at)}`) : null),
      h('div', { class: 'pending-body' }, body),
      collapsible('Request params', () => jsonBlock(p.params ?? {})));
    if (p.status !== 'pending') markResolved(el, p);
    return el;
  }

  function actions(...btns) {
    return h('div', { class: 'actions' }, btns);
  }

  function samplingBody(p, params) {
    const msgs = Array.isArray(params.messages) ? params.messages : [];
    const info = [];
    if (params.systemPrompt) info.push(['System prompt', String(params.systemPrompt)]);
    if (params.maxTokens !== undefined) info.push(['Max tokens', String(params.maxTokens)]);
    if (params.temperature !== undefined) info.push(['Temperature', String(params.temperature)]);
    if (params.includeContext) info.push(['Include context', String(params.includeContext)]);
    if (params.modelPreferences) info.push(['Model preferences', pretty(params.modelPreferences)]);
    if (Array.isArray(params.stopSequences)) info.push(['Stop sequences', params.stopSequences.join(', ')]);
    if (Array.isArray(params.tools)) info.push(['Tools offered', params.tools.map((t) => t?.name).join(', ')]);
    const model = h('input', { class: 'input', type: 'text', value: 'human' });
    const text = h('textarea', { class: 'input', rows: '5', placeholder: 'The assistant\'s reply' });
    const stop = h('select', { class: 'input' }, ['endTurn', 'stopSequence', 'maxTokens', 'toolUse'].map((s) => h('option', { value: s }, s)));
    const raw = h('textarea', { class: 'input mono', rows: '8', spellcheck: 'false', hidden: true, 'aria-label': 'CreateMessageResult JSON' });
    let rawMode = false;
    const draft = () => ({ role: 'assistant', model: model.value || 'human', content: { type: 'text', text: text.value }, stopReason: stop.value });
    const toggle = button('Edit as JSON', () => {
      rawMode = !rawMode;
      if (rawMode) raw.value = pretty(draft());
      raw.hidden = !rawMode;
      form.hidden = rawMode;
      toggle.textContent = rawMode ? 'Back to the form' : 'Edit as JSON';
    }, { variant: 'small' });
    const form = h('div', null, field('Reply', text), h('div', { class: 'grid2' }, field('Model', model), field('Stop reason', stop)));
    const send = button('Send', () => {
      let result;
      if (rawMode) {
        try {
          result = JSON.parse(raw.value);
        } catch (err) {
          toast(`The JSON does not parse: ${err.message}`, 'error');
          return;
        }
      } else {
        result = draft();
      }
      answer(p, { result }, send);
    }, { variant: 'primary', dataset: { answer: 'send' } });
    const reject = button('Reject', () => answer(p, { error: { code: -1, message: 'The request was rejected by a person in Tapline.' } }, reject), { variant: 'danger', dataset: { answer: 'reject' } });
    return h('div', { class: 'sampling' },
      h('h3', null, 'The server asks for a model reply'),
      info.length ? h('dl', { class: 'kv' }, info.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, h('pre', { class: 'content-text' }, v))])) : null,
      h('div', { class: 'messages' }, msgs.map((m) => h('div', { class: 'message' },
        badge(String(m?.role ?? '?'), m?.role === 'assistant' ? 'accent' : 'neutral'),
        Array.isArray(m?.content) ? m.content.map((c) => contentBlock(c)) : contentBlock(m?.content)))),
      h('div', { class: 'form-tools' }, toggle), form, raw,
      actions(send, reject));
  }

  function elicitationBody(p, params) {
    const message = h('p', { class: 'elicit-message' }, linkify(String(params.message ?? '')));
    const decline = button('Decline', () => answer(p, { action: 'decline' }, decline), { dataset: { answer: 'decline' } });
    const cancel = button('Cancel', () => answer(p, { action: 'cancel' }, cancel), { variant: 'ghost', dataset: { answer: 'cancel' } });
    if (params.mode === 'url') {
      const url = String(params.url ?? '');
      const accept = button('I have done it', () => answer(p, { action: 'accept' }, accept), { variant: 'primary', dataset: { answer: 'accept' } });
      return h('div', { class: 'elicitation elicitation-url' },
        h('h3', null, 'The server asks you to visit a page'),
        message,
        h('p', null, 'Page: ', safeLink(url, url)),
        params.elicitationId ? h('p', { class: 'muted small' }, `Elicitation id ${params.elicitationId}`) : null,
        h('p', { class: 'field-hint' }, 'Open it only if you trust the server. Accept once you have finished there.'),
        actions(accept, decline, cancel));
    }
    const form = createSchemaForm(params.requestedSchema ?? { type: 'object', properties: {} }, { label: 'Requested information' });
    const accept = h('button', { type: 'submit', class: 'btn btn-primary', dataset: { answer: 'accept' } }, 'Accept');
    const f = h('form', { class: 'elicit-form' }, form.el, actions(accept, decline, cancel));
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      const v = form.getValue();
      if (!v.ok) return;
      answer(p, { action: 'accept', content: v.value ?? {} }, accept);
    });
    return h('div', { class: 'elicitation' }, h('h3', null, 'The server asks for information'), message, f);
  }

  function genericBody(p, params) {
    const raw = h('textarea', { class: 'input mono', rows: '6', spellcheck: 'false', value: '{"action": "accept", "content": {}}' });
    const send = button('Send answer', () => {
      let body;
      try {
        body = JSON.parse(raw.value);
      } catch (err) {
        toast(`The JSON does not parse: ${err.message}`, 'error');
        return;
      }
      answer(p, body, send);
    }, { variant: 'primary', dataset: { answer: 'send' } });
    return h('div', null, h('p', null, 'An unfamiliar request; answer with JSON (see the API reference).'), jsonBlock(params), field('Answer', raw), actions(send));
  }

  const unsub = ctx.store.on('pending', render);
  const el = h('div', { class: 'pending-tab' },
    h('h2', { class: 'visually-hidden' }, 'Pending requests'),
    emptyNote, open,
    h('details', { class: 'collapsible resolved-list' }, h('summary', null, 'Answered and expired'), done));
  render();
  return { el, destroy: unsub };
}
