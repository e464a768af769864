"""httpx on asyncpool's pool: `httpx.AsyncClient(transport=HTTPXTransport())`.

    python examples/httpx_transport.py                  # on asyncio
    python examples/httpx_transport.py --backend trio   # on trio (needs `pip install trio`)

Self-contained: it starts the embedded HTTP/1.1 server of examples/reuse.py on 127.0.0.1,
then sends requests to it through one httpx.AsyncClient whose transport is asyncpool's:

(a) a GET with httpx's `trace` extension (httpcore's event names, from asyncpool's ClientTrace);
(b) 10 sequential GETs, then 20 concurrent GETs of /slow with max_conns_per_host=4;
(c) httpx's timeouts, enforced by the pool: /slow with a 10 ms read timeout;
(d) the pool's `stats()`.

The line starting with `requests:` is machine-checked (tests/test_examples.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

import anyio
import httpx
from reuse import serve  # examples/reuse.py, next to this file

import asyncpool
from asyncpool.httpx import HTTPXTransport


async def main() -> None:
    transport = HTTPXTransport(max_conns_per_host=4)  # any asyncpool.Transport option
    async with serve() as server, httpx.AsyncClient(transport=transport) as client:
        url = server.url + "/"

        print(f"(a) GET {url} with httpx's trace extension")

        async def trace(event: str, info: dict[str, Any]) -> None:
            print(f"  {event}")

        response = await client.get(url, extensions={"trace": trace})
        print(f"  -> {response.status_code} {response.http_version} {response.text!r}")
        address = response.extensions["network_stream"].get_extra_info("server_addr")
        print(f"  network_stream server_addr={address}")

        print("(b) 10 sequential GETs, then 20 concurrent GETs of /slow")
        for _ in range(10):
            response = await client.get(url)
            assert response.status_code == 200, response

        async def slow() -> None:
            response = await client.get(server.url + "/slow")
            assert response.text == "slow hello\n", response

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(slow)
        stats = transport.pool.stats()
        print(f"requests: {server.requests}, dials: {stats.dials}, reused: {stats.reused}")

        print("(c) /slow (~50 ms) with a 10 ms read timeout")
        try:
            await client.get(server.url + "/slow", timeout=httpx.Timeout(5.0, read=0.01))
        except httpx.ReadTimeout as exc:
            print(f"  httpx.ReadTimeout: {exc}")

        print("(d) transport.pool.stats()")
        print(f"  {transport.pool.stats()}")


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print("--backend trio needs trio: pip install trio", file=sys.stderr)
        return 2
    print(f"asyncpool {asyncpool.__version__}, httpx {httpx.__version__} on {args.backend}\n")
    anyio.run(main, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(run())
