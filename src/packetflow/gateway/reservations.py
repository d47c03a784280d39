"""§7.3 phase 2: capacity a molecule holds on reactors before it runs (COORDINATE
``reserve``), released when it finishes, is aborted or times out, or when the reservation
expires without an ``execute``.

A reservation is one rm:allocate lease per reactor (DESIGN §10; the reactor's ledger,
``protocol/resources.py``, refuses what does not fit with PF004), sent pinned to that
reactor through the gateway's own submit path. The lease outlives the hold by the
molecule's run time, so a gateway that dies holding it leaks nothing for long: each
reactor expires its leases on its own. What each reactor holds is planned by
``protocol.molecule_checks.reservation_needs``.

Bounded (STYLE 5): at most MAX_RESERVED molecules hold reservations at once, each on at
most MAX_REACTORS_PER_RESERVATION reactors.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from msgspec import Raw

from ..protocol.errors import InternalError, Overloaded, PacketFlowError, invalid_field
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Packet,
    Result,
    Submit,
    SubmitPayload,
    decode_json,
    decode_one,
    encode_json,
    error_from_payload,
)
from ..protocol.resources import CPU_SLOTS_PER_CORE, MAX_LEASE_MS
from ..transport import new_message_id, new_packet_id, now_ms

log = logging.getLogger("packetflow.gateway.reservations")

# Molecules holding reservations at once (each is a handful of leases).
MAX_RESERVED: Final = 1000
# Reactors one reservation may span: more is a plan no operator reads.
MAX_REACTORS_PER_RESERVATION: Final = 64
# How long a reservation waits for its `execute` when the request names no hold_ms: long
# enough for a client to validate, reserve and execute in turn, short enough that a client
# that went away returns the capacity soon.
DEFAULT_HOLD_MS: Final = 60_000
MAX_HOLD_MS: Final = 3_600_000
# The run time a lease covers after the hold when the molecule has no timeout_ms.
DEFAULT_RUN_MS: Final = 300_000
# Time an rm:allocate / rm:deallocate may take.
LEASE_CALL_TIMEOUT_MS: Final = 5000


class _Submitter(Protocol):
    gateway_id: str

    def submit_internal(
        self,
        msg: Submit,
        on_frame: Callable[[bytes], None],
        *,
        prefer: str | None = None,
        on_dispatch: Callable[[str], None] | None = None,
        retry: bool = True,
    ) -> None: ...


@dataclass(slots=True)
class Lease:
    reactor_id: str
    allocation_id: str | None  # None: nothing to hold there (no stated requirements)
    resources: dict[str, float]
    packets: list[str]

    def to_dict(self, estimated: Mapping[str, float | None]) -> dict[str, Any]:
        durations = [estimated.get(p) for p in self.packets]
        known = [d for d in durations if d is not None]
        return {
            "reactor_id": self.reactor_id,
            "allocation_id": self.allocation_id,
            "held": self.allocation_id is not None,
            "packets": list(self.packets),
            "estimated_duration": round(sum(known), 3) if known else None,
            "resource_requirements": dict(self.resources),
        }


@dataclass(slots=True, eq=False)
class Reservation:
    molecule_id: str
    structure: dict[str, Any]  # the molecule's canonical form, run by `execute`
    leases: list[Lease]
    expires_at: int  # epoch ms: released unless executed by then
    timer: asyncio.TimerHandle | None = None
    executing: bool = False
    assignment: dict[str, str] = field(default_factory=dict)  # packet id -> reactor


class Reservations:
    def __init__(self, gateway: _Submitter) -> None:
        self.gateway = gateway
        self.held: dict[str, Reservation] = {}

    def __len__(self) -> int:
        return len(self.held)

    def get(self, molecule_id: str) -> Reservation | None:
        return self.held.get(molecule_id)

    async def reserve(
        self,
        molecule_id: str,
        structure: dict[str, Any],
        needs: Mapping[str, Mapping[str, float]],
        assignment: Mapping[str, str],
        *,
        hold_ms: int,
        run_ms: int | None,
        path: str,
    ) -> Reservation:
        """Hold ``needs`` (reactor -> {memory_mb, cpu_cores}) for ``molecule_id``. All or
        nothing: if one reactor refuses (PF004), what others granted is released and the
        error is raised with ``error_details.reactor_id``."""
        if molecule_id in self.held:
            raise invalid_field(
                _join(path, "molecule_id"),
                "a molecule without a reservation",
                repr(molecule_id),
                "unique_reservation",
            )
        if len(self.held) >= MAX_RESERVED:
            raise Overloaded(
                f"{len(self.held)} molecules hold reservations; retry later", retry_delay_ms=1000
            )
        if len(needs) > MAX_REACTORS_PER_RESERVATION:
            raise invalid_field(
                _join(path, "resource_reservations"),
                f"at most {MAX_REACTORS_PER_RESERVATION} reactors",
                f"{len(needs)} reactors",
                "max_reactors",
            )
        lease_ms = min(hold_ms + (run_ms or DEFAULT_RUN_MS), MAX_LEASE_MS)
        by_reactor: dict[str, list[str]] = {}
        for pid, reactor in assignment.items():
            by_reactor.setdefault(reactor, []).append(pid)
        reservation = Reservation(
            molecule_id, structure, [], now_ms() + hold_ms, assignment=dict(assignment)
        )
        self.held[molecule_id] = reservation  # claimed while the leases are asked for
        try:
            for reactor, amounts in needs.items():
                resources = {
                    "memory_mb": float(amounts.get("memory_mb", 0.0)),
                    "cpu_cores": float(amounts.get("cpu_cores", 0.0)),
                }
                lease = Lease(reactor, None, resources, by_reactor.get(reactor, []))
                if resources["memory_mb"] > 0 or resources["cpu_cores"] > 0:
                    slots = math.ceil(resources["cpu_cores"]) * CPU_SLOTS_PER_CORE
                    try:
                        data = await self._ask(
                            reactor,
                            "allocate",
                            {
                                "resources": {
                                    "memory_mb": resources["memory_mb"],
                                    "cpu_slots": slots,
                                },
                                "lease_ms": lease_ms,
                            },
                        )
                    except PacketFlowError as err:
                        err.details.setdefault("reactor_id", reactor)
                        err.context.setdefault("molecule_id", molecule_id)
                        raise
                    lease.allocation_id = str(data.get("allocation_id"))
                reservation.leases.append(lease)
        except BaseException:
            self.held.pop(molecule_id, None)
            await self._release_leases(molecule_id, reservation.leases)
            raise
        loop = asyncio.get_running_loop()
        reservation.timer = loop.call_later(hold_ms / 1000.0, self._expire, reservation)
        return reservation

    def executing(self, molecule_id: str) -> Reservation | None:
        """The molecule's reservation now runs it: the hold timer stops; the leases stay
        until ``release``."""
        reservation = self.held.get(molecule_id)
        if reservation is None:
            return None
        reservation.executing = True
        if reservation.timer is not None:
            reservation.timer.cancel()
            reservation.timer = None
        return reservation

    def release(self, molecule_id: str, why: str) -> None:
        """Give back what ``molecule_id`` holds (finish, abort, timeout, expiry)."""
        reservation = self.held.pop(molecule_id, None)
        if reservation is None:
            return
        if reservation.timer is not None:
            reservation.timer.cancel()
        log.info("molecule %s: releasing its reservation (%s)", molecule_id, why)
        asyncio.get_running_loop().create_task(
            self._release_leases(molecule_id, reservation.leases)
        )

    def stop(self) -> None:
        for reservation in self.held.values():
            if reservation.timer is not None:
                reservation.timer.cancel()
        self.held.clear()  # the reactors' leases expire on their own

    def _expire(self, reservation: Reservation) -> None:
        reservation.timer = None
        if self.held.get(reservation.molecule_id) is reservation and not reservation.executing:
            self.release(reservation.molecule_id, "not executed in time")

    async def _release_leases(self, molecule_id: str, leases: list[Lease]) -> None:
        for lease in leases:
            if lease.allocation_id is None:
                continue
            try:
                await self._ask(
                    lease.reactor_id, "deallocate", {"allocation_id": lease.allocation_id}
                )
            except PacketFlowError as err:
                # Gone, or already expired: the lease ends by itself at its lease_ms.
                log.warning(
                    "molecule %s: releasing %s on %s failed: %s",
                    molecule_id,
                    lease.allocation_id,
                    lease.reactor_id,
                    err.message,
                )

    async def _ask(self, reactor_id: str, element: str, data: dict[str, Any]) -> dict[str, Any]:
        """rm:<element> on ``reactor_id`` (pinned), its RESULT data; raises its ERROR."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def on_frame(frame: bytes) -> None:
            if not future.done():
                future.set_result(frame)

        msg = Submit(
            protocol_version=PROTOCOL_VERSION,
            message_id=new_message_id(),
            timestamp=now_ms(),
            source_id=self.gateway.gateway_id,
            destination_id=reactor_id,
            payload=SubmitPayload(
                packet=Packet(
                    group="rm",
                    element=element,
                    id=new_packet_id(),
                    data=Raw(encode_json(data)),
                    timeout_ms=LEASE_CALL_TIMEOUT_MS,
                )
            ),
        )
        self.gateway.submit_internal(msg, on_frame, retry=False)
        reply = decode_one(await future)
        if isinstance(reply, Result):
            body = decode_json(bytes(reply.payload.data))
            return body if isinstance(body, dict) else {}
        if isinstance(reply, Error):
            raise error_from_payload(reply.payload)
        raise InternalError(f"rm:{element} on {reactor_id} answered neither RESULT nor ERROR")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
