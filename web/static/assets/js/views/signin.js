// The sign-in page: an API key (exchanged for a short-lived JWT), or an OIDC ID token where
// the server is configured for one.

import { h } from '../dom.js';
import { signInWithKey, signInWithIdToken, oidcStatus } from '../auth.js';
import { field, errorText } from '../ui.js';

/**
 * signInView builds the page.
 * @param {{onSignedIn: () => void}} o
 */
export function signInView(o) {
  const key = h('input', { type: 'password', class: 'input', name: 'api_key', autocomplete: 'off', spellcheck: 'false', placeholder: 'tpl_…', required: true });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in');
  const form = h('form', { class: 'card signin-form', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to Tapline'),
    h('p', { class: 'muted' }, 'Use an API key of your team. It is exchanged for a short-lived token; the key stays in this tab only.'),
    field('API key', key, { required: true }),
    error,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      await signInWithKey(key.value);
      key.value = '';
      o.onSignedIn();
    } catch (err) {
      error.textContent = err?.status === 401 ? 'That key was not accepted. Check it, or ask an admin for a new one.' : errorText(err);
      error.hidden = false;
      key.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });

  const oidcBox = h('section', { class: 'card oidc', 'aria-labelledby': 'oidc-title' },
    h('h2', { id: 'oidc-title' }, 'Single sign-on (OIDC)'),
    h('p', { class: 'muted', dataset: { oidc: 'checking' } }, 'Checking…'));
  oidcStatus().then((st) => {
    const status = /** @type {HTMLElement} */ (oidcBox.querySelector('[data-oidc]'));
    if (!st.configured) {
      status.dataset.oidc = 'off';
      status.textContent = 'OIDC sign-in is not configured on this server.';
    } else {
      status.dataset.oidc = 'on';
      status.textContent = `Sign in with an ID token from ${st.issuer}.`;
    }
    // An ID token from the configured issuer can always be exchanged, if the server accepts
    // them (TAPLINE_OIDC_*); offer it folded away.
    const tok = h('textarea', { class: 'input mono', rows: '3', spellcheck: 'false', placeholder: 'eyJ…' });
    const err2 = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const go = h('button', { type: 'submit', class: 'btn' }, 'Sign in with ID token');
    const f2 = h('form', { class: 'idtoken-form' }, field('ID token', tok), err2, h('div', { class: 'actions' }, go));
    f2.addEventListener('submit', async (e) => {
      e.preventDefault();
      err2.hidden = true;
      go.disabled = true;
      try {
        await signInWithIdToken(tok.value);
        tok.value = '';
        o.onSignedIn();
      } catch (err) {
        err2.textContent = errorText(err);
        err2.hidden = false;
      } finally {
        go.disabled = false;
      }
    });
    const det = h('details', { class: 'collapsible' }, h('summary', null, 'Use an ID token'), f2);
    if (st.configured) det.open = true;
    oidcBox.appendChild(det);
  });

  const el = h('div', { class: 'signin' }, form, oidcBox);
  queueMicrotask(() => key.focus());
  return el;
}
