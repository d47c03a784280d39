// The elements this reactor serves: the §12.1.1 mandatory cf trio, df:transform and df:wordcount.
'use strict';

const { PacketError } = require('./errors');

const DATA = 'payload.packet.data';
const PARAMS = `${DATA}.parameters`;
// DESIGN §10 / docs/elements.md: round's digits are bounded to −15…15.
const MAX_ROUND_DIGITS = 15;
// df:wordcount's `top` list is bounded so one packet cannot ask for an unbounded answer.
const MAX_TOP_WORDS = 1000;
// docs/elements.md: cf:health alerts at 70 % memory, 90 % CPU, 10 % error rate.
const ALERTS = { memory: 70, cpu: 90, errorRate: 0.1 };

function jsonType(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function bad(field, expected, value, rule, message) {
  const received = value === undefined ? 'missing' : jsonType(value);
  return new PacketError('PF002', message || `${field} must be ${expected}, got ${received}`, {
    details: { field, expected_type: expected, received_type: received, validation_rule: rule },
  });
}

function optional(data, name, expected, check, fallback, prefix = DATA) {
  const value = data[name];
  if (value === undefined || value === null) return fallback;
  if (!check(value)) throw bad(`${prefix}.${name}`, expected, value, 'type');
  return value;
}

const isBool = (v) => typeof v === 'boolean';
const isString = (v) => typeof v === 'string';
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Python compares strings by code point; JS's default sort by UTF-16 unit disagrees above U+FFFF.
function compareCodePoints(a, b) {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done && y.done ? 0 : x.done ? -1 : 1;
    const cx = x.value.codePointAt(0);
    const cy = y.value.codePointAt(0);
    if (cx !== cy) return cx < cy ? -1 : 1;
  }
}

function canonical(value) {
  // A key for equality: type-tagged, object keys sorted (true and 1 differ; 1 and 1.0 agree).
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (isObject(value)) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return `${typeof value}:${JSON.stringify(value)}`;
}

// ---- molecule input (DESIGN §7: no data.input and exactly one upstream result) ----------

function inputOf(data, ctx) {
  if (data.input !== undefined) return data.input;
  const meta = ctx.packet.metadata;
  const inputs = isObject(meta) && isObject(meta.inputs) ? Object.values(meta.inputs) : [];
  if (inputs.length === 1 && isObject(inputs[0]) && 'result' in inputs[0]) return inputs[0].result;
  throw bad(`${DATA}.input`, 'any JSON value', undefined, 'required_field', `missing required field ${DATA}.input`);
}

// ---- cf -------------------------------------------------------------------------------

function ping(data, ctx) {
  return {
    pong: true,
    echo_data: data.echo_data === undefined ? null : data.echo_data,
    reactor_id: ctx.reactorId,
    response_time_ms: ctx.elapsedMs(),
    implementation: ctx.implementation,
    timestamp: Date.now(),
  };
}

