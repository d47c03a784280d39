#!/usr/bin/env node
// A PFAP v1.0 reactor in JavaScript: serves /ws, announces itself to a packetflow gateway,
// heartbeats, and runs cf:ping, cf:health, cf:introspect, df:transform and df:wordcount.
// Written from the spec (PFAP-v1.0.md) and packetflow's docs, not from the Python code.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const { WebSocket, WebSocketServer } = require('ws');
const { ELEMENTS, PacketError } = require('./elements');
const { CATALOGUE, errorPayload } = require('./errors');

const IMPLEMENTATION = 'javascript';
const VERSION = '1.0.0';
const GROUPS = ['cf', 'df', 'ed', 'co', 'mc', 'rm'];
const MESSAGE_TYPES = ['submit', 'result', 'error', 'heartbeat', 'discover', 'coordinate'];
const SPECIALIZATIONS = ['cpu_intensive', 'memory_bound', 'io_intensive', 'network_heavy', 'general_purpose'];
const ELEMENT_RE = /^[a-z][a-z0-9_]*$/;
// DESIGN §3 / PFAP §12.4.1: one frame is at most 1 MiB unless configured.
const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
// docs/security.md: the reactor accepts the dial tokens of its last two announces.
const DIAL_TOKENS_KEPT = 2;
// DESIGN §4: a packet id is 1–128 characters.
const MAX_PACKET_ID = 128;
// Latency samples kept for avg/p99 (a bounded window, DESIGN §6: every table has a cap).
const LATENCY_WINDOW = 1000;
// DESIGN §4: the idempotency window holds 10,000 packet ids for 10 minutes.
const IDEMPOTENCY_MAX_IDS = 10000;
const IDEMPOTENCY_WINDOW_MS = 10 * 60 * 1000;
// §10.1 PF005 and friends: the 5-minute error rate of cf:health.
const ERROR_RATE_WINDOW_MS = 5 * 60 * 1000;
const THROUGHPUT_WINDOW_MS = 60 * 1000;
// Reconnect backoff to the gateway: 0.2 s doubling to 5 s.
const RECONNECT_MIN_MS = 200;
const RECONNECT_MAX_MS = 5000;
const API_KEY_HEADER = 'x-packetflow-api-key';
const UTF8 = new TextDecoder('utf-8', { fatal: true });
const DIAL_TOKEN_HEADER = 'x-packetflow-dial-token';

function usage() {
  return `usage: node reactor.js [options]

  --gateway URL            gateway ws:// URL to announce to (env PACKETFLOW_GATEWAY)
  --host HOST              bind address (default 127.0.0.1)
  --port N                 0 picks a free port (default 0; env PACKETFLOW_PORT)
  --id ID                  reactor id (default reactor-js-<random>; env PACKETFLOW_REACTOR_ID)
  -s, --specialization S   repeatable; ${SPECIALIZATIONS.join('|')}
                           (default general_purpose; env PACKETFLOW_SPECIALIZATIONS=a,b)
  --max-concurrent N       max_concurrent_packets (default 64)
  --heartbeat-interval S   seconds between HEARTBEATs (default 5)
  --announce-interval S    seconds between re-announcements (default 30)
  --max-frame-bytes N      largest accepted frame (default 1048576)
  --accept-token-file F    also accept upgrades presenting this token (env PACKETFLOW_ACCEPT_TOKEN_FILE)

  Credentials for the announce: env PACKETFLOW_API_KEY_FILE (a file holding the key) or
  PACKETFLOW_API_KEY (a reactor-role API key); never on the command line.
  Prints one JSON line {"event":"ready","role":"reactor","id":...,"url":...} once it listens.`;
}

function fail(message) {
  process.stderr.write(`reactor.js: ${message}\n\n${usage()}\n`);
  process.exit(2);
}

function parseNumber(name, value, { min = 0, integer = false } = {}) {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
    fail(`${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${JSON.stringify(value)}`);
  }
  return n;
}

function readSecret(path, what) {
  try {
    const text = fs.readFileSync(path, 'utf8').trim();
    if (!text) fail(`${what} file ${path} is empty`);
    return text;
  } catch (err) {
    if (err && err.code) fail(`cannot read ${what} file ${path}: ${err.code}`);
    throw err;
  }
}

