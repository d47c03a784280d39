"""Shows a conformance ``Report`` to people (a rich table) or machines (one JSON document)."""

from __future__ import annotations

import json
from typing import IO

from .runner import Report

_STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def as_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)


def print_table(report: Report, file: IO[str] | None = None, width: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = report.as_dict()["counts"]
    verdict = "[green]CONFORMS[/green]" if report.passed else "[bold red]DOES NOT CONFORM[/]"
    table = Table(title=f"PFAP v1.0 conformance of {report.url} (role {report.role}): "
                        f"{verdict} — {counts['pass']} pass, {counts['fail']} fail, "
                        f"{counts['skip']} skipped")  # fmt: skip
    for column in ("check", "result", "time", "section", "expected", "received"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        style = _STYLE[check.status]
        elapsed = "" if check.elapsed_ms is None else f"{check.elapsed_ms:.1f} ms"
        table.add_row(check.name, f"[{style}]{check.status.upper()}[/]", elapsed, check.section,
                      check.expected, check.received)  # fmt: skip
    Console(file=file, width=width).print(table)
