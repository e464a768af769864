"""The whole benchmark suite in one run: one table of req/s, the ratios and the project's targets.

    python benchmarks/run_all.py                 # everything, 5 repeats (about 12 minutes)
    python benchmarks/run_all.py --quick         # a smoke run: 1 repeat, short cells (under 2 minutes)
    python benchmarks/run_all.py --workloads small,h2 --clients asyncpool+speedups,go --repeat 5
    nox -s bench                                 # installs -e ., the dev group, aiosonic, httpx[http2]

Workloads (`--workloads`, comma list):

    small   GET /small (12-byte body) over HTTP/1.1 keep-alive at c = 1, 10, 100, 1000
            (httpx+asyncpool and httpx+noio at c = 10, 100 only)
    mib     GET /1mb.bin (1 MiB body, read in full, length checked) at c = 4
    tls     GET /small over HTTP/1.1 + TLS (http/1.1 by ALPN) at c = 10, 100 (asyncpool only)
    h2      GET /small over HTTP/2 + TLS at c = 10, 100 (asyncpool, httpx and Go)
    trio    GET /small at c = 100 with asyncpool on trio (next to asyncpool on asyncio)
    import  `import asyncpool` and `import httpx`: -X importtime's cumulative time, median over
            fresh interpreters (--import-runs per repeat)

Clients: asyncpool (Transport, h11 parser), asyncpool+speedups ("the Transport": httptools
parser), client (asyncpool.Client, httptools), httpx, httpx+asyncpool (httpx over
asyncpool.httpx.HTTPXTransport, httptools), httpx+noio (httpx over a transport without I/O:
httpx's ceiling), aiohttp, aiosonic, raw (hand-written asyncio streams, the Python floor) and go
(Go's net/http, benchmarks/go/client.go, built once per run when `go` is installed: the machine's
limit). One private nginx (tests/nginx.py), with a plain and a TLS server, runs pinned to one
CPU; every (workload, client) cell runs in a fresh process pinned to another CPU, through the
worker modes of bench_http1.py and bench_h2.py or the Go client. Repeats are the outer loop; the
table shows the median of the repeats.

Targets (issue 24), ratios of medians from this run ("Transport" = asyncpool+speedups, "h11" =
asyncpool, "Client" = client):

    Transport / raw at c = 10 and 100                       >= 0.8
    Transport c=1000 / c=100                                >= 0.9
    Client / Transport at c = 10 and 100                    >= 0.9
    httpx+asyncpool / httpx+noio at c = 10 and 100          >= 0.8
    HTTP/2 c=100: asyncpool / httpx                         >= 10x
    HTTP/2 c=100 asyncpool / HTTP/1.1+TLS c=100 Transport   >= 0.5
    Transport c=100: trio / asyncio                         >= 0.8
    1 MiB c=4: Transport / raw                              >= 0.9
    h11 / aiohttp at c = 10 and 100                         >= 1.5x
    import asyncpool / import httpx                         <= 1.0
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_http1 import SPEEDUPS_CLIENTS, _cpus, raise_nofile_limit, run_worker  # noqa: E402
from bench_import import import_time, median_ms  # noqa: E402

TRANSPORT = "asyncpool+speedups"  # "the Transport" of the targets: asyncpool on httptools
CLIENTS = (
    "asyncpool",
    TRANSPORT,
    "client",
    "httpx",
    "httpx+asyncpool",
    "httpx+noio",
    "aiohttp",
    "aiosonic",
    "raw",
    "go",
)
# Every level of the 12-byte workload and the 1 MiB one.
H1_CLIENTS = ("asyncpool", TRANSPORT, "client", "httpx", "aiohttp", "aiosonic", "raw", "go")
MIB_CLIENTS = ("asyncpool", TRANSPORT, "httpx", "aiohttp", "aiosonic", "raw", "go")
HTTPX_OVER = ("httpx+asyncpool", "httpx+noio")  # at HTTPX_LEVELS only
TLS_CLIENTS = ("asyncpool", TRANSPORT)
H2_CLIENTS = ("asyncpool", "httpx", "go")
TRIO_CLIENTS = ("asyncpool", TRANSPORT)
ALL_WORKLOADS = ("small", "mib", "tls", "h2", "trio", "import")
SMALL_LEVELS = (1, 10, 100, 1000)
HTTPX_LEVELS = (10, 100)
MIB_LEVEL = 4
TLS_LEVELS = (10, 100)
H2_LEVELS = (10, 100)
TRIO_LEVEL = 100
IMPORT_MODULES = ("asyncpool", "httpx")
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
    concurrency: int
    requests: int
    clients: tuple[str, ...]
    backend: str = "asyncio"
    body_length: int | None = None  # None: the 12-byte body, compared in full
    tls: bool = False
    http2: bool = False

    def family(self, client: str) -> str:
        """What runs the cell: a worker script, or the Go client (a skip applies to all its
        cells)."""
        if client == "go":
            return "go"
        return "bench_h2.py" if self.http2 else "bench_http1.py"


def _rows(args: argparse.Namespace, clients: list[str]) -> list[Row]:
    workloads = [s.strip() for s in args.workloads.split(",") if s.strip()]
    unknown = set(workloads) - set(ALL_WORKLOADS)
    if unknown:
        sys.exit(f"unknown workloads: {', '.join(sorted(unknown))} (known: {ALL_WORKLOADS})")

    def chosen(*names: str) -> tuple[str, ...]:
        return tuple(k for k in CLIENTS if k in names and k in clients)

    def n(c: int) -> int:
        # A second or two per cell for the fast clients (~25k req/s), so that one slow patch of
        # this shared VM weighs less in a cell (at 16,000 requests a cell took half a second,
        # and the ratios of two cells moved 2x repeat by repeat).
        return args.requests or (12000 if c == 1 else max(48000, 30 * c))

    # Over TLS both rows time the same count, as the h2 / h1+TLS target compares them.
    tls_requests = args.requests or 8000

    rows: list[Row] = []
    if "small" in workloads:
        for c in SMALL_LEVELS:
            extra = HTTPX_OVER if c in HTTPX_LEVELS else ()
            rows.append(Row(f"small@{c}", f"GET 12 B  c={c}", c, n(c), chosen(*H1_CLIENTS, *extra)))
    if "mib" in workloads:
        rows.append(
            Row(
                f"mib@{MIB_LEVEL}",
                f"GET 1 MiB c={MIB_LEVEL}",
                MIB_LEVEL,
                args.mib_requests,
                chosen(*MIB_CLIENTS),
                body_length=ONE_MIB,
            )
        )
    if "tls" in workloads:
        rows += [
            Row(f"tls@{c}", f"h1+TLS    c={c}", c, tls_requests, chosen(*TLS_CLIENTS), tls=True)
            for c in TLS_LEVELS
        ]
    if "h2" in workloads:
        rows += [
            Row(
                f"h2@{c}",
                f"h2+TLS    c={c}",
                c,
                tls_requests,
                chosen(*H2_CLIENTS),
                tls=True,
                http2=True,
            )
            for c in H2_LEVELS
        ]
    if "trio" in workloads:
        rows.append(
            Row(
                f"trio@{TRIO_LEVEL}",
                f"trio      c={TRIO_LEVEL}",
                TRIO_LEVEL,
                n(TRIO_LEVEL),
                chosen(*TRIO_CLIENTS),
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


def build_go_client(directory: str) -> tuple[str | None, str]:
    """Build benchmarks/go/client.go into `directory`: (the binary, its Go version), or (None,
    why not). Nothing is downloaded: stdlib only, GOPROXY=off, and GOPATH and GOCACHE are
    private to this run."""
    go = shutil.which("go")
    if go is None:
        return None, "go not installed: the Go column is skipped (apt-get install golang-go)"
    env = {
        **os.environ,
        "GOPATH": str(Path(directory) / "gopath"),
        "GOCACHE": str(Path(directory) / "gocache"),
        "GOFLAGS": "-buildvcs=false",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
    }
    binary = str(Path(directory) / "client")
    try:
        proc = subprocess.run(
            [go, "build", "-o", binary, str(HERE / "go" / "client.go")],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        version = subprocess.run(
            [go, "version"], capture_output=True, text=True, timeout=60, env=env
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"go build failed: {e}"
    if proc.returncode != 0:
        return None, f"go build failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    return binary, version


def _run_cell(
    args: argparse.Namespace,
    row: Row,
    client: str,
    server: Any,
    ca_file: str | None,
    cpu: int | None,
    go_binary: str | None,
) -> dict[str, Any]:
    url = (
        server.tls_url("/small")
        if row.tls
        else server.url("/1mb.bin" if row.body_length else "/small")
    )
    # Warm-up and timed phase each stop at --max-seconds; the rest is start-up and drain.
    timeout = 2 * args.max_seconds + 120
    if client == "go":
        assert go_binary is not None
        cmd = [
            go_binary,
            "-url",
            url,
            "-concurrency",
            str(row.concurrency),
            "-requests",
            str(row.requests),
            "-max-seconds",
            str(args.max_seconds),
        ]
        if row.body_length is not None:
            cmd += ["-body-length", str(row.body_length)]
        if row.tls and ca_file:
            cmd += ["-ca-file", ca_file]
        if row.http2:
            cmd.append("-http2")
        # One OS thread runs Go code, as one runs each Python worker's.
        return run_worker(cmd, timeout, cpu=cpu, env={**os.environ, "GOMAXPROCS": "1"})
    cmd = [
        sys.executable,
        str(HERE / row.family(client)),
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
    return run_worker(cmd, timeout)


# ====================================================================== report


def _median(cell: list[dict[str, Any]]) -> float | None:
    rps = [r["rps"] for r in cell if "rps" in r]
    return statistics.median(rps) if rps else None


def _median_cpu(cell: list[dict[str, Any]]) -> float | None:
    """Requests per second of the worker's CPU time (user + system), median of the runs."""
    rates = [r["requests"] / r["cpu_seconds"] for r in cell if r.get("cpu_seconds")]
    return statistics.median(rates) if rates else None


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


