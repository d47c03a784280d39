"""PFAP §11.1 rules without sockets: API key format and matching, JWT claims to a
principal, certificate subjects, credentials in URLs, Origin, plaintext binds."""

from __future__ import annotations

import pytest

from packetflow.protocol import authentication as auth
from packetflow.protocol.errors import AuthenticationFailed
from packetflow.protocol.principals import REACTOR, SYSTEM_ADMIN

KEY = "pf_" + "a1B2" * 8


def record(key: str = KEY, *, revoked: bool = False, key_id: str = "k1") -> auth.KeyRecord:
    return auth.KeyRecord(key_id, auth.key_digest(key), frozenset({"packet_user"}), 0.0,
                          "ci", revoked)  # fmt: skip


def test_key_format_pfap_11_1_1() -> None:
    assert auth.is_well_formed_key(KEY)
    for bad in ("", "pf_", "pf_" + "a" * 31, "pf_" + "a" * 33, "PF_" + "a" * 32,
                "pf_" + "a" * 31 + "-", "pf_" + "é" * 32, " " + KEY):  # fmt: skip
        assert not auth.is_well_formed_key(bad), bad


def test_known_key_names_its_record() -> None:
    p = auth.authenticate_key(KEY, [record(key_id="other", key="pf_" + "z" * 32), record()])
    assert p.id == "key:k1" and p.roles == {"packet_user"} and p.method == "api_key"


@pytest.mark.parametrize(
    ("presented", "records", "rule"),
    [
        ("pf_short", [record()], "key_format"),
        ("pf_" + "Q" * 32, [record()], "known_key"),
        (KEY, [record(revoked=True)], "known_key"),
        (KEY, [], "known_key"),
    ],
    ids=["malformed", "unknown", "revoked", "no-keys"],
)
def test_bad_keys_are_pf401(presented: str, records: list[auth.KeyRecord], rule: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate_key(presented, records)
    assert caught.value.code == "PF401"
    assert caught.value.validation_rule == rule
    # The refusal never says which keys exist.
    assert "k1" not in caught.value.message


def test_digest_is_stored_not_the_key() -> None:
    assert KEY not in repr(record()) and len(record().digest) == 64


def test_claims_become_a_principal_pfap_11_1_2() -> None:
    p = auth.principal_from_claims({"sub": "alice", "roles": ["packet_user"],
                                    "permissions": ["cf:*", "df:transform"],
                                    "clearance_level": "secret", "exp": 1})  # fmt: skip
    assert p.id == "jwt:alice" and p.method == "jwt"
    assert p.permissions == {"cf:*", "df:transform"}
    assert p.attributes == {"clearance_level": "secret"}


@pytest.mark.parametrize("claims", [{}, {"sub": ""}, {"sub": "a", "roles": [1]},
                                    {"sub": "a", "permissions": {"x": 1}}])  # fmt: skip
def test_bad_claims_are_pf401(claims: dict[str, object]) -> None:
    with pytest.raises(AuthenticationFailed):
        auth.principal_from_claims(claims)


def test_bearer_header() -> None:
    assert auth.bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    for bad in ("Basic abc", "Bearer", "Bearer   ", "abc"):
        with pytest.raises(AuthenticationFailed):
            auth.bearer_token(bad)


def test_certificate_subjects_pfap_11_1_3() -> None:
    patterns = auth.DEFAULT_ALLOWED_SUBJECTS
    assert auth.principal_from_certificate("reactor-7", patterns).roles == {REACTOR}
    assert auth.principal_from_certificate("gateway-a", patterns).roles == {SYSTEM_ADMIN}
    with pytest.raises(AuthenticationFailed):
        auth.principal_from_certificate("client-1", patterns)
    assert auth.principal_from_certificate("client-1", ["CN=client-*"]).roles == {"packet_user"}


def test_credentials_in_query() -> None:
    assert auth.credential_in_query(["role", "source_id"]) is None
    assert auth.credential_in_query(["role", "API_KEY"]) == "API_KEY"
    assert auth.credential_in_query(["token"]) == "token"


def test_origin() -> None:
    assert auth.origin_allowed(None, "127.0.0.1:8080", ())
    assert auth.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", ())
    assert not auth.origin_allowed("https://evil.example", "127.0.0.1:8080", ())
    assert auth.origin_allowed("https://dash.example", "h:1", ["https://dash.example"])
    assert auth.origin_allowed("https://any.example", "h:1", ["*"])


@pytest.mark.parametrize(
    ("host", "tls", "insecure", "refused"),
    [
        ("127.0.0.1", False, False, False),
        ("localhost", False, False, False),
        ("::1", False, False, False),
        ("0.0.0.0", False, False, True),
        ("10.0.0.5", False, False, True),
        ("0.0.0.0", True, False, False),
        ("0.0.0.0", False, True, False),
    ],
)
def test_plaintext_bind(host: str, tls: bool, insecure: bool, refused: bool) -> None:
    message = auth.plaintext_bind_refusal("gateway", host, tls, insecure)
    assert (message is not None) is refused
    if message:
        assert "--tls-cert" in message and "--insecure" in message
