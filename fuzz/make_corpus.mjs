#!/usr/bin/env node
// Writes the committed seed corpus of the fuzz targets (fuzz/corpus/*):
// y-websocket frames made by the STOCK Yjs client libraries (yjs, y-protocols,
// lib0, as pinned in tests/node), and command JSON for the state machine.
//
//   npm ci --prefix tests/node && node fuzz/make_corpus.mjs
//
// Deterministic: fixed client ids, no clocks or randomness in the content.
// The room seed (client 1 writing SEED_TEXT into `body`) must match
// SEED_CLIENT / SEED_TEXT in fuzz_targets/session.rs, so that seeds that edit
// the seed text refer to characters the fuzzed room has.

import { createRequire } from 'node:module'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(join(here, '../tests/node/package.json'))
const Y = require('yjs')
const sync = require('y-protocols/sync')
const awarenessProtocol = require('y-protocols/awareness')
const encoding = require('lib0/encoding')

const SEED_CLIENT = 1
const SEED_TEXT = '# INC-1: Checkout API returning 502s\n\n## Summary\n\n' +
  'Errors since 09:00 UTC.\n\n## Timeline\n\n- 09:02 paged\n'

// ---------------------------------------------------------------------------
// y-websocket frames, as y-websocket's provider builds them

const MSG_SYNC = 0
const MSG_AWARENESS = 1
const MSG_AUTH = 2
const MSG_QUERY_AWARENESS = 3
const MSG_SAVED = 100

const frame = (write) => {
  const encoder = encoding.createEncoder()
  write(encoder)
  return encoding.toUint8Array(encoder)
}
const step1 = (doc) => frame(e => { encoding.writeVarUint(e, MSG_SYNC); sync.writeSyncStep1(e, doc) })
const step2 = (doc, sv) => frame(e => { encoding.writeVarUint(e, MSG_SYNC); sync.writeSyncStep2(e, doc, sv) })
const updateFrame = (update) => frame(e => { encoding.writeVarUint(e, MSG_SYNC); sync.writeUpdate(e, update) })
const awarenessFrame = (awareness, clients) => frame(e => {
  encoding.writeVarUint(e, MSG_AWARENESS)
  encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
})
const queryAwareness = () => Uint8Array.of(MSG_QUERY_AWARENESS)
const authFrame = (reason) => frame(e => {
  encoding.writeVarUint(e, MSG_AUTH)
  encoding.writeVarUint(e, 0)
  encoding.writeVarString(e, reason)
})
const savedOptIn = () => Uint8Array.of(MSG_SAVED, 0)
const concat = (...parts) => Uint8Array.from(parts.flatMap(p => [...p]))

// ---------------------------------------------------------------------------
// Documents and clients

const seedDoc = () => {
  const doc = new Y.Doc()
  doc.clientID = SEED_CLIENT
  doc.getText('body').insert(0, SEED_TEXT)
  return doc
}
const roomState = Y.encodeStateAsUpdate(seedDoc())
const roomSV = Y.encodeStateVector(seedDoc())

/** A stock client with `clientID`, synced with the room, recording its updates. */
function client (clientID, name, color) {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const fresh = step1(doc) // sent before it has anything
  Y.applyUpdate(doc, roomState)
  const updates = []
  doc.on('update', u => updates.push(u))
  const awareness = new awarenessProtocol.Awareness(doc)
  awareness.setLocalStateField('user', { name, color })
  return { doc, fresh, updates, awareness, text: doc.getText('body') }
}

// ---------------------------------------------------------------------------
// Session records: header (connection | 4 = leave after), length, frame

function records (list) {
  const out = []
  for (const [header, bytes] of list) {
    out.push(header)
    if (bytes.length < 255) {
      out.push(bytes.length)
    } else {
      out.push(0xff, bytes.length & 0xff, bytes.length >> 8)
    }
    out.push(...bytes)
  }
  return Uint8Array.from(out)
}
const EDITOR_A = 0
const EDITOR_B = 1
const VIEWER = 2
const LEAVE = 4

const corpus = { frame_decoder: {}, session: {}, command_json: {} }

