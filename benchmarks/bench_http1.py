"""HTTP/1.1 client throughput: a 12-byte GET against a local nginx, keep-alive, at several concurrencies.

    python benchmarks/bench_http1.py                       # all clients, c = 1, 10, 100, 3 repeats
    python benchmarks/bench_http1.py --clients raw,aiohttp --concurrency 10 --requests 5000 --repeat 5
    python benchmarks/bench_http1.py --backend trio        # asyncpool on trio instead of asyncio
    python benchmarks/bench_http1.py --clients asyncpool,asyncpool+speedups --concurrency 1000
    python benchmarks/bench_http1.py --url http://127.0.0.1:8080/small   # an already running server

The main process starts nginx (tests/nginx.py) pinned to one CPU, then runs every (client,
concurrency) cell in a fresh Python subprocess pinned to another CPU (when there are two or more),
so that no client inherits another's imports, event loop or warm caches. A worker warms up, then sends
a fixed number of requests spread over C concurrent tasks (stopping early at --max-seconds, so slow
clients cannot stall the run) and prints `{"rps": ...}` as JSON. The table shows the median req/s over
the repeats; the ratios compare asyncpool with its peers measured in the same run.

`asyncpool` runs on the h11 parser (`Transport(http1_parser="h11")`), `asyncpool+speedups` on
httptools (`http1_parser="httptools"`, the `speedups` extra); `client` is `asyncpool.Client`
with the speedups' settings, `httpx+asyncpool` is httpx over `asyncpool.httpx.HTTPXTransport`
(httptools), and `httpx+noio` is httpx over a transport that answers without any I/O: httpx's
own ceiling.
`benchmarks/run_all.py` runs this script's workers for the whole suite (also 1 MiB bodies,
HTTP/1.1 over TLS, HTTP/2 and trio) and prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# The working tree, for `tests.nginx` and, even when not installed, `asyncpool` itself: after
# the script's folder and PYTHONPATH's entries, which come first (benchmarks/ab.py points
# PYTHONPATH at another revision's tree: inserted at 0, this tree shadowed it on both sides).
sys.path.insert(
    1 + len([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]), str(ROOT)
)
ALL_CLIENTS = (
    "asyncpool",
    "asyncpool+speedups",
    "client",
    "httpx+asyncpool",
    "httpx+noio",
    "aiohttp",
    "aiosonic",
    "httpx",
    "raw",
)
DEFAULT_CLIENTS = (
    "asyncpool,asyncpool+speedups,client,httpx,httpx+asyncpool,httpx+noio,aiohttp,aiosonic,raw"
)
# The asyncpool clients that run on httptools (the speedups extra); each reports its parser,
# and run_all.py notes one that ran on another.
SPEEDUPS_CLIENTS = ("asyncpool+speedups", "client", "httpx+asyncpool")
EXPECTED_BODY = b"hello world!"
# nginx's response to /small, which the no-I/O transport hands httpx without a network.
CANNED_HEADERS = [
    (b"Server", b"nginx"),
    (b"Date", b"Mon, 07 Dec 2026 12:31:26 GMT"),
    (b"Content-Type", b"text/plain"),
    (b"Content-Length", b"12"),
    (b"Connection", b"keep-alive"),
]
# Set by the worker's --body-length: check the body's length instead of comparing it with
# EXPECTED_BODY (for the 1 MiB file).
EXPECT: dict[str, int | None] = {"length": None}


def default_requests(concurrency: int) -> int:
    """Timed requests per cell unless --requests says otherwise: at least 10 per connection."""
    return 2000 if concurrency == 1 else max(5000, 10 * concurrency)


def raise_nofile_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (c=1000 needs > 1024
    descriptors; nginx started afterwards inherits it). Returns the soft limit in force."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    target = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return int(soft)


class Skip(Exception):
    """The client is not installed (or not usable): the cell is shown as skipped."""


# ====================================================================== worker side


class CollectorLog:
    """When the cyclic garbage collector ran, for how long, and which generation (gc callbacks):
    its share of a cell's timed phase says how much of a slowdown at high concurrency is the
    collector walking the requests in flight."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.runs.append((self._started, now - self._started, info["generation"]))

    def __enter__(self) -> CollectorLog:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def between(self, start: float, end: float) -> dict[str, Any]:
        runs = [(s, d, g) for s, d, g in self.runs if start <= s < end]
        return {
            "gc_seconds": sum(d for _, d, _ in runs),
            "gc_collections": [sum(1 for *_, g in runs if g == gen) for gen in range(3)],
        }


