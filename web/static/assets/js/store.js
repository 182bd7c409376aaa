// The browser's model of one session, rebuilt from its event log. Every event the server
// sends (replayed from the start on page load, then live) goes through apply(); views
// subscribe to topics and redraw on the next animation frame, so a replay of thousands of
// events costs one redraw, not thousands.

/** Log levels in order (RFC 5424, as MCP uses them). */
export const LEVELS = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'];

/**
 * @typedef {object} Frame
 * @property {number} seq
 * @property {string} at
 * @property {'send'|'recv'} dir
 * @property {any} msg the JSON-RPC message (absent when truncated)
 * @property {'request'|'response'|'error'|'notification'|'truncated'|'invalid'|'http'|'other'} kind
 * @property {string} method the request's method (responses borrow it from their request)
 * @property {any} id JSON-RPC id, or undefined
 * @property {number} pair index of the paired frame, or -1
 * @property {number} latencyMs for responses paired with their request
 * @property {any=} http {status, headers}
 * @property {any=} truncated {size, preview}
 * @property {string|undefined} _text lowercased JSON, built on first search
 */

/**
 * @typedef {object} Call
 * @property {string} call_id
 * @property {string} name
 * @property {any} arguments
 * @property {string} status queued|running|succeeded|failed|cancelled|interrupted
 * @property {{progress: number, total?: number, message?: string}=} progress
 * @property {any=} result
 * @property {any=} error
 * @property {string=} created_at
 */

const FINISHED = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);

/** isFinished reports whether a call status is final. */
export function isFinished(status) {
  return FINISHED.has(status);
}

export class SessionStore {
  /** @param {string} id */
  constructor(id) {
    this.id = id;
    /** @type {any} the session as GET /v1/sessions/{id} answers it */
    this.session = null;
    this.lastSeq = 0;
    /** @type {Frame[]} */
    this.frames = [];
    /** @type {any[]} notification, status and session_moved rows */
    this.notes = [];
    /** @type {Map<string, Call>} */
    this.calls = new Map();
    /** @type {Map<string, any>} */
    this.pending = new Map();
    this.watchers = { count: 0, principals: [] };
    /** @type {string} SSE state: connecting, live, reconnecting, offline, gone, … */
    this.conn = 'connecting';
    /** Resource URIs updated since last read. */
    this.updatedResources = new Set();
    /** list_changed notifications since the list was last fetched, by list name. */
    this.listChanged = { tools: false, resources: false, prompts: false };
    this.openRequests = new Map();
    this.callHints = new Map();
    /** The seq the last GET of the session reflects. */
    this.snapshotSeq = 0;
    /** Pending requests whose state came from GET …/pending (newer than a replay). */
    this.seededPending = new Set();
    this.listeners = new Map();
    this.dirty = new Set();
    this.scheduled = false;
  }

  /**
   * on subscribes fn to a topic: session, frames, notes, calls, pending, watchers, conn,
   * resources, lists. It returns the unsubscribe function.
   */
  on(topic, fn) {
    if (!this.listeners.has(topic)) this.listeners.set(topic, new Set());
    this.listeners.get(topic).add(fn);
    return () => this.listeners.get(topic)?.delete(fn);
  }

