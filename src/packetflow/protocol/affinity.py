"""Dynamic affinity adjustment (§6.3.2, DESIGN §5): a per-reactor, per-group correction to
the matrix learned from observed latency and error rate, bounded to ±0.2 and decaying
back to 0 when the reactor is not observed.

How it works: each (reactor, group) keeps exponentially weighted averages of latency and
failure; a reactor faster than the group's average across reactors earns up to +0.1,
and its failure rate costs up to −0.2 (half its EWMA failure rate, doubled near 100%).
Every ``decay`` call pulls adjustments toward 0 with half-life ``half_life_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .chemistry import MAX_DYNAMIC_ADJUSTMENT

# Weight of the newest observation in the averages.
EWMA_ALPHA: Final = 0.1
# Samples needed before a (reactor, group) earns any adjustment.
MIN_SAMPLES: Final = 20
LATENCY_WEIGHT: Final = 0.1
ERROR_WEIGHT: Final = 0.5
DEFAULT_HALF_LIFE_S: Final = 300.0


@dataclass(slots=True)
class _Observed:
    latency_ms: float
    failure: float
    samples: int
    adjustment: float = 0.0


class AffinityLearner:
    def __init__(self, half_life_s: float = DEFAULT_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self._seen: dict[tuple[str, str], _Observed] = {}
        # Per group: (sum of the reactors' latency EWMAs, how many reactors), kept as the
        # EWMAs move so the group mean costs O(1) per packet, not a scan of every reactor.
        self._group_sum: dict[str, list[float]] = {}
        self._last_decay: float | None = None

    def observe(self, reactor_id: str, group: str, latency_ms: float, ok: bool) -> float:
        """Fold one packet outcome in; returns the reactor's new adjustment for ``group``."""
        key = (reactor_id, group)
        seen = self._seen.get(key)
        failure = 0.0 if ok else 1.0
        total = self._group_sum.setdefault(group, [0.0, 0.0])
        if seen is None:
            seen = self._seen[key] = _Observed(latency_ms, failure, 1)
            total[0] += latency_ms
            total[1] += 1
        else:
            step = EWMA_ALPHA * (latency_ms - seen.latency_ms)
            seen.latency_ms += step
            total[0] += step
            seen.failure += EWMA_ALPHA * (failure - seen.failure)
            seen.samples += 1
        seen.adjustment = self._adjustment(group, seen)
        return seen.adjustment

    def _adjustment(self, group: str, seen: _Observed) -> float:
        if seen.samples < MIN_SAMPLES:
            return 0.0
        total, count = self._group_sum[group]
        mean = total / count
        speed = (mean - seen.latency_ms) / mean if mean > 0 else 0.0
        raw = LATENCY_WEIGHT * max(-1.0, min(1.0, speed)) - ERROR_WEIGHT * seen.failure * 2
        # To 0.001: finer moves change no decision worth making, and an unchanged value
        # spares the gateway's routing table a write on nearly every packet.
        return round(max(-MAX_DYNAMIC_ADJUSTMENT, min(MAX_DYNAMIC_ADJUSTMENT, raw)), 3)

    def adjustment(self, reactor_id: str, group: str) -> float:
        seen = self._seen.get((reactor_id, group))
        return seen.adjustment if seen is not None else 0.0

    def decay(self, now: float) -> dict[tuple[str, str], float]:
        """Pull every adjustment toward 0; returns the changed (reactor, group) values."""
        last, self._last_decay = self._last_decay, now
        if last is None or now <= last:
            return {}
        factor = 0.5 ** ((now - last) / self.half_life_s)
        changed: dict[tuple[str, str], float] = {}
        for key, seen in self._seen.items():
            if seen.adjustment:
                seen.adjustment *= factor
                if abs(seen.adjustment) < 1e-4:
                    seen.adjustment = 0.0
                changed[key] = seen.adjustment
        return changed

    def forget(self, reactor_id: str) -> None:
        for key in [k for k in self._seen if k[0] == reactor_id]:
            seen = self._seen.pop(key)
            total = self._group_sum[key[1]]
            total[0] -= seen.latency_ms
            total[1] -= 1

    def observed(self) -> dict[tuple[str, str], tuple[float, float, int]]:
        """(latency_ms, failure rate, samples) per (reactor, group), for mc:optimize."""
        return {k: (o.latency_ms, o.failure, o.samples) for k, o in self._seen.items()}