function parseConfig(argv, env) {
  const config = {
    gateway: env.PACKETFLOW_GATEWAY || null,
    host: '127.0.0.1',
    port: env.PACKETFLOW_PORT !== undefined ? parseNumber('PACKETFLOW_PORT', env.PACKETFLOW_PORT, { integer: true }) : 0,
    id: env.PACKETFLOW_REACTOR_ID || `reactor-js-${crypto.randomBytes(4).toString('hex')}`,
    specializations: env.PACKETFLOW_SPECIALIZATIONS
      ? env.PACKETFLOW_SPECIALIZATIONS.split(',').map((s) => s.trim()).filter(Boolean)
      : [],
    maxConcurrent: 64,
    heartbeatIntervalMs: 5000,
    announceIntervalMs: 30000,
    maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
    acceptTokenFile: env.PACKETFLOW_ACCEPT_TOKEN_FILE || null,
  };
  const specs = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--gateway': config.gateway = value(); break;
      case '--host': config.host = value(); break;
      case '--port': config.port = parseNumber('--port', value(), { integer: true }); break;
      case '--id': config.id = value(); break;
      case '-s':
      case '--specialization': specs.push(value()); break;
      case '--max-concurrent': config.maxConcurrent = parseNumber('--max-concurrent', value(), { min: 1, integer: true }); break;
      case '--heartbeat-interval': config.heartbeatIntervalMs = 1000 * parseNumber('--heartbeat-interval', value(), { min: 0.01 }); break;
      case '--announce-interval': config.announceIntervalMs = 1000 * parseNumber('--announce-interval', value(), { min: 0.1 }); break;
      case '--max-frame-bytes': config.maxFrameBytes = parseNumber('--max-frame-bytes', value(), { min: 1024, integer: true }); break;
      case '--accept-token-file': config.acceptTokenFile = value(); break;
      case '--api-key':
        fail('an API key is never given on the command line: use PACKETFLOW_API_KEY_FILE');
        break;
      case '-h':
      case '--help':
        process.stdout.write(`${usage()}\n`);
        process.exit(0);
        break;
      default: fail(`unknown option ${arg}`);
    }
  }
  if (specs.length) config.specializations = specs;
  if (!config.specializations.length) config.specializations = ['general_purpose'];
  for (const s of config.specializations) {
    if (!SPECIALIZATIONS.includes(s)) fail(`unknown specialization ${JSON.stringify(s)}`);
  }
  if (config.port > 65535) fail('--port must be at most 65535');
  if (config.gateway && !/^wss?:\/\//.test(config.gateway)) fail('--gateway must be a ws:// or wss:// URL');
  config.apiKey = env.PACKETFLOW_API_KEY_FILE
    ? readSecret(env.PACKETFLOW_API_KEY_FILE, 'API key')
    : (env.PACKETFLOW_API_KEY || '').trim() || null;
  config.acceptToken = config.acceptTokenFile ? readSecret(config.acceptTokenFile, 'accept token') : null;
  if (config.gateway && !config.apiKey) {
    process.stderr.write('reactor.js: warning: no PACKETFLOW_API_KEY_FILE / PACKETFLOW_API_KEY: the gateway will refuse the announce (401)\n');
  }
  return config;
}

