"""The whole benchmark suite in one run: one table of req/s, the ratios and the project's targets.

    python benchmarks/run_all.py                 # everything, 5 repeats (about 8 minutes)
    python benchmarks/run_all.py --quick         # a smoke run: 1 repeat, short cells (under a minute)
    python benchmarks/run_all.py --workloads small,h2 --clients asyncpool,aiohttp --repeat 5
    nox -s bench                                 # installs -e ., the dev group, aiosonic, httpx[http2]

Workloads (`--workloads`, comma list):

    small   GET /small (12-byte body) over HTTP/1.1 keep-alive at c = 1, 10, 100, 1000
    mib     GET /1mb.bin (1 MiB body, read in full, length checked) at c = 4
    h2      GET /small over HTTP/2 + TLS at c = 10, 100 (asyncpool and httpx only)
    trio    GET /small at c = 100 with asyncpool on trio (next to asyncpool on asyncio)

Clients: asyncpool (h11 parser), asyncpool+speedups (httptools parser), httpx, aiohttp, aiosonic
and raw (hand-written asyncio streams, the Python floor). One private nginx (tests/nginx.py), with
a plain and a TLS server, runs pinned to one CPU; every (workload, client) cell runs in a fresh
Python subprocess pinned to another CPU, through the worker modes of bench_http1.py and
bench_h2.py. Repeats are the outer loop; the table shows the median of the repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_http1 import _cpus, raise_nofile_limit, run_worker  # noqa: E402

H1_CLIENTS = ("asyncpool", "asyncpool+speedups", "httpx", "aiohttp", "aiosonic", "raw")
H2_CLIENTS = ("asyncpool", "httpx")
ALL_WORKLOADS = ("small", "mib", "h2", "trio")
SMALL_LEVELS = (1, 10, 100, 1000)
MIB_LEVEL = 4
H2_LEVELS = (10, 100)
TRIO_LEVEL = 100
ONE_MIB = 1 << 20
VERSIONS = (
    "asyncpool",
    "anyio",
    "h11",
    "httptools",
    "h2",
    "trio",
    "aiohttp",
    "aiosonic",
    "httpx",
    "httpcore",
)


@dataclass(frozen=True)
class Row:
    """One line of the table: a workload at one concurrency, run for some clients."""

    key: str  # e.g. "small@100": the JSON key and what the ratios look up
    label: str
    script: str  # the worker: bench_http1.py or bench_h2.py
    concurrency: int
    requests: int
    clients: tuple[str, ...]
    backend: str = "asyncio"
    body_length: int | None = None  # None: the 12-byte body, compared in full
    tls: bool = False


def _rows(args: argparse.Namespace, clients: list[str]) -> list[Row]:
    workloads = [s.strip() for s in args.workloads.split(",") if s.strip()]
    unknown = set(workloads) - set(ALL_WORKLOADS)
    if unknown:
        sys.exit(f"unknown workloads: {', '.join(sorted(unknown))} (known: {ALL_WORKLOADS})")
    h1 = tuple(k for k in H1_CLIENTS if k in clients)
    h2 = tuple(k for k in H2_CLIENTS if k in clients)

    def n(c: int) -> int:
        # Three times bench_http1.py's defaults: two seconds or so per cell for the fast clients,
        # so that one slow patch of this shared VM weighs less in a cell.
        return args.requests or (6000 if c == 1 else max(16000, 10 * c))

    rows: list[Row] = []
    if "small" in workloads:
        rows += [
            Row(f"small@{c}", f"GET 12 B  c={c}", "bench_http1.py", c, n(c), h1)
            for c in SMALL_LEVELS
        ]
    if "mib" in workloads:
        rows.append(
            Row(
                f"mib@{MIB_LEVEL}",
                f"GET 1 MiB c={MIB_LEVEL}",
                "bench_http1.py",
                MIB_LEVEL,
                args.mib_requests,
                h1,
                body_length=ONE_MIB,
            )
        )
    if "h2" in workloads and h2:
        rows += [
            Row(
                f"h2@{c}",
                f"h2+TLS    c={c}",
                "bench_h2.py",
                c,
                args.requests or 8000,
                h2,
                tls=True,
            )
            for c in H2_LEVELS
        ]
    if "trio" in workloads and "asyncpool" in clients:
        rows.append(
            Row(
                f"trio@{TRIO_LEVEL}",
                f"trio      c={TRIO_LEVEL}",
                "bench_http1.py",
                TRIO_LEVEL,
                n(TRIO_LEVEL),
                ("asyncpool",),
                backend="trio",
            )
        )
    return [r for r in rows if r.clients]


# ====================================================================== running


@contextlib.contextmanager
def _server(cpu: int | None, tls: bool) -> Iterator[tuple[Any, str | None]]:
    """The private nginx (with a TLS server offering h2 when `tls`), and the CA file for it."""
    from tests.nginx import nginx_binary, run_nginx, tls_files_from_trustme

    if nginx_binary() is None:
        sys.exit("nginx not found: install it (apt-get install nginx-light)")
    if not tls:
        with run_nginx(cpu=cpu) as server:
            yield server, None
        return
    try:
        import trustme
    except ImportError:
        sys.exit("trustme is needed for the HTTP/2 workload's throwaway CA: pip install trustme")
    with tempfile.TemporaryDirectory(prefix="asyncpool-bench-") as tmp:
        ca = trustme.CA()
        ca_file = str(Path(tmp) / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        files = tls_files_from_trustme(ca.issue_cert("127.0.0.1"), tmp)
        with run_nginx(http2_tls=files, cpu=cpu) as server:
            yield server, ca_file


def _run_cell(
    args: argparse.Namespace,
    row: Row,
    client: str,
    server: Any,
    ca_file: str | None,
    cpu: int | None,
) -> dict[str, Any]:
    url = (
        server.tls_url("/small")
        if row.tls
        else server.url("/1mb.bin" if row.body_length else "/small")
    )
    cmd = [
        sys.executable,
        str(HERE / row.script),
        "--worker",
        client,
        "--url",
        url,
        "--concurrency",
        str(row.concurrency),
        "--requests",
        str(row.requests),
        "--max-seconds",
        str(args.max_seconds),
        "--backend",
        row.backend,
    ]
    if row.body_length is not None:
        cmd += ["--body-length", str(row.body_length)]
    if row.tls and ca_file:
        cmd += ["--ca-file", ca_file]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    # Warm-up and timed phase each stop at --max-seconds; the rest is start-up and drain.
    return run_worker(cmd, 2 * args.max_seconds + 120)


# ====================================================================== report


def _median(cell: list[dict[str, Any]]) -> float | None:
    rps = [r["rps"] for r in cell if "rps" in r]
    return statistics.median(rps) if rps else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def _versions() -> str:
    from tests.nginx import nginx_version

    parts = [f"python {platform.python_version()}"]
    nginx = nginx_version()
    parts.append("nginx " + (".".join(map(str, nginx)) if nginx != (0,) else "?"))
    for name in VERSIONS:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cpus{' (' + model + ')' if model else ''}, {platform.platform()}"


class Report:
    def __init__(self, rows: list[Row], results: dict[tuple[str, str], list[dict[str, Any]]]):
        self.rows = {r.key: r for r in rows}
        self.results = results
        self.once: set[tuple[str, str]] = set()  # cells run once only (too slow to repeat)

    def median(self, key: str, client: str) -> float | None:
        return _median(self.results.get((key, client), []))

    def cell(self, row: Row, client: str, skipped: set[tuple[str, str]]) -> str:
        if client not in row.clients:
            return "-"
        runs = self.results.get((row.key, client), [])
        m = _median(runs)
        if m is not None:
            marks = "*" if any(r.get("capped") for r in runs) else ""
            if (row.key, client) in self.once:
                marks += "~"
            return f"{m:,.0f}{marks}"
        if (row.script, client) in skipped:
            return "skipped"
        return "error" if runs else "-"

    def print_table(self, clients: list[str], skipped: set[tuple[str, str]]) -> None:
        shown = [k for k in H1_CLIENTS if k in clients]
        head = f"{'workload':<16}" + "".join(f"{k:>{max(10, len(k) + 2)}}" for k in shown)
        print(head)
        for row in self.rows.values():
            line = f"{row.label:<16}"
            for k in shown:
                line += f"{self.cell(row, k, skipped):>{max(10, len(k) + 2)}}"
            print(line)
        print(
            "(req/s, median of repeats; * = some repeat stopped at --max-seconds before its "
            "requests;\n ~ = run once: its first run took over --slow-cell seconds; - = not run)"
        )

    def print_ratios(self) -> None:
        print()
        levels = [c for c in SMALL_LEVELS if f"small@{c}" in self.rows]
        if levels:
            print(f"{'GET 12 B ratio':<36}" + "".join(f"{'c=' + str(c):>9}" for c in levels))
            for ours, peer in (
                ("asyncpool", "aiohttp"),
                ("asyncpool", "httpx"),
                ("asyncpool+speedups", "aiohttp"),
                ("asyncpool+speedups", "aiosonic"),
            ):
                values = [
                    _x(_ratio(self.median(f"small@{c}", ours), self.median(f"small@{c}", peer)))
                    for c in levels
                ]
                print(f"{ours + '/' + peer:<36}" + "".join(f"{v:>9}" for v in values))
        if "small@1000" in self.rows and "small@100" in self.rows:
            # Every client's, not only ours: the raw floor's own ratio shows what the machine's
            # memory takes from a thousand connections before any client code runs.
            for client in H1_CLIENTS:
                value = _ratio(self.median("small@1000", client), self.median("small@100", client))
                if value is not None:
                    print(f"{client + ' c=1000/c=100':<36}{_x(value):>9}")
        key = f"mib@{MIB_LEVEL}"
        if key in self.rows:
            for ours in ("asyncpool", "asyncpool+speedups"):
                value = _ratio(self.median(key, ours), self.median(key, "aiohttp"))
                print(f"{'1 MiB c=4 ' + ours + '/aiohttp':<36}{_x(value):>9}")
        for c in H2_LEVELS:
            if f"h2@{c}" in self.rows:
                value = _ratio(self.median(f"h2@{c}", "asyncpool"), self.median(f"h2@{c}", "httpx"))
                print(f"{f'h2 c={c} asyncpool/httpx':<36}{_x(value):>9}")
        key = f"trio@{TRIO_LEVEL}"
        if key in self.rows:
            value = _ratio(self.median(key, "asyncpool"), self.median("small@100", "asyncpool"))
            print(f"{'asyncpool trio/asyncio c=100':<36}{_x(value):>9}")

    def collector_share(self, key: str, client: str) -> float | None:
        """The median share of a cell's timed phase spent in the garbage collector."""
        shares = [
            r["gc_seconds"] / r["seconds"]
            for r in self.results.get((key, client), [])
            if r.get("seconds") and "gc_seconds" in r
        ]
        return statistics.median(shares) if shares else None

    def print_collector(self) -> None:
        levels = [c for c in (100, 1000) if f"small@{c}" in self.rows]
        if not levels:
            return
        print()
        print(f"{'GET 12 B time in the collector':<36}" + "".join(f"{f'c={c}':>9}" for c in levels))
        for client in H1_CLIENTS:
            shares = [self.collector_share(f"small@{c}", client) for c in levels]
            if any(v is not None for v in shares):
                cells = "".join(f"{'n/a' if v is None else f'{v:.1%}':>9}" for v in shares)
                print(f"{client:<36}{cells}")

    def targets(self) -> list[tuple[str, float | None, float]]:
        m = self.median
        out: list[tuple[str, float | None, float]] = []
        for c in (10, 100):
            s = f"small@{c}"
            out += [
                (f"c={c} asyncpool/aiohttp", _ratio(m(s, "asyncpool"), m(s, "aiohttp")), 1.0),
                (
                    f"c={c} asyncpool+speedups/aiohttp",
                    _ratio(m(s, "asyncpool+speedups"), m(s, "aiohttp")),
                    1.5,
                ),
                (
                    f"c={c} asyncpool+speedups/aiosonic",
                    _ratio(m(s, "asyncpool+speedups"), m(s, "aiosonic")),
                    1.2,
                ),
            ]
        mib = f"mib@{MIB_LEVEL}"
        out += [
            (
                "c=100 asyncpool/httpx",
                _ratio(m("small@100", "asyncpool"), m("small@100", "httpx")),
                15.0,
            ),
            (
                "asyncpool c=1000/c=100",
                _ratio(m("small@1000", "asyncpool"), m("small@100", "asyncpool")),
                0.9,
            ),
            ("1 MiB c=4 asyncpool/aiohttp", _ratio(m(mib, "asyncpool"), m(mib, "aiohttp")), 1.0),
            (
                "h2 c=100 asyncpool/httpx",
                _ratio(m("h2@100", "asyncpool"), m("h2@100", "httpx")),
                5.0,
            ),
            (
                "asyncpool trio/asyncio c=100",
                _ratio(m(f"trio@{TRIO_LEVEL}", "asyncpool"), m("small@100", "asyncpool")),
                0.6,
            ),
        ]
        return out

    def print_targets(self) -> None:
        print()
        print("targets")
        met = total = 0
        for label, value, goal in self.targets():
            if value is None:
                mark = "[n/a]    "
            else:
                total += 1
                ok = value >= goal
                met += ok
                mark = "[met]    " if ok else "[NOT MET]"
            print(f"  {mark} {label + ' >= ' + f'{goal:g}x':<44} {_x(value):>9}")
        print(f"  {met} of {total} measured targets met")


