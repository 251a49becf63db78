// A js-libp2p node that joins a peervisor overlay the documented way
// (docs/interop.md) and reports, as one JSON object on stdout, what it got from
// the peervisor node it dialed: the connection, identify, a ping, and answers to
// DHT queries over /peervisor/kad/1. It asserts nothing: tests/interop.rs does.
//
// node join.mjs --key FILE --peer MULTIADDR [--closest-to PEER_ID]
//               [--providers-of KEY]... [--no-prologue]
import { readFileSync } from 'node:fs'
import { createHmac } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createLibp2p } from 'libp2p'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp } from '@libp2p/tcp'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

// Every step has this long at most: generous, a loaded machine is slow.
const STEP_MS = 30_000

const { values: args } = parseArgs({
  options: {
    key: { type: 'string' },
    peer: { type: 'string' },
    'closest-to': { type: 'string' },
    'providers-of': { type: 'string', multiple: true },
    'no-prologue': { type: 'boolean', default: false }
  }
})
if (args.key === undefined || args.peer === undefined) {
  console.error('usage: node join.mjs --key FILE --peer MULTIADDR [--closest-to PEER_ID] [--providers-of KEY]... [--no-prologue]')
  process.exit(2)
}

/** The 32 bytes of a swarm.key file (`/key/swarm/psk/1.0.0/`, `/base16/`, hex). */
function readNetworkKey (path) {
  const lines = readFileSync(path, 'utf8').trim().split(/\s+/)
  const hex = lines[0] === '/key/swarm/psk/1.0.0/' && lines[1] === '/base16/' ? lines[2] : lines[0]
  if (!/^[0-9a-fA-F]{64}$/.test(hex ?? '')) {
    throw new Error(`${path}: not a swarm.key file with a 32-byte /base16/ key`)
  }
  return Buffer.from(hex, 'hex')
}

/** peervisor's noise prologue: HMAC-SHA256(network key, label). */
function prologue (key) {
  return createHmac('sha256', key).update('peervisor overlay noise prologue v1').digest()
}

const key = readNetworkKey(args.key)
const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [args['no-prologue'] ? noise() : noise({ prologueBytes: prologue(key) })],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: '/peervisor/kad/1',
      clientMode: true,
      // The overlay here is on loopback: keep private addresses.
      peerInfoMapper: passthroughMapper
    })
  }
})

/** The version of an installed package (package-lock.json pins them all). */
const versionOf = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version

const report = {
  implementation: {
    node: process.version,
    libp2p: versionOf('libp2p'),
    noise: versionOf('@chainsafe/libp2p-noise'),
    yamux: versionOf('@chainsafe/libp2p-yamux'),
    'kad-dht': versionOf('@libp2p/kad-dht')
  },
  self: node.peerId.toString()
}
const errorText = (e) => `${e.name ?? 'Error'}: ${e.message}`
const step = () => ({ signal: AbortSignal.timeout(STEP_MS) })
const target = multiaddr(args.peer)

/** The first `name` event `emitter` dispatches, or the step's timeout. */
function nextEvent (emitter, name) {
  const { signal } = step()
  const event = new Promise((resolve, reject) => {
    emitter.addEventListener(name, (event) => resolve(event.detail), { once: true })
    signal.addEventListener('abort', () => reject(signal.reason))
  })
  // Awaited only if the dial succeeds: no unhandled rejection otherwise.
  event.catch(() => {})
  return event
}

// libp2p runs identify on every new connection by itself; then kad-dht pings
// the peer (if identify listed its DHT protocol) and adds it to its routing
// table. Listen before dialing.
const identified = nextEvent(node, 'peer:identify')
const identifiedPeers = new Set()
node.addEventListener('peer:identify', (event) => identifiedPeers.add(event.detail.peerId.toString()))
const inRoutingTable = nextEvent(node.services.dht.routingTable, 'peer:add')

try {
  const connection = await node.dial(target, step())
  report.connection = {
    remote_peer: connection.remotePeer.toString(),
    encryption: connection.encryption,
    multiplexer: connection.multiplexer
  }
} catch (e) {
  report.connection = { error: errorText(e) }
}

const connected = () => node.getConnections().length > 0

if (connected()) {
  try {
    const info = await identified
    report.identify = {
      peer: info.peerId.toString(),
      agent_version: info.agentVersion,
      protocol_version: info.protocolVersion,
      protocols: info.protocols,
      listen_addrs: info.listenAddrs.map(String)
    }
  } catch (e) {
    report.identify = { error: errorText(e) }
  }

  // Before our own ping: rust-libp2p serves one inbound ping stream per
  // connection at a time and resets an older one when a newer one arrives, so a
  // ping racing kad-dht's would be cut.
  try {
    report.dht_routing_table = { added: (await inRoutingTable).toString() }
  } catch (e) {
    report.dht_routing_table = { error: errorText(e) }
  }
} else {
  report.identify = { error: 'no connection' }
}

try {
  report.ping = { rtt_ms: await node.services.ping.ping(target, step()) }
} catch (e) {
  report.ping = { error: errorText(e) }
}

/** Runs one DHT query; each peer's answer with the peers (and providers) it named. */
async function query (events) {
  const answers = []
  for await (const event of events) {
    if (event.name === 'PEER_RESPONSE') {
      answers.push({
        from: event.from.toString(),
        closer: event.closer.map((p) => ({ id: p.id.toString(), addrs: p.multiaddrs.map(String) })),
        providers: event.providers.map((p) => p.id.toString())
      })
    }
  }
  return { answers }
}

if (args['closest-to'] !== undefined && connected()) {
  try {
    const wanted = peerIdFromString(args['closest-to']).toMultihash().bytes
    report.closest = await query(node.services.dht.getClosestPeers(wanted, step()))
  } catch (e) {
    report.closest = { error: errorText(e) }
  }
}

if (connected()) {
  report.providers = {}
  for (const key of args['providers-of'] ?? []) {
    try {
      report.providers[key] = await query(node.services.dht.findProviders(providerCid(key), step()))
    } catch (e) {
      report.providers[key] = { error: errorText(e) }
    }
  }
}

/**
 * js-libp2p asks for the providers of a CID by its multihash's bytes; peervisor's
 * provider keys are plain text ('svc/type/KIND', 'svc/name/NAME'). A multihash is <code varint>
 * <length varint> <digest>, so text of the form "sv" + 118 bytes is one: code
 * 0x73 ('s'), length 0x76 ('v' = 118). The CID built from it makes js-libp2p send
 * exactly peervisor's key.
 */
function providerCid (text) {
  const bytes = new TextEncoder().encode(text)
  if (bytes.length !== 120 || bytes[0] !== 0x73 || bytes[1] !== 0x76) {
    throw new Error(`provider key ${text}: must start 'sv' and be 120 bytes to pass as a multihash`)
  }
  const cid = CID.createV1(0x55, Digest.create(0x73, bytes.subarray(2)))
  if (!equal(cid.multihash.bytes, bytes)) throw new Error('provider key: the CID does not carry the key')
  return cid
}

function equal (a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

// Whatever the steps above got, these are what the node heard in all.
report.identified_peers = [...identifiedPeers]
report.connections_at_end = node.getConnections().length
await node.stop()
console.log(JSON.stringify(report, null, 2))
