"""Frames made by mutating the seed corpus (tests/corpus/), for the fuzz suites: byte
flips, truncation, splices, deep nesting, huge and non-finite numbers, wrong types at
every path, unicode, long strings, unknown and duplicate keys, batches.

One ``random.Random`` drives everything, so a failing frame is reproduced from its seed
and index alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from packetflow.protocol.limits import MAX_BATCH, MAX_JSON_DEPTH

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
# Seeds small enough to mutate fast; the deep and huge ones are run as they are.
SEED_FRAMES: list[bytes] = [
    p.read_bytes() for p in sorted(CORPUS_DIR.glob("*.json")) if p.stat().st_size < 8192
]


def _load(frame: bytes) -> Any:
    try:
        return json.loads(frame)
    except (ValueError, RecursionError):
        return None


SEED_DOCS: list[Any] = [
    doc for doc in map(_load, SEED_FRAMES) if isinstance(doc, dict) and "payload" in doc
]
# Each seed as compact text (re-parsed per use: faster than deepcopy) with its paths.
_SEEDS: list[tuple[str, list[tuple[Any, ...]]]] = []

# Raw JSON texts that Python's json would not write, or not this way; placed in a
# document as a placeholder string and substituted after encoding.
RAW_NUMBERS = [
    "1e400", "-1e400", "1E+999", "NaN", "Infinity", "-Infinity", str(2**70), str(-(2**70)),
    "1" + "0" * 400, "1e308", "-0.0", "2.5e-400", str(2**53), str(2**63), "0.1", "-1", "0",
    "1.0", "10", "11", "01", "1.", ".5", "+1", "0x10",
]  # fmt: skip
WRONG_TYPES: list[Any] = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [1, "a"], {"a": 1},
                          "cf", "submit", "1.0", "2.0", "packet_1", "x" * 300]  # fmt: skip
UNICODE = ["\u0000", "é", "😀" * 50, "\u202eRTL", "\uffff", "\u2028", "ﬀ", "Ω" * 200, "\\"]
RAW_STRINGS = ['"\\ud800"', '"\\udc00x"', '"\\u00"', '"\\x41"', '"a\nb"', '"\t"', '"\\"']
SPLICES = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"1e400", b"NaN", b"\\", b"\x00",
           b"\xff", b"\xc3", b"\xed\xa0\x80", b"null", b"[[[[", b"}}}}", b" ", b"\n"]  # fmt: skip
DEPTHS = [MAX_JSON_DEPTH - 6, MAX_JSON_DEPTH - 4, MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 1, 300,
          MAX_JSON_DEPTH - 4, 3000]  # fmt: skip
PLACEHOLDER = "@@raw@@{}@@"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) into a decoded JSON value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(paths(child, (*prefix, index)))
    return out


def _seed_table() -> list[tuple[str, list[tuple[Any, ...]]]]:
    if not _SEEDS:
        _SEEDS.extend((json.dumps(doc), paths(doc)) for doc in SEED_DOCS)
    return _SEEDS


class Mutator:
    """Frames from the corpus, mutated by a seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._raw: list[str] = []

    def _raw_value(self, text: str) -> str:
        self._raw.append(text)
        return PLACEHOLDER.format(len(self._raw) - 1)

    def _dump(self, doc: Any) -> bytes:
        text = json.dumps(doc, ensure_ascii=self.rng.random() < 0.5)
        for i, raw in enumerate(self._raw):
            text = text.replace(json.dumps(PLACEHOLDER.format(i)), raw)
        self._raw.clear()
        return text.encode("utf-8", "surrogatepass")

    def _value(self) -> Any:
        pick = self.rng.random()
        if pick < 0.3:
            return self._raw_value(self.rng.choice(RAW_NUMBERS))
        if pick < 0.6:
            return json.loads(json.dumps(self.rng.choice(WRONG_TYPES)))
        if pick < 0.75:
            return self.rng.choice(UNICODE)
        if pick < 0.85:
            return self._raw_value(self.rng.choice(RAW_STRINGS))
        if pick < 0.95:
            depth = self.rng.choice(DEPTHS)
            return self._raw_value("[" * depth + "1" + "]" * depth)
        # Mostly just over a limit; a rare one near the frame limit.
        return "x" * (100_000 if self.rng.random() < 0.02 else self.rng.choice([257, 5000]))

    def envelope(self) -> Any:
        """A seed envelope with 1-4 fields replaced, deleted or added."""
        text, paths = self.rng.choice(_seed_table())
        doc = json.loads(text)
        for _ in range(self.rng.randint(1, 4)):
            path = self.rng.choice(paths)
            if not path:
                continue
            parent = doc
            try:
                for part in path[:-1]:
                    parent = parent[part]
                if not isinstance(parent, dict | list):
                    continue
                parent[path[-1]]
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit of this frame removed or replaced it
            action = self.rng.random()
            if action < 0.7:
                parent[path[-1]] = self._value()
            elif action < 0.85:
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[self.rng.choice(["zz", "message_id", "", "é", "x" * 300])] = self._value()
        return doc

    def _bytes_edit(self, frame: bytes) -> bytes:
        data = bytearray(frame)
        for _ in range(self.rng.randint(1, 6)):
            op = self.rng.random()
            at = self.rng.randrange(len(data) + 1)
            if op < 0.35 and data:
                data[min(at, len(data) - 1)] = self.rng.randrange(256)
            elif op < 0.5:
                del data[at:]
            elif op < 0.75:
                data[at:at] = self.rng.choice(SPLICES)
            else:
                del data[at : at + self.rng.randint(1, 8)]
        return bytes(data)

    def structured(self) -> bytes:
        """A seed envelope with fields broken (see ``envelope``), or with a duplicate key."""
        frame = self._dump(self.envelope())
        if self.rng.random() < 0.1:
            # A duplicate key: the last one wins in msgspec, as in JSON.parse.
            tail = json.dumps(self.rng.choice(WRONG_TYPES)).encode()
            frame = frame.rstrip()[:-1] + b', "message_id": ' + tail + b"}"
        return frame

    def frames(self, count: int) -> Iterator[bytes]:
        """``count`` frames: a tenth built field by field (the costly part), the rest
        derived from those and the seeds by byte edits and by batching."""
        pool = [self.structured() for _ in range(max(1, count // 10))]
        yield from pool
        sources = pool + SEED_FRAMES
        for _ in range(count - len(pool)):
            kind = self.rng.random()
            if kind < 0.7:
                yield self._bytes_edit(self.rng.choice(sources))
            else:
                size = self.rng.choice([0, 1, 2, 3, 4, 5, 8, MAX_BATCH, MAX_BATCH + 1]
                                       if self.rng.random() < 0.1 else [1, 2, 3])  # fmt: skip
                items = [self.rng.choice(pool) if self.rng.random() < 0.9
                         else json.dumps(self.rng.choice(WRONG_TYPES)).encode()
                         for _ in range(size)]  # fmt: skip
                yield b"[" + b",".join(items) + b"]"
