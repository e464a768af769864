"""The fault suite: asyncpool and its peers against a real nginx on loopback, under the faults
real servers produce (benchmarks/FAULTS.md).

    python benchmarks/faults.py               # every scenario, every client (about a minute)
    python benchmarks/faults.py --json        # the same results as JSON on stdout
    python benchmarks/faults.py --strict      # exit 1 when asyncpool failed any request
    python benchmarks/faults.py --quick       # a smoke run: a few requests each (seconds)
    python benchmarks/faults.py --scenarios idle_close --clients round_trip/asyncio,aiohttp
    nox -s faults                             # installs -e . and the dev group, then runs this; args after --

Scenarios: idle_close (keepalive_timeout 1s, bursts timed to meet the idle close),
keepalive_requests_h1 / _h2 (the server ends every connection after 5 requests), reload_h1 / _h2
(`nginx -s reload` every 2 s under load). Every request is a GET or a POST with an
Idempotency-Key header (so asyncpool may retry each one), with an overall deadline.

Clients: asyncpool on asyncio and on trio, each through Transport.round_trip, asyncpool.Client
and httpx on asyncpool.httpx.HTTPXTransport; plus httpx (its own transport, HTTP/2 where the
scenario is) and aiohttp (HTTP/1.1 scenarios only). Each scenario gets its own nginx; its clients
run at the same time, each in a fresh Python process (`--worker CLIENT`), so they see the same
faults. Each client reports requests sent, failed (by type) and, for asyncpool, retried.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpool  # noqa: E402
from benchmarks._suite import names  # noqa: E402
from tests.nginx import Nginx, nginx_binary, nginx_version, run_nginx, tls_files_from_trustme  # noqa: E402

PATH = "/fault"
ANSWER = b"ok"  # nginx's answer to every request, GET or POST
POST_BODY = b'{"charge": 1}'
DEADLINE = 10.0  # seconds for one request, from its start to the end of its body


# ====================================================================== scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What nginx is told (`config`, in its server blocks) and how each client sends requests:
    `concurrency` tasks until `requests` were started or `seconds` passed; with `pauses`, in
    bursts of `concurrency` requests at once, then each pause in turn, then the next burst."""

    name: str
    what: str
    http2: bool
    config: str
    concurrency: int
    requests: int
    seconds: float
    pauses: tuple[float, ...] = ()
    reload_every: float | None = None  # send nginx SIGHUP this often while the clients run

    def load(self) -> str:
        protocol = "HTTP/2 + TLS" if self.http2 else "HTTP/1.1"
        if self.pauses:
            pauses = f"{min(self.pauses):.3f}-{max(self.pauses):.3f} s"
            return f"{protocol}, bursts of {self.concurrency}, {len(self.pauses)} pauses {pauses}"
        return f"{protocol}, c={self.concurrency}, {self.requests:,} requests or {self.seconds:g} s"


IDLE_PAUSES = tuple(round(0.990 + 0.001 * i, 3) for i in range(21))  # 0.990 .. 1.010 s

SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "idle_close",
            "keepalive_timeout 1s: pauses between bursts swept across the idle close",
            http2=False,
            config="keepalive_timeout 1s;",
            concurrency=10,
            requests=10 * (len(IDLE_PAUSES) + 1),
            seconds=40.0,
            pauses=IDLE_PAUSES,
        ),
        Scenario(
            "keepalive_requests_h1",
            "keepalive_requests 5: Connection: close on every 5th response",
            http2=False,
            config="keepalive_requests 5;",
            concurrency=50,
            requests=2000,
            seconds=30.0,
        ),
        Scenario(
            "keepalive_requests_h2",
            "keepalive_requests 5: GOAWAY after every 5th stream",
            http2=True,
            config="keepalive_requests 5;",
            concurrency=50,
            requests=2000,
            seconds=30.0,
        ),
        Scenario(
            "reload_h1",
            "nginx -s reload every 2 s under load",
            http2=False,
            config="",
            concurrency=20,
            requests=100_000,
            seconds=10.0,
            reload_every=2.0,
        ),
        Scenario(
            "reload_h2",
            "nginx -s reload every 2 s under load",
            http2=True,
            config="",
            concurrency=20,
            requests=100_000,
            seconds=10.0,
            reload_every=2.0,
        ),
    )
}