function log(level, message, context = {}) {
  process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), level, message, ...context })}\n`);
}

function sameSecret(presented, expected) {
  // Constant-time comparison of equal-length digests, so the token never leaks by timing.
  const a = crypto.createHash('sha256').update(String(presented)).digest();
  const b = crypto.createHash('sha256').update(String(expected)).digest();
  return crypto.timingSafeEqual(a, b);
}

function jsonType(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

// Measured figures the heartbeat, cf:health and cf:introspect report (§4.2.4, §8.3, §9.1.2).
class Stats {
  constructor() {
    this.startedAt = Date.now();
    this.processed = 0;
    this.failed = 0;
    this.latencies = [];
    this.finishes = []; // [time ms, ok] over the last 5 minutes
    this.perGroupDone = Object.fromEntries(GROUPS.map((g) => [g, []]));
    this.lastError = null;
    this.lastCpu = process.cpuUsage();
    this.lastCpuAt = process.hrtime.bigint();
    this.cpuPercent = 0;
  }

  record(group, durationMs, ok, errorCode) {
    const now = Date.now();
    this.processed += 1;
    if (!ok) {
      this.failed += 1;
      this.lastError = errorCode;
    }
    this.latencies.push(durationMs);
    if (this.latencies.length > LATENCY_WINDOW) this.latencies.shift();
    this.finishes.push([now, ok]);
    const done = this.perGroupDone[group];
    if (done) done.push(now);
    this.prune(now);
  }

  prune(now) {
    while (this.finishes.length && now - this.finishes[0][0] > ERROR_RATE_WINDOW_MS) this.finishes.shift();
    for (const g of GROUPS) {
      const done = this.perGroupDone[g];
      while (done.length && now - done[0] > THROUGHPUT_WINDOW_MS) done.shift();
    }
  }

  sampleCpu() {
    const now = process.hrtime.bigint();
    const usage = process.cpuUsage(this.lastCpu);
    const wallUs = Number(now - this.lastCpuAt) / 1000;
    if (wallUs > 0) this.cpuPercent = (100 * (usage.user + usage.system)) / wallUs;
    this.lastCpu = process.cpuUsage();
    this.lastCpuAt = now;
    return this.cpuPercent;
  }

  avgMs() {
    if (!this.latencies.length) return 0;
    return this.latencies.reduce((a, b) => a + b, 0) / this.latencies.length;
  }

  p99Ms() {
    if (!this.latencies.length) return 0;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)];
  }

  errorRate() {
    this.prune(Date.now());
    if (!this.finishes.length) return 0;
    return this.finishes.filter(([, ok]) => !ok).length / this.finishes.length;
  }

  throughput(group) {
    this.prune(Date.now());
    const groups = group ? [group] : GROUPS;
    const n = groups.reduce((sum, g) => sum + this.perGroupDone[g].length, 0);
    const windowS = Math.min(THROUGHPUT_WINDOW_MS, Math.max(1, Date.now() - this.startedAt)) / 1000;
    return n / windowS;
  }
}

function openFds() {
  try {
    return fs.readdirSync('/proc/self/fd').length;
  } catch {
    return null; // not Linux: no cheap way to count them
  }
}

function diskPercent() {
  try {
    const s = fs.statfsSync(process.cwd());
    return s.blocks ? (100 * (s.blocks - s.bavail)) / s.blocks : null;
  } catch {
    return null;
  }
}

class Reactor {
  constructor(config) {
    this.config = config;
    this.id = config.id;
    this.stats = new Stats();
    this.inFlight = 0;
    this.inFlightByGroup = Object.fromEntries(GROUPS.map((g) => [g, 0]));
    this.dialTokens = [];
    this.window = new Map(); // packet id → attempt (DESIGN §4 idempotency window)
    this.workSockets = new Set();
    this.control = null;
    this.controlBackoff = RECONNECT_MIN_MS;
    this.stopping = false;
    this.url = null;
    this.timers = [];
  }

  // ---- envelopes -------------------------------------------------------------------

  envelope(socket, messageType, payload, { correlationId = null, destinationId = null } = {}) {
    socket.pfSequence = (socket.pfSequence || 0) + 1;
    return {
      protocol_version: '1.0',
      message_type: messageType,
      message_id: `msg_${crypto.randomUUID()}`,
      sequence_id: socket.pfSequence,
      timestamp: Date.now(),
      source_id: this.id,
      destination_id: destinationId,
      correlation_id: correlationId,
      payload,
    };
  }

  send(socket, messageType, payload, options) {
    if (socket.readyState !== WebSocket.OPEN) return false;
    const raw = socket._socket; // ws keeps the net.Socket here
    if (raw && !socket.pfCorked) {
      // Replies made in one turn of the event loop leave in one write, not one each.
      socket.pfCorked = true;
      raw.cork();
      setImmediate(() => {
        socket.pfCorked = false;
        raw.uncork();
      });
    }
    socket.send(JSON.stringify(this.envelope(socket, messageType, payload, options)));
    return true;
  }

  reactorInfo() {
    return {
      reactor_id: this.id,
      implementation: IMPLEMENTATION,
      specialization: this.config.specializations,
      load_factor: this.loadFactor(),
      queue_depth: 0,
    };
  }

  sendError(socket, err, { correlationId = null, destinationId = null, packetId = null } = {}) {
    const payload = errorPayload(err.code, err.message, {
      packetId,
      details: err.details,
      context: err.context,
      reactorInfo: { reactor_id: this.id, implementation: IMPLEMENTATION },
      retryDelayMs: err.retryDelayMs,
      retryPossible: err.retryPossible,
    });
    this.send(socket, 'error', payload, { correlationId, destinationId });
  }

  loadFactor() {
    return this.inFlight / this.config.maxConcurrent;
  }

  // ---- capabilities ----------------------------------------------------------------

  supported() {
    return Object.keys(ELEMENTS).map((key) => {
      const [group, element] = key.split(':');
      return { group, element, spec: ELEMENTS[key] };
    });
  }

  announcePayload(dialToken) {
    const supported = this.supported();
    const groups = [...new Set(supported.map((s) => s.group))];
    const http = this.url.replace(/^ws/, 'http').replace(/\/ws$/, '');
    return {
      discovery_type: 'announce',
      reactor_info: {
        reactor_id: this.id,
        implementation: IMPLEMENTATION,
        version: VERSION,
        specializations: this.config.specializations,
        max_capacity: this.config.maxConcurrent,
        current_load: this.inFlight,
        endpoints: { websocket: this.url, http, metrics: `${http}/metrics` },
      },
      // §4.2.5 form …
      supported_packets: supported.map(({ group, element, spec }) => ({
        group, element, priority_range: spec.priorityRange || [1, 10],
      })),
      // … and §8.2 form: a gateway may read either.
      capabilities: {
        packet_support: groups.map((g) => ({
          group: g,
          elements: supported.filter((s) => s.group === g).map((s) => s.element),
          max_concurrency: this.config.maxConcurrent,
          avg_processing_time_ms: this.stats.avgMs(),
        })),
        molecular_support: { max_molecule_size: 0, supported_bond_types: [], coordination_capabilities: [] },
        performance_characteristics: {
          memory_capacity_mb: Math.round(os.totalmem() / 2 ** 20),
          cpu_cores: os.cpus().length,
        },
      },
      chemical_characteristics: { affinity_matrix_version: '1.0', optimization_capabilities: [] },
      operational_constraints: {
        max_packet_size_mb: this.config.maxFrameBytes / 2 ** 20,
        max_concurrent_packets: this.config.maxConcurrent,
        supported_bond_types: [],
      },
      // docs/security.md: the gateway presents this token when it dials our /ws.
      dial_token: dialToken,
    };
  }

  heartbeatPayload() {
    const mem = process.memoryUsage.rss();
    const cpu = this.stats.sampleCpu();
    const queueDepths = Object.fromEntries(GROUPS.map((g) => [g, 0]));
    const rates = Object.fromEntries(GROUPS.map((g) => [g, this.stats.throughput(g)]));
    const processing = { ...this.inFlightByGroup };
    return {
      reactor_id: this.id,
      implementation: IMPLEMENTATION,
      specializations: this.config.specializations,
      health_status: {
        status: 'healthy',
        load_factor: this.loadFactor(),
        queue_depth: 0,
        in_flight: this.inFlight,
        memory_usage_mb: mem / 2 ** 20,
        cpu_usage_percent: cpu,
        network_connections: this.workSockets.size + (this.control ? 1 : 0),
        uptime_seconds: (Date.now() - this.stats.startedAt) / 1000,
        last_error: this.stats.lastError,
      },
      performance_metrics: {
        packets_processed: this.stats.processed,
        avg_processing_time_ms: this.stats.avgMs(),
        p99_processing_time_ms: this.stats.p99Ms(),
        error_rate: this.stats.errorRate(),
        throughput_pps: this.stats.throughput(),
      },
      // §8.3 dynamic load reporting.
      load_metrics: {
        current_load_factor: this.loadFactor(),
        queue_depths: queueDepths,
        in_flight: processing,
        processing_rates_pps: rates,
        resource_utilization: {
          cpu_percent: cpu,
          memory_percent: (100 * mem) / os.totalmem(),
        },
      },
      capacity_adjustments: { temporary_capacity_boost: 1.0, scheduled_maintenance: null, resource_constraints: [] },
      capabilities: Object.keys(ELEMENTS),
    };
  }

  healthFigures() {
    const mem = process.memoryUsage.rss();
    return {
      avgMs: this.stats.avgMs(),
      p99Ms: this.stats.p99Ms(),
      errorRate: this.stats.errorRate(),
      throughput: this.stats.throughput(),
      memoryPercent: (100 * mem) / os.totalmem(),
      cpuPercent: this.stats.sampleCpu(),
      diskPercent: diskPercent(),
      openFds: openFds(),
      connections: this.workSockets.size + (this.control ? 1 : 0),
      loadFactor: this.loadFactor(),
    };
  }

  // ---- incoming frames -------------------------------------------------------------

  onFrame(socket, data, isBinary) {
    if (isBinary) {
      this.sendError(socket, new PacketError('PF001', 'binary frames are not PFAP messages: send UTF-8 JSON text', {
        details: { field: '$', expected_type: 'text frame', received_type: 'binary frame', validation_rule: 'text_frame' },
      }));
      return;
    }
    let text;
    try {
      text = UTF8.decode(data);
    } catch {
      this.sendError(socket, new PacketError('PF001', 'frame is not valid UTF-8', {
        details: { field: '$', expected_type: 'UTF-8 JSON', received_type: 'bytes', validation_rule: 'utf8' },
      }));
      return;
    }
    let message;
    try {
      message = JSON.parse(text);
    } catch (err) {
      this.sendError(socket, new PacketError('PF001', `invalid JSON: ${err.message}`, {
        details: { field: '$', expected_type: 'JSON object', received_type: 'text', validation_rule: 'json' },
      }));
      return;
    }
    if (Array.isArray(message)) {
      // DESIGN §3 / §12.4.2: a batch; each element is handled as if sent alone.
      if (!message.length) {
        this.sendError(socket, new PacketError('PF001', 'an empty batch holds no message', {
          details: { field: '$', expected_type: 'non-empty array', received_type: 'array', validation_rule: 'min_items' },
        }));
        return;
      }
      for (const item of message) this.onMessage(socket, item);
      return;
    }
    this.onMessage(socket, message);
  }

  onMessage(socket, message) {
    if (message === null || typeof message !== 'object' || Array.isArray(message)) {
      this.sendError(socket, new PacketError('PF001', 'a PFAP message is a JSON object', {
        details: { field: '$', expected_type: 'object', received_type: jsonType(message), validation_rule: 'type' },
      }));
      return;
    }
    const correlationId = typeof message.message_id === 'string' ? message.message_id : null;
    const destinationId = typeof message.source_id === 'string' ? message.source_id : null;
    const packetId = message.payload && message.payload.packet && typeof message.payload.packet.id === 'string'
      ? message.payload.packet.id : null;
    const reply = { correlationId, destinationId, packetId };
    try {
      validateEnvelope(message);
    } catch (err) {
      if (!(err instanceof PacketError)) throw err;
      this.sendError(socket, err, reply);
      return;
    }
    switch (message.message_type) {
      case 'submit':
        this.onSubmit(socket, message, reply);
        break;
      case 'discover':
        if (message.payload.discovery_type === 'query') {
          this.send(socket, 'discover', { ...this.announcePayload(undefined), discovery_type: 'response', dial_token: undefined }, reply);
        }
        break;
      case 'heartbeat':
      case 'result':
        break; // nothing to answer: a reactor has no use for them, and errors never answer answers
      case 'error':
        log('warning', 'peer sent an ERROR', { error_code: message.payload.error_code, correlation_id: message.correlation_id });
        break;
      default:
        this.sendError(socket, new PacketError('PF002', `a reactor does not accept ${message.message_type} messages`, {
          details: { field: 'message_type', expected_type: 'submit, discover or heartbeat', received_type: message.message_type, validation_rule: 'enum' },
        }), reply);
    }
  }

  onSubmit(socket, message, reply) {
    let packet;
    try {
      packet = validatePacket(message.payload);
    } catch (err) {
      if (!(err instanceof PacketError)) throw err;
      this.sendError(socket, err, reply);
      return;
    }
    reply.packetId = packet.id;
    const key = `${packet.group}:${packet.element}`;
    const spec = ELEMENTS[key];
    if (!spec) {
      this.sendError(socket, new PacketError('PF003', `reactor ${this.id} does not serve ${key}`, {
        details: { field: 'payload.packet.element', expected_type: Object.keys(ELEMENTS).join('|'), received_type: `string ${key}`, validation_rule: 'supported_element' },
        context: { packet_id: packet.id, requested_group: packet.group, requested_element: packet.element, supported_packets: Object.keys(ELEMENTS) },
      }), reply);
      return;
    }
    if (this.stopping) {
      this.sendError(socket, new PacketError('PF503', `reactor ${this.id} is shutting down`, { retryDelayMs: 1000 }), reply);
      return;
    }
    if (this.replay(socket, packet, reply)) return; // joining or answering again takes no slot
    if (this.inFlight >= this.config.maxConcurrent) {
      this.sendError(socket, new PacketError('PF004', `reactor ${this.id} is at its ${this.config.maxConcurrent} packets in flight`, {
        retryDelayMs: 100,
        context: { packet_id: packet.id, in_flight: this.inFlight, max_concurrent_packets: this.config.maxConcurrent },
      }), reply);
      return;
    }
    this.run(socket, packet, spec, reply);
  }

  async run(socket, packet, spec, reply) {
    const key = `${packet.group}:${packet.element}`;
    const entry = { key, running: true, waiters: [{ socket, reply }], outcome: null, at: 0 };
    this.remember(packet.id, entry);
    const started = process.hrtime.bigint();
    this.inFlight += 1;
    this.inFlightByGroup[packet.group] += 1;
    const elapsedMs = () => Number(process.hrtime.bigint() - started) / 1e6;
    const ctx = {
      reactor: this,
      reactorId: this.id,
      implementation: IMPLEMENTATION,
      specializations: this.config.specializations,
      elapsedMs,
      packet,
    };
    let outcome;
    try {
      const result = await spec.handler(packet.data, ctx);
      const durationMs = elapsedMs();
      if (durationMs > packet.timeout_ms) {
        // JS cannot cancel a synchronous handler; a result past the deadline is still late.
        throw new PacketError('PF005', `${key} ran past its timeout_ms ${packet.timeout_ms}`, {
          details: { reason: 'timeout', timeout_ms: packet.timeout_ms, duration_ms: durationMs },
          retryPossible: true,
        });
      }
      outcome = {
        ok: true,
        payload: {
          packet_id: packet.id,
          status: 'success',
          data: { ...result, processing_stats: { duration_ms: durationMs } },
          reactor_info: this.reactorInfo(),
          processed_at: Date.now(),
        },
      };
    } catch (err) {
      const error = err instanceof PacketError
        ? err
        : new PacketError('PF005', `${key} failed: ${err && err.name}: ${err && err.message}`, {
          details: { reason: 'exception', exception_type: err && err.name },
        });
      if (!(err instanceof PacketError)) log('error', 'handler raised', { packet_id: packet.id, element: key, error: String(err) });
      outcome = { ok: false, error };
    } finally {
      this.inFlight -= 1;
      this.inFlightByGroup[packet.group] -= 1;
    }
    // A packet with bad data (PF002) is the sender's fault, not a sign of the reactor's
    // health: only processing and system errors count against its error rate.
    const fault = !outcome.ok && (CATALOGUE[outcome.error.code] || ['internal_error'])[0] !== 'validation_error';
    this.stats.record(packet.group, elapsedMs(), !fault, fault ? outcome.error.code : null);
    entry.running = false;
    entry.outcome = outcome;
    entry.at = Date.now();
    for (const waiter of entry.waiters) this.deliver(waiter.socket, outcome, waiter.reply);
    entry.waiters = [];
    const retryable = !outcome.ok && (outcome.error.retryPossible ?? (CATALOGUE[outcome.error.code] || [])[1]);
    // DESIGN §4: after a retryable error the packet runs anew; other outcomes are answered again.
    if (retryable && this.window.get(packet.id) === entry) this.window.delete(packet.id);
  }

  deliver(socket, outcome, reply) {
    if (outcome.ok) this.send(socket, 'result', outcome.payload, reply);
    else this.sendError(socket, outcome.error, reply);
  }

  remember(packetId, entry) {
    this.window.delete(packetId); // re-inserted last: the Map's order is the eviction order
    this.window.set(packetId, entry);
    while (this.window.size > IDEMPOTENCY_MAX_IDS) {
      const [oldest, old] = this.window.entries().next().value;
      if (old.running) break; // never forget a packet that still has someone waiting
      this.window.delete(oldest);
    }
  }

  // DESIGN §4 idempotency: a packet id seen again joins the running attempt, or gets the
  // stored outcome; false when it should run.
  replay(socket, packet, reply) {
    const entry = this.window.get(packet.id);
    if (!entry || entry.key !== `${packet.group}:${packet.element}`) return false;
    if (entry.running) {
      entry.waiters.push({ socket, reply });
      return true;
    }
    if (Date.now() - entry.at > IDEMPOTENCY_WINDOW_MS) {
      this.window.delete(packet.id);
      return false;
    }
    this.deliver(socket, entry.outcome, reply);
    return true;
  }

  // ---- the server: our /ws, /health, /metrics --------------------------------------

  authorizedUpgrade(req) {
    const presented = req.headers[DIAL_TOKEN_HEADER];
    if (typeof presented !== 'string' || !presented) return false;
    let ok = false;
    // Compare against every candidate so timing does not tell which one matched.
    for (const token of this.dialTokens) ok = sameSecret(presented, token) || ok;
    if (this.config.acceptToken) ok = sameSecret(presented, this.config.acceptToken) || ok;
    return ok;
  }

  refusal() {
    return errorPayload('PF401', 'this reactor accepts work only from the gateway it announced to', {
      details: { field: `headers.${DIAL_TOKEN_HEADER}`, expected_type: 'dial token', received_type: 'missing or unknown', validation_rule: 'dial_token' },
      reactorInfo: { reactor_id: this.id, implementation: IMPLEMENTATION },
    });
  }

  refuse(socket) {
    const status = 401;
    const body = JSON.stringify({ error: this.refusal() });
    socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n`
      + `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    socket.destroy();
  }

  handleHttp(req, res) {
    const path = (req.url || '/').split('?')[0];
    if (req.method === 'GET' && path === '/health') {
      const body = {
        status: this.stopping ? 'degraded' : 'healthy',
        reactor_id: this.id,
        implementation: IMPLEMENTATION,
        in_flight: this.inFlight,
        uptime_seconds: (Date.now() - this.stats.startedAt) / 1000,
      };
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
      return;
    }
    if (req.method === 'GET' && path === '/metrics') {
      const loopback = ['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(req.socket.remoteAddress);
      if (!loopback && !this.authorizedUpgrade(req)) {
        res.writeHead(401, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: errorPayload('PF401', 'metrics need a dial or accept token off loopback', {}) }));
        return;
      }
      const labels = `reactor_id="${this.id}",implementation="${IMPLEMENTATION}"`;
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
      res.end([
        '# TYPE packetflow_reactor_packets_total counter',
        `packetflow_reactor_packets_total{${labels}} ${this.stats.processed}`,
        '# TYPE packetflow_reactor_packets_failed_total counter',
        `packetflow_reactor_packets_failed_total{${labels}} ${this.stats.failed}`,
        '# TYPE packetflow_reactor_in_flight gauge',
        `packetflow_reactor_in_flight{${labels}} ${this.inFlight}`,
        '',
      ].join('\n'));
      return;
    }
    if (path === '/ws') {
      // Not an upgrade: the same answer an upgrade gets, so nothing is learnt by asking.
      const ok = this.authorizedUpgrade(req);
      res.writeHead(ok ? 426 : 401, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: ok
        ? errorPayload('PF001', '/ws speaks WebSocket: send an upgrade request', {})
        : this.refusal() }));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'not found' }));
  }

  async listen() {
    this.httpServer = http.createServer((req, res) => this.handleHttp(req, res));
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.config.maxFrameBytes, perMessageDeflate: true });
    this.httpServer.on('upgrade', (req, socket, head) => {
      const path = (req.url || '/').split('?')[0];
      if (path !== '/ws') {
        socket.write('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        socket.destroy();
        return;
      }
      if (!this.authorizedUpgrade(req)) {
        log('warning', 'refused an upgrade without a valid dial token', { remote: req.socket.remoteAddress });
        this.refuse(socket);
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.onWorkConnection(ws));
    });
    await new Promise((resolve, reject) => {
      this.httpServer.once('error', reject);
      this.httpServer.listen(this.config.port, this.config.host, resolve);
    });
    const { port } = this.httpServer.address();
    const host = this.config.host.includes(':') ? `[${this.config.host}]` : this.config.host;
    this.url = `ws://${host}:${port}/ws`;
  }

  onWorkConnection(ws) {
    this.workSockets.add(ws);
    ws.on('message', (data, isBinary) => {
      try {
        this.onFrame(ws, data, isBinary);
      } catch (err) {
        log('error', 'frame handling failed', { error: String(err && err.stack) });
        this.sendError(ws, new PacketError('PF500', 'internal error while handling the frame'));
      }
    });
    ws.on('close', () => this.workSockets.delete(ws));
    ws.on('error', (err) => log('warning', 'work connection error', { error: String(err) }));
    // The gateway learns our load at once rather than one interval later.
    this.send(ws, 'heartbeat', this.heartbeatPayload());
  }

  // ---- the control connection to the gateway ---------------------------------------

  connectGateway() {
    if (!this.config.gateway || this.stopping) return;
    const headers = this.config.apiKey ? { [API_KEY_HEADER]: this.config.apiKey } : {};
    const ws = new WebSocket(this.config.gateway, { headers, maxPayload: this.config.maxFrameBytes });
    let retrying = false;
    // Every way this attempt can end (refused upgrade, error, close) leads here exactly once.
    const retry = () => {
      if (retrying) return;
      retrying = true;
      if (this.control === ws) this.control = null;
      if (this.stopping) return;
      const delay = this.controlBackoff;
      this.controlBackoff = Math.min(this.controlBackoff * 2, RECONNECT_MAX_MS);
      setTimeout(() => this.connectGateway(), delay).unref();
    };
    ws.on('open', () => {
      this.control = ws;
      this.controlBackoff = RECONNECT_MIN_MS;
      this.announce();
    });
    ws.on('unexpected-response', (req, res) => {
      // A refused upgrade (401: key unknown yet, or revoked): say why, then try again.
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        log('error', 'gateway refused the announce connection', { status: res.statusCode, body: body.slice(0, 500) });
        retry();
      });
      res.on('error', retry);
      req.on('error', () => {}); // the abort below is ours
      req.destroy();
    });
    ws.on('message', (data, isBinary) => {
      let message;
      try {
        message = JSON.parse(isBinary ? '' : data.toString('utf8'));
      } catch {
        return; // the gateway never sends us garbage; nothing useful to answer
      }
      if (message && message.message_type === 'error') {
        log('error', 'gateway answered ERROR on the control connection', { payload: message.payload });
      } else if (message && message.message_type === 'submit') {
        this.onFrame(ws, data, false); // a gateway may also hand us work here
      }
    });
    ws.on('error', (err) => {
      log('warning', 'control connection error', { error: String(err && err.message) });
      retry();
    });
    ws.on('close', retry);
  }

  announce() {
    if (!this.control || this.control.readyState !== WebSocket.OPEN) return;
    const token = crypto.randomBytes(32).toString('base64url');
    this.dialTokens.push(token);
    while (this.dialTokens.length > DIAL_TOKENS_KEPT) this.dialTokens.shift();
    this.send(this.control, 'discover', this.announcePayload(token));
  }

  heartbeat() {
    const payload = this.heartbeatPayload();
    let sent = false;
    for (const ws of this.workSockets) sent = this.send(ws, 'heartbeat', payload) || sent;
    // The gateway accepts a HEARTBEAT on either connection (DESIGN §2).
    if (!sent && this.control) this.send(this.control, 'heartbeat', payload);
  }

  async start() {
    await this.listen();
    process.stdout.write(`${JSON.stringify({ event: 'ready', role: 'reactor', id: this.id, url: this.url })}\n`);
    this.connectGateway();
    this.timers.push(setInterval(() => this.heartbeat(), this.config.heartbeatIntervalMs));
    this.timers.push(setInterval(() => this.announce(), this.config.announceIntervalMs));
  }

  stop() {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    for (const ws of this.workSockets) ws.close(1001, 'reactor stopping');
    if (this.control) this.control.close(1001, 'reactor stopping');
    this.httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  }
}

