// One session: its header (status, live connection, who else is watching, pending
// requests), its tabs, and the event stream that keeps everything current. The page
// replays the session's whole log on load, so a reload shows exactly what was there:
// running calls with their progress, the pending queue, the history.

import { h, clear, navLink } from '../dom.js';
import { api } from '../api.js';
import { currentToken, refresh } from '../auth.js';
import { EventStream } from '../sse.js';
import { SessionStore } from '../store.js';
import { statusBadge, badge, button, busy, toast, errorText, tabList } from '../ui.js';
import { overviewTab } from './overview.js';
import { toolsTab } from './tools.js';
import { resourcesTab } from './resources.js';
import { promptsTab } from './prompts.js';
import { historyTab } from './history.js';
import { notificationsTab } from './notifications.js';
import { pendingTab } from './pending.js';

const TABS = [
  { id: 'overview', label: 'Overview', make: overviewTab },
  { id: 'tools', label: 'Tools', make: toolsTab },
  { id: 'resources', label: 'Resources', make: resourcesTab },
  { id: 'prompts', label: 'Prompts', make: promptsTab },
  { id: 'history', label: 'History', make: historyTab },
  { id: 'notifications', label: 'Notifications', make: notificationsTab },
  { id: 'pending', label: 'Pending', make: pendingTab },
];

const CONN_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline — will resume',
  gone: 'Session not found',
  unauthorized: 'Signed out',
  stopped: 'Stopped',
};

/**
 * @typedef {object} TabCtx
 * @property {string} id session id
 * @property {SessionStore} store
 * @property {(hash: string) => void} navigate
 * @property {(tab: string, item?: string) => void} go switch tab (and item) in this session
 */

export class SessionView {
  /**
   * @param {string} id
   * @param {{navigate: (hash: string) => void}} o
   */
  constructor(id, o) {
    this.id = id;
    this.o = o;
    this.store = new SessionStore(id);
    this.tabViews = new Map();
    this.tab = '';
    this.unsubs = [];
    this.destroyed = false;
    /** @type {TabCtx} */
    this.ctx = {
      id, store: this.store, navigate: o.navigate,
      go: (tab, item) => o.navigate(`#/s/${encodeURIComponent(id)}/${tab}${item ? `/${encodeURIComponent(item)}` : ''}`),
    };

    this.title = h('h1', { class: 'session-title' }, 'Session');
    this.statusEl = h('span', { class: 'session-status' });
    this.target = h('code', { class: 'target-url' });
    this.conn = h('span', { class: 'conn', role: 'status', 'aria-live': 'polite', dataset: { state: 'connecting' } }, CONN_TEXT.connecting);
    this.watchers = h('span', { class: 'watchers', title: '' });
    this.pendingAlert = h('span', { class: 'pending-alert' });
    this.errorLine = h('p', { class: 'session-error', role: 'alert', hidden: true });
    this.reconnectBtn = button('Reconnect', () => busy(this.reconnectBtn, async () => {
      this.store.setSession(await api.reconnect(id));
      toast('Reconnecting…');
    }), { variant: 'small' });
    this.closeBtn = button('Close', () => busy(this.closeBtn, async () => {
      if (!confirm('Close this session? Its history stays.')) return;
      this.store.setSession(await api.closeSession(id));
      toast('Session closed.');
    }), { variant: 'small' });
    this.tabs = tabList(TABS.map((t) => ({ id: t.id, label: t.label })), (tab) => this.ctx.go(tab), 'Session views');
    this.panel = h('section', { id: 'tabpanel', role: 'tabpanel', class: 'tabpanel', tabindex: '-1' });
    this.el = h('div', { class: 'page session-page', dataset: { sessionId: id } },
      h('header', { class: 'session-head card' },
        h('div', { class: 'session-head-main' },
          navLink('#/', { class: 'back', 'aria-label': 'All sessions' }, '←'),
          this.title, this.statusEl, this.conn),
        h('div', { class: 'session-head-sub' }, this.target, this.watchers, this.pendingAlert,
          h('span', { class: 'spacer' }), this.reconnectBtn, this.closeBtn),
        this.errorLine),
      this.tabs.el, this.panel);

    this.unsubs.push(this.store.on('session', () => this.renderHead()));
    this.unsubs.push(this.store.on('conn', () => this.renderConn()));
    this.unsubs.push(this.store.on('watchers', () => this.renderWatchers()));
    this.unsubs.push(this.store.on('pending', () => { this.renderPending(); this.renderTabs(); }));
    this.unsubs.push(this.store.on('session', () => this.maybeRefetch()));
    this.renderTabs();
    this.start();
  }

