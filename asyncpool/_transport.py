"""The Transport: Go's net/http.Transport for anyio. It carries out what the pool decides.

Theory of operation
-------------------
The pool's bookkeeping (hosts, wants, idle lists and the LRU, host slots, HTTP/2 stream
reservations, expiry) is ``_pool.Pool``: synchronous code without I/O that takes the time as an
argument and returns what to do as *actions* (deliver a want, dial, close a connection). This
module is the I/O around it:

* ``round_trip`` prepares the wire headers, gets a connection (``_take``: ``Pool.take``, with
  no await; else ``_get_conn``: a want it waits on), runs the exchange on it, retries what the
  server cannot have processed (an HTTP/1.1 request not a byte of which went out on a reused
  connection, as long as such stale connections turn up, as Go does; otherwise at most
  ``MAX_RETRIES`` times, HTTP/2 backing off from the second; up to ``MAX_REFUSED_RETRIES``
  times for streams refused by a server that processes others), and decodes the body.
* Proxies are the Transport's, not the pool's: ``round_trip`` asks ``_proxy.ProxyChooser`` for
  the request's route, and a proxied request's pool key is the route's (``"<origin> via
  <proxy>"`` for a tunnel, ``"via <proxy>"`` for http forwarded by an HTTP proxy); the dial goes
  through ``_proxy.dial_through``. ``pool_timeout`` bounds the wait in ``_get_conn``.
* ``_carry_out`` performs the actions of each decision: it wakes wants, starts dials as tasks of
  the Transport's ``TaskSet`` (never in a request's scope), and closes connections.
* The connections report to a private owner object (``_ConnOwner``: a stream or a connection
  freed, its capacity changed, it closed, an HTTP/2 one idled out), never to the Transport
  itself: each report is one pool decision, and a report that arrives while actions are being
  carried out (closing a connection reports its close at once) waits in ``_reports`` until they
  are done, so no decision ever runs inside another.
* One sweeper task per Transport calls ``Pool.expire`` when the oldest idle connection or the
  next connection lifetime (``max_conn_lifetime``, drawn ±10 % per connection in
  ``_conn_deadline``) is due (or, while nothing is idle and no lifetime pending, waits until
  something is); a dial whose deadline is earlier than its wake-up wakes it.
* A response the garbage collector finalizes unread gives its connection up through
  ``call_soon`` on the event loop, not from inside the collector.

"The lock" is the event loop: the decisions and ``_carry_out`` are synchronous (no ``await``),
so each runs atomically; the tasks do the I/O between them.

Life cycle
----------
A Transport is made anywhere, with no event loop running (at import time, as people make
clients). Its first use (``round_trip``, or ``__aenter__``) binds it to the running loop
(``_start``: the loop's clock, Event class and call-soon) and starts the sweeper. Its tasks
(connections' readers and writers, HTTP/2 body pumps, dials, the sweeper) run in a ``TaskSet``
(``_tasks``): detached tasks of the loop itself (asyncio tasks; trio system tasks), each in a
cancel scope the set holds, so none depends on the task that made the first request or entered
``async with``, and any task may close the pool.

``aclose()`` (``__aexit__`` calls it) decides ``Pool.close`` (every connection closes with
``POOL_CLOSED``, every want fails with ``PoolClosed``), then cancels every task and waits,
shielded, until all have ended: the readers close their sockets on the way out. A cancelled
caller (a timeout around ``aclose()``) cannot cut that short, and a second call only waits for
the first. Afterwards ``round_trip`` raises ``PoolClosed``.

A Transport that started work and is collected unclosed warns ``ResourceWarning`` and, through
``call_soon``, cancels its tasks on the loop (the collector may run inside pool code, so none
runs there); the readers then close the sockets. For the Transport to be collectable at all,
nothing the loop reaches holds it strongly: the connections report to it through a weak
reference (``_ConnOwner``) and the sweeper holds one only between its waits.

Invariants
----------
The pool's, listed in ``_pool``; and here:

* Every task lives in the Transport's ``TaskSet``; ``aclose()`` (or leaving ``async with``)
  closes every connection and fails every want, and returns only when no task is left.
* Every task handles its own errors (a task has nobody to raise to): ``TaskSet`` logs one that
  escapes and the invariant check reports it.
* At rest (no action or report pending) every connection the pool holds open is open, and the
  sweeper waits for an idle connection only while none is.

``Transport._check_invariants()`` checks both levels, raising ``PoolInvariantError``; with
``ASYNCPOOL_CHECK_INVARIANTS=1`` (the test suite sets it) it runs after every decision, and the
tests run it on every Transport before and after it closes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import ssl
import sys
import warnings
import weakref
from collections.abc import AsyncIterable, Callable
from random import random
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, TypeVar

import anyio
import anyio.lowlevel

from ._compression import ACCEPT_ENCODING, BodyLimits, decoding_stream
from ._conn_common import Connection, RetryHint
from ._dial import Dialed, DialFunc, default_ssl_context, dial
from ._errors import (
    ConnectError,
    ConnectTimeout,
    HTTPError,
    PoolClosed,
    PoolTimeout,
    ProxyError,
    TLSHandshakeTimeout,
)
from ._h1 import PARSERS, default_parser
from ._models import SAFE_METHODS, URL, Request, Response, check_target, check_wire_fields
from ._pool import Close, Deliver, Dial, HostStats, Pool, PoolInvariantError, PoolOptions, Want
from ._proxy import (
    OnProxyConnectResponse,
    ProxyChooser,
    ProxyConnectHeaders,
    ProxyOption,
    Route,
    dial_through,
)
from ._sync import Event, call_soon_factory, clock, event_factory
from ._tasks import TaskSet
from ._trace import (
    ClientTrace,
    GotConnInfo,
    RequestDoneInfo,
    RequestStartInfo,
    RetryInfo,
    current_trace,
    frozen,
    logger,
    logging_trace,
)

if TYPE_CHECKING:
    # Imported by the dials (_dial_conn_for), not by `import asyncpool`: HTTP11Connection
    # with h11 and asyncio (a fifth of the import), HTTP2Connection with h2 and hpack (a tenth,
    # and many programs never speak HTTP/2). A connection's kind is told by its ``protocol``
    # (a Literal that mypy narrows the union on), not by isinstance.
    from ._h1.connection import HTTP11Connection
    from ._h2.connection import HTTP2Connection

    Conn = HTTP11Connection | HTTP2Connection

__all__ = ["HostStats", "PoolInvariantError", "Transport", "TransportOptions", "TransportStats"]

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# Retries of one request, at most. An HTTP/1.1 request retries only after failing on a reused
# connection, and one that failed before a byte went out is not counted (Go counts none): each
# uses up a stale connection. An HTTP/2 stream the server refuses could otherwise be retried
# forever (Go's http2 transport stops after 6 too).
MAX_RETRIES = 6
# Retries of streams an HTTP/2 server refused while it processed others (RetryHint.REFUSED: a
# server that closes connections after a few requests, a graceful reload). They are not the
# stale-connection kind above: each round the server makes progress, and a request may need
# as many rounds as there are requests ahead of it. Still bounded, for a server that refuses
# one request for ever while it serves the rest.
MAX_REFUSED_RETRIES = 100
# Go's http2 transport waits before its second and later retries: 1 s, 2 s, 4 s, ... (+ up
# to 10 %), so a server refusing everything is not hammered. Refused retries do not wait.
H2_RETRY_BACKOFF = 1.0
WIRE_HEADERS_CACHE_SIZE = 256  # distinct body-less requests whose wire headers are kept
WIRE_HEADERS_CACHED_MAX = 4096  # characters of host and fields such a request may have


# httpcore's backoff between connect retries: none before the first, then 0.5 s, 1 s, 2 s, ...
CONNECT_RETRY_BACKOFF = 0.5

# Set (to anything but "" or "0") to check the invariants after every pool decision.
CHECK_INVARIANTS_ENV = "ASYNCPOOL_CHECK_INVARIANTS"

T = TypeVar("T")


def _host_port(url: URL) -> str:
    """The "host:port" errors and get_conn name; an IPv6 address in brackets, as Go's
    net.JoinHostPort."""
    return f"[{url.host}]:{url.port}" if ":" in url.host else f"{url.host}:{url.port}"


@dataclasses.dataclass(frozen=True)
class TransportStats:
    """A snapshot of the pool. ``hosts`` is keyed by origin ("http://host:port")."""

    hosts: dict[str, HostStats]
    dials: int
    failed_dials: int
    reused: int
    retries: int
    idle_timeouts: int
    evictions: int
    server_closed_idle: int
    # Connections retired at max_conn_lifetime, and after max_requests_per_conn requests.
    lifetime_expirations: int = 0
    max_requests_expirations: int = 0

    @property
    def idle(self) -> int:
        return sum(h.idle for h in self.hosts.values())

    @property
    def in_use(self) -> int:
        return sum(h.in_use for h in self.hosts.values())

    @property
    def dialing(self) -> int:
        return sum(h.dialing for h in self.hosts.values())

    @property
    def waiting(self) -> int:
        return sum(h.waiting for h in self.hosts.values())

    @property
    def total(self) -> int:
        return sum(h.total for h in self.hosts.values())


class SharedOptions(TypedDict, total=False):
    """``Transport``'s options but ``http2``, ``connect_retries``, ``uds`` and
    ``local_address`` (which the httpx adapter takes as httpx's arguments), for ``**options``
    that a type checker checks."""

    max_idle_conns: int
    max_idle_conns_per_host: int | None
    max_conns_per_host: int
    max_conns: int
    idle_conn_timeout: float | None
    max_conn_lifetime: float | None
    max_requests_per_conn: int | None
    dial_timeout: float | None
    tls_handshake_timeout: float | None
    response_header_timeout: float | None
    read_timeout: float | None
    pool_timeout: float | None
    expect_continue_timeout: float | None
    disable_keep_alives: bool
    disable_compression: bool
    max_response_header_bytes: int
    max_body_bytes: int | None
    max_decompression_ratio: float | None
    tls_config: ssl.SSLContext | None
    dial: DialFunc | None
    trace: ClientTrace | None
    http2_prior_knowledge: bool
    strict_max_concurrent_streams: bool
    read_idle_timeout: float | None
    ping_timeout: float
    http1_parser: str
    retry_unprocessed: bool


class TransportOptions(SharedOptions, total=False):
    """Every option of ``Transport(...)``, as ``Client(**options)`` takes them."""

    http2: bool
    connect_retries: int
    proxy: ProxyOption
    proxy_connect_headers: ProxyConnectHeaders
    on_proxy_connect_response: OnProxyConnectResponse | None
    uds: str | None
    local_address: str | None


class _Want(Want["HTTP11Connection", "HTTP2Connection"]):
    """A want with what its dial needs (the request's host, port and TLS name, its trace) and
    the Event its request waits on."""

    __slots__ = ("ready", "request", "route", "trace")

    def __init__(
        self,
        request: Request,
        trace: ClientTrace | None,
        ready: Event,
        h2_capable: bool,
        route: Route | None,
    ) -> None:
        super().__init__(request.pool_key if route is None else route.key, h2_capable)
        self.request = request
        self.route = route  # the proxy its dial goes through (None: direct)
        self.trace = trace  # the dial fires this request's hooks
        self.ready = ready


class _ConnOwner:
    """What the connections report to (``ConnOwner``, ``H2Owner``): each report is one pool
    decision of the Transport, which stays off the public surface. It holds the Transport
    weakly: the connections' tasks are reachable from the event loop, and through them a
    strong reference would keep an abandoned Transport alive for ever (see ``__del__``).
    Once the Transport is gone, reports have nobody to decide them and are dropped."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Transport) -> None:
        self._transport = weakref.ref(transport)

    def release(self, conn: HTTP11Connection, trace: ClientTrace | None) -> None:
        transport = self._transport()
        if transport is not None:
            transport._release(conn, trace)

    def release_stream(self, conn: HTTP2Connection) -> None:
        transport = self._transport()
        if transport is not None:
            transport._decide(transport._pool.release_stream, conn)
            if conn.idle_at is not None:
                conn.went_idle()

    def capacity_changed(self, conn: HTTP2Connection) -> None:
        transport = self._transport()
        if transport is not None:
            transport._decide(transport._pool.capacity_changed, conn)

    def conn_closed(self, conn: Conn) -> None:
        transport = self._transport()
        if transport is None:
            return
        if conn.protocol == "HTTP/1.1":
            transport._decide(transport._pool.h1_closed, conn)
        else:
            transport._decide(transport._pool.h2_closed, conn)

    def idle_timed_out(self, conn: HTTP2Connection) -> None:
        transport = self._transport()
        if transport is not None:
            transport._decide(transport._pool.h2_idle_timed_out, conn)


class Transport:
    """An HTTP connection pool with Go's Transport semantics. Create it anywhere; it starts
    its tasks on first use and ``await aclose()`` (from any task) closes it, or use it as an
    async context manager. See the README for the options."""

    # Class-level defaults: __del__ reads them even when __init__ raised before setting them.
    _tasks: TaskSet | None = None
    _closed = False

    def __init__(
        self,
        *,
        max_idle_conns: int = 100,
        max_idle_conns_per_host: int | None = None,
        max_conns_per_host: int = 0,
        max_conns: int = 0,
        idle_conn_timeout: float | None = 90.0,
        max_conn_lifetime: float | None = None,
        max_requests_per_conn: int | None = None,
        dial_timeout: float | None = 30.0,
        tls_handshake_timeout: float | None = 10.0,
        response_header_timeout: float | None = None,
        read_timeout: float | None = None,
        pool_timeout: float | None = None,
        expect_continue_timeout: float | None = 1.0,
        disable_keep_alives: bool = False,
        disable_compression: bool = False,
        max_response_header_bytes: int = 1 << 20,
        max_body_bytes: int | None = None,
        max_decompression_ratio: float | None = 100.0,
        tls_config: ssl.SSLContext | None = None,
        dial: DialFunc | None = None,
        trace: ClientTrace | None = None,
        http2: bool = True,
        http2_prior_knowledge: bool = False,
        strict_max_concurrent_streams: bool = False,
        read_idle_timeout: float | None = None,
        ping_timeout: float = 15.0,
        http1_parser: str = "auto",
        connect_retries: int = 0,
        proxy: ProxyOption = None,
        proxy_connect_headers: ProxyConnectHeaders = None,
        on_proxy_connect_response: OnProxyConnectResponse | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retry_unprocessed: bool = True,
    ) -> None:
        for name, value in (
            ("max_idle_conns", max_idle_conns),
            ("max_conns_per_host", max_conns_per_host),
            ("max_conns", max_conns),
            ("connect_retries", connect_retries),
            ("max_response_header_bytes", max_response_header_bytes),
            ("max_body_bytes", max_body_bytes or 0),
            ("max_decompression_ratio", max_decompression_ratio or 0),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        for name, limit in (
            ("max_conn_lifetime", max_conn_lifetime),
            ("max_requests_per_conn", max_requests_per_conn),
        ):
            if limit is not None and not limit > 0:
                raise ValueError(f"{name} must be > 0 or None, not {limit}")
        # Options: immutable after construction. 0 means "no limit" for the two limits, as Go.
        self.max_idle_conns = max_idle_conns
        if max_idle_conns_per_host is None:
            # As max_idle_conns, whose 0 is no limit (not "keep none": no keep-alive at all).
            max_idle_conns_per_host = max_idle_conns or sys.maxsize
        self.max_idle_conns_per_host = max_idle_conns_per_host
        self.max_conns_per_host = max_conns_per_host
        self.max_conns = max_conns
        self.idle_conn_timeout = idle_conn_timeout
        # Each connection lives max_conn_lifetime +-10 % (drawn per connection, so that those
        # dialed together do not all go at once), then is retired: see _pool.
        self.max_conn_lifetime = max_conn_lifetime
        self.max_requests_per_conn = max_requests_per_conn
        self.dial_timeout = dial_timeout
        self.tls_handshake_timeout = tls_handshake_timeout
        self.response_header_timeout = response_header_timeout
        self.read_timeout = read_timeout
        # The longest a request waits for a connection (a free slot, another's, its dial);
        # None: no limit, as Go.
        self.pool_timeout = pool_timeout
        self.expect_continue_timeout = expect_continue_timeout
        self.disable_keep_alives = disable_keep_alives
        self.disable_compression = disable_compression
        self.max_response_header_bytes = max_response_header_bytes
        # What aread() holds of a body (see BodyLimits); None: no limit. 0 ratio: none either.
        self.max_body_bytes = max_body_bytes
        self.max_decompression_ratio = max_decompression_ratio
        self.http2 = http2
        self.http2_prior_knowledge = http2_prior_knowledge
        self.strict_max_concurrent_streams = strict_max_concurrent_streams
        self.read_idle_timeout = read_idle_timeout
        self.ping_timeout = ping_timeout
        if http1_parser == "auto":
            http1_parser = default_parser()
        if http1_parser not in PARSERS:
            raise ValueError(
                f"http1_parser must be 'auto', 'h11' or 'httptools', not {http1_parser!r}"
            )
        self.http1_parser = http1_parser
        self.connect_retries = connect_retries
        # Go's retry of a request that died unprocessed on a reused connection; False: none (a
        # Client's retry= policy, or the caller, decides instead).
        self.retry_unprocessed = retry_unprocessed
        # Which proxy each request goes through (see _proxy.py); a bad URL raises here.
        self._proxies = ProxyChooser(proxy)
        # Without a proxy option no request is routed: the request path skips the call.
        self._route_for = None if proxy is None else self._proxies.route
        self.proxy_connect_headers = proxy_connect_headers
        self.on_proxy_connect_response = on_proxy_connect_response
        self._alpn = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        # The caller's context is used as given, never changed (it may serve elsewhere), so it
        # offers the ALPN protocols its owner set, if any: none, and https is HTTP/1.1. Python's
        # ssl sets ALPN only on a context (not per connection), and a context cannot be copied.
        self._tls_config = tls_config
        self._owns_tls_config = tls_config is None  # the default one, made on first use
        self._dial_func = dial
        for option, given in (("uds", uds), ("local_address", local_address)):
            if given is not None and dial is not None:
                raise TypeError(f"Transport: give {option}= or dial=, not both")
        if uds is not None and local_address is not None:
            raise TypeError("Transport: give uds= or local_address=, not both (a Unix socket)")
        if uds is not None and proxy is not None:
            raise TypeError("Transport: give uds= or proxy=, not both (a Unix socket is no proxy)")
        self.uds = uds  # every connection to this Unix socket, whatever the URL's host
        self.local_address = local_address  # the source IP of TCP connections
        self._trace = trace  # fires for every request, outermost

        # Guarded by the event loop: changed only by synchronous code (no await inside).
        self._pool: Pool[HTTP11Connection, HTTP2Connection, _Want] = Pool(
            PoolOptions(
                max_idle_conns=max_idle_conns,
                max_idle_conns_per_host=max_idle_conns_per_host,
                max_conns_per_host=max_conns_per_host,
                max_conns=max_conns,
                idle_conn_timeout=idle_conn_timeout,
                disable_keep_alives=disable_keep_alives,
                strict_max_concurrent_streams=strict_max_concurrent_streams,
                max_requests_per_conn=max_requests_per_conn,
            )
        )
        self._owner = _ConnOwner(self)
        # Reports from connections that arrived while _carry_out ran; it decides them after.
        self._reports: collections.deque[tuple[Callable[[Any, float], object], Any]] = (
            collections.deque()
        )
        self._carrying_out = False
        self._entered = False
        # The tasks (connections' readers and writers, dials, the sweeper): made on first use
        # by _start(), on the loop of that use.
        self._tasks: TaskSet | None = None
        self._closed = False
        # The running loop's own clock, Event class and call-soon, looked up once (_start).
        self._clock: Callable[[], float] = anyio.current_time
        self._new_event: Callable[[], Event] = anyio.Event
        self._call_soon: Callable[[Callable[[], object]], None] | None = None
        # Set while the idle sweeper waits for a first idle connection; who fills an empty
        # idle list sets it.
        self._idle_wakeup: Event | None = None
        # While the sweeper waits: what wakes it, and the time it sleeps until (None: until an
        # idle connection). A connection dialed with an earlier lifetime deadline wakes it.
        self._sweep_wakeup: Event | None = None
        self._sweep_at: float | None = None
        # Wire headers of body-less requests (see _wire_headers); used by callers, no await.
        self._wire_headers_cache: dict[
            tuple[tuple[str, ...], str, str, bool, bool], tuple[list[tuple[str, str]], bool]
        ] = {}
        self._reused = 0
        self._retries = 0
        self._check = os.environ.get(CHECK_INVARIANTS_ENV, "") not in ("", "0")

    # -- life cycle ---------------------------------------------------------------------------

    def _start(self) -> TaskSet:
        """Bind to the running loop and start the background work: on first use."""
        self._clock, self._new_event = clock(), event_factory()
        self._call_soon = call_soon_factory()
        tasks = self._tasks = TaskSet()
        if self.idle_conn_timeout is not None or self.max_conn_lifetime is not None:
            tasks.start_soon(_sweep_idle_conns, weakref.ref(self), name="asyncpool idle sweeper")
        return tasks

    async def __aenter__(self) -> Transport:
        if self._entered or self._closed:
            raise PoolClosed("a Transport can be entered once; create a new one")
        self._entered = True
        if self._tasks is None:
            self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The block's own exception propagates as it is: closing does not touch it.
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection, fail every request waiting for one, and wait until every
        task of the pool has ended. From any task; idempotent (a second call waits for the
        first to finish); shielded, so it completes under a cancelled scope or a timeout."""
        if not self._closed:
            self._closed = True
            self._pool.close(self._clock())
            self._decided()
        tasks = self._tasks
        if tasks is not None:
            await tasks.aclose()

    def __del__(self) -> None:
        tasks = self._tasks
        if tasks is None or self._closed:
            return
        self._closed = True
        # Not pool code, not here: the collector may run inside it. Cancelling the tasks on
        # the loop makes each connection's reader close its socket on its way out. Scheduled
        # before warning, as a warning may be raised as an error (-W error).
        if self._call_soon is not None:
            self._call_soon(tasks.cancel_all)
        warnings.warn(
            f"unclosed Transport {self!r}: close it with `await transport.aclose()` "
            "(or use `async with`)",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )

    @property
    def tls_config(self) -> ssl.SSLContext:
        """The SSL context https connections use (the default one is made on first use). A
        ``tls_config`` given is used as given, never changed: its ALPN protocols are what https
        offers (none set: HTTP/1.1 only; set ``["h2", "http/1.1"]`` on it for HTTP/2)."""
        return self._ssl_context

    @property
    def _ssl_context(self) -> ssl.SSLContext:
        if self._tls_config is None:
            self._tls_config = default_ssl_context(self._alpn)
        return self._tls_config

    @property
    def _alpn_to_set(self) -> list[str] | None:
        """The ALPN protocols to set on the context before a handshake: this pool's on its own
        context, None (the context's own) on the caller's."""
        return self._alpn if self._owns_tls_config else None

    # -- the request path ---------------------------------------------------------------------

    async def round_trip(self, request: Request) -> Response:
        """Send one request and return its response once the head has arrived."""
        if request.method not in SAFE_METHODS:
            # As Go checks the request's context first: a scope cancelled in this turn (or
            # whose deadline had passed as it opened) would get its cancellation only at the
            # head's wait, after the request went out. Not for a safe method: the check costs
            # a GET ~7%, and the server does nothing a caller relies on for one.
            await anyio.lowlevel.checkpoint_if_cancelled()
        if self._tasks is None or self._closed:
            if self._closed:
                raise PoolClosed("the Transport is closed; create a new one")
            self._start()
        trace = self._trace_for(request)
        # Checked here, before any connection is taken or dialed, for every writer alike; a
        # URL's own target is valid by construction (URL refuses what this refuses).
        if request.target is not request.url.target:
            check_target(request.target, request.url.host_header)
        headers, asked_compression = self._wire_headers(request)
        # One coroutine for the whole round trip (a frame less a request in flight), so the
        # retries are here, between request_start and request_done below.
        try:
            if trace and trace.request_start:
                trace, added = self._request_start(request, trace)
                if added:  # (checked in here: a trace the start returned has its done)
                    headers = [*headers, *added]  # a copy: the cached list is shared
                    check_wire_fields(headers, request.url.host_header)
            route = None if self._route_for is None else self._route_for(request)
            if route is not None and route.forward:
                authorization = route.proxy.authorization
                if authorization is not None and "proxy-authorization" not in request.headers:
                    headers = [*headers, ("Proxy-Authorization", authorization)]  # a shared list
            counted = refused = 0  # retries of each kind so far
            while True:
                conn = self._take(request, trace, route)
                if conn is None:  # (no coroutine made when a connection is free)
                    conn = await self._get_conn(request, trace, route)
                try:
                    response = await conn.round_trip(
                        request,
                        headers,
                        trace=trace,
                        response_header_timeout=self.response_header_timeout,
                        read_timeout=self.read_timeout,
                    )
                except HTTPError as exc:
                    if not self.retry_unprocessed:
                        raise
                    if not self._should_retry(exc, request):
                        if exc.retry_hint is not None:
                            exc.args = (
                                f"{exc.args[0]}; this {request.method} request cannot be "
                                "replayed, so it was not retried (an Idempotency-Key header "
                                "marks a request as safe to retry)",
                            )
                        raise
                    delay = 0.0
                    hint = exc.retry_hint
                    if hint is RetryHint.REFUSED and refused < MAX_REFUSED_RETRIES:
                        refused += 1
                    elif hint is RetryHint.NOTHING_WRITTEN and conn.protocol == "HTTP/1.1":
                        # Not counted, as in Go: not a byte went out on a reused connection,
                        # now closed, so each such retry uses up one stale idle connection (a
                        # reload can leave every one of them dead, and a caller may find them
                        # all in one turn of the loop, before their readers see the close).
                        pass
                    elif counted < MAX_RETRIES:
                        counted += 1
                        if counted > 1 and conn.protocol == "HTTP/2":
                            delay = H2_RETRY_BACKOFF * (1 << (counted - 2)) * (1 + random() / 10)
                    else:
                        exc.args = (f"{exc.args[0]}; gave up after {counted + refused} retries",)
                        raise
                    self._retries += 1
                    if trace and trace.request_retried:
                        assert hint is not None
                        trace.request_retried(RetryInfo(hint, exc, counted + refused, delay))
                    if delay:
                        await anyio.sleep(delay)
                    continue
                break
            try:
                self._prepare_body(response, request.url.host_header, asked_compression)
            except BaseException:  # (a decoder that cannot start): nobody will read it
                response._discard()
                raise
        except BaseException as exc:
            if trace and trace.request_done:
                trace.request_done(
                    frozen(RequestDoneInfo, request=request, response=None, error=exc)
                )
            raise
        if trace and trace.request_done:
            try:
                trace.request_done(
                    frozen(RequestDoneInfo, request=request, response=response, error=None)
                )
            except BaseException:
                await response.aclose()
                raise
        return response

    def _request_start(
        self, request: Request, trace: ClientTrace
    ) -> tuple[ClientTrace, list[tuple[str, str]]]:
        """Fire ``request_start``: the trace with the one it returns composed in, and the
        fields it adds (the caller sends them too, checked as the others)."""
        assert trace.request_start is not None
        info = frozen(RequestStartInfo, request=request, add_headers=[])
        extra = trace.request_start(info)
        if extra is not None:
            trace = extra.compose(trace)
        return trace, info.add_headers

    def _prepare_body(self, response: Response, host: str, asked_compression: bool) -> None:
        """Decode what the server compressed because we asked, and bound what is read."""
        decoded = encoding = None
        if asked_compression and response.status_code not in (204, 304):  # (bodiless: as is)
            encoding = response.headers.get("content-encoding")
            made = decoding_stream(response._stream, encoding, host) if encoding else None
            if made is not None:
                stream, decoded = made
                response._set_stream(stream)
                del response.headers["content-encoding"]
                del response.headers["content-length"]
                response.uncompressed = True
        if self.max_body_bytes is not None or (
            decoded is not None and self.max_decompression_ratio
        ):
            response._check_read = BodyLimits(
                host, self.max_body_bytes, decoded, self.max_decompression_ratio, encoding
            )
        response._call_soon = self._call_soon  # for __del__: the pool's work runs on the loop

    def _trace_for(self, request: Request) -> ClientTrace | None:
        """The request's trace, then the block's, then the pool's, then logging's."""
        trace = request.trace
        outer = current_trace()
        if outer is not None:
            trace = trace.compose(outer) if trace is not None else outer
        outer = self._trace
        if outer is not None:
            trace = trace.compose(outer) if trace is not None else outer
        if logger.isEnabledFor(logging.DEBUG):
            log = logging_trace(f"{request.method} {request.url}")
            trace = trace.compose(log) if trace is not None else log
        return trace

    def _wire_headers(self, request: Request) -> tuple[list[tuple[str, str]], bool]:
        """The header fields to send, and whether we asked for compression ourselves. Those of
        a request without a body are made once per (fields, host, method, settings) and shared:
        nobody changes them, and every such request would build the same list again."""
        if request.content is not None:
            return self._make_wire_headers(request)
        given = request._headers  # (None: no fields given, none made)
        key = (
            () if given is None else tuple(given._fields),
            request.url.host_header,
            request.method,
            self.disable_compression,  # settings a caller may change between requests
            self.disable_keep_alives,
        )
        made = self._wire_headers_cache.get(key)
        if made is None:
            made = self._make_wire_headers(request)
            fields, host_header = key[0], key[1]
            # Not a giant a server sent us to (a Location's host, a cookie it set): checked,
            # never kept.
            if len(host_header) + sum(map(len, fields)) <= WIRE_HEADERS_CACHED_MAX:
                if len(self._wire_headers_cache) >= WIRE_HEADERS_CACHE_SIZE:
                    self._wire_headers_cache.clear()
                self._wire_headers_cache[key] = made
        return made

    def _make_wire_headers(self, request: Request) -> tuple[list[tuple[str, str]], bool]:
        """The fields to send, checked as every writer (h11, httptools, HTTP/2) would send
        them (``check_wire_fields``): a request that cannot be sent fails before any dial."""
        headers = request.headers.items()
        given = {name.lower() for name, _ in headers}
        host_header = request.url.host_header
        if "host" not in given:
            headers.insert(0, ("Host", host_header))
        else:  # the URL's host is still HTTP/2's :authority
            check_wire_fields([("Host", host_header)], host_header)
        check_wire_fields(headers, host_header)
        asked_compression = (
            not self.disable_compression
            and request.method != "HEAD"
            and "accept-encoding" not in given
            and "range" not in given
        )
        if asked_compression:
            headers.append(("Accept-Encoding", ACCEPT_ENCODING))
        if self.disable_keep_alives and "connection" not in given:
            headers.append(("Connection", "close"))
        content = request.content
        if "content-length" not in given and "transfer-encoding" not in given:
            if isinstance(content, bytes):
                if content or request.method in _METHODS_WITH_BODY:
                    headers.append(("Content-Length", str(len(content))))
            elif isinstance(content, AsyncIterable):
                headers.append(("Transfer-Encoding", "chunked"))
            elif request.method in _METHODS_WITH_BODY:
                headers.append(("Content-Length", "0"))
        return headers, asked_compression

    @staticmethod
    def _should_retry(exc: HTTPError, request: Request) -> bool:
        """Go's shouldRetryRequest. Hints are only set on failures of reused connections."""
        if exc.retry_hint in (RetryHint.NOTHING_WRITTEN, RetryHint.REFUSED):
            return request.body_is_rewindable or exc.request_unused
        if exc.retry_hint is RetryHint.NO_RESPONSE:
            return request.is_replayable
        return False

    def _take(
        self, request: Request, trace: ClientTrace | None, route: Route | None
    ) -> Connection | None:
        """A connection at once (``Pool.take``), or None: then ``_get_conn`` waits for one."""
        url = request.url
        if trace and trace.get_conn:
            trace.get_conn(_host_port(url))
        pool = self._pool
        conn = pool.take(request.pool_key if route is None else route.key, self._clock())
        if pool.actions or self._idle_wakeup is not None or self._check:
            self._decided()  # closes the stale idle connections it met on the way
        listener = request.wait_listener
        if conn is not None:
            if listener is not None:
                listener.conn_assigned()
            if conn.requests_started:
                self._reused += 1
            if trace:
                self._trace_got_conn(trace, conn, was_idle=True, idle_time=pool.idle_time)
        return conn

    async def _get_conn(
        self, request: Request, trace: ClientTrace | None, route: Route | None
    ) -> Connection:
        """After ``_take`` found nothing: queue a want (which may dial) and wait for it."""
        url = request.url
        pool = self._pool
        listener = request.wait_listener
        if self._closed:  # a retry after the pool closed: no dial can start any more
            raise PoolClosed("the Transport closed during the request", host=_host_port(url))

        if trace and trace.wait_for_conn_start:
            trace.wait_for_conn_start()
        queued_at = self._clock()
        h2_capable = self.http2 if url.scheme == "https" else self.http2_prior_knowledge
        if route is not None and route.forward:
            h2_capable = False  # absolute-form HTTP/1.1 to the proxy, as Go
        want = _Want(request, trace, self._new_event(), h2_capable, route)
        self._decide(pool.add_want, want)
        if listener is not None and want.waiting:
            # Its own dial, if one started, has told it so already (_start_dial).
            if pool.waits_on_h2_dial(want):
                listener.conn_dialing()
            else:
                listener.conn_waiting()
        try:
            if self.pool_timeout is None:
                await want.ready.wait()
            else:
                with anyio.move_on_after(self.pool_timeout):
                    await want.ready.wait()
        except BaseException:
            self._withdraw(pool.cancel_want, want)
            raise
        if not want.ready.is_set():  # pool_timeout passed (a want served meanwhile is used)
            self._withdraw(pool.cancel_want, want)
            raise PoolTimeout(
                f"no connection within pool_timeout={self.pool_timeout}s", host=_host_port(url)
            )
        if trace and trace.wait_for_conn_done:
            queued = self._clock() - queued_at
            try:
                trace.wait_for_conn_done(queued, want.error)
            except BaseException:
                self._withdraw(pool.give_back, want)
                raise
        if want.error is not None:
            raise want.error
        conn = want.conn
        if conn is None:
            _broken("a woken want is served", want.key)
        if conn.requests_started:
            self._reused += 1
        if trace:
            self._trace_got_conn(trace, conn, was_idle=False, idle_time=0.0)
        return conn

    def _withdraw(self, decision: Callable[[_Want, float], object], want: _Want) -> None:
        """Withdraw ``want``, giving back what it was served, unused. An HTTP/2 stream given
        back may leave its connection idle: its reader, waiting with no deadline while a stream
        was reserved, must learn it (as ``_ConnOwner.release_stream`` tells it)."""
        conn = want.conn
        self._decide(decision, want)
        if conn is not None and conn.protocol == "HTTP/2" and conn.idle_at is not None:
            conn.went_idle()

    def _trace_got_conn(
        self, trace: ClientTrace, conn: Conn, *, was_idle: bool, idle_time: float
    ) -> None:
        if not trace.got_conn:
            return
        info = frozen(
            GotConnInfo,
            reused=conn.requests_started > 0,
            was_idle=was_idle,
            idle_time=idle_time,
            local_address=conn.local_address,
            remote_address=conn.remote_address,
            protocol=conn.protocol,
        )
        try:
            trace.got_conn(info)
        except BaseException:
            self._give_back(conn)  # unused: it goes back, as after any failure
            raise

    # -- carrying out the pool's decisions ----------------------------------------------------

    def _decide(self, decision: Callable[[T, float], object], arg: T) -> None:
        """Run one pool decision and carry out its actions; while actions are being carried out
        (a connection reporting its close as it is closed), queue it for after them."""
        if self._carrying_out:
            self._reports.append((decision, arg))
            return
        decision(arg, self._clock())
        self._decided()

    def _decided(self) -> None:
        """After a decision made outside ``_carry_out`` (by a task, between awaits)."""
        if self._pool.actions:
            self._carry_out()
        elif self._idle_wakeup is not None or self._check:  # (the hot path calls nothing)
            self._at_rest()

    def _at_rest(self) -> None:
        if self._idle_wakeup is not None and self._pool.idle_lru:
            self._idle_wakeup.set()
            self._idle_wakeup = None
        if self._check:
            self._check_invariants()

    def _carry_out(self) -> None:
        """Carry out the pool's actions, then the decisions the connections reported meanwhile
        and their actions, until none is left."""
        pool, reports = self._pool, self._reports
        actions = pool.actions
        self._carrying_out = True
        try:
            done = 0
            while True:
                while done < len(actions):
                    action = actions[done]
                    done += 1
                    if isinstance(action, Deliver):
                        want = action.want
                        want.ready.set()
                        listener = want.request.wait_listener
                        if listener is not None and want.conn is not None:
                            listener.conn_assigned()
                    elif isinstance(action, Dial):
                        self._start_dial(action)
                    else:
                        self._close(action)
                if not reports:
                    break
                decision, arg = reports.popleft()
                decision(arg, self._clock())
        finally:
            actions.clear()
            self._carrying_out = False
        self._at_rest()

    def _start_dial(self, dial: Dial[_Want]) -> None:
        if self._tasks is None:
            _broken("a dial starts in a started Transport", dial.want.key)
        listener = dial.want.request.wait_listener
        if listener is not None:
            listener.conn_dialing()
        self._tasks.start_soon(self._dial_conn_for, dial, name=f"asyncpool dial {dial.want.key}")

    @staticmethod
    def _close(close: Close[HTTP11Connection, HTTP2Connection]) -> None:
        close.conn.close(close.why, close.error)

    def _release(self, conn: HTTP11Connection, trace: ClientTrace | None) -> None:
        """An HTTP/1.1 response ended and its connection may carry another request: the
        hot path of every request, so it runs the decision directly."""
        if self._carrying_out:
            self._reports.append((self._pool.put_idle, conn))
            return
        pool = self._pool
        reason = pool.put_idle(conn, self._clock())
        if pool.actions or self._idle_wakeup is not None or self._check:
            self._decided()  # (inlined test: this runs once a request)
        if trace and trace.put_idle_conn:
            trace.put_idle_conn(reason)

    def _give_back(self, conn: Conn) -> None:
        """A connection (or reserved stream) handed out by ``take`` but never used."""
        if conn.protocol == "HTTP/1.1":
            self._decide(self._pool.put_unused, conn)
        else:
            self._owner.release_stream(conn)

    # -- dialing --------------------------------------------------------------------------------

    async def _dial_conn_for(self, dial_action: Dial[_Want]) -> None:
        from ._h1.connection import HTTP11Connection  # once per dial (see the imports above)

        want, may_be_h2 = dial_action.want, dial_action.may_be_h2
        url = want.request.url
        route = want.route
        # Errors of a connection to a forward proxy name the proxy: it is the one we talk to.
        host_port = (
            route.proxy.host_port if route is not None and route.forward else _host_port(url)
        )
        conn: Conn
        dial_timeout, tls_handshake_timeout = self.dial_timeout, self.tls_handshake_timeout
        if want.request.connect_timeout is not None:  # the request's own, for each phase
            timeout = want.request.connect_timeout
            dial_timeout = tls_handshake_timeout = None if timeout == math.inf else timeout
        try:
            dialed = await self._dial_with_retries(want, dial_timeout, tls_handshake_timeout)
            h2 = dialed.alpn_protocol == "h2" or (url.scheme == "http" and may_be_h2)
            if h2:
                from ._h2.connection import HTTP2Connection  # once per connection

                conn = HTTP2Connection(
                    self._owner,
                    dialed.stream,
                    key=want.key,
                    host_port=host_port,
                    authority=url.host_header,
                    scheme=url.scheme,
                    idle_conn_timeout=self.idle_conn_timeout,
                    read_idle_timeout=self.read_idle_timeout,
                    ping_timeout=self.ping_timeout,
                    expect_continue_timeout=self.expect_continue_timeout,
                    max_header_bytes=self.max_response_header_bytes,
                    local_address=dialed.local_address,
                    remote_address=dialed.remote_address,
                )
                try:
                    with anyio.move_on_after(tls_handshake_timeout) as scope:
                        await conn.handshake()
                    if scope.cancelled_caught:
                        timeout_type = (
                            TLSHandshakeTimeout if url.scheme == "https" else ConnectTimeout
                        )
                        raise timeout_type(
                            "no HTTP/2 SETTINGS from the server within "
                            f"tls_handshake_timeout={tls_handshake_timeout}s",
                            host=host_port,
                        )
                except BaseException:
                    await anyio.aclose_forcefully(dialed.stream)
                    raise
        except BaseException as exc:
            self._pool.dial_failed(dial_action, exc, self._clock())
            self._decided()
            if isinstance(exc, Exception):
                return
            raise
        if not h2:
            conn = HTTP11Connection(
                self._owner,
                dialed.stream,
                key=want.key,
                host_port=host_port,
                max_header_bytes=self.max_response_header_bytes,
                expect_continue_timeout=self.expect_continue_timeout,
                parser=self.http1_parser,
                local_address=dialed.local_address,
                remote_address=dialed.remote_address,
                absolute_form=route is not None and route.forward,
            )
        conn.trace = want.trace
        if self._tasks is None:
            _broken("a dial ends in a started Transport", want.key)
        if self.max_conn_lifetime is not None:
            conn.expires_at = expires_at = self._conn_deadline(self._clock())
            wakeup, sweep_at = self._sweep_wakeup, self._sweep_at
            if wakeup is not None and (sweep_at is None or expires_at < sweep_at):
                self._sweep_wakeup = self._idle_wakeup = None
                wakeup.set()  # the sweeper sleeps past this connection's end: wake it
        conn.start(self._tasks)
        if conn.protocol == "HTTP/1.1":
            self._pool.dialed_h1(dial_action, conn, self._clock())
        else:
            self._pool.dialed_h2(dial_action, conn, self._clock())
        self._decided()

    def _conn_deadline(self, now: float) -> float:
        """When a connection made ``now`` ends: ``max_conn_lifetime`` +-10 %, drawn here (the
        pool stays deterministic: it is given the deadline)."""
        lifetime = self.max_conn_lifetime
        if lifetime is None:
            _broken("a connection's deadline is drawn only with max_conn_lifetime", "")
        return now + lifetime * (0.9 + 0.2 * random())

    async def _dial_with_retries(
        self, want: _Want, dial_timeout: float | None, tls_handshake_timeout: float | None
    ) -> Dialed:
        """``dial``, tried again ``connect_retries`` times after a failed DNS lookup or TCP
        connect (or dial function), as httpcore's ``retries``: not after a TLS failure."""
        url = want.request.url
        retries_left = self.connect_retries
        delay = 0.0
        while True:
            try:
                if want.route is not None:
                    return await dial_through(
                        want.route,
                        url.scheme,
                        url.host,
                        url.port,
                        _host_port(url),
                        server_name=want.request.sni_hostname or url.host,
                        dial_timeout=dial_timeout,
                        tls_handshake_timeout=tls_handshake_timeout,
                        ssl_context=lambda: self._ssl_context,
                        alpn_protocols=self._alpn_to_set,
                        dial_func=self._dial_func,
                        trace=want.trace,
                        connect_headers=self.proxy_connect_headers,
                        on_connect_response=self.on_proxy_connect_response,
                        local_address=self.local_address,  # from this IP to the proxy
                    )
                return await dial(
                    url.scheme,
                    url.host,
                    url.port,
                    _host_port(url),
                    server_name=want.request.sni_hostname or url.host,
                    dial_timeout=dial_timeout,
                    tls_handshake_timeout=tls_handshake_timeout,
                    ssl_context=self._ssl_context if url.scheme == "https" else None,
                    alpn_protocols=self._alpn_to_set,
                    dial_func=self._dial_func,
                    trace=want.trace,
                    uds=self.uds,
                    local_address=self.local_address,
                )
            except ProxyError:
                raise  # the proxy answered: asking again gets the same answer
            except (ConnectError, ConnectTimeout):
                # Tried again while a request waits for it: its own, or one sharing its HTTP/2
                # dial (that one would fail with it).
                if retries_left <= 0 or not self._pool.dial_awaited(want):
                    raise
            retries_left -= 1
            await anyio.sleep(delay)
            delay = CONNECT_RETRY_BACKOFF if delay == 0 else delay * 2

    # -- invariant checks (tests, debugging) --------------------------------------------------

    def _check_invariants(self) -> None:
        """Raise PoolInvariantError naming the first invariant (the pool's, then this module's)
        that the state breaks; at rest only, as the Transport is after each decision it carries
        out. O(connections + wants): for tests and debugging."""
        pool = self._pool
        pool.check_invariants()
        if self._carrying_out or self._reports or pool.actions:
            _broken("the pool is at rest after carrying out a decision", f"{len(self._reports)}")
        for conn in pool.open:
            if conn.closed:
                _broken("an open connection is not closed", f"{conn!r} ({conn.close_why})")
        if pool.closing:
            _broken("every connection the pool closed has reported it", f"{pool.closing}")
        if self._idle_wakeup is not None and pool.idle_lru:
            _broken("the sweeper waits for an idle connection only when none is", "")
        if self._tasks is not None and self._tasks.failure is not None:
            _broken("every task handles its own errors", repr(self._tasks.failure))

    # -- the public controls --------------------------------------------------------------------

    async def close_idle_connections(self) -> None:
        """Close every idle connection now, and those in use when they are freed, until the
        next request asks for a connection (Go's CloseIdleConnections)."""
        self._pool.close_idle(self._clock())
        self._decided()
        await anyio.lowlevel.checkpoint()

    def stats(self) -> TransportStats:
        """A snapshot of the pool: O(hosts). May be called from another thread (an
        OpenTelemetry reader's): each number is read once, and a host's may be off by a change
        the loop makes meanwhile."""
        pool = self._pool
        return TransportStats(
            hosts=pool.host_stats(),
            dials=pool.dials,
            failed_dials=pool.failed_dials,
            reused=self._reused,
            retries=self._retries,
            idle_timeouts=pool.idle_timeouts,
            evictions=pool.evictions,
            server_closed_idle=pool.server_closed_idle,
            lifetime_expirations=pool.lifetime_expirations,
            max_requests_expirations=pool.max_requests_expirations,
        )


async def _sweep_idle_conns(ref: weakref.ref[Transport]) -> None:
    """The idle sweeper task: Go's per-connection idle timer (and lifetime timer), for the
    whole pool at once. It sleeps until the next idle timeout or lifetime deadline; with nothing
    idle, the first connection to go idle wakes it (``_idle_wakeup``), and a connection dialed
    with an earlier lifetime deadline wakes it too (``_sweep_wakeup``).
    It holds its Transport only between waits, so an abandoned one can still be collected."""
    while True:
        transport = ref()
        if transport is None:
            return
        pool = transport._pool
        transport._sweep_wakeup = transport._idle_wakeup = None
        next_expiry = pool.expire(transport._clock())
        if pool.actions:
            transport._carry_out()
        wakeup = transport._sweep_wakeup = transport._new_event()
        transport._sweep_at = next_expiry
        if not pool.idle_lru:
            # Nothing idle: the first connection to go idle wakes it, as its idle timeout may
            # come before ``next_expiry`` (a lifetime deadline). With some idle, the earliest
            # of their timeouts is in ``next_expiry`` already, and later ones come after it.
            transport._idle_wakeup = wakeup
        del transport, pool
        if next_expiry is not None:
            with anyio.move_on_at(next_expiry):
                await wakeup.wait()
        else:
            await wakeup.wait()


def _broken(invariant: str, state: str) -> NoReturn:
    raise PoolInvariantError(f"pool invariant broken: {invariant} ({state})")
