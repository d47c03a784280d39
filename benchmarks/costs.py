"""What the per-packet defences cost: issue #11 allows its per-packet security (the
authorization check, principal-scoped packet ids, the reactor-credential rule) and issue
#10 its bounds (unsent-output and unanswered-request accounting per connection, the JSON
depth guard) at most 5% of the gateway figures, as a same-run ratio to the bare relay.

Each is measured by cutting it out of a copy of this source (the edits below, applied to
exact text, so a change to that code makes this benchmark fail rather than measure
something else) and running the same cf:ping load through the shipped code and through
each copy, each run right after a relay run of its own, in a shuffled order every round.
A defence's cost in one round is 1 - (shipped / relay) / (copy / relay); the figure is the
median over the rounds, with a bootstrap 95% interval, since this shared 2-core VM moves a
single run by ±15% and a cost of a few percent shows only over a couple of hundred rounds.
Gateway + reactor CPU per packet is read alongside. Authentication (once per connection)
and the checks made once per connection or frame are not cut: they cost nothing per packet.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import packetflow
from packetflow.runner import event_loop_factory

from .harness import Procs, ping_frame, rate_row, start_baselines, start_cluster, stats
from .load import run_load

IN_FLIGHT = 64


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the packetflow package
    old: str
    new: str


GATEWAY, TRANSPORT, MESSAGES = "gateway/server.py", "transport.py", "protocol/messages.py"

# What each variant cuts out, and the issue whose budget it is. The shipped code is what
# the issues measure against.
CUTS: dict[str, tuple[int, tuple[Edit, ...]]] = {
    "security": (11, (
        # Every packet acts for the gateway itself: no check_submit, no scoped ids.
        Edit(GATEWAY, "        principal = principal_of(target)\n        key = packet_id\n",
             "        principal = GATEWAY\n        key = packet_id\n"),
        Edit(GATEWAY, 'narrow = peer.attrs.get("reactor_only", False) or isinstance(item, '
             "Discover)", "narrow = isinstance(item, Discover)"),
    )),
    "bounds": (10, (
        Edit(TRANSPORT, """        outbox.append(frame)
        self._queued += size
        limit = self.max_outbox_bytes
        # The transport holds at most about one write burst, so below this the peer
        # cannot be full and its buffer size need not be asked.
        if (
            limit is not None
            and self._full_since is None
            and self._queued + WRITE_BURST_BYTES >= limit
        ):
            self._check_full()
""", "        outbox.append(frame)\n"),
        Edit(TRANSPORT, """        frame = self._outbox.popleft()
        self._queued -= frame_size(frame)
        return frame""", "        return self._outbox.popleft()"),
        Edit(TRANSPORT, "        self._enqueue(frame, frame_size(frame))\n        return True",
             "        self._enqueue(frame, 0)\n        return True"),
        Edit(TRANSPORT, "        self._queued -= taken\n", ""),
        Edit(TRANSPORT, "                    self._check_room()\n", ""),
        Edit(TRANSPORT, """    def request_opened(self) -> None:
        self.requests += 1

    def request_closed(self) -> None:
        self.requests -= 1
        limit = self.max_requests
        if limit is not None and self.requests < limit and self._full_since is None:
            self._readable.set()
""", """    def request_opened(self) -> None:
        pass

    def request_closed(self) -> None:
        pass
