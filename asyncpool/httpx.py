"""asyncpool inside httpx: ``HTTPXTransport``, an ``httpx.AsyncBaseTransport`` on the pool.

::

    from asyncpool.httpx import HTTPXTransport

    transport = HTTPXTransport(max_conns_per_host=10)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(url)
        print(transport.pool.stats())

``HTTPXTransport`` owns an ``asyncpool.Transport`` as ``.pool``: started by the first request
(or the client's ``async with``), closed by the client's ``aclose()`` or the block's exit, from
any task. ``httpx.AsyncClient(transport=HTTPXTransport())`` works without ``async with``, as
httpx's own transport does. httpx sends its own ``Accept-Encoding`` and decodes bodies itself,
so the pool's transparent decompression is off (``disable_compression=True`` unless given).
The pool's ``max_body_bytes`` applies to the bodies httpx reads (httpx streams every body;
past it, ``httpx.RemoteProtocolError`` and the connection is closed).

Options
-------
``HTTPXTransport(...)`` takes ``httpx.AsyncHTTPTransport``'s arguments with httpx's meaning, so
one can replace the other by its class name, then any ``asyncpool.Transport`` option by keyword
(typed: a type checker rejects a misspelled one):

* ``verify``, ``cert``, ``trust_env``: the SSL context ``httpx.create_ssl_context`` makes (or
  ``tls_config=``, not both); by default the pool's own (certifi), or httpx's when
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` is set. A context made here offers h2 / http/1.1 by
  ALPN as ``http1`` / ``http2`` say; an ``ssl.SSLContext`` given (``verify=`` or
  ``tls_config=``) is used as given, never changed (httpcore sets ALPN on it): it offers
  the ALPN protocols set on it, none meaning HTTP/1.1.
* ``http1``, ``http2``: ``http2`` offers h2 in ALPN (default True, the pool's; httpx's is
  False); ``http1=False`` speaks HTTP/2 only (``http2_prior_knowledge``).
* ``limits``: ``max_connections`` → ``max_conns`` (over all hosts, as httpcore's; an idle
  connection of another host is closed to make room), ``max_keepalive_connections`` →
  ``max_idle_conns`` (0: keep none, ``max_idle_conns_per_host=0``), ``keepalive_expiry`` →
  ``idle_conn_timeout``. Without ``limits`` the pool's own defaults apply (no connection limit,
  100 idle kept 90 s), not httpx's ``Limits()``.
* ``retries``: ``connect_retries``, a failed DNS lookup or TCP connect tried again (httpcore's
  backoff: 0 s, 0.5 s, 1 s, ...).
* ``uds``, ``local_address``: the pool's own: every connection to that Unix socket, or TCP
  from that local IP (exclusive with ``dial=``).
* ``proxy``: a URL or an ``httpx.Proxy``, as the pool's ``proxy`` (its ``auth`` becomes the
  proxy's credentials, its ``headers`` ``proxy_connect_headers``: sent with CONNECT only; its
  ``ssl_context`` is refused: an https proxy is verified with the pool's SSL context). httpx's
  environment proxies are the ``AsyncClient``'s business (it ignores them when given a
  ``transport=``), so ``trust_env`` does not read them here either.
* ``socket_options``: ``NotImplementedError`` (set them in a ``dial=`` function).

Request extensions
------------------
``timeout``
    httpx's ``{"connect", "read", "write", "pool"}`` (seconds, or None), enforced per request by
    one cancel scope whose deadline moves with the request's phase, as httpcore's. The pool tells
    the request synchronously, from its decisions, where it stands (``asyncpool.Request``'s
    ``wait_listener``): nothing free at once, so it waits for a freed connection or for a slot
    under ``max_conns_per_host`` / ``max_conns`` → ``pool``; a dial started for it, or an
    HTTP/2 dial in flight that it shares (httpcore assigns such requests to the connection being
    established) → ``connect``, given afresh for each attempt (``retries=``; the back-off
    between attempts has none) and for the TLS handshake; handed a connection → ``write``,
    given afresh for each chunk of a streamed body the pool writes (as httpcore's bounds each
    write; the time the body's iterator takes to make a chunk has none); from
    ``wrote_request`` to the response head → ``read``; each body read →
    ``read``, except once the pool has the whole body (no read left to wait on the network,
    as httpcore reads what h11 holds already). Before the pool has decided (the adapter's own
    work) no deadline runs, so an uncontended request never sees ``pool``, however small. A deadline raises
    ``httpx.PoolTimeout`` / ``ConnectTimeout`` / ``WriteTimeout`` / ``ReadTimeout``, named by
    the phase whose deadline fired (later hooks from the pool's tasks do not change it). The
    dial itself gets ``connect`` for each of DNS + TCP, the TLS handshake and the HTTP/2
    preface instead of the pool's ``dial_timeout`` / ``tls_handshake_timeout`` (as httpcore's
    connection attempt); ``connect=None`` leaves those as a ceiling.
``trace``
    httpcore's trace callback ``trace(event_name, info)``, sync or async. The same event names
    as httpcore (``connection.connect_tcp``, ``connection.start_tls``,
    ``http2.send_connection_init``, ``http2.receive_remote_settings``, ``http11.`` /
    ``http2.`` + ``send_request_headers``, ``send_request_body``,
    ``receive_response_headers``, ``receive_response_body``, ``response_closed``; each
    ``.started`` then ``.complete`` or ``.failed``), built from the pool's ClientTrace hooks.
    The order is httpcore's, except that the pool's HTTP/2 handshake has read the server's
    SETTINGS before the first request is sent (httpcore reports that while it waits for the
    response head). A request the pool retries reports the failed attempt (``.failed``,
    ``response_closed``), then the next one. Hooks fire in the pool's tasks, so events are queued and
    delivered from the request's own task: when the response head arrives (or the request
    fails), during body iteration, and at close. ``.started`` gets ``{"request": request}``
    (the connection events httpcore's keyword arguments), ``.complete``
    ``{"return_value": ...}`` (None for the connection events), ``.failed``
    ``{"exception": exc}``. Connection events of a dial that ends up serving another request
    are dropped once the request got its connection.
``sni_hostname``, ``target``
    passed on as ``asyncpool.Request(sni_hostname=..., target=...)``.
``client_trace``
    an ``asyncpool.ClientTrace`` for this request, composed with the adapter's own (the pool's
    ``trace=`` option and ``asyncpool.client_trace(...)`` blocks apply as usual).

Response extensions: ``http_version`` (``b"HTTP/1.1"``, ``b"HTTP/2"``), ``reason_phrase``
(HTTP/1.1), ``network_stream`` (``get_extra_info`` of ``"client_addr"``, ``"server_addr"``,
``"ssl_object"``, ``"socket"``) and ``stream_id`` (HTTP/2).

Upgrades and CONNECT: after ``101 Switching Protocols`` to a request with an ``Upgrade`` field,
or a 2xx to ``CONNECT``, over HTTP/1.1, the response has no body and its ``network_stream`` is
the connection, as httpcore's: ``read(max_bytes, timeout=None)`` (``b""`` at the end),
``write(buffer, timeout=None)``, ``aclose()``, raising httpcore's ``ReadError``,
``WriteError``, ``ReadTimeout``, ``WriteTimeout`` (``start_tls`` raises NotImplementedError).
The connection has left the pool; as with httpcore it belongs to the response: use
``client.stream(...)``, and closing the response (or the transport) closes it. This is what
WebSocket clients on httpx (httpx-ws) use. The pool's HTTP/2 has no extended CONNECT
(RFC 8441): a server that negotiates HTTP/2 gets no upgrade (``http2=False`` avoids it).

Errors
------
Every asyncpool error is raised as the httpx exception below, chained to the original
(``raise httpx.X(str(exc), request=request) from exc``), from the request and from body reads:

====================================================  ===========================================
asyncpool                                             httpx
====================================================  ===========================================
``ProxyError`` (the proxy refused or broke a tunnel)   ``ProxyError``
``ConnectError`` (DNS, TCP), ``TLSError``             ``ConnectError``
``ConnectTimeout``, ``TLSHandshakeTimeout``           ``ConnectTimeout``
``ResponseHeaderTimeout``, ``ReadTimeout``            ``ReadTimeout``
(any other ``TimeoutError``)                          ``TimeoutException``
``WriteError``                                        ``WriteError``
``ServerDisconnected`` (closed before any byte)       ``RemoteProtocolError`` (as httpcore's
                                                      "Server disconnected without sending a
                                                      response")
``ReadError``                                         ``ReadError``
(any other ``NetworkError``)                          ``NetworkError``
``DecodingError``, ``DecompressionBomb``              ``DecodingError``
``RemoteProtocolError``, ``StreamReset``,             ``RemoteProtocolError``
``ResponseHeaderTooLarge``, ``FloodError``,
``ResponseTooLarge``
``LocalProtocolError``                                ``LocalProtocolError``
``InvalidURL``: a scheme other than http/https        ``UnsupportedProtocol``
``InvalidURL``: anything else                         ``InvalidURL``
``PoolClosed`` (the transport is closed)              ``TransportError`` (no network error
                                                      happened; httpx has no "closed" error)
(any other ``HTTPError``)                             ``TransportError``
the adapter's phase deadlines                         ``PoolTimeout``, ``ConnectTimeout``,
                                                      ``WriteTimeout``, ``ReadTimeout``
====================================================  ===========================================

Layering: this module imports asyncpool's internals and httpx; ``import asyncpool`` never
imports httpx.
"""

