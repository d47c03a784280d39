"""Every bound the edge puts on untrusted input (frames, HTTP bodies, envelope fields),
each with the reason it has its value (STYLE 5).

A value over one of these is answered PF001 (the frame as a whole) or PF002 naming the
field (DESIGN §3); nothing past the edge has to re-check them.
"""

from __future__ import annotations

from typing import Final

# §12.4.1 max_frame_size; also the HTTP API's largest body, since a POST /v1/packets body
# is the same envelope a frame carries (DESIGN §2).
MAX_FRAME_BYTES: Final = 1024 * 1024
# §12.4.2 max_batch_size.
MAX_BATCH: Final = 50
# Nesting depth of any JSON the edge decodes, counted without recursion before a decoder
# runs: msgspec and the stdlib json recurse per level and must stay far from Python's
# recursion limit (1000). 128 is serde_json's default limit; an envelope's own structure
# uses 5 levels (payload.packet.data.…), the rest is room for user data.
MAX_JSON_DEPTH: Final = 128
# Ids of the envelope (message_id, source_id, destination_id, correlation_id) and reactor
# ids: a uuid4 with a prefix is ~45 chars; 256 leaves room for hierarchical names (a DNS
# name is at most 253) while keeping an id echoed in a reply small.
MAX_ID_CHARS: Final = 256
# protocol_version and packet version: "1.0"-style strings; 16 is far above any real one.
MAX_VERSION_CHARS: Final = 16
# An affinity matrix version (§6.4, e.g. "1.1", "2024-06-01.3"): it is stored and shown in
# GET /v1/affinity and its history, so it must stay a label, not a payload.
MAX_MATRIX_VERSION_CHARS: Final = 64
# An element name ([a-z][a-z0-9_]*): the longest standard one has 15 chars.
MAX_ELEMENT_CHARS: Final = 64
# timestamp: ms since the Unix epoch, non-negative, up to 9999-12-31T23:59:59.999Z — the
# last instant a 4-digit ISO 8601 year and Python's datetime can name.
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999
# ttl and a packet's timeout_ms, in ms: 2**31 - 1 (~24.8 days), the longest delay a
# 32-bit timer takes (JavaScript's setTimeout, many RPC deadlines). A timeout up to this
# is capped to its element's maximum (DESIGN §4: the longest is mc:learn's 6,000 s); a
# larger one (2**70) is a mistake or an attack, not a wish to wait, and is PF002.
MAX_DURATION_MS: Final = 2**31 - 1
# sequence_id: 2**53 - 1, the largest integer a JavaScript peer counts exactly.
MAX_SEQUENCE_ID: Final = 2**53 - 1
# A packet's dependencies: a molecule has at most 1000 packets (protocol/molecules.py).
MAX_DEPENDENCIES: Final = 1000
# How much of a bad value an ERROR's error_details may echo back: enough to recognise it,
# never the 900 KB that was sent.
MAX_ECHO_CHARS: Final = 80
