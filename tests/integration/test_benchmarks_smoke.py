"""Every benchmark section still runs (`python -m benchmarks --smoke`: tiny counts, one run,
no thresholds): one test per section, so the sections spread over the test workers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.__main__ import SECTIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("section", SECTIONS)
def test_benchmark_section_runs_and_reports_figures(section: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", "--only", section],
        capture_output=True, text=True, cwd=ROOT, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["smoke"] is True
    figures = report["figures"]
    assert figures, f"section {section} reported no figure"
    for row in figures:
        value = row["value"]["median"]
        # A figure that could not be measured would be NaN, None or a negative count.
        assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, row
