"""Fuzzing the frame handler in-process (STYLE 8, DESIGN §3): ``decode_frame`` and the
ERROR a server builds from what it returns, on over 200,000 generated frames.

Invariant: every envelope of a frame decodes to a valid message or to exactly one
PF001/PF002 naming the path, whose ERROR envelope encodes, decodes back, correlates to
a readable ``message_id`` and stays small; a batch gets one answer per element; a valid
SUBMIT's data decodes or is PF001/PF002. Nothing raises anything else.

Frames: ``test_mutated_corpus_frames`` 4 × 50,000 from tests/frame_mutations.py (seeded:
``PF_FUZZ_SEED`` reproduces a run), plus the Hypothesis tests below (1,500 examples:
their generator costs ~100× a mutation, so they add the shapes a mutation would not
find rather than the count). About 50 s of CPU in all.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetflow.protocol import errors, messages
from packetflow.protocol.limits import MAX_BATCH, MAX_JSON_DEPTH

from ..frame_mutations import SEED_DOCS, Mutator, paths
from .test_corpus import check_invariant

FUZZ_SEED = int(os.environ.get("PF_FUZZ_SEED", "20261204"))
CHUNKS = 4
FRAMES_PER_CHUNK = 50_000
# An ERROR echoes ids and bad values only within limits (limits.MAX_ID_CHARS, MAX_ECHO_CHARS):
# its frame stays small whatever came in.
MAX_REPLY_BYTES = 4096
HYPOTHESIS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)  # fmt: skip


# A batch with at most this many brackets is far from msgspec's recursion limit, so it is
# always split and each element answered (a deeper one with its own PF001).
SPLIT_BRACKETS = 2 * MAX_JSON_DEPTH


def _elements(frame: bytes) -> int | None:
    """How many answers a batch frame must get (one per element), when that is known
    without the code under test: a JSON array of 1-50 shallow elements."""
    if frame.lstrip()[:1] != b"[" or frame.count(b"[") + frame.count(b"{") > SPLIT_BRACKETS:
        return None
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and 1 <= len(value) <= MAX_BATCH:
        return len(value)
    return None


def check_frame(frame: bytes) -> None:
    """The invariant, on one frame, through to the reply a server would send."""
    out = check_invariant(frame)
    expected = _elements(frame)
    if expected is not None and len(out) != expected:
        # A frame msgspec refuses as a whole (e.g. a lone surrogate escape the stdlib
        # json accepts) is one PF001; anything else must answer each element.
        assert len(out) == 1 and isinstance(out[0], messages.FrameError), out
        assert out[0].error.code == "PF001", out[0].error
    for item in out:
        if isinstance(item, messages.FrameError):
            reply = messages.encode(messages.error_envelope(
                item.error, message_id="msg_reply", now_ms=0, source_id="fuzz",
                correlation_id=item.message_id, packet_id=item.packet_id,
            ))  # fmt: skip
            assert len(reply) <= MAX_REPLY_BYTES, reply[:300]
            back = messages.decode_one(reply)
            assert isinstance(back, messages.Error)
            assert back.correlation_id == item.message_id
            assert back.payload.error_details["field"], back.payload
        elif isinstance(item, messages.Submit):
            try:
                messages.decode_data(item.payload.packet.data)
            except errors.PacketFlowError as err:
                assert err.code in ("PF001", "PF002"), err
                assert err.field, err


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mutated_corpus_frames(chunk: int) -> None:
    """Byte flips, truncation, splices, deep nesting, huge and non-finite numbers, wrong
    types at every path, unicode, long strings, duplicate keys, batches."""
    mutator = Mutator(FUZZ_SEED + chunk)
    for index, frame in enumerate(mutator.frames(FRAMES_PER_CHUNK)):
        try:
            check_frame(frame)
        except AssertionError as exc:
            raise AssertionError(
                f"PF_FUZZ_SEED={FUZZ_SEED} chunk {chunk} frame {index}: {frame[:500]!r}"
            ) from exc


# ---------------------------------------------------------------- Hypothesis

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53, max_value=2**80)
    | st.floats()  # NaN and ±Infinity included: json writes them as literals
    | st.text()
    | st.builds(lambda n: "é" * n, st.sampled_from([255, 257, 5000]))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _deep(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


deep_values = st.builds(
    _deep,
    st.sampled_from([MAX_JSON_DEPTH - 8, MAX_JSON_DEPTH - 4, MAX_JSON_DEPTH, 200]),
    st.sampled_from(["list", "dict"]),
)


@st.composite
def broken_envelopes(draw: st.DrawFn) -> Any:
    """A seed envelope with one to three values replaced at any path."""
    doc = json.loads(json.dumps(draw(st.sampled_from(SEED_DOCS))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = draw(values | deep_values)
    return doc


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@settings(HYPOTHESIS, max_examples=600)
@given(broken_envelopes(), st.booleans())
def test_hypothesis_envelopes_with_any_value_at_any_path(doc: Any, ascii_only: bool) -> None:
    check_frame(_encode(doc, ascii_only))


@settings(HYPOTHESIS, max_examples=300)
@given(st.lists(broken_envelopes() | values, min_size=1, max_size=6))
def test_hypothesis_batches_answer_each_element(items: list[Any]) -> None:
    check_frame(_encode(items, True))


@settings(HYPOTHESIS, max_examples=600)
@given(broken_envelopes(), st.integers(min_value=0), st.binary(max_size=8),
       st.integers(min_value=0, max_value=8))  # fmt: skip
def test_hypothesis_bytes_spliced_into_envelopes(
    doc: Any, position: int, insert: bytes, cut: int
) -> None:
    frame = _encode(doc, False)
    at = position % (len(frame) + 1)
    check_frame(frame[:at] + insert + frame[at + cut :])