// An editor joins, answers the greeting, announces itself and types.
{
  const a = client(42, 'Alice', '#30bced')
  const text = a.text
  text.insert(text.length, '- 09:10 rolled back deploy 4411\n')
  text.insert(text.length, '- 09:12 error rate falling\n')
  a.awareness.setLocalStateField('cursor', { anchor: 10, head: 12 })
  corpus.session['editor_types'] = records([
    [EDITOR_A, a.fresh],
    [EDITOR_A, step2(new Y.Doc(), roomSV)], // the stock empty answer
    [EDITOR_A, awarenessFrame(a.awareness, [42])],
    [EDITOR_A, updateFrame(a.updates[0])],
    [EDITOR_A, updateFrame(a.updates[1])],
    [EDITOR_A, awarenessFrame(a.awareness, [42])],
    [EDITOR_A | LEAVE, queryAwareness()]
  ])
  corpus.frame_decoder['sync_step1_empty'] = a.fresh
  corpus.frame_decoder['sync_step1'] = step1(a.doc)
  corpus.frame_decoder['sync_step2'] = step2(a.doc, roomSV)
  corpus.frame_decoder['update'] = updateFrame(a.updates[0])
  corpus.frame_decoder['awareness'] = awarenessFrame(a.awareness, [42])
  corpus.frame_decoder['several_messages'] = concat(
    updateFrame(a.updates[1]), queryAwareness(), savedOptIn(), awarenessFrame(a.awareness, [42]))
}

// Rich content: deletions of seed text, formatting, embeds, maps, arrays,
// XML, binary and every kind of JSON-ish value. (No subdocument: see
// corpus/session/regression-subdoc-leak.)
{
  const a = client(42, 'Alice', '#30bced')
  const { doc, text } = a
  text.delete(2, 6) // part of the seed's "INC-1:"
  text.format(0, 10, { bold: true, color: '#ff0000' })
  text.insertEmbed(5, { image: 'graph.png' })
  const meta = doc.getMap('meta')
  doc.transact(() => {
    meta.set('severity', 'sev2')
    meta.set('numbers', [0, -1, 2 ** 31, -(2 ** 53), 1.5, -0.25, 1e300])
    meta.set('flags', { on: true, off: false, none: null, nested: { deep: [[['x']]] } })
    meta.set('big', 2n ** 62n)
    meta.set('bytes', Uint8Array.of(0, 1, 2, 255))
    meta.set('undefined', undefined)
  })
  const checklist = doc.getArray('checklist')
  checklist.push(['rollback', 'verify'])
  const inner = new Y.Map()
  checklist.push([inner])
  inner.set('owner', 'Bob')
  const nestedText = new Y.Text('nested')
  meta.set('text', nestedText)
  nestedText.insert(0, '> ')
  const xml = doc.getXmlFragment('prosemirror')
  const paragraph = new Y.XmlElement('paragraph')
  paragraph.setAttribute('align', 'left')
  xml.insert(0, [paragraph, new Y.XmlText('tail')])
  paragraph.insert(0, [new Y.XmlText('hello')])
  meta.delete('undefined')
  checklist.delete(0, 1)
  corpus.session['rich_content'] = records(a.updates.map(u => [EDITOR_A, updateFrame(u)]))
  const whole = Y.encodeStateAsUpdate(doc, roomSV)
  corpus.session['rich_content_merged'] = records([
    [EDITOR_A, step2(doc, roomSV)],
    [EDITOR_A, a.fresh]
  ])
  corpus.frame_decoder['rich_update'] = updateFrame(whole)
}

// Two editors edit the same place concurrently; one's updates arrive out of
// order (the second is pending until the first arrives); then an undo-like
// deletion of the other's text.
{
  const a = client(42, 'Alice', '#30bced')
  const b = client(43, 'Bob', '#6eeb83')
  a.text.insert(40, 'AAA')
  b.text.insert(40, 'BBB')
  b.text.insert(43, 'bbb')
  Y.applyUpdate(b.doc, a.updates[0])
  const seen = b.updates.length
  b.text.delete(40, 6)
  corpus.session['concurrent_out_of_order'] = records([
    [EDITOR_A, updateFrame(a.updates[0])],
    [EDITOR_B, awarenessFrame(b.awareness, [43])],
    [EDITOR_B, updateFrame(b.updates[1])], // pending: needs b.updates[0]
    [EDITOR_B, updateFrame(b.updates[0])],
    [EDITOR_B, updateFrame(b.updates[seen])],
    [EDITOR_A, step1(a.doc)],
    [EDITOR_A | LEAVE, updateFrame(a.updates[0])] // a duplicate: changes nothing
  ])
}

