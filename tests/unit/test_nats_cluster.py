"""gateway/nats_cluster.py's pure helpers: KV key names and outcome batches."""

from __future__ import annotations

import re

from packetflow.gateway.nats_cluster import _batches, _outcome_batch, _outcome_encoder, kv_key

KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")  # what NATS KV accepts


def test_safe_names_are_kept_and_others_become_a_digest() -> None:
    assert kv_key("reactor-1_a=b") == "reactor-1_a=b"
    for name in ("mol:1:a", "with space", "dots.are.hierarchy", "x" * 300, "é"):
        key = kv_key(name)
        assert KV_KEY.fullmatch(key) and "." not in key
        assert key == kv_key(name) and key != kv_key(name + "!")


def test_outcome_batches_stay_under_the_byte_limit_and_keep_order() -> None:
    items = [(f"k{i}", b"x" * 40) for i in range(10)]
    batches = _batches(items, 100)
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]
    assert [k for b in batches for k, _ in b] == [k for k, _ in items]
    assert _batches([], 100) == []
    assert _batches([("big", b"x" * 500)], 100) == [[("big", b"x" * 500)]]


def test_a_batch_round_trips() -> None:
    batch = [("a~1", b'{"x":1}'), ("b", b"")]
    assert _outcome_batch.decode(_outcome_encoder.encode(batch)) == batch
