// Forms generated from JSON Schema, for tool arguments and elicitation requests.
//
// Handled: objects (nested, required marks, optional values left out when empty), arrays
// (add/remove rows; enum items as a checkbox group), strings (enum and titled enums as a
// select, date/email/uri formats, multi-line text), numbers and integers (bounds), booleans,
// null, const, anyOf/oneOf (a variant picker; "X or null" shown as X), allOf (merged),
// local $refs, defaults everywhere, and anything else as a JSON box. A raw-JSON toggle edits
// the whole value as text, which is also the escape hatch for sending deliberately invalid
// input to a server. Labels and descriptions from the schema are text, never markup.

import { h, uid, clear } from './dom.js';
import { deref, validate } from './jsonschema.js';
import { pretty } from './ui.js';

const MAX_DEPTH = 12;
/**
 * MAX_CONTROLS bounds the controls one build makes (a form, a new array row, a variant):
 * depth alone does not bound a schema whose properties each $ref the root, which grows
 * tenfold a level with ten of them. Past it the rest is edited as JSON.
 */
const MAX_CONTROLS = 500;

/** budget is what the running build has left; null when no build runs (builds are synchronous). */
let budget = null;

/**
 * @typedef {object} Control
 * @property {HTMLElement} el
 * @property {() => any} get the value; undefined means "leave it out"
 * @property {(v: any) => void} set
 * @property {(() => string[])=} problems input the control itself can tell is wrong
 */

/**
 * createSchemaForm builds a form for schema.
 *
 * @param {any} schema an object schema (tool inputSchema, elicitation requestedSchema)
 * @param {object} [o]
 * @param {any=} o.initial starting value; the schema's defaults fill the rest
 * @param {boolean=} o.rawToggle offer the raw-JSON toggle (default true)
 * @param {string=} o.label accessible name of the form region
 * @returns {{el: HTMLElement, getValue: () => {ok: boolean, value?: any, errors: string[]}, setValue: (v: any) => void, isRaw: () => boolean}}
 */
export function createSchemaForm(schema, o = {}) {
  const root = schema && typeof schema === 'object' ? schema : { type: 'object' };
  const top = build(root, { root, name: '', label: '', required: true, depth: 0, topLevel: true });
  if (o.initial !== undefined) top.set(o.initial);
  const raw = h('textarea', { class: 'raw-json', rows: '10', spellcheck: 'false', 'aria-label': 'Arguments as JSON' });
  const rawBox = h('div', { class: 'raw-box', hidden: true }, raw);
  const errorsBox = h('ul', { class: 'form-errors', role: 'alert', hidden: true });
  let rawMode = false;
  const toggle = h('button', { type: 'button', class: 'btn btn-small btn-ghost raw-toggle', 'aria-pressed': 'false' }, 'Edit as JSON');
  toggle.addEventListener('click', () => {
    if (!rawMode) {
      raw.value = pretty(top.get() ?? {});
      rawMode = true;
    } else {
      let v;
      try {
        v = JSON.parse(raw.value || '{}');
      } catch (err) {
        showErrors([`The JSON does not parse: ${err.message}`]);
        return;
      }
      top.set(v);
      rawMode = false;
    }
    showErrors([]);
    top.el.hidden = rawMode;
    rawBox.hidden = !rawMode;
    toggle.textContent = rawMode ? 'Back to the form' : 'Edit as JSON';
    toggle.setAttribute('aria-pressed', String(rawMode));
  });
  function showErrors(list) {
    clear(errorsBox);
    for (const e of list) errorsBox.appendChild(h('li', null, e));
    errorsBox.hidden = list.length === 0;
  }
  const el = h('div', { class: 'schema-form', role: 'group', 'aria-label': o.label ?? 'Arguments' },
    o.rawToggle === false ? null : h('div', { class: 'form-tools' }, toggle),
    top.el, rawBox, errorsBox);
  return {
    el,
    isRaw: () => rawMode,
    setValue: (v) => {
      top.set(v);
      if (rawMode) raw.value = pretty(v);
    },
    getValue() {
      if (rawMode) {
        try {
          const value = JSON.parse(raw.value || '{}');
          showErrors([]);
          return { ok: true, value, errors: [] };
        } catch (err) {
          const errors = [`The JSON does not parse: ${err.message}`];
          showErrors(errors);
          return { ok: false, errors };
        }
      }
      const local = top.problems ? top.problems() : [];
      const value = top.get() ?? {};
      const errors = local.concat(validate(root, value).map((e) => `${e.path}: ${e.message}`));
      showErrors(errors);
      return { ok: errors.length === 0, value, errors };
    },
  };
}

