"""Before/after in one run: asyncpool at another git revision against the working tree.

    python benchmarks/ab.py --before b8d2ad8                 # c=100, 6 alternating rounds
    python benchmarks/ab.py --before main --concurrency 10,100 --rounds 8
    python benchmarks/ab.py --before 8089d6b --after HEAD    # two revisions, tree untouched

A change on the hot path shows its ratio against the code before it, measured in the same run:
one private nginx (tests/nginx.py), and `bench_http1.py`'s workers run in turns for the old code
(a temporary git worktree at ``--before``, first on ``PYTHONPATH``) and the working tree, the
order alternating each round. The raw asyncio client runs in both halves as a control: its
ratio is the run's noise. Prints the median req/s of each side and after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.nginx import Nginx  # noqa: E402

REQUESTS = 30_000  # per cell and round: a few seconds, for a steadier figure than the default


def run_side(tree: Path, url: str, clients: str, concurrency: str, out: Path) -> dict[str, float]:
    """One round of bench_http1.py's workers with asyncpool imported from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_http1.py"), "--url", url]
    command += ["--clients", clients, "--concurrency", concurrency, "--repeat", "1"]
    command += ["--requests", str(REQUESTS)]
    subprocess.run([*command, "--json-out", str(out)], env=env, check=True, capture_output=True)
    runs: dict[str, list[dict[str, float]]] = json.loads(out.read_text())
    return {cell: values[0]["rps"] for cell, values in runs.items() if values}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", required=True, help="git revision of the code before")
    p.add_argument("--after", help="git revision of the code after (default: the working tree)")
    p.add_argument("--clients", default="asyncpool,asyncpool+speedups,raw", help="comma list")
    p.add_argument("--concurrency", default="100", help="comma list")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (each side once)")
    args = p.parse_args()

    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="asyncpool-ab-") as tmp:
        trees = {"before": args.before, "after": args.after}
        paths = {side: Path(tmp) / side if rev else ROOT for side, rev in trees.items()}
        try:
            for side, rev in trees.items():
                if rev:
                    command = ["git", "-C", str(ROOT), "worktree", "add", "--detach"]
                    subprocess.run(
                        [*command, str(paths[side]), rev], check=True, capture_output=True
                    )
            with Nginx() as server:
                url = server.url("/small")
                for n in range(args.rounds):
                    sides = list(paths.items())
                    for side, tree in sides if n % 2 == 0 else sides[::-1]:
                        out = Path(tmp) / f"{side}-{n}.json"
                        for cell, rps in run_side(
                            tree, url, args.clients, args.concurrency, out
                        ).items():
                            results[side].setdefault(cell, []).append(rps)
        finally:
            for side, rev in trees.items():
                if rev:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(paths[side])],
                        check=False,
                        capture_output=True,
                    )
    after = args.after or "the working tree"
    print(f"before = {args.before}, after = {after}; {args.rounds} rounds, medians")
    print(f"{'cell':<28}{'before':>12}{'after':>12}{'after/before':>14}")
    for cell in sorted(results["before"]):
        old = statistics.median(results["before"][cell])
        new = statistics.median(results["after"].get(cell, [0.0]))
        print(f"{cell:<28}{old:>12,.0f}{new:>12,.0f}{new / old:>13.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
