"""Who a set of presented credentials names (PFAP §11.1): the pure rules that turn an API
key, a JWT's verified claims or a client certificate's subject into a ``Principal``, or
into the PF401 saying what was wrong (never which keys exist).

The servers read headers, files, sockets and clocks; everything they decide with lives here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import AuthenticationFailed
from .principals import REACTOR, SYSTEM_ADMIN, Principal

# §11.1.1's key_format. 32 characters of [a-zA-Z0-9] carry ~190 bits of entropy.
API_KEY_PATTERN = re.compile(r"pf_[a-zA-Z0-9]{32}")
API_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
API_KEY_LENGTH = 32
API_KEY_HEADER = "X-PacketFlow-API-Key"
AUTHORIZATION_HEADER = "Authorization"
DIAL_TOKEN_HEADER = "X-PacketFlow-Dial-Token"
# Query parameters that would put a credential in a URL (and so in logs, history, Referer).
CREDENTIAL_QUERY_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token",
                                     "jwt", "dial_token"})  # fmt: skip
# §11.1.3's allowed_subjects example: the default when the operator names none.
DEFAULT_ALLOWED_SUBJECTS = ("CN=reactor-*", "CN=gateway-*")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored API key: never the key itself, only its digest."""

    key_id: str
    digest: str  # hex SHA-256 of the key
    roles: frozenset[str]
    created: float  # Unix seconds
    label: str | None = None
    revoked: bool = False

    def view(self) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the digest."""
        return {"id": self.key_id, "roles": sorted(self.roles), "label": self.label,
                "created": self.created, "revoked": self.revoked}  # fmt: skip


def key_digest(key: str) -> str:
    """SHA-256 of a key. A slow KDF (scrypt, argon2) protects low-entropy passwords from
    offline guessing; a 190-bit random key cannot be guessed either way, and a fast hash
    keeps authentication cheap per connection."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed_key(key: str) -> bool:
    return API_KEY_PATTERN.fullmatch(key) is not None


def authenticate_key(presented: str, records: Iterable[KeyRecord]) -> Principal:
    """The principal an API key names; raises AuthenticationFailed (PF401).

    Every record's digest is compared in constant time, so the time taken does not say
    how close a guess came, nor which record matched."""
    if not is_well_formed_key(presented):
        raise AuthenticationFailed(
            "Malformed API key: expected pf_ followed by 32 letters or digits",
            field=API_KEY_HEADER, validation_rule="key_format",
        )  # fmt: skip
    digest = key_digest(presented)
    found: KeyRecord | None = None
    for record in records:
        if hmac.compare_digest(record.digest, digest):
            found = record
    if found is None or found.revoked:
        raise AuthenticationFailed("Unknown or revoked API key", field=API_KEY_HEADER,
                                   validation_rule="known_key")  # fmt: skip
    return Principal(f"key:{found.key_id}", found.roles, "api_key",
                     attributes={"label": found.label} if found.label else {})  # fmt: skip


def missing_credentials() -> AuthenticationFailed:
    return AuthenticationFailed(
        f"Authentication required: send an API key in {API_KEY_HEADER}, a JWT in "
        "Authorization: Bearer, or a client certificate",
        validation_rule="credentials_required",
    )


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; PF401 otherwise."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Authorization header must be 'Bearer <jwt>'",
                                   field=AUTHORIZATION_HEADER,
                                   validation_rule="bearer")  # fmt: skip
    return token.strip()


_STANDARD_CLAIMS = frozenset({"sub", "roles", "permissions", "iss", "aud", "exp", "nbf", "iat"})


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """A principal from a JWT's verified claims (§11.1.2): ``sub`` names it, ``roles`` and
    ``permissions`` (``cf:*``, ``df:transform``) grant what it may do."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthenticationFailed("JWT has no 'sub' claim", field="sub",
                                   validation_rule="required_claim")  # fmt: skip
    roles = _strings(claims.get("roles"), "roles")
    permissions = _strings(claims.get("permissions"), "permissions")
    attributes = {k: v for k, v in claims.items()
                  if k not in _STANDARD_CLAIMS}  # fmt: skip
    return Principal(f"jwt:{sub}", roles, "jwt", permissions, attributes)


def _strings(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise AuthenticationFailed(f"JWT claim {name!r} must be a list of strings", field=name,
                               validation_rule="claim_type")  # fmt: skip


def subject_allowed(subject: str, patterns: Iterable[str]) -> bool:
    """§11.1.3 allowed_subjects: ``CN=reactor-*`` style glob patterns on ``CN=<cn>``."""
    return any(fnmatch.fnmatchcase(subject, p) for p in patterns)


def principal_from_certificate(common_name: str, patterns: Iterable[str]) -> Principal:
    """A principal for a verified client certificate: ``CN=reactor-*`` is a reactor,
    ``CN=gateway-*`` a peer gateway (admin, it routes work for others); other allowed
    names are plain packet users. PF401 when the subject is not allowed."""
    subject = f"CN={common_name}"
    if not subject_allowed(subject, patterns):
        raise AuthenticationFailed(f"Client certificate subject {subject} is not allowed",
                                   field="tls.subject",
                                   validation_rule="allowed_subjects")  # fmt: skip
    if common_name.startswith("reactor-"):
        roles = frozenset({REACTOR})
    elif common_name.startswith("gateway-"):
        roles = frozenset({SYSTEM_ADMIN})
    else:
        roles = frozenset({"packet_user"})
    return Principal(f"cert:{common_name}", roles, "mtls")


def credential_in_query(params: Iterable[str]) -> str | None:
    """The name of a query parameter that carries a credential, if any (refused: URLs end
    up in logs and browser history)."""
    for name in params:
        if name.lower() in CREDENTIAL_QUERY_PARAMS:
            return name
    return None


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """A browser's WebSocket upgrade from another site is refused unless configured
    (cross-site WebSocket hijacking). No Origin: not a browser, allowed."""
    if origin is None:
        return True
    allowed = tuple(allowed)
    if "*" in allowed or origin in allowed:
        return True
    _, _, rest = origin.partition("://")
    return host is not None and rest.rstrip("/") == host


def plaintext_bind_refusal(role: str, host: str, has_tls: bool, insecure: bool) -> str | None:
    """DESIGN §8: off loopback, keys and tokens must not travel in clear. The message a
    server that would do so exits with, naming the flags that fix it; None when fine."""
    from .reactor_access import is_loopback_host

    if has_tls or insecure or is_loopback_host(host):
        return None
    return (f"refusing to serve the {role} on non-loopback address {host} without TLS: "
            f"add --tls-cert FILE --tls-key FILE (and --tls-client-ca FILE for mTLS), "
            f"or --insecure to send credentials in clear")  # fmt: skip
