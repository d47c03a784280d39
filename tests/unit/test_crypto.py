"""§11.3 data protection (security/crypto.py): AES-256-GCM payload envelopes and the
journal's at-rest cipher."""

from __future__ import annotations

import pytest

from packetflow.security.crypto import (
    MIN_ITERATIONS,
    AtRestCipher,
    DecryptionFailed,
    PayloadCipher,
    is_envelope,
)

FAST = MIN_ITERATIONS  # the lowest count a receiver accepts keeps the tests quick


def test_round_trip_and_the_envelope_hides_the_data() -> None:
    sender = PayloadCipher(b"s3cret", iterations=FAST)
    receiver = PayloadCipher(b"s3cret")
    envelope = sender.seal({"ssn": "123-45-6789"}, "df", "transform")
    assert is_envelope(envelope) and "123-45-6789" not in str(envelope)
    assert envelope["kdf"]["name"] == "PBKDF2-SHA256"
    value, salt, iterations = receiver.open(envelope, "df", "transform")
    assert value == {"ssn": "123-45-6789"} and iterations == FAST
    answer = receiver.seal({"ok": 1}, "df", "transform", result=True, salt=salt,
                           iterations=iterations)  # fmt: skip
    assert sender.open(answer, "df", "transform", result=True)[0] == {"ok": 1}


def test_wrong_key_tamper_and_replay_elsewhere_fail() -> None:
    sender = PayloadCipher(b"s3cret", iterations=FAST)
    envelope = sender.seal({"a": 1}, "df", "transform")
    with pytest.raises(DecryptionFailed, match="wrong key or tampered"):
        PayloadCipher(b"other").open(envelope, "df", "transform")
    with pytest.raises(DecryptionFailed):  # bound to its element
        sender.open(envelope, "df", "validate")
    with pytest.raises(DecryptionFailed):  # a request is not a result
        sender.open(envelope, "df", "transform", result=True)
    blob = envelope["encrypted"]
    tampered = {**envelope, "encrypted": blob[:-4] + ("AAAA" if blob[-4:] != "AAAA" else "BBBB")}
    with pytest.raises(DecryptionFailed):
        sender.open(tampered, "df", "transform")


@pytest.mark.parametrize(
    "change",
    [{"kdf": {"name": "PBKDF2-SHA256", "salt": "c2FsdHNhbHQ=", "iterations": 10**9}},
     {"kdf": {"name": "PBKDF2-SHA256", "salt": "c2FsdHNhbHQ=", "iterations": 1}},
     {"kdf": {"name": "scrypt"}},
     {"encrypted": "not base64!"},
     {"kdf": None}],
)  # fmt: skip
def test_hostile_envelopes_are_pf002(change: dict[str, object]) -> None:
    envelope = PayloadCipher(b"k", iterations=FAST).seal({}, "df", "x")
    with pytest.raises(DecryptionFailed) as info:
        PayloadCipher(b"k").open({**envelope, **change}, "df", "x")
    assert info.value.code == "PF002" and info.value.field == "payload.packet.data"


def test_at_rest_cipher() -> None:
    cipher = AtRestCipher(b"journal-key")
    sealed = cipher.encrypt(b'{"card":"4111"}')
    assert b"4111" not in sealed
    assert cipher.decrypt(sealed) == b'{"card":"4111"}'
    assert cipher.decrypt(b"{}") == b"{}"  # a row written before encryption was on
    with pytest.raises(ValueError, match="cannot be decrypted"):
        AtRestCipher(b"other").decrypt(sealed)
