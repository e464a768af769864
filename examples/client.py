"""asyncpool.Client against the embedded demo server: a request with its status checked, a
stream read as it arrives, concurrent requests sharing a few connections.

    python examples/client.py [--backend trio]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reuse import serve

import asyncpool


async def main() -> None:
    async with (
        serve() as server,
        asyncpool.Client(base_url=server.url, timeout=10, max_conns_per_host=4) as client,
    ):
        response = await client.get("/")
        response.raise_for_status()
        print(f"GET / -> {response.status_code} {response.text!r}")

        async with client.stream("GET", "/slow") as streamed:
            size = sum([len(chunk) async for chunk in streamed.aiter_bytes()])
        print(f"GET /slow (streamed) -> {streamed.status_code}, {size} bytes")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(client.get, "/")
        stats = client.transport.stats()
        print(f"client: 22 requests, {stats.dials} dials (max_conns_per_host=4)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    anyio.run(main, backend=parser.parse_args().backend)
