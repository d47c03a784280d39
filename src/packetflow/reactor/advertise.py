"""The reactor's self-advertisement on DESIGN §2 channels 3 and 4: §8.1.2 multicast
announces and a §8.1.3 DNS-SD service, so a gateway finds a reactor started without
``--gateway``.

Both advertisers build their content with ``protocol.discovery`` from the reactor's own
§4.2.5 announce, so what a gateway registers from them matches a direct announce. A
loopback reactor keeps both on 127.0.0.1: multicast leaves through IP_MULTICAST_IF
127.0.0.1 with TTL 1 and IP_MULTICAST_LOOP on, and zeroconf binds only that interface.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..protocol.discovery import (
    MULTICAST_GROUP,
    MULTICAST_PORT,
    SERVICE_TYPE,
    Advertisement,
    advertisement,
    check_multicast,
    discovery_interface,
    multicast_envelope,
    txt_record,
)
from ..protocol.messages import DiscoverPayload, encode
from ..runner import cancel_and_wait
from ..transport import new_message_id, now_ms

if TYPE_CHECKING:
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    from .server import Reactor

log = logging.getLogger("packetflow.reactor.advertise")

# Seconds between multicast announces once settled; the same cadence as the default
# heartbeat, so a gateway started after the reactor finds it within one heartbeat period.
DEFAULT_INTERVAL_S = 5.0
# The first announces go out faster (0, 0.25, 0.5, 1, 2, 4 s, then every interval), as
# mDNS repeats its first announcements (RFC 6762 §8.3): one lost datagram at start-up
# does not cost a whole interval.
FIRST_DELAY_S = 0.25
# §8.1.2 is "local network auto-discovery": TTL 1 never crosses a router.
DEFAULT_TTL = 1
# Seconds between checks of the DNS-SD TXT record; it is re-published only when its
# content (load, capabilities) changed, so a quiet reactor sends no mDNS traffic.
DNSSD_REFRESH_S = 5.0
# RFC 6763 §4.1.1: an instance name is one DNS label, at most 63 bytes.
MAX_LABEL_BYTES = 63


class Advertiser(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


def current_advertisement(reactor: Reactor) -> Advertisement:
    """What ``reactor`` says about itself right now (its §4.2.5 announce, load included)."""
    rt = reactor.runtime
    assert rt is not None, "advertisers start after the reactor's runtime"
    announce = msgspec.convert(rt.announce_payload(reactor.endpoints()), DiscoverPayload)
    return advertisement(announce, load_factor=rt.load_factor, accepts_connections=not rt.draining)


class _Sender(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        # ICMP errors for a datagram already sent; the next announce tries again.
        log.debug("multicast send error: %s", exc)


class MulticastAdvertiser:
    """Sends the §8.1.2 announce datagram to ``group``:``port`` every ``interval_s``."""

    def __init__(
        self,
        reactor: Reactor,
        group: str = MULTICAST_GROUP,
        port: int = MULTICAST_PORT,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        ttl: int = DEFAULT_TTL,
        loopback: bool = True,
    ) -> None:
        check_multicast(group, port)
        self.reactor = reactor
        self.group = group
        self.port = port
        self.interval_s = interval_s
        self.ttl = ttl
        self.loopback = loopback
        self.sent = 0
        self._sequence = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(self.loopback))
            interface = discovery_interface(self.reactor.config.host)
            if interface is not None:
                # Leave through the reactor's own interface (lo for 127.0.0.1), not the
                # default route's, and with that address as the source.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(interface))  # fmt: skip
                sock.bind((interface, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        """Open the socket and start announcing. Raises OSError when the host cannot send."""
        sock = self._socket()
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(_Sender, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._task = loop.create_task(self._run())
        log.info("reactor %s announcing on multicast %s:%d every %.1f s",
                 self.reactor.reactor_id, self.group, self.port, self.interval_s)  # fmt: skip

    def announce(self) -> None:
        """Send one announce datagram now."""
        if self._transport is None or self._transport.is_closing():
            return
        self._sequence += 1
        msg = multicast_envelope(
            current_advertisement(self.reactor), group=self.group, port=self.port,
            message_id=new_message_id(), timestamp=now_ms(), sequence_id=self._sequence,
        )  # fmt: skip
        self._transport.sendto(encode(msg), (self.group, self.port))
        self.sent += 1

    async def _run(self) -> None:
        delay = FIRST_DELAY_S
        while True:
            try:
                self.announce()
            except Exception:  # one bad send must not end advertising
                log.exception("multicast announce failed")
            await asyncio.sleep(min(delay, self.interval_s))
            delay *= 2

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)  # the loop closes the socket in the transport's callback


class DnsSdAdvertiser:
    """Publishes ``<reactor_id>._packetflow._tcp.local.`` with §8.1.3's TXT record."""

    def __init__(self, reactor: Reactor, refresh_s: float = DNSSD_REFRESH_S) -> None:
        self.reactor = reactor
        self.refresh_s = refresh_s
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._txt: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    async def _address(self) -> str:
        host = self.reactor.config.host
        interface = discovery_interface(host)
        if interface is not None:
            return interface
        if host in ("", "0.0.0.0"):
            # A reactor on every interface is still reachable on loopback; its endpoints
            # name 0.0.0.0 anyway, which only a local gateway can dial.
            log.warning("reactor bound to %r: advertising 127.0.0.1 over DNS-SD", host)
            return "127.0.0.1"
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET)
        return str(infos[0][4][0])

    def _service_info(self, address: str) -> AsyncServiceInfo:
        from zeroconf.asyncio import AsyncServiceInfo

        reactor_id = self.reactor.reactor_id
        label = reactor_id.encode()[:MAX_LABEL_BYTES].decode(errors="ignore")
        hostname = re.sub(r"[^A-Za-z0-9-]", "-", label).strip("-") or "reactor"
        return AsyncServiceInfo(
            SERVICE_TYPE, f"{label}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(address)], port=self.reactor.port,
            properties=dict(self._txt), server=f"{hostname}.local.",
        )  # fmt: skip

    async def start(self) -> None:
        """Register the service (after mDNS probing, ~1 s). Raises OSError when the host
        cannot open mDNS sockets, and zeroconf's NonUniqueNameException when another
        reactor already uses this reactor_id."""
        from zeroconf import InterfaceChoice, IPVersion
        from zeroconf.asyncio import AsyncZeroconf

        address = await self._address()
        interfaces: Any = [address] if discovery_interface(address) else InterfaceChoice.All
        self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self._txt = txt_record(current_advertisement(self.reactor))
        self._info = self._service_info(address)
        try:
            # The first await probes the name; the announcements it returns go on in the
            # background, and the service already answers queries.
            await self._zc.async_register_service(self._info)
        except BaseException:
            await self._zc.async_close()
            self._zc = None
            raise
        self._task = asyncio.get_running_loop().create_task(self._refresh(address))
        log.info("reactor %s published DNS-SD %s on %s", self.reactor.reactor_id,
                 self._info.name, address)  # fmt: skip

    async def _refresh(self, address: str) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                txt = txt_record(current_advertisement(self.reactor))
                if txt == self._txt or self._zc is None:
                    continue
                self._txt = txt
                self._info = self._service_info(address)
                await self._zc.async_update_service(self._info)
            except Exception:  # a failed refresh keeps the previous record published
                log.exception("DNS-SD refresh failed")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        zc, self._zc = self._zc, None
        if zc is not None:
            # async_close sends goodbyes (TTL 0) for the service before closing.
            await zc.async_close()


async def start_advertisers(reactor: Reactor) -> list[Advertiser]:
    """Start the advertisers ``reactor`` enables (``multicast``, ``dnssd``).

    Raises what an advertiser's ``start`` raises, after closing any already started: a
    reactor asked to advertise that cannot is misconfigured, and would never be found.
    """
    advertisers: list[Advertiser] = []
    if reactor.multicast:
        advertisers.append(
            MulticastAdvertiser(reactor, reactor.multicast_group, reactor.multicast_port)
        )
    if reactor.dnssd:
        advertisers.append(DnsSdAdvertiser(reactor))
    started: list[Advertiser] = []
    try:
        for advertiser in advertisers:
            await advertiser.start()
            started.append(advertiser)
    except BaseException:
        for advertiser in started:
            await advertiser.close()
        raise
    return started
