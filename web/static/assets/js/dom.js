// DOM building without markup. Everything the server sends is untrusted: it reaches the page
// only as text nodes (textContent), as attribute values set one by one, as data: URLs built
// from base64 of an allow-listed image or audio type, or as http(s) links whose URL was parsed
// and checked first. Nothing here, or anywhere in the inspector, assigns innerHTML.

/**
 * h creates an element.
 *
 * props: `class` (string or array), `dataset` (object), `on<event>` (listener functions),
 * boolean DOM properties (`disabled`, `checked`, `hidden`, …), `value`, and any other key is
 * set as an attribute with setAttribute (so it is never parsed as markup). Attributes that
 * would run code (`on…` strings) or load URLs (`href`, `src`) are refused here: use safeLink,
 * dataImage and dataMedia for those.
 *
 * children: strings and numbers become text nodes; nodes are appended; arrays are flattened;
 * null, undefined and false are skipped.
 *
 * @param {string} tag
 * @param {Record<string, any>=} props
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') {
        el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
      } else if (k === 'dataset') {
        for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
      } else if (k.startsWith('on')) {
        if (typeof v !== 'function') throw new Error(`h: ${k} must be a function`);
        el.addEventListener(k.slice(2).toLowerCase(), v);
      } else if (k === 'href' || k === 'src' || k === 'srcdoc' || k === 'action' || k === 'formaction' || k === 'style') {
        throw new Error(`h: set ${k} through safeLink, dataImage or dataMedia`);
      } else if (k === 'value') {
        el.value = v;
      } else if (typeof v === 'boolean' && k in el) {
        el[k] = v;
      } else {
        el.setAttribute(k, String(v));
      }
    }
  }
  append(el, children);
  return el;
}

/**
 * append adds children (strings as text nodes) to el.
 * @param {Node} el
 * @param {any[]} children
 */
export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** clear removes every child of el. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** replace clears el and appends children. */
export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/**
 * parseHttpURL returns the URL when s is an absolute http: or https: URL, else null.
 * @param {string} s
 * @returns {URL|null}
 */
export function parseHttpURL(s) {
  if (typeof s !== 'string' || s.length > 8192) return null;
  let u;
  try {
    u = new URL(s);
  } catch {
    return null;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? u : null;
}

/**
 * safeLink renders url as a link only when it parses as an http(s) URL; anything else
 * (javascript:, data:, relative junk) becomes inert text. The label is always text.
 * @param {string} url
 * @param {string=} label
 * @returns {HTMLElement}
 */
export function safeLink(url, label) {
  const text = label ?? String(url ?? '');
  const u = parseHttpURL(url);
  if (!u) return h('span', { class: 'inert-link', title: 'Not an http(s) link: shown as text' }, text);
  const a = document.createElement('a');
  a.href = u.href;
  a.rel = 'noopener noreferrer nofollow';
  a.target = '_blank';
  a.textContent = text;
  a.className = 'ext-link';
  return a;
}

// Plain http(s) URLs in free text become links; everything else stays text. The pattern is
// deliberately narrow (no scheme-less or other-scheme links).
const urlInText = /\bhttps?:\/\/[^\s<>"'`)\]}]+/g;

/**
 * linkify turns text into a fragment of text nodes and safe links.
 * @param {string} text
 * @returns {DocumentFragment}
 */
export function linkify(text) {
  const frag = document.createDocumentFragment();
  const s = String(text ?? '');
  let last = 0;
  for (const m of s.matchAll(urlInText)) {
    let url = m[0].replace(/[.,;:!?]+$/, '');
    if (m.index > last) frag.appendChild(document.createTextNode(s.slice(last, m.index)));
    frag.appendChild(safeLink(url, url));
    last = m.index + url.length;
  }
  if (last < s.length) frag.appendChild(document.createTextNode(s.slice(last)));
  return frag;
}

/** Image types shown inline. SVG is excluded on purpose: it can carry script and markup. */
export const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

/** Audio types played inline. */
export const AUDIO_TYPES = new Set([
  'audio/wav', 'audio/x-wav', 'audio/wave', 'audio/mpeg', 'audio/mp3', 'audio/ogg', 'audio/webm',
  'audio/flac', 'audio/aac', 'audio/mp4',
]);

const base64Pattern = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * isBase64 reports whether s is plain standard base64 (no whitespace, URL-safe alphabet or
 * data: prefix), so it cannot break out of the data: URL it is put in.
 * @param {unknown} s
 */
export function isBase64(s) {
  return typeof s === 'string' && s.length % 4 === 0 && base64Pattern.test(s);
}

function mimeOf(m) {
  return String(m ?? '').split(';')[0].trim().toLowerCase();
}

/**
 * dataImage returns an <img> for base64 data of an allow-listed image type, or null.
 * @param {string} mimeType
 * @param {string} data base64
 * @param {string=} alt
 */
export function dataImage(mimeType, data, alt) {
  const mime = mimeOf(mimeType);
  if (!IMAGE_TYPES.has(mime) || !isBase64(data)) return null;
  const img = document.createElement('img');
  img.alt = alt ?? '';
  img.decoding = 'async';
  img.loading = 'lazy';
  img.src = `data:${mime};base64,${data}`;
  return img;
}

/**
 * dataMedia returns an <audio controls> for base64 data of an allow-listed audio type, or null.
 * @param {string} mimeType
 * @param {string} data base64
 */
export function dataAudio(mimeType, data) {
  const mime = mimeOf(mimeType);
  if (!AUDIO_TYPES.has(mime) || !isBase64(data)) return null;
  const audio = document.createElement('audio');
  audio.controls = true;
  audio.preload = 'metadata';
  audio.src = `data:${mime};base64,${data}`;
  return audio;
}

/**
 * downloadButton offers bytes (base64) or text as a file through a blob: URL, created only
 * when the person clicks. The type is forced to application/octet-stream so the browser
 * never renders it.
 * @param {string} label
 * @param {() => (Blob)} makeBlob
 * @param {string} filename
 */
export function downloadButton(label, makeBlob, filename) {
  return h('button', {
    type: 'button', class: 'btn btn-small',
    onclick: () => saveBlob(makeBlob(), filename),
  }, label);
}

/**
 * saveBlob downloads blob as filename.
 * @param {Blob} blob
 * @param {string} filename
 */
export function saveBlob(blob, filename) {
  const safe = new Blob([blob], { type: 'application/octet-stream' });
  const url = URL.createObjectURL(safe);
  const a = document.createElement('a');
  a.href = url;
  a.download = String(filename || 'download').replace(/[^\w.\-]+/g, '_').slice(0, 120);
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * base64ToBytes decodes base64 (already checked with isBase64).
 * @param {string} b64
 */
export function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

let idCounter = 0;
/** uid returns a document-unique id for label/aria wiring. */
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/**
 * navLink is an in-app link to a route ("#/…"); the hash is built by the app, with every
 * server-provided piece passed through encodeURIComponent.
 * @param {string} hash
 * @param {...any} children
 */
export function navLink(hash, props, ...children) {
  if (!hash.startsWith('#/')) throw new Error('navLink: only #/ routes');
  const a = h('a', props, ...children);
  a.setAttribute('href', hash);
  return a;
}

/**
 * add appends children to el like append(), skipping null, undefined and false (the native
 * Element.append would turn them into the text "null"). Returns el.
 * @param {Node} el
 * @param {...any} children
 */
export function add(el, ...children) {
  append(el, children);
  return el;
}
