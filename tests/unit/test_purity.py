"""STYLE 1: nothing in src/packetflow/protocol/ imports asyncio, socket, ssl, time, random
or aiohttp. The rules are pure so tests drive them without sockets, clocks or RNGs.

Every module under the directory is found by globbing, so new modules are covered.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "time", "random", "aiohttp"})

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "src" / "packetflow" / "protocol"
MODULES = sorted(PROTOCOL_DIR.rglob("*.py"))


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """The forbidden top-level modules a source text imports, with their line numbers.

    Catches `import x`, `import x.y as z`, `from x import y`, `from x.y import z` and
    `importlib.import_module("x")` / `__import__("x")` with a constant name.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if (
                called in {"import_module", "__import__"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
        for name in names:
            if name.split(".", 1)[0] in FORBIDDEN:
                found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {name}")
    return found


def test_protocol_directory_is_found() -> None:
    """Guard against a vacuous pass: the glob sees the known modules."""
    assert PROTOCOL_DIR.is_dir(), PROTOCOL_DIR
    names = {p.name for p in MODULES}
    assert {"chemistry.py", "errors.py", "packets.py", "messages.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PROTOCOL_DIR)) for p in MODULES])
def test_protocol_module_is_pure_style_1(path: Path) -> None:
    """STYLE 1: no asyncio, socket, ssl, time, random or aiohttp in protocol/."""
    assert forbidden_imports(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import time as t",
        "import os, socket",
        "from ssl import SSLContext",
        "from random import Random",
        "import aiohttp.web",
        "from aiohttp import web",
        "def f():\n    import time\n",
        "import importlib\nimportlib.import_module('random')",
        "__import__('socket')",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    """The checker itself can fail."""
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import re",
        "from .errors import InvalidPacket",
        "from . import time",  # a sibling module, not the stdlib
        "import timeit",
        "import randomness_lib",
        "from typing import Final",
        "x = 'import asyncio'",
    ],
)
def test_checker_allows_other_imports(source: str) -> None:
    assert forbidden_imports(source) == []
