// A small JSON Schema (2020-12 core subset) validator for tool input checks and
// outputSchema validation of structured results: types, enum/const, object and array
// keywords, string and number bounds, allOf/anyOf/oneOf/not, if/then/else and local $refs.
// Formats are not asserted (as the spec's default). Depth, error counts and the work of one
// validation are bounded so a hostile schema cannot hang the page: depth alone is not enough,
// since "anyOf": [{"$ref": "#"}, {"$ref": "#"}] doubles the work at every level.

const MAX_DEPTH = 64;
const MAX_ERRORS = 50;
/** MAX_STEPS bounds the schema nodes one validate call visits. */
const MAX_STEPS = 20_000;

/** steps is what the running validate call has left; it runs synchronously, one at a time. */
let steps = 0;

/**
 * resolveRef follows a local "#/…" JSON pointer in root; unknown refs resolve to {} (accept).
 * @param {any} root
 * @param {string} ref
 */
export function resolveRef(root, ref) {
  if (typeof ref !== 'string' || !ref.startsWith('#')) return {};
  if (ref === '#') return root;
  const parts = ref.slice(2).split('/').map((p) => decodeURIComponent(p.replace(/~1/g, '/').replace(/~0/g, '~')));
  let cur = root;
  for (const p of parts) {
    if (cur === null || typeof cur !== 'object' || !(p in cur)) return {};
    cur = cur[p];
  }
  return cur;
}

/**
 * deref returns schema with its $ref (if any) followed, up to a few hops.
 * @param {any} schema
 * @param {any} root
 */
export function deref(schema, root) {
  let s = schema;
  for (let i = 0; i < 8 && s && typeof s === 'object' && typeof s.$ref === 'string'; i++) {
    const { $ref, ...rest } = s;
    const target = resolveRef(root, $ref);
    s = Object.keys(rest).length ? { ...target, ...rest } : target;
  }
  return s;
}

/** typeOf names a JSON value's type as JSON Schema does. */
export function typeOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(t, v) {
  const actual = typeOf(v);
  if (t === actual) return true;
  if (t === 'number' && actual === 'integer') return true;
  return false;
}

/** deepEqual compares JSON values. */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
}

/**
 * validate checks value against schema and returns the errors ([] when valid).
 * @param {any} schema
 * @param {any} value
 * @returns {{path: string, message: string}[]}
 */
export function validate(schema, value) {
  const errors = [];
  steps = MAX_STEPS;
  check(schema, value, '', schema, errors, 0);
  if (steps < 0) return [{ path: '(root)', message: 'the schema is too complex to check here (send raw JSON to skip the check)' }];
  return errors;
}

function push(errors, path, message) {
  if (errors.length < MAX_ERRORS) errors.push({ path: path || '(root)', message });
}

