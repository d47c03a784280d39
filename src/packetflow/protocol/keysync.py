"""Merging two copies of the API key list (PFAP §11.1.1) that gateways of one cluster
changed independently: the rule that keeps every gateway's keys in step (issue 14).

A key is a record ``{id, sha256, roles, created, label, revoked}`` (security/keystore.py's
file format). The merge is the union by id, and a key revoked in either copy is revoked
in the result: creating and revoking commute, so copies merged in any order agree, and a
revocation is never lost to a concurrent write of an older copy.
"""

from __future__ import annotations

from typing import Any


def merge_keys(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The union of two key lists by ``id``; revoked wins; ordered by (created, id)."""
    merged: dict[str, dict[str, Any]] = {}
    for item in (*a, *b):
        key_id = str(item.get("id"))
        known = merged.get(key_id)
        if known is None:
            merged[key_id] = dict(item)
        elif item.get("revoked") and not known.get("revoked"):
            merged[key_id] = {**known, "revoked": True}
    return sorted(merged.values(), key=lambda r: (float(r.get("created") or 0), str(r["id"])))


def same_keys(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Whether two key lists hold the same keys with the same revocations."""
    return merge_keys(a, []) == merge_keys(b, [])
