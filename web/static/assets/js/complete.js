// Argument completion (completion/complete) for prompt arguments and resource-template
// variables: typing asks the server (debounced), and its values fill the input's datalist.

import { h, uid, clear } from './dom.js';
import { api } from './api.js';

/**
 * withCompletion wires an input to completion/complete and returns the input's wrapper.
 * @param {HTMLInputElement} input
 * @param {object} o
 * @param {string} o.session session id
 * @param {() => any} o.ref {type: 'ref/prompt', name} or {type: 'ref/resource', uri}
 * @param {string} o.argument argument (variable) name
 * @param {() => Record<string, string>} o.context the other arguments already filled
 * @param {() => boolean=} o.enabled whether the server offers completions
 */
export function withCompletion(input, o) {
  const list = h('datalist', { id: uid('dl') });
  input.setAttribute('list', list.id);
  input.setAttribute('autocomplete', 'off');
  let timer = 0;
  let seq = 0;
  const ask = async () => {
    if (o.enabled && !o.enabled()) return;
    const mine = ++seq;
    const ctxArgs = o.context();
    delete ctxArgs[o.argument];
    const body = { ref: o.ref(), argument: { name: o.argument, value: input.value } };
    if (Object.keys(ctxArgs).length) body.context = { arguments: ctxArgs };
    try {
      const r = await api.complete(o.session, body);
      if (mine !== seq) return;
      const values = Array.isArray(r?.completion?.values) ? r.completion.values.slice(0, 100) : [];
      clear(list);
      for (const v of values) list.appendChild(h('option', { value: String(v) }));
      input.dataset.completions = String(values.length);
    } catch {
      // Completion is a convenience: a server without it just offers nothing.
    }
  };
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(ask, 300);
  });
  input.addEventListener('focus', () => {
    if (!list.firstChild) ask();
  });
  return h('span', { class: 'with-completion' }, input, list);
}
