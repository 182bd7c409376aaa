package webtest

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// moduleChecks exercises the inspector's pure modules inside the browser, where they run:
// RFC 6570 expansion, the SSE parser, the JSON Schema validator, schema forms, the frame
// model and the DOM helpers. It resolves to the list of failures.
const moduleChecks = `(async () => {
  const fails = [];
  const eq = (name, got, want) => {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    if (g !== w) fails.push(name + ': got ' + g + ', want ' + w);
  };
  const ut = await import('/assets/js/uritemplate.js');
  // RFC 6570 section 1.2 and 3.2 examples.
  const vars = { var: 'value', hello: 'Hello World!', path: '/foo/bar', empty: '', x: '1024', y: '768',
    list: ['red', 'green', 'blue'], keys: { semi: ';', dot: '.', comma: ',' }, undef: undefined };
  const cases = [
    ['{var}', 'value'], ['{hello}', 'Hello%20World%21'], ['{+hello}', 'Hello%20World!'], ['{+path}/here', '/foo/bar/here'],
    ['{#hello}', '#Hello%20World!'], ['X{.var}', 'X.value'], ['X{.x,y}', 'X.1024.768'], ['{/var,x}/here', '/value/1024/here'],
    ['{;x,y,empty}', ';x=1024;y=768;empty'], ['{?x,y,empty}', '?x=1024&y=768&empty='], ['?fixed=yes{&x}', '?fixed=yes&x=1024'],
    ['{var:3}', 'val'], ['{list}', 'red,green,blue'], ['{list*}', 'red,green,blue'], ['{/list*}', '/red/green/blue'],
    ['{?list*}', '?list=red&list=green&list=blue'], ['{keys}', 'semi,%3B,dot,.,comma,%2C'], ['{keys*}', 'semi=%3B,dot=.,comma=%2C'],
    ['{?keys*}', '?semi=%3B&dot=.&comma=%2C'], ['{undef}', ''], ['{x,undef,y}', '1024,768'], ['file:///{path}', 'file:///%2Ffoo%2Fbar'],
  ];
  for (const [t, want] of cases) eq('expand ' + t, ut.expand(t, vars), want);
  eq('variables', ut.templateVariables('test://{a}/{+b}{?c,a}'), ['a', 'b', 'c']);

  const { EventStreamParser } = await import('/assets/js/sse.js');
  const msgs = [];
  let retry = 0;
  const p = new EventStreamParser((m) => msgs.push(m), (r) => { retry = r; });
  for (const chunk of [': hi\r', '\nretry: 1500\nid: 7\nevent: frame\ndata: {"a":', '1}\ndata: x\r', '\n\r\n', 'id: 8\ndata: two\n\n', 'data: partial']) p.push(chunk);
  eq('sse messages', msgs, [{ id: '7', event: 'frame', data: '{"a":1}\nx' }, { id: '8', event: 'message', data: 'two' }]);
  eq('sse retry', retry, 1500);

  const js = await import('/assets/js/jsonschema.js');
  const schema = { type: 'object', required: ['a'], additionalProperties: false, $defs: { pos: { type: 'integer', minimum: 1 } },
    properties: { a: { $ref: '#/$defs/pos' }, b: { anyOf: [{ type: 'string' }, { type: 'null' }] }, c: { type: 'array', items: { enum: ['x', 'y'] }, maxItems: 2 } } };
  eq('valid', js.validate(schema, { a: 2, b: null, c: ['x'] }), []);
  eq('invalid', js.validate(schema, { a: 0, b: 3, c: ['z', 'x', 'y'], d: 1 }).map((e) => e.path).sort(), ['a', 'b', 'c', 'c[0]', 'd']);

  const sf = await import('/assets/js/schema-form.js');
  const form = sf.createSchemaForm({ type: 'object', required: ['name'], properties: {
    name: { type: 'string', default: 'Ada' }, count: { type: 'integer', default: 3 }, on: { type: 'boolean', default: true },
    color: { type: 'string', enum: ['red', 'green'], default: 'green' },
    hero: { type: 'string', oneOf: [{ const: 'h1', title: 'One' }, { const: 'h2', title: 'Two' }], default: 'h2' },
    tags: { type: 'array', items: { type: 'string' }, default: ['a', 'b'] },
    pick: { type: 'array', items: { anyOf: [{ const: 'p1' }, { const: 'p2' }] }, default: ['p2'] },
    nested: { type: 'object', properties: { deep: { type: 'number', default: 1.5 } } },
    maybe: { anyOf: [{ type: 'string' }, { type: 'null' }] },
    either: { oneOf: [{ type: 'object', title: 'ByID', properties: { id: { type: 'integer' } }, required: ['id'] }, { type: 'string', title: 'ByName' }] },
    skip: { type: 'string' },
  } });
  form.setValue({ name: 'Ada', either: { id: 7 } });
  const v = form.getValue();
  eq('form ok', v.ok, true);
  eq('form value', v.value, { name: 'Ada', count: 3, on: true, color: 'green', hero: 'h2', tags: ['a', 'b'], pick: ['p2'], nested: { deep: 1.5 }, either: { id: 7 } });
  form.el.querySelector('.raw-toggle').click();
  const raw = form.el.querySelector('.raw-json');
  raw.value = '{"name": "", "extra": true}';
  eq('raw mode sends anything that parses', form.getValue().value, { name: '', extra: true });
  form.el.querySelector('.raw-toggle').click();
  eq('back to the form keeps defaults for missing keys', form.getValue().value.count, 3);

  const { SessionStore, frameSummary } = await import('/assets/js/store.js');
  const st = new SessionStore('s');
  const at = (ms) => new Date(1700000000000 + ms).toISOString();
  st.apply({ seq: 1, type: 'frame', at: at(0), data: { dir: 'send', message: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x', _meta: { progressToken: 'c1' } } } } });
  st.apply({ seq: 2, type: 'frame', at: at(5), data: { dir: 'recv', message: { jsonrpc: '2.0', id: 9, method: 'roots/list' } } });
  st.apply({ seq: 3, type: 'frame', at: at(7), data: { dir: 'send', message: { jsonrpc: '2.0', id: 9, result: { roots: [] } } } });
  st.apply({ seq: 4, type: 'frame', at: at(42), data: { dir: 'recv', message: { jsonrpc: '2.0', id: 1, result: {} } } });
  st.apply({ seq: 4, type: 'frame', at: at(42), data: { dir: 'recv', message: { jsonrpc: '2.0', id: 1, result: {} } } });
  st.apply({ seq: 5, type: 'progress', at: at(50), data: { call_id: 'c1', progress: 1, total: 2 } });
  eq('frames deduplicated by seq', st.frames.length, 4);
  eq('pairs', st.frames.map((f) => f.pair), [3, 2, 1, 0]);
  eq('latency', st.frames[3].latencyMs, 42);
  eq('summary', frameSummary(st.frames[3]), 'result tools/call (id 1)');
  eq('call named from its request', st.calls.get('c1').name, 'x');
  // A close can commit a request's expiry ahead of the request itself: it stays expired.
  st.apply({ seq: 6, type: 'pending_resolved', at: at(60), data: { request_id: 'r1', status: 'expired', reason: 'session closed' } });
  st.apply({ seq: 7, type: 'pending_request', at: at(61), data: { request_id: 'r1', kind: 'sampling', params: { messages: [] } } });
  eq('resolved before requested', [st.pending.get('r1').status, st.pending.get('r1').kind], ['expired', 'sampling']);
  st.apply({ seq: 8, type: 'pending_request', at: at(62), data: { request_id: 'r2', kind: 'elicitation', params: {} } });
  eq('requested', st.pending.get('r2').status, 'pending');
  // Seqs skipped by the stream were deleted by retention: a note says which.
  st.apply({ seq: 11, type: 'notification', at: at(70), data: { method: 'notifications/message', params: { level: 'info', data: 'x' } } });
  eq('retention gap noted', st.notes.filter((n) => n.kind === 'system').map((n) => [n.seq, n.method]), [[9, 'events 9–10 were deleted by retention']]);

  const dom = await import('/assets/js/dom.js');
  eq('javascript: link is text', dom.safeLink('javascript:alert(1)').tagName, 'SPAN');
  eq('https link', dom.safeLink('https://example.com/a').getAttribute('href'), 'https://example.com/a');
  eq('svg refused', dom.dataImage('image/svg+xml', 'PHN2Zz4='), null);
  eq('bad base64 refused', dom.dataImage('image/png', 'AAAA"onerror="x'), null);
  const frag = document.createElement('div');
  frag.append(dom.linkify('see https://example.com/x. and javascript:alert(1)'));
  eq('linkify', [...frag.querySelectorAll('a')].map((a) => a.getAttribute('href')), ['https://example.com/x']);
  let threw = false;
  try { dom.h('a', { href: 'javascript:x' }); } catch { threw = true; }
  eq('h refuses href', threw, true);
  return fails;
})()`

