"""§11.3 data protection: end-to-end packet payload encryption (SDK <-> reactor, the gateway
routing ciphertext it cannot read) and the molecule journal's encryption at rest.

Both use AES-256-GCM (DESIGN §8: §11.3.1's AES-256-CBC has no integrity check). Payload
keys come from a shared secret with PBKDF2-SHA256; the envelope that replaces a packet's
``data`` is::

    {"encrypted": "<base64 nonce||ciphertext||tag>", "alg": "AES-256-GCM",
     "kdf": {"name": "PBKDF2-SHA256", "salt": "<base64>", "iterations": 600000}}

The associated data binds a ciphertext to its ``group:element`` (and ``:result`` for the
answer), so a ciphertext cannot be replayed to another element or passed off as a result.
A sender draws one random salt per client and reuses it, so the expensive derivation runs
once per (secret, salt) on each side; receivers cache derived keys in a bounded table and
accept only a bounded iteration count (a hostile envelope cannot make a reactor spin).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..protocol.errors import InvalidPacket

ALG: Final = "AES-256-GCM"
KDF: Final = "PBKDF2-SHA256"
# OWASP Password Storage Cheat Sheet (2023): 600,000 iterations for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS: Final = 600_000
# What a receiver accepts: below, the key is too cheap to guess; above, one envelope could
# cost the receiver seconds of CPU.
MIN_ITERATIONS: Final = 100_000
MAX_ITERATIONS: Final = 2_000_000
SALT_BYTES: Final = 16
NONCE_BYTES: Final = 12  # GCM's standard nonce (NIST SP 800-38D)
KEY_BYTES: Final = 32
# Derived keys a receiver keeps (one per sending client, normally).
MAX_CACHED_KEYS: Final = 256
# The journal's at-rest prefix, so a reader tells ciphertext from a pre-encryption row.
JOURNAL_PREFIX: Final = b"PFENC1:"


class DecryptionFailed(InvalidPacket):
    """PF002 on ``payload.packet.data``: wrong key, tampered bytes or a bad envelope."""


def read_secret(path: Path | str) -> bytes:
    """The shared secret in a key file (surrounding whitespace ignored). Raises
    ``ValueError`` for an empty file."""
    secret = Path(path).read_bytes().strip()
    if not secret:
        raise ValueError(f"{path}: empty key file")
    return secret


def derive_key(secret: bytes, salt: bytes, iterations: int) -> bytes:
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                      iterations=iterations).derive(secret)  # fmt: skip


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and value.get("alg") == ALG and "encrypted" in value


def _aad(group: str, element: str, result: bool) -> bytes:
    return f"{group}:{element}{':result' if result else ''}".encode()


def _bad(message: str) -> DecryptionFailed:
    return DecryptionFailed(message, field="payload.packet.data",
                            expected_type="an AES-256-GCM envelope this reactor can open",
                            received_type="encrypted", validation_rule="decryption")  # fmt: skip


class PayloadCipher:
    """Seal and open packet data with one shared secret."""

    def __init__(self, secret: bytes, *, iterations: int = DEFAULT_ITERATIONS,
                 salt: bytes | None = None) -> None:  # fmt: skip
        self._secret = secret
        self.iterations = iterations
        self.salt = salt if salt is not None else os.urandom(SALT_BYTES)
        self._keys: OrderedDict[tuple[bytes, int], AESGCM] = OrderedDict()

    def _aead(self, salt: bytes, iterations: int) -> AESGCM:
        key = (salt, iterations)
        aead = self._keys.get(key)
        if aead is None:
            aead = AESGCM(derive_key(self._secret, salt, iterations))
            self._keys[key] = aead
            if len(self._keys) > MAX_CACHED_KEYS:
                self._keys.popitem(last=False)
        return aead

    def has_key_for(self, envelope: dict[str, Any]) -> bool:
        """Whether opening ``envelope`` is quick (its key is derived already)."""
        kdf = envelope.get("kdf") or {}
        try:
            salt = base64.b64decode(kdf.get("salt", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            return True  # open() answers the error at once
        return (salt, kdf.get("iterations")) in self._keys

    def seal(self, value: Any, group: str, element: str, *, result: bool = False,
             salt: bytes | None = None,
             iterations: int | None = None) -> dict[str, Any]:  # fmt: skip
        """The envelope carrying ``value`` (JSON-encoded) for ``group:element``."""
        salt = self.salt if salt is None else salt
        iterations = self.iterations if iterations is None else iterations
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(value, separators=(",", ":")).encode()
        sealed = self._aead(salt, iterations).encrypt(nonce, plain, _aad(group, element, result))
        return {"encrypted": base64.b64encode(nonce + sealed).decode(), "alg": ALG,
                "kdf": {"name": KDF, "salt": base64.b64encode(salt).decode(),
                        "iterations": iterations}}  # fmt: skip

    def open(self, envelope: Any, group: str, element: str, *,
             result: bool = False) -> tuple[Any, bytes, int]:  # fmt: skip
        """(value, salt, iterations) of an envelope. Raises ``DecryptionFailed`` (PF002)."""
        if not is_envelope(envelope):
            raise _bad(f"data is not an {ALG} envelope")
        kdf = envelope.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != KDF:
            raise _bad(f"kdf must be {{'name': '{KDF}', 'salt': ..., 'iterations': ...}}")
        iterations = kdf.get("iterations")
        if not isinstance(iterations, int) or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise _bad(f"kdf.iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
        try:
            salt = base64.b64decode(kdf.get("salt", ""), validate=True)
            blob = base64.b64decode(envelope["encrypted"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise _bad("salt or ciphertext is not base64") from None
        if len(salt) < 8 or len(blob) < NONCE_BYTES + 16:
            raise _bad("salt or ciphertext too short")
        try:
            plain = self._aead(salt, iterations).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(group, element, result)
            )
        except InvalidTag:
            raise _bad("payload could not be decrypted (wrong key or tampered data)") from None
        try:
            return json.loads(plain), salt, iterations
        except ValueError:
            raise _bad("decrypted payload is not JSON") from None


class AtRestCipher:
    """AES-256-GCM for bytes at rest (the molecule journal); the key file holds a secret
    from which the key is derived once (PBKDF2, fixed per-purpose salt: the key file is
    the secret, and the salt only separates this use from any other)."""

    def __init__(self, secret: bytes, purpose: bytes = b"packetflow-journal") -> None:
        self._aead = AESGCM(derive_key(secret, purpose, DEFAULT_ITERATIONS))

    def encrypt(self, plain: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return JOURNAL_PREFIX + nonce + self._aead.encrypt(nonce, plain, JOURNAL_PREFIX)

    def decrypt(self, blob: bytes) -> bytes:
        """Raises ``ValueError`` for bytes this key did not seal."""
        if not blob.startswith(JOURNAL_PREFIX):
            return blob  # written before encryption was turned on
        body = blob[len(JOURNAL_PREFIX) :]
        try:
            return self._aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], JOURNAL_PREFIX)
        except InvalidTag:
            raise ValueError("journal row cannot be decrypted with this key") from None
