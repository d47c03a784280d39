"""The event bus and barrier bookkeeping behind ed:publish/subscribe/signal/listen and co:sync
(DESIGN §10), as pure tables: no clock, no sockets, no tasks.

The gateway (the bus of the cluster) and a reactor (its own bus, when used without a gateway)
both keep one ``EventBus`` and one ``BarrierTable`` and move bytes around them; every rule on
topics, matching, sequence numbers, bounds and barrier release lives here and nowhere else.

Topics and patterns (how matching works)
----------------------------------------
A topic is one or more non-empty segments separated by dots: ``orders.created``,
``signal.deploy``. It may not contain ``*``, whitespace or control characters, and is at most
``MAX_TOPIC_LENGTH`` characters. A subscription pattern is a topic whose segments may also be
wildcards, as whole segments only:

- ``*`` matches exactly one segment: ``orders.*`` matches ``orders.created`` but neither
  ``orders`` nor ``orders.created.eu``;
- ``**`` as the *last* segment matches one or more segments: ``orders.**`` matches
  ``orders.created`` and ``orders.created.eu`` but not ``orders`` (NATS' ``>``);
- a pattern that is a lone ``*`` or a lone ``**`` matches every topic (DESIGN §10 calls
  ``*`` "the wildcard"; a one-segment-only reading would surprise everyone).

A subscriber that cannot take an event (its connection is full, see transport.py) loses it;
the bus counts what each subscription lost (``note_dropped``) and the next event it does get
carries that count as ``dropped`` (``take_dropped``), so loss is never silent.

Sequence numbers are bus-wide: every ``publish`` takes the next integer (starting at 1)
whether or not anyone is subscribed, so within one bus they strictly increase and a
subscriber that sees a gap knows only that events went to other topics.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from .errors import InvalidPacket, Overloaded, invalid_field, json_type

# ---------------------------------------------------------------------------------------------
# Limits (STYLE 5)

# Subscriptions (and ed:listen waiters) one bus holds; past it subscribe answers PF004. Each
# costs a few hundred bytes, so this bounds the table to a few MiB.
MAX_SUBSCRIPTIONS: Final = 10_000
# Subscriptions one subscriber (a connection) may hold, so that one connection cannot take
# the whole table and lock everyone else out (NATS bounds subscriptions per connection the
# same way, `max_subscriptions`); a dashboard or service needs a handful.
MAX_SUBSCRIPTIONS_PER_SUBSCRIBER: Final = 100
# Topics are routing keys, not payloads: NATS and MQTT deployments keep them far below this.
MAX_TOPIC_LENGTH: Final = 256
# Barriers open at once; each holds at most `parties` waiters.
MAX_BARRIERS: Final = 10_000
# Parties of one barrier. A barrier of more packets than any realistic cluster runs at once
# would only ever time out.
MAX_PARTIES: Final = 10_000
# What a PF004 from a full table tells the sender to wait (§10.3.1 initial_delay_ms).
FULL_RETRY_DELAY_MS: Final = 1000

WILDCARD_ONE: Final = "*"
WILDCARD_REST: Final = "**"

_BAD_CHARS: Final = re.compile(r"[\s\x00-\x1f\x7f]")

S = TypeVar("S", bound=Hashable)
W = TypeVar("W")


# ---------------------------------------------------------------------------------------------
# Topics


def _check_name(value: object, field: str, *, pattern: bool) -> str:
    what = "topic pattern" if pattern else "topic"
    expected = f"{what}: dot-separated non-empty segments, at most {MAX_TOPIC_LENGTH} chars"
    if not isinstance(value, str):
        raise invalid_field(field, expected, json_type(value), "type")
    if not value or len(value) > MAX_TOPIC_LENGTH:
        raise invalid_field(
            field,
            expected,
            "string",
            "length",
            f"'{field}' must be 1 to {MAX_TOPIC_LENGTH} characters long; got {len(value)}",
        )
    if _BAD_CHARS.search(value):
        raise invalid_field(
            field,
            expected,
            "string",
            "pattern",
            f"'{field}' may not contain whitespace or control characters",
        )
    segments = value.split(".")
    for i, segment in enumerate(segments):
        if not segment:
            raise invalid_field(
                field, expected, "string", "pattern", f"'{field}' has an empty segment in {value!r}"
            )
        if "*" not in segment:
            continue
        if not pattern:
            raise invalid_field(
                field,
                expected,
                "string",
                "pattern",
                f"'{field}' is a topic, not a pattern: '*' is not allowed",
            )
        if segment == WILDCARD_ONE or (segment == WILDCARD_REST and i == len(segments) - 1):
            continue
        raise invalid_field(
            field,
            expected,
            "string",
            "pattern",
            f"'{field}': wildcards are whole segments, '*' (one segment) or a trailing '**' "
            f"(the rest); got {value!r}",
        )
    return value


def validate_topic(value: object, field: str = "payload.packet.data.topic") -> str:
    """A topic to publish on (module doc). Raises PF002 naming ``field``."""
    return _check_name(value, field, pattern=False)


def validate_pattern(value: object, field: str = "payload.packet.data.topic") -> str:
    """A subscription pattern (module doc). Raises PF002 naming ``field``."""
    return _check_name(value, field, pattern=True)


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` (module doc): ``*`` one segment, a trailing
    ``**`` one or more, a lone ``*`` or ``**`` everything."""
    if pattern in (WILDCARD_ONE, WILDCARD_REST):
        return True
    p = pattern.split(".")
    t = topic.split(".")
    if p[-1] == WILDCARD_REST:
        head = p[:-1]
        if len(t) <= len(head):
            return False
        t = t[: len(head)]
        p = head
    elif len(p) != len(t):
        return False
    return all(a in (WILDCARD_ONE, b) for a, b in zip(p, t, strict=True))


