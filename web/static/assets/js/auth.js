// Sign-in state. An API key (or an OIDC ID token) is exchanged for a short-lived JWT with
// POST /v1/auth/token; the JWT is what every request carries. The JWT lives in memory and in
// sessionStorage (this tab only, gone when the tab closes) so a reload keeps you signed in.
// The API key is kept beside it, also tab-scoped, because the only way to refresh a JWT is to
// exchange the key again; signing out forgets both. When a server has no /v1/auth/token, the
// key itself is sent as the bearer token.

import { api, ApiError, setAuthHooks } from './api.js';

const STORAGE = 'tapline.auth';
/** Refresh this long before expiry. */
const REFRESH_MARGIN_MS = 60_000;

/**
 * @typedef {object} AuthState
 * @property {'jwt'|'key'|'oidc'} mode
 * @property {string} token bearer token sent with requests
 * @property {number} expiresAt ms since epoch; 0 when the token does not expire (mode key)
 * @property {string=} apiKey the key the JWT came from (mode jwt)
 */

/** @type {AuthState|null} */
let state = load();
/** @type {Promise<boolean>|null} */
let refreshing = null;
let timer = 0;
const listeners = new Set();

function load() {
  try {
    const raw = sessionStorage.getItem(STORAGE);
    if (!raw) return null;
    const s = JSON.parse(raw);
    if (typeof s?.token !== 'string' || !s.token) return null;
    return s;
  } catch {
    return null;
  }
}

function save() {
  try {
    if (state) sessionStorage.setItem(STORAGE, JSON.stringify(state));
    else sessionStorage.removeItem(STORAGE);
  } catch {
    // Storage may be disabled; memory still works for this page's life.
  }
}

function set(next, reason) {
  state = next;
  save();
  schedule();
  for (const fn of listeners) fn(state, reason);
}

/** onAuthChange calls fn(state, reason) whenever sign-in state changes. */
export function onAuthChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** signedIn reports whether there is a token to use. */
export function signedIn() {
  return state !== null && (state.expiresAt === 0 || state.expiresAt > Date.now() || !!state.apiKey);
}

/** authMode is how this tab signed in: 'jwt', 'key' or 'oidc'. */
export function authMode() {
  return state?.mode ?? null;
}

/** tokenExpiry is the JWT's expiry in ms since epoch (0: none). */
export function tokenExpiry() {
  return state?.expiresAt ?? 0;
}

/**
 * exchange trades a credential for a JWT. It returns null when the server has no
 * /v1/auth/token (404, 405, 501), so the caller can fall back to the key itself.
 * @param {{api_key?: string, id_token?: string}} cred
 */
async function exchange(cred) {
  try {
    const t = await api.token(cred);
    const expiresAt = Date.parse(t.expires_at);
    return { token: t.token, expiresAt: Number.isFinite(expiresAt) ? expiresAt : Date.now() + 10 * 60_000 };
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405 || err.status === 501)) return null;
    throw err;
  }
}

/**
 * signInWithKey exchanges an API key for a JWT (or, without /v1/auth/token, uses the key) and
 * checks it with GET /v1/me, which it returns.
 * @param {string} apiKey
 */
export async function signInWithKey(apiKey) {
  const key = apiKey.trim();
  if (!key) throw new Error('Enter an API key.');
  const t = await exchange({ api_key: key });
  const next = t
    ? { mode: 'jwt', token: t.token, expiresAt: t.expiresAt, apiKey: key }
    : { mode: 'key', token: key, expiresAt: 0 };
  state = next; // so /v1/me carries it
  try {
    const me = await api.me();
    set(next, 'signin');
    return me;
  } catch (err) {
    state = null;
    save();
    throw err;
  }
}

/**
 * signInWithIdToken exchanges an ID token from the configured OIDC issuer. The JWT cannot be
 * refreshed without a new ID token, so the tab signs out when it expires.
 * @param {string} idToken
 */
export async function signInWithIdToken(idToken) {
  const t = await exchange({ id_token: idToken.trim() });
  if (!t) throw new Error('This server does not exchange OIDC tokens.');
  const next = { mode: 'oidc', token: t.token, expiresAt: t.expiresAt };
  state = next;
  try {
    const me = await api.me();
    set(next, 'signin');
    return me;
  } catch (err) {
    state = null;
    save();
    throw err;
  }
}

/** signOut forgets the token and the key. */
export function signOut(reason = 'signout') {
  set(null, reason);
}

/**
 * refresh exchanges the kept API key for a fresh JWT; one at a time. It resolves false when
 * the tab had to sign out (the key no longer works).
 */
export function refresh() {
  if (!state?.apiKey) return Promise.resolve(false);
  if (refreshing) return refreshing;
  const key = state.apiKey;
  refreshing = (async () => {
    try {
      const t = await exchange({ api_key: key });
      if (!t) {
        set({ mode: 'key', token: key, expiresAt: 0 }, 'refresh');
      } else {
        set({ mode: 'jwt', token: t.token, expiresAt: t.expiresAt, apiKey: key }, 'refresh');
      }
      return true;
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 400)) {
        signOut('expired');
        return false;
      }
      // Network trouble: keep the current token and try again shortly.
      clearTimeout(timer);
      timer = setTimeout(() => refresh(), 10_000);
      return state !== null && state.expiresAt > Date.now();
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function schedule() {
  clearTimeout(timer);
  if (!state || !state.expiresAt) return;
  const left = state.expiresAt - Date.now();
  if (!state.apiKey) {
    // An OIDC token cannot be refreshed here: sign out when it ends.
    timer = setTimeout(() => signOut('expired'), Math.max(left, 0));
    return;
  }
  // A minute before expiry; for short-lived tokens at three quarters of what is left, and
  // never in a tight loop.
  const wait = left > 2 * REFRESH_MARGIN_MS ? left - REFRESH_MARGIN_MS : Math.max(left * 0.75, 2_000);
  timer = setTimeout(() => refresh(), wait);
}

/** currentToken returns the bearer token, refreshing first when it is about to expire. */
export async function currentToken() {
  if (!state) return null;
  if (state.expiresAt && state.expiresAt - Date.now() < 5_000) {
    if (!(await refresh())) return null;
  }
  return state?.token ?? null;
}

setAuthHooks({
  token: currentToken,
  unauthorized: async () => {
    if (state?.apiKey) return refresh();
    if (state) signOut('expired');
    return false;
  },
});

schedule();

/**
 * oidcStatus says how OIDC sign-in is configured. The API has no endpoint that describes an
 * OIDC issuer to the browser yet (no authorization endpoint or client id for a redirect
 * flow), so the answer is {configured: false}; an ID token obtained elsewhere can still be
 * exchanged with signInWithIdToken when the server accepts them (TAPLINE_OIDC_*).
 * @returns {Promise<{configured: boolean, issuer?: string}>}
 */
export async function oidcStatus() {
  return { configured: false };
}