def quick(scenario: Scenario) -> Scenario:
    """A smoke run's version of `scenario`: two rounds of requests, one pause, a second or so."""
    return dataclasses.replace(
        scenario,
        requests=min(scenario.requests, 2 * scenario.concurrency),
        seconds=min(scenario.seconds, 2.0),
        pauses=scenario.pauses[:1],
        reload_every=scenario.reload_every and 0.25,
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a client sends its requests; `ca_file` trusts the TLS server's throwaway CA."""

    url: str
    ca_file: str | None = None
    concurrency: int = 10
    http2: bool = False
    limited: bool = False  # --limits: asyncpool's pools with connection limits

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context trusting the CA that offers h2 by ALPN when the scenario is HTTP/2:
        asyncpool uses a given context as it is (without ALPN it speaks HTTP/1.1)."""
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        context.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
        return context


@contextlib.contextmanager
def serve(scenario: Scenario) -> Iterator[tuple[Nginx, Target]]:
    """A private nginx configured for `scenario` (TLS with ALPN h2 when it is an HTTP/2 one)."""
    config = scenario.config
    if scenario.http2 and nginx_version() < (1, 19, 7):
        # keepalive_requests limits HTTP/2 connections from 1.19.7; before, this did.
        config = config.replace("keepalive_requests", "http2_max_requests")
    config = f'location = {PATH} {{ return 200 "{ANSWER.decode()}"; }}\n{config}'
    if not scenario.http2:
        with run_nginx(extra_config=config) as server:
            yield server, Target(server.url(PATH), None, scenario.concurrency)
        return
    import trustme

    with tempfile.TemporaryDirectory(prefix="asyncpool-faults-") as tmp:
        ca = trustme.CA()
        ca_file = str(Path(tmp) / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        files = tls_files_from_trustme(ca.issue_cert("127.0.0.1"), tmp)
        with run_nginx(http2_tls=files, extra_config=config) as server:
            yield server, Target(server.tls_url(PATH), ca_file, scenario.concurrency, True)


# ====================================================================== clients

# send(method, headers, body) -> (status, HTTP version, body): one request to the target.
Send = Callable[[str, dict[str, str], bytes | None], Awaitable[tuple[int, str, bytes]]]
# An adapter opens a client for a target and yields its send, and asyncpool's Transport if any.
Adapter = Callable[
    [Target, asyncpool.ClientTrace],
    contextlib.AbstractAsyncContextManager[tuple[Send, asyncpool.Transport | None]],
]


# --limits: fewer connections than requests in flight, so that most requests wait in the pool's
# queues for one (a host's, and the limit over all hosts, which closes idle ones for room).
LIMITS = {"max_conns_per_host": 4, "max_conns": 6}


def _pool_options(target: Target, trace: asyncpool.ClientTrace) -> dict[str, Any]:
    return {
        "tls_config": target.ssl_context(),
        "trace": trace,
        "max_idle_conns": max(100, target.concurrency),
        **(LIMITS if target.limited else {}),
    }


@contextlib.asynccontextmanager
async def _round_trip(
    target: Target, trace: asyncpool.ClientTrace
) -> AsyncIterator[tuple[Send, asyncpool.Transport | None]]:
    async with asyncpool.Transport(**_pool_options(target, trace)) as pool:

        async def send(
            method: str, headers: dict[str, str], body: bytes | None
        ) -> tuple[int, str, bytes]:
            request = asyncpool.Request(method, target.url, headers=headers, content=body)
            response = await pool.round_trip(request)
            async with response:
                return response.status_code, response.http_version, await response.aread()

        yield send, pool


def _sender(client: Any, url: str) -> Send:
    """The send of a client with httpx's `request(method, url, headers=, content=)` (httpx
    itself, and asyncpool.Client, whose responses are read in full)."""

    async def send(
        method: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, bytes]:
        response = await client.request(method, url, headers=headers, content=body)
        return response.status_code, response.http_version, response.content

    return send


@contextlib.asynccontextmanager
async def _client(
    target: Target, trace: asyncpool.ClientTrace
) -> AsyncIterator[tuple[Send, asyncpool.Transport | None]]:
    pool = asyncpool.Transport(**_pool_options(target, trace))
    async with pool, asyncpool.Client(transport=pool) as client:
        yield _sender(client, target.url), pool


@contextlib.asynccontextmanager
async def _httpx_transport(
    target: Target, trace: asyncpool.ClientTrace
) -> AsyncIterator[tuple[Send, asyncpool.Transport | None]]:
    import httpx

    from asyncpool.httpx import HTTPXTransport

    transport = HTTPXTransport(**_pool_options(target, trace))
    async with httpx.AsyncClient(transport=transport, timeout=None) as client:
        yield _sender(client, target.url), transport.pool


@contextlib.asynccontextmanager
async def _httpx(
    target: Target, trace: asyncpool.ClientTrace
) -> AsyncIterator[tuple[Send, asyncpool.Transport | None]]:
    import httpx

    limits = httpx.Limits(
        max_connections=target.concurrency, max_keepalive_connections=target.concurrency
    )
    verify: ssl.SSLContext | bool = target.ssl_context() or True
    async with httpx.AsyncClient(
        http2=target.http2, verify=verify, limits=limits, timeout=None
    ) as client:
        yield _sender(client, target.url), None


@contextlib.asynccontextmanager
async def _aiohttp(
    target: Target, trace: asyncpool.ClientTrace
) -> AsyncIterator[tuple[Send, asyncpool.Transport | None]]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=target.concurrency)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(
            method: str, headers: dict[str, str], body: bytes | None
        ) -> tuple[int, str, bytes]:
            async with session.request(method, target.url, headers=headers, data=body) as r:
                version = f"HTTP/{r.version.major}.{r.version.minor}" if r.version else "?"
                return r.status, version, await r.read()

        yield send, None


@dataclasses.dataclass(frozen=True)
class ClientKind:
    adapter: Adapter
    backend: str  # "asyncio" or "trio"
    ours: bool  # asyncpool underneath: its retries are counted, its failures gated by --strict
    http1_only: bool = False


CLIENTS = {
    **{
        f"{name}/{backend}": ClientKind(adapter, backend, ours=True)
        for backend in ("asyncio", "trio")
        for name, adapter in (
            ("round_trip", _round_trip),
            ("Client", _client),
            ("HTTPXTransport", _httpx_transport),
        )
    },
    "httpx": ClientKind(_httpx, "asyncio", ours=False),
    "aiohttp": ClientKind(_aiohttp, "asyncio", ours=False, http1_only=True),
}


# ====================================================================== the request loop


@dataclasses.dataclass
class Result:
    """One client in one scenario. `failures` counts failed requests by type; `examples` keeps
    the first message of each type. `retried` and `stats` are asyncpool's (None for peers)."""

    scenario: str
    client: str
    sent: int = 0
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    failed_methods: dict[str, int] = dataclasses.field(default_factory=dict)  # GET, POST
    examples: dict[str, str] = dataclasses.field(default_factory=dict)
    retried: int | None = None
    stats: dict[str, int] | None = None
    versions: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None  # the worker itself failed: no counts

    def fail(self, method: str, kind: str, message: str) -> None:
        self.failed += 1
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.failed_methods[method] = self.failed_methods.get(method, 0) + 1
        self.examples.setdefault(kind, message[:500])


