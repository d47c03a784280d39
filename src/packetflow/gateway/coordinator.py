"""The molecule coordinator (§7, DESIGN §7): placeholder until the coordinator lands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..protocol.errors import InvalidPacket
from ..protocol.messages import Coordinate
from ..transport import Peer

if TYPE_CHECKING:
    from .server import Gateway


class MoleculeCoordinator:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def add_routes(self, app: web.Application) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def on_message(self, peer: Peer, msg: Coordinate) -> None:
        self.gateway.answer_error(
            peer,
            InvalidPacket(
                "Molecules are not served by this gateway yet",
                field="message_type",
                expected_type="submit, discover or heartbeat",
                received_type="coordinate",
                validation_rule="not_served",
            ),
            msg.message_id,
            None,
            msg.source_id,
        )
