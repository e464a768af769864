"""HTTP/2 client throughput: a 12-byte GET over h2 + TLS against a local nginx, at several concurrencies.

    python benchmarks/bench_h2.py                          # asyncpool and httpx, c = 10, 100, 3 repeats
    python benchmarks/bench_h2.py --concurrency 100 --requests 10000 --repeat 5
    python benchmarks/bench_h2.py --backend trio           # asyncpool on trio instead of asyncio
    python benchmarks/bench_h2.py --url https://127.0.0.1:8443/small --ca-file ca.pem   # a running server

The main process makes a throwaway CA (trustme), starts nginx (tests/nginx.py) with TLS offering h2
by ALPN, pinned to one CPU, then runs every (client, concurrency) cell in a fresh Python subprocess
pinned to another CPU (when there are two or more), exactly as bench_http1.py does and with its
helpers. Every request must come back as HTTP/2 over the one multiplexed connection each client
opens; the table shows the median req/s over the repeats and the asyncpool/httpx ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Its directory is on sys.path when run as a script; bench_http1 puts the working tree there too.
from bench_http1 import ALL_CLIENTS as HTTP1_CLIENTS
from bench_http1 import (
    ANYIO_TASKS,
    ASYNCIO_TASKS,
    Skip,
    _check,
    _cpus,
    _drive,
    _fmt,
    _median,
    add_output_and_worker_options,
    add_run_options,
    measure,
    raise_nofile_limit,
    run_worker,
)

ALL_CLIENTS = ("asyncpool", "httpx")
DEFAULT_CLIENTS = "asyncpool,httpx"
# bench_http1.py's other clients: no HTTP/2 (aiohttp, aiosonic, raw) or no HTTP/2 worker here.
NO_HTTP2 = tuple(k for k in HTTP1_CLIENTS if k not in ALL_CLIENTS)


# ====================================================================== worker side


def _client_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context trusting `ca_file` (or the system's CAs) that offers h2 and http/1.1 by
    ALPN. asyncpool uses a context given to it as it is (its ALPN says what it negotiates);
    httpcore sets its own ALPN (http/1.1 and h2) on the context httpx passes it."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _check_h2(version: str) -> None:
    if version != "HTTP/2":
        raise RuntimeError(f"expected HTTP/2, got {version}")


async def _run_httpx(url: str, c: int, n: int, cap: float, ca_file: str | None) -> dict[str, Any]:
    try:
        import h2  # noqa: F401  (httpx[http2])
        import httpx
    except ImportError as e:
        raise Skip(f"{e} (pip install 'httpx[http2]')") from e
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(
        http2=True, verify=_client_context(ca_file), limits=limits
    ) as client:

        async def one() -> None:
            r = await client.get(url)
            _check_h2(r.http_version)
            _check(r.status_code, r.content)

        return await _drive(one, c, n, cap, ASYNCIO_TASKS)


def _run_asyncpool(
    url: str, c: int, n: int, cap: float, ca_file: str | None, backend: str
) -> dict[str, Any]:
    try:
        import anyio

        import asyncpool
    except ImportError as e:
        raise Skip(f"asyncpool not importable: {e}") from e

    async def main() -> dict[str, Any]:
        async with asyncpool.Transport(tls_config=_client_context(ca_file), http2=True) as pool:

            async def one() -> None:
                resp = await pool.round_trip(asyncpool.Request("GET", url))
                _check_h2(resp.http_version)
                _check(resp.status_code, await resp.aread())

            result = await _drive(one, c, n, cap, ANYIO_TASKS)
            result["dials"] = pool.stats().dials
            return result

    result: dict[str, Any] = anyio.run(main, backend=backend)
    return result


def worker(args: argparse.Namespace) -> int:
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile_limit()
    c, n, cap = args.concurrency_one, args.requests_one, args.max_seconds
    try:
        if args.worker == "asyncpool":
            result = _run_asyncpool(args.url, c, n, cap, args.ca_file, args.backend)
        else:
            result = asyncio.run(_run_httpx(args.url, c, n, cap, args.ca_file))
    except Skip as e:
        print(json.dumps({"skipped": str(e)}))
        return 0
    print(json.dumps(result))
    return 0


# ====================================================================== main side


@contextlib.contextmanager
def _server(args: argparse.Namespace, cpu: int | None) -> Iterator[tuple[str, str | None]]:
    """(URL of /small over https, the CA file that trusts its certificate)."""
    if args.url:
        yield args.url, args.ca_file
        return
    from tests.nginx import nginx_binary, run_nginx, tls_files_from_trustme

    if nginx_binary() is None:
        sys.exit("nginx not found: install it (apt-get install nginx-light) or pass --url")
    try:
        import trustme
    except ImportError:
        sys.exit("trustme is needed for the throwaway CA: pip install trustme")
    with tempfile.TemporaryDirectory(prefix="asyncpool-bench-h2-") as tmp:
        ca = trustme.CA()
        ca_file = str(Path(tmp) / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        files = tls_files_from_trustme(ca.issue_cert("127.0.0.1"), tmp)
        with run_nginx(http2_tls=files, cpu=cpu) as server:
            yield server.tls_url("/small"), ca_file


def _run_cell(
    args: argparse.Namespace, url: str, ca_file: str | None, client: str, c: int, cpu: int | None
) -> dict[str, Any]:
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
        str(args.requests),
        "--max-seconds",
        str(args.max_seconds),
        "--backend",
        args.backend,
    ]
    if ca_file:
        cmd += ["--ca-file", ca_file]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return run_worker(cmd, args.max_seconds + 120)


def main(args: argparse.Namespace) -> int:
    asked = [s.strip() for s in args.clients.split(",") if s.strip()]
    unknown = set(asked) - set(ALL_CLIENTS) - set(NO_HTTP2)
    if unknown:
        sys.exit(f"unknown clients: {', '.join(sorted(unknown))} (known: {', '.join(ALL_CLIENTS)})")
    # bench_http1.py's names are accepted too (one --clients list for both scripts): skipped.
    clients = [k for k in asked if k in ALL_CLIENTS]
    if not clients:
        print(f"# bench_h2: none of {', '.join(asked)} has an HTTP/2 worker; nothing to run")
        return 0
    levels = [int(s) for s in args.concurrency.split(",") if s.strip()]
    server_cpu, client_cpu = _cpus(args.pin)

    started = time.perf_counter()
    with _server(args, server_cpu) as (url, ca_file):
        print(
            f"# GET {url} (HTTP/2 over TLS)  python {sys.version.split()[0]}  cpus: "
            f"nginx={server_cpu} client={client_cpu}  repeats={args.repeat}  "
            f"asyncpool backend={args.backend}",
            flush=True,
        )
        results, notes = measure(
            args,
            clients,
            levels,
            lambda client, c: _run_cell(args, url, ca_file, client, c, client_cpu),
        )

    width = 12
    print()
    print(f"{'client':<12}" + "".join(f"{'c=' + str(c):>{width}}" for c in levels))
    for client in clients:
        row = "".join(f"{_fmt(results[client, c], client in notes):>{width}}" for c in levels)
        print(f"{client:<12}{row}")
    print("(req/s, median of repeats; * = stopped at --max-seconds before --requests)")
    if "asyncpool" in clients and "httpx" in clients:
        ratios = []
        for c in levels:
            a, p = _median(results["asyncpool", c]), _median(results["httpx", c])
            ratios.append(f"{a / p:.2f}x" if a and p else "n/a")
        print(f"{'asyncpool/httpx':<12}" + "".join(f"{r:>{width}}" for r in ratios))
    for key, note in notes.items():
        print(f"note: {key}: {note}")
    for client in asked:
        if client in NO_HTTP2:
            print(f"note: {client}: no HTTP/2 worker in bench_h2.py, not run")
    print(f"# total {time.perf_counter() - started:.1f}s")

    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({f"{k}@{c}": v for (k, c), v in results.items()}, indent=2)
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", default=DEFAULT_CLIENTS, help=f"comma list of {ALL_CLIENTS}")
    p.add_argument("--concurrency", default="10,100", help="comma list of concurrency levels")
    p.add_argument("--requests", type=int, default=5000, help="timed requests per cell")
    add_run_options(p)
    p.add_argument("--url", default=None, help="benchmark this https URL instead of starting nginx")
    p.add_argument(
        "--ca-file", default=None, help="with --url: CA certificates (PEM) that trust the server"
    )
    add_output_and_worker_options(p, ALL_CLIENTS)
    args = p.parse_args(argv)
    if args.worker:
        if not args.url:
            p.error("--worker needs --url")
        args.concurrency_one = int(args.concurrency)
        args.requests_one = args.requests
    return args


if __name__ == "__main__":
    ns = parse_args()
    sys.exit(worker(ns) if ns.worker else main(ns))
