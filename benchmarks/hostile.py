"""The hostile-server suite: asyncpool and its peers against servers that misbehave on purpose
(the catalogue in tests/hostile.py; benchmarks/HOSTILE.md).

    python benchmarks/hostile.py              # every case, every client (about a minute and a half)
    python benchmarks/hostile.py --json       # the same results as JSON on stdout
    python benchmarks/hostile.py --strict     # exit 1 when an asyncpool cell went wrong
    python benchmarks/hostile.py --quick      # a smoke run: the fast cases only (seconds)
    python benchmarks/hostile.py --cases gzip_bomb,h2_ping_flood --clients asyncpool/trio
    nox -s hostile                            # installs -e .[dev], then runs this; args after --

Each case's server (and a well-behaved control server of the same protocol) runs in this process;
each (case, client) runs in a fresh Python process (`--worker`), so its memory is its own: one
request to the hostile server, read in full (`aread()`), or counted chunk by chunk for a
streamed case; then one request to the control server on the same pool or client. A cell
reports the outcome (status and body size, or the exception), the tracemalloc peak during the
hostile request and what stayed allocated once the client was closed and gc'd (both over the
worker's baseline after a warm-up request), the seconds taken (the request is abandoned after
--deadline, reported as `hang`; a worker that cannot even be cancelled is killed) and whether
the next request succeeded.

Clients: asyncpool on asyncio and on trio (Transport.round_trip; asyncpool.Client for the
redirect case), httpx (its own transport; HTTP/2 with prior knowledge for the h2 cases) and
aiohttp (HTTP/1.1 cases only).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpool  # noqa: E402
from benchmarks._suite import names  # noqa: E402
from tests.hostile import CASES, CONTROL, Case, gzip_bomb, gzip_members, serve  # noqa: E402

DEADLINE = 10.0  # seconds for the hostile request, from its start to the end of its body
QUICK_DEADLINE = 5.0
NEXT_DEADLINE = 5.0  # seconds for the request to the control server after it
STUCK_GRACE = 2.0  # a worker whose request ignores its cancellation this long ends itself
PEAK_BOUND = 64 << 20  # bytes a hostile response may take at its peak
KEPT_BOUND = 1 << 20  # bytes that may stay allocated once the client is closed
JOBS = os.cpu_count() or 2  # worker processes at a time
WORKER_LIMIT = 4 << 30  # address space of a worker: a runaway one fails, not the machine
MiB = 1 << 20


# ====================================================================== clients

# fetch(url, stream) -> (status, body size, the body's first bytes)
Fetch = Callable[[str, bool], Awaitable[tuple[int, int, bytes]]]
Adapter = Callable[[Case], contextlib.AbstractAsyncContextManager[Fetch]]


async def _drain(chunks: AsyncIterator[bytes]) -> tuple[int, bytes]:
    """Count a streamed body, keeping only its first bytes."""
    size, first = 0, b""
    async for chunk in chunks:
        if size < 64:
            first += chunk[:64]
        size += len(chunk)
    return size, first[:64]


async def _body(response: Any, stream: bool) -> tuple[int, bytes]:
    """The size and first bytes of an asyncpool or httpx response's body."""
    if stream:
        return await _drain(response.aiter_bytes())
    body = await response.aread()
    return len(body), body[:64]


@contextlib.asynccontextmanager
async def _asyncpool(case: Case) -> AsyncIterator[Fetch]:
    pool = asyncpool.Transport(http2_prior_knowledge=case.protocol == "h2")
    async with pool, asyncpool.Client(transport=pool, timeout=None) as client:

        async def fetch(url: str, stream: bool) -> tuple[int, int, bytes]:
            if case.redirects:  # the Client follows them
                async with client.stream("GET", url) as response:
                    return (response.status_code, *await _body(response, stream))
            response = await pool.round_trip(asyncpool.Request("GET", url))
            async with response:
                return (response.status_code, *await _body(response, stream))

        yield fetch


