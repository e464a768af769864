"""The ``asyncpool`` command: trace one request (``get``), or load-test a server (``bench``).

    asyncpool get https://example.org/ --trace
    asyncpool bench                         # an embedded loopback server: nothing else needed
    asyncpool bench http://127.0.0.1:8080/ -n 10000 -c 50 --json

As curl, ``get`` writes the body to stdout and the rest (status line, header fields, the
waterfall) to stderr. As hey and oha, ``bench`` writes its results to stdout and a live progress
display to stderr, on a terminal only. Errors print one line and exit non-zero (the codes are in
each command's ``--help``); Ctrl-C stops ``bench`` and prints what it measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import re
import signal
import ssl
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel

from ._client import Client
from ._demo_server import serve
from ._errors import (
    ConnectError,
    HTTPError,
    InvalidURL,
    LocalProtocolError,
    ProxyError,
    TimeoutError,
    TLSError,
    TooManyRedirects,
)
from ._models import URL, Request
from ._proxy import environment_proxy, parse_proxy
from ._trace import ClientTrace, Timings
from ._transport import Transport
from ._version import __version__

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["main"]

# Exit codes; get's follow curl's.
OK, ERROR, USAGE = 0, 1, 2
NO_HOST, NO_CONNECTION, HTTP_FAILED, WRITE_FAILED, TIMED_OUT, TLS_FAILED, REDIRECTS = (
    6, 7, 22, 23, 28, 35, 47,
)  # fmt: skip
PROXY_FAILED = 56  # curl's for a refused CONNECT
INTERRUPTED = 130

USER_AGENT = f"asyncpool/{__version__}"
TLS_HINT = "hint: --cacert FILE trusts the CA that signed it, --insecure skips the check"

GET_EPILOG = """\
examples:
  asyncpool get https://example.org/ --trace       where the time went (httpstat)
  asyncpool get -L https://example.org/ -o page.html
  asyncpool get -X PUT -d @item.json -H 'Content-Type: application/json' URL
  echo '{"a": 1}' | asyncpool get -d @- URL         the body from stdin
  asyncpool get -f -m 10s URL > out                 fail on HTTP >= 400, or after 10 s

HTTP/2 is offered by ALPN over https:// (--http1.1 to refuse it). No overall time limit
unless -m, as curl; a server silent for --read-timeout fails (28). Without -x, the proxy
comes from HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY; -x "" uses none.

