// The REST client: JSON in and out, bearer auth, RFC 9457 problems as ApiError, an
// Idempotency-Key on every mutating call (kept across its retries), and a bounded retry of
// network failures and 503/429 answers that say when to come back.

/** @typedef {{type?: string, title?: string, status?: number, detail?: string, field?: string, request_id?: string}} Problem */

/** ApiError is a failed request; problem is the server's problem+json when it sent one. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 for a network failure
   * @param {Problem|null} problem
   * @param {string} message
   */
  constructor(status, problem, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
  }
}

/**
 * @typedef {object} AuthHooks
 * @property {() => Promise<string|null>} token the bearer token to send, refreshed if due
 * @property {() => Promise<boolean>} unauthorized called on a 401; true means "retry once"
 */

/** @type {AuthHooks} */
let hooks = { token: async () => null, unauthorized: async () => false };

/** setAuthHooks wires the client to the sign-in state (auth.js). */
export function setAuthHooks(h) {
  hooks = h;
}

/** newKey returns a random Idempotency-Key (works outside secure contexts too). */
export function newKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * request sends one API call and returns the parsed body (null for 204).
 *
 * @param {string} method
 * @param {string} path starting with /v1/
 * @param {object} [opts]
 * @param {Record<string, any>=} opts.query values; arrays repeat the parameter; null/undefined skipped
 * @param {any=} opts.body JSON body
 * @param {Record<string,string>=} opts.headers
 * @param {AbortSignal=} opts.signal
 * @param {boolean=} opts.noAuth send no Authorization header
 * @param {'json'|'blob'|'response'=} opts.as how to return the body
 */
export async function request(method, path, opts = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(opts.query ?? {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item));
  }
  const headers = { Accept: 'application/json', ...(opts.headers ?? {}) };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && !headers['Idempotency-Key']) headers['Idempotency-Key'] = newKey();
  let authRetried = false;
  for (let attempt = 0; ; attempt++) {
    if (!opts.noAuth) {
      const token = await hooks.token();
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    let res;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: opts.signal,
        credentials: 'omit',
        cache: 'no-store',
        redirect: 'error',
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      if (attempt < 2) {
        await sleep(400 * (attempt + 1));
        continue;
      }
      throw new ApiError(0, null, 'The Tapline server could not be reached. Check your connection.');
    }
    if (res.status === 401 && !opts.noAuth && !authRetried) {
      authRetried = true;
      if (await hooks.unauthorized()) continue;
    }
    if ((res.status === 503 || res.status === 429) && attempt < 2) {
      const after = Number(res.headers.get('Retry-After'));
      if (Number.isFinite(after) && after >= 0 && after <= 5) {
        await sleep(Math.max(after, 0.3) * 1000);
        continue;
      }
    }
    if (!res.ok) throw await toError(res);
    if (opts.as === 'response') return res;
    if (opts.as === 'blob') return res.blob();
    if (res.status === 204) return null;
    const ct = res.headers.get('Content-Type') ?? '';
    if (ct.includes('json')) return res.json();
    return res.text();
  }
}

/** toError reads a failed response into an ApiError with a readable message. */
async function toError(res) {
  let problem = null;
  try {
    const ct = res.headers.get('Content-Type') ?? '';
    if (ct.includes('json')) problem = await res.json();
  } catch {
    problem = null;
  }
  const msg = problem?.detail || problem?.title || `${res.status} ${res.statusText}`;
  return new ApiError(res.status, problem, msg);
}

const enc = encodeURIComponent;
const s = (id) => `/v1/sessions/${enc(id)}`;

/** api wraps each REST endpoint the inspector uses (API.md, openapi.yaml). */
export const api = {
  me: () => request('GET', '/v1/me'),
  /** @param {{api_key?: string, id_token?: string}} body */
  token: (body) => request('POST', '/v1/auth/token', { body, noAuth: true }),
  listSessions: (query) => request('GET', '/v1/sessions', { query }),
  createSession: (body) => request('POST', '/v1/sessions', { body }),
  getSession: (id) => request('GET', s(id)),
  closeSession: (id) => request('DELETE', s(id)),
  reconnect: (id) => request('POST', `${s(id)}/reconnect`),
  tools: (id, cursor) => request('GET', `${s(id)}/tools`, { query: { cursor } }),
  startCall: (id, name, args) => request('POST', `${s(id)}/calls`, { body: { name, arguments: args ?? {} } }),
  listCalls: (id, limit = 200) => request('GET', `${s(id)}/calls`, { query: { limit } }),
  getCall: (id, callID) => request('GET', `${s(id)}/calls/${enc(callID)}`),
  cancelCall: (id, callID) => request('DELETE', `${s(id)}/calls/${enc(callID)}`),
  resources: (id, cursor) => request('GET', `${s(id)}/resources`, { query: { cursor } }),
  templates: (id, cursor) => request('GET', `${s(id)}/resource-templates`, { query: { cursor } }),
  read: (id, uri) => request('POST', `${s(id)}/resources/read`, { body: { uri } }),
  subscribe: (id, uri) => request('POST', `${s(id)}/resources/subscribe`, { body: { uri } }),
  unsubscribe: (id, uri) => request('POST', `${s(id)}/resources/unsubscribe`, { body: { uri } }),
  prompts: (id, cursor) => request('GET', `${s(id)}/prompts`, { query: { cursor } }),
  getPrompt: (id, name, args) => request('POST', `${s(id)}/prompts/get`, { body: { name, arguments: args } }),
  complete: (id, body) => request('POST', `${s(id)}/complete`, { body }),
  setLevel: (id, level) => request('POST', `${s(id)}/logging-level`, { body: { level } }),
  ping: (id) => request('POST', `${s(id)}/ping`),
  roots: (id) => request('GET', `${s(id)}/roots`),
  setRoots: (id, roots) => request('PUT', `${s(id)}/roots`, { body: { roots } }),
  rpc: (id, method, params) => request('POST', `${s(id)}/rpc`, { body: params === undefined ? { method } : { method, params } }),
  pending: (id) => request('GET', `${s(id)}/pending`),
  answer: (id, requestID, body) => request('POST', `${s(id)}/pending/${enc(requestID)}`, { body }),
  events: (id, query) => request('GET', `${s(id)}/events`, { query }),
  config: (id) => request('GET', `${s(id)}/config`),
  exportBlob: (id, format) => request('GET', `${s(id)}/export`, { query: { format }, as: 'blob' }),
  streamPath: (id) => `${s(id)}/events/stream`,
};
