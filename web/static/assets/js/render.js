// Rendering of MCP content: text, image, audio, embedded resources, resource links, tool
// results with structured content (checked against the tool's outputSchema), prompt messages
// and protocol errors. All of it is server-controlled, so all of it is built as text nodes;
// images and audio only from base64 of allow-listed types (no SVG); links only http(s).

import { h, linkify, safeLink, dataImage, dataAudio, isBase64, base64ToBytes, downloadButton } from './dom.js';
import { validate } from './jsonschema.js';
import { badge, jsonBlock, pretty, collapsible } from './ui.js';

/**
 * textBlock shows text; JSON text is pretty-printed with a toggle back to the raw text.
 * @param {string} text
 */
export function textBlock(text) {
  const s = String(text ?? '');
  let parsed;
  const t = s.trim();
  if ((t.startsWith('{') || t.startsWith('[')) && t.length < 2_000_000) {
    try {
      parsed = JSON.parse(t);
    } catch {
      parsed = undefined;
    }
  }
  if (parsed === undefined) {
    return h('pre', { class: 'content-text' }, linkify(s));
  }
  const pre = h('pre', { class: 'content-text json' }, pretty(parsed));
  let raw = false;
  const toggle = h('button', { type: 'button', class: 'btn btn-small btn-ghost' }, 'Show raw');
  toggle.addEventListener('click', () => {
    raw = !raw;
    pre.textContent = raw ? s : pretty(parsed);
    toggle.textContent = raw ? 'Show formatted' : 'Show raw';
  });
  return h('div', { class: 'content-json' }, toggle, pre);
}

/**
 * @typedef {object} RenderOpts
 * @property {(uri: string) => void=} onReadResource offered on resource links
 */

/**
 * contentBlock renders one content item of a tool result or prompt message.
 * @param {any} c
 * @param {RenderOpts} [o]
 */
export function contentBlock(c, o = {}) {
  if (!c || typeof c !== 'object') return h('div', { class: 'content content-unknown' }, jsonBlock(c));
  const type = String(c.type ?? '');
  const head = (label, extra) => h('div', { class: 'content-head' }, badge(label, 'type'), extra ?? null, annotationsOf(c.annotations));
  switch (type) {
    case 'text':
      return h('div', { class: 'content content-text-item' }, head('text'), textBlock(c.text));
    case 'image': {
      const img = dataImage(c.mimeType, c.data, 'Image from the server');
      return h('div', { class: 'content content-image' },
        head('image', h('code', null, String(c.mimeType ?? '?'))),
        img ?? refused(`Image not shown: ${describeRefusal(c.mimeType, c.data, 'image')}`),
        img ? downloadButton('Download', () => new Blob([base64ToBytes(c.data)]), `image.${ext(c.mimeType)}`) : null);
    }
    case 'audio': {
      const audio = dataAudio(c.mimeType, c.data);
      return h('div', { class: 'content content-audio' },
        head('audio', h('code', null, String(c.mimeType ?? '?'))),
        audio ?? refused(`Audio not played: ${describeRefusal(c.mimeType, c.data, 'audio')}`));
    }
    case 'resource':
      return h('div', { class: 'content content-resource' }, head('resource'), resourceContents(c.resource, o));
    case 'resource_link':
      return h('div', { class: 'content content-link' }, head('resource link'), resourceLink(c, o));
    default:
      return h('div', { class: 'content content-unknown' }, head(type || 'unknown'), jsonBlock(c));
  }
}

function ext(mime) {
  const m = String(mime ?? '').split('/')[1] ?? 'bin';
  return m.replace(/[^a-z0-9]/gi, '').slice(0, 8) || 'bin';
}

function describeRefusal(mime, data, kind) {
  if (!isBase64(data)) return 'the data is not plain base64';
  return `type ${String(mime ?? 'unknown')} is not an allowed ${kind} type`;
}

function refused(text) {
  return h('p', { class: 'refused' }, text);
}

function annotationsOf(a) {
  if (!a || typeof a !== 'object') return null;
  const bits = [];
  if (Array.isArray(a.audience)) bits.push(`audience: ${a.audience.join(', ')}`);
  if (typeof a.priority === 'number') bits.push(`priority: ${a.priority}`);
  if (a.lastModified) bits.push(`modified: ${a.lastModified}`);
  return bits.length ? h('span', { class: 'muted small' }, bits.join(' · ')) : null;
}

/**
 * resourceLink shows a resource_link: name, URI (a link only when http(s)), and a Read
 * button that reads it through the session.
 */
export function resourceLink(c, o = {}) {
  const uri = String(c.uri ?? '');
  return h('div', { class: 'resource-link' },
    h('div', null, h('strong', null, String(c.title ?? c.name ?? uri)), c.mimeType ? h('code', { class: 'muted' }, ` ${c.mimeType}`) : null),
    h('div', { class: 'uri' }, safeLink(uri, uri)),
    c.description ? h('p', { class: 'muted' }, String(c.description)) : null,
    o.onReadResource && uri ? h('button', { type: 'button', class: 'btn btn-small', onclick: () => o.onReadResource(uri) }, 'Read') : null);
}

/**
 * resourceContents renders one TextResourceContents or BlobResourceContents. HTML, SVG and
 * anything else that could be markup is shown as text.
 */