from __future__ import annotations

import inspect
import math
import os
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute

from ._dial import DialFunc
from ._errors import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    HTTPError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolClosed,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseHeaderTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    TimeoutError,
    TLSError,
    TLSHandshakeTimeout,
    WriteError,
)
from ._models import Headers, Request, Response
from ._trace import ClientTrace, GotConnInfo, RetryInfo, WroteRequestInfo, frozen
from ._transport import SharedOptions, Transport
from ._upgrade import UpgradeStream

if TYPE_CHECKING:
    from typing_extensions import Unpack

try:
    import httpcore  # httpx's own dependency: its network stream raises httpcore's errors
    import httpx
except ImportError as exc:
    raise ImportError(
        'asyncpool.httpx needs httpx: pip install "asyncpool-http[httpx]"', name=exc.name
    ) from exc

__all__ = ["HTTPXTransport"]

TraceCallback = Callable[[str, dict[str, Any]], Any]
# httpx's CertTypes and socket option tuples (their own aliases are private).
CertTypes = str | tuple[str, str] | tuple[str, str, str]
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)

# asyncpool error → httpx error, the most specific first (see the module docstring).
_ERRORS: tuple[tuple[type[HTTPError], type[httpx.RequestError]], ...] = (
    (DecodingError, httpx.DecodingError),  # DecompressionBomb too: the body cannot be decoded
    (ResponseTooLarge, httpx.RemoteProtocolError),
    (ServerDisconnected, httpx.RemoteProtocolError),
    (RemoteProtocolError, httpx.RemoteProtocolError),
    (LocalProtocolError, httpx.LocalProtocolError),
    (ConnectTimeout, httpx.ConnectTimeout),
    (TLSHandshakeTimeout, httpx.ConnectTimeout),
    (ResponseHeaderTimeout, httpx.ReadTimeout),
    (ReadTimeout, httpx.ReadTimeout),
    (TimeoutError, httpx.TimeoutException),
    (ProxyError, httpx.ProxyError),
    (ConnectError, httpx.ConnectError),
    (TLSError, httpx.ConnectError),
    (WriteError, httpx.WriteError),
    (ReadError, httpx.ReadError),
    (NetworkError, httpx.NetworkError),
)

