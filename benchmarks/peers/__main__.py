"""``python -m benchmarks.peers``: runs the installed peer benchmarks and prints one table."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from typing import Any

from .common import FIGURES, fmt_stats, machine

# name: (module, what must be importable, what must be on PATH)
PEERS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "celery": ("benchmarks.peers.celery_bench", ("celery", "redis"), ("redis-server",)),
    "ray": ("benchmarks.peers.ray_bench", ("ray",), ()),
    "dask": ("benchmarks.peers.dask_bench", ("dask", "distributed"), ()),
}


def missing(name: str) -> list[str]:
    _, modules, programs = PEERS[name]
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return absent + [p for p in programs if shutil.which(p) is None]


def run_peer(name: str, extra: list[str]) -> dict[str, Any]:
    """One peer in its own process (each starts and stops its own cluster): its JSON result."""
    module = PEERS[name][0]
    proc = subprocess.run(
        [sys.executable, "-m", module, "--json", *extra], stdout=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        return {"peer": name, "error": f"exited with {proc.returncode}"}
    return dict(json.loads(proc.stdout))


def table(results: list[dict[str, Any]]) -> str:
    ok = [r for r in results if "figures" in r]
    lines = [
        "| figure | " + " | ".join(r["peer"] for r in ok) + " |",
        "| --- |" + " --- |" * len(ok),
    ]
    for key, label, _ in FIGURES:
        cells = " | ".join(fmt_stats(r["figures"].get(key)) for r in ok)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--runs", type=int, help="measured runs per figure (default 5)")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, 1 run: proves it works")
    parser.add_argument("--only", default=",".join(PEERS), help="comma-separated: celery,ray,dask")
    args = parser.parse_args()
    extra = ["--smoke"] if args.smoke else []
    if args.runs is not None:
        extra += ["--runs", str(args.runs)]
    results: list[dict[str, Any]] = []
    for name in (n.strip() for n in args.only.split(",") if n.strip()):
        if name not in PEERS:
            parser.error(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
        absent = missing(name)
        if absent:
            print(f"skipping {name}: {', '.join(absent)} not found", file=sys.stderr)
            results.append({"peer": name, "skipped": f"{', '.join(absent)} not found"})
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run_peer(name, extra))
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "peers": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    smoke = " — SMOKE (not a measurement)" if args.smoke else ""
    print(f"peer benchmarks — {report['date']} — {report['machine']}{smoke}")
    print("median of runs (min–max)\n")
    print(table(results))
    for r in results:
        if "figures" in r:
            sizes = r["sizes"]
            versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
            print(f"\n{r['peer']}: {versions}; {sizes['runs']} runs, "
                  f"{sizes['throughput']:,} tasks in flight")  # fmt: skip
        else:
            print(f"\n{r['peer']}: {r.get('error') or r.get('skipped')}")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