exit codes (curl's):
  0    a response came (whatever its status, unless -f)
  1    any other failure (a protocol error, stdout closed early as by | head)
  2    bad arguments: option, URL, --cacert or -d @FILE
  6    could not resolve the host
  7    could not connect
  22   HTTP status 400 or more, with -f
  23   could not write the -o file
  28   timed out (-m, --connect-timeout or --read-timeout)
  35   TLS handshake or certificate check failed
  47   too many redirects (-L follows up to 10)
  56   the proxy refused or broke the tunnel (CONNECT, SOCKS)
  130  interrupted (Ctrl-C)
"""

BENCH_EPILOG = """\
examples:
  asyncpool bench                                   an embedded loopback server
  asyncpool bench --http2                           ... speaking HTTP/2 (h2c)
  asyncpool bench http://127.0.0.1:8080/ -n 10000 -c 100
  asyncpool bench URL -z 30s --json > result.json   for 30 seconds; JSON on stdout
  asyncpool bench URL --max-conns-per-host 4 --disable-keep-alives

The results go to stdout; on a terminal, stderr shows the progress, rate and ETA.
Ctrl-C stops early and prints the results so far. "reuse" is the share of requests that
did not open a connection (HTTP/2 streams share one).

exit codes:
  0    every request got a response (whatever its status)
  1    some or all requests failed (counted by error type), or stdout closed early
  2    bad arguments or URL
  130  interrupted (Ctrl-C): the results so far are printed
"""


class Fail(Exception):
    """An error for the person at the terminal: one line, and the exit code."""

    def __init__(self, message: str, code: int = ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- arguments --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the help is one option away.
        self.exit(USAGE, f"asyncpool: error: {message} (see: {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout; adds an option's default to its help unless it says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
        ):
            return text
        return text + " (default: %(default)s)"


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


_DURATION = re.compile(r"(-?\d+(?:\.\d*)?|-?\.\d+)(ms|s|m|h)?")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """Seconds from "30s", "500ms", "2m", "1h" or a plain number of seconds (as hey and oha)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 500ms, 2m or 1.5 (seconds), not {text!r}"
        )
    seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    # The global options, accepted before and after the subcommand. SUPPRESS: a subcommand
    # that was not given one must not overwrite the value given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--backend",
        choices=["asyncio", "trio"],
        default=argparse.SUPPRESS,
        help='event loop to run on; trio needs pip install "asyncpool-http[trio]" (default: asyncio)',
    )
    parser = _Parser(
        prog="asyncpool",
        description="Trace one HTTP request (get), or load-test a server (bench).",
        epilog="examples:\n  asyncpool get https://example.org/ --trace\n"
        "  asyncpool bench\n\nasyncpool get --help and asyncpool bench --help say more.",
        formatter_class=_Formatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"asyncpool {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{get,bench}")

    get = commands.add_parser(
        "get",
        help="send one request: the body to stdout, the rest to stderr (as curl)",
        description="Send one request, as curl: the body goes to stdout (or -o FILE), the\n"
        "status line and header fields to stderr; --trace adds where the time went.",
        epilog=GET_EPILOG,
        formatter_class=_Formatter,
        parents=[common],
    )
    get.add_argument("url", help="the URL to request (http:// or https://)")
    get.add_argument(
        "-X",
        "--request",
        dest="method",
        metavar="METHOD",
        help="method (default: GET, POST with -d)",
    )
    _add_header_option(get)
    get.add_argument(
        "-d",
        "--data",
        metavar="DATA",
        help="request body, sent as is; @FILE reads it from FILE, @- from stdin",
    )
    get.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE, not stdout")
    get.add_argument("-L", "--location", action="store_true", help="follow redirects (up to 10)")
    get.add_argument(
        "-f", "--fail", action="store_true", help="exit 22, body unwritten, on HTTP status >= 400"
    )
    get.add_argument(
        "-m",
        "--max-time",
        "--timeout",
        dest="max_time",
        type=_duration,
        metavar="DURATION",
        help="give up after this long in all: 10, 10s, 500ms, 2m (default: no limit, as curl)",
    )
    get.add_argument(
        "--connect-timeout",
        type=_duration,
        default=10.0,
        metavar="DURATION",
        help="give up resolving and connecting after this long (default: 10s, as Client)",
    )
    get.add_argument(
        "--read-timeout",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="give up when the server is silent this long (default: 30s, as Client)",
    )
    get.add_argument("--trace", action="store_true", help="print where the time went (httpstat)")
    get.add_argument(
        "-x",
        "--proxy",
        metavar="URL",
        help="go through this proxy: [http|https|socks5|socks5h|socks4a://][user:password@]"
        'host[:port]; "" for none (default: the environment\'s, as curl)',
    )
    get.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="connect to this Unix socket instead of the URL's host (as curl; no proxy then)",
    )
    _add_connection_options(get)

    bench = commands.add_parser(
        "bench",
        help="load-test a URL, or an embedded loopback server (as hey and oha)",
        description="Send requests from concurrent workers over one pool, and report\n"
        "throughput, latency, status codes, errors and connection reuse.",
        epilog=BENCH_EPILOG,
        formatter_class=_Formatter,
        parents=[common],
    )
    bench.add_argument(
        "url", nargs="?", help="the URL to load-test; without one, an embedded loopback server"
    )
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument(
        "-n",
        "--requests",
        type=_count(1),
        metavar="N",
        help="requests to send (default: 2000, unless -z)",
    )
    amount.add_argument(
        "-z",
        "--duration",
        type=_duration,
        metavar="DURATION",
        help="send for this long instead: 30s, 500ms, 2m, or seconds",
    )
    bench.add_argument(
        "-c",
        "--concurrency",
        type=_count(1),
        default=50,
        metavar="N",
        help="requests in flight at once (workers)",
    )
    bench.add_argument(
        "-X", "--request", dest="method", default="GET", metavar="METHOD", help="method"
    )
    _add_header_option(bench)
    bench.add_argument(
        "-t",
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="give up on a request after this long (default: no limit, as oha)",
    )
    bench.add_argument(
        "--max-conns-per-host",
        type=_count(0),
        default=0,
        metavar="N",
        help="connections per host, the others wait (default: %(default)s = no limit)",
    )
    bench.add_argument(
        "--max-idle-conns-per-host",
        type=_count(0),
        metavar="N",
        help="idle connections kept per host (default: 100, the pool's max_idle_conns)",
    )
    bench.add_argument(
        "--disable-keep-alives",
        action="store_true",
        help="a new connection for every request",
    )
    bench.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    _add_connection_options(bench)
    return parser