# A request's phases: which timeout applies, and what its deadline raises.
_PHASE_ERRORS: dict[str, type[httpx.TimeoutException]] = {
    "pool": httpx.PoolTimeout,
    "connect": httpx.ConnectTimeout,
    "write": httpx.WriteTimeout,
    "read": httpx.ReadTimeout,
}
# The order a request goes through them ("start": before the pool decided anything, no
# deadline); a phase is only ever left for a later one, but a retry starts again.
_PHASE_ORDER = {"start": 0, "pool": 1, "connect": 2, "write": 3, "read": 4}
_PHASE_WAITS = {
    "pool": "no connection from the pool",
    "connect": "no connection",
    "write": "the request was not written",
    "read": "no response",
}


def _raw_headers(response: Response) -> list[tuple[bytes, bytes]]:
    """A response's header fields as httpx takes them: (name, value) in Latin-1 bytes."""
    fields = iter(response.headers._fields)  # name, value, name, value, ...
    pairs = zip(fields, fields)  # noqa: B905 - pairs of one list
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def _map_error(exc: HTTPError, request: httpx.Request) -> Exception:
    """The httpx exception for an asyncpool one (to be raised ``from exc``)."""
    message = str(exc)
    if isinstance(exc, PoolClosed):
        # The closest httpx has: no network event failed, the transport's life did. (httpx
        # itself raises RuntimeError for a request on a closed client, before the transport.)
        return httpx.TransportError(message, request=request)
    if isinstance(exc, InvalidURL):
        if request.url.scheme not in ("http", "https"):
            return httpx.UnsupportedProtocol(message, request=request)
        return httpx.InvalidURL(message)
    for ours, theirs in _ERRORS:
        if isinstance(exc, ours):
            return theirs(message, request=request)
    return httpx.TransportError(message, request=request)