def describe(exc: BaseException) -> str:
    """The exception and what it was raised from, e.g. `httpx.ReadError: ... <- OSError: ...`."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        kind = type(seen)
        parts.append(f"{kind.__module__}.{kind.__qualname__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def failure_type(exc: BaseException) -> str:
    """The exception's class name, marked when asyncpool gave up retrying."""
    name = type(exc).__name__
    return f"{name} (gave up retrying)" if "gave up after" in str(exc) else name


async def _one(send: Send, index: int, client: str, result: Result, deadline: float) -> None:
    """Request number `index`: a GET, or a POST with an Idempotency-Key (every other one)."""
    if index % 2:
        method, headers, body = "POST", {"Idempotency-Key": f"{client}-{index}"}, POST_BODY
    else:
        method, headers, body = "GET", {}, None
    result.sent += 1
    with anyio.move_on_after(deadline):
        try:
            status, version, content = await send(method, headers, body)
        except Exception as exc:
            result.fail(method, failure_type(exc), describe(exc))
            return
        result.versions[version] = result.versions.get(version, 0) + 1
        if status != 200 or content != ANSWER:
            result.fail(method, f"status {status}", f"{status} {content[:100]!r}")
        else:
            result.ok += 1
        return
    result.fail(method, "deadline", f"no complete response in {deadline:g} s")


