// test/conformance/corpus.js: the cases of the differential suite.
//
//   node corpus.js --sql OUT.sql   the cases as SQL, for our side (ours.pl)
//   node corpus.js OUT.json        the cases as JSON
//   require('./corpus').casesJson() the same JSON text (segment.js parses it)
//
// A case is {id, group, subscription, mapping, event}: one Segment event and
// one "Send Event" subscription (FQL text, the five field mappings).  Field
// mappings not given are Segment's preset ({"@path": "$.messageId"}, ...).
// Every case gets its own messageId, and every transaction_id a case can
// produce is unique across the corpus (ours.pl ships every case through one
// outbox, where a repeated transaction_id would be skipped as a duplicate).
//
// Groups: fql (every operator of the subset Segment's parser handles, on
// values of every type), field (the coercion of each Metronome field),
// timestamp (every date form), directive (every mapping-kit directive),
// path (lodash paths, length), text (numbers and case as JavaScript writes
// them), event (track, identify, page, group, screen events with the
// preset), error (events Segment refuses), quirk (well-formed input where
// Segment's parser is known to misread: the allow-list says why we differ).
'use strict'

const PRESET = {
  transaction_id: { '@path': '$.messageId' },
  customer_id: { '@path': '$.context.groupId' },
  timestamp: { '@path': '$.timestamp' },
  event_type: { '@path': '$.event' },
  properties: { '@path': '$.properties' }
}
const FIELDS = Object.keys(PRESET)

const cases = []
const seen = new Set()

// N('1.50'): a number written with exactly these digits in the JSON text of
// the case (JavaScript would write 1.5); both sides parse that text.
const N = (s) => ({ __raw: s })

// The base event of a case: a track event that the preset maps.
function baseEvent(id) {
  return {
    type: 'track',
    event: 'API Call',
    messageId: 'msg-' + id,
    userId: 'user-1',
    anonymousId: 'anon-1',
    timestamp: '2024-03-01T10:15:30.123Z',
    context: { groupId: 'acme', library: { name: 'analytics.js' } },
    properties: { tokens: 1200, plan: 'pro', model: 'gpt-4', region: 'eu-west-1' }
  }
}

// add(group, name, {subscription, mapping, event, patch}): one case.
// patch(event) edits the base event in place; mapping overrides preset fields.
function add(group, name, opts = {}) {
  const id = `${group}-${name}`
  if (seen.has(id)) throw new Error('duplicate case id ' + id)
  seen.add(id)
  let event = opts.event !== undefined ? opts.event : baseEvent(id)
  if (opts.patch) opts.patch(event, id)
  const mapping = {}
  for (const f of FIELDS) mapping[f] = PRESET[f]
  Object.assign(mapping, opts.mapping || {})
  // a transaction_id from a literal must be unique: suffix it
  cases.push({
    id,
    group,
    subscription: opts.subscription !== undefined ? opts.subscription : 'type = "track"',
    mapping,
    event
  })
}

// A transaction_id mapping unique to the case, for mappings that test
// another field and must not depend on messageId.
const uniqueTid = { '@path': '$.messageId' }

/* ------------------------------------------------------------------ fql */

// values of properties.value (undefined: the key is missing)
const VALUES = {
  missing: undefined,
  null: null,
  n1200: 1200,
  n1200f: N('1200.0'),
  n5: 5,
  n10: 10,
  nneg: -3,
  nfrac: 0.5,
  s1200: '1200',
  s10: '10',
  sabc: 'abc',
  sempty: '',
  btrue: true,
  bfalse: false,
  obj: { a: 1 },
  arr: [1200]
}
const OPS = ['=', '!=', '<', '<=', '>', '>=']
const LITERALS = {
  n1200: '1200',
  n10: '10',
  nfrac: '0.5',
  nneg: '-3',
  s1200: '"1200"',
  s10: '"10"',
  sabc: '"abc"',
  true: 'true',
  false: 'false',
  null: 'null'
}
for (const op of OPS) {
  for (const [ln, lit] of Object.entries(LITERALS)) {
    // ordering needs a number, bare or quoted (Segment converts with Number())
    if (!['=', '!='].includes(op) && !['n1200', 'n10', 'nfrac', 'nneg', 's1200', 's10'].includes(ln)) continue
    for (const [vn, val] of Object.entries(VALUES)) {
      const opname = { '=': 'eq', '!=': 'ne', '<': 'lt', '<=': 'le', '>': 'gt', '>=': 'ge' }[op]
      add('fql', `value-${opname}-${ln}-${vn}`, {
        subscription: `properties.value ${op} ${lit}`,
        patch: (e) => {
          if (val !== undefined) e.properties.value = val
        }
      })
    }
  }
}
// quoted literals of every form Number() reads, against a few values
const ORD_LITERALS = { sspace: '" 10 "', sexp: '"1e1"', shex: '"0xA"', sempty: '""', sabc: '"abc"', sfrac: '".5"', sinf: '"Infinity"', sneg: '"-3"', splus: '"+10"', sdot: '"10."' }
for (const op of ['<', '>=']) {
  for (const [ln, lit] of Object.entries(ORD_LITERALS)) {
    for (const [vn, val] of Object.entries({ n5: 5, n10: 10, n1200: 1200, nneg: -3, s10: '10', missing: undefined })) {
      add('fql', `ord-${op === '<' ? 'lt' : 'ge'}-${ln}-${vn}`, {
        subscription: `properties.value ${op} ${lit}`,
        patch: (e) => {
          if (val !== undefined) e.properties.value = val
        }
      })
    }
  }
}

