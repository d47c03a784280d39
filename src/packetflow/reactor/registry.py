"""The element registry: which handler serves which group:element, and its data contract."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol.chemistry import GROUPS
from ..protocol.packets import ELEMENT_NAME
from .context import Context

Handler = Callable[[dict[str, Any], Context], Any | Awaitable[Any]]


@dataclass(slots=True)
class ElementSpec:
    group: str
    element: str
    handler: Handler
    is_async: bool
    cpu_bound: bool = False
    # A sync handler runs on the event loop itself, with no thread hop, when the packet's
    # data is at most this many bytes (0: never). For pure functions whose work grows with
    # their input: a handful of items costs less than handing them to a thread.
    inline_max_bytes: int = 0
    # A short description of `data` and of the result, shown by cf:introspect.
    contract: dict[str, Any] = field(default_factory=dict)
    key: str = field(init=False)  # "group:element", made once: stats are kept per key

    def __post_init__(self) -> None:
        self.key = f"{self.group}:{self.element}"


class Registry:
    """Maps ``group:element`` to an ElementSpec. Later registrations replace earlier ones."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ElementSpec] = {}

    def element(
        self,
        group: str,
        element: str,
        *,
        cpu_bound: bool = False,
        inline_max_bytes: int = 0,
        data: dict[str, Any] | None = None,
        result: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator: ``@registry.element("df", "tokenize")`` on ``fn(data, ctx)``.

        Sync handlers run in a thread pool (process pool when ``cpu_bound``) so they never
        stall the event loop, except on data of at most ``inline_max_bytes``, which a
        quick, non-blocking sync handler serves on the loop itself. Raises ValueError for
        an unknown group, a bad element name, or inline_max_bytes on an async or
        cpu_bound handler.
        """
        if group not in GROUPS:
            raise ValueError(f"unknown packet group {group!r}; expected one of {GROUPS}")
        if not ELEMENT_NAME.match(element):
            raise ValueError(f"element name {element!r} must match [a-z][a-z0-9_]*")

        def register(fn: Handler) -> Handler:
            is_async = inspect.iscoroutinefunction(fn)
            if inline_max_bytes and (is_async or cpu_bound):
                raise ValueError("inline_max_bytes is for sync handlers that are not cpu_bound")
            contract: dict[str, Any] = {}
            if data is not None:
                contract["data"] = data
            if result is not None:
                contract["result"] = result
            self._specs[(group, element)] = ElementSpec(
                group, element, fn, is_async, cpu_bound, inline_max_bytes, contract
            )
            return fn

        return register

    def add(self, spec: ElementSpec) -> None:
        self._specs[(spec.group, spec.element)] = spec

    def get(self, group: str, element: str) -> ElementSpec | None:
        return self._specs.get((group, element))

    def __iter__(self) -> Iterator[ElementSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def merge(self, other: Registry) -> None:
        self._specs.update(other._specs)