async def run_client(
    scenario: Scenario, client: str, target: Target, deadline: float = DEADLINE
) -> Result:
    """Run `scenario`'s requests through `client` (a CLIENTS key) on the current event loop."""
    result = Result(scenario.name, client)
    retries = 0

    def retried(info: asyncpool.RetryInfo) -> None:
        nonlocal retries
        retries += 1

    started = anyio.current_time()
    stop_at = started + scenario.seconds
    limit = scenario.requests
    numbers = itertools.count()
    trace = asyncpool.ClientTrace(request_retried=retried)
    async with CLIENTS[client].adapter(target, trace) as (send, pool):

        async def one() -> None:
            await _one(send, next(numbers), client, result, deadline)

        async def steady() -> None:
            while anyio.current_time() < stop_at and result.sent < limit:
                await one()

        if scenario.pauses:  # a burst, then each pause followed by a burst
            for pause in (0.0, *scenario.pauses):
                await anyio.sleep(pause)
                if anyio.current_time() >= stop_at or result.sent >= limit:
                    break
                async with anyio.create_task_group() as tg:
                    for _ in range(min(scenario.concurrency, limit - result.sent)):
                        tg.start_soon(one)
        else:
            async with anyio.create_task_group() as tg:
                for _ in range(scenario.concurrency):
                    tg.start_soon(steady)
        if pool is not None:
            stats = pool.stats()
            result.retried = retries
            result.stats = {
                "retries": stats.retries,
                "dials": stats.dials,
                "failed_dials": stats.failed_dials,
                "reused": stats.reused,
                "server_closed_idle": stats.server_closed_idle,
            }
    result.seconds = round(anyio.current_time() - started, 3)
    return result


# ====================================================================== running a scenario


@dataclasses.dataclass
class ScenarioRun:
    scenario: Scenario
    results: list[Result]
    reloads: int = 0
    seconds: float = 0.0
    skipped: list[str] = dataclasses.field(default_factory=list)  # clients without its protocol


def _worker_result(
    client: str, scenario: Scenario, proc: subprocess.Popen[str], out: TextIO, err: TextIO
) -> Result:
    out.seek(0)
    err.seek(0)
    lines = out.read().strip().splitlines()
    if proc.returncode == 0 and lines:
        fields = json.loads(lines[-1])
        return Result(**fields)
    tail = err.read().strip().splitlines()[-3:]
    why = "killed: over its time limit" if proc.returncode == -9 else f"exit {proc.returncode}"
    return Result(scenario.name, client, error=f"worker {why}: {' | '.join(tail)}")


def run_scenario(
    scenario: Scenario,
    clients: Sequence[str],
    deadline: float,
    smoke: bool = False,
    limited: bool = False,
) -> ScenarioRun:
    """One nginx for `scenario`; every client in its own process at once; the scenario's faults
    (reloads) driven from here until the last client is done. `limited`: asyncpool's clients
    with LIMITS."""
    run = ScenarioRun(scenario, [])
    run.skipped = [c for c in clients if scenario.http2 and CLIENTS[c].http1_only]
    clients = [c for c in clients if c not in run.skipped]
    started = time.monotonic()
    with serve(scenario) as (server, target), contextlib.ExitStack() as files:
        procs = []
        for client in clients:
            out, err = (files.enter_context(tempfile.TemporaryFile("w+")) for _ in "oe")
            cmd = [sys.executable, __file__, "--worker", client, "--scenario", scenario.name]
            cmd += ["--url", target.url, "--deadline", str(deadline)]
            cmd += ["--ca-file", target.ca_file] if target.ca_file else []
            cmd += ["--quick"] if smoke else []
            cmd += ["--limits"] if limited else []
            procs.append(
                (client, subprocess.Popen(cmd, stdout=out, stderr=err, text=True), out, err)
            )
        hard_stop = started + scenario.seconds + deadline + 60
        next_reload = started + (scenario.reload_every or 0)
        while any(p.poll() is None for _, p, _, _ in procs) and time.monotonic() < hard_stop:
            time.sleep(0.02)
            if scenario.reload_every and time.monotonic() >= next_reload:
                server.reload()
                run.reloads += 1
                next_reload += scenario.reload_every
        for _, proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        run.results = [_worker_result(c, scenario, p, o, e) for c, p, o, e in procs]
    run.seconds = round(time.monotonic() - started, 1)
    return run


# ====================================================================== report


def _row(scenario: str, r: Result) -> str:
    retried = "-" if r.retried is None else str(r.retried)
    if r.error is not None:
        return f"{scenario:<22}{r.client:<24}{'?':>7}{'?':>18}{retried:>9}  {r.error}"
    failed = str(r.failed)
    if r.failed:
        failed += f" ({r.failed_methods.get('GET', 0)}/{r.failed_methods.get('POST', 0)})"
    failures = ", ".join(f"{kind} {n}" for kind, n in sorted(r.failures.items())) or "-"
    return f"{scenario:<22}{r.client:<24}{r.sent:>7}{failed:>18}{retried:>9}  {failures}"


