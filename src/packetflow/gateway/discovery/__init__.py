"""The gateway's discovery listeners (DESIGN §2 announce channels 3 and 4): they hear
reactors advertise over §8.1.2 multicast and §8.1.3 DNS-SD and register them.

A listener that cannot start because of its environment (no multicast route, port 5353
unavailable) is logged as an error and left out: the gateway keeps serving reactors that
announce directly or are listed statically. A bad configuration (a group that is not an
IPv4 multicast address) raises, so a typo stops the gateway at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from ...protocol.discovery import check_multicast, discovery_interface
from .multicast import MulticastListener

if TYPE_CHECKING:
    from ..server import Gateway

log = logging.getLogger("packetflow.gateway.discovery")


class Listener(Protocol):
    async def close(self) -> None: ...


async def start_discovery(gateway: Gateway) -> list[Listener]:
    """Start the listeners ``gateway.config`` enables; the caller closes each one.

    Raises ValueError for an invalid ``multicast_group`` or ``multicast_port``.
    """
    config = gateway.config
    interface = discovery_interface(config.host)
    listeners: list[Listener] = []
    if config.multicast:
        check_multicast(config.multicast_group, config.multicast_port)
        multicast = MulticastListener(
            gateway, config.multicast_group, config.multicast_port, interface=interface
        )
        try:
            await multicast.start()
        except OSError as exc:
            log.error("multicast discovery disabled: cannot listen on %s:%d via %s: %s",
                      config.multicast_group, config.multicast_port, interface or "default",
                      exc)  # fmt: skip
        else:
            listeners.append(multicast)
    if config.dnssd:
        from .dnssd import DnsSdListener

        dnssd = DnsSdListener(gateway, interface=interface)
        try:
            await dnssd.start()
        except OSError as exc:
            log.error("DNS-SD discovery disabled: %s", exc)
            await dnssd.close()
        else:
            listeners.append(dnssd)
    return listeners


__all__ = ["Listener", "start_discovery"]