def _add_header_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header field; repeat for more",
    )


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    version = parser.add_mutually_exclusive_group()
    version.add_argument(
        "--http2",
        action="store_true",
        help="HTTP/2 over http:// too, with prior knowledge (over https:// it is offered anyway)",
    )
    version.add_argument(
        "--http1.1",
        dest="http1_1",
        action="store_true",
        help="HTTP/1.1 only: do not offer h2 by ALPN",
    )
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    parser.add_argument(
        "--cacert", metavar="FILE", help="trust the CA certificates in FILE (PEM), not the system's"
    )


def _headers(fields: list[str]) -> list[tuple[str, str]]:
    headers = []
    for text in fields:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise Fail(f"-H {text!r}: expected 'Name: value'", USAGE)
        headers.append((name.strip(), value.strip()))
    return headers


def _tls_config(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.insecure or args.cacert):
        return None  # the pool's default: certifi's CA bundle
    try:
        context = ssl.create_default_context(cafile=args.cacert)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Fail(f"--cacert {args.cacert}: cannot load it: {reason}", USAGE) from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"] if args.http1_1 else ["h2", "http/1.1"])
    return context


def _transport_options(args: argparse.Namespace, url: str) -> dict[str, Any]:
    return {
        "http2": not args.http1_1,
        "http2_prior_knowledge": args.http2 and url[:5].lower() == "http:",
        "tls_config": _tls_config(args),
    }


# -- get --------------------------------------------------------------------------------------


def _body(data: str | None) -> bytes | None:
    """-d DATA, -d @FILE or -d @- (stdin), as curl's --data-binary."""
    if data is None or not data.startswith("@"):
        return None if data is None else data.encode()
    if data == "@-":
        return sys.stdin.buffer.read()
    try:
        with open(data[1:], "rb") as file:
            return file.read()
    except OSError as exc:
        raise Fail(f"-d {data}: cannot read it: {exc.strerror or exc}", USAGE) from None


async def _get(args: argparse.Namespace, err: Console) -> int:
    content = _body(args.data)
    headers = _headers(args.header)
    if not any(name.lower() == "user-agent" for name, _ in headers):
        headers.append(("User-Agent", USER_AGENT))
    method = args.method or ("POST" if content is not None else "GET")
    timings = Timings()
    request = _request(
        method, args.url, headers, content=content, trace=timings.trace if args.trace else None
    )
    options = _transport_options(args, args.url)
    options.update(dial_timeout=args.connect_timeout, read_timeout=args.read_timeout)
    if args.proxy:
        try:
            parse_proxy(args.proxy)
        except ValueError as exc:
            raise Fail(f"-x: {exc}", USAGE) from None
    if args.unix_socket is not None:
        if args.proxy:
            raise Fail("--unix-socket and -x exclude each other", USAGE)
        options["uds"] = args.unix_socket
    else:
        options["proxy"] = (args.proxy or None) if args.proxy is not None else environment_proxy()
    with anyio.move_on_after(args.max_time) as deadline:  # None: no limit
        code = await _get_one(args, request, options, err)
    if deadline.cancelled_caught:
        raise Fail(f"timed out after {_seconds(args.max_time)} (-m)", TIMED_OUT)
    if args.trace:
        _waterfall(timings, err)
    return code


def _request(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    *,
    content: bytes | None = None,
    trace: ClientTrace | None = None,
) -> Request:
    """The request to send, or a usage error for a bad -X or -H (a header injection, say)."""
    try:
        return Request(method, url, headers=headers, content=content, trace=trace)
    except LocalProtocolError as exc:
        raise Fail(str(exc), USAGE) from None