// the fields Segment's parser knows, with = and !=
const FQL_FIELDS = [
  ['type-eq', 'type = "track"', (e) => {}],
  ['type-eq-no', 'type = "identify"', (e) => {}],
  ['type-ne', 'type != "identify"', (e) => {}],
  ['type-ne-no', 'type != "track"', (e) => {}],
  ['event-eq', 'event = "API Call"', (e) => {}],
  ['event-eq-no', 'event = "api call"', (e) => {}],
  ['event-ne', 'event != "Other"', (e) => {}],
  ['event-missing-ne', 'event != "Other"', (e) => { delete e.event }],
  ['event-missing-eq', 'event = "API Call"', (e) => { delete e.event }],
  ['name-eq', 'name = "Home"', (e) => { e.name = 'Home' }],
  ['name-null', 'name = null', (e) => {}],
  ['name-notnull', 'name != null', (e) => { e.name = 'Home' }],
  ['name-notnull-no', 'name != null', (e) => {}],
  ['userId-eq', 'userId = "user-1"', (e) => {}],
  ['userId-ne', 'userId != "user-2"', (e) => {}],
  ['userId-null', 'userId = null', (e) => { delete e.userId }],
  ['userId-null-no', 'userId = null', (e) => {}],
  ['userId-notnull', 'userId != null', (e) => {}],
  ['userId-notnull-jsonnull', 'userId != null', (e) => { e.userId = null }],
  ['context-eq', 'context.groupId = "acme"', (e) => {}],
  ['context-nested', 'context.library.name = "analytics.js"', (e) => {}],
  ['context-ne', 'context.groupId != "other"', (e) => {}],
  ['context-null', 'context.locale = null', (e) => {}],
  ['context-notnull', 'context.groupId != null', (e) => {}],
  ['context-num', 'context.n = 3', (e) => { e.context.n = 3 }],
  ['context-lt', 'context.n < 4', (e) => { e.context.n = 3 }],
  ['context-true', 'context.active = true', (e) => { e.context.active = true }],
  ['context-false', 'context.active = false', (e) => { e.context.active = false }],
  ['traits-eq', 'traits.plan = "pro"', (e) => { e.traits = { plan: 'pro' } }],
  ['traits-missing', 'traits.plan = "pro"', (e) => {}],
  ['traits-num', 'traits.seats >= 10', (e) => { e.traits = { seats: 12 } }],
  ['traits-true', 'traits.vip = true', (e) => { e.traits = { vip: true } }],
  ['traits-ne-num', 'traits.seats != 12', (e) => { e.traits = { seats: 12 } }],
  ['traits-ne-num-missing', 'traits.seats != 12', (e) => {}],
  ['props-nested', 'properties.a.b = "x"', (e) => { e.properties.a = { b: 'x' } }],
  ['props-nested-missing', 'properties.a.b = "x"', (e) => {}],
  ['props-nested-num', 'properties.a.b > 1', (e) => { e.properties.a = { b: 2 } }],
  ['props-true', 'properties.paid = true', (e) => { e.properties.paid = true }],
  ['props-true-no', 'properties.paid = true', (e) => { e.properties.paid = 'true' }],
  ['props-false', 'properties.paid = false', (e) => { e.properties.paid = false }],
  ['props-false-missing', 'properties.paid = false', (e) => {}],
  ['props-float', 'properties.tokens = 1200.0', (e) => {}],
  ['props-exp', 'properties.tokens = 1.2e3', (e) => {}],
  ['props-negzero', 'properties.z = 0', (e) => { e.properties.z = N('-0') }],
  ['props-utf8', 'properties.city = "Zürich"', (e) => { e.properties.city = 'Zürich' }],
  ['props-space', 'properties.plan = "pro plan"', (e) => { e.properties.plan = 'pro plan' }],
  ['props-single-quote', "properties.plan = 'pro'", (e) => {}]
]
for (const [n, sub, p] of FQL_FIELDS) add('fql', n, { subscription: sub, patch: p })

