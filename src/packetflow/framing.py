"""The WebSocket response PFAP servers accept connections with: a frame over the socket
limit is answered with one PF001 before the connection closes (DESIGN §3: every bad
frame gets an ERROR).

aiohttp refuses a frame longer than ``max_msg_size`` as soon as its header announces the
length, without buffering it, and closes with 1009: the rest of that frame is still on
the wire, so the connection cannot be kept. Frames between the protocol limit (1 MiB)
and the socket limit get their PF001 from ``decode_frame`` and keep the connection.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from .protocol.errors import InvalidMessage
from .protocol.limits import MAX_FRAME_BYTES

log = logging.getLogger("packetflow.framing")

# aiohttp refuses frames above this without reading them; frames between MAX_FRAME_BYTES
# and this are read and answered PF001 with the connection kept (a client one byte over
# the protocol limit keeps its subscriptions). 4× bounds what one connection can make us
# buffer.
SOCKET_MAX_MSG = 4 * MAX_FRAME_BYTES


def socket_limit(max_frame_bytes: int) -> int:
    """The socket limit for a configured protocol frame limit (4×, as SOCKET_MAX_MSG)."""
    return 4 * max_frame_bytes


def frame_over_socket_limit(max_frame_bytes: int = MAX_FRAME_BYTES) -> InvalidMessage:
    socket_max = socket_limit(max_frame_bytes)
    return InvalidMessage(
        f"Frame exceeds the {socket_max}-byte socket limit (the protocol limit is "
        f"{max_frame_bytes} bytes); the connection closes because the rest of the frame "
        "cannot be skipped",
        field="$", expected_type=f"<= {max_frame_bytes} bytes",
        received_type=f"> {socket_max} bytes", validation_rule="max_frame_size",
    )  # fmt: skip


class PfapWebSocketResponse(web.WebSocketResponse):
    """``web.WebSocketResponse`` that sends ``too_big()`` (an encoded ERROR envelope) as a
    last text frame when aiohttp closes for a frame over ``max_msg_size``."""

    def __init__(self, *, too_big: Callable[[], bytes] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._too_big = too_big

    def answer_too_big(self, too_big: Callable[[], bytes]) -> None:
        """Set what to send once the peer (known only after prepare) overflows."""
        self._too_big = too_big

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        # aiohttp's receive() calls close(code=1009) for an oversized frame, and nothing
        # else of ours closes with 1009: this is the one place to answer it.
        too_big, self._too_big = self._too_big, None
        if code == WSCloseCode.MESSAGE_TOO_BIG and too_big is not None and not self.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send_frame(too_big(), WSMsgType.TEXT)
            log.info("closed a connection after a frame over %d bytes", self._max_msg_size)
        return await super().close(code=code, message=message, drain=drain)


def too_big_answer(
    source_id: str, next_seq: Callable[[], int], max_frame_bytes: int = MAX_FRAME_BYTES
) -> Callable[[], bytes]:
    """The ERROR a server sends before closing for an oversized frame (it cannot be
    correlated: the frame was never read)."""
    from .protocol.messages import encode, error_envelope
    from .transport import new_message_id, now_ms

    def build() -> bytes:
        return encode(error_envelope(
            frame_over_socket_limit(max_frame_bytes), message_id=new_message_id(), now_ms=now_ms(),
            source_id=source_id, correlation_id=None, sequence_id=next_seq(),
        ))  # fmt: skip

    return build