async def _get_one(
    args: argparse.Namespace, request: Request, options: dict[str, Any], err: Console
) -> int:
    from rich.markup import escape

    async with contextlib.AsyncExitStack() as stack:
        # The output file first: a path that cannot be written fails before any request. An
        # existing file is emptied only once a body is to be written to it (as curl leaves
        # it when the request fails); one made here is removed then.
        output = None
        if args.output is not None:
            output = await stack.enter_async_context(_Output(args.output))
        pool = await stack.enter_async_context(Transport(**options))
        client = Client(transport=pool, follow_redirects=args.location)
        response = await stack.enter_async_context(await client.send(request))
        # What the server sent is text, not markup: "[/x]" in a field would end a tag.
        err.print(
            f"[bold]{response.http_version} {response.status_code}[/] "
            f"{escape(response.reason_phrase)}"
        )
        for name, value in response.headers.items():
            err.print(f"[cyan]{escape(name)}[/]: {escape(value)}")
        if args.fail and response.status_code >= 400:
            raise Fail(
                f"HTTP {response.status_code} {response.reason_phrase} from {response.request.url}",
                HTTP_FAILED,
            )
        stdout = sys.stdout.buffer
        try:
            if output is not None:
                file = await output.start()
                async for chunk in response.aiter_bytes():
                    await file.write(chunk)
                await file.flush()  # here, where its error is caught, not when it closes
            else:
                async for chunk in response.aiter_bytes():
                    stdout.write(chunk)
            stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:  # a full disk, say
            where = "stdout" if output is None else f"-o {args.output}"
            raise Fail(f"{where}: cannot write: {exc.strerror or exc}", WRITE_FAILED) from None
    return OK