// functions: contains, match (leading or trailing *), and their negations
const FUNCS = [
  ['contains-event', 'contains(event, "Call")', (e) => {}],
  ['contains-event-no', 'contains(event, "call")', (e) => {}],
  ['contains-event-missing', 'contains(event, "Call")', (e) => { delete e.event }],
  ['contains-name', 'contains(name, "om")', (e) => { e.name = 'Home' }],
  ['contains-userId', 'contains(userId, "user")', (e) => {}],
  ['contains-props', 'contains(properties.model, "gpt")', (e) => {}],
  ['contains-props-num', 'contains(properties.tokens, "12")', (e) => {}],
  ['contains-props-missing', 'contains(properties.nothing, "x")', (e) => {}],
  ['contains-traits', 'contains(traits.email, "@acme")', (e) => { e.traits = { email: 'a@acme.com' } }],
  ['contains-context', 'contains(context.groupId, "cm")', (e) => {}],
  ['ncontains-event', '!contains(event, "Other")', (e) => {}],
  ['ncontains-event-no', '!contains(event, "Call")', (e) => {}],
  ['ncontains-props-missing', '!contains(properties.nothing, "x")', (e) => {}],
  ['ncontains-props-num', '!contains(properties.tokens, "x")', (e) => {}],
  ['ncontains-props', '!contains(properties.model, "claude")', (e) => {}],
  ['match-prefix', 'match(event, "API*")', (e) => {}],
  ['match-prefix-no', 'match(event, "Seat*")', (e) => {}],
  ['match-suffix', 'match(event, "*Call")', (e) => {}],
  ['match-suffix-no', 'match(event, "*call")', (e) => {}],
  ['match-props-prefix', 'match(properties.model, "gpt-*")', (e) => {}],
  ['match-props-suffix', 'match(properties.region, "*-1")', (e) => {}],
  ['match-props-missing', 'match(properties.nothing, "a*")', (e) => {}],
  ['match-props-num', 'match(properties.tokens, "12*")', (e) => {}],
  ['match-traits', 'match(traits.email, "*@acme.com")', (e) => { e.traits = { email: 'a@acme.com' } }],
  ['match-context', 'match(context.groupId, "ac*")', (e) => {}],
  ['match-userId', 'match(userId, "user-*")', (e) => {}],
  ['nmatch-prefix', '!match(event, "Seat*")', (e) => {}],
  ['nmatch-prefix-no', '!match(event, "API*")', (e) => {}],
  ['nmatch-suffix', '!match(properties.model, "*claude")', (e) => {}],
  ['nmatch-missing', '!match(properties.nothing, "a*")', (e) => {}]
]
for (const [n, sub, p] of FUNCS) add('fql', n, { subscription: sub, patch: p })

// and / or, one level of parentheses, as Segment's parser handles them
const COMBOS = [
  ['and-tt', 'type = "track" and event = "API Call"'],
  ['and-tf', 'type = "track" and event = "Other"'],
  ['and-3', 'type = "track" and event = "API Call" and properties.tokens > 100'],
  ['or-ft', 'type = "identify" or event = "API Call"'],
  ['or-ff', 'type = "identify" or event = "Other"'],
  ['or-3', 'event = "A" or event = "B" or event = "API Call"'],
  ['paren-and-or', 'type = "track" and (event = "Other" or event = "API Call")'],
  ['paren-and-or-no', 'type = "track" and (event = "Other" or event = "Else")'],
  ['paren-or-and', 'event = "Other" or (type = "track" and properties.plan = "pro")'],
  ['paren-only', '(type = "track")'],
  ['paren-fn', 'type = "track" and (contains(event, "Call") or match(event, "Seat*"))'],
  ['and-fn', 'contains(event, "API") and !contains(event, "Batch")'],
  ['and-null', 'type = "track" and properties.tokens != null'],
  ['and-null-no', 'type = "track" and properties.nothing != null'],
  ['or-null', 'properties.nothing = null or properties.tokens = 1'],
  ['and-num-range', 'properties.tokens >= 1000 and properties.tokens < 2000'],
  ['and-num-range-no', 'properties.tokens >= 1300 and properties.tokens < 2000'],
  ['and-traits-context', 'context.groupId = "acme" and userId != null']
]
for (const [n, sub] of COMBOS) add('fql', n, { subscription: sub })

// invalid subscriptions: both refuse them
add('fql', 'invalid-empty-op', { subscription: 'type =' })
add('fql', 'invalid-unclosed', { subscription: 'type = "track' })

/* ---------------------------------------------------------------- field */

