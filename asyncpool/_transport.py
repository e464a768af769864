"""The pool: Go's net/http.Transport for anyio.

Theory of operation
-------------------
``round_trip`` asks for a connection to the request's key (its origin: scheme, host, port).
A live idle connection for the key is handed over at once, most recently used first. Otherwise
the request registers a *want* in the queues of its host: ``idle_waiters`` (served by the next
connection that any request frees), when ``max_conns_per_host`` is reached ``dial_waiters``
(served by the next free host slot), and, when it waits on an HTTP/2 dial in flight instead of
dialing, ``undialed`` (dialed for if that dial does not serve it). A dial runs as its own task
in the Transport's task group, never in the request's scope. When it finishes, its connection
goes to the first want still waiting for the key, or to the idle list: whichever comes first, a
freed connection or a fresh dial, serves the want (socket late binding), and the loser is not
wasted.

HTTP/2 connections are shared: a host keeps them in ``h2_conns`` and a request takes a *stream*
on the first one with room (``reserved < max_streams``), before any idle HTTP/1.1 connection.
While a dial that may bring HTTP/2 is in flight (https with ``http2``, or prior knowledge), new
wants queue behind it instead of dialing too; when it brings HTTP/2 it serves them in order, as
far as the server's MAX_CONCURRENT_STREAMS allows, and a full connection makes the pool open one
more (one dial at a time) unless ``strict_max_concurrent_streams``. When it brings HTTP/1.1 the
host is remembered as such and the waiters dial as HTTP/1.1 requests do. A GOAWAY that refused
streams after the server took N teaches the pool to give new connections to that key N streams
each (``_h2_stream_caps``), until one answers N without a GOAWAY.

A failed request is retried by ``round_trip`` when the server cannot have processed it and the
request can be sent again: at most ``MAX_RETRIES`` times for a stale connection or a server
that refuses everything (HTTP/2 backs off from the second), and up to ``MAX_REFUSED_RETRIES``
times for streams refused by a server that is processing others.

Idle connections expire by one sweeper task per Transport, not a timer per connection: the
LRU holds them in the order they became idle, so the sweeper sleeps until its head expires
(or, while nothing is idle, until something is) and closes what has expired.

"The lock" is the event loop: every pool decision is a synchronous method below (no ``await``
inside), so it runs atomically; I/O happens in the tasks, after the decision.

Invariants
----------
* A want is served at most once (``_Want.waiting`` flips once); a connection that finds no
  waiting want goes to the idle list or is closed.
* An HTTP/1.1 connection is in exactly one place: a host's idle list (then ``idle_at`` is set
  and it is in ``_idle_lru``), or one request's hands (a delivered want, or a caller).
* ``_idle_lru`` is ordered by ``idle_at``, oldest first (connections join at the end with the
  current time), so the first connection in it is the next to expire.
* ``_Host.conns`` counts dialing + active + idle connections of the host. It is incremented when
  a dial starts and decremented exactly once, when that dial fails or its connection closes
  (``conn_closed``); with ``max_conns_per_host`` a freed slot passes straight to the next
  waiting want instead.
* An HTTP/2 connection's ``reserved`` counts the streams handed out and not yet given back;
  each stream gives its slot back exactly once (``release_stream``).
* Every task lives in the Transport's task group; leaving ``async with`` closes every
  connection and fails every want, so no task outlives the block.
* Every operation is O(1) in connections and waiters: dicts, deques and one LRU; cancelled
  wants are skipped lazily and dropped in bulk when a host has no waiter left. (Finding an
  HTTP/2 connection with room scans the host's few HTTP/2 connections.)

``Transport._check_invariants()`` checks these (and the limits, the queues' bookkeeping, each
HTTP/2 connection's ``reserved`` between its open streams and the streams handed out, no empty
host kept) from the pool's state, raising ``PoolInvariantError`` with the invariant and the
state; with ``ASYNCPOOL_CHECK_INVARIANTS=1`` (the test suite sets it) it runs after every
decision, and the tests run it on every Transport before and after it closes.

Costs
-----
With W wants waiting for a host, I idle connections and H HTTP/2 connections to it
(``benchmarks/bench_pool_waiters.py`` measures the waiter-bound ones at W = 100 ... 10,000):

* Taking an idle HTTP/1.1 connection (``_take_idle``), giving one back (``release``,
  ``_try_put_idle``), an LRU eviction, closing one (``conn_closed``): O(1), plus O(1) per
  expired idle connection or finished want skipped on the way (each is skipped once).
* Taking an HTTP/2 stream (``_take_stream``): O(H); giving it back (``release_stream``): O(H)
  when a learnt stream cap is forgotten, else O(1) plus the waiters it serves.
* Queueing a want (``_get_conn``), cancelling it (``_cancel_want``), serving it
  (``_deliver``): O(1). Cancelled and served wants stay in the deques until met at a front
  (or all dropped at once when the host's last want is served): amortised O(1), as each is
  popped at most once per deque.
* Dialing for waiters that waited on a dial which did not serve them (``_dial_for_waiters``,
  on an HTTP/2 connection that is full, closed or sent GOAWAY, or a dial that brought
  HTTP/1.1): O(1) plus the wants it dials for, found in ``_Host.undialed`` (no scan of
  ``idle_waiters``). A failed HTTP/2 dial fails the wants waiting on it: O(1) each.
* The idle sweeper: O(1) per connection it closes. ``stats()``: O(hosts + H).
  ``close_idle_connections()`` and closing the Transport: O(connections + wants).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterable, Callable, Coroutine
from random import random
from types import TracebackType
from typing import Any, NoReturn

import anyio
import anyio.abc

from ._compression import DECODABLE, BodyLimits, DecodedStream
from ._conn_common import CloseReason, Connection, RetryHint
from ._dial import DialFunc, default_ssl_context, dial
from ._errors import ConnectTimeout, HTTPError, PoolClosed, TLSHandshakeTimeout
from ._h1.connection import HTTP11Connection
from ._h1.protocol import PARSERS, default_parser
from ._h2.connection import HTTP2Connection
from ._models import URL, Request, Response
from ._sync import Event, clock, event_factory
from ._trace import (
    ClientTrace,
    GotConnInfo,
    RetryInfo,
    current_trace,
    logger,
    logging_trace,
)

__all__ = ["HostStats", "Transport", "TransportStats"]

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
Conn = HTTP11Connection | HTTP2Connection
# Retries of one request, at most. An HTTP/1.1 request retries only after failing on a reused
# connection, so it runs out of stale connections long before this; an HTTP/2 stream the server
# refuses could otherwise be retried forever (Go's http2 transport stops after 6 too).
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
STREAM_CAPS_KEPT = 256  # hosts whose HTTP/2 stream cap (see _h2_stream_caps) is remembered
WIRE_HEADERS_CACHE_SIZE = 256  # distinct body-less requests whose wire headers are kept
WIRE_HEADERS_CACHED_MAX = 4096  # characters of host and fields such a request may have


# Set (to anything but "" or "0") to check the invariants after every pool decision.
CHECK_INVARIANTS_ENV = "ASYNCPOOL_CHECK_INVARIANTS"


class PoolInvariantError(RuntimeError):
    """The pool's state broke one of its invariants: a bug in asyncpool. Internal; raised by
    the pool's own checks, which stay on under ``python -O`` (unlike ``assert``)."""


