#!/usr/bin/env node
// test/conformance/segment.js: run Segment's own Metronome (Actions)
// destination on every case of the corpus and record what it would send.
//
//   node segment.js OUT.json
//
// Each case (see corpus.js) is one event and one "Send Event" subscription
// (FQL text and the five field mappings).  The case goes through Segment's
// production entry point, Destination.onEvent(event, {apiToken,
// subscription}), exactly as Segment's platform calls it; nock intercepts
// the request to Metronome and keeps its body text.  The outcome of a case:
//
//   {"outcome": "sent", "body": "<the JSON text of the one event sent>"}
//   {"outcome": "unmatched"}          the subscription does not match
//   {"outcome": "invalid", "error"}   the subscription or a mapping is invalid
//   {"outcome": "error", "error"}     the event was refused (validation)
//
// OUT.json maps case ids to outcomes.  No network is used: nock refuses
// every connection it does not intercept.
'use strict'

const fs = require('fs')
const path = require('path')
const nock = require('nock')

const destination = require('@segment/action-destinations/dist/destinations/metronome').default
const { Destination } = require('@segment/actions-core')
const cases = JSON.parse(require('./corpus').casesJson())

const INGEST = 'https://api.metronome.com'
const dest = new Destination(destination)

// One case through onEvent; resolves to its outcome.
async function runCase(c) {
  let body = null
  nock.cleanAll()
  nock(INGEST)
    .post('/v1/ingest', (b) => true)
    .reply(function (uri, reqBody) {
      body = typeof reqBody === 'string' ? reqBody : JSON.stringify(reqBody)
      return [200, '']
    })
  const subscription = { subscribe: c.subscription, partnerAction: 'sendEvent', mapping: c.mapping }
  let results
  try {
    results = await dest.onEvent(c.event, { apiToken: 'conformance-token', subscription })
  } catch (err) {
    const msg = String(err && err.message ? err.message : err).trim().split('\n')[0]
    // a mapping refused by mapping-kit's validator: invalid, as our INSERT refuses it
    if (err && err.stack && /mapping-kit[\\/]validate/.test(err.stack)) return { outcome: 'invalid', error: msg }
    return { outcome: 'error', error: msg }
  }
  const out = results && results[0] && results[0].output
  if (body !== null) {
    // the request body is a JSON array of exactly one event: keep its text
    const t = body.trim()
    if (!t.startsWith('[') || !t.endsWith(']')) return { outcome: 'error', error: 'unexpected body ' + t }
    return { outcome: 'sent', body: t.slice(1, -1) }
  }
  if (out === 'not subscribed') return { outcome: 'unmatched' }
  if (typeof out === 'string' && (out.startsWith('Invalid subscription') || out.startsWith('Failed to validate subscription')))
    return { outcome: 'invalid', error: out }
  return { outcome: 'error', error: 'no request and output ' + JSON.stringify(results) }
}

async function main() {
  const outFile = process.argv[2]
  if (!outFile) {
    console.error('usage: node segment.js OUT.json')
    process.exit(2)
  }
  nock.disableNetConnect()
  const result = {}
  const t0 = Date.now()
  for (const c of cases) result[c.id] = await runCase(c)
  fs.writeFileSync(outFile, JSON.stringify(result, null, 1) + '\n')
  const counts = {}
  for (const id of Object.keys(result)) counts[result[id].outcome] = (counts[result[id].outcome] || 0) + 1
  console.log(`segment: ${cases.length} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(counts)}`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
