"""What the ``packetflow`` client commands print: errors, results and tables, as text for
people or JSON for scripts (no I/O besides writing to the given console)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

HEALTH_COLORS = {"healthy": "green", "degraded": "yellow", "recovery": "cyan", "failed": "red"}


def error_lines(payload: dict[str, Any]) -> list[str]:
    """An ERROR payload (§4.2.3/§10.2) for a person: the code and message on one line, then
    the field at fault and what to do."""
    code = payload.get("error_code", "PF500")
    lines = [f"{code} {payload.get('error_category', '')}: {payload.get('error_message', '')}"]
    details = payload.get("error_details") or {}
    if details.get("field"):
        expected = f" (expected {details['expected_type']})" if details.get("expected_type") else ""
        lines.append(f"  field: {details['field']}{expected}")
    for suggestion in payload.get("recovery_suggestions") or []:
        lines.append(f"  try: {suggestion}")
    if payload.get("retry_possible"):
        lines.append(f"  retry possible after {payload.get('retry_delay_ms')} ms")
    return lines


def result_lines(out: dict[str, Any]) -> list[str]:
    """A RESULT for a person: status, where and how long, then the data as JSON."""
    meta = out.get("processing_metadata") or {}
    where = f" on {meta['reactor_id']}" if meta.get("reactor_id") else ""
    took = meta.get("total_duration_ms", meta.get("processing_time_ms"))
    timing = f" in {took} ms" if took is not None else ""
    head = f"{out.get('status')}{where}{timing} (packet {out.get('packet_id')})"
    return [head, json.dumps(out.get("data"), indent=2)]


def reactors_table(reactors: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("reactor", "impl", "specializations", "health", "load", "in flight",
                "capacity", "endpoint"):  # fmt: skip
        table.add_column(col)
    for r in sorted(reactors, key=lambda r: str(r.get("reactor_id"))):
        health = str(r.get("health"))
        color = HEALTH_COLORS.get(health, "white")
        table.add_row(
            str(r.get("reactor_id")), str(r.get("implementation")),
            ",".join(r.get("specializations") or []), f"[{color}]{health}[/{color}]",
            f"{float(r.get('load_factor') or 0.0):.2f}", str(r.get("in_flight")),
            str(r.get("max_capacity")), str((r.get("endpoints") or {}).get("websocket", "")),
        )  # fmt: skip
    return table


def reactor_detail_table(reactors: list[dict[str, Any]]) -> Table:
    """One row per reactor: what it serves and how it has been doing."""
    table = Table(title=f"{len(reactors)} reactors")
    for col in ("reactor", "health", "elements", "locality", "source", "adjustments"):
        table.add_column(col)
    for r in sorted(reactors, key=lambda r: str(r.get("reactor_id"))):
        health = str(r.get("health"))
        color = HEALTH_COLORS.get(health, "white")
        caps = r.get("capabilities") or []
        groups = sorted({c.split(":", 1)[0] for c in caps})
        adjust = r.get("adjustments") or {}
        table.add_row(
            str(r.get("reactor_id")), f"[{color}]{health}[/{color}]",
            f"{len(caps)} ({','.join(groups)})", str(r.get("locality") or "-"),
            str(r.get("source") or "-"),
            " ".join(f"{g}{v:+.3f}" for g, v in sorted(adjust.items())) or "-",
        )  # fmt: skip
    return table


def affinity_table(body: dict[str, Any], reactors: list[dict[str, Any]]) -> list[Table]:
    """The §3.3 matrix (group × specialization), then each reactor's effective affinity per
    group: its specialization's entry plus the adjustment learned from it (§6.3.2)."""
    matrix: dict[str, dict[str, float]] = body.get("matrix") or {}
    groups = sorted(matrix)
    specs = sorted({s for row in matrix.values() for s in row})
    table = Table(title=f"affinity matrix v{body.get('version')}")
    table.add_column("group")
    for spec in specs:
        table.add_column(spec, justify="right")
    for g in groups:
        table.add_row(g, *(f"{matrix[g].get(spec, 0.0):.2f}" for spec in specs))
    learned = Table(title="per reactor: best specialization's affinity + learned adjustment")
    learned.add_column("reactor")
    for g in groups:
        learned.add_column(g, justify="right")
    for r in sorted(reactors, key=lambda r: str(r.get("reactor_id"))):
        adjust = r.get("adjustments") or {}
        cells = []
        for g in groups:
            base = max((matrix[g].get(s, 0.0) for s in r.get("specializations") or []),
                       default=0.0)  # fmt: skip
            delta = float(adjust.get(g) or 0.0)
            cells.append(f"{base:.2f} {delta:+.3f}" if delta else f"{base:.2f}")
        learned.add_row(str(r.get("reactor_id")), *cells)
    return [table, learned]