def _broken(invariant: str, state: str) -> NoReturn:
    raise PoolInvariantError(f"pool invariant broken: {invariant} ({state})")


def _host_port(url: URL) -> str:
    """The "host:port" errors and get_conn name; an IPv6 address in brackets, as Go's
    net.JoinHostPort."""
    return f"[{url.host}]:{url.port}" if ":" in url.host else f"{url.host}:{url.port}"


@dataclasses.dataclass(frozen=True)
class HostStats:
    idle: int
    in_use: int
    dialing: int
    waiting: int
    total: int  # dialing + in use + idle
    streams: int = 0  # HTTP/2 streams open over the host's connections


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


class _Want:
    """A request waiting for a connection (Go's wantConn). Served at most once."""

    __slots__ = ("conn", "dialed", "error", "ready", "request", "trace", "waiting")

    def __init__(self, request: Request, trace: ClientTrace | None, ready: Event) -> None:
        self.request = request  # for the dial's host, port and TLS name
        self.trace = trace  # the dial fires this request's hooks
        self.ready = ready
        self.waiting = True
        self.dialed = False  # a dial was started or queued for it (else it waits on another's)
        self.conn: Conn | None = None
        self.error: BaseException | None = None


class _Host:
    """Per-key pool state; every field is changed only by the Transport's synchronous methods."""

    __slots__ = (
        "conns",
        "dial_waiters",
        "dialing",
        "h1_only",
        "h2_conns",
        "h2_dialing",
        "idle",
        "idle_waiters",
        "key",
        "undialed",
        "waiting",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        # HTTP/2 connections, shared by many requests; in the order they were made.
        self.h2_conns: dict[HTTP2Connection, None] = {}
        self.h2_dialing = 0  # dials in flight that may yield HTTP/2: others wait for them
        self.h1_only = False  # the server answered ALPN with http/1.1 once
        # Idle connections, least recently used first; the value is unused.
        self.idle: collections.OrderedDict[HTTP11Connection, None] = collections.OrderedDict()
        self.idle_waiters: collections.deque[_Want] = collections.deque()
        self.dial_waiters: collections.deque[_Want] = collections.deque()
        # Wants with no dial of their own (they wait on an HTTP/2 dial in flight), in arrival
        # order: _dial_for_waiters finds them here instead of scanning idle_waiters.
        self.undialed: collections.deque[_Want] = collections.deque()
        self.conns = 0  # dialing + active + idle
        self.dialing = 0
        self.waiting = 0  # wants still waiting (the deques may also hold served/cancelled ones)


class Transport:
    """An HTTP connection pool with Go's Transport semantics. Use it as an async context
    manager; see the README for the options."""

    def __init__(
        self,
        *,
        max_idle_conns: int = 100,
        max_idle_conns_per_host: int | None = None,
        max_conns_per_host: int = 0,
        idle_conn_timeout: float | None = 90.0,
        dial_timeout: float | None = 30.0,
        tls_handshake_timeout: float | None = 10.0,
        response_header_timeout: float | None = None,
        read_timeout: float | None = None,
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
    ) -> None:
        for name, value in (
            ("max_idle_conns", max_idle_conns),
            ("max_conns_per_host", max_conns_per_host),
            ("max_response_header_bytes", max_response_header_bytes),
            ("max_body_bytes", max_body_bytes or 0),
            ("max_decompression_ratio", max_decompression_ratio or 0),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        # Options: immutable after construction. 0 means "no limit" for the two limits, as Go.
        self.max_idle_conns = max_idle_conns
        if max_idle_conns_per_host is None:
            # As max_idle_conns, whose 0 is no limit (not "keep none": no keep-alive at all).
            max_idle_conns_per_host = max_idle_conns or sys.maxsize
        self.max_idle_conns_per_host = max_idle_conns_per_host
        self.max_conns_per_host = max_conns_per_host
        self.idle_conn_timeout = idle_conn_timeout
        self.dial_timeout = dial_timeout
        self.tls_handshake_timeout = tls_handshake_timeout
        self.response_header_timeout = response_header_timeout
        self.read_timeout = read_timeout
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
        self._alpn = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        if tls_config is not None:
            # As Go fills in NextProtos: the pool decides which protocols it can speak.
            tls_config.set_alpn_protocols(self._alpn)
        self._tls_config = tls_config
        self._dial_func = dial
        self._trace = trace  # fires for every request, outermost

        # Guarded by the event loop (changed only in synchronous methods).
        self._hosts: dict[str, _Host] = {}
        self._idle_lru: collections.OrderedDict[HTTP11Connection, None] = collections.OrderedDict()
        self._conns: set[Connection] = set()  # every open connection
        self._close_idle = False  # Go's closeIdle: close conns freed after close_idle_connections
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = False
        # The running loop's own clock and Event class, looked up once (in __aenter__).
        self._clock: Callable[[], float] = anyio.current_time
        self._new_event: Callable[[], Event] = anyio.Event
        # Set while the idle sweeper waits for a first idle connection; who fills an empty
        # idle list sets it.
        self._idle_wakeup: Event | None = None
        # Wire headers of body-less requests (see _wire_headers); used by callers, no await.
        self._wire_headers_cache: dict[
            tuple[tuple[str, ...], str, str, bool, bool], tuple[list[tuple[str, str]], bool]
        ] = {}
        # Streams a new HTTP/2 connection to a key is given in its life, learnt from a GOAWAY
        # that refused streams after the server took this many (a server that closes
        # connections after a few requests, as nginx's keepalive_requests): the requests it
        # refused then spread over new connections instead of all moving to the next one, to
        # be refused again. Forgotten when a connection answers that many without a GOAWAY;
        # kept past the host's last connection (as that one's GOAWAY closes it), the oldest
        # dropped past a bound.
        self._h2_stream_caps: dict[str, int] = {}
        self._dials = 0
        self._failed_dials = 0
        self._reused = 0
        self._retries = 0
        self._idle_timeouts = 0
        self._evictions = 0
        self._server_closed_idle = 0
        if os.environ.get(CHECK_INVARIANTS_ENV, "") not in ("", "0"):
            self._check_after_decisions()

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Transport:
        if self._task_group is not None or self._closed:
            raise PoolClosed("a Transport can be entered once; create a new one")
        self._clock, self._new_event = clock(), event_factory()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        if self.idle_conn_timeout is not None:
            task_group.start_soon(self._close_expired_idle_conns, self.idle_conn_timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        self._closed = True
        reason = PoolClosed("the Transport was closed")
        for conn in list(self._conns):
            conn.close(CloseReason.POOL_CLOSED, reason)
        for host in self._hosts.values():
            for want in (*host.idle_waiters, *host.dial_waiters):
                self._deliver(
                    host, want, None, PoolClosed("the Transport was closed", host=host.key)
                )
        self._task_group.cancel_scope.cancel()
        # The block's own exception is not the task group's business: handed to it, a strict
        # task group would wrap it in an ExceptionGroup, and `except ConnectError:` around
        # `async with Transport()` would stop working. It propagates as it is.
        await self._task_group.__aexit__(None, None, None)
        return None

    @property
    def tls_config(self) -> ssl.SSLContext:
        """The SSL context https connections use (the default one is made on first use)."""
        return self._ssl_context

    @property
    def _ssl_context(self) -> ssl.SSLContext:
        if self._tls_config is None:
            self._tls_config = default_ssl_context(self._alpn)
        return self._tls_config

    # -- the request path ---------------------------------------------------------------------

    async def round_trip(self, request: Request) -> Response:
        """Send one request and return its response once the head has arrived."""
        if self._task_group is None or self._closed:
            raise PoolClosed(
                "the Transport is not open: use `async with asyncpool.Transport() as pool:` "
                "and call pool.round_trip(...) inside the block"
            )
        trace = self._trace_for(request)
        headers, asked_compression = self._wire_headers(request)
        url = request.url
        counted = refused = 0  # retries of each kind so far
        while True:
            conn = await self._get_conn(request, trace)
            try:
                response = await conn.round_trip(
                    request,
                    headers,
                    trace=trace,
                    response_header_timeout=self.response_header_timeout,
                    read_timeout=self.read_timeout,
                )
            except HTTPError as exc:
                if not self._should_retry(exc, request):
                    if exc.retry_hint is not None:
                        exc.args = (
                            f"{exc.args[0]}; this {request.method} request cannot be replayed, "
                            "so it was not retried (an Idempotency-Key header marks a request "
                            "as safe to retry)",
                        )
                    raise
                delay = 0.0
                if exc.retry_hint is RetryHint.REFUSED and refused < MAX_REFUSED_RETRIES:
                    refused += 1
                elif counted < MAX_RETRIES:
                    counted += 1
                    if counted > 1 and isinstance(conn, HTTP2Connection):
                        delay = H2_RETRY_BACKOFF * (1 << (counted - 2)) * (1 + random() / 10)
                else:
                    exc.args = (f"{exc.args[0]}; gave up after {counted + refused} retries",)
                    raise
                self._retries += 1
                if trace and trace.request_retried:
                    assert exc.retry_hint is not None
                    info = RetryInfo(exc.retry_hint, exc, counted + refused, delay)
                    trace.request_retried(info)
                if delay:
                    await anyio.sleep(delay)
                continue
            break
        decoded = None
        if asked_compression:
            encoding = response.headers.get("content-encoding", "")
            if encoding is not None and encoding.lower() in DECODABLE:
                decoded = DecodedStream(response._stream, encoding.lower(), url.host_header)
                response._set_stream(decoded)
                del response.headers["content-encoding"]
                del response.headers["content-length"]
                response.uncompressed = True
        if self.max_body_bytes is not None or (
            decoded is not None and self.max_decompression_ratio
        ):
            response._check_read = BodyLimits(
                url.host_header, self.max_body_bytes, decoded, self.max_decompression_ratio
            )
        return response

    def _trace_for(self, request: Request) -> ClientTrace | None:
        """The request's trace, then the block's, then the pool's, then logging's."""
        trace = request.trace
        for outer in (current_trace(), self._trace):
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
        key = (
            tuple(request.headers._fields),
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
        headers = request.headers.items()
        given = {name.lower() for name, _ in headers}
        if "host" not in given:
            headers.insert(0, ("Host", request.url.host_header))
        asked_compression = (
            not self.disable_compression
            and request.method != "HEAD"
            and "accept-encoding" not in given
            and "range" not in given
        )
        if asked_compression:
            headers.append(("Accept-Encoding", "gzip, deflate"))
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
            return request.body_is_rewindable
        if exc.retry_hint is RetryHint.NO_RESPONSE:
            return request.is_replayable
        return False

    async def _get_conn(self, request: Request, trace: ClientTrace | None) -> Connection:
        url = request.url
        if trace and trace.get_conn:
            trace.get_conn(_host_port(url))
        key = request.pool_key
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key)
        self._close_idle = False  # someone wants a connection: keep freed ones again

        conn: Conn | None
        shared = self._take_stream(host)
        if shared is not None:
            conn, idle_time = shared
        else:
            conn, idle_time = self._take_idle(host)
        if conn is not None:
            if conn.requests_started:
                self._reused += 1
            if trace:
                self._trace_got_conn(trace, conn, was_idle=True, idle_time=idle_time)
            return conn
        if self._closed:  # a retry after the pool closed: no dial can start any more
            if host.conns == 0 and host.waiting == 0:
                self._hosts.pop(key, None)  # made above for nothing: keep no empty host
            raise PoolClosed("the Transport closed during the request", host=_host_port(url))

        if trace and trace.wait_for_conn_start:
            trace.wait_for_conn_start()
        queued_at = self._clock()
        want = self._add_want(host, request, trace)
        try:
            await want.ready.wait()
        except BaseException:
            self._cancel_want(host, want)
            raise
        if trace and trace.wait_for_conn_done:
            queued = self._clock() - queued_at
            try:
                trace.wait_for_conn_done(queued, want.error)
            except BaseException:
                if want.conn is not None:
                    self._give_back(want.conn)
                raise
        if want.error is not None:
            raise want.error
        conn = want.conn
        assert conn is not None
        if conn.requests_started:
            self._reused += 1
        if trace:
            self._trace_got_conn(trace, conn, was_idle=False, idle_time=0.0)
        return conn

    def _add_want(self, host: _Host, request: Request, trace: ClientTrace | None) -> _Want:
        """Queue a want for ``request`` and dial for it (or let it wait on the HTTP/2 dial in
        flight)."""
        want = _Want(request, trace, self._new_event())
        host.idle_waiters.append(want)
        host.waiting += 1
        # Closing stale idle connections in _take_idle, or a response the garbage collector
        # finalized since (it closes its connection), may have made the pool forget the host:
        # with a want counted it is kept from now on, so put it back.
        self._hosts[host.key] = host
        if not self._queue_for_dial(host, want):
            host.undialed.append(want)
        return want

    def _trace_got_conn(
        self, trace: ClientTrace, conn: Conn, *, was_idle: bool, idle_time: float
    ) -> None:
        if not trace.got_conn:
            return
        info = GotConnInfo(
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

    # -- pool decisions: synchronous, so atomic ------------------------------------------------

    def _take_idle(self, host: _Host) -> tuple[HTTP11Connection | None, float]:
        """The most recently used live idle connection of ``host``, and how long it idled."""
        now = self._clock()
        timeout = self.idle_conn_timeout
        while host.idle:
            conn, _ = host.idle.popitem(last=True)
            del self._idle_lru[conn]
            idle_at = conn.idle_at
            if idle_at is None:
                _broken("an idle connection has idle_at", f"{conn!r} in an idle list without it")
            conn.idle_at = None
            if timeout is not None and now - idle_at >= timeout:
                # Older ones are staler still; each is dropped in turn as the loop goes on.
                self._idle_timeouts += 1
                conn.close(CloseReason.IDLE_TIMEOUT)
                continue
            return conn, now - idle_at
        return None, 0.0

    def _take_stream(self, host: _Host) -> tuple[HTTP2Connection, float] | None:
        """A stream on one of the host's HTTP/2 connections, reserved; and how long that
        connection had been idle."""
        for conn in host.h2_conns:
            if conn.has_capacity:
                return conn, self._reserve(conn)
        return None

    def _reserve(self, conn: HTTP2Connection) -> float:
        conn.reserved += 1
        conn.handed_out += 1
        idle_at, conn.idle_at = conn.idle_at, None
        return 0.0 if idle_at is None else self._clock() - idle_at

    def _may_be_h2(self, host: _Host, url: URL) -> bool:
        if host.h1_only:
            return False
        return self.http2 if url.scheme == "https" else self.http2_prior_knowledge

    def _queue_for_dial(self, host: _Host, want: _Want) -> bool:
        """Dial for ``want``, or queue it for a host slot; False when it is to wait on the
        HTTP/2 dial in flight (or, strict, on the host's HTTP/2 connections) instead."""
        if self._may_be_h2(host, want.request.url) and (
            host.h2_dialing or (self.strict_max_concurrent_streams and host.h2_conns)
        ):
            return False  # one HTTP/2 dial at a time: the waiters share what it brings
        want.dialed = True
        limit = self.max_conns_per_host
        if limit and host.conns >= limit:
            host.dial_waiters.append(want)
            return True
        host.conns += 1
        self._start_dial(host, want)
        return True

    def _start_dial(self, host: _Host, want: _Want) -> None:
        assert self._task_group is not None
        host.dialing += 1
        self._dials += 1
        may_be_h2 = self._may_be_h2(host, want.request.url)
        if may_be_h2:
            host.h2_dialing += 1
        self._task_group.start_soon(
            self._dial_conn_for, host, want, may_be_h2, name=f"asyncpool dial {host.key}"
        )

    def _dial_for_waiters(self, host: _Host) -> None:
        """Waiters with no dial of their own lost what they waited on (an HTTP/2 dial that
        brought HTTP/1.1, a full or departed connection): dial for them, oldest first. Each
        want leaves ``undialed`` once (dialed, or found served or cancelled), so this is
        amortised O(1) per want."""
        undialed = host.undialed
        while undialed:
            want = undialed[0]
            if want.waiting:
                if not self._queue_for_dial(host, want):
                    return  # it still waits on the HTTP/2 dial in flight, and so do the rest
                if self._may_be_h2(host, want.request.url):
                    undialed.popleft()
                    return  # one dial serves them all
            undialed.popleft()

    def _serve_h2_waiters(self, host: _Host, conn: HTTP2Connection) -> None:
        """Hand free streams of ``conn`` to waiting requests, first come first served."""
        while host.idle_waiters and conn.has_capacity:
            want = host.idle_waiters[0]
            if want.waiting:
                self._reserve(conn)
                self._deliver(host, want, conn, None)
            elif host.idle_waiters:
                host.idle_waiters.popleft()
        if host.waiting and not self.strict_max_concurrent_streams and not host.h2_dialing:
            self._dial_for_waiters(host)  # the connection is full: open another

    def _deliver(
        self, host: _Host, want: _Want, conn: Conn | None, error: BaseException | None
    ) -> bool:
        """Serve ``want`` with a connection or an error, unless it is served already."""
        if not want.waiting:
            return False
        want.waiting = False
        want.conn = conn
        want.error = error
        want.ready.set()
        host.waiting -= 1
        if host.waiting == 0:
            # Every want left in the queues was served or cancelled: drop them in bulk.
            host.idle_waiters.clear()
            host.dial_waiters.clear()
            host.undialed.clear()
        return True

    def _cancel_want(self, host: _Host, want: _Want) -> None:
        if self._deliver(host, want, None, None):
            return
        if want.conn is not None:  # served while being cancelled: the connection is not lost
            conn, want.conn = want.conn, None
            self._give_back(conn)

    def _give_back(self, conn: Conn) -> None:
        """A connection (or reserved stream) handed out but never used."""
        if isinstance(conn, HTTP2Connection):
            self.release_stream(conn)
        else:
            self._put_or_close_idle(conn)

    def _put_or_close_idle(self, conn: HTTP11Connection, trace: ClientTrace | None = None) -> None:
        """Go's tryPutIdleConn: a waiting want first, then the idle list, else close."""
        reason = self._try_put_idle(conn)
        if reason is not None:
            conn.close(reason)
        if trace and trace.put_idle_conn:
            trace.put_idle_conn(reason)

    def _try_put_idle(self, conn: HTTP11Connection) -> CloseReason | None:
        """None when a want or the idle list took ``conn``; otherwise why it must close."""
        if conn.closed:
            return conn.close_why
        if self.disable_keep_alives:
            return CloseReason.NOT_REUSABLE
        if self._closed:
            return CloseReason.POOL_CLOSED
        host = self._hosts[conn.key]
        while host.idle_waiters:
            if self._deliver(host, host.idle_waiters.popleft(), conn, None):
                return None
        if self._close_idle:
            return CloseReason.CLOSE_IDLE
        if len(host.idle) >= self.max_idle_conns_per_host:
            return CloseReason.IDLE_LIST_FULL
        conn.idle_at = self._clock()
        host.idle[conn] = None
        self._idle_lru[conn] = None
        if self._idle_wakeup is not None:
            self._idle_wakeup.set()
            self._idle_wakeup = None
        if self.max_idle_conns and len(self._idle_lru) > self.max_idle_conns:
            oldest, _ = self._idle_lru.popitem(last=False)
            self._evictions += 1
            oldest.close(CloseReason.EVICTED)  # conn_closed takes it off its host's idle list
        return None

    # -- the ConnOwner callbacks (from connection tasks) -----------------------------------------

    def release(self, conn: HTTP11Connection, trace: ClientTrace | None) -> None:
        self._put_or_close_idle(conn, trace)

    def idle_timed_out(self, conn: HTTP2Connection) -> None:
        self._idle_timeouts += 1
        conn.close(CloseReason.IDLE_TIMEOUT)

    # -- the idle sweeper (a task) ----------------------------------------------------------------

    async def _close_expired_idle_conns(self, timeout: float) -> None:
        """Go's per-connection idle timer, for the whole pool at once."""
        while True:
            next_expiry = self._close_expired(timeout)
            if next_expiry is not None:
                await anyio.sleep_until(next_expiry)
            else:
                wakeup = self._idle_wakeup = self._new_event()
                await wakeup.wait()

    def _close_expired(self, timeout: float) -> float | None:
        """Close the idle HTTP/1.1 connections past ``timeout``; when the next one expires."""
        now = self._clock()
        while self._idle_lru:
            oldest = next(iter(self._idle_lru))
            if oldest.idle_at is None:
                _broken("an idle connection has idle_at", f"{oldest!r} in the LRU without it")
            expiry = oldest.idle_at + timeout
            if expiry > now:
                return expiry
            self._idle_timeouts += 1
            oldest.close(CloseReason.IDLE_TIMEOUT)  # conn_closed takes it out of the LRU
        return None

    def release_stream(self, conn: HTTP2Connection) -> None:
        conn.reserved -= 1
        if conn.reserved < 0:
            _broken("a stream gives its slot back once", f"{conn!r} reserved={conn.reserved}")
        host = self._hosts.get(conn.key)
        if host is None or conn not in host.h2_conns:
            return
        cap = conn.stream_cap
        if cap is not None and conn.streams_accepted >= cap and not conn.goaway:
            # It answered all it was given and announced no GOAWAY (which would have come
            # with the last stream it takes): the server takes more now. Forget the lesson.
            self._h2_stream_caps.pop(host.key, None)
            for other in host.h2_conns:
                other.stream_cap = None
        self._serve_h2_waiters(host, conn)
        if conn.reserved == 0:
            conn.idle_at = self._clock()
            conn.went_idle()

    def capacity_changed(self, conn: HTTP2Connection) -> None:
        host = self._hosts.get(conn.key)
        if host is None or conn not in host.h2_conns:
            return  # still in its handshake
        if conn.goaway:
            del host.h2_conns[conn]
            if conn.refused_streams:
                self._learn_stream_cap(host.key, conn.streams_accepted)
            if host.waiting and not host.h2_dialing:
                self._dial_for_waiters(host)
        else:
            self._serve_h2_waiters(host, conn)

    def _learn_stream_cap(self, key: str, accepted: int) -> None:
        caps = self._h2_stream_caps
        caps.pop(key, None)
        if len(caps) >= STREAM_CAPS_KEPT:
            del caps[next(iter(caps))]  # the oldest lesson
        caps[key] = max(1, accepted)

    def conn_closed(self, conn: Conn) -> None:
        self._conns.discard(conn)
        host = self._hosts[conn.key]
        if isinstance(conn, HTTP2Connection):
            host.h2_conns.pop(conn, None)
            self._free_host_slot(host)
            if host.waiting and not host.h2_dialing and not self._closed:
                self._dial_for_waiters(host)
            return
        if conn.idle_at is not None:
            del host.idle[conn]
            self._idle_lru.pop(conn, None)
            conn.idle_at = None
            if conn.close_why is CloseReason.SERVER_CLOSED:
                self._server_closed_idle += 1
        self._free_host_slot(host)

    def _free_host_slot(self, host: _Host) -> None:
        """Go's decConnsPerHost: pass the slot to the next waiting want, or give it back."""
        if self.max_conns_per_host and not self._closed:
            while host.dial_waiters:
                want = host.dial_waiters.popleft()
                if want.waiting:
                    self._start_dial(host, want)
                    return
        host.conns -= 1
        if host.conns < 0:
            _broken("a host slot is given back once", f"{host.key} conns={host.conns}")
        if host.conns == 0 and host.waiting == 0:
            del self._hosts[host.key]

    # -- dialing --------------------------------------------------------------------------------

    async def _dial_conn_for(self, host: _Host, want: _Want, may_be_h2: bool) -> None:
        url = want.request.url
        host_port = _host_port(url)
        conn: Conn
        try:
            dialed = await dial(
                url.scheme,
                url.host,
                url.port,
                host_port,
                server_name=want.request.sni_hostname or url.host,
                dial_timeout=self.dial_timeout,
                tls_handshake_timeout=self.tls_handshake_timeout,
                ssl_context=self._ssl_context if url.scheme == "https" else None,
                alpn_protocols=self._alpn,
                dial_func=self._dial_func,
                trace=want.trace,
            )
            h2 = dialed.alpn_protocol == "h2" or (url.scheme == "http" and may_be_h2)
            if h2:
                conn = HTTP2Connection(
                    self,
                    dialed.stream,
                    key=host.key,
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
                    with anyio.move_on_after(self.tls_handshake_timeout) as scope:
                        await conn.handshake()
                    if scope.cancelled_caught:
                        timeout_type = (
                            TLSHandshakeTimeout if url.scheme == "https" else ConnectTimeout
                        )
                        raise timeout_type(
                            "no HTTP/2 SETTINGS from the server within "
                            f"tls_handshake_timeout={self.tls_handshake_timeout}s",
                            host=host_port,
                        )
                except BaseException:
                    await anyio.aclose_forcefully(dialed.stream)
                    raise
        except BaseException as exc:
            self._dial_failed(host, want, may_be_h2, exc)
            if isinstance(exc, Exception):
                return
            raise
        if not h2:
            conn = HTTP11Connection(
                self,
                dialed.stream,
                key=host.key,
                host_port=host_port,
                max_header_bytes=self.max_response_header_bytes,
                expect_continue_timeout=self.expect_continue_timeout,
                parser=self.http1_parser,
                local_address=dialed.local_address,
                remote_address=dialed.remote_address,
            )
        self._dial_done(host, want, may_be_h2, conn)

    def _dial_failed(self, host: _Host, want: _Want, may_be_h2: bool, exc: BaseException) -> None:
        host.dialing -= 1
        self._failed_dials += 1
        if may_be_h2:
            host.h2_dialing -= 1
        if isinstance(exc, Exception):
            self._deliver(host, want, None, exc)
            if may_be_h2:  # those waiting on this dial share its failure
                while host.undialed:
                    self._deliver(host, host.undialed.popleft(), None, exc)
        self._free_host_slot(host)

    def _dial_done(self, host: _Host, want: _Want, may_be_h2: bool, conn: Conn) -> None:
        host.dialing -= 1
        if may_be_h2:
            host.h2_dialing -= 1
        if isinstance(conn, HTTP2Connection):
            self._add_h2_conn(host, want, conn)
            return
        if may_be_h2:
            host.h1_only = True  # remembered: later requests dial as HTTP/1.1 does
        if self._start_conn(conn, want) and not self._deliver(host, want, conn, None):
            self._put_or_close_idle(conn)
        if may_be_h2:
            self._dial_for_waiters(host)

    def _start_conn(self, conn: Connection, want: _Want) -> bool:
        """Start a freshly dialed connection's tasks; False when the pool closed meanwhile
        (the connection is closed then)."""
        conn.trace = want.trace
        self._conns.add(conn)
        assert self._task_group is not None
        conn.start(self._task_group)
        if self._closed:
            conn.close(CloseReason.POOL_CLOSED, PoolClosed("the Transport was closed"))
            return False
        return True

    def _add_h2_conn(self, host: _Host, want: _Want, conn: HTTP2Connection) -> None:
        if not self._start_conn(conn, want):
            return
        host.h2_conns[conn] = None
        conn.stream_cap = self._h2_stream_caps.get(host.key)
        conn.idle_at = self._clock()
        if want.waiting and conn.has_capacity:  # its own want first, then the queue in order
            self._reserve(conn)
            self._deliver(host, want, conn, None)
        self._serve_h2_waiters(host, conn)

    # -- invariant checks (tests, debugging) --------------------------------------------------

    # The synchronous decisions that start from outside the pool's own decisions (a
    # connection's callback, a step of the pool's tasks): when they return, the state is at
    # rest and the invariants hold.
    _CHECKED_DECISIONS = (
        "release",
        "release_stream",
        "capacity_changed",
        "conn_closed",
        "idle_timed_out",
        "_add_want",
        "_cancel_want",
        "_give_back",
        "_close_expired",
        "_dial_failed",
        "_dial_done",
    )

    def _check_after_decisions(self) -> None:
        """Run ``_check_invariants`` after every pool decision of this Transport (O(pool)
        each: for tests). The methods are wrapped on the instance, so a Transport without
        checks does no extra work at all; a decision nested in another (a connection closed
        while the idle list is trimmed) is checked with the outer one, once it is done."""
        depth = 0

        def checked(method: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any) -> Any:
                nonlocal depth
                depth += 1
                try:
                    result = method(*args)
                finally:
                    depth -= 1
                if depth == 0:
                    self._check_invariants()
                return result

            return run

        for name in self._CHECKED_DECISIONS:
            setattr(self, name, checked(getattr(self, name)))
        get_conn = self._get_conn

        async def checked_get_conn(request: Request, trace: ClientTrace | None) -> Connection:
            # Taking an idle connection or a stream is a decision too (the hot path: not
            # worth a method of its own), done when _get_conn returns.
            conn = await get_conn(request, trace)
            self._check_invariants()
            return conn

        self._get_conn: Callable[  # type: ignore[method-assign]
            [Request, ClientTrace | None], Coroutine[Any, Any, Connection]
        ] = checked_get_conn

    def _check_invariants(self) -> None:
        """Raise PoolInvariantError naming the first invariant of the module docstring the
        pool's state breaks. O(connections + wants): for tests (after each one, and after
        every decision with ASYNCPOOL_CHECK_INVARIANTS=1) and for debugging."""
        open_conns: collections.Counter[str] = collections.Counter()
        for conn in self._conns:
            open_conns[conn.key] += 1
            if conn.closed:
                _broken("an open connection is not closed", f"{conn!r} ({conn.close_why})")
            if conn.key not in self._hosts:
                _broken("an open connection's host is kept", f"{conn!r}, hosts {list(self._hosts)}")
            if isinstance(conn, HTTP2Connection):
                if not conn.active_streams <= conn.reserved <= conn.handed_out:
                    _broken(
                        "an HTTP/2 connection's open streams <= reserved <= handed out",
                        f"{conn!r} streams={conn.active_streams} reserved={conn.reserved} "
                        f"handed_out={conn.handed_out}",
                    )
                if conn.stream_cap is not None and conn.handed_out > conn.stream_cap:
                    _broken(
                        "an HTTP/2 connection hands out at most its stream cap",
                        f"{conn!r} handed_out={conn.handed_out} cap={conn.stream_cap}",
                    )
            elif conn.idle_at is not None and conn not in self._idle_lru:
                _broken("an HTTP/1.1 connection with idle_at is idle", f"{conn!r} not in the LRU")
        idle: dict[HTTP11Connection, str] = {}
        for key, host in self._hosts.items():
            state = (
                f"{key}: conns={host.conns} dialing={host.dialing} h2_dialing={host.h2_dialing} "
                f"open={open_conns[key]} idle={len(host.idle)} waiting={host.waiting}"
            )
            if host.key != key:
                _broken("a host is kept under its own key", f"{host.key!r} under {key!r}")
            if host.conns == 0 and host.waiting == 0:
                _broken("no empty host is kept", state)
            if not 0 <= host.h2_dialing <= host.dialing:
                _broken("0 <= HTTP/2 dials <= dials", state)
            if host.conns != host.dialing + open_conns[key]:
                _broken("_Host.conns counts the host's dialing and open connections", state)
            if self.max_conns_per_host and host.conns > self.max_conns_per_host:
                _broken("a host has at most max_conns_per_host connections", state)
            if len(host.idle) > self.max_idle_conns_per_host:
                _broken("a host keeps at most max_idle_conns_per_host idle", state)
            if host.idle and host.waiting:
                _broken("no want waits while its host has an idle connection", state)
            last = float("-inf")
            for conn in host.idle:
                if conn in idle:
                    _broken("an HTTP/1.1 connection is in one place", f"{conn!r} idle twice")
                idle[conn] = key
                if conn.key != key or conn not in self._conns or conn not in self._idle_lru:
                    _broken(
                        "an idle connection is open, in its host's idle list and in the LRU",
                        f"{conn!r} in {key}'s idle list",
                    )
                if conn.idle_at is None or conn.idle_at < last:
                    _broken("an idle list is ordered by idle_at", f"{conn!r} in {key}'s")
                last = conn.idle_at
            for h2_conn in host.h2_conns:
                if h2_conn.key != key or h2_conn not in self._conns:
                    _broken("a host's HTTP/2 connections are its own, open", f"{h2_conn!r}")
                if (h2_conn.idle_at is None) != (h2_conn.reserved > 0):
                    _broken(
                        "an HTTP/2 connection has idle_at when no stream is reserved on it",
                        f"{h2_conn!r} reserved={h2_conn.reserved} idle_at={h2_conn.idle_at}",
                    )
                if host.waiting and h2_conn.has_capacity:
                    _broken("no want waits while an HTTP/2 connection has room", state)
            self._check_wants(host, state)
        if len(idle) != len(self._idle_lru):
            _broken(
                "the LRU holds exactly the idle connections",
                f"{len(self._idle_lru)} in the LRU, {len(idle)} in idle lists",
            )
        if self.max_idle_conns and len(self._idle_lru) > self.max_idle_conns:
            _broken("at most max_idle_conns are idle", f"{len(self._idle_lru)} idle")
        last = float("-inf")
        for conn in self._idle_lru:
            if conn.idle_at is None or conn.idle_at < last:
                _broken("_idle_lru is ordered by idle_at", f"{conn!r} idle_at={conn.idle_at}")
            last = conn.idle_at
        if self._idle_wakeup is not None and self._idle_lru:
            _broken("the sweeper waits for an idle connection only when none is", "")

    def _check_wants(self, host: _Host, state: str) -> None:
        waiting = [want for want in host.idle_waiters if want.waiting]
        if len(waiting) != host.waiting or len(set(map(id, waiting))) != len(waiting):
            _broken(
                "_Host.waiting counts the wants still waiting, each queued once",
                f"{state}, {len(waiting)} waiting in idle_waiters",
            )
        if not host.waiting and (host.idle_waiters or host.dial_waiters or host.undialed):
            _broken("a host with no want waiting keeps none queued", state)
        if any(not want.dialed for want in host.dial_waiters):
            _broken("a want waiting for a host slot has a dial of its own", state)
        undialed = {id(want) for want in host.undialed}
        for want in waiting:
            if want.conn is not None or want.error is not None:
                _broken("a want is served once", f"{state}, a waiting want holds a result")
            if want.dialed:
                continue
            if id(want) not in undialed:
                _broken("a waiting want with no dial of its own is in undialed", state)
            # It waits on the HTTP/2 dial in flight, on streams of the host's HTTP/2
            # connections (they serve it, or dial for it, as they give them back), or on the
            # dial of a want queued for a host slot.
            if not (
                self._closed
                or host.h2_dialing
                or host.h2_conns
                or any(other.waiting for other in host.dial_waiters)
            ):
                _broken("a want with no dial of its own has a dial or stream to wait on", state)
        if any(want.dialed for want in host.undialed):
            _broken("undialed holds only wants with no dial of their own", state)

    # -- the public controls --------------------------------------------------------------------

    async def close_idle_connections(self) -> None:
        """Close every idle connection now, and those in use when they are freed, until the
        next request asks for a connection (Go's CloseIdleConnections)."""
        self._close_idle = True
        for conn in list(self._idle_lru):
            conn.close(CloseReason.CLOSE_IDLE)
        for host in list(self._hosts.values()):
            for h2_conn in list(host.h2_conns):
                if h2_conn.reserved == 0:
                    h2_conn.close(CloseReason.CLOSE_IDLE)
        await anyio.lowlevel.checkpoint()

    def stats(self) -> TransportStats:
        """A snapshot of the pool: O(hosts)."""
        hosts = {}
        for key, host in self._hosts.items():
            idle = len(host.idle) + sum(1 for c in host.h2_conns if c.reserved == 0)
            hosts[key] = HostStats(
                idle=idle,
                in_use=host.conns - host.dialing - idle,
                dialing=host.dialing,
                waiting=host.waiting,
                total=host.conns,
                streams=sum(c.active_streams for c in host.h2_conns),
            )
        return TransportStats(
            hosts=hosts,
            dials=self._dials,
            failed_dials=self._failed_dials,
            reused=self._reused,
            retries=self._retries,
            idle_timeouts=self._idle_timeouts,
            evictions=self._evictions,
            server_closed_idle=self._server_closed_idle,
        )
