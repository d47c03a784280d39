"""What a handler sees besides its data: inputs, deadline, logger and the gateway client."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol.errors import invalid_field

if TYPE_CHECKING:
    from ..client import AsyncClient
    from .runtime import ReactorRuntime


@dataclass(slots=True)
class Context:
    """Per-packet context handed to every element handler as its second argument.

    ``inputs`` maps an upstream packet id to its result data (DESIGN §7 data flow);
    ``deadline`` is a ``time.monotonic()`` value; ``gateway`` is the reactor's own client
    connection to the gateway (None when the reactor runs without one).
    """

    packet_id: str
    group: str
    element: str
    priority: int
    deadline: float
    logger: logging.Logger
    data_dir: Path
    inputs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    gateway: AsyncClient | None = None
    runtime: ReactorRuntime | None = None
    received: float = 0.0  # time.monotonic() when the packet arrived

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def input_value(self, data: dict[str, Any], name: str = "input") -> Any:
        """DESIGN §10 input rule for df and mc: ``data.input``, else the ``result`` of the
        single upstream input. Raises PF002 naming ``payload.packet.data.input``."""
        if name in data:
            return data[name]
        if len(self.inputs) == 1:
            (upstream,) = self.inputs.values()
            if isinstance(upstream, dict) and "result" in upstream:
                return upstream["result"]
            return upstream
        raise invalid_field(
            f"payload.packet.data.{name}",
            "present",
            "missing",
            "required_field",
            f"Missing required field 'payload.packet.data.{name}'",
        )

    def require_gateway(self) -> AsyncClient:
        from ..protocol.errors import ServiceUnavailable

        if self.gateway is None:
            raise ServiceUnavailable(
                f"{self.group}:{self.element} needs the reactor's gateway connection, "
                "and this reactor has none",
                details={"reason": "no_gateway"},
            )
        return self.gateway