  /** touch marks topics changed; listeners run once on the next animation frame. */
  touch(...topics) {
    for (const t of topics) this.dirty.add(t);
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      this.scheduled = false;
      const topicsNow = [...this.dirty];
      this.dirty.clear();
      for (const t of topicsNow) {
        for (const fn of this.listeners.get(t) ?? []) {
          try {
            fn();
          } catch (err) {
            console.error('view update failed', t, err);
          }
        }
      }
    };
    // rAF does not run in background tabs; a timeout keeps the model fresh there too.
    if (document.hidden) setTimeout(run, 50);
    else requestAnimationFrame(run);
  }

  /**
   * setSession stores a fresh GET of the session. Its last_seq marks what the snapshot
   * already reflects: replayed status events up to there are history, not news.
   */
  setSession(s) {
    this.session = s;
    if (typeof s?.last_seq === 'number') this.snapshotSeq = Math.max(this.snapshotSeq ?? 0, s.last_seq);
    this.touch('session');
  }

  setConn(state) {
    this.conn = state;
    this.touch('conn');
  }

  /** seedCalls merges GET …/calls (newest first); events win where they are newer. */
  seedCalls(items) {
    for (const c of items ?? []) {
      const have = this.calls.get(c.call_id);
      if (!have) {
        const fresh = { ...c };
        // Its tools/call request was already seen on the stream: it is running.
        if (fresh.status === 'queued' && this.callHints.has(c.call_id)) fresh.status = 'running';
        this.calls.set(c.call_id, fresh);
        continue;
      }
      have.name = c.name || have.name;
      have.arguments = c.arguments ?? have.arguments;
      have.created_at = c.created_at ?? have.created_at;
      if (!isFinished(have.status)) {
        have.status = c.status;
        if (c.progress) have.progress = c.progress;
        if (c.result) have.result = c.result;
        if (c.error) have.error = c.error;
      }
    }
    this.touch('calls');
  }

  /** addCall records a call the page just started (POST answer). */
  addCall(c) {
    this.seedCalls([c]);
  }

  /** seedPending merges GET …/pending. */
  seedPending(items) {
    for (const p of items ?? []) {
      const have = this.pending.get(p.request_id);
      if (!have || have.status === 'pending') this.pending.set(p.request_id, { ...have, ...p });
      if (p.status !== 'pending') this.seededPending.add(p.request_id);
    }
    this.touch('pending');
  }

  /** pendingCount is how many requests wait for an answer. */
  pendingCount() {
    let n = 0;
    for (const p of this.pending.values()) if (p.status === 'pending') n++;
    return n;
  }

  /** noteDeleted adds a note for the events from…to that retention deleted. */
  noteDeleted(from, to, at) {
    const method = from === to ? `event ${from} was deleted by retention` : `events ${from}–${to} were deleted by retention`;
    this.notes.push({ seq: from, at, kind: 'system', level: 'notice', method, params: { from, to } });
    this.touch('notes');
  }

  /**
   * apply folds one event ({seq, type, at, data}) into the model. Events at or below the
   * last seq are ignored, so a replay overlapping what is known is harmless.
   */
  apply(ev) {
    if (typeof ev?.seq !== 'number' || ev.seq <= this.lastSeq) return;
    // Seqs have no gaps and the stream fills any it misses, so skipped seqs were deleted by
    // the team's event retention (the server says so in a comment too): say where.
    if (ev.seq > this.lastSeq + 1) this.noteDeleted(this.lastSeq + 1, ev.seq - 1, ev.at);
    this.lastSeq = ev.seq;
    const d = ev.data ?? {};
    switch (ev.type) {
      case 'frame': this.applyFrame(ev, d); break;
      case 'notification': this.applyNotification(ev, d); break;
      case 'progress': this.applyProgress(d); break;
      case 'call_result': this.applyCallResult(d); break;
      case 'pending_request': {
        const have = this.pending.get(d.request_id);
        // A request already resolved stays resolved: a replayed one that GET …/pending showed
        // so, and one whose pending_resolved came first (a close can commit its expiry ahead
        // of the request the owner parks as the session ends).
        const status = have && (this.seededPending.has(d.request_id) || (have.status && have.status !== 'pending')) ? have.status : 'pending';
        this.pending.set(d.request_id, {
          ...(have ?? {}),
          request_id: d.request_id, kind: d.kind, params: d.params, status,
          call_id: d.call_id ?? have?.call_id, expires_at: d.expires_at ?? have?.expires_at, created_at: have?.created_at ?? ev.at,
        });
        this.touch('pending');
        break;
      }
      case 'pending_resolved': {
        const p = this.pending.get(d.request_id) ?? { request_id: d.request_id, kind: 'unknown', params: {} };
        p.status = d.status;
        p.answered_by = d.answered_by;
        p.reason = d.reason;
        this.pending.set(d.request_id, p);
        this.touch('pending');
        break;
      }
      case 'status':
        // Replayed history older than the session snapshot does not change its state.
        if (this.session && ev.seq > this.snapshotSeq) {
          this.session.status = d.state;
          if (d.error) this.session.error = d.error;
          if (d.protocol_version) this.session.protocol_version = d.protocol_version;
        }
        this.notes.push({ seq: ev.seq, at: ev.at, kind: 'status', level: d.state === 'error' ? 'error' : 'info', method: `status: ${d.state}`, params: d });
        this.touch('session', 'notes');
        break;
      case 'session_moved':
        this.notes.push({ seq: ev.seq, at: ev.at, kind: 'system', level: 'notice', method: 'session moved to another worker', params: d });
        this.touch('notes');
        break;
      case 'watchers':
        this.watchers = { count: d.count ?? 0, principals: Array.isArray(d.principals) ? d.principals : [] };
        this.touch('watchers');
        break;
      default:
        break;
    }
  }

  callFor(id) {
    let c = this.calls.get(id);
    if (!c) {
      const hint = this.callHints.get(id);
      c = { call_id: id, name: hint?.name ?? '', arguments: hint?.arguments ?? {}, status: 'running' };
      this.calls.set(id, c);
    }
    return c;
  }

  applyProgress(d) {
    if (!d.call_id) return;
    const c = this.callFor(d.call_id);
    const p = { progress: d.progress, total: d.total, message: d.message };
    if (isFinished(c.status)) {
      // Progress may be recorded just after the result: keep the furthest, leave the status.
      if (!c.progress || Number(p.progress) > Number(c.progress.progress)) c.progress = p;
      this.touch('calls');
      return;
    }
    if (c.status === 'queued') c.status = 'running';
    c.progress = p;
    this.touch('calls');
  }

  applyCallResult(d) {
    if (!d.call_id) return;
    const c = this.callFor(d.call_id);
    c.status = d.status || (d.ok ? 'succeeded' : 'failed');
    if (d.result !== undefined) c.result = d.result;
    if (d.error !== undefined) c.error = d.error;
    this.touch('calls');
  }

  applyNotification(ev, d) {
    const method = String(d.method ?? '');
    const params = d.params ?? {};
    let level = 'info';
    let kind = 'notification';
    if (method === 'notifications/message') {
      kind = 'log';
      level = LEVELS.includes(params.level) ? params.level : 'info';
    }
    if (method === 'notifications/resources/updated' && typeof params.uri === 'string') {
      this.updatedResources.add(params.uri);
      this.touch('resources');
    }
    if (method === 'notifications/tools/list_changed') { this.listChanged.tools = true; this.touch('lists'); }
    if (method === 'notifications/resources/list_changed') { this.listChanged.resources = true; this.touch('lists'); }
    if (method === 'notifications/prompts/list_changed') { this.listChanged.prompts = true; this.touch('lists'); }
    this.notes.push({ seq: ev.seq, at: ev.at, kind, level, method, params });
    this.touch('notes');
  }

  applyFrame(ev, d) {
    /** @type {Frame} */
    const f = {
      seq: ev.seq, at: ev.at, dir: d.dir === 'recv' ? 'recv' : 'send', msg: d.message,
      kind: 'other', method: '', id: undefined, pair: -1, latencyMs: -1, http: d.http,
      truncated: d.truncated ? { size: d.size, preview: d.preview } : undefined, _text: undefined,
    };
    const m = d.message;
    if (d.truncated) {
      f.kind = 'truncated';
    } else if (d.invalid_json) {
      f.kind = 'invalid';
      f.truncated = { size: d.size, preview: d.preview };
    } else if (m === null || m === undefined) {
      f.kind = 'http';
      f.method = d.error ? String(d.error) : '';
    } else if (m && typeof m === 'object' && !Array.isArray(m)) {
      if (typeof m.method === 'string') {
        f.method = m.method;
        if (m.id !== undefined && m.id !== null) {
          f.kind = 'request';
          f.id = m.id;
          this.openRequests.set(`${f.dir}:${JSON.stringify(m.id)}`, this.frames.length);
          if (m.method === 'tools/call' && f.dir === 'send') {
            const token = m.params?._meta?.progressToken;
            if (typeof token === 'string') {
              this.callHints.set(token, { name: m.params?.name, arguments: m.params?.arguments });
              const c = this.calls.get(token);
              if (c) {
                if (!c.name) c.name = m.params?.name ?? '';
                // The request went out: a queued call is now running.
                if (c.status === 'queued') {
                  c.status = 'running';
                  this.touch('calls');
                }
              }
            }
          }
        } else {
          f.kind = 'notification';
        }
      } else if ('result' in m || 'error' in m) {
        f.kind = 'error' in m ? 'error' : 'response';
        f.id = m.id;
        const origin = f.dir === 'recv' ? 'send' : 'recv';
        const key = `${origin}:${JSON.stringify(m.id)}`;
        const idx = this.openRequests.get(key);
        if (idx !== undefined) {
          this.openRequests.delete(key);
          const req = this.frames[idx];
          req.pair = this.frames.length;
          f.pair = idx;
          f.method = req.method;
          const t0 = Date.parse(req.at);
          const t1 = Date.parse(ev.at);
          if (Number.isFinite(t0) && Number.isFinite(t1)) {
            f.latencyMs = Math.max(t1 - t0, 0);
            req.latencyMs = f.latencyMs;
          }
        }
      }
    }
    this.frames.push(f);
    this.touch('frames');
  }
}

