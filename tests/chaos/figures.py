"""Figures a chaos suite measured: one ``CHAOS <suite> <figure>=<value>`` line on stdout
per figure (seen with ``pytest -s``) and one JSON line per figure appended to
``chaos-figures.jsonl`` in the session's pytest tmp dir, so a run's figures can be
collected afterwards."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

# Long runs (minutes, more load, more kills) when this is "1"; CI runs the short ones.
LONG = os.environ.get("PACKETFLOW_CHAOS_LONG", "") == "1"


def pick(short: int | float, long: int | float) -> int | float:
    """``long`` under PACKETFLOW_CHAOS_LONG=1, else ``short``."""
    return long if LONG else short


@dataclass
class Figures:
    suite: str
    path: Path

    def record(self, **figures: float | int | str) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            for name, value in figures.items():
                shown = f"{value:.3f}" if isinstance(value, float) else str(value)
                print(f"CHAOS {self.suite} {name}={shown}", flush=True)
                line = {"suite": self.suite, "figure": name, "value": value,
                        "long": LONG, "at": time.time(), "pid": os.getpid()}  # fmt: skip
                out.write(json.dumps(line) + "\n")
