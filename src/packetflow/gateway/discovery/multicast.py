"""The gateway's §8.1.2 multicast listener: joins the discovery group, turns each announce
datagram into a registration, and drops (with a log line) anything it cannot parse.

How the loopback case works: the socket binds the group's port with SO_REUSEADDR and
SO_REUSEPORT (several gateways on one host can listen) and joins the group on the
interface of the gateway's own address, 127.0.0.1 for a loopback gateway, so the
reactors' datagrams, sent with IP_MULTICAST_IF 127.0.0.1 and IP_MULTICAST_LOOP, arrive
without any traffic leaving the host. A gateway bound to 0.0.0.0 joins on loopback and
on the default interface. If the host refuses the membership, ``start`` raises OSError and
the gateway runs without this channel (gateway/discovery/__init__.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

from ...protocol.discovery import announce_payload, parse_datagram
from ...protocol.errors import PacketFlowError

if TYPE_CHECKING:
    from ..server import Gateway

log = logging.getLogger("packetflow.gateway.discovery.multicast")

# Senders whose bad datagrams were already logged at WARNING; later ones go to DEBUG so a
# noisy neighbour on the group cannot flood the log. Bounded like every table (STYLE 5):
# once full, it is cleared and the next offenders are warned about again.
MAX_WARNED_SENDERS = 256


def open_listener_socket(group: str, port: int, interface: str | None) -> socket.socket:
    """A non-blocking UDP socket receiving ``group``:``port`` via ``interface``
    (an IPv4 address; None: the default interface). Raises OSError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            # Binding the group address (not 0.0.0.0) keeps unicast datagrams that happen
            # to target the same port out of this socket (Linux, BSD).
            sock.bind((group, port))
        except OSError as exc:
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EINVAL):
                raise
            sock.bind(("", port))  # Windows cannot bind a multicast address
        # An unbound gateway (0.0.0.0) hears both local reactors (they send via lo) and
        # the LAN (the default interface): one membership per interface.
        for address in [interface] if interface else ["127.0.0.1", "0.0.0.0"]:
            membership = socket.inet_aton(group) + socket.inet_aton(address)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                if interface or exc.errno != errno.EADDRINUSE:
                    raise  # EADDRINUSE: the default interface is lo, already joined
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, listener: MulticastListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.listener.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("multicast socket error: %s", exc)


class MulticastListener:
    """Registers every reactor heard on ``group``:``port`` with source "multicast"."""

    def __init__(
        self, gateway: Gateway, group: str, port: int, *, interface: str | None = "127.0.0.1"
    ) -> None:
        self.gateway = gateway
        self.group = group
        self.port = port
        self.interface = interface
        self.received = 0
        self.dropped = 0
        self._warned: set[str] = set()
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Join the group and start receiving. Raises OSError when the host cannot."""
        sock = open_listener_socket(self.group, self.port, self.interface)
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Receiver(self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        log.info("listening for multicast announces on %s:%d via %s", self.group, self.port,
                 self.interface or "the default interface")  # fmt: skip

    def on_datagram(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """One datagram in; never raises, because an exception here would close the
        transport and end discovery."""
        self.received += 1
        sender = f"{addr[0]}:{addr[1]}"
        try:
            adv = parse_datagram(data)
        except PacketFlowError as err:
            self._drop(sender, f"{err.code} {err.field}: {err}")
            return
        except Exception as exc:  # a parser bug must not end discovery either
            log.exception("multicast datagram from %s crashed the parser", sender)
            self._drop(sender, f"{type(exc).__name__}")
            return
        if not adv.accepts_connections:
            log.debug("reactor %s (%s) accepts no connections now", adv.reactor_id, sender)
            return
        try:
            self.gateway.register(announce_payload(adv), source="multicast")
        except Exception:
            log.exception("registering reactor %s from %s failed", adv.reactor_id, sender)

    def _drop(self, sender: str, reason: str) -> None:
        self.dropped += 1
        if sender in self._warned:
            log.debug("dropped multicast datagram from %s: %s", sender, reason)
            return
        if len(self._warned) >= MAX_WARNED_SENDERS:
            self._warned.clear()
        self._warned.add(sender)
        log.warning("dropped multicast datagram from %s: %s", sender, reason)

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            # Let the loop run the transport's close callback, which closes the socket.
            await asyncio.sleep(0)
