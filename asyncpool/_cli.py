"""The ``asyncpool`` command: trace one request (``get``), or load-test a server (``bench``).

    asyncpool get https://example.org/ --trace
    asyncpool bench                         # an embedded loopback server: nothing else needed
    asyncpool bench http://127.0.0.1:8080/ -n 10000 -c 50 --json

Output meant for people goes to stderr (the status line, headers, progress, the summary), the
response body to stdout, so ``get`` pipes. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ._demo_server import serve
from ._errors import HTTPError, InvalidURL
from ._models import URL, Request
from ._trace import Timings
from ._transport import Transport
from ._version import __version__

__all__ = ["main"]

EXIT_ERROR, EXIT_USAGE = 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncpool", description="Trace one HTTP request, or load-test a server."
    )
    parser.add_argument("--version", action="version", version=f"asyncpool {__version__}")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    commands = parser.add_subparsers(dest="command", required=True)

    get = commands.add_parser("get", help="send one request; body to stdout, the rest to stderr")
    get.add_argument("url")
    get.add_argument("-X", "--request", dest="method", help="method (default GET, POST with -d)")
    get.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    get.add_argument("-d", "--data", help="request body")
    get.add_argument("-o", "--output", help="write the body to this file")
    get.add_argument("--trace", action="store_true", help="print where the time went")
    _add_connection_options(get)

    bench = commands.add_parser("bench", help="load-test a URL (default: an embedded server)")
    bench.add_argument("url", nargs="?", help="omit to start an embedded loopback server")
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument("-n", "--requests", type=int, help="requests to send (default 2000)")
    amount.add_argument("-z", "--duration", type=float, help="seconds to run instead")
    bench.add_argument("-c", "--concurrency", type=int, default=50)
    bench.add_argument("-X", "--request", dest="method", default="GET")
    bench.add_argument("--max-conns-per-host", type=int, default=0)
    bench.add_argument("--max-idle-conns-per-host", type=int, default=None)
    bench.add_argument("--disable-keep-alives", action="store_true")
    bench.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    _add_connection_options(bench)
    return parser


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http2", action="store_true", help="offer HTTP/2 (h2c with prior knowledge for http://)"
    )
    parser.add_argument("--insecure", "-k", action="store_true", help="skip TLS verification")
    parser.add_argument("--cacert", help="trust this CA file (PEM)")


def _tls_config(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.insecure or args.cacert):
        return None
    context = ssl.create_default_context(cafile=args.cacert)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _transport_options(args: argparse.Namespace, url: str) -> dict[str, Any]:
    return {
        "http2": args.http2,
        "http2_prior_knowledge": args.http2 and url.startswith("http:"),
        "tls_config": _tls_config(args),
    }


# -- get --------------------------------------------------------------------------------------


async def _get(args: argparse.Namespace, err: Any) -> int:
    headers = []
    for field in args.header:
        name, sep, value = field.partition(":")
        if not sep:
            raise InvalidURL(f"-H {field!r}: expected 'Name: value'", phase="usage")
        headers.append((name.strip(), value.strip()))
    method = args.method or ("POST" if args.data is not None else "GET")
    timings = Timings()
    request = Request(
        method,
        args.url,
        headers=headers,
        content=None if args.data is None else args.data.encode(),
        trace=timings.trace if args.trace else None,
    )
    async with contextlib.AsyncExitStack() as stack:
        # The output file first: a path that cannot be written fails before any request.
        file = (
            await stack.enter_async_context(await anyio.open_file(args.output, "wb"))
            if args.output
            else None
        )
        pool = await stack.enter_async_context(Transport(**_transport_options(args, args.url)))
        response = await stack.enter_async_context(await pool.round_trip(request))
        # What the server sent is text, not markup: "[/x]" in a field would end a tag.
        from rich.markup import escape

        err.print(
            f"[bold]{response.http_version} {response.status_code}[/] "
            f"{escape(response.reason_phrase)}",
            highlight=False,
        )
        for name, value in response.headers.items():
            err.print(f"[cyan]{escape(name)}[/]: {escape(value)}", highlight=False, markup=True)
        stdout = sys.stdout.buffer
        async for chunk in response.aiter_bytes():
            if file is not None:
                await file.write(chunk)
            else:
                stdout.write(chunk)
        stdout.flush()
    if args.trace:
        _waterfall(timings, err)
    return 0 if response.status_code < 400 else EXIT_ERROR


def _waterfall(timings: Timings, err: Any) -> None:
    phases = timings.phases()
    names = {
        "queued": "Waiting",
        "dns": "DNS Lookup",
        "connect": "TCP Connection",
        "tls": "TLS Handshake",
        "server": "Server Processing",
        "transfer": "Content Transfer",
    }
    cells = [(label, phases[key]) for key, label in names.items()]
    err.print()
    err.print("  ".join(f"{label:^17}" for label, _ in cells), highlight=False)
    err.print("[" + "|".join(f"{_ms(value):^17}" for _, value in cells) + "]", highlight=False)
    total = timings.total
    err.print(f"total {_ms(total)}", highlight=False)
    info = timings.conn
    if info is not None:
        kind = "reused" if info.reused else "new"
        err.print(
            f"connection: {kind}, {info.protocol}, {_addr(info.local_address)} -> "
            f"{_addr(info.remote_address)}",
            highlight=False,
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def _addr(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


# -- bench ------------------------------------------------------------------------------------


async def _bench(args: argparse.Namespace, err: Any) -> int:
    if args.concurrency < 1:
        raise InvalidURL("-c must be at least 1", phase="usage")
    if args.url is not None:
        return await _bench_url(args, args.url, err)
    async with serve(http2=args.http2) as base:
        err.print(f"embedded {'HTTP/2' if args.http2 else 'HTTP/1.1'} server at {base}")
        return await _bench_url(args, base + "/", err)


async def _bench_url(args: argparse.Namespace, url: str, err: Any) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    URL(url)  # a bad URL fails once, up front, not once per request
    total = None if args.duration else (args.requests or 2000)
    options = _transport_options(args, url)
    options.update(
        max_conns_per_host=args.max_conns_per_host,
        max_idle_conns_per_host=args.max_idle_conns_per_host,
        disable_keep_alives=args.disable_keep_alives,
    )
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    issued = 0
    progress = Progress(
        TextColumn("[bold]bench"),
        BarColumn(),
        TextColumn("{task.completed} requests"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=args.json or not err.is_terminal,
    )
    async with Transport(**options) as pool:
        started = time.perf_counter()
        stop_at = started + args.duration if args.duration else None
        task = progress.add_task("bench", total=total or None)

        async def worker() -> None:
            nonlocal issued
            while True:
                if total is not None:
                    if issued >= total:
                        return
                    issued += 1
                elif time.perf_counter() >= (stop_at or 0.0):
                    return
                begin = time.perf_counter()
                try:
                    response = await pool.round_trip(Request(args.method, url))
                    await response.aread()
                    statuses[response.status_code] += 1
                except HTTPError as exc:
                    errors[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - begin)
                progress.advance(task)

        with progress:
            async with anyio.create_task_group() as tg:
                for _ in range(args.concurrency):
                    tg.start_soon(worker)
        elapsed = time.perf_counter() - started
        stats = pool.stats()
    summary = _summary(latencies, elapsed, statuses, errors, stats.dials, stats.reused)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, latencies, err)
    return 0 if not errors else EXIT_ERROR


def _summary(
    latencies: list[float],
    elapsed: float,
    statuses: collections.Counter[int],
    errors: collections.Counter[str],
    dials: int,
    reused: int,
) -> dict[str, Any]:
    ordered = sorted(latencies)
    count = len(ordered)

    def percentile(p: float) -> float:
        return ordered[min(count - 1, int(p * count))] if ordered else 0.0

    return {
        "requests": count,
        "duration_s": round(elapsed, 4),
        "requests_per_s": round(count / elapsed, 1) if elapsed else 0.0,
        "latency_s": {
            "p50": percentile(0.50),
            "p90": percentile(0.90),
            "p99": percentile(0.99),
            "max": ordered[-1] if ordered else 0.0,
        },
        "status_codes": {str(code): n for code, n in sorted(statuses.items())},
        "errors": dict(errors),
        "dials": dials,
        "reused": reused,
        "reuse_ratio": round(reused / count, 4) if count else 0.0,
    }


def _print_summary(summary: dict[str, Any], latencies: list[float], err: Any) -> None:
    from rich.table import Table

    table = Table(title="asyncpool bench", show_header=False)
    table.add_row("requests", f"{summary['requests']:,} in {summary['duration_s']:.2f}s")
    table.add_row("requests/s", f"{summary['requests_per_s']:,.1f}")
    latency = summary["latency_s"]
    table.add_row(
        "latency",
        "  ".join(f"{name} {_ms(latency[name])}" for name in ("p50", "p90", "p99", "max")),
    )
    codes = ", ".join(f"{code}: {n:,}" for code, n in summary["status_codes"].items())
    table.add_row("status codes", codes or "-")
    errs = ", ".join(f"{name}: {n:,}" for name, n in summary["errors"].items())
    table.add_row("errors", errs or "none")
    table.add_row(
        "connections",
        f"{summary['dials']:,} dials, reuse ratio {summary['reuse_ratio']:.1%}",
    )
    err.print(table)
    err.print(_histogram(latencies), highlight=False)


def _histogram(latencies: list[float], buckets: int = 10, width: int = 40) -> str:
    if not latencies:
        return ""
    low, high = min(latencies), max(latencies)
    step = (high - low) / buckets or 1e-9
    counts = [0] * buckets
    for value in latencies:
        counts[min(buckets - 1, int((value - low) / step))] += 1
    peak = max(counts)
    lines = ["latency histogram"]
    for i, n in enumerate(counts):
        bar = "█" * round(width * n / peak)
        lines.append(f"  {_ms(low + i * step):>9} | {bar} {n}")
    return "\n".join(lines)


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from rich.console import Console
    except ImportError:
        print(
            'asyncpool: the command needs its extra: pip install "asyncpool[cli]"',
            file=sys.stderr,
        )
        return EXIT_USAGE
    err = Console(stderr=True, highlight=False)
    command = _get if args.command == "get" else _bench
    try:
        return anyio.run(command, args, err, backend=args.backend)
    except InvalidURL as exc:
        err.print(f"asyncpool: error: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except HTTPError as exc:
        err.print(f"asyncpool: error: {exc}", markup=False, soft_wrap=True)
        return EXIT_ERROR
    except OSError as exc:  # writing the output file
        err.print(f"asyncpool: error: {exc}", markup=False, soft_wrap=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