// A viewer syncs, announces itself (ignored), tries to edit (denied) and asks
// for awareness; an editor meanwhile opts in to "saved" acknowledgements.
{
  const v = client(77, 'Vera', '#ee6352')
  v.text.insert(0, 'viewer edit ')
  const a = client(42, 'Alice', '#30bced')
  a.text.insert(0, 'x')
  corpus.session['viewer_denied'] = records([
    [VIEWER, v.fresh],
    [VIEWER, step2(new Y.Doc(), roomSV)],
    [VIEWER, awarenessFrame(v.awareness, [77])],
    [VIEWER, updateFrame(v.updates[0])],
    [VIEWER, queryAwareness()],
    [EDITOR_A, savedOptIn()],
    [EDITOR_A, concat(updateFrame(a.updates[0]), savedOptIn())],
    [VIEWER | LEAVE, step1(v.doc)]
  ])
  corpus.frame_decoder['auth_reason'] = authFrame('read-only: viewers cannot edit this incident')
  corpus.frame_decoder['query_awareness'] = queryAwareness()
  corpus.frame_decoder['saved_opt_in'] = savedOptIn()
}

// Awareness comings and goings: a state update, an explicit removal (null at
// the same clock), a state for someone else's client id, and a re-announce.
{
  const a = client(42, 'Alice', '#30bced')
  const announce = awarenessFrame(a.awareness, [42])
  a.awareness.setLocalStateField('cursor', { anchor: 1, head: 1 })
  const moved = awarenessFrame(a.awareness, [42])
  a.awareness.setLocalState(null)
  const gone = awarenessFrame(a.awareness, [42])
  a.awareness.setLocalStateField('user', { name: 'Alice again', color: '#30bced' })
  const back = awarenessFrame(a.awareness, [42])
  // Someone else's client id (1001 is present in the fuzzed room at clock 3):
  // four state changes make clock 4.
  const otherDoc = new Y.Doc()
  otherDoc.clientID = 1001
  const other = new awarenessProtocol.Awareness(otherDoc)
  other.setLocalStateField('user', { name: 'Not Alice', color: '#000000' })
  other.setLocalStateField('user', { name: 'Not Alice', color: '#000001' })
  other.setLocalStateField('user', { name: 'Not Alice', color: '#000002' })
  other.setLocalStateField('user', { name: 'Not Alice', color: '#000003' })
  corpus.session['awareness_lifecycle'] = records([
    [EDITOR_A, announce],
    [EDITOR_A, moved],
    [EDITOR_A, gone],
    [EDITOR_B, awarenessFrame(other, [1001])],
    [EDITOR_A, back],
    [EDITOR_A | LEAVE, queryAwareness()],
    [EDITOR_B | LEAVE, queryAwareness()]
  ])
}

// ---------------------------------------------------------------------------
// Command JSON: scenario byte, then (caller byte, command JSON)...
// Callers: '0' Alice, '1' Bob, '2' Carol, '3' Dave, '4' Erin (responders),
// '5' Adam (admin), '6' Vera (viewer), '7' the timer; each moves the clock 6
// minutes. 0x7f is the timer after 15 minutes. In scenario 2 the pending
// planning offer is handoff 8, the change is 6 and the exit criterion 5.

const person = (id, name) => ({ id, name })
const commands = (scenario, steps) =>
  Buffer.concat([Buffer.from(scenario), ...steps.map(([caller, command]) =>
    Buffer.concat([Buffer.from([caller.charCodeAt ? caller.charCodeAt(0) : caller]), Buffer.from(JSON.stringify(command))]))])