/**
 * frameSummary is the one-line description of a frame in the history list.
 * @param {Frame} f
 */
export function frameSummary(f) {
  switch (f.kind) {
    case 'request': return `${f.method} (id ${fmtId(f.id)})`;
    case 'notification': return f.method;
    case 'response': return `result${f.method ? ` ${f.method}` : ''} (id ${fmtId(f.id)})`;
    case 'error': return `error ${f.msg?.error?.code ?? ''}: ${String(f.msg?.error?.message ?? '')} (id ${fmtId(f.id)})`;
    case 'truncated': return `[truncated, ${f.truncated?.size ?? '?'} bytes] ${String(f.truncated?.preview ?? '').slice(0, 120)}`;
    case 'invalid': return `[not JSON, ${f.truncated?.size ?? '?'} bytes] ${String(f.truncated?.preview ?? '').slice(0, 120)}`;
    case 'http': return f.method || `HTTP ${f.http?.status ?? ''} with no body`.replace('HTTP  ', 'HTTP ');
    default: return f.method || JSON.stringify(f.msg ?? null).slice(0, 120);
  }
}

function fmtId(id) {
  return typeof id === 'string' ? JSON.stringify(id) : String(id);
}

/** frameText is the lowercase searchable text of a frame, cached. */
export function frameText(f) {
  if (f._text === undefined) {
    let s;
    try {
      s = f.truncated ? String(f.truncated.preview ?? '') : JSON.stringify(f.msg);
    } catch {
      s = '';
    }
    f._text = `${f.method} ${s}`.toLowerCase();
  }
  return f._text;
}
