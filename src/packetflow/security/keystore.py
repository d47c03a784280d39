"""The API keys of one data dir (PFAP §11.1.1): ``DATA_DIR/security/keys.json`` holding
digests only, the admin key made on first start, and a cheap reload when the file changes
so ``packetflow keys create/revoke`` reach a running gateway without a restart."""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from ..protocol.authentication import (
    API_KEY_ALPHABET,
    API_KEY_LENGTH,
    KeyRecord,
    authenticate_key,
    key_digest,
)
from ..protocol.principals import DEFAULT_ROLES, SYSTEM_ADMIN, Principal
from .files import write_secret

log = logging.getLogger("packetflow.security")

SECURITY_DIR = "security"
KEYS_FILE = "keys.json"
ADMIN_KEY_FILE = "admin.key"
# The contract: a created or revoked key takes effect within 5 s; one stat() a second
# costs nothing next to the traffic it guards.
RELOAD_CHECK_S = 1.0


def security_dir(data_dir: Path) -> Path:
    return data_dir / SECURITY_DIR


def new_api_key() -> str:
    return "pf_" + "".join(secrets.choice(API_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))


class KeyStore:
    """The key file of one data dir, re-read when its mtime changes."""

    def __init__(self, data_dir: Path) -> None:
        self.path = security_dir(data_dir) / KEYS_FILE
        self.admin_key_path = security_dir(data_dir) / ADMIN_KEY_FILE
        self.records: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.reload()

    # ------------------------------------------------------------------ reading

    def reload(self) -> bool:
        """Re-read the file if it changed; True when it did."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            changed = self._stamp is not None
            self._stamp, self.records = None, {}
            return changed
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        try:
            raw = json.loads(self.path.read_text())
            self.records = {r.key_id: r for r in (_record(item) for item in raw["keys"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Keep the keys we had: a half-edited file must not lock everyone out.
            log.error("cannot read %s (%s); keeping the previous keys", self.path, exc)
            return False
        self._stamp = stamp
        return True

    def maybe_reload(self, now: float) -> bool:
        """``reload()`` at most once per RELOAD_CHECK_S (``now``: time.monotonic())."""
        if now - self._checked < RELOAD_CHECK_S:
            return False
        self._checked = now
        return self.reload()

    def authenticate(self, key: str) -> Principal:
        """PF401 unless ``key`` is a live key of this store."""
        return authenticate_key(key, self.records.values())

    def is_live(self, key_id: str) -> bool:
        record = self.records.get(key_id)
        return record is not None and not record.revoked

    # ------------------------------------------------------------------ writing

    def create(
        self, roles: set[str] | frozenset[str], label: str | None = None
    ) -> tuple[str, KeyRecord]:
        unknown = set(roles) - set(DEFAULT_ROLES)
        if unknown or not roles:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; choose from {DEFAULT_ROLES}")
        self.reload()
        key = new_api_key()
        record = KeyRecord(key_id=secrets.token_hex(6), digest=key_digest(key),
                           roles=frozenset(roles), created=round(time.time(), 3),
                           label=label)  # fmt: skip
        self.records[record.key_id] = record
        self._save()
        return key, record

    def revoke(self, key_id: str) -> bool:
        self.reload()
        record = self.records.get(key_id)
        if record is None or record.revoked:
            return False
        self.records[key_id] = KeyRecord(record.key_id, record.digest, record.roles,
                                         record.created, record.label, revoked=True)  # fmt: skip
        self._save()
        return True

    def _save(self) -> None:
        body = {"keys": [{"id": r.key_id, "sha256": r.digest, "roles": sorted(r.roles),
                          "created": r.created, "label": r.label, "revoked": r.revoked}
                         for r in self.records.values()]}  # fmt: skip
        write_secret(self.path, json.dumps(body, indent=2) + "\n")
        self._stamp = None
        self.reload()

    def ensure_admin_key(self) -> Path | None:
        """First start: no keys at all, so make an admin key and leave it where the
        operator (and the CLI/SDK on this machine) can read it. Returns its path if made."""
        if self.records or self.path.exists():
            return None
        key, _ = self.create({SYSTEM_ADMIN}, label="admin (created on first start)")
        write_secret(self.admin_key_path, key + "\n")
        return self.admin_key_path


def _record(item: dict[str, Any]) -> KeyRecord:
    return KeyRecord(key_id=str(item["id"]), digest=str(item["sha256"]),
                     roles=frozenset(item["roles"]), created=float(item["created"]),
                     label=item.get("label"), revoked=bool(item.get("revoked", False)))  # fmt: skip