// values for the string fields, through customer_id, event_type and
// transaction_id (each from $.properties.v)
const TEXT_VALUES = {
  str: 'acme-1',
  int: 123,
  neg: -42,
  float: 1.5,
  zero: 0,
  big: 1e21,
  huge: N('12345678901234567890'),
  small: 0.0000001,
  frac: 0.1,
  true: true,
  false: false,
  null: null,
  empty: '',
  space: ' ',
  obj: { a: 1 },
  arr1: ['acme'],
  arr1num: [7],
  arr1true: [true],
  arr1null: [null],
  arr1empty: [''],
  arr1nested: [['a']],
  arr1obj: [{ a: 1 }],
  arr2: ['a', 'b'],
  arr0: [],
  unicode: 'ça-été-😀'
}
for (const [vn, v] of Object.entries(TEXT_VALUES)) {
  add('field', `customer_id-${vn}`, {
    mapping: { customer_id: { '@path': '$.properties.v' } },
    patch: (e) => { e.properties.v = v }
  })
  add('field', `event_type-${vn}`, {
    mapping: { event_type: { '@path': '$.properties.v' } },
    patch: (e) => { e.properties.v = v }
  })
}
// transaction_id from values, each unique: the value is in an object keyed
// by case so that the text differs between cases
const TID_VALUES = {
  int: 900001, float: 900001.25, big: 9.00001e21, true: true, str: 'tid-str',
  null: null, empty: '', obj: { a: 1 }, arr1: ['tid-arr1'], arr2: ['x', 'y'], len128: 'x'.repeat(128), len129: 'y'.repeat(129),
  len128u: 'é'.repeat(128), len129u: 'é'.repeat(129), emoji64: '😀'.repeat(64), emoji65: '😀'.repeat(65)
}
for (const [vn, v] of Object.entries(TID_VALUES)) {
  add('field', `transaction_id-${vn}`, {
    mapping: { transaction_id: { '@path': '$.properties.tid' } },
    patch: (e) => { e.properties.tid = v }
  })
}
// missing fields (each mapped from a missing path)
for (const f of FIELDS) {
  add('field', `${f}-missing`, { mapping: { [f]: { '@path': '$.nothing.here' } } })
}
// properties: object, absent, null, empty string, array, string, number, nested
const PROPS = {
  object: { a: 1, b: 'x', c: [1, 2], d: { e: null } },
  empty: {},
  nulls: { a: null },
  bignum: { n: N('12345678901234567890'), m: N('1.50'), k: N('1e2') },
  decimal: { price: 1.5, tiny: 0.000001, exp: 2.5e-7 },
  unicode: { name: 'Zoë 😀', 'clé': 'välue' },
  keyorder: { zeta: 1, alpha: 2, mid: 3 },
  deep: { a: { b: { c: { d: [1, { e: true }] } } } }
}
for (const [pn, p] of Object.entries(PROPS)) {
  add('field', `properties-${pn}`, { patch: (e) => { e.properties = p } })
}
for (const [pn, p] of Object.entries({ null: null, emptystr: '', array: [1, 2], string: 'abc', number: 5, true: true })) {
  add('field', `properties-${pn}`, { patch: (e) => { e.properties = p } })
}
add('field', 'properties-absent', { patch: (e) => { delete e.properties } })
// literal fields
add('field', 'literal-all', {
  mapping: {
    transaction_id: { '@template': 'lit-{{messageId}}' },
    customer_id: 'cust-literal',
    event_type: 'literal_event',
    timestamp: '2024-02-01T00:00:00Z',
    properties: { fixed: 1, from: { '@path': '$.properties.plan' } }
  }
})
add('field', 'literal-number-customer', { mapping: { customer_id: 42 } })
add('field', 'literal-bool-event', { mapping: { event_type: false } })
add('field', 'literal-props-undefined-dropped', {
  mapping: { properties: { keep: 1, gone: { '@path': '$.nothing' }, nul: { '@path': '$.properties.nul' } } },
  patch: (e) => { e.properties.nul = null }
})

/* ------------------------------------------------------------ timestamp */