function requireField(obj, name, path, expected, check) {
  if (!(name in obj) || obj[name] === undefined) {
    throw new PacketError('PF002', `missing required field ${path}`, {
      details: { field: path, expected_type: expected, received_type: 'missing', validation_rule: 'required_field' },
    });
  }
  if (!check(obj[name])) {
    throw new PacketError('PF002', `${path} must be ${expected}, got ${jsonType(obj[name])}`, {
      details: { field: path, expected_type: expected, received_type: jsonType(obj[name]), validation_rule: 'type' },
    });
  }
  return obj[name];
}

const isString = (v) => typeof v === 'string';
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isInt = (v) => Number.isInteger(v);

function validateEnvelope(m) {
  const version = requireField(m, 'protocol_version', 'protocol_version', 'string', isString);
  if (version.split('.')[0] !== '1') {
    throw new PacketError('PF001', `protocol_version ${JSON.stringify(version)} is not 1.x`, {
      details: { field: 'protocol_version', expected_type: 'string 1.x', received_type: `string ${version}`, validation_rule: 'major_version' },
    });
  }
  const type = requireField(m, 'message_type', 'message_type', 'string', isString);
  if (!MESSAGE_TYPES.includes(type)) {
    throw new PacketError('PF002', `unknown message_type ${JSON.stringify(type)}`, {
      details: { field: 'message_type', expected_type: MESSAGE_TYPES.join('|'), received_type: `string ${type}`, validation_rule: 'enum' },
    });
  }
  requireField(m, 'message_id', 'message_id', 'string', (v) => isString(v) && v.length > 0);
  requireField(m, 'timestamp', 'timestamp', 'integer', (v) => typeof v === 'number' && Number.isFinite(v));
  requireField(m, 'source_id', 'source_id', 'string', isString);
  requireField(m, 'payload', 'payload', 'object', isObject);
  if ('sequence_id' in m && m.sequence_id !== null && !isInt(m.sequence_id)) {
    throw new PacketError('PF002', 'sequence_id must be an integer', {
      details: { field: 'sequence_id', expected_type: 'integer', received_type: jsonType(m.sequence_id), validation_rule: 'type' },
    });
  }
}

