"""The pool's per-operation cost with 100, 1,000 and 10,000 requests waiting for one host.

No network: the Transport's ``dial=`` stalls for ever, so every request of the host waits
(HTTP/2 prior knowledge: one dial in flight, the other requests queued behind it, as behind a
TLS handshake that may bring HTTP/2). With W requests parked, it times two pool operations:

* ``dial_for_waiters``: the decision the pool takes when an HTTP/2 connection of the host is
  full, closes or sends GOAWAY while requests wait (``Transport._dial_for_waiters``), called
  directly; the dial it would start is still in flight, so it finds nothing to do;
* ``queue+cancel``: one more request arrives, queues behind the W others and is cancelled
  (``round_trip`` in an already cancelled scope: the want is registered, then withdrawn).

Each figure is the best of ``--batches`` batches of ``--ops`` operations, in microseconds per
operation; the last row is the ratio of the largest W to the smallest (flat: near 1).

    python benchmarks/bench_pool_waiters.py
    python benchmarks/bench_pool_waiters.py --backend trio --waiters 100,1000,10000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import anyio
import anyio.abc
import anyio.lowlevel

import asyncpool

URL = "http://bench.invalid/"
KEY = asyncpool.Request("GET", URL).pool_key


async def stall(host: str, port: int) -> anyio.abc.ByteStream:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def best_of(batches: int, ops: int, op: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(ops):
            op()
        best = min(best, (time.perf_counter() - start) / ops)
    return best * 1e6


async def best_of_async(batches: int, ops: int, op: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(ops):
            await op()  # type: ignore[misc]
        best = min(best, (time.perf_counter() - start) / ops)
    return best * 1e6


async def measure(waiters: int, batches: int, ops: int) -> tuple[float, float]:
    transport = asyncpool.Transport(dial=stall, http2_prior_knowledge=True)
    async with transport as pool, anyio.create_task_group() as tg:

        async def wait() -> None:
            await pool.round_trip(asyncpool.Request("GET", URL))

        for _ in range(waiters):
            tg.start_soon(wait)
        # Polled: the pool's own count says when every request is parked.
        while pool.stats().waiting < waiters:
            await anyio.lowlevel.checkpoint()
        host = pool._pool.hosts[KEY]
        dial_for_waiters = best_of(batches, ops, lambda: pool._pool._dial_for_waiters(host))

        async def queue_and_cancel() -> None:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await pool.round_trip(asyncpool.Request("GET", URL))

        queue_cancel = await best_of_async(batches, ops, queue_and_cancel)
        assert pool.stats().waiting == waiters
        tg.cancel_scope.cancel()
    return dial_for_waiters, queue_cancel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", default="100,1000,10000", help="comma list of W")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--ops", type=int, default=1000, help="operations per batch")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    counts = [int(w) for w in args.waiters.split(",")]
    rows = [
        (w, *anyio.run(measure, w, args.batches, args.ops, backend=args.backend)) for w in counts
    ]
    print(f"backend: {args.backend}; µs per operation, best of {args.batches} x {args.ops}")
    print("| waiters | dial_for_waiters (µs) | queue+cancel (µs) |")
    print("| ---: | ---: | ---: |")
    for w, dial_us, cancel_us in rows:
        print(f"| {w:,} | {dial_us:.2f} | {cancel_us:.2f} |")
    first, last = rows[0], rows[-1]
    print(
        f"| ratio {last[0]:,}/{first[0]:,} | {last[1] / first[1]:.2f} | {last[2] / first[2]:.2f} |"
    )


if __name__ == "__main__":
    main()
