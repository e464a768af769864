"""What a retry budget saves an always-failing backend: the requests it sees with and without one.

    python benchmarks/bench_retry_budget.py                  # 1000 requests, 100 at a time
    python benchmarks/bench_retry_budget.py --requests 5000 --concurrency 500 --backend trio

A MockServer (asyncpool.testing, in memory: no socket) answers every request 503. A Client with
``Retry(total=3)`` sends the requests, each retried up to 3 times, once without a budget and once
with ``RetryBudget(ratio=0.1, min_per_second=10, window=10)``; backoff is off so the run is
quick (the budget counts requests, not time). The table shows the requests the server saw and the
load as a multiple of the requests sent: without a budget 1 + total = 4x, with it about
1 + ratio plus the floor (min_per_second * window = 100 retries).
"""

from __future__ import annotations

import argparse

import anyio

import asyncpool
from asyncpool.testing import MockServer, Reply


async def run(requests: int, concurrency: int, budget: asyncpool.RetryBudget | None) -> int:
    retry = asyncpool.Retry(total=3, backoff_factor=0, budget=budget)
    limit = anyio.Semaphore(concurrency)
    async with (
        MockServer(routes={"/": Reply(503, [], b"down")}) as server,
        asyncpool.Client(retry=retry, dial=server.dial, trust_env=False) as client,
    ):

        async def one() -> None:
            async with limit:
                response = await client.get("http://backend.test/")
                assert response.status_code == 503

        async with anyio.create_task_group() as tg:
            for _ in range(requests):
                tg.start_soon(one)
        stats = client.retry_stats()
        assert len(server.requests) == requests + stats.retries
        return len(server.requests)


async def main(args: argparse.Namespace) -> None:
    print(f"{args.requests} requests, {args.concurrency} at a time, Retry(total=3), all 503")
    print(f"{'budget':<56} {'server saw':>10} {'load':>6}")
    for budget in (None, asyncpool.RetryBudget(ratio=0.1, min_per_second=10, window=10.0)):
        seen = await run(args.requests, args.concurrency, budget)
        print(f"{budget!s:<56} {seen:>10} {seen / args.requests:>5.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    arguments = parser.parse_args()
    anyio.run(main, arguments, backend=arguments.backend)