class Target(NamedTuple):
    label: str
    value: float | None
    goal: float
    at_most: bool = False  # the value must be <= goal (import time), not >=
    # The lowest and highest of the ratios repeat by repeat (each repeat's two cells), when
    # both cells ran every repeat: how much the draw moves the ratio of medians.
    spread: tuple[float, float] | None = None
    # The same ratio in requests per CPU-second of each cell's process: what the host's other
    # guests took from the wall clock does not count in it (None: a cell without the figure).
    cpu_value: float | None = None

    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.at_most else self.value >= self.goal


class Report:
    def __init__(self, rows: list[Row], results: dict[tuple[str, str], list[dict[str, Any]]]):
        self.rows = {r.key: r for r in rows}
        self.results = results
        self.once: set[tuple[str, str]] = set()  # cells run once only (too slow to repeat)

    def median(self, key: str, client: str) -> float | None:
        return _median(self.results.get((key, client), []))

    def ratio(self, key: str, client: str, peer_key: str, peer: str) -> float | None:
        return _ratio(self.median(key, client), self.median(peer_key, peer))

    def cpu_ratio(self, key: str, client: str, peer_key: str, peer: str) -> float | None:
        mine = _median_cpu(self.results.get((key, client), []))
        return _ratio(mine, _median_cpu(self.results.get((peer_key, peer), [])))

    def spread(self, key: str, client: str, peer_key: str, peer: str) -> tuple[float, float] | None:
        """The lowest and highest ratio of the two cells' runs of the same repeat."""
        mine = [r.get("rps") for r in self.results.get((key, client), [])]
        theirs = [r.get("rps") for r in self.results.get((peer_key, peer), [])]
        if len(mine) < 2 or len(mine) != len(theirs) or not all(mine) or not all(theirs):
            return None
        ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
        return min(ratios), max(ratios)

    def import_ms(self, module: str) -> float | None:
        return median_ms(self.results.get(("import", module), []))

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
        if (row.family(client), client) in skipped:
            return "skipped"
        return "error" if runs else "-"

    def print_table(self, skipped: set[tuple[str, str]]) -> None:
        shown = [k for k in CLIENTS if any(k in row.clients for row in self.rows.values())]
        width = {k: max(9, len(k) + 2) for k in shown}
        print(f"{'workload':<16}" + "".join(f"{k:>{width[k]}}" for k in shown))
        for row in self.rows.values():
            cells = "".join(f"{self.cell(row, k, skipped):>{width[k]}}" for k in shown)
            print(f"{row.label:<16}{cells}")
        print(
            "(req/s, median of repeats; * = some repeat stopped at --max-seconds before its "
            "requests;\n ~ = run once: its first run took over --slow-cell seconds; - = not run)"
        )

    def print_ratios(self) -> None:
        print()
        levels = [c for c in SMALL_LEVELS if f"small@{c}" in self.rows]
        if levels:
            print(f"{'GET 12 B ratio':<40}" + "".join(f"{'c=' + str(c):>9}" for c in levels))
            for ours, peer in (
                (TRANSPORT, "raw"),
                (TRANSPORT, "go"),
                ("raw", "go"),
                ("client", TRANSPORT),
                ("httpx+asyncpool", "httpx+noio"),
                ("httpx+asyncpool", "httpx"),
                ("asyncpool", "aiohttp"),
                ("asyncpool", "httpx"),
                (TRANSPORT, "aiohttp"),
                (TRANSPORT, "aiosonic"),
            ):
                values = [self.ratio(f"small@{c}", ours, f"small@{c}", peer) for c in levels]
                if any(v is not None for v in values):
                    cells = "".join(f"{_x(v):>9}" for v in values)
                    print(f"{ours + '/' + peer:<40}{cells}")
        lines: list[tuple[str, float | None]] = []
        if "small@1000" in self.rows and "small@100" in self.rows:
            # Every client's, not only ours: the raw floor's own ratio shows what the machine's
            # memory takes from a thousand connections before any client code runs.
            lines += [
                (f"{k} c=1000/c=100", self.ratio("small@1000", k, "small@100", k)) for k in CLIENTS
            ]
        mib = f"mib@{MIB_LEVEL}"
        lines += [
            (f"1 MiB c={MIB_LEVEL} {ours}/{peer}", self.ratio(mib, ours, mib, peer))
            for ours, peer in (
                (TRANSPORT, "raw"),
                ("asyncpool", "raw"),
                (TRANSPORT, "aiohttp"),
                ("asyncpool", "aiohttp"),
                (TRANSPORT, "go"),
                ("raw", "go"),
            )
        ]
        for c in TLS_LEVELS:  # what TLS costs the Transport
            lines.append(
                (
                    f"h1+TLS/plain c={c} {TRANSPORT}",
                    self.ratio(f"tls@{c}", TRANSPORT, f"small@{c}", TRANSPORT),
                )
            )
        for c in H2_LEVELS:
            h2 = f"h2@{c}"
            lines += [
                (f"h2 c={c} asyncpool/httpx", self.ratio(h2, "asyncpool", h2, "httpx")),
                (f"h2 c={c} asyncpool/go", self.ratio(h2, "asyncpool", h2, "go")),
                (
                    f"h2 c={c} asyncpool/h1+TLS Transport",
                    self.ratio(h2, "asyncpool", f"tls@{c}", TRANSPORT),
                ),
            ]
        trio = f"trio@{TRIO_LEVEL}"
        lines += [
            (f"{k} trio/asyncio c={TRIO_LEVEL}", self.ratio(trio, k, f"small@{TRIO_LEVEL}", k))
            for k in TRIO_CLIENTS
        ]
        for label, value in lines:
            if value is not None:
                print(f"{label:<40}{_x(value):>9}")

    def print_imports(self) -> None:
        runs = [
            sum("seconds" in r for r in self.results.get(("import", m), [])) for m in IMPORT_MODULES
        ]
        if not any(runs):
            return
        print()
        print(f"import time (ms: -X importtime cumulative, median of {max(runs)} interpreters)")
        for module in IMPORT_MODULES:
            ms = self.import_ms(module)
            print(f"  {module:<34}{'n/a' if ms is None else f'{ms:.1f}':>9}")

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
        print(f"{'GET 12 B time in the collector':<40}" + "".join(f"{f'c={c}':>9}" for c in levels))
        for client in CLIENTS:
            shares = [self.collector_share(f"small@{c}", client) for c in levels]
            if any(v is not None for v in shares):
                cells = "".join(f"{'n/a' if v is None else f'{v:.1%}':>9}" for v in shares)
                print(f"{client:<40}{cells}")

    def print_cpu(self) -> None:
        levels = [c for c in SMALL_LEVELS if f"small@{c}" in self.rows]
        if not levels:
            return
        print()
        title = "GET 12 B CPU time a request (µs)"
        print(f"{title:<40}" + "".join(f"{f'c={c}':>9}" for c in levels))
        for client in CLIENTS:
            rates = [_median_cpu(self.results.get((f"small@{c}", client), [])) for c in levels]
            if any(rates):
                cells = "".join(f"{'n/a' if not v else f'{1e6 / v:.1f}':>9}" for v in rates)
                print(f"{client:<40}{cells}")

    def targets(self) -> list[Target]:
        """The issue's targets, all ratios of medians of this run ("Transport": asyncpool on
        httptools; "h11": asyncpool on h11)."""

        def t(label: str, key: str, client: str, peer_key: str, peer: str, goal: float) -> Target:
            value = self.ratio(key, client, peer_key, peer)
            spread = self.spread(key, client, peer_key, peer)
            cpu = self.cpu_ratio(key, client, peer_key, peer)
            return Target(label, value, goal, spread=spread, cpu_value=cpu)

        out = [
            t(f"c={c} Transport/raw", f"small@{c}", TRANSPORT, f"small@{c}", "raw", 0.8)
            for c in (10, 100)
        ]
        out.append(
            t("Transport c=1000/c=100", "small@1000", TRANSPORT, "small@100", TRANSPORT, 0.9)
        )
        out += [
            t(f"c={c} Client/Transport", f"small@{c}", "client", f"small@{c}", TRANSPORT, 0.9)
            for c in (10, 100)
        ]
        out += [
            t(
                f"c={c} httpx+asyncpool/httpx+noio",
                f"small@{c}",
                "httpx+asyncpool",
                f"small@{c}",
                "httpx+noio",
                0.8,
            )
            for c in (10, 100)
        ]
        out += [
            t("h2 c=100 asyncpool/httpx", "h2@100", "asyncpool", "h2@100", "httpx", 10.0),
            t(
                "h2 c=100 asyncpool/h1+TLS Transport",
                "h2@100",
                "asyncpool",
                "tls@100",
                TRANSPORT,
                0.5,
            ),
            t(
                f"Transport trio/asyncio c={TRIO_LEVEL}",
                f"trio@{TRIO_LEVEL}",
                TRANSPORT,
                f"small@{TRIO_LEVEL}",
                TRANSPORT,
                0.8,
            ),
            t(
                f"1 MiB c={MIB_LEVEL} Transport/raw",
                f"mib@{MIB_LEVEL}",
                TRANSPORT,
                f"mib@{MIB_LEVEL}",
                "raw",
                0.9,
            ),
        ]
        out += [
            t(f"c={c} h11/aiohttp", f"small@{c}", "asyncpool", f"small@{c}", "aiohttp", 1.5)
            for c in (10, 100)
        ]
        out.append(
            Target(
                "import asyncpool/httpx",
                _ratio(self.import_ms("asyncpool"), self.import_ms("httpx")),
                1.0,
                at_most=True,
            )
        )
        return out

    def print_targets(self) -> None:
        print()
        print("targets (Transport = asyncpool+speedups, h11 = asyncpool; ratios of this run)")
        met = total = 0
        for target in self.targets():
            ok = target.met()
            if ok is None:
                mark = "[n/a]    "
            else:
                total += 1
                met += ok
                mark = "[met]    " if ok else "[NOT MET]"
            goal = f"{'<=' if target.at_most else '>='} {target.goal:g}x"
            spread = target.spread
            drawn = (
                "" if spread is None else f"   (repeat by repeat {spread[0]:.2f}-{spread[1]:.2f})"
            )
            if target.cpu_value is not None:
                drawn += f"  CPU time {_x(target.cpu_value)}"
            print(f"  {mark} {target.label + ' ' + goal:<44} {_x(target.value):>9}{drawn}")
        print(f"  {met} of {total} measured targets met")


