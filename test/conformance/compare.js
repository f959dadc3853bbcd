#!/usr/bin/env node
// test/conformance/compare.js: Segment's outcomes against ours, case by case.
//
//   node compare.js SEGMENT.json OURS.json ALLOWLIST.json
//
// SEGMENT.json is segment.js's output, OURS.json ours.pl's.  A case's
// outcome on our side is read three ways, and the three must agree:
//   preview   metronome_map(event): no row (unmatched), a row with an error,
//             or a row with the five fields;
//   trigger   the outbox row (or the metronome_rejected row) the trigger wrote;
//   wire      the event as the worker sent it to the mock Metronome.
// Outcomes: sent (with the event sent), unmatched, invalid (the subscription
// or a mapping refused), error (the event refused).  Two sent events are
// compared field by field after parsing, numbers by their digits: the same
// digits is identical, the same double with other digits ("1.50" and 1.5)
// is a "digits" difference, anything else a value difference.  Key order
// is not compared (jsonb keeps keys sorted; Metronome reads an object).
//
// Every difference has a kind: "outcome:<segment>-><ours>", "value:<field>"
// or "digits:<field>".  allowlist.json lists the allowed ones: entries
// {name, cases (a regular expression on case ids), kinds (one on kinds),
// example, reason}; a difference is allowed when an entry matches both
// its case id and its kind.  Prints the figures, each difference not
// allowed (with both sides), entries that matched nothing, and the line
// "CONFORMANCE-SUMMARY passed=P failed=F".  Exits 1 when F > 0.
'use strict'

const fs = require('fs')

// A JSON parser that keeps the text of numbers: {t: 'num', s: '1.50'}.
function parseJson(text) {
  let i = 0
  const ws = () => { while (i < text.length && ' \t\r\n'.includes(text[i])) i++ }
  function value() {
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      const o = {}
      ws()
      if (text[i] === '}') { i++; return o }
      for (;;) {
        ws()
        const k = str()
        ws()
        if (text[i++] !== ':') throw new Error('expected : at ' + i)
        o[k] = value()
        ws()
        const d = text[i++]
        if (d === '}') return o
        if (d !== ',') throw new Error('expected , or } at ' + i)
      }
    }
    if (c === '[') {
      i++
      const a = []
      ws()
      if (text[i] === ']') { i++; return a }
      for (;;) {
        a.push(value())
        ws()
        const d = text[i++]
        if (d === ']') return a
        if (d !== ',') throw new Error('expected , or ] at ' + i)
      }
    }
    if (c === '"') return str()
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/.exec(text.slice(i, i + 400))
    if (m && m[0].length > 0) {
      i += m[0].length
      return { t: 'num', s: m[0] }
    }
    for (const [w, v] of [['true', true], ['false', false], ['null', null]]) {
      if (text.startsWith(w, i)) { i += w.length; return v }
    }
    throw new Error('bad JSON at ' + i + ': ' + text.slice(i, i + 20))
  }
  function str() {
    const start = i
    if (text[i] !== '"') throw new Error('expected string at ' + i)
    i++
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1
    i++
    return JSON.parse(text.slice(start, i))
  }
  const v = value()
  ws()
  if (i !== text.length) throw new Error('trailing text at ' + i)
  return v
}
const isNum = (v) => v !== null && typeof v === 'object' && v.t === 'num' && typeof v.s === 'string'

// Compare two parsed values: 'same', 'digits' or 'differ'.
function cmp(a, b) {
  if (isNum(a) && isNum(b)) {
    if (a.s === b.s) return 'same'
    return Number(a.s) === Number(b.s) ? 'digits' : 'differ'
  }
  if (isNum(a) || isNum(b)) return 'differ'
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return 'differ'
    let r = 'same'
    for (let k = 0; k < a.length; k++) {
      const c = cmp(a[k], b[k])
      if (c === 'differ') return c
      if (c === 'digits') r = c
    }
    return r
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort()
    const kb = Object.keys(b).sort()
    if (ka.join('\u0000') !== kb.join('\u0000')) return 'differ'
    let r = 'same'
    for (const k of ka) {
      const c = cmp(a[k], b[k])
      if (c === 'differ') return c
      if (c === 'digits') r = c
    }
    return r
  }
  return a === b ? 'same' : 'differ'
}

// Split a JSON array text into the texts of its elements.
function splitArray(text) {
  const out = []
  let depth = 0
  let start = -1
  let inStr = false
  for (let k = 0; k < text.length; k++) {
    const c = text[k]
    if (inStr) {
      if (c === '\\') k++
      else if (c === '"') inStr = false
      continue
    }
    if (c === '"') inStr = true
    else if (c === '[' || c === '{') {
      if (depth === 1 && start < 0) start = k
      depth++
    } else if (c === ']' || c === '}') {
      depth--
      if (depth === 1 && start >= 0 && c === '}') { out.push(text.slice(start, k + 1)); start = -1 }
    }
  }
  return out
}

const FIELDS = ['transaction_id', 'customer_id', 'timestamp', 'event_type', 'properties']

