"""Import time: `python -X importtime -c "import MODULE"` in fresh interpreters, the median.

    python benchmarks/bench_import.py                      # asyncpool and httpx, 15 runs each
    python benchmarks/bench_import.py --runs 31 asyncpool httpx aiohttp

Each run is a new interpreter (no module cached in memory; the bytecode caches on disk are
warm: one run of each module is made first and not counted). The figure is the cumulative time
`-X importtime` reports for the module's own line, which counts everything its import pulls in
and not the interpreter's start-up. Modules alternate run by run, so a slow patch of a shared
machine touches each alike. asyncpool is imported from the working tree (the runs start there).
`benchmarks/run_all.py` reports the same measure next to its req/s table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def import_time(module: str, cpu: int | None = None) -> dict[str, Any]:
    """One fresh interpreter importing `module`: {"seconds": cumulative import time}, or
    {"skipped": why} when it is not installed, or {"error": ...}."""
    pin = None
    if cpu is not None and hasattr(os, "sched_setaffinity"):

        def pin() -> None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        # Bytecode written and read, as for an installed package: with PYTHONDONTWRITEBYTECODE
        # set, a tree's modules (asyncpool from a checkout) were compiled in every run.
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,  # `-c` puts the working directory first on sys.path: the tree's asyncpool
        preexec_fn=pin,  # safe: the caller starts no threads
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        if "ModuleNotFoundError" in last:
            return {"skipped": last}
        return {"error": last}
    # "import time: self [us] | cumulative | imported package"; nested imports are indented
    # in the last column, so the module's own line is the one whose name is not.
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].rstrip() == " " + module:
            return {"seconds": int(parts[1]) / 1e6}
    return {"error": f"no importtime line for {module}"}


def median_ms(runs: list[dict[str, Any]]) -> float | None:
    seconds = [r["seconds"] for r in runs if "seconds" in r]
    return 1000 * statistics.median(seconds) if seconds else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("modules", nargs="*", default=["asyncpool", "httpx"])
    p.add_argument("--runs", type=int, default=15, help="fresh interpreters per module")
    args = p.parse_args(argv)
    for module in args.modules:
        import_time(module)  # writes the bytecode caches; not counted
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modules}
    for _ in range(args.runs):
        for module in args.modules:
            results[module].append(import_time(module))
    print(f"import time (ms, -X importtime cumulative, median of {args.runs} interpreters)")
    for module, runs in results.items():
        ms = median_ms(runs)
        other = next((r.get("skipped") or r.get("error") for r in runs if "seconds" not in r), "")
        print(f"  {module:<16} {f'{ms:8.1f}' if ms is not None else 'n/a':>8}  {other or ''}")
    if len(args.modules) >= 2:
        first, second = (median_ms(results[m]) for m in args.modules[:2])
        if first and second:
            print(f"  {args.modules[0]}/{args.modules[1]}: {first / second:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
