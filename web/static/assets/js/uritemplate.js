// RFC 6570 URI Templates, levels 1 to 4: every operator (none, +, #, ., /, ;, ?, &), prefix
// modifiers ({var:3}) and explode ({var*}), with string, list and map values.

const OPS = {
  '': { first: '', sep: ',', named: false, ifemp: '', reserved: false },
  '+': { first: '', sep: ',', named: false, ifemp: '', reserved: true },
  '#': { first: '#', sep: ',', named: false, ifemp: '', reserved: true },
  '.': { first: '.', sep: '.', named: false, ifemp: '', reserved: false },
  '/': { first: '/', sep: '/', named: false, ifemp: '', reserved: false },
  ';': { first: ';', sep: ';', named: true, ifemp: '', reserved: false },
  '?': { first: '?', sep: '&', named: true, ifemp: '=', reserved: false },
  '&': { first: '&', sep: '&', named: true, ifemp: '=', reserved: false },
};

/**
 * @typedef {{name: string, explode: boolean, prefix: number}} VarSpec
 * @typedef {{literal: string} | {op: string, vars: VarSpec[]}} Part
 */

/**
 * parseTemplate splits a template into literals and expressions. Malformed expressions
 * are kept as literals, so nothing is lost.
 * @param {string} t
 * @returns {Part[]}
 */
export function parseTemplate(t) {
  const parts = [];
  let i = 0;
  const s = String(t ?? '');
  while (i < s.length) {
    const open = s.indexOf('{', i);
    if (open < 0) {
      parts.push({ literal: s.slice(i) });
      break;
    }
    const close = s.indexOf('}', open);
    if (close < 0) {
      parts.push({ literal: s.slice(i) });
      break;
    }
    if (open > i) parts.push({ literal: s.slice(i, open) });
    let body = s.slice(open + 1, close);
    let op = '';
    if (body && '+#./;?&'.includes(body[0])) {
      op = body[0];
      body = body.slice(1);
    }
    const vars = [];
    let ok = body.length > 0;
    for (const spec of body.split(',')) {
      const m = /^([A-Za-z0-9_.%]+)(\*|:(\d{1,4}))?$/.exec(spec);
      if (!m) {
        ok = false;
        break;
      }
      vars.push({ name: m[1], explode: m[2] === '*', prefix: m[3] ? Number(m[3]) : 0 });
    }
    parts.push(ok ? { op, vars } : { literal: s.slice(open, close + 1) });
    i = close + 1;
  }
  return parts;
}

/**
 * templateVariables lists a template's variable names, each once, in order.
 * @param {string} t
 */
export function templateVariables(t) {
  const seen = [];
  for (const p of parseTemplate(t)) {
    if ('vars' in p) for (const v of p.vars) if (!seen.includes(v.name)) seen.push(v.name);
  }
  return seen;
}

function pctEncode(str, reserved) {
  const bytes = new TextEncoder().encode(str);
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    const c = String.fromCharCode(b);
    const unreserved = /[A-Za-z0-9\-._~]/.test(c);
    const isReserved = /[:/?#[\]@!$&'()*+,;=]/.test(c);
    if (b < 0x80 && (unreserved || (reserved && isReserved))) {
      out += c;
    } else if (reserved && c === '%' && i + 2 < bytes.length && /^[0-9A-Fa-f]{2}$/.test(String.fromCharCode(bytes[i + 1], bytes[i + 2]))) {
      out += '%';
    } else {
      out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
    }
  }
  return out;
}

function isDefined(v) {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

/**
 * expand fills a template with values (strings, numbers, arrays or plain objects).
 * @param {string} t
 * @param {Record<string, any>} values
 */
export function expand(t, values) {
  let out = '';
  for (const p of parseTemplate(t)) {
    if ('literal' in p) {
      out += pctEncode(p.literal, true);
      continue;
    }
    const op = OPS[p.op];
    const pieces = [];
    for (const v of p.vars) {
      let val = values?.[v.name];
      if (!isDefined(val)) continue;
      if (typeof val === 'number' || typeof val === 'boolean') val = String(val);
      const enc = (x) => pctEncode(String(x), op.reserved);
      if (typeof val === 'string') {
        const str = v.prefix ? [...val].slice(0, v.prefix).join('') : val;
        if (op.named) pieces.push(str === '' ? `${v.name}${op.ifemp}` : `${v.name}=${enc(str)}`);
        else pieces.push(enc(str));
      } else if (Array.isArray(val)) {
        if (v.explode) {
          pieces.push(val.map((x) => (op.named ? `${v.name}=${enc(x)}` : enc(x))).join(op.sep));
        } else {
          const joined = val.map(enc).join(',');
          pieces.push(op.named ? `${v.name}=${joined}` : joined);
        }
      } else if (typeof val === 'object') {
        const entries = Object.entries(val);
        if (v.explode) {
          pieces.push(entries.map(([k, x]) => `${enc(k)}=${enc(x)}`).join(op.sep));
        } else {
          const joined = entries.map(([k, x]) => `${enc(k)},${enc(x)}`).join(',');
          pieces.push(op.named ? `${v.name}=${joined}` : joined);
        }
      }
    }
    if (pieces.length) out += op.first + pieces.join(op.sep);
  }
  return out;
}