class _Exchange:
    """One httpx request in flight: its phase, its deadline and its queued trace events.

    The hooks (``_on_*``) run in whichever task fires them (the request's, a dial task, a
    connection's writer); they only change this object and the deadline of ``scope``, both
    synchronous. ``done`` turns them off once the head arrived or the request failed.
    """

    __slots__ = (
        "callback",
        "conn_info",
        "done",
        "events",
        "open_op",
        "phase",
        "pool",
        "prefix",
        "request",
        "scope",
        "timeouts",
    )

    def __init__(
        self,
        request: httpx.Request,
        timeouts: dict[str, float | None],
        callback: TraceCallback | None,
        pool: Transport,
        scope: anyio.CancelScope,
    ) -> None:
        self.request = request
        self.timeouts = timeouts
        self.callback = callback
        self.pool = pool
        self.events: deque[tuple[str, dict[str, Any]]] = deque()
        # No deadline until the pool has decided: the adapter's own work is no phase of httpx.
        self.phase = "start"
        self.scope = scope
        self.open_op: str | None = None  # the traced operation started and not yet ended
        self.prefix: str | None = None  # "http11" or "http2", once a connection is obtained
        self.conn_info: GotConnInfo | None = None
        self.done = False

    # -- deadlines ------------------------------------------------------------------------------

    def _deadline(self, phase: str) -> float:
        timeout = self.timeouts.get(phase)
        return math.inf if timeout is None else self.pool._clock() + timeout

    def _enter(self, phase: str) -> None:
        if self.scope.cancel_called:
            return  # a deadline fired: the error names its phase, not one a hook reached since
        self.phase = phase
        self.scope.deadline = self._deadline(phase)

    def _advance(self, phase: str) -> None:
        if not self.done and _PHASE_ORDER[phase] > _PHASE_ORDER[self.phase]:
            self._enter(phase)

    def _pause(self) -> None:
        """No deadline until the phase is entered again (a wait that is not httpx's)."""
        if not self.scope.cancel_called:
            self.scope.deadline = math.inf

    # httpx's write timeout bounds each write, as httpcore's: a streamed body's chunks are
    # handed to the pool through ``_written_in_steps``, which arms it afresh for each chunk the
    # pool writes and not while the caller makes the next (an upload may take any time).

    def chunk_made(self) -> None:
        if not self.done and self.phase == "write":
            self._enter("write")

    def making_chunk(self) -> None:
        if not self.done and self.phase == "write":
            self._pause()

    def timeout_error(self) -> httpx.TimeoutException:
        phase = self.phase
        if phase == "start":  # not reached: the start phase has no deadline
            phase = "pool"
        timeout = self.timeouts.get(phase)
        seconds = "None" if timeout is None else f"{timeout:g} s"
        return _PHASE_ERRORS[phase](
            f"{_PHASE_WAITS[phase]} within the {phase} timeout of {seconds} "
            f"({self.request.method} {self.request.url})",
            request=self.request,
        )

    # -- the pool's decisions (ConnWaitListener), told synchronously -----------------------------

    def conn_waiting(self) -> None:
        """Nothing free at once: httpx's pool timeout runs from here."""
        self._advance("pool")

    def conn_dialing(self) -> None:
        """A dial for it (or the HTTP/2 dial it shares) started: the connect timeout runs."""
        self._advance("connect")

    def conn_assigned(self) -> None:
        self._advance("write")

    # -- trace events ---------------------------------------------------------------------------

    # Without a trace callback nothing is traced: ``open_op`` stays None, and the hooks' checks
    # of it only ever gate events.

    def begin(self, name: str, info: dict[str, Any] | None = None) -> None:
        """``name`` starts; ``info`` is its ``.started`` event's (by default the request's)."""
        if self.callback is None:
            return
        if self.open_op is not None:
            self.complete()  # ended without a hook of its own (e.g. a body cut short)
        self.open_op = name
        if info is None:
            info = {"request": self.request}
        self.events.append((f"{name}.started", info))

    def complete(self, return_value: object = None) -> None:
        if self.open_op is not None:
            self.events.append((f"{self.open_op}.complete", {"return_value": return_value}))
            self.open_op = None

    def failed(self, exc: BaseException) -> None:
        if self.open_op is not None:
            self.events.append((f"{self.open_op}.failed", {"exception": exc}))
            self.open_op = None

    def closed(self) -> None:
        """The response (or the failed attempt on a connection) was closed."""
        if self.prefix is not None and self.callback is not None:
            self.begin(f"{self.prefix}.response_closed")
            self.complete()

    async def flush(self) -> None:
        """Deliver the queued events to the trace callback, from the request's own task."""
        callback, events = self.callback, self.events
        while events and callback is not None:
            name, info = events.popleft()
            result = callback(name, info)
            if inspect.isawaitable(result):
                await result

    # -- the ClientTrace hooks ------------------------------------------------------------------

    def client_trace(self) -> ClientTrace:
        return frozen(
            ClientTrace,
            connect_start=self._on_connect_start,
            connect_done=self._on_connect_done,
            tls_handshake_start=self._on_tls_handshake_start,
            tls_handshake_done=self._on_tls_handshake_done,
            got_conn=self._on_got_conn,
            wrote_headers=self._on_wrote_headers,
            wrote_request=self._on_wrote_request,
            request_retried=self._on_request_retried,
        )

    @property
    def dialing(self) -> bool:
        """Hooks of a dial still concern this request (it has no connection yet)."""
        return not self.done and self.conn_info is None

    def _on_connect_start(self, network: str, addr: tuple[str, int]) -> None:
        if not self.dialing:
            return
        if self.phase == "connect":
            self._enter("connect")  # each attempt (retries=) gets it afresh, as httpcore's
        timeout = self.timeouts.get("connect")
        if network == "unix":  # Transport(uds=...): addr is (path, 0)
            info = {"path": addr[0], "timeout": timeout, "socket_options": None}
            self.begin("connection.connect_unix_socket", info)
            return
        self.begin(
            "connection.connect_tcp",
            {
                "host": self.request.url.host,
                "port": addr[1],
                "local_address": self.pool.local_address,
                "timeout": timeout,
                "socket_options": None,
            },
        )

    def _on_connect_done(
        self, network: str, addr: tuple[str, int], err: BaseException | None
    ) -> None:
        if err is not None and self.dialing and self.phase == "connect":
            self._pause()  # the back-off before another attempt is no phase of httpx's
        if self.dialing and self.open_op in _CONNECT_OPS:
            if err is None:
                self.complete()
            else:
                self.failed(err)

    def _on_tls_handshake_start(self) -> None:
        if not self.dialing:
            return
        if self.phase == "connect":
            self._enter("connect")  # the handshake gets the connect timeout afresh, as httpcore
        self.begin(
            "connection.start_tls",
            {
                "ssl_context": self.pool.tls_config,
                "server_hostname": self.request.extensions.get("sni_hostname")
                or self.request.url.host,
                "timeout": self.timeouts.get("connect"),
            },
        )

    def _on_tls_handshake_done(self, ssl_object: object, err: BaseException | None) -> None:
        if self.dialing and self.open_op == "connection.start_tls":
            if err is None:
                self.complete()
            else:
                self.failed(err)

    def _on_got_conn(self, info: GotConnInfo) -> None:
        if self.done:
            return
        if self.open_op is not None:
            self.open_op = None  # a dial that lost the race: its connection went elsewhere
        self.conn_info = info
        self.prefix = "http2" if info.protocol == "HTTP/2" else "http11"
        self._advance("write")  # (conn_assigned came first: the write deadline runs from there)
        if self.callback is None:
            return
        if self.prefix == "http2" and not info.reused:
            # The pool's handshake sent the preface and read the server's SETTINGS.
            self.begin("http2.send_connection_init")
            self.complete()
            self.begin("http2.receive_remote_settings")
            self.complete()
        self.begin(f"{self.prefix}.send_request_headers")

    def _on_wrote_headers(self) -> None:
        op = self.open_op
        if op is not None and not self.done and op == f"{self.prefix}.send_request_headers":
            self.complete()
            self.begin(f"{self.prefix}.send_request_body")

    def _on_wrote_request(self, info: WroteRequestInfo) -> None:
        if self.done or self.prefix is None:
            return
        op = self.open_op
        if op is not None and op == f"{self.prefix}.send_request_body":
            if info.err is not None:
                self.failed(info.err)
                return
            self.complete()
        if info.err is None:
            if self.callback is not None:
                self.begin(f"{self.prefix}.receive_response_headers")
            if self.phase == "write":
                self._enter("read")

    def _on_request_retried(self, info: RetryInfo) -> None:
        if self.done:
            return
        self.failed(info.error)
        self.closed()
        self.prefix = None
        self.conn_info = None
        if not self.scope.cancel_called:  # it asks the pool again: no deadline until it decides
            self.phase = "start"
            self.scope.deadline = math.inf

    # -- the request's own steps ----------------------------------------------------------------

    def head_received(self, response: Response) -> None:
        self.done = True
        name = f"{self.prefix}.receive_response_headers"
        if self.open_op != name:
            self.begin(name)  # answered before the body was sent
        if self.callback is not None:
            headers = _raw_headers(response)
            value: object = (response.status_code, headers)
            if self.prefix == "http11":
                value = (
                    response.http_version.encode("ascii"),
                    response.status_code,
                    response.reason_phrase.encode("latin-1"),
                    headers,
                )
            self.complete(value)
        else:
            self.open_op = None

    def request_failed(self, exc: BaseException) -> None:
        self.done = True
        self.failed(exc)
        self.closed()


