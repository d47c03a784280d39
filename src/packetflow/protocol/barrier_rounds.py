"""The rounds of a co:sync barrier that several gateways share (issue 14): who arrived, when
a round is full, and how an arrival joins or leaves it, as pure functions over the one
value stored per barrier. No clock, no NATS: gateway/nats_barriers.py reads that value,
asks these functions what to write, and compare-and-sets it.

How a shared barrier works
--------------------------
A barrier's stored value is its current ``Round``: the ``parties`` it was opened for, a
``round_id`` (the token of the arrival that opened it) and the arrivals so far. Each
arrival is a ``Token``: the *source* that holds it (one gateway process, named
``<gateway id>/<nonce>`` with a nonce drawn at start, so a restarted gateway never reuses
a token) and that source's arrival counter. Arrivals are stored grouped by source, so a
round of ``MAX_PARTIES`` arrivals stays a few hundred KiB at most (``MAX_ROUND_BYTES``).

- ``join``: an arrival joins the current round. With no round, an empty one, or a full
  one, it opens a new round (a full round stays stored until replaced, so every gateway
  can see it). An open round of other ``parties``: PF002 on ``payload.packet.data.parties``,
  exactly as the embedded table (protocol/events.py) answers.
- The write that makes a round full *is* the release: every gateway that sees a full
  round answers the waiters it holds in it (``HeldArrivals.released_in``).
- ``leave`` (a waiter timed out, or its gateway stops): the token comes out of its round
  by compare-and-set. If that round is full, or was replaced, the waiter was released
  instead: a round is replaced only when full or empty, and a round holding this token
  was not empty. So an emptied round is written empty under its own id, never deleted:
  a deleted round would hide that the round it replaced had filled. The one exception,
  a round that expired while a waiter still held it, cannot happen while the store keeps
  a round longer than the longest co:sync timeout (``gateway/nats_barriers.py`` sets
  its TTL so); an empty round goes away that way too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import msgspec

from .errors import Overloaded
from .events import FULL_RETRY_DELAY_MS, MAX_BARRIERS, MAX_PARTIES, check_barrier, parties_mismatch

# NATS' default max_payload is 1 MiB and a KV entry carries headers besides the value: a
# round is refused (PF004) well before that. 10,000 arrivals of one source encode to about
# 110 KiB, so only thousands of gateways with long ids could reach it.
MAX_ROUND_BYTES: Final = 512 * 1024

W = TypeVar("W")


def barrier_key(barrier: str) -> str:
    """The store key of ``barrier``: a digest, since KV keys allow ``[-/_=.a-zA-Z0-9]``
    only and a barrier may be named with anything (up to MAX_TOPIC_LENGTH chars)."""
    return "b" + hashlib.sha256(barrier.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Token:
    """One arrival: the source (gateway process) that holds it, and its counter there."""

    source: str
    counter: int

    def __str__(self) -> str:
        return f"{self.source}#{self.counter}"


class Round(msgspec.Struct, frozen=True):
    """A barrier's current round, as stored (module doc)."""

    barrier: str
    parties: int
    round_id: str  # str(Token) of the arrival that opened it
    arrivals: dict[str, list[int]]  # source -> its arrival counters, in arrival order

    @property
    def count(self) -> int:
        return sum(len(counters) for counters in self.arrivals.values())

    @property
    def full(self) -> bool:
        return self.count >= self.parties

    def holds(self, token: Token) -> bool:
        return token.counter in self.arrivals.get(token.source, ())


_decoder: Final = msgspec.json.Decoder(Round)


def decode_round(raw: bytes | None) -> Round | None:
    """The round stored as ``raw``; None when there is none or it is not a valid round
    (a value no gateway could have written is not trusted: the next write replaces it)."""
    if not raw:
        return None
    try:
        found = _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    if not found.barrier or not 1 <= found.parties <= MAX_PARTIES or found.count > found.parties:
        return None
    return found


def encode_round(found: Round) -> bytes:
    """``found`` as stored. Raises PF004 when it is over MAX_ROUND_BYTES."""
    raw = msgspec.json.encode(found)
    if len(raw) > MAX_ROUND_BYTES:
        raise Overloaded(
            f"Barrier {found.barrier!r} holds too many arrivals to share between gateways",
            retry_delay_ms=FULL_RETRY_DELAY_MS,
            details={"reason": "barrier_round_too_large", "limit_bytes": MAX_ROUND_BYTES},
        )
    return raw