export function resourceContents(r, o = {}) {
  if (!r || typeof r !== 'object') return jsonBlock(r);
  const uri = String(r.uri ?? '');
  const header = h('div', { class: 'resource-head' }, h('span', { class: 'uri' }, safeLink(uri, uri)), r.mimeType ? h('code', { class: 'muted' }, ` ${r.mimeType}`) : null);
  if (typeof r.text === 'string') return h('div', { class: 'resource-body' }, header, textBlock(r.text));
  if (typeof r.blob === 'string') {
    const media = dataImage(r.mimeType, r.blob, uri) ?? dataAudio(r.mimeType, r.blob);
    const size = isBase64(r.blob) ? Math.floor((r.blob.length * 3) / 4) : r.blob.length;
    return h('div', { class: 'resource-body' }, header,
      media,
      isBase64(r.blob)
        ? downloadButton(`Download (${size} bytes)`, () => new Blob([base64ToBytes(r.blob)]), uri.split('/').pop() || 'resource.bin')
        : refused('The blob is not plain base64.'));
  }
  void o;
  return h('div', { class: 'resource-body' }, header, jsonBlock(r));
}

/**
 * toolResult renders a CallToolResult: each content item, structured content validated
 * against outputSchema (skipped when isError, as the spec says), and _meta.
 * @param {any} result
 * @param {any} outputSchema
 * @param {RenderOpts} [o]
 */
export function toolResult(result, outputSchema, o = {}) {
  if (!result || typeof result !== 'object') return jsonBlock(result);
  const isError = result.isError === true;
  const parts = [];
  if (isError) parts.push(h('p', { class: 'result-error-note', role: 'note' }, 'The tool reported an error (isError).'));
  const content = Array.isArray(result.content) ? result.content : [];
  for (const c of content) parts.push(contentBlock(c, o));
  if (content.length === 0 && result.structuredContent === undefined) parts.push(h('p', { class: 'muted' }, 'No content.'));
  if (result.structuredContent !== undefined) {
    let verdict = null;
    if (outputSchema && !isError) {
      const errs = validate(outputSchema, result.structuredContent);
      verdict = errs.length === 0
        ? h('p', { class: 'valid' }, badge('valid', 'ok'), ' matches the tool\'s outputSchema')
        : h('div', { class: 'invalid' }, badge('invalid', 'err'), ' does not match the tool\'s outputSchema:',
          h('ul', null, errs.map((e) => h('li', null, `${e.path}: ${e.message}`))));
    } else if (outputSchema && isError) {
      verdict = h('p', { class: 'muted' }, 'Not checked against outputSchema: the result is an error.');
    } else {
      verdict = h('p', { class: 'muted' }, 'The tool declares no outputSchema.');
    }
    parts.push(h('section', { class: 'structured' }, h('h4', null, 'Structured content'), verdict, jsonBlock(result.structuredContent, { label: 'Structured content' })));
  } else if (outputSchema && !isError) {
    parts.push(h('p', { class: 'invalid' }, badge('missing', 'err'), ' the tool declares an outputSchema but sent no structuredContent'));
  }
  if (result._meta) parts.push(collapsible('_meta', () => jsonBlock(result._meta)));
  return h('div', { class: ['tool-result', isError ? 'is-error' : null] }, parts);
}

/**
 * rpcError renders a JSON-RPC error object {code, message, data}.
 */
export function rpcError(err) {
  if (!err || typeof err !== 'object') return h('div', { class: 'rpc-error' }, String(err ?? 'error'));
  // -32042 URLElicitationRequiredError: the server wants the person to visit pages first.
  const urls = err.code === -32042 && Array.isArray(err.data?.elicitations) ? err.data.elicitations : [];
  return h('div', { class: 'rpc-error', role: 'note' },
    urls.length ? h('div', { class: 'url-elicitations' },
      h('p', null, 'The server needs you to complete these steps, then run the call again:'),
      h('ul', null, urls.map((e) => h('li', null, String(e?.message ?? ''), ' ', safeLink(String(e?.url ?? '')))))) : null,
    h('strong', null, String(err.message ?? 'Error')),
    err.code !== undefined ? h('span', { class: 'muted' }, ` (code ${String(err.code)})`) : null,
    err.data !== undefined ? jsonBlock(err.data) : null);
}

/**
 * promptMessages renders a GetPromptResult's messages with role badges.
 */
export function promptMessages(res, o = {}) {
  const msgs = Array.isArray(res?.messages) ? res.messages : [];
  return h('div', { class: 'prompt-result' },
    res?.description ? h('p', { class: 'muted' }, String(res.description)) : null,
    msgs.map((m) => h('div', { class: 'message' },
      badge(String(m?.role ?? '?'), m?.role === 'assistant' ? 'accent' : 'neutral'),
      Array.isArray(m?.content) ? m.content.map((c) => contentBlock(c, o)) : contentBlock(m?.content, o))),
    msgs.length === 0 ? h('p', { class: 'muted' }, 'No messages.') : null);
}

/**
 * iconFor returns an <img> for the first icon that is a data: URL of an allowed image type.
 * Icons at http(s) URLs are not fetched: the page loads nothing from other origins.
 * @param {any[]} icons
 */
export function iconFor(icons) {
  if (!Array.isArray(icons)) return null;
  for (const ic of icons) {
    const src = typeof ic?.src === 'string' ? ic.src : '';
    const m = /^data:([a-z0-9.+/-]+);base64,(.*)$/i.exec(src);
    if (!m) continue;
    const img = dataImage(m[1], m[2], '');
    if (img) {
      img.className = 'icon';
      img.width = 20;
      img.height = 20;
      return img;
    }
  }
  return null;
}
