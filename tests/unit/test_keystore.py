"""PFAP §11.1.1 key storage: hashed, owner-only, reloaded on change, revocable; the admin
key of a first start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from packetflow.protocol.errors import AuthenticationFailed
from packetflow.security.keystore import RELOAD_CHECK_S, KeyStore


def test_first_start_makes_one_admin_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    path = store.ensure_admin_key()
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    key = path.read_text().strip()
    assert store.authenticate(key).is_admin
    assert key not in store.path.read_text()
    assert KeyStore(tmp_path).ensure_admin_key() is None  # never a second one


def test_another_store_sees_created_and_revoked_keys(tmp_path: Path) -> None:
    running = KeyStore(tmp_path)
    key, rec = KeyStore(tmp_path).create({"packet_user"}, "ci")
    running.maybe_reload(RELOAD_CHECK_S * 10)
    assert running.authenticate(key).id == f"key:{rec.key_id}"
    assert KeyStore(tmp_path).revoke(rec.key_id)
    running.maybe_reload(RELOAD_CHECK_S * 20)
    with pytest.raises(AuthenticationFailed):
        running.authenticate(key)
    assert not running.is_live(rec.key_id)


def test_reload_is_rate_limited(tmp_path: Path) -> None:
    running = KeyStore(tmp_path)
    running.maybe_reload(100.0)
    key, _ = KeyStore(tmp_path).create({"reactor"})
    assert running.maybe_reload(100.0 + RELOAD_CHECK_S / 2) is False
    assert running.maybe_reload(100.0 + RELOAD_CHECK_S) is True
    assert running.authenticate(key)


def test_a_broken_file_keeps_the_previous_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, _ = store.create({"packet_user"})
    store.path.write_text("{not json")
    os.utime(store.path, ns=(1, 1))
    store.reload()
    assert store.authenticate(key)


def test_unknown_role_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        KeyStore(tmp_path).create({"root"})
