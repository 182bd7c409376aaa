// Resources and resource templates: read, subscribe (updates are highlighted until the
// resource is read again), and templates expanded per RFC 6570 with completion of each
// variable.

import { h, clear, linkify, uid, add } from '../dom.js';
import { api } from '../api.js';
import { resourceContents, iconFor } from '../render.js';
import { templateVariables, expand } from '../uritemplate.js';
import { withCompletion } from '../complete.js';
import { button, busy, badge, empty, errorText, toast } from '../ui.js';

/**
 * resourcesTab builds the Resources tab.
 * @param {import('./session.js').TabCtx} ctx
 */
export function resourcesTab(ctx) {
  let resources = [];
  let templates = [];
  const resList = h('ul', { class: 'item-list resource-list', 'aria-label': 'Resources' });
  const tplList = h('ul', { class: 'item-list template-list', 'aria-label': 'Resource templates' });
  const changed = h('div', { class: 'list-changed', hidden: true, role: 'status' }, 'The server changed its resource list. ', button('Refresh', () => load(), { variant: 'small' }));
  const out = h('div', { class: 'detail', 'aria-live': 'polite' }, empty('Read a resource to see its contents.'));
  const refreshBtn = button('Refresh', () => busy(refreshBtn, load), { variant: 'small' });

  const subscribed = () => new Set(ctx.store.session?.subscriptions ?? []);
  const canSubscribe = () => ctx.store.session?.capabilities?.resources?.subscribe === true;
  const canComplete = () => !!ctx.store.session?.capabilities?.completions;

  async function load() {
    const [r, t] = await Promise.allSettled([api.resources(ctx.id), api.templates(ctx.id)]);
    resources = r.status === 'fulfilled' && Array.isArray(r.value?.resources) ? r.value.resources : [];
    templates = t.status === 'fulfilled' && Array.isArray(t.value?.resourceTemplates) ? t.value.resourceTemplates : [];
    ctx.store.listChanged.resources = false;
    changed.hidden = true;
    renderResources();
    renderTemplates();
    if (r.status === 'rejected') resList.appendChild(h('li', { class: 'form-error' }, `Could not list resources: ${errorText(r.reason)}`));
  }

  function renderResources() {
    clear(resList);
    const subs = subscribed();
    for (const r of resources) {
      const uri = String(r.uri ?? '');
      const isSub = subs.has(uri);
      const updated = ctx.store.updatedResources.has(uri);
      const subBtn = canSubscribe() ? button(isSub ? 'Unsubscribe' : 'Subscribe', () => busy(subBtn, async () => {
        if (isSub) await api.unsubscribe(ctx.id, uri);
        else await api.subscribe(ctx.id, uri);
        const s = ctx.store.session;
        if (s) {
          const set = new Set(s.subscriptions ?? []);
          if (isSub) set.delete(uri);
          else set.add(uri);
          s.subscriptions = [...set];
        }
        renderResources();
      }), { variant: 'small', 'aria-pressed': String(isSub) }) : null;
      resList.appendChild(h('li', { class: ['resource', updated ? 'updated' : null], dataset: { uri } },
        h('div', { class: 'resource-title' }, iconFor(r.icons), h('strong', null, String(r.title || r.name || uri)),
          r.mimeType ? badge(String(r.mimeType), 'type') : null,
          updated ? badge('updated', 'warn', 'The server said this resource changed') : null,
          isSub ? badge('subscribed', 'info') : null),
        h('code', { class: 'uri' }, uri),
        r.description ? h('p', { class: 'muted' }, linkify(String(r.description))) : null,
        h('div', { class: 'row' }, button('Read', () => read(uri), { variant: 'small' }), subBtn)));
    }
    if (resources.length === 0) resList.appendChild(h('li', null, empty('No resources.')));
  }

  function renderTemplates() {
    clear(tplList);
    for (const t of templates) {
      const tpl = String(t.uriTemplate ?? '');
      const vars = templateVariables(tpl);
      const inputs = new Map();
      const preview = h('code', { class: 'uri expanded' }, tpl);
      const values = () => {
        const o = {};
        for (const [k, inp] of inputs) if (inp.value !== '') o[k] = inp.value;
        return o;
      };
      const update = () => { preview.textContent = expand(tpl, values()); };
      const fields = vars.map((v) => {
        const inp = h('input', { class: 'input', type: 'text', spellcheck: 'false', id: uid('tv'), dataset: { var: v } });
        inputs.set(v, inp);
        inp.addEventListener('input', update);
        const wrapped = withCompletion(inp, {
          session: ctx.id, argument: v, enabled: canComplete,
          ref: () => ({ type: 'ref/resource', uri: tpl }),
          context: values,
        });
        return h('div', { class: 'field inline-field' }, h('label', { for: inp.id, class: 'field-label' }, v), wrapped);
      });
      tplList.appendChild(h('li', { class: 'template', dataset: { template: tpl } },
        h('div', { class: 'resource-title' }, iconFor(t.icons), h('strong', null, String(t.title || t.name || tpl)), t.mimeType ? badge(String(t.mimeType), 'type') : null),
        h('code', { class: 'uri' }, tpl),
        t.description ? h('p', { class: 'muted' }, linkify(String(t.description))) : null,
        h('div', { class: 'template-vars' }, fields),
        h('div', { class: 'row' }, h('span', { class: 'muted' }, 'URI: '), preview),
        h('div', { class: 'row' }, button('Read', () => read(expand(tpl, values())), { variant: 'small' }))));
    }
    if (templates.length === 0) tplList.appendChild(h('li', null, empty('No resource templates.')));
  }

  async function read(uri) {
    clear(out).appendChild(h('p', { class: 'muted' }, `Reading ${uri}…`));
    try {
      const r = await api.read(ctx.id, uri);
      ctx.store.updatedResources.delete(uri);
      renderResources();
      const contents = Array.isArray(r?.contents) ? r.contents : [];
      add(clear(out), h('h2', null, 'Contents of ', h('code', null, uri)),
        ...contents.map((c) => resourceContents(c)),
        contents.length === 0 ? empty('The resource is empty.') : null);
    } catch (err) {
      clear(out).appendChild(h('p', { class: 'form-error', role: 'alert' }, errorText(err)));
      toast(errorText(err), 'error');
    }
  }

  const unsubs = [
    ctx.store.on('resources', renderResources),
    ctx.store.on('lists', () => { changed.hidden = !ctx.store.listChanged.resources; }),
    ctx.store.on('session', () => { if (!loaded && ctx.store.session?.status === 'ready') { loaded = true; load(); } }),
  ];
  let loaded = false;
  if (ctx.store.session?.status === 'ready') {
    loaded = true;
    load();
  }
  const el = h('div', { class: 'split resources-tab' },
    h('aside', { class: 'sidebar card' },
      h('div', { class: 'card-head' }, h('h2', null, 'Resources'), refreshBtn), changed, resList,
      h('h2', null, 'Templates'), tplList),
    h('section', { class: 'card main-pane', 'aria-label': 'Resource contents' }, out));
  return { el, destroy: () => unsubs.forEach((u) => u()) };
}