def _is_exact(pattern: str) -> bool:
    return "*" not in pattern


# ---------------------------------------------------------------------------------------------
# Event bus


@dataclass(frozen=True, slots=True)
class Subscription(Generic[S]):
    """One subscription: who (``subscriber``, an opaque handle) wants what (``pattern``)."""

    subscription_id: str
    pattern: str
    subscriber: S
    created_at: int  # ms, as passed to subscribe


@dataclass(frozen=True, slots=True)
class Delivery(Generic[S]):
    """One event for one subscription. ``data`` is what ed:subscribe streams and ed:listen
    answers: ``{topic, event, published_at, sequence, subscription_id}``."""

    subscription: Subscription[S]
    data: dict[str, Any]


class EventBus(Generic[S]):
    """Subscriptions by pattern and the events published to them (module doc).

    ``S`` is whatever identifies a subscriber to its owner (a connection, a future); it must
    be hashable so ``drop_subscriber`` can find all of its subscriptions. Exact patterns are
    indexed by topic, so a publish costs one dict lookup plus a scan of the wildcard
    subscriptions only.
    """

    def __init__(
        self,
        *,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_per_subscriber: int = MAX_SUBSCRIPTIONS_PER_SUBSCRIBER,
        id_prefix: str = "sub_",
    ) -> None:
        if max_subscriptions < 1 or max_per_subscriber < 1:
            raise ValueError("max_subscriptions and max_per_subscriber must be at least 1")
        self.max_subscriptions = max_subscriptions
        self.max_per_subscriber = max_per_subscriber
        self._dropped: dict[str, int] = {}  # subscription id -> events lost since last one
        self.id_prefix = id_prefix
        self.sequence = 0  # the last sequence number handed out; 0 before any publish
        self._counter = 0
        self._created = 0
        self._subs: dict[str, Subscription[S]] = {}
        self._exact: dict[str, dict[str, Subscription[S]]] = {}
        self._wild: dict[str, Subscription[S]] = {}
        self._by_subscriber: dict[S, set[str]] = {}
        self._ordinal: dict[str, int] = {}  # subscription id -> creation order

    def __len__(self) -> int:
        return len(self._subs)

    def __contains__(self, subscription_id: object) -> bool:
        return subscription_id in self._subs

    def get(self, subscription_id: str) -> Subscription[S] | None:
        return self._subs.get(subscription_id)

    def subscriptions(self) -> list[Subscription[S]]:
        """Every subscription, oldest first."""
        return list(self._subs.values())

    def subscribe(
        self,
        pattern: str,
        subscriber: S,
        now_ms: int,
        subscription_id: str | None = None,
        *,
        field: str = "payload.packet.data.topic",
    ) -> Subscription[S]:
        """Add a subscription to ``pattern`` for ``subscriber``.

        ``subscription_id`` is taken as given, else ``<id_prefix><counter>``. Raises PF002
        naming ``field`` for a bad pattern, PF002 on
        ``payload.packet.data.subscription_id`` for an id already in use, and PF004 (with
        ``retry_delay_ms``) when ``subscriber`` already holds ``max_per_subscriber`` or the
        bus already holds ``max_subscriptions``.
        """
        validate_pattern(pattern, field)
        if subscription_id is None:
            while True:
                self._counter += 1
                subscription_id = f"{self.id_prefix}{self._counter}"
                if subscription_id not in self._subs:
                    break
        elif not isinstance(subscription_id, str) or not subscription_id:
            raise invalid_field(
                "payload.packet.data.subscription_id",
                "non-empty string",
                json_type(subscription_id),
                "type",
            )
        elif subscription_id in self._subs:
            raise invalid_field(
                "payload.packet.data.subscription_id",
                "an unused subscription id",
                "string",
                "unique",
                f"Subscription id {subscription_id!r} is already in use",
            )
        held = len(self._by_subscriber.get(subscriber, ()))
        if held >= self.max_per_subscriber:
            raise Overloaded(
                f"This connection holds its maximum of {self.max_per_subscriber} "
                "subscriptions; unsubscribe (close a subscription) or use a wildcard pattern",
                retry_delay_ms=FULL_RETRY_DELAY_MS,
                details={
                    "reason": "subscriptions_per_connection_full",
                    "limit": self.max_per_subscriber,
                    "held": held,
                },
            )
        if len(self._subs) >= self.max_subscriptions:
            raise Overloaded(
                f"The event bus holds its maximum of {self.max_subscriptions} subscriptions",
                retry_delay_ms=FULL_RETRY_DELAY_MS,
                details={"reason": "subscriptions_full", "limit": self.max_subscriptions},
            )
        sub = Subscription(subscription_id, pattern, subscriber, now_ms)
        self._subs[subscription_id] = sub
        self._created += 1
        self._ordinal[subscription_id] = self._created
        if _is_exact(pattern):
            self._exact.setdefault(pattern, {})[subscription_id] = sub
        else:
            self._wild[subscription_id] = sub
        self._by_subscriber.setdefault(subscriber, set()).add(subscription_id)
        return sub

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove one subscription; False when there was none by that id."""
        sub = self._subs.pop(subscription_id, None)
        if sub is None:
            return False
        del self._ordinal[subscription_id]
        self._dropped.pop(subscription_id, None)
        if _is_exact(sub.pattern):
            bucket = self._exact.get(sub.pattern)
            if bucket is not None:
                bucket.pop(subscription_id, None)
                if not bucket:
                    del self._exact[sub.pattern]
        else:
            self._wild.pop(subscription_id, None)
        ids = self._by_subscriber.get(sub.subscriber)
        if ids is not None:
            ids.discard(subscription_id)
            if not ids:
                del self._by_subscriber[sub.subscriber]
        return True

    def drop_subscriber(self, subscriber: S) -> int:
        """Remove every subscription of ``subscriber`` (its connection closed); how many."""
        ids = list(self._by_subscriber.get(subscriber, ()))
        for subscription_id in ids:
            self.unsubscribe(subscription_id)
        return len(ids)

    def matching(self, topic: str) -> list[Subscription[S]]:
        """The subscriptions an event on ``topic`` goes to, oldest first."""
        exact = self._exact.get(topic, {})
        found = [
            *exact.values(),
            *(s for s in self._wild.values() if topic_matches(s.pattern, topic)),
        ]
        if exact and self._wild:
            found.sort(key=lambda s: self._ordinal[s.subscription_id])
        return found

    def fan_out(
        self, topic: str, *, field: str = "payload.packet.data.topic"
    ) -> tuple[int, list[Subscription[S]]]:
        """Publish on ``topic`` without building per-subscriber data: the event's sequence
        number and the matching subscriptions (oldest first), for an owner that encodes the
        event once for all of them. Raises PF002 naming ``field`` for a bad topic."""
        validate_topic(topic, field)
        self.sequence += 1
        return self.sequence, self.matching(topic)

    def note_dropped(self, subscription_id: str) -> int:
        """``subscription_id``'s subscriber could not take an event: count it; the count."""
        if subscription_id not in self._subs:
            return 0
        count = self._dropped.get(subscription_id, 0) + 1
        self._dropped[subscription_id] = count
        return count

    def take_dropped(self, subscription_id: str) -> int:
        """Events ``subscription_id`` lost since its last delivered one (the count is
        reset: the event about to be delivered carries it)."""
        return self._dropped.pop(subscription_id, 0) if self._dropped else 0

    def publish(
        self, topic: str, event: Any, now_ms: int, *, field: str = "payload.packet.data.topic"
    ) -> list[Delivery[S]]:
        """Publish ``event`` on ``topic``: the next sequence number, and one Delivery per
        matching subscription (oldest first). Raises PF002 naming ``field`` for a bad topic.
        Subscriptions stay; a one-shot subscriber (ed:listen) unsubscribes itself."""
        sequence, subscriptions = self.fan_out(topic, field=field)
        return [
            Delivery(
                sub,
                {
                    "topic": topic,
                    "event": event,
                    "published_at": now_ms,
                    "sequence": sequence,
                    "subscription_id": sub.subscription_id,
                },
            )
            for sub in subscriptions
        ]