"""),
        Edit(GATEWAY, "                if peer.paused and not await peer.wait_readable():\n"
             "                    break\n", ""),
        Edit(MESSAGES, "        if not within_depth(frame, MAX_JSON_DEPTH):\n"
             "            return [FrameError(_too_deep())]\n", ""),
        Edit(MESSAGES, "        if isinstance(raw, Raw) and not within_depth(raw, "
             "MAX_JSON_DEPTH):\n            raise _too_deep()\n", ""),
        Edit(MESSAGES, "    data = bytes(raw)\n    check_json_depth(data)\n",
             "    data = bytes(raw)\n"),
    )),
}  # fmt: skip


def build_copy(root: Path, cut: tuple[Edit, ...]) -> Path:
    """A copy of the packetflow package under ``root`` with ``cut`` applied; the
    directory to put on PYTHONPATH."""
    source = Path(packetflow.__file__).parent
    shutil.copytree(source, root / "packetflow", ignore=shutil.ignore_patterns("__pycache__"))
    for edit in cut:
        path = root / "packetflow" / edit.path
        text = path.read_text()
        if text.count(edit.old) != 1:
            raise RuntimeError(f"benchmarks/costs.py: the code it cuts out of {edit.path} "
                               f"has changed; update its edit:\n{edit.old}")  # fmt: skip
        path.write_text(text.replace(edit.old, edit.new))
    return root


@dataclass
class _Cluster:
    url: str
    pids: tuple[int, ...]  # its gateway and reactor
    rates: list[float] = field(default_factory=list)
    relays: list[float] = field(default_factory=list)  # the relay run just before each
    cpu_us: list[float] = field(default_factory=list)  # gateway + reactor, per packet

    def ratios(self) -> list[float]:
        return [v / b for v, b in zip(self.rates, self.relays, strict=True)]


def _cpu_s(pid: int) -> float:
    """CPU seconds process ``pid``'s main thread has run so far (Linux schedstat: in ns,
    where /proc/PID/stat counts 10 ms ticks, too coarse for a run of a few thousand)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def _rate(url: str, count: int) -> float:
    async def go() -> float:
        return (await run_load(url, ping_frame, count=count, in_flight=IN_FLIGHT)).rate

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(go())


def _interval(values: list[float], rng: random.Random) -> tuple[float, float]:
    """A bootstrap 95% interval of the median of ``values``."""
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(2000))
    return medians[50], medians[1949]


def _start(procs: Procs, **kwargs: Any) -> _Cluster:
    url = start_cluster(procs, 1, **kwargs)
    return _Cluster(url, tuple(p.pid for p in procs.procs[-2:]))


def cost_rows(runs: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(15)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pf-costs-") as tmp, Procs() as procs:
        _, relay_url = start_baselines(procs)
        clusters = {"shipped": _start(procs)}
        for name, (_, cut) in CUTS.items():
            path = build_copy(Path(tmp) / name, cut)
            clusters[name] = _start(procs, env={"PYTHONPATH": str(path)}, data_dir=path / "data")
        for cluster in clusters.values():  # every process warm before the first measured run
            _rate(cluster.url, max(200, count // 10))
        order = list(clusters.values())
        for _ in range(runs):
            rng.shuffle(order)  # no variant always runs first, or after the same one
            for cluster in order:
                cluster.relays.append(_rate(relay_url, count))
                before = sum(map(_cpu_s, cluster.pids))
                cluster.rates.append(_rate(cluster.url, count))
                cluster.cpu_us.append((sum(map(_cpu_s, cluster.pids)) - before) / count * 1e6)
        shipped = clusters["shipped"]
        title = f"cf:ping via gateway + 1 reactor, 1 conn × {IN_FLIGHT} in flight"
        rows.append(rate_row(f"{title}, as shipped (msg/s)", shipped.rates, shipped.relays))
        for name, (issue, _) in CUTS.items():
            lean = clusters[name]
            what = f"#{issue}'s per-packet {name}"
            rows.append(rate_row(f"{title}, {what} cut out (msg/s)", lean.rates, lean.relays))
            # Paired per round, so that the machine's drift hits both alike.
            costs = [100.0 * (1.0 - s / c) for s, c in zip(shipped.ratios(), lean.ratios(),
                                                             strict=True)]  # fmt: skip
            low, high = _interval(costs, rng)
            cpu = [100.0 * (1.0 - c / s) for s, c in zip(shipped.cpu_us, lean.cpu_us,
                                                          strict=True)]  # fmt: skip
            rows.append({
                "figure": f"cost of {what}: drop of the same-run ratio to the relay (%)",
                "value": stats([max(0.0, c) for c in costs]), "unit": "%", "goal": 5.0,
                "note": f"median of {len(costs)} paired rounds {statistics.median(costs):+.1f}% "
                        f"(95% interval {low:+.1f}% to {high:+.1f}%); gateway + reactor CPU "
                        f"per packet {statistics.median(shipped.cpu_us):.1f} µs shipped, "
                        f"{statistics.median(lean.cpu_us):.1f} µs cut out "
                        f"(paired median {statistics.median(cpu):+.1f}%)",
            })  # fmt: skip
    return rows