# ====================================================================== main


def main(args: argparse.Namespace) -> int:
    clients = [s.strip() for s in args.clients.split(",") if s.strip()]
    unknown = set(clients) - set(H1_CLIENTS)
    if unknown:
        sys.exit(f"unknown clients: {', '.join(sorted(unknown))} (known: {H1_CLIENTS})")
    rows = _rows(args, clients)
    if not rows:
        sys.exit("nothing to run for these --workloads and --clients")
    server_cpu, client_cpu = _cpus(args.pin)
    nofile = raise_nofile_limit()  # before nginx starts: it inherits the limit
    top = max(r.concurrency for r in rows)
    if nofile and nofile < top + 64:
        print(f"# warning: only {nofile} open files allowed; c={top} may fail", flush=True)

    results: dict[tuple[str, str], list[dict[str, Any]]] = {
        (row.key, k): [] for row in rows for k in row.clients
    }
    skipped: dict[tuple[str, str], str] = {}  # (script, client) -> why
    errors: dict[str, str] = {}
    once: set[tuple[str, str]] = set()  # (row key, client) cells not to repeat
    started = time.perf_counter()
    print(f"# asyncpool benchmark suite, {datetime.date.today().isoformat()}", flush=True)
    print(f"# machine: {_machine()}")
    print(f"# {_versions()}")
    print(
        f"# cpus: nginx={server_cpu} client={client_cpu}  repeats={args.repeat}  "
        f"max-seconds={args.max_seconds}  open files={nofile}",
        flush=True,
    )
    with _server(server_cpu, any(r.tls for r in rows)) as (server, ca_file):
        for rep in range(args.repeat):
            for row in rows:
                for client in row.clients:
                    if (row.script, client) in skipped or (row.key, client) in once:
                        continue
                    t0 = time.perf_counter()
                    r = _run_cell(args, row, client, server, ca_file, client_cpu)
                    r["wall"] = round(time.perf_counter() - t0, 2)
                    if r["wall"] > args.slow_cell and "rps" in r:
                        # httpx at c=1000 blocks its event loop for half a minute while it opens
                        # its connections, past any time cap: once is enough.
                        once.add((row.key, client))
                    results[row.key, client].append(r)
                    if "skipped" in r:
                        skipped[row.script, client] = r["skipped"]
                    elif "error" in r:
                        errors[f"{client} {row.label}"] = r["error"]
                    if args.verbose:
                        print(f"  rep {rep + 1} {row.label:<16} {client:<19} {r}", flush=True)
            print(
                f"# repeat {rep + 1}/{args.repeat} done, {time.perf_counter() - started:.0f}s",
                flush=True,
            )

    report = Report(rows, results)
    report.once = once
    print()
    report.print_table(clients, set(skipped))
    report.print_ratios()
    report.print_collector()
    report.print_targets()
    print()
    for (script, client), why in skipped.items():
        print(f"note: {client} ({script}) skipped: {why}")
    for key, why in errors.items():
        print(f"note: {key}: {why}")
    # The parser each asyncpool client really ran on, as the workers report it.
    for client, want in (("asyncpool", "h11"), ("asyncpool+speedups", "httptools")):
        seen = {
            str(r.get("parser"))
            for row in rows
            if row.script == "bench_http1.py" and client in row.clients
            for r in results[row.key, client]
            if "parser" in r
        }
        if seen and seen != {want}:
            print(f"note: {client} ran on parser(s) {', '.join(sorted(seen))}, not {want}")
    print(f"# total {time.perf_counter() - started:.0f}s")

    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "date": datetime.date.today().isoformat(),
                    "machine": _machine(),
                    "versions": _versions(),
                    "cpus": {"nginx": server_cpu, "client": client_cpu},
                    "results": {f"{key}/{k}": v for (key, k), v in results.items()},
                    "targets": [
                        {"target": label, "value": value, "goal": goal}
                        for label, value, goal in report.targets()
                    ],
                },
                indent=2,
            )
        )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workloads", default=",".join(ALL_WORKLOADS), help=f"comma list of {ALL_WORKLOADS}"
    )
    p.add_argument("--clients", default=",".join(H1_CLIENTS), help=f"comma list of {H1_CLIENTS}")
    p.add_argument("--repeat", type=int, default=5, help="runs per cell; the median is shown")
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="timed requests per 12-byte cell (default: 6000 at c=1, else max(16000, 10 * c); "
        "8000 over HTTP/2)",
    )
    p.add_argument("--mib-requests", type=int, default=3000, help="timed requests per 1 MiB cell")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=3.0,
        help="stop a cell's warm-up, and then its timed phase, after this long (caps slow clients)",
    )
    p.add_argument(
        "--slow-cell",
        type=float,
        default=15.0,
        help="a cell whose worker took longer than this (s) is not repeated (marked ~)",
    )
    p.add_argument(
        "--pin",
        default="split",
        choices=["split", "same", "none"],
        help="CPU pinning: nginx and client on two different CPUs (default), both on one, or none",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 repeat, 500 requests (100 of 1 MiB), --max-seconds 0.5",
    )
    p.add_argument("--json-out", default=None, help="also write all raw results to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 1
        args.requests = args.requests or 500
        args.mib_requests = 100
        args.max_seconds = 0.5
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
