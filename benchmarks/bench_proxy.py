"""Client throughput through an HTTP proxy: a 12-byte GET to a local nginx through a local squid.

    python benchmarks/bench_proxy.py                       # asyncpool, httpx, aiohttp; c=100; http + https
    python benchmarks/bench_proxy.py --targets http --concurrency 10,100 --repeat 5
    python benchmarks/bench_proxy.py --auth                # squid with Basic proxy credentials
    python benchmarks/bench_proxy.py --backend trio        # asyncpool on trio instead of asyncio

The main process makes a throwaway CA (trustme), starts nginx (tests/nginx.py, plain HTTP and
TLS) and squid (tests/squid.py: no cache, no access log), both pinned to one CPU, then runs every
(target, client, concurrency) cell in a fresh Python subprocess pinned to another CPU (when there
are two or more), with bench_http1.py's helpers: a warm-up, then a fixed number of requests over
C tasks, stopped at --max-seconds. Targets:

- `http`: `http://127.0.0.1:PORT/small` through the proxy: absolute-form requests on
  keep-alive connections to squid, which keeps its own connections to nginx.
- `https`: `https://127.0.0.1:TLSPORT/small` through CONNECT tunnels, TLS to nginx inside,
  HTTP/1.1 for every client (asyncpool with `http2=False`, so that all open c tunnels; `--http2`
  lets asyncpool and httpx use HTTP/2 in one tunnel instead).

Every client gets the proxy as its own option: `asyncpool.Transport(proxy=...)`,
`httpx.AsyncClient(proxy=...)`, `aiohttp` `session.get(url, proxy=...)`. An asyncpool without the
`proxy` option yet is reported as "n/a". The table shows the median req/s over the repeats, and each
client's ratio against the best peer (httpx or aiohttp) measured in the same run.
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
    raise_nofile_limit,
    run_worker,
)

ALL_CLIENTS = ("asyncpool", "httpx", "aiohttp")
PEERS = ("httpx", "aiohttp")
ALL_TARGETS = ("http", "https")


def default_requests(concurrency: int) -> int:
    return max(5000, 10 * concurrency)


# ====================================================================== worker side


def _client_context(ca_file: str | None) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    return ssl.create_default_context(cafile=ca_file)


def _run_asyncpool(args: argparse.Namespace, c: int, n: int) -> dict[str, Any]:
    try:
        import anyio

        import asyncpool
    except ImportError as e:
        raise Skip(f"asyncpool not importable: {e}") from e
    options: dict[str, Any] = {"max_idle_conns": max(100, c), "http2": args.http2}
    context = _client_context(args.ca_file)
    if context is not None:
        options["tls_config"] = context
    try:
        pool_ = asyncpool.Transport(proxy=args.proxy, **options)
    except TypeError as e:
        raise Skip(f"n/a: Transport has no proxy option yet ({e})") from e
    expected_version = "HTTP/2" if args.http2 and args.url.startswith("https:") else "HTTP/1.1"

    async def main() -> dict[str, Any]:
        async with pool_ as pool:

            async def one() -> None:
                resp = await pool.round_trip(asyncpool.Request("GET", args.url))
                body = await resp.aread()
                if resp.http_version != expected_version:
                    raise RuntimeError(f"{resp.http_version}, expected {expected_version}")
                _check(resp.status_code, body)

            result = await _drive(one, c, n, args.max_seconds, ANYIO_TASKS)
            result["dials"] = pool.stats().dials
            return result

    result: dict[str, Any] = anyio.run(main, backend=args.backend)
    return result


async def _run_httpx(args: argparse.Namespace, c: int, n: int) -> dict[str, Any]:
    try:
        import httpx
    except ImportError as e:
        raise Skip(str(e)) from e
    if args.http2:
        try:
            import h2  # noqa: F401
        except ImportError as e:
            raise Skip(f"{e} (pip install 'httpx[http2]')") from e
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    context = _client_context(args.ca_file)
    async with httpx.AsyncClient(
        proxy=args.proxy, limits=limits, verify=context or True, http2=args.http2
    ) as client:

        async def one() -> None:
            r = await client.get(args.url)
            _check(r.status_code, r.content)

        return await _drive(one, c, n, args.max_seconds, ASYNCIO_TASKS)


async def _run_aiohttp(args: argparse.Namespace, c: int, n: int) -> dict[str, Any]:
    try:
        import aiohttp
    except ImportError as e:
        raise Skip(str(e)) from e
    context = _client_context(args.ca_file)
    connector = aiohttp.TCPConnector(limit=c, ssl=context if context is not None else True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.get(args.url, proxy=args.proxy) as r:
                _check(r.status, await r.read())

        return await _drive(one, c, n, args.max_seconds, ASYNCIO_TASKS)


def worker(args: argparse.Namespace) -> int:
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    raise_nofile_limit()
    c = int(args.concurrency)
    n = args.requests or default_requests(c)
    try:
        if args.worker == "asyncpool":
            result = _run_asyncpool(args, c, n)
        else:
            runner = {"httpx": _run_httpx, "aiohttp": _run_aiohttp}[args.worker]
            result = asyncio.run(runner(args, c, n))
    except Skip as e:
        print(json.dumps({"skipped": str(e)}))
        return 0
    print(json.dumps(result))
    return 0


# ====================================================================== main side


@contextlib.contextmanager
def _servers(
    args: argparse.Namespace, cpu: int | None
) -> Iterator[tuple[dict[str, str], str, str]]:
    """nginx (plain + TLS) and squid; yields ({target: url}, proxy url, CA file)."""
    from tests.nginx import nginx_binary, run_nginx, tls_files_from_trustme
    from tests.squid import run_squid, squid_binary

    if nginx_binary() is None:
        sys.exit("nginx not found: apt-get install nginx-light")
    if squid_binary() is None:
        sys.exit("squid not found: apt-get install squid")
    try:
        import trustme
    except ImportError:
        sys.exit("trustme not installed (pip install trustme; it is in the dev group)")
    ca = trustme.CA()
    with tempfile.TemporaryDirectory(prefix="asyncpool-bench-proxy-") as tmp:
        files = tls_files_from_trustme(ca.issue_cert("127.0.0.1"), tmp)
        ca_file = os.path.join(tmp, "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        auth = ("bench", "bench-password") if args.auth else None
        with (
            run_nginx(http2_tls=files, cpu=cpu) as nginx,
            run_squid(auth=auth, access_log=False) as squid,
        ):
            if cpu is not None and squid.pid is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(squid.pid, {cpu})
            urls = {"http": nginx.url("/small"), "https": nginx.tls_url("/small")}
            yield urls, squid.url, ca_file


def _run_cell(
    args: argparse.Namespace,
    url: str,
    proxy: str,
    ca_file: str,
    client: str,
    c: int,
    cpu: int | None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        client,
        "--url",
        url,
        "--proxy",
        proxy,
        "--ca-file",
        ca_file,
        "--concurrency",
        str(c),
        "--requests",
        str(args.requests or default_requests(c)),
        "--max-seconds",
        str(args.max_seconds),
        "--backend",
        args.backend,
    ]
    if args.http2:
        cmd.append("--http2")
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    return run_worker(cmd, args.max_seconds + 120)


def main(args: argparse.Namespace) -> int:
    clients = [s.strip() for s in args.clients.split(",") if s.strip()]
    targets = [s.strip() for s in args.targets.split(",") if s.strip()]
    if set(clients) - set(ALL_CLIENTS) or set(targets) - set(ALL_TARGETS):
        sys.exit(f"known clients: {', '.join(ALL_CLIENTS)}; targets: {', '.join(ALL_TARGETS)}")
    levels = [int(s) for s in args.concurrency.split(",") if s.strip()]
    server_cpu, client_cpu = _cpus(args.pin)
    raise_nofile_limit()
    started = time.perf_counter()
    columns = [(t, c) for t in targets for c in levels]
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {
        (k, t, c): [] for k in clients for t, c in columns
    }
    notes: dict[str, str] = {}
    with _servers(args, server_cpu) as (urls, proxy, ca_file):
        print(
            f"# through squid {proxy}  python {sys.version.split()[0]}  cpus: nginx+squid="
            f"{server_cpu} client={client_cpu}  repeats={args.repeat}  "
            f"asyncpool backend={args.backend}  http2={args.http2}",
            flush=True,
        )
        for rep in range(args.repeat):
            for client in clients:
                for target, c in columns:
                    if client in notes:
                        continue
                    r = _run_cell(args, urls[target], proxy, ca_file, client, c, client_cpu)
                    results[client, target, c].append(r)
                    if "skipped" in r:
                        notes[client] = r["skipped"]
                    elif "error" in r:
                        notes[f"{client} {target} c={c}"] = r["error"]
                    if args.verbose:
                        print(f"  rep {rep + 1} {client:<10} {target} c={c:<4} {r}", flush=True)

    width = 16
    print()
    print(f"{'client':<22}" + "".join(f"{t + ' c=' + str(c):>{width}}" for t, c in columns))
    for client in clients:
        cells = []
        for t, c in columns:
            cell = results[client, t, c]
            text = _fmt(cell, client in notes)
            cells.append("n/a" if text == "skipped" and client == "asyncpool" else text)
        print(f"{client:<22}" + "".join(f"{x:>{width}}" for x in cells))
    print("(req/s, median of repeats; * = stopped at --max-seconds before --requests)")
    for client in clients:
        ratios = []
        for t, c in columns:
            peers = [m for p in PEERS if p in clients for m in [_median(results[p, t, c])] if m]
            mine = _median(results[client, t, c])
            ratios.append(f"{mine / max(peers):.2f}x" if mine and peers else "n/a")
        print(f"{client + ' / best peer':<22}" + "".join(f"{r:>{width}}" for r in ratios))
    for key, note in notes.items():
        print(f"note: {key}: {note}")
    print(f"# total {time.perf_counter() - started:.1f}s")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({f"{k}@{t}@{c}": v for (k, t, c), v in results.items()}, indent=2)
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", default=",".join(ALL_CLIENTS), help=f"comma list of {ALL_CLIENTS}")
    p.add_argument("--targets", default="http,https", help=f"comma list of {ALL_TARGETS}")
    p.add_argument("--concurrency", default="100", help="comma list of concurrency levels")
    p.add_argument(
        "--requests", type=int, default=None, help="timed requests per cell (max(5000, 10 * c))"
    )
    p.add_argument("--auth", action="store_true", help="squid requires Basic proxy credentials")
    p.add_argument(
        "--http2",
        action="store_true",
        help="https target: asyncpool and httpx use HTTP/2 in the tunnel (aiohttp cannot)",
    )
    add_run_options(p)
    add_output_and_worker_options(p, ALL_CLIENTS)
    # Worker mode (internal).
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)
    p.add_argument("--proxy", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ca-file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker and not (args.url and args.proxy):
        p.error("--worker needs --url and --proxy")
    return args


if __name__ == "__main__":
    ns = parse_args()
    sys.exit(worker(ns) if ns.worker else main(ns))
