"""Seed-frame corpus and fuzzing of ``decode_frame`` (STYLE 8, DESIGN §3).

Invariant: every envelope of a frame decodes to a valid message or to exactly one
PF001/PF002 ``FrameError``; ``decode_frame`` never raises anything else.

Corpus files in tests/corpus/ are named by what they must produce:
``valid_*`` every envelope decodes; ``pf001_*`` / ``pf002_*`` every envelope is that
error; ``mixed_*`` only the invariant. A batch (JSON array) yields one result per element.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetflow.protocol import errors, messages

from ..frame_mutations import paths

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"
CORPUS = sorted(CORPUS_DIR.glob("*.json"))
MESSAGE_CLASSES = (
    messages.Submit,
    messages.Result,
    messages.Error,
    messages.Heartbeat,
    messages.Discover,
    messages.Coordinate,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_invariant(
    frame: bytes | str, expected_count: int | None = None
) -> list[messages.Message | messages.FrameError]:
    """Assert the decode_frame invariant and return its output."""
    out = messages.decode_frame(frame)  # must not raise
    assert isinstance(out, list)
    raw = frame.encode() if isinstance(frame, str) else frame
    if raw.lstrip()[:1] != b"[":
        assert len(out) == 1, out
    assert 1 <= len(out) <= messages.MAX_BATCH
    if expected_count is not None:
        assert len(out) == expected_count, out
    for item in out:
        if isinstance(item, messages.FrameError):
            err = item.error
            assert type(err) in (errors.InvalidMessage, errors.InvalidPacket), err
            assert err.code in ("PF001", "PF002")
            assert err.code == ("PF001" if isinstance(err, errors.InvalidMessage) else "PF002")
            assert item.message_id is None or isinstance(item.message_id, str)
            assert item.packet_id is None or isinstance(item.packet_id, str)
            if err.code == "PF002":
                assert isinstance(err.field, str)
                assert err.field
            payload = err.to_payload(packet_id=item.packet_id)
            json.dumps(payload)
            assert payload["retry_possible"] is False
        else:
            assert isinstance(item, MESSAGE_CLASSES), item
            # A valid envelope survives the wire unchanged.
            again = messages.decode_frame(messages.encode(item))
            assert again == [item]
    return out


# ---------------------------------------------------------------- the corpus


def test_corpus_is_present() -> None:
    prefixes = {p.name.split("_", 1)[0] for p in CORPUS}
    assert {"valid", "pf001", "pf002", "mixed"} <= prefixes, prefixes


def _count(data: bytes) -> int | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # the deep-nesting seeds are too deep for json
        return 1
    if isinstance(value, list) and 1 <= len(value) <= messages.MAX_BATCH:
        return len(value)
    return 1


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_frame(path: Path) -> None:
    """Seed frames: the invariant plus the outcome the file name promises."""
    data = path.read_bytes()
    out = check_invariant(data, _count(data))
    kind = path.name.split("_", 1)[0]
    if kind == "valid":
        assert all(isinstance(item, MESSAGE_CLASSES) for item in out), out
    elif kind in ("pf001", "pf002"):
        assert all(isinstance(item, messages.FrameError) for item in out), out
        assert {item.error.code for item in out} == {kind.upper()}  # type: ignore[union-attr]
    else:
        assert kind == "mixed", path.name
        assert any(isinstance(item, messages.FrameError) for item in out)
        assert any(isinstance(item, MESSAGE_CLASSES) for item in out)


# ---------------------------------------------------------------- fuzzing

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
# Values a mutation is likely to make interesting for the schema.
plausible = st.one_of(
    json_values,
    st.sampled_from(["cf", "df", "ed", "co", "mc", "rm", "zz", "submit", "result", "error"]),
    st.sampled_from(["heartbeat", "discover", "coordinate", "announce", "progress", "1.0"]),
    st.sampled_from(["2.0", "transform", "Bad-Name", "", "x" * 129, "packet_1"]),
    st.integers(min_value=-3, max_value=14),
)

SEEDS: list[Any] = [
    json.loads(p.read_bytes())
    for p in CORPUS
    if p.name.startswith("valid_") and not p.read_bytes().lstrip().startswith(b"[")
]


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> Any:
    """A valid spec envelope with a few fields replaced, deleted or added."""
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(plausible)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(plausible)
    return doc


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(frame: bytes) -> None:
    """Arbitrary bytes: a message or exactly one PF001/PF002, never an exception."""
    check_invariant(frame)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(frame: str) -> None:
    check_invariant(frame)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json_values(value: Any) -> None:
    """Arbitrary JSON: lists are batches (one result per element, 1-50), else one result."""
    expected = len(value) if isinstance(value, list) and 1 <= len(value) <= 50 else 1
    check_invariant(json.dumps(value), expected)


@FUZZ
@given(mutated_envelopes())
def test_fuzz_mutated_spec_envelopes(doc: Any) -> None:
    """Spec envelopes with fields broken: still a message or exactly one PF001/PF002."""
    check_invariant(json.dumps(doc).encode(), 1 if not isinstance(doc, list) else None)


@FUZZ
@given(st.lists(mutated_envelopes(), min_size=1, max_size=6))
def test_fuzz_batches_of_mutated_envelopes(docs: list[Any]) -> None:
    """DESIGN §3: each batch element is handled alone — one result per element."""
    out = check_invariant(json.dumps(docs), len(docs))
    for doc, item in zip(docs, out, strict=True):
        alone = messages.decode_frame(json.dumps(doc))
        assert len(alone) == 1
        assert type(alone[0]) is type(item)
        if isinstance(item, messages.FrameError):
            assert isinstance(alone[0], messages.FrameError)
            assert alone[0].error.code == item.error.code
            assert alone[0].error.field == item.error.field
            assert alone[0].message_id == item.message_id


@FUZZ
@given(
    st.sampled_from(CORPUS),
    st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.integers(min_value=0, max_value=4),
            st.text(max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_corpus_edits(path: Path, edits: list[tuple[int, int, str]]) -> None:
    """Corpus frames with characters cut out and spliced in (kept valid UTF-8; invalid UTF-8 is
    covered by test_corpus_frame_with_invalid_utf8_byte)."""
    text = path.read_text(encoding="utf-8")
    for position, cut, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + cut :]
    check_invariant(text.encode())


@pytest.mark.parametrize(
    ("name", "position"),
    [("pf002_priority_11.json", 5), ("mixed_batch.json", 143)],
)
def test_corpus_frame_with_invalid_utf8_byte(name: str, position: int) -> None:
    data = bytearray((CORPUS_DIR / name).read_bytes())
    data[position] = 0x80
    check_invariant(bytes(data))