async def _written_in_steps(
    stream: httpx.AsyncByteStream, exchange: _Exchange
) -> AsyncIterator[bytes]:
    """A streamed request body as the pool pulls it, the write timeout armed for each chunk
    (see ``_Exchange.chunk_made``)."""
    chunks = stream.__aiter__()
    try:
        while True:
            exchange.making_chunk()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            exchange.chunk_made()
            yield chunk
        exchange.chunk_made()  # the end of the body is one more write
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _NetworkStream:
    """httpcore's ``AsyncNetworkStream.get_extra_info`` for the connection of a response."""

    __slots__ = ("_info", "_response")

    def __init__(self, response: Response, info: GotConnInfo | None) -> None:
        self._response = response
        self._info = info

    def get_extra_info(self, info: str) -> Any:
        conn_info = self._info
        if info == "client_addr":
            return None if conn_info is None else conn_info.local_address
        if info == "server_addr":
            return None if conn_info is None else conn_info.remote_address
        if info == "ssl_object":
            return self._response.extra(TLSAttribute.ssl_object)
        if info == "socket":
            return self._response.extra(anyio.abc.SocketAttribute.raw_socket)
        return None

    def __repr__(self) -> str:
        info = self._info
        if info is None:
            return "<NetworkStream>"
        return f"<NetworkStream {info.local_address} -> {info.remote_address}>"