const TIMESTAMPS = {
  iso_z: '2024-03-01T10:15:30Z',
  iso_ms: '2024-03-01T10:15:30.123Z',
  iso_us: '2024-03-01T10:15:30.123456Z',
  iso_1digit: '2024-03-01T10:15:30.1Z',
  iso_offset: '2024-03-01T12:15:30+02:00',
  iso_offset_neg: '2024-03-01T05:15:30-05:00',
  iso_offset_nocolon: '2024-03-01T12:15:30+0200',
  iso_noz: '2024-03-01T10:15:30',
  iso_noz_ms: '2024-03-01T10:15:30.5',
  iso_nosec: '2024-03-01T10:15Z',
  iso_nosec_noz: '2024-03-01T10:15',
  iso_space: '2024-03-01 10:15:30',
  iso_space_z: '2024-03-01 10:15:30Z',
  iso_lower_t: '2024-03-01t10:15:30z',
  date: '2024-03-01',
  year: '2024',
  month: '2024-03',
  slash: '2024/03/01',
  slash_time: '2024/03/01 10:15:30',
  slash_time_nosec: '2024/03/01 10:15',
  rfc1123: 'Fri, 01 Mar 2024 10:15:30 GMT',
  rfc2822_offset: 'Fri, 01 Mar 2024 12:15:30 +0200',
  rfc2822_neg: 'Fri, 1 Mar 2024 05:15:30 -0500',
  rfc2822_noday: '01 Mar 2024 10:15:30 GMT',
  rfc2822_utc: 'Fri, 01 Mar 2024 10:15:30 UTC',
  h24: '2024-03-01T24:00:00Z',
  h24_eoy: '2023-12-31T24:00:00Z',
  leap: '2024-02-29T00:00:00Z',
  epoch_start: '1970-01-01T00:00:00.000Z',
  old: '1900-01-01T00:00:00Z',
  y2k_edge: '1999-12-31T23:59:59.9999Z',
  iso_offset_half: '2024-03-01T15:45:30.123+05:30',
  iso_offset_hours: '2024-03-01T15:15:30+05',
  iso_trailing_space: ' 2024-03-01T10:15:30Z ',
  iso_comma_frac: '2024-03-01T10:15:30,123Z',
  rfc1123_lower: 'fri, 01 mar 2024 10:15:30 gmt',
  // refused (Segment bills them at a wrong instant or refuses them too)
  feb30: '2024-02-30T00:00:00Z',
  feb29_nonleap: '2023-02-29',
  month13: '2024-13-01',
  hour25: '2024-03-01T25:00:00Z',
  min60: '2024-03-01T10:60:00Z',
  numeric_str: '1709288130000',
  numeric_short: '20240301',
  english: 'yesterday',
  english2: 'next friday',
  garbage: 'not a date',
  empty: '',
  space: '   ',
  y10000: '10000-01-01T00:00:00Z',
  future: '2999-01-01T00:00:00Z'
}
for (const [tn, t] of Object.entries(TIMESTAMPS)) {
  add('timestamp', tn, { patch: (e) => { e.timestamp = t } })
}
const TS_OTHER = {
  ms: 1625895431000,
  ms_frac: 1625895431123.9,
  ms_zero: 0,
  ms_neg: -1000,
  ms_float_small: 1625895431000.5,
  seconds: 1625895431,
  bool: true,
  obj: { a: 1 },
  arr: ['2024-03-01T10:15:30Z'],
  null: null
}
for (const [tn, t] of Object.entries(TS_OTHER)) {
  add('timestamp', tn, { patch: (e) => { e.timestamp = t } })
}

/* ------------------------------------------------------------ directive */

