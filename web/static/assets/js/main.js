// The inspector's entry point: the page shell, hash routing and sign-in gating.
//
// Routes:  #/                     team sessions and the connect form
//          #/s/ID[/TAB[/ITEM]]     one session; TAB is overview, tools, resources, prompts,
//                                  history, notifications or pending; ITEM e.g. a tool name

import { h, replace, navLink } from './dom.js';
import { api } from './api.js';
import { signedIn, onAuthChange, signOut, authMode } from './auth.js';
import { toast, errorText } from './ui.js';
import { signInView } from './views/signin.js';
import { sessionsView } from './views/sessions.js';
import { SessionView } from './views/session.js';

const app = /** @type {HTMLElement} */ (document.getElementById('app'));

/** @type {{destroy: () => void, show?: (tab: string, item: string) => void, id?: string}|null} */
let current = null;
let me = null;
const who = h('span', { class: 'who' });
const signOutBtn = h('button', { type: 'button', class: 'btn btn-small btn-ghost', onclick: () => signOut() }, 'Sign out');
const header = h('header', { class: 'topbar' },
  navLink('#/', { class: 'brand' }, h('span', { class: 'logo', 'aria-hidden': 'true' }, 'T'), h('span', null, 'Tapline')),
  h('nav', { class: 'topnav', 'aria-label': 'Main' }, navLink('#/', null, 'Sessions')),
  h('div', { class: 'account' }, who, signOutBtn));
const main = h('main', { id: 'main', class: 'main', tabindex: '-1' });
app.append(header, main);

/** parseRoute reads the hash into {page, id, tab, item}. */
function parseRoute() {
  const hash = location.hash;
  if (!hash.startsWith('#/')) return { page: 'sessions' };
  const parts = hash.slice(2).split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === 's' && parts[1]) return { page: 'session', id: parts[1], tab: parts[2] || 'overview', item: parts.slice(3).join('/') };
  return { page: 'sessions' };
}

/** navigate changes the hash (and so the view). */
export function navigate(hash) {
  if (location.hash !== hash) location.hash = hash;
  else route();
}

async function loadMe() {
  try {
    me = await api.me();
    const p = me.principal ?? {};
    const name = p.name || p.id || '';
    who.textContent = `${name} · ${me.tenant?.name ?? ''} · ${me.role ?? ''}`;
    who.title = authMode() === 'key' ? 'Signed in with an API key (this server has no token exchange)' : 'Signed in with a short-lived token';
  } catch (err) {
    if (err?.status !== 401) toast(errorText(err), 'error');
  }
}

function route() {
  if (!signedIn()) {
    current?.destroy();
    current = null;
    header.hidden = true;
    replace(main, signInView({ onSignedIn: () => { loadMe(); route(); } }));
    return;
  }
  header.hidden = false;
  if (!me) loadMe();
  const r = parseRoute();
  if (r.page === 'session') {
    if (current && current.id === r.id && current.show) {
      current.show(r.tab, r.item);
      return;
    }
    current?.destroy();
    const view = new SessionView(r.id, { navigate });
    current = view;
    replace(main, view.el);
    view.show(r.tab, r.item);
    return;
  }
  current?.destroy();
  const v = sessionsView({ navigate });
  current = v;
  replace(main, v.el);
}

onAuthChange((state, reason) => {
  if (!state) {
    me = null;
    who.textContent = '';
    if (reason === 'expired') toast('Your sign-in expired. Sign in again.', 'error');
    route();
  }
});

window.addEventListener('hashchange', route);
route();