def join(current: Round | None, barrier: str, parties: int, token: Token) -> Round:
    """The round after ``token`` arrives at ``barrier`` (module doc); ``current`` itself
    when it already holds ``token`` (an earlier write of it landed). The caller writes the
    result unless it is ``current``; a full result is the release.

    Raises PF002 naming ``payload.packet.data.barrier`` or ``payload.packet.data.parties``
    (a bad value, or ``parties`` other than the open round's).
    """
    check_barrier(barrier, parties)
    if current is not None and current.holds(token):
        return current
    if current is None or current.full or current.count == 0:
        return Round(barrier, parties, str(token), {token.source: [token.counter]})
    if current.parties != parties:
        raise parties_mismatch(barrier, current.parties, parties)
    arrivals = dict(current.arrivals)
    arrivals[token.source] = [*arrivals.get(token.source, ()), token.counter]
    return Round(current.barrier, current.parties, current.round_id, arrivals)


@dataclass(frozen=True, slots=True)
class Released:
    """The token's round was full: its waiter was released, not timed out."""


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """Write ``round`` (empty when nobody else waits) to take the token out."""

    round: Round


@dataclass(frozen=True, slots=True)
class Absent:
    """Nothing stored holds the token any more: nothing to write, the waiter timed out."""


Left = Released | Withdrawn | Absent


def leave(current: Round | None, round_id: str | None, token: Token) -> Left:
    """What taking ``token`` (which joined the round ``round_id``; None: not known, its
    join was cut short) out of ``current`` means (module doc)."""
    if current is None:
        return Absent()
    if round_id is not None and current.round_id != round_id:
        return Released()  # replaced, and only a full round is replaced
    if not current.holds(token):
        return Absent()
    if current.full:
        return Released()
    arrivals = {s: c for s, c in current.arrivals.items() if s != token.source}
    mine = [c for c in current.arrivals[token.source] if c != token.counter]
    if mine:
        arrivals[token.source] = mine
    return Withdrawn(Round(current.barrier, current.parties, current.round_id, arrivals))


class HeldArrivals(Generic[W]):
    """The arrivals one source (gateway process) holds, each with its waiter ``W``; it
    mints their tokens. Bounded like the embedded table: at most ``max_barriers`` barriers
    with a waiter here (PF004 past it)."""

    def __init__(self, source: str, *, max_barriers: int = MAX_BARRIERS) -> None:
        if max_barriers < 1:
            raise ValueError("max_barriers must be at least 1")
        self.source = source
        self.max_barriers = max_barriers
        self._counter = 0
        self._held: dict[int, tuple[str, W]] = {}  # counter -> barrier, waiter
        self._per_barrier: dict[str, int] = {}  # barrier -> waiters held here

    def __len__(self) -> int:
        return len(self._held)

    def barriers(self) -> int:
        """Barriers with at least one waiter here."""
        return len(self._per_barrier)

    def hold(self, barrier: str, waiter: W) -> Token:
        """A new arrival at ``barrier``: its token. Raises PF004 when ``max_barriers``
        other barriers already have a waiter here."""
        if barrier not in self._per_barrier and len(self._per_barrier) >= self.max_barriers:
            raise Overloaded(
                f"{self.max_barriers} barriers are already open",
                retry_delay_ms=FULL_RETRY_DELAY_MS,
                details={"reason": "barriers_full", "limit": self.max_barriers},
            )
        self._counter += 1
        self._held[self._counter] = (barrier, waiter)
        self._per_barrier[barrier] = self._per_barrier.get(barrier, 0) + 1
        return Token(self.source, self._counter)

    def drop(self, token: Token) -> W | None:
        """Forget ``token`` (answered); its waiter, None when it was not held."""
        held = self._held.pop(token.counter, None) if token.source == self.source else None
        if held is None:
            return None
        barrier, waiter = held
        left = self._per_barrier[barrier] - 1
        if left:
            self._per_barrier[barrier] = left
        else:
            del self._per_barrier[barrier]
        return waiter

    def released_in(self, found: Round) -> list[W]:
        """The waiters held here that ``found`` releases (none unless it is full). They
        stay held until dropped: whoever answers a waiter drops it."""
        if not found.full:
            return []
        held = self._held
        return [held[c][1] for c in found.arrivals.get(self.source, ()) if c in held]

    def waiters(self) -> list[W]:
        return [waiter for _, waiter in self._held.values()]


__all__ = [
    "MAX_ROUND_BYTES",
    "Absent",
    "HeldArrivals",
    "Left",
    "Released",
    "Round",
    "Token",
    "Withdrawn",
    "barrier_key",
    "decode_round",
    "encode_round",
    "join",
    "leave",
]