// each directive, in event_type (text) or properties (any value)
const D = (n, m, patch, field = 'properties') => add('directive', n, { mapping: { [field]: m }, patch })
D('path-whole', { '@path': '$.' })
D('path-props', { '@path': '$.properties' })
D('path-nested-dyn', { '@path': { '@template': '$.properties' } })
D('literal-obj', { '@literal': { a: 1, b: [true, null] } })
D('literal-directive-inside', { '@literal': { a: { '@path': '$.properties.plan' } } })
D('template-basic', { '@template': 'u={{userId}} p={{properties.plan}}' }, null, 'event_type')
D('template-missing', { '@template': 'x{{properties.nothing}}y' }, null, 'event_type')
D('template-number', { '@template': 't{{properties.tokens}}' }, null, 'event_type')
D('template-float', { '@template': '{{properties.f}}' }, (e) => { e.properties.f = 1.1 }, 'event_type')
D('template-bool', { '@template': '{{properties.b}}' }, (e) => { e.properties.b = false }, 'event_type')
D('template-null', { '@template': 'a{{properties.n}}b' }, (e) => { e.properties.n = null }, 'event_type')
D('template-obj', { '@template': '{{context.library}}' }, null, 'event_type')
D('template-arr', { '@template': '{{properties.l}}' }, (e) => { e.properties.l = [1, 'a', null, [2, 3]] }, 'event_type')
D('template-triple', { '@template': '{{{properties.plan}}}!' }, null, 'event_type')
D('template-dollar', { '@template': '{{$.properties.plan}}' }, null, 'event_type')
D('template-bracket', { '@template': "{{properties['plan']}}" }, null, 'event_type')
D('template-spaces', { '@template': '{{ properties.plan }}' }, null, 'event_type')
D('template-only-text', { '@template': 'constant' }, null, 'event_type')
D('template-big', { '@template': '{{properties.v}}' }, (e) => { e.properties.v = 1e21 }, 'event_type')
D('template-huge', { '@template': '{{properties.v}}' }, (e) => { e.properties.v = N('12345678901234567890') }, 'event_type')
D('template-small', { '@template': '{{properties.v}}' }, (e) => { e.properties.v = 1e-7 }, 'event_type')
D('template-exp', { '@template': '{{properties.v}}' }, (e) => { e.properties.v = 1.5e300 }, 'event_type')
D('template-dec', { '@template': '{{properties.v}}' }, (e) => { e.properties.v = 0.30000000000000004 }, 'event_type')
D('if-exists-then', { '@if': { exists: { '@path': '$.properties.plan' }, then: 'yes', else: 'no' } }, null, 'event_type')
D('if-exists-else', { '@if': { exists: { '@path': '$.properties.nothing' }, then: 'yes', else: 'no' } }, null, 'event_type')
D('if-exists-null', { '@if': { exists: { '@path': '$.properties.n' }, then: 'yes', else: 'no' } }, (e) => { e.properties.n = null }, 'event_type')
D('if-blank-empty', { '@if': { blank: { '@path': '$.properties.s' }, then: 'yes', else: 'no' } }, (e) => { e.properties.s = '' }, 'event_type')
D('if-blank-zero', { '@if': { blank: { '@path': '$.properties.s' }, then: 'yes', else: 'no' } }, (e) => { e.properties.s = 0 }, 'event_type')
D('if-blank-value', { '@if': { blank: { '@path': '$.properties.plan' }, then: 'yes', else: 'no' } }, null, 'event_type')
D('if-no-else', { '@if': { exists: { '@path': '$.properties.nothing' }, then: 'yes' } }, null, 'event_type')
D('if-then-path', { '@if': { exists: { '@path': '$.properties.plan' }, then: { '@path': '$.properties.model' } } }, null, 'event_type')
for (const [vn, v] of Object.entries({ ascii: 'Hello World', sharp_s: 'straße', ligature: 'ﬁne', greek: 'ΣΊΣΥΦΟΣ', turkish: 'İstanbul', armenian: 'և', dotted: 'ǅ', mixed: 'Ça Été', number: 5, emoji: 'a😀b' })) {
  D(`case-upper-${vn}`, { '@case': { operator: 'upper', value: { '@path': '$.properties.v' } } }, (e) => { e.properties.v = v }, 'event_type')
  D(`case-lower-${vn}`, { '@case': { operator: 'lower', value: { '@path': '$.properties.v' } } }, (e) => { e.properties.v = v }, 'event_type')
}
D('replace-first', { '@replace': { pattern: '-', replacement: '_', value: { '@path': '$.properties.region' } } }, null, 'event_type')
D('replace-global', { '@replace': { pattern: '-', replacement: '_', global: true, value: { '@path': '$.properties.region' } } }, null, 'event_type')
D('replace-ignorecase', { '@replace': { pattern: 'EU', replacement: 'us', ignorecase: true, value: { '@path': '$.properties.region' } } }, null, 'event_type')
D('replace-special', { '@replace': { pattern: '.', replacement: '$&$&', global: true, value: 'a.b.c' } }, null, 'event_type')
D('replace-two', { '@replace': { pattern: 'eu', replacement: 'EU', pattern2: 'west', replacement2: 'W', value: { '@path': '$.properties.region' } } }, null, 'event_type')
D('replace-number', { '@replace': { pattern: '1', replacement: 'x', value: { '@path': '$.properties.tokens' } } }, null, 'properties')
D('arraypath-basic', { '@arrayPath': ['$.properties.items', { sku: { '@path': '$.sku' }, n: { '@path': '$.qty' } }] }, (e) => { e.properties.items = [{ sku: 'a', qty: 1 }, { sku: 'b' }] })
D('arraypath-noshape', { '@arrayPath': ['$.properties.items'] }, (e) => { e.properties.items = [1, 2] })
D('arraypath-notarray', { '@arrayPath': ['$.properties.plan', { x: { '@path': '$.y' } }] })
D('arraypath-object', { '@arrayPath': ['$.properties.o', { x: { '@path': '$.y' } }] }, (e) => { e.properties.o = { y: 3 } })
D('json-encode', { '@json': { mode: 'encode', value: { '@path': '$.context' } } }, null, 'event_type')
D('json-encode-str', { '@json': { mode: 'encode', value: { '@path': '$.properties.plan' } } }, null, 'event_type')
D('json-encode-key-order', { '@json': { mode: 'encode', value: { '@path': '$.properties.o' } } }, (e) => { e.properties.o = { zeta: 1, alpha: { b: 2, a: 1 } } }, 'event_type')
D('json-decode', { '@json': { mode: 'decode', value: '{"a":[1,2,{"b":null}]}' } })
D('json-decode-bad', { '@json': { mode: 'decode', value: '{not json' } }, null, 'event_type')
D('json-encode-num', { '@json': { mode: 'encode', value: { '@path': '$.properties.v' } } }, (e) => { e.properties.v = 1e21 }, 'event_type')
D('flatten', { '@flatten': { value: { '@path': '$.properties.o' }, separator: '.' } }, (e) => { e.properties.o = { a: { b: 1, c: [1, 2] }, d: 'x' } })
D('flatten-sep', { '@flatten': { value: { '@path': '$.properties.o' }, separator: '_', omitArrays: true } }, (e) => { e.properties.o = { a: { b: 1, c: [1, 2] } } })
D('merge-right', { '@merge': { objects: [{ '@path': '$.properties' }, { plan: 'override', extra: 1 }], direction: 'right' } })
D('merge-left', { '@merge': { objects: [{ '@path': '$.properties' }, { plan: 'override', extra: 1 }], direction: 'left' } })
D('transform', { '@transform': { apply: { p: { '@path': '$.properties.plan' } }, mapping: { plan: { '@path': '$.p' } } } })
D('exclude-null', { '@excludeWhenNull': { a: { '@path': '$.properties.n' }, b: 1 } }, (e) => { e.properties.n = null })
D('object-nested-directives', { plan: { '@path': '$.properties.plan' }, n: { '@path': '$.properties.tokens' }, lit: [1, { '@path': '$.userId' }] })
D('metadata-ignored', { '@path': '$.properties', _metadata: { label: 'x' } })
D('invalid-two-directives', { '@path': '$.a', '@template': 'x' })
D('invalid-unknown', { '@foo': 'x' })
D('invalid-liquid', { '@liquid': '{{ properties.plan }}' })