# ====================================================================== main


def main(args: argparse.Namespace) -> int:
    clients = [s.strip() for s in args.clients.split(",") if s.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        sys.exit(f"unknown clients: {', '.join(sorted(unknown))} (known: {CLIENTS})")
    rows = _rows(args, clients)
    workloads = {s.strip() for s in args.workloads.split(",")}
    imports = IMPORT_MODULES if "import" in workloads else ()
    if not rows and not imports:
        sys.exit("nothing to run for these --workloads and --clients")
    # SIGTERM ends the run as Ctrl-C does: through the `with` blocks, which stop nginx, kill the
    # running worker and remove the temporary files (a run in the background ignores SIGINT).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    server_cpu, client_cpu = _cpus(args.pin)
    nofile = raise_nofile_limit()  # before nginx starts: it inherits the limit
    top = max((r.concurrency for r in rows), default=0)
    if nofile and nofile < top + 64:
        print(f"# warning: only {nofile} open files allowed; c={top} may fail", flush=True)

    results: dict[tuple[str, str], list[dict[str, Any]]] = {
        (row.key, k): [] for row in rows for k in row.clients
    }
    results.update({("import", m): [] for m in imports})
    skipped: dict[tuple[str, str], str] = {}  # (family, client) -> why
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
    with contextlib.ExitStack() as stack:
        go_binary = go_version = None
        if any("go" in row.clients for row in rows):
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncpool-bench-go-"))
            go_binary, go_version = build_go_client(tmp)
            if go_binary is None:
                skipped["go", "go"] = go_version
            else:
                print(f"# go client: {go_version}, GOMAXPROCS=1", flush=True)
        for module in imports:
            import_time(module)  # writes the bytecode caches; not counted
        server, ca_file = stack.enter_context(_server(server_cpu, any(r.tls for r in rows)))
        for rep in range(args.repeat):
            for row in rows:
                for client in row.clients:
                    if (row.family(client), client) in skipped or (row.key, client) in once:
                        continue
                    t0 = time.perf_counter()
                    r = _run_cell(args, row, client, server, ca_file, client_cpu, go_binary)
                    r["wall"] = round(time.perf_counter() - t0, 2)
                    if r["wall"] > args.slow_cell and "rps" in r:
                        # httpx at c=1000 blocks its event loop for half a minute while it opens
                        # its connections, past any time cap: once is enough.
                        once.add((row.key, client))
                    results[row.key, client].append(r)
                    if "skipped" in r:
                        skipped[row.family(client), client] = r["skipped"]
                    elif "error" in r:
                        errors[f"{client} {row.label}"] = r["error"]
                    if args.verbose:
                        print(f"  rep {rep + 1} {row.label:<16} {client:<19} {r}", flush=True)
            # A few fresh interpreters per repeat, modules alternating: drift touches both alike.
            for _ in range(args.import_runs):
                for module in imports:
                    r = import_time(module, client_cpu)
                    results["import", module].append(r)
                    if "seconds" not in r:
                        errors[f"import {module}"] = r.get("skipped") or r.get("error", "?")
                    if args.verbose:
                        print(f"  rep {rep + 1} import {module:<19} {r}", flush=True)
            print(
                f"# repeat {rep + 1}/{args.repeat} done, {time.perf_counter() - started:.0f}s",
                flush=True,
            )

    report = Report(rows, results)
    report.once = once
    print()
    if rows:
        report.print_table(set(skipped))
        report.print_ratios()
        report.print_collector()
        report.print_cpu()
    report.print_imports()
    report.print_targets()
    print()
    for (family, client), why in skipped.items():
        print(f"note: {client} ({family}) skipped: {why}")
    for key, why in errors.items():
        print(f"note: {key}: {why}")
    # The parser each asyncpool client really ran on, as the workers report it.
    wanted = {"asyncpool": "h11", **dict.fromkeys(SPEEDUPS_CLIENTS, "httptools")}
    for client, want in wanted.items():
        seen = {
            str(r.get("parser"))
            for row in rows
            if not row.http2 and client in row.clients
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
                    "go": go_version,
                    "cpus": {"nginx": server_cpu, "client": client_cpu},
                    "results": {f"{key}/{k}": v for (key, k), v in results.items()},
                    "import_ms": {m: report.import_ms(m) for m in imports},
                    "targets": [
                        {
                            "target": t.label,
                            "value": t.value,
                            "goal": t.goal,
                            "at_most": t.at_most,
                            "met": t.met(),
                            "spread": t.spread,
                            "cpu_ratio": t.cpu_value,
                        }
                        for t in report.targets()
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
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"comma list of {CLIENTS}")
    p.add_argument("--repeat", type=int, default=5, help="runs per cell; the median is shown")
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="timed requests per 12-byte cell (default: 12000 at c=1, else max(48000, 30 * c); "
        "8000 over TLS, HTTP/1.1 and HTTP/2)",
    )
    p.add_argument("--mib-requests", type=int, default=3000, help="timed requests per 1 MiB cell")
    p.add_argument(
        "--import-runs",
        type=int,
        default=3,
        help="fresh interpreters per module and repeat for the import workload",
    )
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
        help="a smoke run: 1 repeat, 500 requests (100 of 1 MiB), --max-seconds 0.5, "
        "5 interpreters per module",
    )
    p.add_argument("--json-out", default=None, help="also write all raw results to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 1
        args.requests = args.requests or 500
        args.mib_requests = 100
        args.max_seconds = 0.5
        args.import_runs = 5
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