function health(data, ctx) {
  const level = optional(data, 'detail_level', '"basic" or "full"', (v) => v === 'basic' || v === 'full', 'full');
  const includeMetrics = optional(data, 'include_metrics', 'boolean', isBool, true);
  const includeCapabilities = optional(data, 'include_capabilities', 'boolean', isBool, false);
  const f = ctx.reactor.healthFigures();
  const clamp = (x) => Math.max(0, Math.min(1, x));
  const processor = clamp(1 - f.errorRate * 5);
  const resources = clamp(1 - Math.max(0, f.memoryPercent - ALERTS.memory) / 30 - Math.max(0, f.cpuPercent - ALERTS.cpu) / 10);
  const handler = clamp(1 - f.loadFactor / 2);
  const network = 1.0; // we are answering over the network, so it works
  const score = (processor + resources + handler + network) / 4;
  const stateOf = (s) => (s >= 0.8 ? 'healthy' : s >= 0.5 ? 'degraded' : 'failed');
  const status = ctx.reactor.stopping ? 'degraded' : stateOf(score);
  const out = { status, overall_health_score: score, reactor_id: ctx.reactorId, implementation: ctx.implementation };
  if (level === 'basic') return out;
  out.subsystem_health = {
    packet_processor: { status: stateOf(processor), score: processor },
    message_handler: { status: stateOf(handler), score: handler },
    resource_manager: { status: stateOf(resources), score: resources },
    network_interface: { status: 'healthy', score: network },
  };
  if (includeMetrics) {
    out.performance_indicators = {
      avg_response_time_ms: f.avgMs,
      p99_response_time_ms: f.p99Ms,
      error_rate_5min: f.errorRate,
      throughput_pps: f.throughput,
    };
    out.resource_status = {
      memory_usage_percent: f.memoryPercent,
      cpu_usage_percent: f.cpuPercent,
      disk_usage_percent: f.diskPercent,
      open_file_descriptors: f.openFds,
      network_connections: f.connections,
    };
  }
  const alerts = [];
  const alert = (condition, threshold, value, action) => alerts.push({
    severity: 'warning', condition, threshold, current_value: value, suggested_action: action,
  });
  if (f.memoryPercent >= ALERTS.memory) alert('memory_usage_high', ALERTS.memory, f.memoryPercent, 'consider_scaling_up');
  if (f.cpuPercent >= ALERTS.cpu) alert('cpu_usage_high', ALERTS.cpu, f.cpuPercent, 'consider_scaling_out');
  if (f.errorRate >= ALERTS.errorRate) alert('error_rate_high', ALERTS.errorRate, f.errorRate, 'investigate_errors');
  out.alert_conditions = alerts;
  if (includeCapabilities) out.capabilities = Object.keys(ELEMENTS);
  return out;
}

function introspect(data, ctx) {
  const r = ctx.reactor;
  return {
    reactor_id: ctx.reactorId,
    implementation: ctx.implementation,
    specializations: ctx.specializations,
    capacity: { max_concurrent_packets: r.config.maxConcurrent, max_queue: 0, in_flight: r.inFlight, queued: 0 },
    supported_packets: Object.entries(ELEMENTS).map(([key, spec]) => {
      const [group, element] = key.split(':');
      return {
        group, element, cpu_bound: Boolean(spec.cpuBound), contract: spec.contract,
        priority_range: spec.priorityRange, timeout_ms: spec.timeoutMs,
        avg_processing_time_ms: r.stats.avgMs(),
      };
    }),
  };
}

// ---- df:transform ---------------------------------------------------------------------

// Whitespace for trim and split: Unicode White_Space plus the C0 separators U+001C–U+001F,
// which is what packetflow's Python reactor strips; JS's own \s differs (it has U+FEFF and
// lacks U+0085 and U+001C–U+001F), and the same packet must give the same answer anywhere.
const WS = '\\t\\n\\v\\f\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WS_EDGES = new RegExp(`^[${WS}]+|[${WS}]+$`, 'gu');
const WS_LEAD = new RegExp(`^[${WS}]+`, 'u');
const WS_TRAIL = new RegExp(`[${WS}]+$`, 'u');
const WS_RUN = new RegExp(`[${WS}]+`, 'u');

function needString(value, field) {
  if (!isString(value)) throw bad(field, 'string', value, 'type');
  return value;
}

function pythonSplit(s, sep, maxsplit) {
  if (sep === null) {
    // No separator: runs of whitespace split, empty strings dropped (like most split()s).
    const parts = [];
    let rest = s.replace(WS_LEAD, '');
    while (rest.length) {
      if (maxsplit >= 0 && parts.length === maxsplit) {
        parts.push(rest.replace(WS_TRAIL, ''));
        return parts;
      }
      const m = WS_RUN.exec(rest);
      if (!m) {
        parts.push(rest);
        break;
      }
      parts.push(rest.slice(0, m.index));
      rest = rest.slice(m.index + m[0].length);
    }
    return parts;
  }
  const all = s.split(sep);
  if (maxsplit < 0 || all.length <= maxsplit + 1) return all;
  return [...all.slice(0, maxsplit), all.slice(maxsplit).join(sep)];
}

