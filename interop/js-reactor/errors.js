// The PFAP error contract: §10.1 codes, categories and retryability, the §4.2.3/§10.2 payload.
'use strict';

// §10.1: [category (wire form: lowercase + "_error", as §4.2.3 and §10.2 show), retryable,
// recovery]. PF401/PF403 come from packetflow's docs/security.md.
const CATALOGUE = {
  PF001: ['validation_error', false, 'Fix format'],
  PF002: ['validation_error', false, 'Fix packet'],
  PF003: ['routing_error', true, 'Wait/scale'],
  PF004: ['capacity_error', true, 'Load balance'],
  PF005: ['processing_error', true, 'Retry/route'],
  PF101: ['affinity_error', true, 'Force route'],
  PF102: ['molecular_error', true, 'Rebuild'],
  PF103: ['molecular_error', true, 'Optimize'],
  PF104: ['chemical_error', false, 'Recalibrate'],
  PF105: ['optimization_error', true, 'Fallback'],
  PF500: ['internal_error', true, 'Investigate'],
  PF501: ['resource_error', false, 'Scale up'],
  PF502: ['network_error', true, 'Reconnect'],
  PF503: ['service_error', true, 'Failover'],
  PF504: ['timeout_error', true, 'Extend timeout'],
  PF401: ['security_error', false, 'Present valid credentials'],
  PF403: ['security_error', false, 'Use credentials allowed to do this'],
};

// §10.3.1 starts backoff at 1 s; a retryable error without its own delay suggests that.
const DEFAULT_RETRY_DELAY_MS = 1000;

class PacketError extends Error {
  constructor(code, message, { details = null, context = null, retryDelayMs = null, retryPossible = null } = {}) {
    super(message);
    this.name = 'PacketError';
    this.code = code;
    this.details = details;
    this.context = context;
    this.retryDelayMs = retryDelayMs;
    this.retryPossible = retryPossible;
  }
}

function errorPayload(code, message, { packetId = null, details = null, context = null, reactorInfo = null, retryDelayMs = null, retryPossible = null } = {}) {
  const [category, retryable, recovery] = CATALOGUE[code] || CATALOGUE.PF500;
  const retry = retryPossible === null ? retryable : retryPossible;
  const delay = retry ? (retryDelayMs === null || retryDelayMs === undefined ? DEFAULT_RETRY_DELAY_MS : retryDelayMs) : null;
  const suggestions = [recovery];
  if (details && details.field) suggestions.push(`Check ${details.field}`);
  return {
    packet_id: packetId,
    error_code: code,
    error_category: category,
    error_message: message,
    error_details: details || {},
    error_context: { ...(context || {}), ...(packetId ? { packet_id: packetId } : {}) },
    reactor_info: reactorInfo,
    recovery_suggestions: suggestions,
    recovery_options: retry ? [{ strategy: 'retry_with_delay', delay_ms: delay, max_retries: 3 }] : [],
    retry_possible: retry,
    retry_delay_ms: delay,
  };
}

module.exports = { CATALOGUE, PacketError, errorPayload };