class _Output:
    """``-o PATH``: opened before the request, so that a path that cannot be written fails
    first, but emptied only when the body starts (``start``), as curl leaves the file of a
    failed request as it was; a file made here is removed if the body never started."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.created = False
        self.started = False

    async def __aenter__(self) -> _Output:
        try:
            try:
                self.file = await anyio.open_file(self.path, "r+b")
            except FileNotFoundError:
                self.file = await anyio.open_file(self.path, "xb")
                self.created = True
        except OSError as exc:
            raise Fail(f"-o {self.path}: {exc.strerror or exc}", WRITE_FAILED) from None
        return self

    async def start(self) -> anyio.AsyncFile[bytes]:
        self.started = True
        if stat.S_ISREG(os.fstat(self.file.wrapped.fileno()).st_mode):  # not /dev/null
            await self.file.truncate(0)
        return self.file

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.file.aclose()  # what is still buffered after a failed write fails again
        except OSError as exc:
            if exc_info[0] is None:
                message = f"-o {self.path}: cannot write: {exc.strerror or exc}"
                raise Fail(message, WRITE_FAILED) from None
        finally:
            if self.created and not self.started:
                with contextlib.suppress(OSError):
                    os.remove(self.path)


def _waterfall(timings: Timings, err: Console, bar_width: int = 44) -> None:
    """One line a phase, each bar starting where the one before ended: 80 columns."""
    labels = {
        "queued": "Queued",
        "dns": "DNS Lookup",
        "connect": "TCP Connection",
        "tls": "TLS Handshake",
        "request": "Request Sent",
        "server": "Server Processing",
        "transfer": "Content Transfer",
    }
    phases = timings.phases()
    total = timings.total or sum(value or 0.0 for value in phases.values()) or 1e-9
    scale = bar_width / total
    lines = [""]
    start = 0.0
    for key, label in labels.items():
        value = phases[key]
        bar = ""
        if value is not None:
            column = min(bar_width - 1, round(start * scale))
            bar = " " * column + "█" * max(1, round(value * scale))
            start += value
        lines.append(f"  {label:<17} {_ms(value):>10}  |{bar[: bar_width + 1]}")
    lines.append(f"  {'Total':<17} {_ms(timings.total):>10}")
    info = timings.conn
    if info is not None:
        kind = "reused" if info.reused else "new"
        lines.append(
            f"connection: {kind}, {info.protocol}, {_addr(info.local_address)} -> "
            f"{_addr(info.remote_address)}"
        )
    if timings.attempts > 1:
        lines.append(f"(the last of {timings.attempts} requests: a redirect or a retry before)")
    err.print("\n".join(lines), markup=False)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1000:.2f} ms"


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s"


def _addr(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


# -- bench ------------------------------------------------------------------------------------

DEFAULT_REQUESTS = 2000


@dataclass
class _Run:
    """What a bench run measured; latencies are of the requests that got a response."""

    url: str
    concurrency: int
    backend: str
    embedded: bool = False
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    protocols: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    first_error: dict[str, str] = field(default_factory=dict)  # error type -> its message
    bytes: int = 0
    issued: int = 0
    elapsed: float = 0.0
    opened: int = 0  # connections the pool opened
    interrupted: bool = False

    @property
    def responses(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        return self.responses + self.failed


async def _bench(args: argparse.Namespace, err: Console) -> int:
    headers = _headers(args.header)
    if args.url is not None:
        return await _bench_url(args, args.url, headers, err, embedded=False)
    async with serve(http2=args.http2) as base:
        return await _bench_url(args, base + "/", headers, err, embedded=True)


async def _bench_url(
    args: argparse.Namespace,
    url: str,
    headers: list[tuple[str, str]],
    err: Console,
    *,
    embedded: bool,
) -> int:
    URL(url)  # a bad URL, -X or -H fails once, up front, not once per request
    _request(args.method, url, headers)
    options = _transport_options(args, url)
    options.update(
        max_conns_per_host=args.max_conns_per_host,
        max_idle_conns_per_host=args.max_idle_conns_per_host,
        disable_keep_alives=args.disable_keep_alives,
    )
    run = _Run(url, args.concurrency, getattr(args, "backend", "asyncio"), embedded=embedded)
    total = None if args.duration else (args.requests or DEFAULT_REQUESTS)
    clock = time.perf_counter
    method, timeout = args.method, args.timeout

    async with Transport(**options) as pool:

        async def send() -> None:
            response = await pool.round_trip(Request(method, url, headers=headers))
            body = await response.aread()
            run.statuses[response.status_code] += 1
            run.protocols[response.http_version] += 1
            run.bytes += len(body)

        async def worker() -> None:
            while True:
                if total is not None:
                    if run.issued >= total:
                        return
                    run.issued += 1
                elif clock() >= stop_at:
                    return
                begin = clock()
                try:
                    if timeout is None:
                        await send()
                    else:
                        with anyio.move_on_after(timeout) as scope:
                            await send()
                        if scope.cancelled_caught:
                            _count_error(run, "RequestTimeout", f"no response in {timeout:g} s")
                            continue
                except HTTPError as exc:
                    _count_error(run, type(exc).__name__, str(exc))
                    # A failure without a wait (a closed pool, say) must not starve the
                    # progress display and the Ctrl-C watch.
                    await anyio.lowlevel.checkpoint()
                    continue
                run.latencies.append(clock() - begin)

        started = clock()
        stop_at = started + (args.duration or 0.0)
        async with anyio.create_task_group() as tg:
            await tg.start(_stop_on_interrupt, tg.cancel_scope, run)
            progress = _progress(err)
            if progress is not None:
                tg.start_soon(_show_progress, progress, run, total, args.duration, started)
            async with anyio.create_task_group() as workers:
                for _ in range(args.concurrency):
                    workers.start_soon(worker)
            tg.cancel_scope.cancel()  # done: stop the progress display and the Ctrl-C watch
        run.elapsed = clock() - started
        stats = pool.stats()
        run.opened = stats.dials - stats.failed_dials
    return _report(run, args.json, err)


def _count_error(run: _Run, name: str, message: str) -> None:
    run.errors[name] += 1
    run.first_error.setdefault(name, message)


async def _stop_on_interrupt(
    scope: anyio.CancelScope, run: _Run, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Ctrl-C stops the run (in-flight requests are dropped) and keeps what was measured."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT)
    except NotImplementedError:  # pragma: no cover (Windows: KeyboardInterrupt, no summary)
        task_status.started()
        return
    with receiver as signals:
        task_status.started()
        async for _ in signals:
            run.interrupted = True
            scope.cancel()
            return


def _progress(err: Console) -> Progress | None:
    """A live display on stderr when it is a terminal; nothing otherwise."""
    if not err.is_terminal or err.is_dumb_terminal:
        return None
    from rich.progress import BarColumn, Progress, TextColumn

    return Progress(
        TextColumn("[bold]bench"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=True,
        auto_refresh=False,
    )


async def _show_progress(
    progress: Progress, run: _Run, total: int | None, duration: float | None, started: float
) -> None:
    task: TaskID = progress.add_task("bench", total=total or duration, status="starting")
    with progress:
        while True:
            elapsed = time.perf_counter() - started
            done = run.requests
            rate = done / elapsed if elapsed > 0 else 0.0
            if total is not None:
                left = (total - done) / rate if rate else None
                status = f"{done:,}/{total:,} requests  {rate:,.0f} req/s  ETA {_clock(left)}"
                progress.update(task, completed=done, status=status)
            else:
                left = max(0.0, (duration or 0.0) - elapsed)
                status = f"{done:,} requests  {rate:,.0f} req/s  ETA {_clock(left)}"
                progress.update(task, completed=elapsed, status=status)
            if run.failed:
                status += f"  {run.failed:,} failed"
                progress.update(task, status=status)
            progress.refresh()
            await anyio.sleep(0.1)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}:{secs:02d}"


PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p99.9", 0.999))


def _summary(run: _Run) -> dict[str, Any]:
    """The results with stable keys (seconds and bytes), as --json prints them."""
    ordered = sorted(run.latencies)
    count = len(ordered)
    latency: dict[str, float | None] = {"min": ordered[0] if ordered else None}
    latency["mean"] = sum(ordered) / count if ordered else None
    for name, p in PERCENTILES:  # nearest rank
        latency[name] = ordered[max(0, math.ceil(p * count) - 1)] if ordered else None
    latency["max"] = ordered[-1] if ordered else None
    return {
        "url": run.url,
        "concurrency": run.concurrency,
        "backend": run.backend,
        "requests": run.requests,
        "responses": run.responses,
        "failed": run.failed,
        "duration": round(run.elapsed, 6),
        "rps": round(run.responses / run.elapsed, 1) if run.elapsed else 0.0,
        "latency": latency,
        "bytes": run.bytes,
        "status_codes": {str(code): n for code, n in sorted(run.statuses.items())},
        "protocols": dict(run.protocols),
        "errors": dict(run.errors),
        "dials": run.opened,
        "requests_per_connection": round(run.responses / run.opened, 2) if run.opened else 0.0,
        # Requests that did not open a connection: an HTTP/2 stream on a shared one reuses it.
        "reuse": round(max(0.0, 1 - run.opened / run.responses), 4) if run.responses else 0.0,
        "interrupted": run.interrupted,
    }


def _report(run: _Run, as_json: bool, err: Console) -> int:
    summary = _summary(run)
    if as_json:
        print(json.dumps(summary, indent=2))
    elif run.responses:
        print(_for_people(summary, run))
    sys.stdout.flush()  # here, where a closed stdout is handled, not at exit
    if run.interrupted:
        if not run.responses:
            _error(err, "interrupted before any response")
        return INTERRUPTED
    if not run.failed:
        return OK
    kinds = ", ".join(f"{name}: {n:,}" for name, n in run.errors.most_common())
    if run.responses:
        _error(err, f"{run.failed:,} of {run.requests:,} requests failed ({kinds})")
    else:  # nothing to summarize: say why
        name, _ = run.errors.most_common(1)[0]
        message = run.first_error[name]
        hint = f" ({TLS_HINT})" if name == "TLSError" else ""
        _error(err, f"all {run.requests:,} requests failed ({kinds}); {message}{hint}")
    return ERROR


def _for_people(summary: dict[str, Any], run: _Run) -> str:
    """oha's layout: the run, its summary, latency, histogram, status codes, errors, pool."""
    latency = summary["latency"]
    elapsed = summary["duration"]
    where = f"{run.url} (embedded server)" if run.embedded else run.url
    protocols = ", ".join(run.protocols) or "-"
    stopped = f", interrupted after {elapsed:.2f} s" if run.interrupted else ""
    lines = [
        f"asyncpool bench {where}",
        f"  {summary['requests']:,} requests, concurrency {run.concurrency}, {protocols}, "
        f"{run.backend}{stopped}",
        "",
        "Summary:",
        f"  Success rate:  {summary['responses'] / summary['requests']:.2%}",
        f"  Total:         {elapsed:.4f} s",
        f"  Slowest:       {_ms(latency['max'])}",
        f"  Fastest:       {_ms(latency['min'])}",
        f"  Average:       {_ms(latency['mean'])}",
        f"  Requests/sec:  {summary['rps']:,.1f}",
        "",
        f"  Total data:    {_size(run.bytes)}",
        f"  Size/request:  {_size(run.bytes / run.responses)}",
        f"  Size/sec:      {_size(run.bytes / elapsed if elapsed else 0)}",
        "",
        "Latency distribution:",
        *(f"  {name:<6} {_ms(latency[name]):>11}" for name, _ in PERCENTILES),
        "",
        "Response time histogram:",
        *_histogram(run.latencies),
        "",
        "Status code distribution:",
        *(f"  [{code}] {n:,} responses" for code, n in summary["status_codes"].items()),
    ]
    if run.errors:
        lines += ["", "Error distribution:"]
        for name, n in run.errors.most_common():
            lines.append(f"  [{n:,}] {name}: {run.first_error[name]}")
    lines += [
        "",
        "Connections:",
        f"  {run.opened:,} opened, {summary['requests_per_connection']:,.1f} requests per "
        f"connection (reuse {summary['reuse']:.1%})",
    ]
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:,.2f} GiB"