@contextlib.asynccontextmanager
async def _httpx(case: Case) -> AsyncIterator[Fetch]:
    import httpx

    h2 = case.protocol == "h2"
    options: dict[str, Any] = {"follow_redirects": case.redirects, "timeout": None}
    async with httpx.AsyncClient(http1=not h2, http2=h2, **options) as client:

        async def fetch(url: str, stream: bool) -> tuple[int, int, bytes]:
            async with client.stream("GET", url) as response:
                return (response.status_code, *await _body(response, stream))

        yield fetch


@contextlib.asynccontextmanager
async def _aiohttp(case: Case) -> AsyncIterator[Fetch]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def fetch(url: str, stream: bool) -> tuple[int, int, bytes]:
            async with session.get(url, allow_redirects=case.redirects) as response:
                if stream:
                    size, first = await _drain(response.content.iter_chunked(64 << 10))
                else:
                    body = await response.read()
                    size, first = len(body), body[:64]
            return response.status, size, first

        yield fetch


def _typed_asyncpool() -> tuple[type[BaseException], ...]:
    return (asyncpool.HTTPError,)


def _typed_httpx() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.HTTPError, httpx.StreamError)


def _typed_aiohttp() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (aiohttp.ClientError,)


@dataclasses.dataclass(frozen=True)
class ClientKind:
    adapter: Adapter
    backend: str  # "asyncio" or "trio"
    typed: Callable[[], tuple[type[BaseException], ...]]  # the client's own error tree
    ours: bool  # asyncpool: gated by --strict
    http1_only: bool = False


CLIENTS = {
    "asyncpool/asyncio": ClientKind(_asyncpool, "asyncio", _typed_asyncpool, ours=True),
    "asyncpool/trio": ClientKind(_asyncpool, "trio", _typed_asyncpool, ours=True),
    "httpx": ClientKind(_httpx, "asyncio", _typed_httpx, ours=False),
    "aiohttp": ClientKind(_aiohttp, "asyncio", _typed_aiohttp, ours=False, http1_only=True),
}


# ====================================================================== one cell


@dataclasses.dataclass
class Cell:
    """One client against one case. Memory in bytes (None: not measured), `problems` what a
    careful client would not have done (empty: fine)."""

    case: str
    client: str
    status: int | None = None
    size: int | None = None
    error: str | None = None  # the exception's class, e.g. "RemoteProtocolError"
    message: str = ""
    typed: bool | None = None  # the error is of the client's own tree
    hang: bool = False
    seconds: float = 0.0
    peak: int | None = None  # tracemalloc peak during the hostile request, over the baseline
    kept: int | None = None  # still allocated after close and gc, over the baseline
    next: str = ""  # the request to the control server after it: "ok", "hang" or the error
    problems: list[str] = dataclasses.field(default_factory=list)

    def outcome(self) -> str:
        if self.hang:
            return "hang" + (f" ({self.message})" if self.message else "")
        if self.error is not None:
            return f"{self.error}: {self.message}"
        return f"{self.status} {self.size:,} B"


def judge(case: Case, cell: Cell) -> list[str]:
    """What went wrong, by the case's expectation and the suite's bounds."""
    problems = []
    if cell.hang:
        problems.append("hang")
    elif cell.error is not None:
        if not cell.typed:
            problems.append("untyped error")
        if case.expect == "ok":
            problems.append("failed")
    elif case.expect == "error":
        problems.append("wrong success")
    elif case.expect == "ok" and (cell.status, cell.size) != (200, case.size):
        problems.append(f"wrong answer ({cell.status}, {cell.size} B)")
    if cell.peak is not None and cell.peak > PEAK_BOUND:
        problems.append(f"peak > {PEAK_BOUND // MiB} MiB")
    if cell.kept is not None and cell.kept > KEPT_BOUND:
        problems.append(f"kept > {KEPT_BOUND // MiB} MiB")
    if cell.next != "ok":
        problems.append("next request failed")
    return problems


def _stuck(cell: Cell, baseline: int | None, started: float) -> None:
    """The watchdog of a worker whose request ignored its cancellation (busy in a loop without
    a checkpoint): report the hang with the memory so far, and end the process."""
    cell.hang, cell.message, cell.next = True, "not cancellable: worker ended", "-"
    cell.seconds = round(time.monotonic() - started, 3)
    if baseline is not None:
        cell.peak = tracemalloc.get_traced_memory()[1] - baseline
    cell.problems = judge(CASES[cell.case], cell)
    print(json.dumps(dataclasses.asdict(cell)), flush=True)
    os._exit(0)