class _UpgradeNetworkStream(_NetworkStream):
    """httpcore's ``AsyncNetworkStream`` over the connection a response switched protocols on.
    Not taken from the response (``Response.upgrade_stream()``): as in httpcore, closing the
    response or the transport closes it."""

    __slots__ = ("_stream",)

    def __init__(self, response: Response, info: GotConnInfo | None, stream: UpgradeStream) -> None:
        super().__init__(response, info)
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            try:
                return await self._stream.read(max_bytes)
            except ReadError as exc:
                raise httpcore.ReadError(str(exc)) from exc
        raise httpcore.ReadTimeout(f"nothing to read within {timeout}s")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            try:
                return await self._stream.write(buffer)
            except WriteError as exc:
                raise httpcore.WriteError(str(exc)) from exc
        raise httpcore.WriteTimeout(f"could not write within {timeout}s")

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        raise NotImplementedError("TLS over an upgraded connection is not supported")

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _ResponseStream(httpx.AsyncByteStream):
    """The body of an asyncpool response as httpx reads it, with a read timeout per chunk."""

    __slots__ = ("_body", "_chunks", "_closed", "_ended", "_exchange", "_received", "_response")

    def __init__(self, response: Response, exchange: _Exchange) -> None:
        self._response = response
        self._exchange = exchange
        # What the pool reads the body from: once it says the body is all in (``is_consumed``),
        # a read cannot wait on the network, so it needs no deadline (a cancel scope and a
        # timer each, the larger part of a small body's cost here).
        self._body = response._stream
        self._chunks: AsyncIterator[bytes] | None = None
        self._ended = False
        self._closed = False
        self._received = 0  # for the pool's max_body_bytes, which its own aread applies

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._ended or self._closed:
            raise StopAsyncIteration
        exchange = self._exchange
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = self._response.aiter_bytes()
            exchange.begin(f"{exchange.prefix}.receive_response_body")
        try:
            if self._body.is_consumed:
                try:
                    chunk = await chunks.__anext__()
                except HTTPError as exc:
                    raise _map_error(exc, exchange.request) from exc
            else:
                chunk = await self._read(chunks)
            check = self._response._check_read
            if check is not None:  # (httpx streams every body: the pool's limits apply here)
                self._received += len(chunk)
                try:
                    check(self._received)
                except HTTPError as exc:
                    raise _map_error(exc, exchange.request) from exc
        except StopAsyncIteration:
            self._ended = True
            exchange.complete()
            if exchange.events:
                await exchange.flush()
            raise
        except Exception as exc:
            self._ended = True
            exchange.failed(exc)
            if exchange.events:
                await exchange.flush()
            raise
        if exchange.events:
            await exchange.flush()
        return chunk

    async def _read(self, chunks: AsyncIterator[bytes]) -> bytes:
        exchange = self._exchange
        try:
            with anyio.CancelScope(deadline=exchange._deadline("read")):
                return await chunks.__anext__()
        except HTTPError as exc:
            raise _map_error(exc, exchange.request) from exc
        # Only the deadline ends the scope without a chunk (a failed read closed the body).
        exchange.phase = "read"
        raise exchange.timeout_error()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        response = self._response
        if not response.is_closed or response._upgraded is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        exchange = self._exchange
        if not self._ended:
            exchange.open_op = None  # a body cut short: httpcore reports only the close
        exchange.closed()
        if exchange.events:
            await exchange.flush()


# The pool options that httpx's limits= sets.
# The traced operations of a connect: TCP, or a Unix socket (``uds``), as httpcore names them.
_CONNECT_OPS = frozenset({"connection.connect_tcp", "connection.connect_unix_socket"})

_LIMITS_OPTIONS = frozenset(
    {"max_conns", "max_idle_conns", "max_idle_conns_per_host", "idle_conn_timeout"}
)


def _limits_options(limits: httpx.Limits) -> SharedOptions:
    """httpx's Limits as the pool's options: ``max_connections`` over all hosts, as httpcore's."""
    options: SharedOptions = {
        "max_conns": limits.max_connections or 0,
        "idle_conn_timeout": limits.keepalive_expiry,
    }
    keepalive = limits.max_keepalive_connections
    if keepalive == 0:
        options["max_idle_conns_per_host"] = 0  # keep none (and still no Connection: close)
    else:
        options["max_idle_conns"] = keepalive or 0  # None: no limit, the pool's 0
    return options


def _alpn(http1: bool, http2: bool) -> list[str]:
    return (["h2"] if http2 else []) + (["http/1.1"] if http1 else [])


