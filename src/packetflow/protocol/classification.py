"""§11.3.2 data classification: what ``packet.metadata.classification`` requires.

``public`` (the default when a packet says nothing), ``internal`` and ``confidential``
follow the spec's table: internal and confidential packets are audited; a confidential
packet is refused (PF403) on a connection that is not TLS, since "encryption required" can
only be checked for the hop the gateway sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidPacket, PermissionDenied

PUBLIC: Final = "public"
INTERNAL: Final = "internal"
CONFIDENTIAL: Final = "confidential"


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    encryption_required: bool
    audit_logging: bool
    retention_days: int
    special_handling: bool = False


# §11.3.2 verbatim.
LEVELS: Final[Mapping[str, Level]] = {
    PUBLIC: Level(PUBLIC, False, False, 30),
    INTERNAL: Level(INTERNAL, True, True, 365),
    CONFIDENTIAL: Level(CONFIDENTIAL, True, True, 2555, special_handling=True),
}  # fmt: skip

FIELD: Final = "payload.packet.metadata.classification"


def level_of(metadata: Mapping[str, Any] | None) -> Level:
    """The packet's level. Raises PF002 for a value outside the table."""
    value = metadata.get("classification") if metadata else None
    if value is None:
        return LEVELS[PUBLIC]
    level = LEVELS.get(value) if isinstance(value, str) else None
    if level is None:
        raise InvalidPacket(
            f"classification must be one of {', '.join(LEVELS)}, not {value!r}",
            field=FIELD, expected_type="public, internal or confidential",
            received_type=str(value)[:40], validation_rule="enum",
        )  # fmt: skip
    return level


def check_transport(level: Level, secure: bool) -> None:
    """Raises PF403 when a confidential packet arrives over a connection without TLS."""
    if level.special_handling and not secure:
        raise PermissionDenied(
            "Confidential packets are accepted only over TLS (PFAP §11.3.2)",
            field=FIELD, validation_rule="tls_required",
            details={"required_permission": "transport:tls", "classification": level.name},
        )  # fmt: skip