async def run_cell(
    case: Case,
    client: str,
    url: str,
    control_url: str,
    deadline: float = DEADLINE,
    measure: bool = False,
) -> Cell:
    """`client` (a CLIENTS key) against `case` served at `url`, then the control server, on the
    current event loop; with `measure`, its memory by tracemalloc (started after a warm-up)."""
    cell = Cell(case.name, client)
    kind = CLIENTS[client]
    async with kind.adapter(case) as fetch:  # imports and first-use caches: not the case's
        await fetch(control_url, False)
    gc.collect()
    baseline = None
    if measure:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
    started = time.monotonic()
    async with kind.adapter(case) as fetch:
        watchdog = threading.Timer(deadline + STUCK_GRACE, _stuck, (cell, baseline, started))
        if measure:  # in a worker process of its own, which it ends
            watchdog.start()
        with anyio.move_on_after(deadline) as scope:
            try:
                cell.status, cell.size, _ = await fetch(url, case.stream)
            except Exception as exc:
                message = getattr(exc, "detail", str(exc))  # asyncpool's, without host and phase
                cell.error, cell.message = type(exc).__name__, message[:300]
                cell.typed = isinstance(exc, kind.typed())
        watchdog.cancel()
        cell.hang = scope.cancelled_caught
        cell.seconds = round(time.monotonic() - started, 3)
        if baseline is not None:
            cell.peak = tracemalloc.get_traced_memory()[1] - baseline
        with anyio.move_on_after(NEXT_DEADLINE) as next_scope:
            try:
                status, _, first = await fetch(control_url, False)
                cell.next = "ok" if (status, first) == (200, b"ok") else f"{status} {first!r}"
            except Exception as exc:
                cell.next = type(exc).__name__
        if next_scope.cancelled_caught:
            cell.next = "hang"
    gc.collect()
    if baseline is not None:
        cell.kept = max(0, tracemalloc.get_traced_memory()[0] - baseline)
        tracemalloc.stop()
    cell.problems = judge(case, cell)
    return cell


def worker(case: str, client: str, url: str, control_url: str, deadline: float) -> Cell:
    limit = resource.getrlimit(resource.RLIMIT_AS)[1]
    if limit == resource.RLIM_INFINITY or limit > WORKER_LIMIT:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_LIMIT, limit))
    run = run_cell, CASES[case], client, url, control_url, deadline, True
    return anyio.run(*run, backend=CLIENTS[client].backend)


# ====================================================================== running the cells