/**
 * @typedef {object} Ctx
 * @property {any} root
 * @property {string} name property name
 * @property {string} label
 * @property {boolean} required
 * @property {number} depth
 * @property {boolean=} topLevel
 */

/** merged flattens allOf into one schema (shallow merge of properties and required). */
function merged(s, root) {
  if (!Array.isArray(s.allOf)) return s;
  const out = { ...s };
  delete out.allOf;
  for (const part0 of s.allOf) {
    const part = deref(part0, root);
    if (!part || typeof part !== 'object') continue;
    const p = merged(part, root);
    for (const [k, v] of Object.entries(p)) {
      if (k === 'properties') out.properties = { ...(out.properties ?? {}), ...v };
      else if (k === 'required') out.required = [...new Set([...(out.required ?? []), ...v])];
      else if (!(k in out)) out[k] = v;
    }
  }
  return out;
}

/** constOptions returns [{value, label}] when every branch of a union is a const (a titled enum). */
function constOptions(branches) {
  if (!Array.isArray(branches) || branches.length === 0) return null;
  if (!branches.every((b) => b && typeof b === 'object' && 'const' in b)) return null;
  return branches.map((b) => ({ value: b.const, label: b.title ? `${b.title}` : String(b.const) }));
}

/** enumOptions returns the choices of an enum or titled-enum schema, or null. */
function enumOptions(s) {
  if (Array.isArray(s.enum)) {
    const names = Array.isArray(s.enumNames) ? s.enumNames : [];
    return s.enum.map((v, i) => ({ value: v, label: names[i] !== undefined ? `${names[i]} (${display(v)})` : display(v) }));
  }
  return constOptions(s.oneOf) ?? constOptions(s.anyOf);
}