def _histogram(latencies: list[float], buckets: int = 10, width: int = 40) -> list[str]:
    low, high = min(latencies), max(latencies)
    step = (high - low) / buckets or 1e-9
    counts = [0] * buckets
    for value in latencies:
        counts[min(buckets - 1, int((value - low) / step))] += 1
    peak = max(counts)
    digits = len(f"{peak:,}")
    return [
        f"  {_ms(low + (i + 1) * step):>11} [{n:>{digits},}] |{'■' * round(width * n / peak)}"
        for i, n in enumerate(counts)
    ]


# -- entry point ------------------------------------------------------------------------------


def _error(err: Console, message: str) -> None:
    err.print(f"asyncpool: error: {message}", markup=False, soft_wrap=True)


def _failure(exc: BaseException, command: str) -> tuple[int, str | None]:
    """The exit code and the line to print for an error that ended the command."""
    if isinstance(exc, Fail):
        return exc.code, str(exc)
    if isinstance(exc, InvalidURL):
        return USAGE, str(exc)
    if isinstance(exc, HTTPError):
        if command != "get":
            return ERROR, str(exc)
        if isinstance(exc, ProxyError):
            return PROXY_FAILED, str(exc)
        if isinstance(exc, TLSError):
            hint = f" ({TLS_HINT})" if "certificate verify failed" in str(exc) else ""
            return TLS_FAILED, f"{exc}{hint}"
        if isinstance(exc, TimeoutError):
            return TIMED_OUT, str(exc)
        if isinstance(exc, ConnectError):
            return (NO_HOST if exc.phase == "dns" else NO_CONNECTION), str(exc)
        if isinstance(exc, TooManyRedirects):
            return REDIRECTS, str(exc)
        return ERROR, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, None
    if isinstance(exc, BrokenPipeError):
        # Python's advice (signal module docs, "Note on SIGPIPE"): send what is left to
        # devnull, so that the flush at exit does not fail again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ERROR, None
    raise exc


def _innermost(exc: BaseException) -> BaseException:
    """The error inside (nested) exception groups of one, as task groups wrap it."""
    while len(getattr(exc, "exceptions", ())) == 1:
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    backend = getattr(args, "backend", "asyncio")
    try:
        from rich.console import Console
    except ImportError:
        print('asyncpool: error: the command needs its extra: pip install "asyncpool-http[cli]"',
              file=sys.stderr)  # fmt: skip
        return USAGE
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    command = _get if args.command == "get" else _bench
    try:
        if backend == "trio":
            try:
                import trio  # noqa: F401
            except ImportError:
                raise Fail(
                    '--backend trio needs trio: pip install "asyncpool-http[trio]"', USAGE
                ) from None
        return anyio.run(command, args, err, backend=backend)
    except BaseException as exc:
        code, message = _failure(_innermost(exc), args.command)
        if message is not None:
            _error(err, message)
        return code