def _ssl_env() -> bool:
    return bool(os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"))


def _proxy_options(
    proxy: httpx.Proxy | httpx.URL | str | None,
) -> tuple[str | None, dict[str, str] | None]:
    """httpx's ``proxy=`` as the pool's ``proxy`` URL (credentials inside, as httpcore's
    ``proxy_auth``) and ``proxy_connect_headers`` (httpx's ``Proxy(headers=...)``)."""
    if proxy is None:
        return None, None
    if not isinstance(proxy, httpx.Proxy):
        proxy = httpx.Proxy(proxy)
    if proxy.ssl_context is not None:
        raise NotImplementedError(
            "HTTPXTransport: httpx.Proxy(ssl_context=...) is not supported; the pool verifies "
            "an https proxy with its own SSL context (verify= / tls_config=)"
        )
    url = proxy.url
    if proxy.raw_auth is not None:
        user, password = (quote(part.decode("latin-1"), safe="") for part in proxy.raw_auth)
        url = url.copy_with(userinfo=f"{user}:{password}".encode())
    headers = {name: value for name, value in proxy.headers.items()} or None
    return str(url), headers


class HTTPXTransport(httpx.AsyncBaseTransport):
    """An httpx transport on an ``asyncpool.Transport`` (``.pool``), created with the given
    options. Use it as ``httpx.AsyncClient(transport=HTTPXTransport())``, with or without
    ``async with``. See the module docstring for extensions, timeouts and errors."""

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = True,
        limits: httpx.Limits | None = None,
        proxy: httpx.Proxy | httpx.URL | str | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: Iterable[SocketOption] | None = None,
        **transport_options: Unpack[SharedOptions],
    ) -> None:
        """httpx's ``AsyncHTTPTransport`` arguments with httpx's meaning, then any option of
        ``asyncpool.Transport`` by keyword (see the module docstring, "Options")."""
        proxy_url, proxy_headers = _proxy_options(proxy)
        if socket_options is not None:
            raise NotImplementedError(
                "HTTPXTransport(socket_options=...) is not supported: set them in a dial= "
                "function of your own"
            )
        if not http1 and not http2:
            raise ValueError("HTTPXTransport needs http1 or http2 (or both)")
        if not (verify is True and cert is None):
            if "tls_config" in transport_options:
                raise TypeError("HTTPXTransport: give verify / cert, or tls_config, not both")
            context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
            if not isinstance(verify, ssl.SSLContext):  # ours: it offers what we speak
                context.set_alpn_protocols(_alpn(http1, http2))
            transport_options["tls_config"] = context
        elif trust_env and "tls_config" not in transport_options and _ssl_env():
            # httpx honours SSL_CERT_FILE / SSL_CERT_DIR (trust_env); the pool's own does not.
            context = httpx.create_ssl_context(trust_env=True)
            context.set_alpn_protocols(_alpn(http1, http2))
            transport_options["tls_config"] = context
        if limits is not None:
            given = sorted(set(transport_options) & _LIMITS_OPTIONS)
            if given:
                raise TypeError(f"HTTPXTransport: give limits= or {', '.join(given)}, not both")
            transport_options.update(_limits_options(limits))
        transport_options.setdefault("disable_compression", True)
        dial: DialFunc | None = transport_options.get("dial")
        # Requests waiting for a connection, by (host, port), when a dial function is given:
        # its calls fire no ClientTrace hook, so they are told apart here.
        self._waiting: dict[tuple[str, int], set[_Exchange]] | None = None
        # The running backend's CancelScope class, learnt with the first request (the pool's
        # tasks tie it to that event loop anyway).
        self._new_scope: Callable[[], anyio.CancelScope] | None = None
        if dial is not None:
            self._waiting = {}
            self._user_dial = dial
            transport_options["dial"] = self._watched_dial
        if http2 and not http1:  # httpcore: HTTP/2 only, without ALPN over cleartext
            transport_options["http2_prior_knowledge"] = True
        self.pool = Transport(
            http2=http2,
            connect_retries=retries,
            proxy=proxy_url,
            proxy_connect_headers=proxy_headers,
            uds=uds,
            local_address=local_address,
            **transport_options,
        )
        self._entered = False

    async def __aenter__(self) -> HTTPXTransport:
        if self._entered:
            raise RuntimeError("an HTTPXTransport can be opened once; create a new one")
        self._entered = True
        try:
            await self.pool.__aenter__()
        except PoolClosed:
            raise RuntimeError("the HTTPXTransport is closed; create a new one") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool and every connection, from any task; idempotent."""
        await self.pool.aclose()

    # -- requests -------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        extensions = request.extensions
        timeouts: dict[str, float | None] = extensions.get("timeout") or {}
        new_scope = self._new_scope
        if new_scope is None:  # the backend's own class (anyio.CancelScope() looks it up: 2 µs)
            new_scope = self._new_scope = type(anyio.CancelScope())
        exchange = _Exchange(request, timeouts, extensions.get("trace"), self.pool, new_scope())
        trace = exchange.client_trace()
        user_trace: ClientTrace | None = extensions.get("client_trace")
        if user_trace is not None:
            trace = trace.compose(user_trace)
        try:
            pool_request = self._pool_request(request, trace, exchange)
        except HTTPError as exc:
            raise _map_error(exc, request) from exc

        key = (pool_request.url.host, pool_request.url.port)
        self._watch(key, exchange)
        response: Response | None = None
        try:
            with exchange.scope:
                response = await self.pool.round_trip(pool_request)
        except HTTPError as exc:
            error = _map_error(exc, request)
            exchange.request_failed(error)
            if exchange.events:
                await exchange.flush()
            raise error from exc
        except Exception as exc:  # raised by the request body's iterator, or a hook
            exchange.request_failed(exc)
            if exchange.events:
                await exchange.flush()
            raise
        except BaseException:  # cancelled from outside: nothing can be awaited any more
            exchange.done = True
            raise
        finally:
            self._unwatch(key, exchange)
        if response is None:  # the phase's deadline passed
            timeout = exchange.timeout_error()
            exchange.request_failed(timeout)
            if exchange.events:
                await exchange.flush()
            raise timeout

        exchange.head_received(response)
        if exchange.events:
            try:
                await exchange.flush()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                raise
        return self._httpx_response(response, exchange)

    def _pool_request(
        self, request: httpx.Request, trace: ClientTrace, exchange: _Exchange
    ) -> Request:
        stream = request.stream
        content: bytes | AsyncIterable[bytes] | None
        if isinstance(stream, httpx.ByteStream):
            # Replayable: a retry may send it again. Empty: no body at all, which the pool
            # sends alike (httpx gave the Content-Length a method with a body needs) and
            # whose wire header fields it checks once and keeps for the next such request.
            content = b"".join(stream) or None
        elif isinstance(stream, httpx.AsyncByteStream):
            content = _written_in_steps(stream, exchange)
        else:
            raise TypeError(f"an async request body is needed, not {stream!r}")
        target = request.extensions.get("target")
        # The dial gets httpx's connect timeout for each of its steps; None (no limit in httpx)
        # leaves the pool's own dial_timeout and tls_handshake_timeout as a ceiling.
        connect = exchange.timeouts.get("connect")
        pool_request = Request(
            request.method,
            str(request.url),
            content=content,
            trace=trace,
            sni_hostname=request.extensions.get("sni_hostname"),
            target=None if target is None else target.decode("latin-1"),
            connect_timeout=connect,
            wait_listener=exchange,
        )
        # httpx's fields as they are, not checked here again: the pool checks every field list
        # it sends, by the writers' rules (stricter than Request's own), before any connection
        # is taken, and refuses a bad one with LocalProtocolError (check_wire_fields).
        pool_request.headers = Headers._trusted(
            [part.decode("latin-1") for field in request.headers.raw for part in field]
        )
        return pool_request

    def _httpx_response(self, response: Response, exchange: _Exchange) -> httpx.Response:
        upgraded = response._upgraded
        network_stream = (
            _NetworkStream(response, exchange.conn_info)
            if upgraded is None
            else _UpgradeNetworkStream(response, exchange.conn_info, upgraded)
        )
        extensions: dict[str, Any] = {
            "http_version": response.http_version.encode("ascii"),
            "network_stream": network_stream,
        }
        if response.stream_id is not None:
            extensions["stream_id"] = response.stream_id
        if response.http_version != "HTTP/2":
            extensions["reason_phrase"] = response.reason_phrase.encode("latin-1")
        return httpx.Response(
            response.status_code,
            headers=_raw_headers(response),
            stream=_ResponseStream(response, exchange),
            extensions=extensions,
        )

    # -- dial functions: which requests a dial may serve ----------------------------------------

    def _watch(self, key: tuple[str, int], exchange: _Exchange) -> None:
        if self._waiting is not None:
            self._waiting.setdefault(key, set()).add(exchange)

    def _unwatch(self, key: tuple[str, int], exchange: _Exchange) -> None:
        if self._waiting is not None:
            waiting = self._waiting[key]
            waiting.discard(exchange)
            if not waiting:
                del self._waiting[key]

    async def _watched_dial(self, host: str, port: int) -> anyio.abc.ByteStream:
        """The user's dial function; the requests of ``host:port`` in their connect phase (this
        dial is theirs or one they share) see it as their TCP connect."""
        assert self._waiting is not None
        waiting = [
            exchange
            for exchange in self._waiting.get((host, port), ())
            if exchange.dialing and exchange.phase == "connect"
        ]
        for exchange in waiting:
            exchange._on_connect_start("tcp", (host, port))
        try:
            stream = await self._user_dial(host, port)
        except Exception as exc:
            for exchange in waiting:
                exchange._on_connect_done("tcp", (host, port), exc)
            raise
        # Cancelled (a connect timeout, the pool closing): each request reports its own error.
        for exchange in waiting:
            exchange._on_connect_done("tcp", (host, port), None)
        return stream
