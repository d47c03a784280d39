"""A reactor leaving with packets in flight (DESIGN §6: no accepted packet is lost):
the bookkeeping order of ``Gateway.depart`` and the registry's rule that a departed
record never touches the routing table again. A real ``Gateway`` (not started) with
stand-in links that record the frames the gateway sends."""

from __future__ import annotations

import json

from packetflow.gateway.registry import ReactorRegistry
from packetflow.gateway.server import CallbackTarget, Gateway
from packetflow.protocol.chemistry import STANDARD_MATRIX
from packetflow.protocol.messages import Result, ResultPayload

from .gateway_standins import gateway
from .gateway_standins import join as _join
from .gateway_standins import record as _record
from .gateway_standins import submit as _submit

__all__ = ["gateway"]  # the fixture


async def test_depart_with_packets_in_flight_reroutes_them_6(gateway: Gateway) -> None:
    """The departing reactor's packets land while it is registered, then it leaves, then
    they go to the reactor that joined since (this raised KeyError in the routing table:
    the packets landed after the reactor had been removed)."""
    replies: list[bytes] = []
    holder = _join(gateway, "holder")
    for n in range(2):
        gateway.accept(_submit(f"m{n}"), CallbackTarget(replies.append))
    assert holder.in_flight == 2 and len(holder.flights) == 2
    taker = _join(gateway, "taker")

    gateway.depart(holder)

    assert gateway.registry.get("holder") is None
    assert holder.in_flight == 0 and not holder.flights
    assert taker.in_flight == 2
    assert gateway.registry.table.decide("cf", "hold", priority=5, preferences=None,
                                         round_robin=0).reactor_id == "taker"  # fmt: skip
    sent = taker.link.peer.sent  # type: ignore[union-attr]
    assert sorted(s["payload"]["packet"]["id"] for s in sent) == ["p-m0", "p-m1"]
    for submit in sent:  # the taker answers: each client gets its one RESULT
        gateway.on_reactor_message(taker, Result(
            protocol_version="1.0", message_id=f"r-{submit['message_id']}", timestamp=1,
            source_id="taker", correlation_id=submit["message_id"],
            payload=ResultPayload(packet_id=submit["payload"]["packet"]["id"],
                                  status="success"),
        ))  # fmt: skip
    answers = [json.loads(r) for r in replies]
    assert sorted(a["correlation_id"] for a in answers) == ["m0", "m1"]
    assert {a["message_type"] for a in answers} == {"result"}
    assert taker.in_flight == 0


async def test_departing_twice_is_a_no_op(gateway: Gateway) -> None:
    holder = _join(gateway, "holder")
    gateway.depart(holder)
    gateway.depart(holder)
    assert gateway.registry.get("holder") is None


def test_a_departed_record_never_touches_the_table() -> None:
    """Late bookkeeping for a departed record (a packet landing, a probe timing out) updates
    the record alone: no KeyError, and a newer record under the same id keeps its row."""
    registry = ReactorRegistry(STANDARD_MATRIX)
    old = registry.upsert(_record("r"))
    registry.set_health(old, "healthy")
    registry.add_in_flight(old, 3)
    registry.remove("r")
    registry.add_in_flight(old, -1)  # raised KeyError before
    registry.set_health(old, "failed")
    registry.set_reported_load(old, 0.5)
    registry.set_adjustment(old, "cf", 0.1)
    registry.set_excluded(old, True)
    assert old.in_flight == 2

    new = registry.upsert(_record("r"))
    registry.set_health(new, "healthy")
    registry.add_in_flight(old, -2)  # the old record's last packets land
    registry.set_health(old, "failed")
    assert registry.registered(new) and not registry.registered(old)
    decision = registry.table.decide("cf", "hold", priority=5, preferences=None, round_robin=0)
    assert decision.reactor_id == "r"
    assert decision.load_ratio == 0.0  # not -2/4: the old record's count stayed its own
