"""What the cyclic garbage collector does for asyncpool's requests, counted, not timed.

    python benchmarks/gc_visits.py                          # h11, c=1000 and c=100
    python benchmarks/gc_visits.py --parser httptools --concurrency 1000 --requests 60000

Runs 12-byte GETs against a private nginx (as `run_all.py` does, pinned apart where there are
two CPUs), a warm-up of --requests and then --requests more, and counts the collections of each
generation with `gc.callbacks`. A "visit" is one object in a generation being collected: the
sizes of the generations each collection walks, summed over the run and divided by its requests.
Unlike a time, these counts barely move between runs on a noisy machine, so they compare two
versions of the code where the collector is concerned (it is most of what c=1000 pays over
c=100; see README.md). Counting the generations costs time itself: the run's req/s is not
printed.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

import asyncpool
from benchmarks.bench_http1 import raise_nofile_limit


def count(url: str, parser: str, concurrency: int, requests: int) -> dict[str, Any]:
    collections = [0, 0, 0]
    visits = [0, 0, 0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generation = info["generation"]
            collections[generation] += 1
            visits[generation] += sum(len(gc.get_objects(g)) for g in range(generation + 1))

    async def main() -> None:
        async with asyncpool.Transport(
            http1_parser=parser, max_idle_conns=max(100, concurrency)
        ) as pool:
            left = 0

            async def one_task() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    # As the suite's worker: a response is dropped once read, not kept
                    # through the next request.
                    await (await pool.round_trip(asyncpool.Request("GET", url))).aread()

            async def run(n: int) -> None:
                nonlocal left
                left = n
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrency):
                        tg.start_soon(one_task)

            await run(requests)  # warm-up: every connection open, every cache filled
            gc.callbacks.append(on_gc)
            try:
                await run(requests)
            finally:
                gc.callbacks.remove(on_gc)

    anyio.run(main)
    return {
        "collections": collections,
        "visits per request": [round(v / requests, 1) for v in visits],
        "total": round(sum(visits) / requests, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parser", default="h11", choices=["h11", "httptools"])
    p.add_argument("--concurrency", default="1000,100", help="comma list")
    p.add_argument("--requests", type=int, default=60000)
    args = p.parse_args()
    from tests.nginx import nginx_binary, run_nginx

    if nginx_binary() is None:
        sys.exit("nginx not found: install it (apt-get install nginx-light)")
    raise_nofile_limit()
    two_cpus = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2
    with run_nginx(cpu=0 if two_cpus else None) as server:
        if two_cpus:
            os.sched_setaffinity(0, {1})
        for concurrency in map(int, args.concurrency.split(",")):
            result = count(server.url("/small"), args.parser, concurrency, args.requests)
            print(
                f"{args.parser} c={concurrency}: collections (young, middle, full) "
                f"{result['collections']}, visits per request {result['visits per request']}, "
                f"total {result['total']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