/* ----------------------------------------------------------------- path */

const P = (n, path, patch, field = 'properties') => add('path', n, { mapping: { [field]: { '@path': path } }, patch })
P('no-dollar', 'properties')
P('index', '$.properties.items[0]', (e) => { e.properties.items = [{ a: 1 }, { b: 2 }] })
P('index-dot', '$.properties.items.1', (e) => { e.properties.items = [{ a: 1 }, { b: 2 }] })
P('index-out', '$.properties.items[5]', (e) => { e.properties.items = [{ a: 1 }] })
P('quoted-key', "$.properties['odd key']", (e) => { e.properties['odd key'] = { x: 1 } })
P('dquoted-key', '$.properties["odd key"]', (e) => { e.properties['odd key'] = { x: 2 } })
P('into-scalar', '$.properties.plan.x')
P('array-length', '$.properties.items.length', (e) => { e.properties.items = [1, 2, 3] }, 'event_type')
P('array-length-props', '$.properties.items.length', (e) => { e.properties.items = [1, 2, 3] }, 'customer_id')
P('string-length', '$.properties.plan.length', null, 'customer_id')
P('string-length-utf16', '$.properties.s.length', (e) => { e.properties.s = 'a😀é' }, 'customer_id')
P('object-length-own', '$.properties.o.length', (e) => { e.properties.o = { length: 'own' } }, 'customer_id')
P('object-length-none', '$.properties.o.length', (e) => { e.properties.o = { a: 1 } }, 'customer_id')
P('empty-array-length', '$.properties.items.length', (e) => { e.properties.items = [] }, 'customer_id')
P('bracket-length', "$.properties.items['length']", (e) => { e.properties.items = [1, 2] }, 'customer_id')
P('number-key', '$.properties.o.0', (e) => { e.properties.o = { 0: 'zero' } }, 'customer_id')

/* ----------------------------------------------------------------- text */

const T = (n, v) => add('text', n, {
  mapping: {
    customer_id: { '@path': '$.properties.v' },
    event_type: { '@template': 'e-{{properties.v}}' },
    properties: { v: { '@path': '$.properties.v' }, s: { '@template': '{{properties.v}}' } }
  },
  patch: (e) => { e.properties.v = v }
})
for (const [n, v] of Object.entries({
  int: 7, neg: -7, f: 2.5, negf: -0.125, e21: 1e21, e20: 1e20, big: N('12345678901234567890'), maxsafe: N('9007199254740993'),
  e_7: 1e-7, e_6: 0.000001, tiny: 5e-324, max: 1.7976931348623157e308, pi: 3.141592653589793, third: 0.3333333333333333,
  trailing: N('1.50'), long_digits: N('0.1000000000000000055511151231257827'), exp_neg: 1.5e-10, exp_pos: 2.5e25, negzero: N('-0')
})) T(n, v)

/* ---------------------------------------------------------------- event */