  async start() {
    try {
      const [s, calls, pending] = await Promise.all([
        api.getSession(this.id),
        api.listCalls(this.id).catch(() => ({ items: [] })),
        api.pending(this.id).catch(() => ({ items: [] })),
      ]);
      if (this.destroyed) return;
      this.knownStatus = s.status;
      this.store.setSession(s);
      this.store.seedCalls(calls.items);
      this.store.seedPending(pending.items);
    } catch (err) {
      if (this.destroyed) return;
      this.errorLine.textContent = err?.status === 404 ? 'This session does not exist, or belongs to another team.' : `Could not load the session: ${errorText(err)}`;
      this.errorLine.hidden = false;
      this.store.setConn(err?.status === 404 ? 'gone' : 'offline');
      return;
    }
    this.stream = new EventStream({
      path: api.streamPath(this.id),
      token: currentToken,
      unauthorized: refresh,
      lastEventId: 0,
      onMessage: (msg) => {
        let ev;
        try {
          ev = JSON.parse(msg.data);
        } catch {
          return;
        }
        this.store.apply(ev);
      },
      onState: (st) => this.store.setConn(st),
    }).start();
    // A handle for people debugging the page (and the browser tests): drop the stream to
    // watch it resume.
    window.tapline = { store: this.store, dropStream: () => this.stream?.drop() };
  }

  /** maybeRefetch reloads the session when its status changes (server info arrives on ready). */
  maybeRefetch() {
    const st = this.store.session?.status;
    if (!st || st === this.knownStatus) return;
    this.knownStatus = st;
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(async () => {
      try {
        const s = await api.getSession(this.id);
        if (!this.destroyed) this.store.setSession({ ...s, status: this.store.session?.status ?? s.status });
      } catch {
        // The header keeps what it has.
      }
    }, 150);
  }

  renderHead() {
    const s = this.store.session;
    if (!s) return;
    const name = s.name || s.server_info?.name || 'Session';
    this.title.textContent = name;
    document.title = `${name} · Tapline`;
    clear(this.statusEl).appendChild(statusBadge(s.status));
    this.statusEl.dataset.status = s.status;
    this.target.textContent = `${s.target?.url ?? ''}`;
    this.target.title = `${s.target?.transport ?? ''} · ${s.protocol_version || s.target?.protocol_version || ''}`;
    const err = s.status === 'error' || s.status === 'closed' ? s.error : '';
    this.errorLine.textContent = err ? (s.status === 'error' ? `Connection failed: ${err}` : `Closed: ${err}`) : '';
    this.errorLine.hidden = !err;
  }

  renderConn() {
    const st = this.store.conn;
    this.conn.dataset.state = st;
    this.conn.textContent = CONN_TEXT[st] ?? st;
    this.conn.title = st === 'live' ? 'Following this session live' : 'The event stream resumes where it stopped';
  }

  renderWatchers() {
    const w = this.store.watchers;
    const names = w.principals.map((p) => p.name || p.id).filter(Boolean);
    this.watchers.textContent = w.count ? `${w.count} watching${names.length ? `: ${names.join(', ')}` : ''}` : '';
    this.watchers.title = names.join(', ');
    this.watchers.setAttribute('aria-label', w.count ? `${w.count} watching: ${names.join(', ')}` : 'Nobody else watching');
    this.watchers.dataset.count = String(w.count);
  }

  renderPending() {
    const n = this.store.pendingCount();
    clear(this.pendingAlert);
    if (n > 0) {
      this.pendingAlert.appendChild(navLink(`#/s/${encodeURIComponent(this.id)}/pending`, { class: 'pending-link' },
        `${n} request${n === 1 ? '' : 's'} waiting for an answer`));
    }
  }

  renderTabs() {
    const n = this.store.pendingCount();
    this.tabs.setExtra('pending', n > 0 ? badge(String(n), 'warn', `${n} waiting`) : null);
    this.tabs.select(this.tab);
  }

  /**
   * show switches to a tab (building it once) and hands it the route's item.
   * @param {string} tab
   * @param {string} item
   */
  show(tab, item) {
    const def = TABS.find((t) => t.id === tab) ?? TABS[0];
    if (this.tab !== def.id) {
      this.tab = def.id;
      let v = this.tabViews.get(def.id);
      if (!v) {
        v = def.make(this.ctx);
        this.tabViews.set(def.id, v);
      }
      clear(this.panel).appendChild(v.el);
      this.panel.setAttribute('aria-labelledby', `tab-${def.id}`);
      this.renderTabs();
      v.shown?.();
    }
    this.tabViews.get(def.id)?.show?.(item);
  }

  destroy() {
    this.destroyed = true;
    this.stream?.stop();
    clearTimeout(this.refetchTimer);
    for (const u of this.unsubs) u();
    for (const v of this.tabViews.values()) v.destroy?.();
    if (window.tapline?.store === this.store) delete window.tapline;
    document.title = 'Tapline inspector';
  }
}
