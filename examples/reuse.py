"""asyncpool at work: keep-alive reuse, MaxConnsPerHost and the pool's statistics.

    python examples/reuse.py                  # on asyncio
    python examples/reuse.py --backend trio   # on trio (needs `pip install trio`)

Self-contained: it starts a small HTTP/1.1 server (anyio + h11) on 127.0.0.1 in the same
process, then sends requests to it through one `asyncpool.Transport`:

(a) 20 sequential GETs: one connection carries them all (ClientTrace's got_conn tells);
(b) 100 concurrent GETs to a route that waits 50 ms, with max_conns_per_host=4: four
    connections serve them all, the other requests queue in FIFO order;
(c) the pool's final `stats()`, as a table.

The lines starting with `sequential:` and `concurrent:` are meant to be machine-checked
(tests/test_examples.py parses them).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream

import asyncpool

SLOW_DELAY = 0.05  # seconds the /slow route waits before it answers

# ------------------------------------------------------------------ the embedded server


@dataclass
class DemoServer:
    """What the embedded server has seen so far."""

    url: str  # http://127.0.0.1:PORT
    connections: int = 0  # TCP connections accepted
    requests: int = 0


async def _handle(stream: SocketStream, server: DemoServer) -> None:
    """Serve one connection: keep-alive, as long as the client and h11 allow it."""
    server.connections += 1
    conn = h11.Connection(h11.SERVER)
    target = b"/"
    async with stream:
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(await stream.receive())
                    except anyio.EndOfStream:
                        conn.receive_data(b"")
                elif isinstance(event, h11.Request):
                    target = event.target
                elif isinstance(event, h11.EndOfMessage):
                    server.requests += 1
                    await stream.send(await _respond(conn, target))
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return  # "Connection: close" (or HTTP/1.0): h11 says MUST_CLOSE
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError):
            return  # the client went away mid-request: nothing to answer


async def _respond(conn: h11.Connection, target: bytes) -> bytes:
    if target == b"/":
        status, body = 200, b"hello from the demo server\n"
    elif target == b"/slow":
        await anyio.sleep(SLOW_DELAY)  # makes the concurrency visible
        status, body = 200, b"slow hello\n"
    else:
        status, body = 404, b"not found\n"
    headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
    events = (h11.Response(status_code=status, headers=headers), h11.Data(data=body))
    return b"".join(conn.send(e) or b"" for e in (*events, h11.EndOfMessage()))


@asynccontextmanager
async def serve() -> AsyncIterator[DemoServer]:
    """Run the demo server on 127.0.0.1 (a free port) for the duration of the block."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    server = DemoServer(url=f"http://127.0.0.1:{port}")

    async def handle(stream: SocketStream) -> None:
        await _handle(stream, server)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


# ------------------------------------------------------------------ the demo


def _print_stats(stats: asyncpool.TransportStats, *, counters: bool = True) -> None:
    fields = ("idle", "in_use", "dialing", "waiting", "total")
    width = max([len("origin"), *(len(origin) for origin in stats.hosts)])
    print(f"  {'origin':<{width}}  " + "  ".join(f"{f:>7}" for f in fields))
    for origin, host in stats.hosts.items():
        print(f"  {origin:<{width}}  " + "  ".join(f"{getattr(host, f):>7}" for f in fields))
    if not counters:
        return
    names = (
        "dials",
        "failed_dials",
        "reused",
        "retries",
        "idle_timeouts",
        "evictions",
        "server_closed_idle",
    )
    for name in names:
        print(f"  {name:<20} {getattr(stats, name):>6}")


async def sequential(pool: asyncpool.Transport, server: DemoServer, n: int = 20) -> float:
    """(a) n GETs one after the other; return their rate in requests/s."""
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    dials_before, accepted_before = pool.stats().dials, server.connections
    start = time.perf_counter()
    for _ in range(n):
        response = await pool.round_trip(asyncpool.Request("GET", server.url + "/", trace=trace))
        body = await response.aread()
        assert response.status_code == 200, (response.status_code, body)
    elapsed = time.perf_counter() - start

    print(f"(a) {n} sequential GETs {server.url}/")
    for i, info in enumerate(infos[:3], 1):
        print(
            f"  request {i}: got_conn reused={info.reused} was_idle={info.was_idle} "
            f"idle_time={info.idle_time * 1e6:.0f}µs local={info.local_address}"
        )
    connections = server.connections - accepted_before
    dials = pool.stats().dials - dials_before
    print(f"sequential: {n} requests, {connections} connection{'s' * (connections != 1)}")
    print(f"  dials {dials}, {n / elapsed:,.0f} requests/s")
    return n / elapsed


async def concurrent(pool: asyncpool.Transport, server: DemoServer, n: int = 100) -> float:
    """(b) n GETs of /slow at once, limited to pool.max_conns_per_host connections."""
    limit = pool.max_conns_per_host
    dials_before, reused_before = pool.stats().dials, pool.stats().reused
    local_addresses: set[object] = set()
    mid_flight: list[asyncpool.TransportStats] = []
    served: list[asyncpool.GotConnInfo] = []

    def got_conn(info: asyncpool.GotConnInfo) -> None:
        local_addresses.add(info.local_address)
        served.append(info)
        if len(served) == n // 2:  # halfway: the other half still queues for a connection
            mid_flight.append(pool.stats())

    trace = asyncpool.ClientTrace(got_conn=got_conn)
    statuses: list[int] = []

    async def get() -> None:
        response = await pool.round_trip(
            asyncpool.Request("GET", server.url + "/slow", trace=trace)
        )
        await response.aread()
        statuses.append(response.status_code)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(get)
    elapsed = time.perf_counter() - start
    assert statuses == [200] * n, statuses

    stats = pool.stats()
    dials = stats.dials - dials_before
    print(
        f"(b) {n} concurrent GETs {server.url}/slow (~{SLOW_DELAY * 1000:.0f} ms each), "
        f"max_conns_per_host={limit}"
    )
    if mid_flight:
        print(f"  mid-flight, as request {n // 2} gets its connection:")
        _print_stats(mid_flight[0], counters=False)
    print(
        f"concurrent: {n} requests, {len(local_addresses)} connections, {dials} dials, "
        f"max_conns_per_host={limit}"
    )
    ceiling = limit / SLOW_DELAY
    print(
        f"  reused {stats.reused - reused_before} times, {n / elapsed:,.0f} requests/s "
        f"(the ceiling is {limit} connections / {SLOW_DELAY}s = {ceiling:,.0f} requests/s)"
    )
    return n / elapsed


async def main() -> None:
    start = time.perf_counter()
    async with serve() as server, asyncpool.Transport(max_conns_per_host=4) as pool:
        sequential_rate = await sequential(pool, server)
        print()
        concurrent_rate = await concurrent(pool, server)
        print()
        print("(c) pool.stats() at the end")
        _print_stats(pool.stats())
        print()
        print(
            f"done: {server.requests} requests over {server.connections} connections "
            f"in {time.perf_counter() - start:.2f}s ({sequential_rate:,.0f} requests/s "
            f"sequential, {concurrent_rate:,.0f} requests/s concurrent on /slow)"
        )


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print("--backend trio needs trio: pip install trio", file=sys.stderr)
        return 2
    print(f"asyncpool {asyncpool.__version__} on {args.backend}\n")
    anyio.run(main, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(run())
