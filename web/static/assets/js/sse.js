// A Server-Sent Events client on fetch(). EventSource cannot send an Authorization header,
// so this reads the response body as a stream and parses it (the WHATWG "event stream"
// format: id, event, data and retry fields, comments, any line ending). It reconnects on its
// own after a network loss, a server drain or a silent connection, sending Last-Event-ID so
// the server replays exactly what was missed.

/**
 * @typedef {'connecting'|'live'|'reconnecting'|'offline'|'gone'|'unauthorized'|'stopped'} StreamState
 */

/** parseEventStream feeds text chunks and calls onMessage for each complete message. */
export class EventStreamParser {
  /** @param {(msg: {id: string|null, event: string, data: string}) => void} onMessage */
  constructor(onMessage, onRetry) {
    this.onMessage = onMessage;
    this.onRetry = onRetry ?? (() => {});
    this.buf = '';
    this.data = [];
    this.event = '';
    this.id = null;
    this.sawCR = false;
  }

  /** push parses one decoded chunk. */
  push(chunk) {
    let text = chunk;
    // A CRLF split across chunks: the LF was already handled with the CR.
    if (this.sawCR && text.startsWith('\n')) text = text.slice(1);
    this.sawCR = false;
    this.buf += text;
    let start = 0;
    for (let i = 0; i < this.buf.length; i++) {
      const c = this.buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(this.buf.slice(start, i));
      if (c === 13) {
        if (i + 1 < this.buf.length) {
          if (this.buf.charCodeAt(i + 1) === 10) i++;
        } else {
          this.sawCR = true;
        }
      }
      start = i + 1;
    }
    this.buf = this.buf.slice(start);
  }

  line(l) {
    if (l === '') {
      if (this.data.length > 0) {
        this.onMessage({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
      }
      this.data = [];
      this.event = '';
      return;
    }
    if (l.startsWith(':')) return;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data': this.data.push(value); break;
      case 'event': this.event = value; break;
      case 'id': if (!value.includes('\0')) this.id = value; break;
      case 'retry': if (/^\d+$/.test(value)) this.onRetry(Number(value)); break;
      default: break;
    }
  }
}

/**
 * EventStream follows an SSE endpoint with a bearer token and resumes after any drop.
 */
export class EventStream {
  /**
   * @param {object} o
   * @param {string} o.path e.g. /v1/sessions/ID/events/stream
   * @param {() => Promise<string|null>} o.token bearer token
   * @param {() => Promise<boolean>} o.unauthorized called on 401; true retries at once
   * @param {number=} o.lastEventId resume after this seq (0: from the start)
   * @param {(msg: {id: string|null, event: string, data: string}) => void} o.onMessage
   * @param {(state: StreamState, detail?: string) => void} o.onState
   * @param {number=} o.idleTimeoutMs reconnect when nothing (not even a keep-alive) arrived for this long
   */
  constructor(o) {
    this.o = o;
    this.lastEventId = o.lastEventId ? String(o.lastEventId) : '';
    this.retryMs = 2000;
    this.failures = 0;
    this.stopped = false;
    this.ctrl = null;
    this.state = 'connecting';
    this.idleTimeoutMs = o.idleTimeoutMs ?? 45_000;
    this.onOnline = () => this.kick();
    this.onOffline = () => this.setState('offline');
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
  }

  setState(s, detail) {
    this.state = s;
    this.o.onState(s, detail);
  }

  /** start begins following; it returns at once. */
  start() {
    this.loop();
    return this;
  }

  /** stop ends the stream for good. */
  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    this.ctrl?.abort();
    clearTimeout(this.wakeTimer);
    this.wake?.();
    this.setState('stopped');
  }

  /** kick reconnects now instead of waiting out the back-off (the network came back). */
  kick() {
    this.failures = 0;
    this.wake?.();
  }

  /** drop aborts the current connection (tests and the watchdog use it); it resumes. */
  drop() {
    this.ctrl?.abort();
  }

  async loop() {
    while (!this.stopped) {
      const outcome = await this.connectOnce();
      if (this.stopped || outcome === 'final') return;
      if (outcome === 'now') continue;
      this.failures += 1;
      const backoff = Math.min(this.retryMs * 2 ** Math.min(this.failures - 1, 4), 15_000);
      const jitter = backoff * (0.2 * Math.random());
      this.setState(navigator.onLine === false ? 'offline' : 'reconnecting');
      await new Promise((resolve) => {
        this.wake = resolve;
        this.wakeTimer = setTimeout(resolve, backoff + jitter);
      });
      this.wake = null;
    }
  }

  /**
   * connectOnce runs one connection until it ends. It answers 'final' (do not retry), 'now'
   * (retry at once) or 'later' (retry after the back-off).
   */
  async connectOnce() {
    this.ctrl = new AbortController();
    const ctrl = this.ctrl;
    const headers = { Accept: 'text/event-stream' };
    const token = await this.o.token();
    if (!token) {
      this.setState('unauthorized');
      return 'final';
    }
    headers.Authorization = `Bearer ${token}`;
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    if (this.state !== 'live') this.setState(this.failures > 0 ? 'reconnecting' : 'connecting');
    let res;
    try {
      res = await fetch(this.o.path, { headers, signal: ctrl.signal, cache: 'no-store', credentials: 'omit' });
    } catch {
      return 'later';
    }
    if (res.status === 401) {
      return (await this.o.unauthorized()) ? 'now' : (this.setState('unauthorized'), 'final');
    }
    if (res.status === 404) {
      this.setState('gone', 'The session does not exist (or is another team\'s).');
      return 'final';
    }
    if (!res.ok || !res.body) {
      const after = Number(res.headers.get('Retry-After'));
      if (Number.isFinite(after) && after > 0) this.retryMs = Math.min(after * 1000, 30_000);
      return 'later';
    }
    const parser = new EventStreamParser((msg) => {
      if (msg.id !== null) this.lastEventId = msg.id;
      this.o.onMessage(msg);
    }, (ms) => { this.retryMs = Math.max(ms, 500); });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let idle = 0;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(), this.idleTimeoutMs);
    };
    arm();
    this.failures = 0;
    this.setState('live');
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch {
      // Aborted, or the network dropped: resume below.
    } finally {
      clearTimeout(idle);
    }
    if (this.stopped) return 'final';
    // The server ended the stream (a drain, a deploy) or the network dropped: come back
    // after the server's retry interval, backing off if it keeps failing.
    return 'later';
  }
}