// the kinds of Segment event, with the preset and a catch-all subscription
const KINDS = {
  track: (e) => {},
  identify: (e) => { e.type = 'identify'; delete e.event; e.traits = { plan: 'pro' } },
  page: (e) => { e.type = 'page'; delete e.event; e.name = 'Home' },
  screen: (e) => { e.type = 'screen'; delete e.event; e.name = 'Settings' },
  group: (e) => { e.type = 'group'; delete e.event; e.groupId = 'acme'; e.traits = { seats: 3 } },
  alias: (e) => { e.type = 'alias'; delete e.event; e.previousId = 'p1' }
}
for (const [k, p] of Object.entries(KINDS)) {
  add('event', `${k}-preset`, { patch: p })
  add('event', `${k}-any`, {
    subscription: `type = "${k}"`,
    mapping: { event_type: { '@template': '{{type}}-{{name}}{{event}}' }, customer_id: { '@path': '$.userId' } },
    patch: p
  })
  add('event', `${k}-group-top`, {
    subscription: `type = "${k}"`,
    mapping: { event_type: { '@path': '$.type' }, customer_id: { '@path': '$.groupId' } },
    patch: p
  })
}
add('event', 'track-groupid-top-only', { patch: (e) => { delete e.context.groupId; e.groupId = 'acme' } })
add('event', 'track-no-context', { patch: (e) => { delete e.context } })
add('event', 'track-no-messageid', { patch: (e) => { delete e.messageId } })
add('event', 'track-no-timestamp', { patch: (e) => { delete e.timestamp } })
add('event', 'track-groupid-array', { patch: (e) => { e.context.groupId = ['acme'] } })
add('event', 'track-groupid-number', { patch: (e) => { e.context.groupId = 314 } })
add('event', 'track-event-number', { patch: (e) => { e.event = 2024 } })
add('event', 'track-extra-keys', { patch: (e) => { e.integrations = { All: true }; e.sentAt = '2024-03-01T10:15:31Z'; e.receivedAt = '2024-03-01T10:15:32Z' } })

// JSON text of a value of the corpus, N() numbers written as given.
function toJson(value) {
  const text = JSON.stringify(value, (k, v) =>
    v && typeof v === 'object' && typeof v.__raw === 'string' ? '\u0000NUM:' + v.__raw + '\u0000' : v)
  return text.replace(/"\\u0000NUM:([-+.eE0-9]+)\\u0000"/g, '$1')
}

// The corpus as JSON text.
function casesJson() {
  return toJson(cases)
}

// The corpus as SQL for our side: one call of conf_case() (ours.pl defines
// it) per case, every text dollar-quoted.
function casesSql() {
  const q = (s) => {
    if (s.includes('$mtc$')) throw new Error('case text holds the quote tag $mtc$')
    return '$mtc$' + s + '$mtc$'
  }
  return cases.map((c) => `SELECT conf_case(${q(c.id)}, ${q(c.subscription)}, ${q(toJson(c.mapping))}, ${q(toJson(c.event))});`).join('\n') + '\n'
}

/* ---------------------------------------------------------------- quirk */

// well-formed FQL that Segment's parser misreads (we read it as written)
const QUIRKS = [
  ['and-or-mixed', 'type = "identify" and event = "Other" or event = "API Call"'],
  ['or-and-mixed', 'event = "API Call" or type = "identify" and event = "Other"'],
  ['not-word', 'not event = "API Call"'],
  ['not-paren', '!(event = "API Call")'],
  ['nested-parens', 'type = "track" and ((event = "Other") or (event = "API Call"))'],
  ['any-path', 'messageId != null'],
  ['any-path-anonymous', 'anonymousId = "anon-1"'],
  ['glob-middle', 'match(event, "A*l")'],
  ['glob-none', 'match(event, "API Call")'],
  ['glob-question', 'match(event, "API Cal?")'],
  ['event-number', 'event = 2024'],
  ['string-escape', 'properties.q = "say \\"hi\\""']
]
for (const [n, sub] of QUIRKS) add('quirk', n, { subscription: sub, patch: (e) => { e.properties.q = 'say "hi"' } })
add('quirk', 'event-number-match', { subscription: 'event = 2024', patch: (e) => { e.event = '2024' } })

module.exports = { cases, casesJson, casesSql, PRESET }

// node corpus.js [--sql] [OUT]: the corpus as JSON (or as SQL) into OUT or stdout
if (require.main === module) {
  const args = process.argv.slice(2)
  const sql = args[0] === '--sql'
  if (sql) args.shift()
  const text = sql ? casesSql() : casesJson() + '\n'
  if (args[0]) require('fs').writeFileSync(args[0], text)
  else process.stdout.write(text)
  console.error(`corpus: ${cases.length} cases`)
}