# ---------------------------------------------------------------------------------------------
# Barriers (co:sync)


@dataclass(slots=True)
class _Barrier(Generic[W]):
    parties: int
    waiters: list[W]
    opened_at: float


class BarrierTable(Generic[W]):
    """co:sync barriers: ``parties`` packets arrive at the barrier named ``barrier`` and are
    released together when the last one arrives.

    A released barrier is forgotten, so the next arrival under the same name starts a new
    round. ``W`` is whatever the owner uses to wake a waiter (a future, a connection and
    message id); ``now`` is only recorded, in whatever unit the owner uses.
    """

    def __init__(self, *, max_barriers: int = MAX_BARRIERS) -> None:
        if max_barriers < 1:
            raise ValueError("max_barriers must be at least 1")
        self.max_barriers = max_barriers
        self._barriers: dict[str, _Barrier[W]] = {}

    def __len__(self) -> int:
        return len(self._barriers)

    def waiting(self, barrier: str) -> int:
        """How many have arrived at ``barrier`` and wait (0 when it is not open)."""
        entry = self._barriers.get(barrier)
        return len(entry.waiters) if entry is not None else 0

    def opened_at(self, barrier: str) -> float | None:
        entry = self._barriers.get(barrier)
        return entry.opened_at if entry is not None else None

    def arrive(self, barrier: str, parties: int, waiter: W, now: float) -> list[W] | None:
        """Record ``waiter`` at ``barrier``. Returns every waiter (this one last) when this
        arrival completes the barrier, else None (the caller waits).

        Raises PF002 naming ``payload.packet.data.barrier`` for a bad name,
        ``payload.packet.data.parties`` for a count outside 1..MAX_PARTIES or one that
        differs from the count the barrier was opened with, and PF004 when MAX_BARRIERS are
        already open.
        """
        check_barrier(barrier, parties)
        entry = self._barriers.get(barrier)
        if entry is not None and entry.parties != parties:
            raise parties_mismatch(barrier, entry.parties, parties)
        if parties == 1:
            return [waiter]
        if entry is None:
            if len(self._barriers) >= self.max_barriers:
                raise Overloaded(
                    f"{self.max_barriers} barriers are already open",
                    retry_delay_ms=FULL_RETRY_DELAY_MS,
                    details={"reason": "barriers_full", "limit": self.max_barriers},
                )
            entry = self._barriers[barrier] = _Barrier(parties, [], now)
        entry.waiters.append(waiter)
        if len(entry.waiters) < parties:
            return None
        del self._barriers[barrier]
        return entry.waiters

    def expire(self, barrier: str, waiter: W) -> bool:
        """Take ``waiter`` out of ``barrier`` (it timed out or was cancelled); False when it
        was not waiting there (already released). The last waiter leaving closes the
        barrier."""
        entry = self._barriers.get(barrier)
        if entry is None:
            return False
        for i, w in enumerate(entry.waiters):
            if w is waiter or w == waiter:
                del entry.waiters[i]
                if not entry.waiters:
                    del self._barriers[barrier]
                return True
        return False

    def waiters(self) -> int:
        """Waiters across every open barrier."""
        return sum(len(entry.waiters) for entry in self._barriers.values())

    def take_all(self) -> list[W]:
        """Every waiter of every open barrier, closing them all (the owner is stopping)."""
        taken = [w for entry in self._barriers.values() for w in entry.waiters]
        self._barriers.clear()
        return taken


