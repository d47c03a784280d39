"""The trivial task bodies, once, as plain functions: each peer wraps them its own way.

Celery registers them with ``app.task(name=...)``, Ray with ``ray.remote``, Dask submits them
as they are. They must stay importable as ``benchmarks.peers.tasks``: the frameworks' worker
processes find them there.
"""

from __future__ import annotations

from typing import Any


def ping(value: Any) -> Any:
    return value


def upper(text: str) -> str:
    return text.upper()


def lower(text: str) -> str:
    return text.lower()


def reverse(text: str) -> str:
    return text[::-1]


def length(text: str) -> int:
    return len(text)


def aggregate(values: list[int]) -> int:
    return sum(values)
