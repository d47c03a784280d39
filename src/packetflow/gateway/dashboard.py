"""The live dashboard at the gateway's ``/``: serves the static page (public, holds no data)
and ``GET /v1/dashboard``, one bounded JSON snapshot of everything the page draws.

How the page gets its data, and why polling:

- The page is static and unauthenticated (``PUBLIC_PATHS``); it shows a sign-in form and
  keeps the API key (or JWT) in ``sessionStorage``: never in a URL (URLs land in logs and
  history), never in a cookie (a cookie would be sent by any site's form post to us).
- Every second the page fetches ``GET /v1/dashboard`` with the key in the
  ``X-PacketFlow-API-Key`` header (``Authorization: Bearer`` for a JWT), like any API call:
  the gateway's one authentication rule covers it, and a 401/403 shows "sign-in failed".
- Polling rather than push: a browser cannot set headers on a WebSocket upgrade, so push
  would need a second credential (a single-use ticket) and a second code path to secure;
  one snapshot a second costs the gateway a few milliseconds, is bounded in size
  (``MAX_*`` below), and a page left open never holds server state.

The snapshot builder reads the gateway through the narrow read-only views below
(``GatewayView``), so it depends on what it shows and not on the whole ``Gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Reversible
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import msgspec
from aiohttp import web

from ..protocol.chemistry import GROUPS, SPECIALIZATIONS
from ..protocol.events import Subscription, topic_matches
from ..protocol.messages import PROTOCOL_VERSION
from ..protocol.planner import MoleculeRun
from ..transport import now_ms
from .activity import Activity

if TYPE_CHECKING:
    from .metrics import GatewayMetrics
    from .registry import ReactorRecord
    from .server import PacketStory

# ---------------------------------------------------------------- paths

SNAPSHOT_PATH: Final = "/v1/dashboard"
# The static files, served from src/packetflow/dashboard/ (package data) with their type.
ASSETS: Final[Mapping[str, str]] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Every dashboard path that needs no credentials: the page and its assets, which contain
# no data. The gateway's authentication middleware exempts exactly these (and /health);
# SNAPSHOT_PATH is deliberately not here.
PUBLIC_PATHS: Final[frozenset[str]] = frozenset({"/", *(f"/dashboard/{name}" for name in ASSETS)})

# ---------------------------------------------------------------- limits (STYLE 5)

# Recent packets in a snapshot: a screenful or four; GET /v1/packets/{id} has the rest.
MAX_PACKETS: Final = 200
# Molecules listed (running first, then the most recently finished).
MAX_MOLECULES: Final = 50
# Packets drawn in the one molecule DAG a snapshot carries: more would not be legible as a
# graph; the molecule's summary still counts all of them.
MAX_DAG_PACKETS: Final = 300
# Reactors listed; the snapshot says how many there are in all.
MAX_REACTORS: Final = 1000
# Topics and subscription patterns listed.
MAX_TOPICS_SHOWN: Final = 100
MAX_PATTERNS_SHOWN: Final = 100
# Errors-by-code sampling period; the page polls at the same rate.
SAMPLE_INTERVAL_S: Final = 1.0

# The page loads nothing from elsewhere and cannot be framed (clickjacking a signed-in
# admin); inline script and style are refused, so injected markup cannot run.
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

# ---------------------------------------------------------------- narrow views


class MoleculeView(Protocol):
    @property
    def molecule_id(self) -> str: ...
    @property
    def run(self) -> MoleculeRun: ...
    @property
    def reactor_of(self) -> Mapping[str, str]: ...
    @property
    def inflight(self) -> Mapping[str, int]: ...


class CoordinatorView(Protocol):
    @property
    def active(self) -> Mapping[str, MoleculeView]: ...
    @property
    def finished(self) -> Mapping[str, MoleculeView]: ...
    def summaries(self, limit: int) -> list[dict[str, Any]]: ...


class BusView(Protocol):
    def subscriptions(self) -> list[Subscription[Any]]: ...


class LocalView(Protocol):
    @property
    def bus(self) -> BusView: ...


class RegistryView(Protocol):
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[ReactorRecord]: ...


class GatewayView(Protocol):
    """What the dashboard reads of a gateway (``Gateway`` satisfies it)."""

    @property
    def gateway_id(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def matrix(self) -> Mapping[str, Mapping[str, float]]: ...
    @property
    def matrix_version(self) -> str: ...
    @property
    def registry(self) -> RegistryView: ...
    @property
    def stories(self) -> OrderedDict[str, PacketStory]: ...
    @property
    def pending(self) -> Mapping[str, Any]: ...
    @property
    def queued(self) -> int: ...
    @property
    def metrics(self) -> GatewayMetrics: ...
    @property
    def activity(self) -> Activity: ...
    @property
    def coordinator(self) -> CoordinatorView: ...
    @property
    def local(self) -> LocalView: ...


# ---------------------------------------------------------------- the snapshot


def build_snapshot(
    gw: GatewayView, *, now: float, wall_ms: int, molecule_id: str | None = None
) -> dict[str, Any]:
    """Everything the page draws, bounded by the ``MAX_*`` limits. ``now`` is
    ``time.monotonic()`` (the clock of the activity rings); ``molecule_id`` picks the
    molecule whose DAG is included (default: the newest running, else the newest
    finished)."""
    metrics = gw.metrics
    error_totals = {code: int(c.value) for code, c in metrics.errors.children.items()}
    return {
        "gateway": {
            "gateway_id": gw.gateway_id,
            "protocol_version": PROTOCOL_VERSION,
            "uptime_seconds": round(now - gw.started, 1),
            "now": wall_ms,
            "in_flight": len(gw.pending),
            "queued": gw.queued,
            "accepted": int(metrics.accepted.value),
            "completed": int(metrics.completed.value),
            "failovers": int(metrics.failovers.value),
            "retries": int(metrics.retries.value),
            "errors": sum(error_totals.values()),
        },
        "reactors": [
            _reactor(r, gw.activity, now) for r in itertools.islice(gw.registry, MAX_REACTORS)
        ],
        "reactors_total": len(gw.registry),
        "affinity": {
            "version": gw.matrix_version,
            "groups": list(GROUPS),
            "specializations": list(SPECIALIZATIONS),
            "matrix": {
                g: {s: gw.matrix.get(g, {}).get(s) for s in SPECIALIZATIONS} for g in GROUPS
            },
        },
        "packets": [
            _packet(s) for s in itertools.islice(reversed(gw.stories.values()), MAX_PACKETS)
        ],
        "packets_total": len(gw.stories),
        "molecules": gw.coordinator.summaries(MAX_MOLECULES),
        "molecules_running": len(gw.coordinator.active),
        "molecule": _dag(gw.coordinator, molecule_id),
        "errors": {
            "interval_ms": int(SAMPLE_INTERVAL_S * 1000),
            "totals": error_totals,
            "series": [
                {"at": p.at_ms, "counts": dict(p.counts)} for p in gw.activity.errors.points
            ],
        },
        "events": _events(gw.local.bus, gw.activity),
    }


def _reactor(record: ReactorRecord, activity: Activity, now: float) -> dict[str, Any]:
    health_status = (record.last_heartbeat or {}).get("health_status") or {}
    ring = activity.reactors.get(record.reactor_id)
    p99 = ring.p99_ms(now) if ring is not None else None
    return {
        "reactor_id": record.reactor_id,
        "implementation": record.implementation,
        "version": record.version,
        "specializations": list(record.specializations),
        "health": record.health,
        "linked": record.link is not None,
        "load": round(record.load_ratio, 4),
        "in_flight": record.in_flight,
        "capacity": record.capacity,
        "queue_depth": health_status.get("queue_depth"),
        "packets_per_second": round(ring.rate(now), 2) if ring is not None else 0.0,
        "p99_ms": round(p99, 2) if p99 is not None else None,
        "adjustments": {g: round(v, 4) for g, v in record.adjustments.items()},
        "locality": record.locality,
        "endpoint": record.endpoints.get("websocket"),
        "source": record.source,
        "last_seen_seconds": round(max(0.0, now - record.last_seen), 1),
    }


def _packet(story: PacketStory) -> dict[str, Any]:
    return {
        "packet_id": story.packet_id,
        "kind": f"{story.group}:{story.element}",
        "state": story.state.value,
        "reactor_id": story.reactor_id,
        "score": round(story.score, 4) if story.score is not None else None,
        "route": story.route,
        "attempts": story.attempts,
        "error_code": story.error_code,
        "accepted_at": story.accepted_ms,
        "updated_at": story.updated_ms,
    }


def _dag(coordinator: CoordinatorView, molecule_id: str | None) -> dict[str, Any] | None:
    """The chosen molecule as nodes (with stage numbers for layout) and bonds."""
    state: MoleculeView | None = None
    if molecule_id is not None:
        state = coordinator.active.get(molecule_id) or coordinator.finished.get(molecule_id)
    if state is None:
        state = _newest(coordinator.active) or _newest(coordinator.finished)
    if state is None:
        return None
    run = state.run
    ids = run.molecule.packet_ids
    shown = ids[:MAX_DAG_PACKETS]
    kinds = {p.id: f"{p.group}:{p.element}" for p in run.molecule.packets[:MAX_DAG_PACKETS]}
    members = set(shown)
    return {
        "molecule_id": state.molecule_id,
        "status": run.status or ("running" if run.started_at is not None else "pending"),
        "packets_total": len(ids),
        "truncated": len(ids) > len(shown),
        "nodes": [
            {
                "id": pid,
                "kind": kinds.get(pid),
                "state": _node_state(run.state_of(pid), pid in state.inflight),
                "stage": run.stage_of(pid),
                "reactor_id": state.reactor_of.get(pid),
            }
            for pid in shown
        ],
        "bonds": [
            {"from": b.source, "to": b.target, "type": b.type, "strength": b.strength}
            for b in run.bonds
            if b.source in members and b.target in members
        ],
    }


def _node_state(planned: str, submitted: bool) -> str:
    """The planner keeps a packet "ready" until its reply (the coordinator does not report
    dispatches to it); one already handed to the router is shown as running."""
    return "running" if planned == "ready" and submitted else planned


def _newest(table: Mapping[str, MoleculeView]) -> MoleculeView | None:
    """The last inserted value (the coordinator's tables are insertion-ordered dicts)."""
    for key in reversed(cast(Reversible[str], table)):
        return table[key]
    return None


def _events(bus: BusView, activity: Activity) -> dict[str, Any]:
    subscriptions = bus.subscriptions()
    patterns = Counter(s.pattern for s in subscriptions)
    topics = []
    for topic, stats in itertools.islice(reversed(activity.topics.items()), MAX_TOPICS_SHOWN):
        matching = sum(n for pattern, n in patterns.items() if topic_matches(pattern, topic))
        topics.append(
            {
                "topic": topic,
                "published": stats.published,
                "last_published_at": stats.last_ms,
                "subscribers": matching,
            }
        )
    return {
        "topics": topics,
        "subscriptions_total": len(subscriptions),
        "patterns": [
            {"pattern": p, "subscriptions": n} for p, n in patterns.most_common(MAX_PATTERNS_SHOWN)
        ],
    }


# ---------------------------------------------------------------- HTTP


def _asset(name: str) -> bytes:
    return (resources.files("packetflow") / "dashboard" / name).read_bytes()


def add_dashboard(app: web.Application, gateway: GatewayView) -> None:
    """``GET /`` and ``/dashboard/*`` (public), ``GET /v1/dashboard`` (the snapshot), and
    the once-a-second error sampler, started and stopped with the app."""
    cache: dict[str, bytes] = {}

    def static(name: str) -> web.Response:
        body = cache.get(name)
        if body is None:
            body = cache[name] = _asset(name)
        return web.Response(
            body=body,
            headers={
                "Content-Type": ASSETS[name],
                "Cache-Control": "no-cache",
                **SECURITY_HEADERS,
            },
        )

    async def index(request: web.Request) -> web.Response:
        return static("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:  # a fixed list: no path from the request reaches the disk
            raise web.HTTPNotFound()
        return static(name)

    async def snapshot(request: web.Request) -> web.Response:
        molecule = request.query.get("molecule") or None
        body = build_snapshot(gateway, now=time.monotonic(), wall_ms=now_ms(), molecule_id=molecule)
        return web.Response(
            body=msgspec.json.encode(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def sample_errors() -> None:
        errors = gateway.metrics.errors
        while True:
            gateway.activity.errors.sample(
                now_ms(), {code: c.value for code, c in errors.children.items()}
            )
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def sampler(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(sample_errors())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.router.add_get("/", index)
    app.router.add_get("/dashboard/{name}", asset)
    app.router.add_get(SNAPSHOT_PATH, snapshot)
    app.cleanup_ctx.append(sampler)
