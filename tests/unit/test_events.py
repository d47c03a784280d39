"""protocol/events.py: topic matching, the event bus and co:sync barriers (DESIGN §10 ed and
co elements) as pure tables, with Hypothesis for the matching rules and a stateful model of
the bus."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from packetflow.protocol.events import (
    MAX_TOPIC_LENGTH,
    BarrierTable,
    EventBus,
    topic_matches,
    validate_pattern,
    validate_topic,
)

from .expect import fails

D = "payload.packet.data"


# ---------------------------------------------------------------------------------------------
# topic_matches


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders.created", "orders.created", True),
        ("orders.created", "orders.deleted", False),
        ("orders.created", "orders.created.eu", False),
        ("orders.*", "orders.created", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.created.eu", False),
        ("*.created", "orders.created", True),
        ("*.created", "orders.deleted", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("orders.**", "orders.created", True),
        ("orders.**", "orders.created.eu", True),
        ("orders.**", "orders", False),
        ("orders.**", "order.created", False),
        ("*", "anything", True),
        ("*", "any.thing.at.all", True),
        ("**", "any.thing", True),
        ("a.*.**", "a.b", False),
        ("a.*.**", "a.b.c", True),
    ],
)
def test_topic_matches_wildcards(pattern: str, topic: str, expected: bool) -> None:
    """DESIGN §10 ed:subscribe: `*` one segment, trailing `**` the rest, lone `*` everything."""
    assert topic_matches(pattern, topic) is expected


segment = st.text(alphabet="abcxyz01_-", min_size=1, max_size=4)
topics = st.lists(segment, min_size=1, max_size=5).map(".".join)


@given(topics)
def test_a_topic_matches_itself_and_the_catch_alls(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert topic_matches("*", topic)
    assert topic_matches("**", topic)


@given(topics, st.data())
def test_star_in_any_position_matches_that_segment(topic: str, data: st.DataObject) -> None:
    parts = topic.split(".")
    i = data.draw(st.integers(0, len(parts) - 1))
    pattern = ".".join("*" if j == i else p for j, p in enumerate(parts))
    assert topic_matches(pattern, topic)
    assert not topic_matches(pattern + ".x", topic)


@given(topics, topics)
def test_trailing_double_star_matches_exactly_the_longer_topics_under_a_prefix(
    prefix: str, rest: str
) -> None:
    assert topic_matches(prefix + ".**", prefix + "." + rest)
    assert not topic_matches(prefix + ".**", prefix)


@given(topics, topics)
def test_exact_patterns_match_only_equal_topics(a: str, b: str) -> None:
    assert topic_matches(a, b) is (a == b)


@pytest.mark.parametrize(
    "bad",
    ["", "a..b", ".a", "a.", "a b", "a\tb", "a.*", "**", "x" * (MAX_TOPIC_LENGTH + 1)],
)
def test_validate_topic_refuses_bad_topics_pf002(bad: str) -> None:
    fails(lambda: validate_topic(bad, f"{D}.topic"), "PF002", f"{D}.topic")


@pytest.mark.parametrize("bad", ["a.**.b", "a*", "a.b*", "***", "", "a..*", 7, None])
def test_validate_pattern_refuses_partial_wildcards_pf002(bad: object) -> None:
    fails(lambda: validate_pattern(bad, f"{D}.topic"), "PF002", f"{D}.topic")


@pytest.mark.parametrize("good", ["a", "a.b", "*", "**", "a.*", "a.**", "*.b.**", "a-b_c.1"])
def test_validate_pattern_accepts_whole_segment_wildcards(good: str) -> None:
    assert validate_pattern(good) == good


# ---------------------------------------------------------------------------------------------
# EventBus


def test_publish_delivers_to_matching_subscriptions_oldest_first() -> None:
    bus: EventBus[str] = EventBus()
    a = bus.subscribe("orders.*", "alice", 1)
    b = bus.subscribe("orders.created", "bob", 2)
    bus.subscribe("users.*", "carol", 3)
    out = bus.publish("orders.created", {"id": 7}, 100)
    assert [d.subscription for d in out] == [a, b]
    assert out[0].data == {
        "topic": "orders.created",
        "event": {"id": 7},
        "published_at": 100,
        "sequence": 1,
        "subscription_id": a.subscription_id,
    }
    assert out[1].data["subscription_id"] == b.subscription_id


def test_sequence_is_bus_wide_and_counts_unheard_events() -> None:
    bus: EventBus[str] = EventBus()
    bus.subscribe("b", "x", 0)
    assert bus.publish("a", 1, 0) == []
    assert bus.sequence == 1
    (d,) = bus.publish("b", 2, 0)
    assert d.data["sequence"] == 2
    assert bus.sequence == 2


def test_subscription_ids_are_generated_or_taken_and_unique() -> None:
    bus: EventBus[str] = EventBus(id_prefix="s")
    assert bus.subscribe("a", "x", 0).subscription_id == "s1"
    assert bus.subscribe("a", "x", 0, "mine").subscription_id == "mine"
    err = fails(lambda: bus.subscribe("a", "y", 0, "mine"), "PF002")
    assert err.field == f"{D}.subscription_id"
    # a generated id never collides with a given one
    bus.subscribe("a", "x", 0, "s2")
    assert bus.subscribe("a", "x", 0).subscription_id == "s3"


def test_unsubscribe_and_drop_subscriber() -> None:
    bus: EventBus[str] = EventBus()
    a = bus.subscribe("t", "alice", 0)
    bus.subscribe("t.*", "alice", 0)
    c = bus.subscribe("t", "carol", 0)
    assert bus.unsubscribe(a.subscription_id) is True
    assert bus.unsubscribe(a.subscription_id) is False
    assert bus.drop_subscriber("alice") == 1
    assert bus.drop_subscriber("alice") == 0
    assert [d.subscription for d in bus.publish("t", None, 0)] == [c]
    assert len(bus) == 1


def test_bus_is_bounded_pf004_with_retry_delay() -> None:
    bus: EventBus[int] = EventBus(max_subscriptions=2)
    bus.subscribe("a", 1, 0)
    s = bus.subscribe("a", 2, 0)
    err = fails(lambda: bus.subscribe("a", 3, 0), "PF004")
    assert err.retry_delay_ms and err.retry_delay_ms > 0
    assert err.details["reason"] == "subscriptions_full"
    bus.unsubscribe(s.subscription_id)
    bus.subscribe("a", 3, 0)


def test_one_subscriber_cannot_take_the_whole_bus_pf004_naming_its_cap() -> None:
    """The hardening issue's amplification: one connection held all 10,000 subscriptions,
    so everyone else's subscribe got PF004. Now a subscriber's own cap comes first."""
    bus: EventBus[str] = EventBus(max_subscriptions=10, max_per_subscriber=3)
    for _ in range(3):
        bus.subscribe("**", "greedy", 0)
    err = fails(lambda: bus.subscribe("**", "greedy", 0), "PF004")
    assert err.details == {"reason": "subscriptions_per_connection_full", "limit": 3, "held": 3}
    assert "maximum of 3 subscriptions" in err.message
    assert err.retry_delay_ms and err.retry_delay_ms > 0
    assert bus.subscribe("**", "other", 0).subscriber == "other"  # others still can
    bus.drop_subscriber("greedy")
    bus.subscribe("**", "greedy", 0)  # and the cap counts what it holds now
    with pytest.raises(ValueError):
        EventBus(max_per_subscriber=0)


def test_dropped_events_are_counted_until_the_next_delivery() -> None:
    bus: EventBus[str] = EventBus()
    sub = bus.subscribe("t", "slow", 0)
    assert bus.take_dropped(sub.subscription_id) == 0
    assert bus.note_dropped(sub.subscription_id) == 1
    assert bus.note_dropped(sub.subscription_id) == 2
    assert bus.take_dropped(sub.subscription_id) == 2
    assert bus.take_dropped(sub.subscription_id) == 0  # reset once reported
    assert bus.note_dropped("sub_unknown") == 0  # nothing kept for a gone subscription
    bus.note_dropped(sub.subscription_id)
    bus.unsubscribe(sub.subscription_id)
    assert bus.take_dropped(sub.subscription_id) == 0  # the count left with it


def test_fan_out_takes_a_sequence_number_and_lists_the_matching_subscriptions() -> None:
    bus: EventBus[str] = EventBus()
    a = bus.subscribe("orders.*", "a", 0)
    b = bus.subscribe("orders.created", "b", 0)
    bus.subscribe("users.*", "c", 0)
    assert bus.fan_out("orders.created") == (1, [a, b])
    assert bus.fan_out("nothing.here") == (2, [])
    fails(lambda: bus.fan_out("orders.*"), "PF002", f"{D}.topic")


def test_publish_and_subscribe_validate_with_the_given_field() -> None:
    bus: EventBus[int] = EventBus()
    fails(lambda: bus.publish("a.*", 1, 0), "PF002", f"{D}.topic")
    fails(lambda: bus.subscribe("a**", 1, 0, field=f"{D}.x"), "PF002", f"{D}.x")
    assert bus.sequence == 0, "a refused publish takes no sequence number"


class BusModel(RuleBasedStateMachine):
    """The indexed bus answers exactly what a naive scan of all subscriptions would."""

    def __init__(self) -> None:
        super().__init__()
        self.bus: EventBus[int] = EventBus(max_subscriptions=50)
        self.model: dict[str, tuple[str, int]] = {}
        self.seq = 0

    patterns = st.sampled_from(["a", "a.b", "a.*", "*.b", "a.**", "*", "**", "b.*.c", "b"])
    topics_ = st.sampled_from(["a", "b", "a.b", "a.c", "b.b", "b.x.c", "a.b.c"])

    @precondition(lambda self: len(self.model) < 50)
    @rule(pattern=patterns, who=st.integers(0, 4))
    def subscribe(self, pattern: str, who: int) -> None:
        sub = self.bus.subscribe(pattern, who, 0)
        self.model[sub.subscription_id] = (pattern, who)

    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        if not self.model:
            return
        sid = data.draw(st.sampled_from(sorted(self.model)))
        assert self.bus.unsubscribe(sid)
        del self.model[sid]

    @rule(who=st.integers(0, 4))
    def drop(self, who: int) -> None:
        mine = [sid for sid, (_, w) in self.model.items() if w == who]
        assert self.bus.drop_subscriber(who) == len(mine)
        for sid in mine:
            del self.model[sid]

    @rule(topic=topics_)
    def publish(self, topic: str) -> None:
        self.seq += 1
        got = [d.subscription.subscription_id for d in self.bus.publish(topic, None, 0)]
        want = [sid for sid, (p, _) in self.model.items() if topic_matches(p, topic)]
        assert got == want  # same set, oldest first
        assert self.bus.sequence == self.seq

    @invariant()
    def sizes_agree(self) -> None:
        assert len(self.bus) == len(self.model)


TestBusModel = BusModel.TestCase


# ---------------------------------------------------------------------------------------------
# BarrierTable


def test_barrier_releases_all_waiters_when_the_last_party_arrives() -> None:
    table: BarrierTable[str] = BarrierTable()
    assert table.arrive("b", 3, "w1", 0.0) is None
    assert table.arrive("b", 3, "w2", 0.1) is None
    assert table.waiting("b") == 2
    assert table.arrive("b", 3, "w3", 0.2) == ["w1", "w2", "w3"]
    assert table.waiting("b") == 0
    assert len(table) == 0
    # the name is free again: a new round starts
    assert table.arrive("b", 2, "x", 1.0) is None


def test_one_party_barrier_releases_at_once() -> None:
    table: BarrierTable[str] = BarrierTable()
    assert table.arrive("solo", 1, "w", 0.0) == ["w"]
    assert len(table) == 0


def test_mismatched_parties_is_pf002_naming_parties() -> None:
    table: BarrierTable[str] = BarrierTable()
    table.arrive("b", 3, "w1", 0.0)
    err = fails(lambda: table.arrive("b", 2, "w2", 0.0), "PF002", f"{D}.parties")
    assert err.validation_rule == "barrier_parties"
    assert table.waiting("b") == 1


@pytest.mark.parametrize("parties", [0, -1, True, 1.5, "2", 10_001])
def test_bad_parties_pf002(parties: object) -> None:
    table: BarrierTable[str] = BarrierTable()
    fails(lambda: table.arrive("b", parties, "w", 0.0), "PF002", f"{D}.parties")  # type: ignore[arg-type]


@pytest.mark.parametrize("barrier", ["", 3, None, "x" * 300])
def test_bad_barrier_name_pf002(barrier: object) -> None:
    table: BarrierTable[str] = BarrierTable()
    fails(lambda: table.arrive(barrier, 2, "w", 0.0), "PF002", f"{D}.barrier")  # type: ignore[arg-type]


def test_expire_removes_a_waiter_and_closes_an_empty_barrier() -> None:
    table: BarrierTable[str] = BarrierTable()
    table.arrive("b", 3, "w1", 0.0)
    table.arrive("b", 3, "w2", 0.0)
    assert table.expire("b", "w1") is True
    assert table.expire("b", "w1") is False
    assert table.waiting("b") == 1
    assert table.expire("b", "w2") is True
    assert len(table) == 0
    assert table.expire("b", "w2") is False
    # after everyone left, parties may change
    assert table.arrive("b", 2, "w3", 0.0) is None


def test_barrier_table_is_bounded_pf004() -> None:
    table: BarrierTable[str] = BarrierTable(max_barriers=1)
    table.arrive("a", 2, "w", 0.0)
    err = fails(lambda: table.arrive("b", 2, "w", 0.0), "PF004")
    assert err.details["reason"] == "barriers_full"
    assert table.arrive("a", 2, "w2", 0.0) == ["w", "w2"]


@given(st.integers(2, 30), st.lists(st.sampled_from(["x", "y"]), min_size=1, max_size=80))
def test_barrier_releases_exactly_every_parties_arrivals(parties: int, names: list[str]) -> None:
    table: BarrierTable[int] = BarrierTable()
    counts = {"x": 0, "y": 0}
    for i, name in enumerate(names):
        released = table.arrive(name, parties, i, float(i))
        counts[name] += 1
        if counts[name] % parties == 0:
            assert released is not None and len(released) == parties
            assert released[-1] == i
        else:
            assert released is None
        assert table.waiting(name) == counts[name] % parties