def _spawn(case: Case, client: str, urls: dict[str, str], deadline: float) -> Cell:
    """One worker process; killed when it outlives the deadline by far."""
    control = CONTROL[case.protocol].name
    cmd = [sys.executable, __file__, "--worker", client, "--cases", case.name]
    cmd += ["--url", urls[case.name], "--control-url", urls[control], "--deadline", str(deadline)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        try:
            proc.wait(timeout=deadline + NEXT_DEADLINE + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            cell = Cell(case.name, client, hang=True, message="worker killed", next="-")
            cell.seconds = round(time.monotonic() - started, 3)
            cell.problems = judge(case, cell)
            return cell
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode == 0 and lines:
            return Cell(**json.loads(lines[-1]))
        tail = " | ".join(err.read().strip().splitlines()[-3:])
        cell = Cell(case.name, client, error="worker", message=f"exit {proc.returncode}: {tail}")
        cell.next = "-"
        cell.problems = judge(case, cell)
        return cell


def run_cells(
    cases: Sequence[Case], clients: Sequence[str], deadline: float, jobs: int
) -> list[Cell]:
    """Serve every case (and the controls) from a thread of this process, and run the cells in
    `jobs` worker processes at a time; the cells in the order of cases, then clients."""
    pairs = [
        (case, client)
        for case in cases
        for client in clients
        if not (case.protocol == "h2" and CLIENTS[client].http1_only)
    ]
    gzip_bomb(), gzip_members()  # built before serving, not in a server's first connection
    served = {*cases, *CONTROL.values()}
    with anyio.from_thread.start_blocking_portal() as portal, contextlib.ExitStack() as stack:
        urls = {
            c.name: stack.enter_context(portal.wrap_async_context_manager(serve(c))) for c in served
        }
        with ThreadPoolExecutor(jobs) as executor:
            futures = [executor.submit(_spawn, c, client, urls, deadline) for c, client in pairs]
            return [future.result() for future in futures]


# ====================================================================== report


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:.1f}"


def table(cells: Sequence[Cell]) -> str:
    """One row per (case, client): outcome, peak and kept memory, seconds, the next request,
    and what went wrong; then each case's description."""
    head = (
        f"{'case':<21}{'client':<19}{'outcome':<46}{'peak MiB':>9}{'kept MiB':>9}"
        f"{'seconds':>8}  {'next':<10}problems"
    )
    lines = [head, "-" * len(head)]
    for cell in cells:
        outcome = cell.outcome()
        outcome = outcome if len(outcome) <= 44 else outcome[:43] + "…"
        lines.append(
            f"{cell.case:<21}{cell.client:<19}{outcome:<46}{_mib(cell.peak):>9}"
            f"{_mib(cell.kept):>9}{cell.seconds:>8.2f}  {cell.next[:9]:<10}"
            + (", ".join(cell.problems) or "-")
        )
    lines += [
        "",
        "peak: tracemalloc peak during the hostile request; kept: still allocated after the",
        "client was closed and gc'd (both over the worker's baseline after a warm-up request);",
        f"next: a request to a good server on the same pool or client. Bounds: peak {PEAK_BOUND // MiB} MiB,",
        f"kept {KEPT_BOUND // MiB} MiB. expect: ok (200, full body), error (typed), either.",
    ]
    for name in dict.fromkeys(cell.case for cell in cells):
        case = CASES[name]
        lines.append(f"{name} [{case.protocol}, expect {case.expect}]: {case.what}")
    return "\n".join(lines)


def asyncpool_problems(cells: Sequence[Cell]) -> list[str]:
    return [
        f"{cell.case} {cell.client}: {', '.join(cell.problems)}"
        for cell in cells
        if CLIENTS[cell.client].ours and cell.problems
    ]


def to_json(cells: Sequence[Cell], seconds: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "bounds": {"peak": PEAK_BOUND, "kept": KEPT_BOUND, "next_deadline": NEXT_DEADLINE},
        "cases": {
            name: {"protocol": c.protocol, "expect": c.expect, "what": c.what}
            for name, c in CASES.items()
            if any(cell.case == name for cell in cells)
        },
        "cells": [dataclasses.asdict(cell) for cell in cells],
        "asyncpool_problems": asyncpool_problems(cells),
    }


# ====================================================================== main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", help="comma list (default: all; with --quick, the fast ones)")
    p.add_argument("--clients", default=",".join(CLIENTS), help="comma list")
    p.add_argument("--deadline", type=float, help=f"seconds per request (default {DEADLINE:g})")
    p.add_argument("--jobs", type=int, default=JOBS, help="worker processes at a time")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    p.add_argument("--quick", action="store_true", help="a smoke run: the fast cases, 5 s deadline")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when an asyncpool cell had a problem"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # run one cell, print it as JSON
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--control-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    deadline = args.deadline or (QUICK_DEADLINE if args.quick else DEADLINE)

    if args.worker:
        cell = worker(args.cases, args.worker, args.url, args.control_url, deadline)
        print(json.dumps(dataclasses.asdict(cell)))
        return 0

    default = [n for n, c in CASES.items() if c.fast or not args.quick]
    cases = [CASES[n] for n in names(args.cases or ",".join(default), list(CASES), "cases")]
    clients = names(args.clients, list(CLIENTS), "clients")
    started = time.monotonic()
    cells = run_cells(cases, clients, deadline, max(1, args.jobs))
    seconds = round(time.monotonic() - started, 1)
    problems = asyncpool_problems(cells)
    if args.json:
        print(json.dumps(to_json(cells, seconds), indent=2))
    else:
        print(table(cells))
        print()
        print(f"asyncpool: {len(problems) or 'no'} case/client cells with problems")
        print(f"# total {seconds:g} s")
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
