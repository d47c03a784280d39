"""Versions of the affinity matrix (PFAP §6.4): updates applied now or at their
``effective_date``, the history they replace, automatic rollback under a ``rollback_policy``
and manual rollback to an earlier version.

Every rule that changes which matrix is in force lives here and nowhere else; the gateway
only carries out the ``MatrixChange`` each call returns and sets a timer for ``next_due``.
Time is epoch milliseconds passed in (``effective_date`` is epoch ms on the wire).

How it works:

- ``submit`` validates a §6.4 request (PF002 naming the field). Without an
  ``effective_date``, or with one not in the future, the update applies at once; otherwise
  it waits in ``pending`` (ordered by due time, at most MAX_PENDING) and ``tick`` applies
  it when its time comes, on top of the matrix in force *then* (``matrix_updates`` are
  partial: the cells they name change, the rest is whatever is current).
- An applied update whose policy watches (``automatic``, ``gradual_rollout``, or an
  object) opens an observation window: ``observe`` counts packet outcomes; once
  ``min_samples`` are in and the success rate is below ``success_rate_threshold`` the
  matrix rolls back to the one the update replaced. When the window closes (``tick``) the
  update is kept. A later update ends the window of the one before.
- ``rollback`` restores an earlier version (the one before the current by default) as
  the version in force, under its own version string.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .chemistry import apply_matrix_updates
from .errors import InvalidPacket, invalid_field, json_type
from .limits import MAX_MATRIX_VERSION_CHARS

Matrix = dict[str, dict[str, float]]
PolicyMode = Literal["none", "manual", "automatic"]
# "remote": another gateway of the cluster changed the matrix (gateway/nats_cluster.py).
ChangeReason = Literal["update", "scheduled", "automatic_rollback", "manual_rollback", "remote"]

# ---------------------------------------------------------------- limits (STYLE 5)

# Scheduled updates waiting at once: each holds a partial matrix (a few hundred bytes);
# more than this is a runaway script, not an operator's plan.
MAX_PENDING: Final = 100
# Replaced versions kept for GET /v1/affinity and for rollback.
MAX_HISTORY: Final = 50
# An effective_date further ahead than a year is almost surely a unit mistake (seconds
# taken for ms, or µs): refused rather than silently never applied.
MAX_SCHEDULE_AHEAD_MS: Final = 365 * 24 * 3600 * 1000
# Defaults of a watching rollback policy. 0.9: a matrix change that makes more than one
# packet in ten fail is worse than the matrix it replaced in any cluster we know; 20
# samples: the same floor as the §6.3.2 learner (affinity.MIN_SAMPLES); 60 s: several
# §9.2 heartbeat periods, long enough to see a reactor pool react.
DEFAULT_SUCCESS_RATE_THRESHOLD: Final = 0.9
DEFAULT_MIN_SAMPLES: Final = 20
DEFAULT_OBSERVATION_WINDOW_MS: Final = 60_000
MAX_OBSERVATION_WINDOW_MS: Final = 24 * 3600 * 1000
MAX_MIN_SAMPLES: Final = 1_000_000

# §6.4 shows "gradual_rollout": read as "watch the new version and roll back if it hurts"
# (a gateway has one matrix in force, so there is nothing to roll out by fractions).
POLICY_NAMES: Final[Mapping[str, PolicyMode]] = {
    "none": "none",
    "manual": "manual",
    "automatic": "automatic",
    "auto": "automatic",
    "automatic_rollback": "automatic",
    "gradual_rollout": "automatic",
}


@dataclass(frozen=True, slots=True)
class RollbackPolicy:
    """How an update is watched after it applies. ``name`` is what the request said."""

    name: str = "manual"
    mode: PolicyMode = "manual"
    success_rate_threshold: float = DEFAULT_SUCCESS_RATE_THRESHOLD
    min_samples: int = DEFAULT_MIN_SAMPLES
    observation_window_ms: int = DEFAULT_OBSERVATION_WINDOW_MS

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "mode": self.mode}
        if self.mode == "automatic":
            out.update(
                success_rate_threshold=self.success_rate_threshold,
                min_samples=self.min_samples,
                observation_window_ms=self.observation_window_ms,
            )
        return out


@dataclass(frozen=True, slots=True)
class MatrixUpdate:
    """A validated §6.4 request."""

    version: str
    matrix_updates: Mapping[str, Mapping[str, float]]
    effective_at: int | None  # epoch ms; None = at once
    policy: RollbackPolicy
    requested_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "matrix_updates": {g: dict(r) for g, r in self.matrix_updates.items()},
            "effective_date": self.effective_at,
            "rollback_policy": self.policy.to_dict(),
            "requested_at": self.requested_at,
        }


@dataclass(frozen=True, slots=True)
class MatrixChange:
    """Put ``matrix`` in force as ``version`` (the instruction the gateway carries out)."""

    matrix: Matrix
    version: str
    previous_version: str
    reason: ChangeReason
    at: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous_version": self.previous_version,
            "reason": self.reason,
            "at": self.at,
            **dict(self.details),
        }


@dataclass(slots=True)
class _Watch:
    """The observation window of an applied update with a watching policy."""

    version: str
    restore_version: str
    restore_matrix: Matrix
    policy: RollbackPolicy
    until: int
    ok: int = 0
    failed: int = 0

    def rate(self) -> float | None:
        total = self.ok + self.failed
        return self.ok / total if total else None

    def to_dict(self) -> dict[str, Any]:
        rate = self.rate()
        return {
            "version": self.version,
            "rollback_to": self.restore_version,
            "until": self.until,
            "samples": self.ok + self.failed,
            "success_rate": round(rate, 6) if rate is not None else None,
            **self.policy.to_dict(),
        }


# ---------------------------------------------------------------- parsing


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded(obj: Mapping[str, Any], path: str, key: str, default: float, low: float,
             high: float, *, integer: bool = True) -> float:  # fmt: skip
    """``obj[key]`` (``default`` when absent), a number (an integer if ``integer``) within
    ``low``-``high``; PF002 naming ``path.key`` otherwise."""
    value = obj.get(key, default)
    kind = "int" if integer else "number"
    ok_type = _int(value) if integer else _number(value)
    if not ok_type or not low <= value <= high:
        received = f"{kind} {value}" if ok_type else json_type(value)
        raise invalid_field(f"{path}.{key}", f"{kind} {low:g}-{high:g}", received, "range")
    return float(value)


def parse_rollback_policy(value: Any, path: str) -> RollbackPolicy:
    """``rollback_policy``: a name (none, manual, automatic, gradual_rollout) or an object
    ``{type?, success_rate_threshold?, min_samples?, observation_window_ms?}`` (a watching
    policy). Absent: manual (only an admin rolls back). Raises PF002 naming the field."""
    names = ", ".join(POLICY_NAMES)
    if value is None:
        return RollbackPolicy()
    if isinstance(value, str):
        mode = POLICY_NAMES.get(value)
        if mode is None:
            raise invalid_field(path, f"one of {names}, or an object", repr(value), "enum")
        return RollbackPolicy(name=value, mode=mode)
    if not isinstance(value, Mapping):
        raise invalid_field(path, f"one of {names}, or an object", json_type(value), "type")
    kind = value.get("type", "automatic")
    mode = POLICY_NAMES.get(kind) if isinstance(kind, str) else None
    if mode is None:
        raise invalid_field(
            f"{path}.type",
            f"one of {names}",
            repr(kind) if isinstance(kind, str) else json_type(kind),
            "enum",
        )
    threshold = _bounded(value, path, "success_rate_threshold", DEFAULT_SUCCESS_RATE_THRESHOLD,
                         0.0, 1.0, integer=False)  # fmt: skip
    samples = int(_bounded(value, path, "min_samples", DEFAULT_MIN_SAMPLES, 1, MAX_MIN_SAMPLES))
    window = int(_bounded(value, path, "observation_window_ms", DEFAULT_OBSERVATION_WINDOW_MS,
                          1, MAX_OBSERVATION_WINDOW_MS))  # fmt: skip
    return RollbackPolicy(
        name=kind,
        mode=mode,
        success_rate_threshold=float(threshold),
        min_samples=samples,
        observation_window_ms=window,
    )


def _check_version(version: Any, path: str) -> str:
    if not isinstance(version, str):
        raise invalid_field(path, "string", json_type(version), "type")
    if not 1 <= len(version) <= MAX_MATRIX_VERSION_CHARS:
        raise invalid_field(
            path,
            f"string of 1-{MAX_MATRIX_VERSION_CHARS} chars",
            f"string of {len(version)} chars",
            "length",
        )
    return version


def check_matrix_updates(base: Matrix, updates: Any, path: str) -> Matrix:
    """``base`` with ``updates`` applied; PF002 naming the bad entry."""
    if not isinstance(updates, Mapping) or not updates:
        raise invalid_field(
            path,
            "object {group: {specialization: 0.0-1.0}}",
            json_type(updates) if updates is not None else "missing",
            "required_field",
        )
    for group, row in updates.items():
        if not isinstance(row, Mapping):
            raise invalid_field(f"{path}.{group}", "object", json_type(row), "type")
    try:
        return apply_matrix_updates(base, updates)
    except ValueError as exc:
        where = str(exc).split(":", 1)[0].removeprefix("matrix_updates")
        raise invalid_field(
            f"{path}{where}",
            "known group/specialization with a value in 0.0-1.0",
            "invalid",
            "matrix_update",
            str(exc),
        ) from None


# ---------------------------------------------------------------- the state machine


class MatrixVersions:
    """The matrix in force, scheduled updates, replaced versions and the rollback watch."""

    def __init__(self, matrix: Mapping[str, Mapping[str, float]], version: str, now: int) -> None:
        self.matrix: Matrix = {g: dict(r) for g, r in matrix.items()}
        self.version = version
        self.applied_at = now
        self.pending: list[MatrixUpdate] = []
        self.history: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)
        self.watch: _Watch | None = None
        self.last_change: MatrixChange | None = None

    # ------------------------------------------------------------ requests

    def parse(self, data: Mapping[str, Any], path: str, now: int) -> MatrixUpdate:
        """A §6.4 request's fields checked (PF002 naming ``path.field``); nothing changes."""
        check_matrix_updates(self.matrix, data.get("matrix_updates"), f"{path}.matrix_updates")
        version = data.get("version")
        if version is None:
            version = self._next_version()
        version = _check_version(version, f"{path}.version")
        if version == self.version or any(p.version == version for p in self.pending):
            raise InvalidPacket(
                f"Affinity matrix version {version!r} is already in force or scheduled",
                field=f"{path}.version",
                expected_type="a version not in force or scheduled",
                received_type=repr(version),
                validation_rule="unique_version",
            )
        effective = data.get("effective_date")
        if effective is not None:
            epath = f"{path}.effective_date"
            if not _int(effective):
                raise invalid_field(
                    epath, "integer (ms since the epoch)", json_type(effective), "type"
                )
            if effective > now + MAX_SCHEDULE_AHEAD_MS:
                raise invalid_field(
                    epath, "ms since the epoch, at most a year ahead", f"int {effective}", "range"
                )
            if effective <= now:
                effective = None
        policy = parse_rollback_policy(data.get("rollback_policy"), f"{path}.rollback_policy")
        updates = {
            g: {s: float(v) for s, v in r.items()} for g, r in data["matrix_updates"].items()
        }
        return MatrixUpdate(version, updates, effective, policy, now)

    def submit(
        self, data: Mapping[str, Any], path: str, now: int
    ) -> tuple[MatrixUpdate, MatrixChange | None]:
        """Apply a §6.4 request now, or schedule it. Returns the update and the change to
        carry out (None: scheduled). Raises PF002 naming the field; PF004-like refusal
        (PF002 ``max_pending``) when MAX_PENDING updates already wait."""
        update = self.parse(data, path, now)
        if update.effective_at is None:
            return update, self._apply(update, now, "update")
        if len(self.pending) >= MAX_PENDING:
            raise invalid_field(
                f"{path}.effective_date",
                f"at most {MAX_PENDING} scheduled updates",
                f"{len(self.pending)} scheduled",
                "max_pending",
            )
        self.pending.append(update)
        self.pending.sort(key=lambda u: (u.effective_at or 0, u.requested_at))
        return update, None

    def cancel(self, version: str, path: str) -> MatrixUpdate:
        """Withdraw a scheduled update. PF002 naming ``path`` when none has that version."""
        for i, update in enumerate(self.pending):
            if update.version == version:
                return self.pending.pop(i)
        raise InvalidPacket(
            f"No scheduled affinity update has version {version!r}",
            field=path,
            expected_type="the version of a scheduled update",
            received_type=repr(version),
            validation_rule="scheduled_version",
        )

    def rollback(self, to_version: str | None, path: str, now: int) -> MatrixChange:
        """Manual rollback to ``to_version`` (default: the version the current one
        replaced). PF002 naming ``path`` when it is unknown or already in force."""
        if to_version is None:
            if not self.history:
                raise InvalidPacket(
                    "There is no earlier affinity matrix to roll back to",
                    field=path,
                    expected_type="an earlier version",
                    received_type="none",
                    validation_rule="has_history",
                )
            entry = self.history[-1]
        else:
            _check_version(to_version, path)
            if to_version == self.version:
                raise InvalidPacket(
                    f"Version {to_version!r} is already in force",
                    field=path,
                    expected_type="an earlier version",
                    received_type=repr(to_version),
                    validation_rule="not_current",
                )
            found = [e for e in self.history if e["version"] == to_version]
            if not found:
                known = [e["version"] for e in self.history]
                raise InvalidPacket(
                    f"No earlier affinity matrix has version {to_version!r}",
                    field=path,
                    expected_type="one of " + ", ".join(known) if known else "an earlier version",
                    received_type=repr(to_version),
                    validation_rule="known_version",
                )
            entry = found[-1]
        return self._put(
            entry["matrix"], entry["version"], now, "manual_rollback", {"rolled_back": self.version}
        )

    # ------------------------------------------------------------ time and outcomes

    def next_due(self) -> int | None:
        """When ``tick`` next has something to do (epoch ms), or None."""
        times = [u.effective_at for u in self.pending[:1] if u.effective_at is not None]
        if self.watch is not None:
            times.append(self.watch.until)
        return min(times) if times else None

    def tick(self, now: int) -> list[MatrixChange]:
        """Close an expired observation window; apply every scheduled update now due, in
        order (each on top of the one before)."""
        changes: list[MatrixChange] = []
        if self.watch is not None and now >= self.watch.until:
            self.watch = None  # the update survived its window: kept
        while self.pending and (self.pending[0].effective_at or 0) <= now:
            update = self.pending.pop(0)
            changes.append(self._apply(update, now, "scheduled"))
        return changes

    def observe(self, ok: bool, now: int) -> MatrixChange | None:
        """One routed packet's outcome. Returns the automatic rollback when it is due."""
        watch = self.watch
        if watch is None:
            return None
        if now >= watch.until:
            self.watch = None
            return None
        if ok:
            watch.ok += 1
        else:
            watch.failed += 1
        rate = watch.rate()
        policy = watch.policy
        if (
            watch.ok + watch.failed < policy.min_samples
            or rate is None
            or rate >= policy.success_rate_threshold
        ):
            return None
        details = {
            "rolled_back": watch.version,
            "success_rate": round(rate, 6),
            "samples": watch.ok + watch.failed,
            "success_rate_threshold": policy.success_rate_threshold,
        }
        return self._put(
            watch.restore_matrix, watch.restore_version, now, "automatic_rollback", details
        )

    # ------------------------------------------------------------ views

    def view(self) -> dict[str, Any]:
        """GET /v1/affinity's body: the matrix in force, what waits, what it replaced."""
        return {
            "version": self.version,
            "matrix": self.matrix,
            "applied_at": self.applied_at,
            "history": list(self.history),
            "pending": [u.to_dict() for u in self.pending],
            "watch": self.watch.to_dict() if self.watch is not None else None,
            "last_change": self.last_change.to_dict() if self.last_change else None,
        }

    # ------------------------------------------------------------ internals

    def adopt(self, matrix: Matrix, version: str, now: int) -> MatrixChange:
        """Make a version another gateway applied current here, keeping what it replaces
        in the history (so a rollback from this gateway can go back to it)."""
        return self._put(matrix, version, now, "remote", {})

    def _next_version(self) -> str:
        """The current version with its last number bumped, skipping versions in use."""
        taken = {self.version, *(p.version for p in self.pending)}
        head, _, tail = self.version.rpartition(".")
        if head and tail.isdigit():
            n = int(tail)
            while True:
                n += 1
                candidate = f"{head}.{n}"
                if candidate not in taken:
                    return candidate
        n = 1
        while f"{self.version}.{n}" in taken:
            n += 1
        return f"{self.version}.{n}"

    def _apply(self, update: MatrixUpdate, now: int, reason: ChangeReason) -> MatrixChange:
        restore_version, restore_matrix = self.version, self.matrix
        matrix = apply_matrix_updates(self.matrix, update.matrix_updates)
        change = self._put(
            matrix, update.version, now, reason, {"rollback_policy": update.policy.to_dict()}
        )
        if update.policy.mode == "automatic":
            self.watch = _Watch(
                update.version,
                restore_version,
                restore_matrix,
                update.policy,
                now + update.policy.observation_window_ms,
            )
        return change

    def _put(
        self,
        matrix: Matrix,
        version: str,
        now: int,
        reason: ChangeReason,
        details: Mapping[str, Any],
    ) -> MatrixChange:
        """Make ``matrix`` current (the only writer of ``matrix``/``version``)."""
        previous = self.version
        self.history.append(
            {
                "version": previous,
                "matrix": self.matrix,
                "applied_at": self.applied_at,
                "replaced_at": now,
                "replaced_by": version,
                "reason": reason,
            }
        )
        self.matrix = {g: dict(r) for g, r in matrix.items()}
        self.version = version
        self.applied_at = now
        self.watch = None  # a new version ends the window of the one it replaces
        change = MatrixChange(self.matrix, version, previous, reason, now, dict(details))
        self.last_change = change
        return change