corpus.command_json['declare_and_staff'] = commands('0', [
  ['0', { type: 'declare', title: 'Search is down', severity: 'sev1', criteria: { needs_other_team: true, customer_visible: true, unresolved_after_hour: false }, summary: 'No results since 10:00' }],
  ['0', { type: 'assign_role', role: 'operations_lead', to: person('bob', 'Bob') }],
  ['0', { type: 'add_responder', responder: person('dave', 'Dave'), assignment: 'index rebuild' }],
  ['1', { type: 'record_change', what: 'failed over to replica', why: 'primary unhealthy', revert: 'fail back' }],
  ['4', { type: 'post_note', text: 'customers report timeouts' }]
])
corpus.command_json['handoff_accepted'] = commands('2', [
  ['3', { type: 'accept_handoff', handoff: 8 }],
  ['3', { type: 'mark_change_reverted', change: 6 }],
  ['0', { type: 'set_exit_criterion', criterion: 5, met: true }],
  ['0', { type: 'set_status', status: 'mitigated' }],
  ['0', { type: 'set_status', status: 'resolved' }],
  ['0', { type: 'set_status', status: 'closed' }]
])
corpus.command_json['close_and_reopen'] = commands('3', [
  ['0', { type: 'set_status', status: 'closed' }],
  ['0', { type: 'post_note', text: 'too late' }],
  ['5', { type: 'reopen', reason: 'errors are back' }],
  ['7', { type: 'tick' }]
])
corpus.command_json['emergency'] = commands('2', [
  ['5', { type: 'assume_role', role: 'incident_commander', reason: 'Alice is unreachable' }],
  ['5', { type: 'force_assign_role', role: 'operations_lead', to: person('erin', 'Erin'), reason: 'Bob is off shift' }],
  ['1', { type: 'record_change', what: 'too late', revert: 'n/a' }]
])
corpus.command_json['timer'] = Buffer.concat([
  Buffer.from('2'),
  Buffer.from([0x7f]), Buffer.from(JSON.stringify({ type: 'tick' })),
  Buffer.from([0x7f]), Buffer.from(JSON.stringify({ type: 'tick' })),
  Buffer.from('2'), Buffer.from(JSON.stringify({ type: 'pin_status', summary: 'Still rolling back', next_update_by: '2025-03-14T11:00:00+01:00' }))
])
corpus.command_json['command_handoff'] = commands('2', [
  ['0', { type: 'set_next_commander', next: person('erin', 'Erin') }],
  ['0', { type: 'offer_handoff', role: 'incident_commander', to: person('erin', 'Erin'), notes: 'going off shift' }],
  ['4', { type: 'accept_handoff', handoff: 10 }],
  ['3', { type: 'decline_handoff', handoff: 8, reason: 'on call elsewhere' }],
  ['4', { type: 'set_severity', severity: 'sev1' }]
])
corpus.command_json['responders_and_refusals'] = commands('2', [
  ['2', { type: 'add_responder', responder: person('erin', 'Erin'), assignment: 'status page' }],
  ['1', { type: 'remove_responder', responder: 'dave' }],
  ['6', { type: 'post_note', text: 'a viewer tries' }],
  ['0', { type: 'cancel_handoff', handoff: 8 }],
  ['0', { type: 'waive_change', change: 6, reason: 'keeping the rollback' }],
  ['0', { type: 'assign_role', role: 'planning_lead', to: person('system', 'Command Post') }],
  ['0', { type: 'set_next_commander' }]
])
corpus.command_json['resolve_with_override'] = commands('1', [
  ['0', { type: 'set_severity', severity: 'sev3' }],
  ['0', { type: 'add_exit_criterion', text: 'p99 latency under 300 ms' }],
  ['0', { type: 'set_status', status: 'resolved', override_reason: 'customer impact is over' }],
  ['0', { type: 'set_status', status: 'closed' }]
])

// ---------------------------------------------------------------------------

for (const [target, files] of Object.entries(corpus)) {
  // Overwrites its own seeds only: regression inputs added by hand stay.
  const dir = join(here, 'corpus', target)
  mkdirSync(dir, { recursive: true })
  for (const [name, bytes] of Object.entries(files)) {
    writeFileSync(join(dir, name), bytes)
  }
  console.log(`${target}: ${Object.keys(files).length} seeds`)
}
// The awareness instances keep an interval timer running.
process.exit(0)