function check(schemaIn, v, path, root, errors, depth) {
  if (errors.length >= MAX_ERRORS) return;
  if (--steps < 0) {
    push(errors, path, 'schema too complex to check');
    return;
  }
  if (depth > MAX_DEPTH) {
    push(errors, path, 'schema nests too deeply to check');
    return;
  }
  if (schemaIn === true || schemaIn === undefined) return;
  if (schemaIn === false) {
    push(errors, path, 'no value is allowed here');
    return;
  }
  if (typeof schemaIn !== 'object' || schemaIn === null) return;
  const s = deref(schemaIn, root);
  if (s === true || s === undefined || s === null || typeof s !== 'object') return;
  const d = depth + 1;

  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => typeMatches(t, v))) {
      push(errors, path, `expected ${types.join(' or ')}, got ${typeOf(v)}`);
      return;
    }
  }
  if (Array.isArray(s.enum) && !s.enum.some((e) => deepEqual(e, v))) {
    push(errors, path, `must be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  }
  if ('const' in s && !deepEqual(s.const, v)) push(errors, path, `must be ${JSON.stringify(s.const)}`);

  if (typeof v === 'string') {
    const len = [...v].length;
    if (typeof s.minLength === 'number' && len < s.minLength) push(errors, path, `must be at least ${s.minLength} characters`);
    if (typeof s.maxLength === 'number' && len > s.maxLength) push(errors, path, `must be at most ${s.maxLength} characters`);
    if (typeof s.pattern === 'string') {
      try {
        if (!new RegExp(s.pattern, 'u').test(v)) push(errors, path, `must match ${s.pattern}`);
      } catch {
        // An invalid pattern in the schema is the server's problem; do not block on it.
      }
    }
  }
  if (typeof v === 'number') {
    if (typeof s.minimum === 'number' && v < s.minimum) push(errors, path, `must be ≥ ${s.minimum}`);
    if (typeof s.maximum === 'number' && v > s.maximum) push(errors, path, `must be ≤ ${s.maximum}`);
    if (typeof s.exclusiveMinimum === 'number' && v <= s.exclusiveMinimum) push(errors, path, `must be > ${s.exclusiveMinimum}`);
    if (typeof s.exclusiveMaximum === 'number' && v >= s.exclusiveMaximum) push(errors, path, `must be < ${s.exclusiveMaximum}`);
    if (typeof s.multipleOf === 'number' && s.multipleOf > 0) {
      const q = v / s.multipleOf;
      if (Math.abs(q - Math.round(q)) > 1e-9) push(errors, path, `must be a multiple of ${s.multipleOf}`);
    }
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === 'number' && v.length < s.minItems) push(errors, path, `needs at least ${s.minItems} items`);
    if (typeof s.maxItems === 'number' && v.length > s.maxItems) push(errors, path, `allows at most ${s.maxItems} items`);
    if (s.uniqueItems === true) {
      for (let i = 0; i < v.length; i++) {
        for (let j = i + 1; j < v.length; j++) {
          if (deepEqual(v[i], v[j])) {
            push(errors, path, 'items must be unique');
            i = v.length;
            break;
          }
        }
      }
    }
    const prefix = Array.isArray(s.prefixItems) ? s.prefixItems : Array.isArray(s.items) ? s.items : [];
    prefix.forEach((ps, i) => { if (i < v.length) check(ps, v[i], `${path}[${i}]`, root, errors, d); });
    const rest = Array.isArray(s.items) ? s.additionalItems : s.items;
    if (rest !== undefined) {
      for (let i = prefix.length; i < v.length; i++) check(rest, v[i], `${path}[${i}]`, root, errors, d);
    }
    if (s.contains !== undefined) {
      const n = v.filter((x) => validate(withRoot(s.contains, root), x).length === 0).length;
      const min = typeof s.minContains === 'number' ? s.minContains : 1;
      if (n < min) push(errors, path, 'does not contain a matching item');
    }
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const props = s.properties && typeof s.properties === 'object' ? s.properties : {};
    for (const r of Array.isArray(s.required) ? s.required : []) {
      if (!Object.hasOwn(v, r)) push(errors, joinPath(path, r), 'is required');
    }
    const keys = Object.keys(v);
    if (typeof s.minProperties === 'number' && keys.length < s.minProperties) push(errors, path, `needs at least ${s.minProperties} properties`);
    if (typeof s.maxProperties === 'number' && keys.length > s.maxProperties) push(errors, path, `allows at most ${s.maxProperties} properties`);
    const patterns = [];
    for (const [p, ps] of Object.entries(s.patternProperties ?? {})) {
      try {
        patterns.push([new RegExp(p, 'u'), ps]);
      } catch {
        // ignore invalid patterns
      }
    }
    for (const k of keys) {
      let matched = false;
      if (Object.hasOwn(props, k)) {
        matched = true;
        check(props[k], v[k], joinPath(path, k), root, errors, d);
      }
      for (const [re, ps] of patterns) {
        if (re.test(k)) {
          matched = true;
          check(ps, v[k], joinPath(path, k), root, errors, d);
        }
      }
      if (!matched && s.additionalProperties !== undefined) {
        if (s.additionalProperties === false) push(errors, joinPath(path, k), 'is not an allowed property');
        else check(s.additionalProperties, v[k], joinPath(path, k), root, errors, d);
      }
    }
    if (s.propertyNames !== undefined) {
      for (const k of keys) check(s.propertyNames, k, joinPath(path, k), root, errors, d);
    }
  }
  if (Array.isArray(s.allOf)) for (const sub of s.allOf) check(sub, v, path, root, errors, d);
  if (Array.isArray(s.anyOf) && !s.anyOf.some((sub) => matches(sub, v, root, d))) {
    push(errors, path, 'matches none of the allowed shapes (anyOf)');
  }
  if (Array.isArray(s.oneOf)) {
    const n = s.oneOf.filter((sub) => matches(sub, v, root, d)).length;
    if (n !== 1) push(errors, path, n === 0 ? 'matches none of the allowed shapes (oneOf)' : 'matches more than one shape (oneOf)');
  }
  if (s.not !== undefined && matches(s.not, v, root, d)) push(errors, path, 'matches a shape that is not allowed');
  if (s.if !== undefined) {
    if (matches(s.if, v, root, d)) {
      if (s.then !== undefined) check(s.then, v, path, root, errors, d);
    } else if (s.else !== undefined) {
      check(s.else, v, path, root, errors, d);
    }
  }
}

function withRoot(schema, root) {
  // Sub-schemas checked on their own still resolve refs against the original root.
  if (schema && typeof schema === 'object' && root && typeof root === 'object') {
    return { ...schema, $defs: root.$defs, definitions: root.definitions };
  }
  return schema;
}

function matches(schema, v, root, depth) {
  const errs = [];
  check(schema, v, '', root, errs, depth);
  return errs.length === 0;
}

function joinPath(path, key) {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? (path ? `${path}.${key}` : key) : `${path}[${JSON.stringify(key)}]`;
}
