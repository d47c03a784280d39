"""The standard element library of DESIGN §10, one module per packet group."""

from __future__ import annotations

from importlib import import_module

from ..registry import Registry

# Each module exposes register(registry). Order does not matter: keys are unique.
STANDARD_MODULES = ("cf", "df", "ed", "co", "mc", "rm")


def load_standard(registry: Registry) -> None:
    for name in STANDARD_MODULES:
        import_module(f"{__name__}.{name}").register(registry)