async def _drive(
    one: Callable[[], Awaitable[None]],
    concurrency: int,
    requests: int,
    max_seconds: float,
    tasks: Tasks,
) -> dict[str, Any]:
    """Warm up, then run `requests` calls of `one` over `concurrency` tasks; return the measurement.

    The clock runs from the moment every task is ready to the end of the last request, so that
    starting and joining the harness's own tasks (a thousand of them, at c=1000) is not counted.
    Both phases start no new request after `max_seconds`, and cancel the requests still in flight
    after twice that: httpx at c=1000 needs half a minute just to open its connections.
    """
    # Warm-up: every task opens its connection and runs a few requests.
    warm = {"left": max(2 * concurrency, min(200, requests // 10))}
    warm_deadline = time.perf_counter() + max_seconds

    async def warm_task() -> None:
        while warm["left"] > 0 and time.perf_counter() < warm_deadline:
            warm["left"] -= 1
            await one()

    await tasks.spawn([warm_task] * concurrency, 2 * max_seconds)

    state = {"left": requests, "done": 0, "not_ready": concurrency}
    # Wall clock, and the process's CPU time (user + system, all threads): on a shared VM the
    # wall clock also counts the time the host gave the CPU to others, the CPU time does not.
    clock = {"start": 0.0, "deadline": math.inf, "end": 0.0, "cpu_start": 0.0, "cpu_end": 0.0}
    go = tasks.new_event()

    async def task() -> None:
        state["not_ready"] -= 1
        if not state["not_ready"]:  # the last one ready starts the clock
            clock["start"] = time.perf_counter()
            clock["cpu_start"] = time.process_time()
            clock["deadline"] = clock["start"] + max_seconds
            go.set()
        await go.wait()
        while state["left"] > 0 and time.perf_counter() < clock["deadline"]:
            state["left"] -= 1
            await one()
            state["done"] += 1
        clock["end"] = time.perf_counter()  # the task that finishes last writes last
        clock["cpu_end"] = time.process_time()

    with CollectorLog() as collector:
        await tasks.spawn([task] * concurrency, 2 * max_seconds)
    elapsed = clock["end"] - clock["start"]
    return {
        "rps": state["done"] / elapsed,
        "requests": state["done"],
        "seconds": elapsed,
        "cpu_seconds": clock["cpu_end"] - clock["cpu_start"],
        "capped": state["done"] < requests,
        **collector.between(clock["start"], clock["end"]),
    }


async def _asyncio_spawn(fns: list[Callable[[], Awaitable[None]]], timeout: float) -> None:
    """Run `fns` as tasks; cancel those still running after `timeout` s; raise the first error."""
    tasks = [asyncio.ensure_future(fn()) for fn in fns]
    done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        t.result()


async def _anyio_spawn(fns: list[Callable[[], Awaitable[None]]], timeout: float) -> None:
    """The same on anyio (asyncio or trio): a task group under a `move_on_after` scope."""
    import anyio

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            for fn in fns:
                tg.start_soon(fn)


def _anyio_event() -> Any:
    import anyio

    return anyio.Event()


class Tasks(NamedTuple):
    """How a client's tasks run: asyncio's own (the peers), or anyio's (asyncpool, any loop)."""

    spawn: Callable[[list[Callable[[], Awaitable[None]]], float], Awaitable[None]]
    new_event: Callable[[], Any]


ASYNCIO_TASKS = Tasks(_asyncio_spawn, asyncio.Event)
ANYIO_TASKS = Tasks(_anyio_spawn, _anyio_event)


def _check(status: int, body: bytes) -> None:
    length = EXPECT["length"]
    if status != 200 or (body != EXPECTED_BODY if length is None else len(body) != length):
        raise RuntimeError(f"unexpected response: {status}, {len(body)} bytes: {body[:50]!r}")


async def _run_raw(url: str, c: int, n: int, cap: float) -> dict[str, Any]:
    """Hand-written keep-alive GETs on asyncio streams: each task owns one connection."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(c):
        free.append(await asyncio.open_connection(host, port))
    conns = list(free)

    async def one() -> None:
        reader, writer = free.pop()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                    break
            body = await reader.readexactly(length)
            _check(status, body)
        finally:
            free.append((reader, writer))

    try:
        return await _drive(one, c, n, cap, ASYNCIO_TASKS)
    finally:
        for _, writer in conns:
            writer.close()


async def _run_httpx(url: str, c: int, n: int, cap: float) -> dict[str, Any]:
    try:
        import httpx
    except ImportError as e:
        raise Skip(str(e)) from e
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one() -> None:
            r = await client.get(url)
            _check(r.status_code, r.content)

        return await _drive(one, c, n, cap, ASYNCIO_TASKS)


async def _run_httpx_noio(url: str, c: int, n: int, cap: float) -> dict[str, Any]:
    """httpx over a transport that answers every request with nginx's response to /small without
    any I/O: what httpx's own layers cost, the ceiling of any transport under httpx."""
    try:
        import httpx
    except ImportError as e:
        raise Skip(str(e)) from e

    class Body(httpx.AsyncByteStream):
        # A stream to read, as a network transport returns (content=bytes would be read at once).
        async def __aiter__(self) -> Any:
            yield EXPECTED_BODY

    class NoIOTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200,
                headers=CANNED_HEADERS,
                stream=Body(),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": b"OK"},
            )

    async with httpx.AsyncClient(transport=NoIOTransport()) as client:

        async def one() -> None:
            r = await client.get(url)
            _check(r.status_code, r.content)

        return await _drive(one, c, n, cap, ASYNCIO_TASKS)


async def _run_httpx_asyncpool(url: str, c: int, n: int, cap: float) -> dict[str, Any]:
    """httpx over `asyncpool.httpx.HTTPXTransport` with the speedups' settings."""
    try:
        import httpx

        from asyncpool.httpx import HTTPXTransport
    except ImportError as e:
        raise Skip(f"httpx or asyncpool.httpx not importable: {e}") from e
    transport = HTTPXTransport(**_asyncpool_options("httptools", c, None))
    async with httpx.AsyncClient(transport=transport) as client:

        async def one() -> None:
            r = await client.get(url)
            _check(r.status_code, r.content)

        result = await _drive(one, c, n, cap, ASYNCIO_TASKS)
        result["dials"] = transport.pool.stats().dials
        result["parser"] = transport.pool.http1_parser
        return result


async def _run_aiohttp(url: str, c: int, n: int, cap: float) -> dict[str, Any]:
    try:
        import aiohttp
    except ImportError as e:
        raise Skip(str(e)) from e
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def one() -> None:
            async with session.get(url) as r:
                _check(r.status, await r.read())

        return await _drive(one, c, n, cap, ASYNCIO_TASKS)


async def _run_aiosonic(url: str, c: int, n: int, cap: float) -> dict[str, Any]:
    try:
        import aiosonic
        from aiosonic.connectors import TCPConnector
    except ImportError as e:
        raise Skip(str(e)) from e
    try:
        from aiosonic.pools import PoolConfig

        connector = TCPConnector(
            pool_configs={":default": PoolConfig(size=c, max_conn_requests=None)}
        )
    except (ImportError, TypeError):  # aiosonic < 0.25
        connector = TCPConnector(pool_size=c)
    client = aiosonic.HTTPClient(connector)
    try:

        async def one() -> None:
            r = await client.get(url)
            _check(r.status_code, await r.content())

        return await _drive(one, c, n, cap, ASYNCIO_TASKS)
    finally:
        with contextlib.suppress(Exception):
            await connector.cleanup()


def tls_http1_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context trusting `ca_file` (or the system's CAs) that offers only http/1.1 by
    ALPN: asyncpool uses a given context as it is, so the context says what to negotiate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _asyncpool_options(parser: str, c: int, ca_file: str | None) -> dict[str, Any]:
    """`asyncpool.Transport`'s options for a worker: the given HTTP/1.1 parser ("h11" or
    "httptools"), up to c idle connections kept (the default of 100 would close and redial most
    of them at c=1000; httpx and aiohttp keep c too), and over https (`ca_file`) HTTP/1.1 only.
    Raises Skip when that parser cannot be had."""
    if parser == "httptools":
        try:
            import httptools  # noqa: F401
        except ImportError as e:
            raise Skip(f"{e} (pip install 'asyncpool-http[speedups]')") from e
    options: dict[str, Any] = {"http1_parser": parser, "max_idle_conns": max(100, c)}
    if ca_file is not None:
        options.update(tls_config=tls_http1_context(ca_file), http2=False)
    return options


def _asyncpool_transport(parser: str, c: int, ca_file: str | None) -> Any:
    """`asyncpool.Transport` with `_asyncpool_options`."""
    import asyncpool

    options = _asyncpool_options(parser, c, ca_file)
    try:
        return asyncpool.Transport(**options)
    except TypeError as e:  # before the http1_parser option: h11 was the only parser
        if parser != "h11":
            raise Skip(f"Transport(http1_parser={parser!r}) not supported yet: {e}") from e
        del options["http1_parser"]
        return asyncpool.Transport(**options)
    except ValueError as e:
        raise Skip(f"Transport(http1_parser={parser!r}): {e}") from e


def _check_http1(version: str) -> None:
    if version != "HTTP/1.1":
        raise RuntimeError(f"expected HTTP/1.1, got {version}")


def _run_asyncpool(
    url: str,
    c: int,
    n: int,
    cap: float,
    backend: str,
    parser: str = "h11",
    ca_file: str | None = None,
) -> dict[str, Any]:
    try:
        import anyio

        import asyncpool

        asyncpool.Transport  # noqa: B018
        asyncpool.Request  # noqa: B018
    except (ImportError, AttributeError) as e:
        raise Skip(f"asyncpool not importable: {e}") from e
    pool_ = _asyncpool_transport(parser, c, ca_file)  # raises Skip before any event loop runs
    tls = ca_file is not None

    async def main() -> dict[str, Any]:
        async with pool_ as pool:

            async def one() -> None:
                resp = await pool.round_trip(asyncpool.Request("GET", url))
                if tls:  # over TLS ALPN decides the protocol: check it is the one measured
                    _check_http1(resp.http_version)
                _check(resp.status_code, await resp.aread())

            result = await _drive(one, c, n, cap, ANYIO_TASKS)
            result["dials"] = pool.stats().dials
            result["parser"] = getattr(pool, "http1_parser", "h11 (no option yet)")
            result["httptools_loaded"] = "httptools" in sys.modules
            return result

    result: dict[str, Any] = anyio.run(main, backend=backend)
    return result


def _run_client(
    url: str, c: int, n: int, cap: float, backend: str, ca_file: str | None = None
) -> dict[str, Any]:
    """`asyncpool.Client` with the speedups' Transport options (its own defaults otherwise:
    timeouts, User-Agent, cookies, redirects), each response read in full by `get`. No
    environment proxies (`trust_env=False`), as the Transport cells."""
    try:
        import anyio

        import asyncpool

        asyncpool.Client  # noqa: B018
    except (ImportError, AttributeError) as e:
        raise Skip(f"asyncpool.Client not importable: {e}") from e
    client_ = asyncpool.Client(trust_env=False, **_asyncpool_options("httptools", c, ca_file))
    tls = ca_file is not None

    async def main() -> dict[str, Any]:
        async with client_ as client:

            async def one() -> None:
                r = await client.get(url)
                if tls:
                    _check_http1(r.http_version)
                _check(r.status_code, r.content)

            result = await _drive(one, c, n, cap, ANYIO_TASKS)
            result["dials"] = client.transport.stats().dials
            result["parser"] = client.transport.http1_parser
            return result

    result: dict[str, Any] = anyio.run(main, backend=backend)
    return result


def worker(args: argparse.Namespace) -> int:
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile_limit()
    EXPECT["length"] = args.body_length
    c, n, cap = args.concurrency_one, args.requests_one, args.max_seconds
    url, ca_file = args.url, args.ca_file
    try:
        if args.worker == "asyncpool":
            result = _run_asyncpool(url, c, n, cap, args.backend, "h11", ca_file)
        elif args.worker == "asyncpool+speedups":
            result = _run_asyncpool(url, c, n, cap, args.backend, "httptools", ca_file)
        elif args.worker == "client":
            result = _run_client(url, c, n, cap, args.backend, ca_file)
        elif url.startswith("https:"):
            raise Skip("this worker has no https (only asyncpool, asyncpool+speedups, client)")
        else:
            runner = {
                "raw": _run_raw,
                "httpx": _run_httpx,
                "httpx+asyncpool": _run_httpx_asyncpool,
                "httpx+noio": _run_httpx_noio,
                "aiohttp": _run_aiohttp,
                "aiosonic": _run_aiosonic,
            }[args.worker]
            result = asyncio.run(runner(url, c, n, cap))
    except Skip as e:
        print(json.dumps({"skipped": str(e)}))
        return 0
    print(json.dumps(result))
    return 0


# ====================================================================== main side


def _cpus(pin: str) -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two different CPUs for "split" (when there are two), one for
    "same", none for "none"."""
    if pin == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "same":
        return cpus[-1], cpus[-1]
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


@contextlib.contextmanager
def _server(args: argparse.Namespace, cpu: int | None) -> Iterator[str]:
    if args.url:
        yield args.url
        return
    from tests.nginx import nginx_binary, run_nginx

    if nginx_binary() is None:
        sys.exit("nginx not found: install it (apt-get install nginx-light) or pass --url")
    with run_nginx(cpu=cpu) as server:
        yield server.url("/small")


Cells = dict[tuple[str, int], list[dict[str, Any]]]


def measure(
    args: argparse.Namespace,
    clients: list[str],
    levels: list[int],
    run_cell: Callable[[str, int], dict[str, Any]],
) -> tuple[Cells, dict[str, str]]:
    """Every (client, concurrency) cell ``args.repeat`` times, repeats outermost so that drift
    over the run touches every cell alike; and notes on skipped clients and failed cells."""
    results: Cells = {(k, c): [] for k in clients for c in levels}
    notes: dict[str, str] = {}
    for rep in range(args.repeat):
        for client in clients:
            for c in levels:
                if client in notes:
                    continue  # skipped: not installed
                r = run_cell(client, c)
                results[client, c].append(r)
                if "skipped" in r:
                    notes[client] = r["skipped"]
                elif "error" in r:
                    notes[f"{client} c={c}"] = r["error"]
                if args.verbose:
                    print(f"  rep {rep + 1} {client:<10} c={c:<4} {r}", flush=True)
    return results, notes


# What a traceback puts before its lines: indentation, and an exception group's "|" margins.
_MARGIN = re.compile(r"^[\s|]*")
# An exception's own line: "Name: message" or a bare "Name" (dotted names too).
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(:.*)?$")


def error_line(stderr: str, returncode: int) -> str:
    """The line of a failed worker's stderr that says what went wrong: the last exception's
    type and message. An ExceptionGroup's traceback ends in decoration ("+------"), and the
    sub-exception's line sits in its "|" margin; both are looked through."""
    lines = [_MARGIN.sub("", line).rstrip() for line in stderr.splitlines()]
    meaningful = [s for s in lines if s and s.strip("+-0123456789. ")]
    for line in reversed(meaningful):
        if _EXCEPTION_LINE.match(line) and not line.startswith("Traceback"):
            return line
    return meaningful[-1] if meaningful else f"exit {returncode}"


def run_worker(
    cmd: list[str],
    timeout: float,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one benchmark worker process; its last stdout line is its JSON result. `cpu`: pin
    it there before it starts (for workers that cannot pin themselves, such as the Go client);
    `env`: its environment."""
    pin = None
    if cpu is not None and hasattr(os, "sched_setaffinity"):

        def pin() -> None:
            os.sched_setaffinity(0, {cpu})

    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
            preexec_fn=pin,  # safe: the runner starts no threads
        )
    except subprocess.TimeoutExpired:
        return {"error": "worker timed out"}
    if proc.returncode != 0:
        return {"error": error_line(proc.stderr, proc.returncode)}
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"bad worker output: {proc.stdout[-200:]!r}"}
    return result


def _run_cell(
    args: argparse.Namespace, url: str, client: str, c: int, cpu: int | None
) -> dict[str, Any]:
    n = args.requests or default_requests(c)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        client,
        "--url",
        url,
        "--concurrency",
        str(c),
        "--requests",
        str(n),
        "--max-seconds",
        str(args.max_seconds),
        "--backend",
        args.backend,
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return run_worker(cmd, args.max_seconds + 120)


def _fmt(cell: list[dict[str, Any]], skipped: bool) -> str:
    rps = [r["rps"] for r in cell if "rps" in r]
    if rps:
        mark = "*" if any(r.get("capped") for r in cell) else ""
        return f"{statistics.median(rps):,.0f}{mark}"
    return "skipped" if skipped else "error"


def _median(cell: list[dict[str, Any]]) -> float | None:
    rps = [r["rps"] for r in cell if "rps" in r]
    return statistics.median(rps) if rps else None


def main(args: argparse.Namespace) -> int:
    clients = [s.strip() for s in args.clients.split(",") if s.strip()]
    unknown = set(clients) - set(ALL_CLIENTS)
    if unknown:
        sys.exit(f"unknown clients: {', '.join(sorted(unknown))} (known: {', '.join(ALL_CLIENTS)})")
    levels = [int(s) for s in args.concurrency.split(",") if s.strip()]
    server_cpu, client_cpu = _cpus(args.pin)
    nofile = raise_nofile_limit()  # before nginx starts: it inherits the limit
    if nofile and nofile < max(levels) + 64:
        print(f"# warning: only {nofile} open files allowed; c={max(levels)} may fail", flush=True)

    started = time.perf_counter()
    with _server(args, server_cpu) as url:
        print(
            f"# GET {url}  python {sys.version.split()[0]}  cpus: nginx={server_cpu} "
            f"client={client_cpu}  repeats={args.repeat}  asyncpool backend={args.backend}",
            flush=True,
        )
        results, notes = measure(
            args, clients, levels, lambda client, c: _run_cell(args, url, client, c, client_cpu)
        )

    width = 12
    print()
    print(f"{'client':<28}" + "".join(f"{'c=' + str(c):>{width}}" for c in levels))
    for client in clients:
        row = "".join(f"{_fmt(results[client, c], client in notes):>{width}}" for c in levels)
        print(f"{client:<28}{row}")
    print("(req/s, median of repeats; * = stopped at --max-seconds before --requests)")

    for ours, peer in (
        ("asyncpool", "aiohttp"),
        ("asyncpool", "httpx"),
        ("asyncpool+speedups", "aiohttp"),
        ("asyncpool+speedups", "aiosonic"),
        ("asyncpool+speedups", "raw"),
        ("client", "asyncpool+speedups"),
        ("httpx+asyncpool", "httpx+noio"),
    ):
        if ours not in clients or peer not in clients:
            continue
        ratios = []
        for c in levels:
            a, p = _median(results[ours, c]), _median(results[peer, c])
            ratios.append(f"{a / p:.2f}x" if a and p else "n/a")
        print(f"{ours + '/' + peer:<28}" + "".join(f"{r:>{width}}" for r in ratios))
    for key, note in notes.items():
        print(f"note: {key}: {note}")
    print(f"# total {time.perf_counter() - started:.1f}s")

    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {f"{k}@{c}": v for (k, c), v in results.items()},
                indent=2,
            )
        )
    return 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options both benchmark scripts take: repeats, time cap, backend, CPU pinning."""
    p.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=5.0,
        help="stop a cell's timed phase after this long (caps slow clients)",
    )
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument(
        "--pin",
        default="split",
        choices=["split", "same", "none"],
        help="CPU pinning: nginx and client on two different CPUs (default), both on one, or none",
    )


def add_output_and_worker_options(p: argparse.ArgumentParser, clients: tuple[str, ...]) -> None:
    """--json-out, -v, and the internal worker mode's options."""
    p.add_argument("--json-out", default=None, help="also write all raw results to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run")
    # Worker mode (internal): one client, one concurrency level, prints JSON.
    p.add_argument("--worker", choices=clients, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", default=DEFAULT_CLIENTS, help=f"comma list of {ALL_CLIENTS}")
    p.add_argument("--concurrency", default="1,10,100", help="comma list of concurrency levels")
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="timed requests per cell (default: 2000 at c=1, else max(5000, 10 * c))",
    )
    add_run_options(p)
    p.add_argument("--url", default=None, help="benchmark this URL instead of starting nginx")
    add_output_and_worker_options(p, ALL_CLIENTS)
    p.add_argument("--body-length", type=int, default=None, help=argparse.SUPPRESS)
    # Worker mode over https (run_all.py's HTTP/1.1 + TLS cells): the CA that trusts nginx.
    p.add_argument("--ca-file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if not args.url:
            p.error("--worker needs --url")
        args.concurrency_one = int(args.concurrency)
        args.requests_one = args.requests or default_requests(args.concurrency_one)
    return args


if __name__ == "__main__":
    ns = parse_args()
    sys.exit(worker(ns) if ns.worker else main(ns))