function display(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function describe(s, ctx) {
  const label = typeof s.title === 'string' && s.title ? s.title : ctx.name || ctx.label;
  return { label, description: typeof s.description === 'string' ? s.description : '' };
}

/**
 * wrap puts a control under its label and description.
 * @param {HTMLElement} control the focusable element (gets the id)
 * @param {HTMLElement} body what to show (control or a group)
 */
function wrap(s, ctx, control, body, extraClass) {
  const { label, description } = describe(s, ctx);
  if (!control.id) control.id = uid('sf');
  const parts = [];
  if (label) {
    parts.push(h('label', { for: control.id, class: 'field-label' },
      label,
      ctx.name && label !== ctx.name ? h('code', { class: 'prop-name' }, ctx.name) : null,
      ctx.required ? h('span', { class: 'req', title: 'required' }, ' *') : null));
  }
  parts.push(body);
  if (description) {
    const hint = h('div', { class: 'field-hint', id: uid('sfh') }, description);
    control.setAttribute('aria-describedby', hint.id);
    parts.push(hint);
  }
  if (ctx.required) control.setAttribute('aria-required', 'true');
  return h('div', { class: ['field', extraClass], dataset: { prop: ctx.name || '(root)' } }, parts);
}

/**
 * build makes the control for one schema node.
 * @param {any} schemaIn
 * @param {Ctx} ctx
 * @returns {Control}
 */
function build(schemaIn, ctx) {
  if (budget !== null) return buildNode(schemaIn, ctx);
  budget = MAX_CONTROLS;
  try {
    return buildNode(schemaIn, ctx);
  } finally {
    budget = null;
  }
}

function buildNode(schemaIn, ctx) {
  if (ctx.depth > MAX_DEPTH || --budget < 0) return jsonControl({}, ctx);
  if (schemaIn === true || schemaIn === undefined || schemaIn === null) return jsonControl({}, ctx);
  if (schemaIn === false) return jsonControl({}, ctx);
  let s = merged(deref(schemaIn, ctx.root), ctx.root);
  if (!s || typeof s !== 'object') return jsonControl({}, ctx);

  if ('const' in s) return constControl(s, ctx);
  const opts = enumOptions(s);
  if (opts && s.type !== 'array') return selectControl(s, ctx, opts);

  let type = s.type;
  if (Array.isArray(type)) {
    const nonNull = type.filter((t) => t !== 'null');
    if (nonNull.length === 1) type = nonNull[0];
    else if (nonNull.length === 0) type = 'null';
    else return unionControl(nonNull.map((t) => ({ ...s, type: t })), s, ctx);
  }
  const union = Array.isArray(s.anyOf) ? s.anyOf : Array.isArray(s.oneOf) ? s.oneOf : null;
  if (!type && union) {
    const branches = union.map((b) => deref(b, ctx.root));
    const nonNull = branches.filter((b) => !(b && b.type === 'null'));
    if (nonNull.length === 1 && branches.length === 2) {
      // "X or null": the form edits X; leaving it empty sends nothing.
      const { anyOf, oneOf, ...rest } = s;
      return build({ ...rest, ...nonNull[0], title: s.title ?? nonNull[0].title, description: s.description ?? nonNull[0].description, default: s.default ?? nonNull[0].default }, ctx);
    }
    return unionControl(branches, s, ctx);
  }
  if (!type && s.properties) type = 'object';
  if (!type && s.items) type = 'array';
  switch (type) {
    case 'object': return objectControl(s, ctx);
    case 'array': return arrayControl(s, ctx);
    case 'string': return stringControl(s, ctx);
    case 'number':
    case 'integer': return numberControl(s, ctx, type === 'integer');
    case 'boolean': return booleanControl(s, ctx);
    case 'null': return nullControl(s, ctx);
    default: return jsonControl(s, ctx);
  }
}

function objectControl(s, ctx) {
  const props = s.properties && typeof s.properties === 'object' ? s.properties : {};
  const required = new Set(Array.isArray(s.required) ? s.required : []);
  const children = [];
  for (const [name, ps] of Object.entries(props)) {
    children.push([name, build(ps, { root: ctx.root, name, label: name, required: required.has(name), depth: ctx.depth + 1 })]);
  }
  // Free-form extra properties (additionalProperties) are edited as JSON beside the fields.
  const extra = s.additionalProperties && typeof s.additionalProperties === 'object' && children.length === 0
    ? jsonControl({ description: 'Properties as a JSON object', default: {} }, { ...ctx, name: '', label: 'Properties', required: false, depth: ctx.depth + 1 })
    : null;
  const { label, description } = describe(s, ctx);
  const body = [];
  if (!ctx.topLevel && label) body.push(h('legend', null, label, ctx.required ? h('span', { class: 'req' }, ' *') : null));
  if (!ctx.topLevel && description) body.push(h('div', { class: 'field-hint' }, description));
  for (const [, c] of children) body.push(c.el);
  if (extra) body.push(extra.el);
  if (children.length === 0 && !extra && ctx.topLevel) body.push(h('p', { class: 'muted' }, 'No arguments.'));
  const el = ctx.topLevel ? h('div', { class: 'sf-object sf-top' }, body) : h('fieldset', { class: 'sf-object', dataset: { prop: ctx.name } }, body);
  // A nested optional object with nothing filled in is left out.
  const ctl = {
    el,
    get() {
      const out = {};
      for (const [name, c] of children) {
        const v = c.get();
        if (v !== undefined) out[name] = v;
      }
      if (extra) Object.assign(out, extra.get() ?? {});
      if (!ctx.required && !ctx.topLevel && Object.keys(out).length === 0) return undefined;
      return out;
    },
    set(v) {
      const obj = v && typeof v === 'object' && !Array.isArray(v) ? v : {};
      for (const [name, c] of children) c.set(obj[name]);
      if (extra) {
        const rest = {};
        for (const [k, x] of Object.entries(obj)) if (!Object.hasOwn(props, k)) rest[k] = x;
        extra.set(rest);
      }
    },
    problems() {
      return children.flatMap(([, c]) => (c.problems ? c.problems() : [])).concat(extra?.problems ? extra.problems() : []);
    },
  };
  ctl.set(s.default);
  return ctl;
}

function arrayControl(s, ctx) {
  const itemSchema = merged(deref(Array.isArray(s.items) ? s.items[0] : (s.items ?? {}), ctx.root), ctx.root);
  const opts = itemSchema && typeof itemSchema === 'object' ? enumOptions(itemSchema) : null;
  if (opts) return multiSelectControl(s, ctx, opts);
  const list = h('ol', { class: 'sf-array-items' });
  const rows = [];
  const addBtn = h('button', { type: 'button', class: 'btn btn-small' }, 'Add item');
  const group = h('div', { class: 'sf-array', role: 'group' }, list, addBtn);
  const addRow = (v) => {
    const c = build(itemSchema, { root: ctx.root, name: '', label: `Item ${rows.length + 1}`, required: true, depth: ctx.depth + 1 });
    if (v !== undefined) c.set(v);
    const li = h('li', { class: 'sf-array-row' }, c.el);
    const row = { c, li };
    const rm = h('button', { type: 'button', class: 'btn btn-small btn-ghost', 'aria-label': 'Remove item' }, '×');
    rm.addEventListener('click', () => {
      rows.splice(rows.indexOf(row), 1);
      li.remove();
    });
    li.appendChild(rm);
    rows.push(row);
    list.appendChild(li);
  };
  addBtn.addEventListener('click', () => addRow(undefined));
  const { label } = describe(s, ctx);
  group.setAttribute('aria-label', label || 'Items');
  const ctl = {
    el: wrap(s, ctx, addBtn, group, 'sf-array-field'),
    get() {
      const out = rows.map((r) => r.c.get()).map((v) => (v === undefined ? null : v));
      if (!ctx.required && out.length === 0 && s.default === undefined) return undefined;
      return out;
    },
    set(v) {
      for (const r of rows) r.li.remove();
      rows.length = 0;
      const arr = Array.isArray(v) ? v : Array.isArray(s.default) ? s.default : [];
      for (const x of arr) addRow(x);
    },
    problems: () => rows.flatMap((r) => (r.c.problems ? r.c.problems() : [])),
  };
  ctl.set(undefined);
  return ctl;
}

function multiSelectControl(s, ctx, opts) {
  const boxes = opts.map((opt) => {
    const cb = h('input', { type: 'checkbox', id: uid('sfc') });
    return { opt, cb, el: h('label', { class: 'check' }, cb, ` ${opt.label}`) };
  });
  const group = h('div', { class: 'sf-checks', role: 'group' }, boxes.map((b) => b.el));
  const first = boxes[0]?.cb ?? h('span');
  let touched = false;
  group.addEventListener('change', () => { touched = true; });
  const ctl = {
    el: wrap(s, ctx, first, group),
    get() {
      const out = boxes.filter((b) => b.cb.checked).map((b) => b.opt.value);
      if (!ctx.required && !touched && out.length === 0 && s.default === undefined) return undefined;
      return out;
    },
    set(v) {
      const arr = Array.isArray(v) ? v : Array.isArray(s.default) ? s.default : [];
      for (const b of boxes) b.cb.checked = arr.some((x) => JSON.stringify(x) === JSON.stringify(b.opt.value));
    },
  };
  ctl.set(undefined);
  return ctl;
}

function selectControl(s, ctx, opts) {
  const sel = h('select', { class: 'input' });
  const hasDefault = s.default !== undefined;
  sel.appendChild(h('option', { value: '' }, ctx.required || hasDefault ? '— choose —' : '— leave out —'));
  opts.forEach((opt, i) => sel.appendChild(h('option', { value: String(i) }, opt.label)));
  const ctl = {
    el: wrap(s, ctx, sel, sel),
    get() {
      if (sel.value === '') return undefined;
      return opts[Number(sel.value)]?.value;
    },
    set(v) {
      const want = v === undefined ? s.default : v;
      const i = opts.findIndex((o) => JSON.stringify(o.value) === JSON.stringify(want));
      sel.value = i >= 0 ? String(i) : '';
    },
  };
  ctl.set(undefined);
  return ctl;
}

const stringInputTypes = { email: 'email', uri: 'url', url: 'url', date: 'date', time: 'time', 'date-time': 'datetime-local' };

function stringControl(s, ctx) {
  const multiline = s.format === 'textarea' || /multi-?line/i.test(String(s.description ?? '')) || (typeof s.maxLength === 'number' && s.maxLength > 500);
  const inputType = stringInputTypes[s.format] ?? 'text';
  const input = multiline
    ? h('textarea', { class: 'input', rows: '4', spellcheck: 'false' })
    : h('input', { class: 'input', type: inputType, spellcheck: 'false', autocomplete: 'off' });
  if (typeof s.maxLength === 'number') input.setAttribute('maxlength', String(s.maxLength));
  if (typeof s.minLength === 'number') input.setAttribute('minlength', String(s.minLength));
  if (s.format && !stringInputTypes[s.format]) input.setAttribute('placeholder', s.format);
  const ctl = {
    el: wrap(s, ctx, input, input),
    get() {
      let v = input.value;
      if (inputType === 'datetime-local' && v) {
        const d = new Date(v);
        if (!Number.isNaN(d.getTime())) v = d.toISOString();
      }
      // Empty means "not given"; a required field then fails validation with a clear message
      // (raw JSON mode can still send "").
      if (v === '') return undefined;
      return v;
    },
    set(v) {
      const x = v === undefined ? s.default : v;
      let str = typeof x === 'string' ? x : x === undefined || x === null ? '' : String(x);
      if (inputType === 'datetime-local' && str) {
        const d = new Date(str);
        if (!Number.isNaN(d.getTime())) str = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
      }
      input.value = str;
    },
  };
  ctl.set(undefined);
  return ctl;
}

function numberControl(s, ctx, integer) {
  const input = h('input', { class: 'input', type: 'number', step: integer ? '1' : 'any', inputmode: integer ? 'numeric' : 'decimal' });
  if (typeof s.minimum === 'number') input.setAttribute('min', String(s.minimum));
  if (typeof s.maximum === 'number') input.setAttribute('max', String(s.maximum));
  const name = ctx.name || ctx.label || 'value';
  const ctl = {
    el: wrap(s, ctx, input, input),
    get() {
      if (input.value.trim() === '') return undefined;
      const n = Number(input.value);
      return Number.isFinite(n) ? n : input.value;
    },
    set(v) {
      const x = v === undefined ? s.default : v;
      input.value = typeof x === 'number' ? String(x) : '';
    },
    problems() {
      if (input.value.trim() !== '' && !Number.isFinite(Number(input.value))) return [`${name}: not a number`];
      if (input.validity && input.validity.badInput) return [`${name}: not a number`];
      return [];
    },
  };
  ctl.set(undefined);
  return ctl;
}

function booleanControl(s, ctx) {
  const cb = h('input', { type: 'checkbox', class: 'checkbox' });
  let touched = false;
  cb.addEventListener('change', () => { touched = true; });
  const { label, description } = describe(s, ctx);
  cb.id = uid('sfb');
  const el = h('div', { class: 'field field-check', dataset: { prop: ctx.name || '(root)' } },
    h('label', { for: cb.id, class: 'check' }, cb, ` ${label || 'Yes'}`,
      ctx.name && label !== ctx.name ? h('code', { class: 'prop-name' }, ctx.name) : null,
      ctx.required ? h('span', { class: 'req' }, ' *') : null),
    description ? h('div', { class: 'field-hint' }, description) : null);
  const ctl = {
    el,
    get() {
      if (!ctx.required && !touched && s.default === undefined) return undefined;
      return cb.checked;
    },
    set(v) {
      const x = v === undefined ? s.default : v;
      cb.checked = x === true;
      if (v !== undefined) touched = true;
    },
  };
  ctl.set(undefined);
  return ctl;
}

function nullControl(s, ctx) {
  const out = h('output', { class: 'muted' }, 'null');
  return { el: wrap(s, ctx, out, out), get: () => (ctx.required ? null : undefined), set: () => {} };
}

function constControl(s, ctx) {
  const out = h('output', { class: 'const-value' }, display(s.const));
  return { el: wrap(s, ctx, out, out), get: () => s.const, set: () => {} };
}

function jsonControl(s, ctx) {
  const ta = h('textarea', { class: 'input mono', rows: '3', spellcheck: 'false', placeholder: 'JSON' });
  const name = ctx.name || ctx.label || 'value';
  const ctl = {
    el: wrap({ ...s, description: s.description ?? 'Any JSON value' }, ctx, ta, ta),
    get() {
      if (ta.value.trim() === '') return ctx.topLevel ? {} : undefined;
      try {
        return JSON.parse(ta.value);
      } catch {
        return ta.value;
      }
    },
    set(v) {
      const x = v === undefined ? s.default : v;
      ta.value = x === undefined ? '' : pretty(x);
    },
    problems() {
      if (ta.value.trim() === '') return [];
      try {
        JSON.parse(ta.value);
        return [];
      } catch (err) {
        return [`${name}: not valid JSON (${err.message})`];
      }
    },
  };
  ctl.set(undefined);
  return ctl;
}

function unionControl(branches, s, ctx) {
  const sel = h('select', { class: 'input variant-select', 'aria-label': `${ctx.name || 'value'}: which shape` });
  branches.forEach((b, i) => sel.appendChild(h('option', { value: String(i) }, branchLabel(b, i))));
  const holder = h('div', { class: 'sf-variant' });
  let current = null;
  const choose = (i, v) => {
    const b = branches[i] ?? {};
    current = build(b, { ...ctx, name: '', label: '', required: ctx.required, depth: ctx.depth + 1 });
    if (v !== undefined) current.set(v);
    clear(holder).appendChild(current.el);
  };
  sel.addEventListener('change', () => choose(Number(sel.value), undefined));
  const body = h('div', { class: 'sf-union' }, sel, holder);
  const ctl = {
    el: wrap(s, ctx, sel, body),
    get: () => current?.get(),
    set(v) {
      const x = v === undefined ? s.default : v;
      let i = 0;
      if (x !== undefined) {
        const fit = branches.findIndex((b) => validate({ ...b, $defs: ctx.root.$defs, definitions: ctx.root.definitions }, x).length === 0);
        if (fit >= 0) i = fit;
      }
      sel.value = String(i);
      choose(i, x);
    },
    problems: () => (current?.problems ? current.problems() : []),
  };
  ctl.set(undefined);
  return ctl;
}

function branchLabel(b, i) {
  if (!b || typeof b !== 'object') return `Option ${i + 1}`;
  if (typeof b.title === 'string' && b.title) return b.title;
  if (b.type) return Array.isArray(b.type) ? b.type.join(' | ') : String(b.type);
  if (b.properties) return `object (${Object.keys(b.properties).slice(0, 3).join(', ')})`;
  return `Option ${i + 1}`;
}

/**
 * defaultsOf returns the value a schema's defaults describe (used to prefill elicitation).
 * @param {any} schema
 */
export function defaultsOf(schema) {
  return createSchemaForm(schema, { rawToggle: false }).getValue().value;
}
