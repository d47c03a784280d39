"""protocol/keysync.py: the API key lists of several gateways merge without losing a key
or a revocation (issue 14)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol.keysync import merge_keys, same_keys


def key(key_id: str, revoked: bool = False, created: float = 1.0) -> dict[str, Any]:
    return {"id": key_id, "sha256": f"d-{key_id}", "roles": ["admin"], "created": created,
            "label": None, "revoked": revoked}  # fmt: skip


def test_keys_made_on_two_gateways_are_both_kept() -> None:
    merged = merge_keys([key("a", created=1)], [key("b", created=2)])
    assert [k["id"] for k in merged] == ["a", "b"]


def test_a_revocation_on_either_side_wins() -> None:
    assert merge_keys([key("a")], [key("a", revoked=True)])[0]["revoked"] is True
    assert merge_keys([key("a", revoked=True)], [key("a")])[0]["revoked"] is True


def test_same_keys_ignores_order() -> None:
    assert same_keys([key("a"), key("b", created=2)], [key("b", created=2), key("a")])
    assert not same_keys([key("a")], [key("a", revoked=True)])


keys = st.lists(
    st.builds(key, st.sampled_from("abcdef"), st.booleans(), st.floats(0, 10)), max_size=8
)


@given(keys, keys, keys)
def test_merging_is_order_free(a: list[dict[str, Any]], b: list[dict[str, Any]],
                               c: list[dict[str, Any]]) -> None:  # fmt: skip
    """Copies merged in any order agree on which keys exist and which are revoked."""
    left = merge_keys(merge_keys(a, b), c)
    right = merge_keys(a, merge_keys(c, b))
    assert {k["id"]: k["revoked"] for k in left} == {k["id"]: k["revoked"] for k in right}
    assert {k["id"] for k in left} == {k["id"] for k in (*a, *b, *c)}