function roundHalfAway(x, digits) {
  // Rounds the number's shortest decimal form, so 2.675 → 2.68 (binary rounding gives 2.67).
  const text = Math.abs(x).toString();
  if (/e/i.test(text)) return digits <= 0 ? Math.round(x) : Number(x.toFixed(Math.min(digits, 100)));
  const [intPart, fracPart = ''] = text.split('.');
  const allDigits = intPart + fracPart;
  const keep = intPart.length + digits;
  if (keep >= allDigits.length) return digits <= 0 ? Math.trunc(x) : x;
  if (keep < 0) return 0;
  const kept = allDigits.slice(0, keep) || '0';
  let n = BigInt(kept);
  if (Number(allDigits[keep]) >= 5) n += 1n;
  let out;
  if (digits >= 0) {
    const s = n.toString().padStart(digits + 1, '0');
    out = Number(digits ? `${s.slice(0, s.length - digits)}.${s.slice(s.length - digits)}` : s);
  } else {
    out = Number(`${n}${'0'.repeat(-digits)}`);
  }
  return x < 0 && out !== 0 ? -out : out;
}

const NUMBER_RE = /^[+-]?(\d+(_\d+)*\.?(\d+(_\d+)*)?|\.\d+)([eE][+-]?\d+)?$/;

const PER_ITEM = {
  uppercase: (v, f) => needString(v, f).toUpperCase(),
  lowercase: (v, f) => needString(v, f).toLowerCase(),
  trim: (v, f, p) => {
    const s = needString(v, f);
    if (p.chars === undefined || p.chars === null) return s.replace(WS_EDGES, '');
    const chars = new Set(needString(p.chars, `${DATA}.parameters.chars`));
    const cps = [...s];
    let a = 0;
    let b = cps.length;
    while (a < b && chars.has(cps[a])) a += 1;
    while (b > a && chars.has(cps[b - 1])) b -= 1;
    return cps.slice(a, b).join('');
  },
  title: (v, f) => needString(v, f).toLowerCase().replace(/(^|[^\p{L}\p{M}])(\p{L})/gu, (m, pre, ch) => pre + ch.toUpperCase()),
  reverse: (v, f) => {
    if (Array.isArray(v)) return [...v].reverse();
    return [...needString(v, f)].reverse().join('');
  },
  length: (v, f) => {
    if (isString(v)) return [...v].length;
    if (Array.isArray(v)) return v.length;
    if (isObject(v)) return Object.keys(v).length;
    throw bad(f, 'string, array or object', v, 'type');
  },
  split: (v, f, p) => {
    const sep = p.separator === undefined || p.separator === null ? null : needString(p.separator, `${DATA}.parameters.separator`);
    if (sep === '') throw bad(`${DATA}.parameters.separator`, 'non-empty string', sep, 'min_length', 'parameters.separator must not be empty');
    const max = p.maxsplit === undefined || p.maxsplit === null ? -1 : p.maxsplit;
    if (!Number.isInteger(max)) throw bad(`${DATA}.parameters.maxsplit`, 'integer', max, 'type');
    return pythonSplit(needString(v, f), sep, max);
  },
  replace: (v, f, p) => {
    const s = needString(v, f);
    const old = needString(p.old, `${DATA}.parameters.old`);
    const neu = needString(p.new, `${DATA}.parameters.new`);
    const count = p.count === undefined || p.count === null ? -1 : p.count;
    if (!Number.isInteger(count)) throw bad(`${DATA}.parameters.count`, 'integer', count, 'type');
    if (count < 0) return s.split(old).join(neu);
    const parts = s.split(old);
    if (parts.length - 1 <= count) return parts.join(neu);
    return parts.slice(0, count + 1).join(neu) + old + parts.slice(count + 1).join(old);
  },
  round: (v, f, p) => {
    if (typeof v !== 'number') throw bad(f, 'number', v, 'type');
    const digits = p.digits === undefined || p.digits === null ? 0 : p.digits;
    if (!Number.isInteger(digits) || digits < -MAX_ROUND_DIGITS || digits > MAX_ROUND_DIGITS) {
      throw bad(`${DATA}.parameters.digits`, `integer -${MAX_ROUND_DIGITS}..${MAX_ROUND_DIGITS}`, digits, 'range');
    }
    return roundHalfAway(v, digits);
  },
  to_number: (v, f) => {
    if (typeof v === 'number') return v;
    const s = needString(v, f).trim();
    if (!NUMBER_RE.test(s)) throw bad(f, 'numeric string', v, 'number_format', `${f} is not a number: ${JSON.stringify(v).slice(0, 80)}`);
    return Number(s.replace(/_/g, ''));
  },
  json_parse: (v, f) => {
    try {
      return JSON.parse(needString(v, f));
    } catch (err) {
      if (err instanceof PacketError) throw err;
      throw bad(f, 'JSON text', v, 'json', `${f} is not JSON: ${err.message}`);
    }
  },
  json_stringify: (v, f, p) => {
    const indent = p.indent === undefined || p.indent === null ? undefined : p.indent;
    if (indent !== undefined && (!Number.isInteger(indent) || indent < 0 || indent > 10)) {
      throw bad(`${DATA}.parameters.indent`, 'integer 0..10', indent, 'range');
    }
    const sortKeys = p.sort_keys === true;
    const sorted = (x) => {
      if (Array.isArray(x)) return x.map(sorted);
      if (isObject(x)) return Object.fromEntries(Object.keys(x).sort(compareCodePoints).map((k) => [k, sorted(x[k])]));
      return x;
    };
    return JSON.stringify(sortKeys ? sorted(v) : v, null, indent);
  },
};