def check_barrier(barrier: object, parties: object) -> None:
    """A co:sync arrival's ``barrier`` name and ``parties`` count, checked the same way
    whoever keeps the barrier (this table, or the rounds several gateways share,
    protocol/barrier_rounds.py). Raises PF002 naming ``payload.packet.data.barrier`` or
    ``payload.packet.data.parties``."""
    if not isinstance(barrier, str) or not barrier or len(barrier) > MAX_TOPIC_LENGTH:
        raise invalid_field(
            "payload.packet.data.barrier",
            f"non-empty string of at most {MAX_TOPIC_LENGTH} chars",
            json_type(barrier),
            "type",
        )
    if not isinstance(parties, int) or isinstance(parties, bool) or not 1 <= parties <= MAX_PARTIES:
        raise invalid_field(
            "payload.packet.data.parties",
            f"integer between 1 and {MAX_PARTIES}",
            json_type(parties),
            "range",
        )


def parties_mismatch(barrier: str, expected: int, got: int) -> InvalidPacket:
    """PF002 on ``payload.packet.data.parties``: ``barrier`` is open for ``expected``."""
    return invalid_field(
        "payload.packet.data.parties",
        f"{expected} (the barrier's parties)",
        "integer",
        "barrier_parties",
        f"Barrier {barrier!r} was opened for {expected} parties; this packet says {got}",
    )


__all__ = [
    "FULL_RETRY_DELAY_MS",
    "MAX_BARRIERS",
    "MAX_PARTIES",
    "MAX_SUBSCRIPTIONS",
    "MAX_TOPIC_LENGTH",
    "BarrierTable",
    "Delivery",
    "EventBus",
    "Subscription",
    "check_barrier",
    "parties_mismatch",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
]
