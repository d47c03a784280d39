"""§11.3.2 data classification (protocol/classification.py)."""

from __future__ import annotations

import pytest

from packetflow.protocol import classification
from packetflow.protocol.errors import InvalidPacket, PermissionDenied


def test_levels_follow_the_spec_table_pfap_11_3_2() -> None:
    assert classification.level_of(None).name == "public"
    public = classification.level_of({"classification": "public"})
    assert (public.audit_logging, public.retention_days) == (False, 30)
    internal = classification.level_of({"classification": "internal"})
    assert (internal.audit_logging, internal.retention_days) == (True, 365)
    confidential = classification.level_of({"classification": "confidential"})
    assert (confidential.audit_logging, confidential.retention_days) == (True, 2555)


def test_confidential_needs_tls() -> None:
    confidential = classification.level_of({"classification": "confidential"})
    with pytest.raises(PermissionDenied) as info:
        classification.check_transport(confidential, secure=False)
    assert info.value.field == "payload.packet.metadata.classification"
    classification.check_transport(confidential, secure=True)
    classification.check_transport(classification.level_of({}), secure=False)


@pytest.mark.parametrize("value", ["secret", 3, ["public"]])
def test_unknown_level_is_pf002(value: object) -> None:
    with pytest.raises(InvalidPacket) as info:
        classification.level_of({"classification": value})
    assert info.value.field == "payload.packet.metadata.classification"