function sortList(items, p) {
  const reverse = p.reverse === true;
  const by = p.by === undefined || p.by === null ? null : needString(p.by, `${DATA}.parameters.by`);
  const keyOf = (item, i) => {
    if (by === null) return item;
    if (!isObject(item)) throw bad(`${DATA}.input[${i}]`, 'object (parameters.by is set)', item, 'type');
    return item[by];
  };
  const keys = items.map(keyOf);
  const present = keys.filter((k) => k !== null && k !== undefined);
  const kinds = new Set(present.map((k) => typeof k));
  if (present.some((k) => typeof k !== 'number' && typeof k !== 'string') || kinds.size > 1) {
    const i = items.findIndex((item, j) => {
      const k = keys[j];
      return k !== null && k !== undefined && (typeof k !== [...kinds][0] || (typeof k !== 'number' && typeof k !== 'string'));
    });
    if (by === null && present.some(isObject)) {
      throw bad(`${DATA}.parameters.by`, 'string (records need a sort key)', undefined, 'required_field', 'sorting records needs parameters.by');
    }
    throw bad(`${DATA}.input[${Math.max(i, 0)}]${by ? `.${by}` : ''}`, 'numbers or strings, not mixed', items[Math.max(i, 0)], 'comparable');
  }
  const cmp = (a, b) => (typeof a === 'string' ? compareCodePoints(a, b) : a - b);
  const order = items.map((item, i) => i);
  order.sort((i, j) => {
    const a = keys[i];
    const b = keys[j];
    const aMissing = a === null || a === undefined;
    const bMissing = b === null || b === undefined;
    if (aMissing || bMissing) return aMissing === bMissing ? i - j : aMissing ? 1 : -1; // nulls last
    const c = cmp(a, b);
    return (reverse ? -c : c) || i - j;
  });
  return order.map((i) => items[i]);
}

