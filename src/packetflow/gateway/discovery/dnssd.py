"""The gateway's §8.1.3 DNS-SD listener: browses ``_packetflow._tcp.local.`` with zeroconf,
resolves each reactor that appears or changes, and registers it from its TXT record.

A reactor that disappears needs nothing here: its work connection drops and health marks it
failed (DESIGN §2, §6). For a loopback gateway, zeroconf is restricted to 127.0.0.1 so no
mDNS leaves the host.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ...protocol.discovery import SERVICE_TYPE, announce_payload, parse_txt
from ...protocol.errors import PacketFlowError
from ...runner import cancel_and_wait

if TYPE_CHECKING:
    from ..server import Gateway

log = logging.getLogger("packetflow.gateway.discovery.dnssd")

# How long one resolution (SRV, TXT, A) may take; mDNS answers on a LAN arrive within
# ~100-500 ms (RFC 6762 §6 response delays), 3 s leaves room for a busy host.
RESOLVE_TIMEOUT_MS = 3000
# Resolutions running at once; past it, new names wait for the next update (STYLE 5).
MAX_PENDING = 256


class DnsSdListener:
    """Registers every reactor browsed under §8.1.3's service type with source "dnssd"."""

    def __init__(self, gateway: Gateway, *, interface: str | None = "127.0.0.1") -> None:
        self.gateway = gateway
        self.interface = interface
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._pending: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Open the mDNS sockets and start browsing. Raises OSError when the host cannot."""
        interfaces: Any = [self.interface] if self.interface else InterfaceChoice.All
        self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change]
        )
        log.info("browsing DNS-SD %s via %s", SERVICE_TYPE, self.interface or "all interfaces")

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # zeroconf calls handlers by keyword on the event loop; resolving needs awaiting.
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        old = self._pending.pop(name, None)
        if old is not None:
            old.cancel()  # a newer TXT record supersedes the resolution in progress
        if len(self._pending) >= MAX_PENDING:
            log.warning("too many DNS-SD resolutions in progress; %s waits for its next update",
                        name)  # fmt: skip
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._pending[name] = task
        task.add_done_callback(lambda t: self._forget(name, t))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._pending.get(name) is task:
            del self._pending[name]

    async def _resolve(self, service_type: str, name: str) -> None:
        """Resolve one instance and register it; every failure is logged and dropped."""
        zc = self._zc
        if zc is None:
            return
        try:
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
                log.info("DNS-SD service %s did not resolve in %d ms", name, RESOLVE_TIMEOUT_MS)
                return
            addresses = info.parsed_addresses(IPVersion.V4Only)
            fallback_ws = f"ws://{addresses[0]}:{info.port}/ws" if addresses and info.port else None
            adv = parse_txt(info.properties, instance_name=name, websocket=fallback_ws)
        except PacketFlowError as err:
            log.warning("dropped DNS-SD service %s: %s %s: %s", name, err.code, err.field, err)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("resolving DNS-SD service %s failed", name)
            return
        try:
            self.gateway.register(announce_payload(adv), source="dnssd")
        except Exception:
            log.exception("registering reactor %s from DNS-SD failed", adv.reactor_id)

    async def close(self) -> None:
        await cancel_and_wait(*self._pending.values())
        self._pending.clear()
        browser, self._browser = self._browser, None
        if browser is not None:
            await browser.async_cancel()
        zc, self._zc = self._zc, None
        if zc is not None:
            await zc.async_close()