def table(runs: Sequence[ScenarioRun]) -> str:
    """scenario × client: sent / failed / retried and the failure types, then each scenario's
    description and one example message per failure type."""
    head = f"{'scenario':<22}{'client':<24}{'sent':>7}{'failed (G/P)':>18}{'retried':>9}  failures"
    lines = [head, "-" * len(head)]
    lines += [_row(run.scenario.name, r) for run in runs for r in run.results]
    lines += [
        "",
        "failed (G/P): failed requests (of them GETs / Idempotency-Key POSTs); retried: asyncpool's",
        "ClientTrace.request_retried calls (- = not asyncpool).",
    ]
    for run in runs:
        reloads = f", {run.reloads} reloads" if run.scenario.reload_every else ""
        lines.append(
            f"{run.scenario.name}: {run.scenario.what} ({run.scenario.load()}{reloads}; "
            f"took {run.seconds:g} s)"
        )
    for run in runs:
        want = "HTTP/2" if run.scenario.http2 else "HTTP/1.1"
        for r in run.results:
            if set(r.versions) - {want}:
                lines.append(f"note: {r.client} in {run.scenario.name} was answered {r.versions}")
    examples: dict[str, str] = {}
    for run in runs:
        for r in run.results:
            for kind, message in r.examples.items():
                examples.setdefault(kind, f"[{run.scenario.name} {r.client}] {message[:300]}")
    if examples:
        lines += ["", "first message of each failure type:"]
        lines += [f"  {kind}: {message}" for kind, message in examples.items()]
    return "\n".join(lines)


def asyncpool_failures(runs: Sequence[ScenarioRun]) -> list[str]:
    """asyncpool cells that failed a request (every request is a GET or an Idempotency-Key
    POST, so asyncpool should deliver each) or whose worker failed."""
    return [
        f"{run.scenario.name} {r.client}: {r.error or f'{r.failed} of {r.sent} failed'}"
        for run in runs
        for r in run.results
        if CLIENTS[r.client].ours and (r.error is not None or r.failed)
    ]


def to_json(runs: Sequence[ScenarioRun], seconds: float) -> dict[str, Any]:
    return {
        "nginx": ".".join(map(str, nginx_version())),
        "seconds": seconds,
        "scenarios": [
            {
                **dataclasses.asdict(run.scenario),
                "reloads": run.reloads,
                "seconds": run.seconds,
                "skipped": run.skipped,
                "results": [dataclasses.asdict(r) for r in run.results],
            }
            for run in runs
        ],
        "asyncpool_failures": asyncpool_failures(runs),
    }


# ====================================================================== main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list")
    p.add_argument("--clients", default=",".join(CLIENTS), help="comma list")
    p.add_argument("--deadline", type=float, default=DEADLINE, help="seconds for one request")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead")
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: a few requests per scenario and client"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when asyncpool failed any request")
    p.add_argument(
        "--limits",
        action="store_true",
        help=f"asyncpool's pools with {LIMITS}: most requests wait for a connection",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # run one client, print its Result
    p.add_argument("--scenario", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        scenario = SCENARIOS[args.scenario]
        scenario = quick(scenario) if args.quick else scenario
        target = Target(
            args.url, args.ca_file, scenario.concurrency, scenario.http2, limited=args.limits
        )
        result = anyio.run(
            run_client, scenario, args.worker, target, args.deadline,
            backend=CLIENTS[args.worker].backend,
        )  # fmt: skip
        print(json.dumps(dataclasses.asdict(result)))
        return 0

    scenarios = names(args.scenarios, list(SCENARIOS), "scenarios")
    clients = names(args.clients, list(CLIENTS), "clients")
    if nginx_binary() is None:
        sys.exit("nginx not found: install it (apt-get install nginx-light)")
    started = time.monotonic()
    runs = []
    for name in scenarios:
        if not args.json:
            print(f"# {name} ...", file=sys.stderr, flush=True)
        scenario = quick(SCENARIOS[name]) if args.quick else SCENARIOS[name]
        runs.append(run_scenario(scenario, clients, args.deadline, args.quick, args.limits))
    seconds = round(time.monotonic() - started, 1)
    failures = asyncpool_failures(runs)
    if args.json:
        print(json.dumps(to_json(runs, seconds), indent=2))
    else:
        print(table(runs))
        print()
        if args.limits:
            print(f"asyncpool's pools had {LIMITS} (--limits)")
        print(f"asyncpool: {len(failures) or 'no'} client/scenario cells with failures")
        print(f"# total {seconds:g} s")
    return 1 if args.strict and failures else 0


if __name__ == "__main__":
    sys.exit(main())