function uniqueList(items, p) {
  const by = p.by === undefined || p.by === null ? null : needString(p.by, `${DATA}.parameters.by`);
  const seen = new Set();
  return items.filter((item) => {
    const key = canonical(by !== null && isObject(item) ? item[by] : item);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function joinList(items, p) {
  const sep = p.separator === undefined || p.separator === null ? '' : needString(p.separator, `${DATA}.parameters.separator`);
  // Numbers join in their decimal form (as packetflow's Python reactor does); anything else
  // but a string is PF002. JS cannot tell 1.0 from 1, so a float with no fraction joins as "1".
  return items.map((item, i) => {
    if (typeof item === 'number') return String(item);
    return needString(item, `${DATA}.input[${i}]`);
  }).join(sep);
}

const WHOLE_LIST = { sort: sortList, unique: uniqueList, join: joinList };
const OPERATIONS = [...Object.keys(PER_ITEM), ...Object.keys(WHOLE_LIST)];
const LIST_SCOPE = new Set(['reverse', 'length', 'json_stringify']);
// Operations that take any JSON value: on a record without `fields` they see the whole record.
const WHOLE_VALUE = new Set(['json_stringify']);

function transformRecord(record, fields, op, p, path) {
  const out = { ...record };
  for (const name of fields) {
    if (!(name in record)) {
      delete out[name]; // a missing field is left out
      continue;
    }
    if (record[name] === null) continue; // null stays null
    out[name] = op(record[name], `${path}.${name}`, p);
  }
  return out;
}

function transform(data, ctx) {
  const input = inputOf(data, ctx);
  if (data.operation === undefined) throw bad(`${DATA}.operation`, 'string', undefined, 'required_field', `missing required field ${DATA}.operation`);
  const operation = needString(data.operation, `${DATA}.operation`);
  if (!OPERATIONS.includes(operation)) {
    throw new PacketError('PF002', `unknown operation ${JSON.stringify(operation)}`, {
      details: { field: `${DATA}.operation`, expected_type: OPERATIONS.join('|'), received_type: `string ${operation}`, validation_rule: 'enum' },
    });
  }
  const p = optional(data, 'parameters', 'object', isObject, {});
  const scope = optional(p, 'scope', '"item" or "list"', (v) => v === 'item' || v === 'list', 'item', PARAMS);
  let fields = null;
  if (p.fields !== undefined && p.fields !== null) {
    if (!Array.isArray(p.fields) || !p.fields.every(isString)) throw bad(`${DATA}.parameters.fields`, 'array of strings', p.fields, 'type');
    fields = p.fields;
  }
  const done = (result, n) => ({ result, operation_applied: operation, items_processed: n });

  if (WHOLE_LIST[operation]) {
    if (!Array.isArray(input)) throw bad(`${DATA}.input`, 'array', input, 'type', `${operation} works on a list`);
    return done(WHOLE_LIST[operation](input, p), input.length);
  }
  const op = PER_ITEM[operation];
  if (Array.isArray(input)) {
    if (scope === 'list' && LIST_SCOPE.has(operation)) return done(op(input, `${DATA}.input`, p), input.length);
    const result = input.map((item, i) => {
      const path = `${DATA}.input[${i}]`;
      if (isObject(item)) {
        if (!fields && WHOLE_VALUE.has(operation)) return op(item, path, p);
        if (!fields) throw bad(`${DATA}.parameters.fields`, 'array of strings (the items are records)', undefined, 'required_field');
        return transformRecord(item, fields, op, p, path);
      }
      return op(item, path, p);
    });
    return done(result, input.length);
  }
  if (isObject(input) && fields) return done(transformRecord(input, fields, op, p, `${DATA}.input`), 1);
  return done(op(input, `${DATA}.input`, p), 1);
}

// ---- df:wordcount (this reactor's own element) ------------------------------------------

function wordcount(data, ctx) {
  const input = inputOf(data, ctx);
  const texts = Array.isArray(input) ? input : [input];
  texts.forEach((t, i) => needString(t, Array.isArray(input) ? `${DATA}.input[${i}]` : `${DATA}.input`));
  const p = optional(data, 'parameters', 'object', isObject, {});
  const top = optional(p, 'top', `integer 0..${MAX_TOP_WORDS}`, (v) => Number.isInteger(v) && v >= 0 && v <= MAX_TOP_WORDS, 10, PARAMS);
  const caseSensitive = optional(p, 'case_sensitive', 'boolean', isBool, false, PARAMS);
  const locale = optional(p, 'locale', 'BCP 47 language tag', isString, undefined, PARAMS);
  let segmenter;
  let graphemes;
  try {
    // Unicode word boundaries (UAX #29 plus dictionaries for Thai, CJK…), not \w, which is ASCII.
    segmenter = new Intl.Segmenter(locale, { granularity: 'word' });
    graphemes = new Intl.Segmenter(locale, { granularity: 'grapheme' });
  } catch (err) {
    throw bad(`${DATA}.parameters.locale`, 'BCP 47 language tag', locale, 'locale', `bad locale: ${err.message}`);
  }
  const counts = new Map();
  let words = 0;
  let characters = 0;
  let graphemeCount = 0;
  for (const raw of texts) {
    const text = raw.normalize('NFC'); // é as one code point or two counts as the same word
    characters += [...text].length;
    for (const _ of graphemes.segment(text)) graphemeCount += 1; // eslint-disable-line no-unused-vars
    for (const seg of segmenter.segment(text)) {
      if (!seg.isWordLike) continue;
      const word = caseSensitive ? seg.segment : seg.segment.toLocaleLowerCase(locale);
      words += 1;
      counts.set(word, (counts.get(word) || 0) + 1);
    }
  }
  const ranked = [...counts.entries()]
    .map(([word, count], order) => ({ word, count, order }))
    .sort((a, b) => b.count - a.count || a.order - b.order)
    .slice(0, top)
    .map(({ word, count }) => ({ word, count }));
  return {
    result: { words, unique_words: counts.size, characters, graphemes: graphemeCount, top: ranked },
    items_processed: texts.length,
  };
}

// key → handler and its §5.2 defaults (priority range, Appendix C timeout) and data contract.
const ELEMENTS = {
  'cf:ping': {
    handler: ping, timeoutMs: 5000, priorityRange: [1, 10],
    contract: { data: { echo_data: 'optional: any JSON value, answered back' }, result: 'pong, echo_data, reactor_id, response_time_ms, implementation, timestamp' },
  },
  'cf:health': {
    handler: health, timeoutMs: 10000, priorityRange: [1, 10],
    contract: { data: { detail_level: 'basic|full', include_metrics: 'boolean', include_capabilities: 'boolean' }, result: '§9.1.2 health' },
  },
  'cf:introspect': {
    handler: introspect, timeoutMs: 15000, priorityRange: [1, 10],
    contract: { data: {}, result: 'reactor_id, implementation, specializations, capacity, supported_packets' },
  },
  'df:transform': {
    handler: transform, timeoutMs: 30000, priorityRange: [1, 10], cpuBound: true,
    contract: { data: { input: 'value, list or records', operation: OPERATIONS.join('|'), parameters: 'object' }, result: 'result, operation_applied, items_processed' },
  },
  'df:wordcount': {
    handler: wordcount, timeoutMs: 30000, priorityRange: [1, 10], cpuBound: true,
    contract: {
      data: { input: 'string or list of strings', parameters: { top: `integer 0..${MAX_TOP_WORDS} (default 10)`, case_sensitive: 'boolean', locale: 'BCP 47 tag' } },
      result: 'result: {words, unique_words, characters, graphemes, top: [{word, count}]}, items_processed',
    },
  },
};

module.exports = { ELEMENTS, PacketError, OPERATIONS, roundHalfAway, compareCodePoints };
