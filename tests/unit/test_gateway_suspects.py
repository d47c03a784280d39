"""The gateway's side of DESIGN §6's poison rule and of its queue: a reactor lost with
packets on it, one suspect per reactor, and a queued packet put back when the freed slot
is not for it. A real ``Gateway`` (not started) with stand-in links."""

from __future__ import annotations

from packetflow.gateway.registry import ReactorRecord
from packetflow.gateway.server import CallbackTarget, Flight, Gateway
from packetflow.protocol.lifecycle import PacketState

from .gateway_standins import Link, gateway
from .gateway_standins import join as _join
from .gateway_standins import submit as _submit

__all__ = ["gateway"]  # the fixture


def _lose(gateway: Gateway, record: ReactorRecord) -> None:
    link = record.link
    assert link is not None
    gateway.on_link_lost(record, link)


def _flights(gateway: Gateway) -> dict[str, Flight]:
    seen = {f.packet_id: f for f in gateway.pending.values()}
    for queue in gateway.waiting.values():
        seen.update((f.packet_id, f) for f in queue)
    return seen


async def test_design_5_queued_packet_put_back_when_the_freed_slot_is_not_for_it(
    gateway: Gateway,
) -> None:
    """A lost reactor's packet waits (its retry avoids the reactor it was on while another
    exists); that reactor comes back and frees a slot: the drain hands it the packet,
    routing puts it back in the queue. This raised IllegalPacketTransition (queued →
    enqueued) in the reactor link's read loop, which then died (chaos test_poison)."""
    replies: list[bytes] = []
    a = _join(gateway, "a", capacity=1)
    b = _join(gateway, "b", capacity=1)
    gateway.accept(_submit("m0"), CallbackTarget(replies.append))
    gateway.accept(_submit("m1"), CallbackTarget(replies.append))
    assert a.in_flight == 1 and b.in_flight == 1
    lost = next(iter(a.flights))
    _lose(gateway, a)
    assert gateway.queued == 1 and lost.entry is not None
    a.link = Link()  # type: ignore[assignment]
    gateway.registry.set_health(a, "healthy")

    gateway.slot_freed(a)  # raised IllegalPacketTransition

    assert gateway.queued == 1 and lost.entry is not None
    assert lost.story is not None and lost.story.state is PacketState.QUEUED
    assert replies == []
    # b's packet finishes: the waiting one goes there, as its retry asked.
    done = next(iter(b.flights))
    gateway._land(done)
    gateway.slot_freed(b)
    assert gateway.queued == 0 and lost.reactor is b and lost in b.flights


async def test_design_6_one_suspect_per_reactor_and_only_the_suspect_is_blamed(
    gateway: Gateway,
) -> None:
    replies: list[bytes] = []
    a = _join(gateway, "a", capacity=8)
    for n in range(3):
        gateway.accept(_submit(f"m{n}"), CallbackTarget(replies.append))
    assert a.in_flight == 3
    b = _join(gateway, "b", capacity=8)

    _lose(gateway, a)  # nobody was a suspect: all three count a delivery, and move at once
    flights = _flights(gateway)
    assert sorted(f.deliveries for f in flights.values()) == [1, 1, 1]
    assert b.in_flight == 3 and gateway.queued == 0
    c = _join(gateway, "c", capacity=8)
    d = _join(gateway, "d", capacity=8)

    _lose(gateway, b)  # again nobody was a suspect: all count, and now all are suspects
    flights = _flights(gateway)
    assert all(f.deliveries == 2 and f.suspect for f in flights.values())
    assert (c.suspects, d.suspects, gateway.queued) == (1, 1, 1)  # the third waits

    for n in range(3, 6):  # fresh packets still flow to reactors running a suspect
        gateway.accept(_submit(f"m{n}"), CallbackTarget(replies.append))
    assert gateway.queued == 1 and c.in_flight + d.in_flight == 5

    on_c = {f.packet_id: f.deliveries for f in c.flights}
    _lose(gateway, c)  # it ran one suspect: that one alone counts
    flights = _flights(gateway)
    culprit = next(pid for pid, n in on_c.items() if n == 2)
    assert flights[culprit].deliveries == 3
    for pid, before in on_c.items():
        if pid != culprit:
            assert flights[pid].deliveries == before
    assert d.suspects == 1 and replies == []
    assert a.in_flight == b.in_flight == c.in_flight == 0
    assert a.suspects == b.suspects == c.suspects == 0


async def test_design_6_a_link_closed_before_its_read_loop_noticed_is_failed_over_at_once(
    gateway: Gateway,
) -> None:
    """Sending on a reactor link whose socket already closed: the reactor is failed over
    there and then (routing stops choosing it), the packet goes elsewhere, and no
    delivery is counted (it never reached a reactor). Before, each such send counted a
    delivery and routing chose the same reactor again, until PF005."""
    replies: list[bytes] = []
    a = _join(gateway, "a", capacity=8)
    b = _join(gateway, "b", capacity=8)
    gateway.registry.add_in_flight(b, 7)  # routing prefers the idle reactor a
    a.link.peer.closed = True  # type: ignore[union-attr]

    gateway.accept(_submit("m0"), CallbackTarget(replies.append))

    flight = next(iter(b.flights))
    assert flight.deliveries == 0
    assert a.link is None and a.health == "failed" and a.in_flight == 0
    assert replies == []