function main() {
  const [segFile, oursFile, allowFile] = process.argv.slice(2)
  if (!allowFile) {
    console.error('usage: node compare.js SEGMENT.json OURS.json ALLOWLIST.json')
    process.exit(2)
  }
  const seg = JSON.parse(fs.readFileSync(segFile, 'utf8'))
  const ours = parseJson(fs.readFileSync(oursFile, 'utf8'))
  const allow = JSON.parse(fs.readFileSync(allowFile, 'utf8')).entries
  for (const a of allow) {
    for (const k of ['name', 'cases', 'kinds', 'example', 'reason']) {
      if (typeof a[k] !== 'string' || a[k] === '') throw new Error(`allow-list entry ${JSON.stringify(a)} lacks "${k}"`)
    }
    a.casesRe = new RegExp('^(?:' + a.cases + ')$')
    a.kindsRe = new RegExp('^(?:' + a.kinds + ')$')
    a.used = 0
  }

  // the events on the wire, by transaction_id
  const wire = new Map()
  for (const body of ours.bodies) {
    for (const t of splitArray(body)) {
      const ev = parseJson(t)
      wire.set(ev.transaction_id, ev)
    }
  }

  const ids = Object.keys(seg)
  const fig = { cases: ids.length, identical: 0, allowed: 0, failed: 0 }
  const groups = {}
  const failures = []
  const allowedBy = {}

  for (const id of ids) {
    const s = seg[id]
    const o = ours.cases[id]
    const group = id.split('-')[0]
    groups[group] = groups[group] || { cases: 0, identical: 0, allowed: 0, failed: 0 }
    groups[group].cases++
    const diffs = []
    const internal = []
    let oursOutcome = null
    let oursEvent = null
    if (!o) internal.push('no result on our side')
    else if (o.insert_error !== null) oursOutcome = 'invalid'
    else {
      const pv = o.preview || []
      const ob = o.outbox || []
      const rj = o.rejected || []
      if (o.trigger_error !== null) internal.push('the trigger failed: ' + o.trigger_error)
      if (pv.length > 1) internal.push('preview gave several rows')
      if (pv.length === 0) {
        oursOutcome = 'unmatched'
        if (ob.length || rj.length) internal.push('the preview matched nothing but the trigger wrote a row')
      } else if (pv[0].error !== null) {
        oursOutcome = 'error'
        if (ob.length || rj.length !== 1) internal.push('the preview failed but the trigger did not reject the event once')
      } else {
        oursOutcome = 'sent'
        const p = pv[0]
        oursEvent = { transaction_id: p.transaction_id, customer_id: p.customer_id, timestamp: p.timestamp, event_type: p.event_type, properties: p.properties }
        if (ob.length !== 1 || rj.length) internal.push('the preview mapped the event but the trigger wrote ' + ob.length + ' outbox and ' + rj.length + ' rejected rows')
        else {
          const r = ob[0]
          for (const f of FIELDS) {
            if (cmp(r[f], oursEvent[f]) !== 'same') internal.push(`outbox ${f} differs from the preview`)
          }
          const w = wire.get(p.transaction_id)
          if (r.status !== 'sent') internal.push(`outbox row ${r.status}: ${r.last_error}`)
          else if (!w) internal.push('no event with this transaction_id on the wire')
          else {
            for (const f of FIELDS) {
              if (cmp(w[f], oursEvent[f]) !== 'same') internal.push(`wire ${f} differs from the preview`)
            }
            oursEvent = w
          }
        }
      }
    }
    if (oursOutcome !== null && oursOutcome !== s.outcome) diffs.push(`outcome:${s.outcome}->${oursOutcome}`)
    else if (oursOutcome === 'sent') {
      const se = parseJson(s.body)
      for (const f of FIELDS) {
        const c = cmp(se[f], oursEvent[f])
        if (c !== 'same') diffs.push(`${c === 'digits' ? 'digits' : 'value'}:${f}`)
      }
    }

    let ok = internal.length === 0
    const unallowed = []
    for (const d of diffs) {
      const a = allow.find((e) => e.casesRe.test(id) && e.kindsRe.test(d))
      if (a) {
        a.used++
        allowedBy[a.name] = (allowedBy[a.name] || 0) + 1
      } else unallowed.push(d)
    }
    if (unallowed.length) ok = false
    if (!ok) {
      fig.failed++
      groups[group].failed++
      failures.push({ id, internal, unallowed, segment: s, ours: oursOutcome === 'sent' ? oursEvent : o })
    } else if (diffs.length) {
      fig.allowed++
      groups[group].allowed++
    } else {
      fig.identical++
      groups[group].identical++
    }
  }

  console.log(`conformance: ${fig.cases} cases: ${fig.identical} identical, ${fig.allowed} with allowed differences, ${fig.failed} with differences not allowed`)
  for (const [g, f] of Object.entries(groups)) {
    console.log(`  ${g.padEnd(10)} ${String(f.cases).padStart(4)} cases ${String(f.identical).padStart(4)} identical ${String(f.allowed).padStart(4)} allowed ${String(f.failed).padStart(4)} not allowed`)
  }
  for (const a of allow) console.log(`  allowed: ${String(a.used).padStart(4)} × ${a.name}`)
  const show = process.env.CONFORMANCE_SHOW ? Number(process.env.CONFORMANCE_SHOW) : 40
  for (const f of failures.slice(0, show)) {
    console.log(`DIFFERENCE ${f.id}: ${[...f.unallowed, ...f.internal].join('; ')}`)
    console.log(`  segment: ${JSON.stringify(f.segment)}`)
    console.log(`  ours:    ${JSON.stringify(f.ours, (k, v) => (isNum(v) ? '#' + v.s : v))}`)
  }
  if (failures.length > show) console.log(`... and ${failures.length - show} more (CONFORMANCE_SHOW=N shows N)`)
  const unused = allow.filter((a) => a.used === 0)
  for (const a of unused) console.log(`allow-list entry "${a.name}" matched no case: remove it or add its case`)
  const failed = fig.failed + unused.length
  console.log(`CONFORMANCE-SUMMARY passed=${fig.cases - fig.failed} failed=${failed}`)
  process.exit(failed > 0 ? 1 : 0)
}

main()