function validatePacket(payload) {
  const p = requireField(payload, 'packet', 'payload.packet', 'object', isObject);
  const group = requireField(p, 'group', 'payload.packet.group', 'string', isString);
  if (!GROUPS.includes(group)) {
    throw new PacketError('PF002', `unknown packet group ${JSON.stringify(group)}`, {
      details: { field: 'payload.packet.group', expected_type: GROUPS.join('|'), received_type: `string ${group}`, validation_rule: 'enum' },
    });
  }
  const element = requireField(p, 'element', 'payload.packet.element', 'string', isString);
  if (!ELEMENT_RE.test(element)) {
    throw new PacketError('PF002', `element ${JSON.stringify(element)} does not match [a-z][a-z0-9_]*`, {
      details: { field: 'payload.packet.element', expected_type: 'string [a-z][a-z0-9_]*', received_type: 'string', validation_rule: 'pattern' },
    });
  }
  let id = p.id;
  if (id === undefined || id === null) {
    id = `packet_${crypto.randomUUID()}`; // as the gateway does when a client leaves it out
  } else if (!isString(id) || id.length < 1 || id.length > MAX_PACKET_ID) {
    throw new PacketError('PF002', `payload.packet.id must be a string of 1 to ${MAX_PACKET_ID} characters`, {
      details: { field: 'payload.packet.id', expected_type: 'string 1..128', received_type: jsonType(id), validation_rule: 'length' },
    });
  }
  const data = p.data === undefined || p.data === null ? {} : p.data;
  if (!isObject(data)) {
    throw new PacketError('PF002', 'payload.packet.data must be an object', {
      details: { field: 'payload.packet.data', expected_type: 'object', received_type: jsonType(p.data), validation_rule: 'type' },
    });
  }
  if (p.priority !== undefined && p.priority !== null) {
    if (!isInt(p.priority)) {
      throw new PacketError('PF002', 'payload.packet.priority must be an integer', {
        details: { field: 'payload.packet.priority', expected_type: 'integer', received_type: jsonType(p.priority), validation_rule: 'type' },
      });
    }
    if (p.priority < 1 || p.priority > 10) {
      throw new PacketError('PF002', 'payload.packet.priority must be 1 to 10', {
        details: { field: 'payload.packet.priority', expected_type: 'integer 1..10', received_type: `integer ${p.priority}`, validation_rule: 'range' },
      });
    }
  }
  let timeoutMs = ELEMENTS[`${group}:${element}`] ? ELEMENTS[`${group}:${element}`].timeoutMs : 30000;
  if (p.timeout_ms !== undefined && p.timeout_ms !== null) {
    if (!isInt(p.timeout_ms) || p.timeout_ms <= 0) {
      throw new PacketError('PF002', 'payload.packet.timeout_ms must be a positive integer', {
        details: { field: 'payload.packet.timeout_ms', expected_type: 'integer > 0', received_type: jsonType(p.timeout_ms), validation_rule: 'range' },
      });
    }
    timeoutMs = p.timeout_ms;
  }
  return { ...p, id, group, element, data, timeout_ms: timeoutMs };
}

async function main() {
  const config = parseConfig(process.argv.slice(2), process.env);
  const reactor = new Reactor(config);
  process.on('SIGTERM', () => reactor.stop());
  process.on('SIGINT', () => reactor.stop());
  try {
    await reactor.start();
  } catch (err) {
    log('error', 'could not start', { error: String(err && err.message), host: config.host, port: config.port });
    process.exit(1);
  }
}

if (require.main === module) main();

module.exports = { Reactor, parseConfig, validateEnvelope, validatePacket };
