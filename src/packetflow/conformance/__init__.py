"""The PFAP §12.3.1 conformance kit: probes any PFAP WebSocket endpoint and judges its replies."""