// TestModules runs the checks of the pure modules in Chromium.
func TestModules(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	b.run("open", chromedp.Navigate(s.url+"/"))
	b.waitJS("page up", `document.querySelector('.signin-form')`, 10*time.Second)
	var fails []string
	b.eval(moduleChecks, &fails)
	if len(fails) > 0 {
		t.Errorf("module checks failed:\n  %s", strings.Join(fails, "\n  "))
	}
	b.noProblems()
}

// hostileSchemaChecks builds a form for, and validates against, schemas a hostile server can
// send that are small but whose expansion is not: ten properties that each $ref the root
// (ten times the controls a level), and an anyOf of two $refs to the root (twice the work a
// level). It resolves to how long each took, and whether the form and the check still work.
const hostileSchemaChecks = `(async () => {
  const sf = await import('/assets/js/schema-form.js');
  const js = await import('/assets/js/jsonschema.js');
  const props = {};
  for (let i = 0; i < 10; i++) props['p' + i] = { $ref: '#' };
  const fanOut = { type: 'object', properties: props };
  let t0 = performance.now();
  const form = sf.createSchemaForm(fanOut);
  const formMs = performance.now() - t0;
  const v = form.getValue();
  const doubling = { type: 'object', anyOf: [{ $ref: '#' }, { $ref: '#' }] };
  t0 = performance.now();
  const errs = js.validate(doubling, {});
  const validateMs = performance.now() - t0;
  return { formMs, validateMs, controls: form.el.querySelectorAll('input, textarea, select').length,
    formOk: v.ok, checkSaysWhy: errs.length === 1 && errs[0].message.includes('too complex') };
})()`

// TestHostileSchemasDoNotHangThePage: a tool's inputSchema or an elicitation's schema comes
// from the server; one that expands without end must not freeze the tab that opens it.
func TestHostileSchemasDoNotHangThePage(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	b.run("open", chromedp.Navigate(s.url+"/"))
	b.waitJS("page up", `document.querySelector('.signin-form')`, 10*time.Second)
	var got struct {
		FormMs, ValidateMs float64
		Controls           int
		FormOk             bool
		CheckSaysWhy       bool
	}
	b.eval(hostileSchemaChecks, &got)
	// At most MAX_CONTROLS (500) controls built, each with up to ten JSON boxes for the
	// children past the budget.
	if got.FormMs > 5000 || got.ValidateMs > 5000 || got.Controls == 0 || got.Controls > 6000 || !got.FormOk || !got.CheckSaysWhy {
		t.Fatalf("hostile schemas: %+v", got)
	}
	t.Logf("hostile schemas: %+v", got)
	b.noProblems()
}
