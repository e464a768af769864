"""In-process HTTP/1.1 test server (h11 + anyio) that can misbehave on purpose.

The server runs inside the test's own event loop (asyncio or trio, via anyio) and listens
on a real loopback socket, so the client under test talks to it over TCP (or TLS)::

    async with open_server() as server:          # default_handler, http://127.0.0.1:<port>
        ... make requests to server.url_for("/echo") ...
        assert server.connections_accepted == 1
        assert server.requests[0].header("host") == f"127.0.0.1:{server.port}"

Custom behaviour comes from a handler, called once per request with the request head
already parsed (the body is *not* read until the handler calls ``conn.read_body()``)::

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.index_on_connection == 1:
            await conn.close()                   # drop the 2nd request on each connection
            return
        await conn.respond(200, [("content-type", "text/plain")], b"hi")

    async with open_server(handler, ssl_context=tls.server_context) as server: ...

After the handler returns, the connection is kept alive for the next request when h11
allows it (the unread request body is drained first), otherwise it is closed.  A handler
that raises gets its connection closed; the exception is kept in ``server.handler_errors``.

Waiting never sleeps: ``await server.wait_until(lambda s: s.open_connections == 0)`` (and
``wait_for_connections_closed``) wake up on server state changes, and every
``ServerConnection.closed`` is an ``anyio.Event``.  ``await server.close_idle_connections()``
closes the connections that sit between requests, like a server's keep-alive timeout.
For client-side state without an event use the module-level ``wait_until`` helper.

Closing: after a complete response that ends the connection (connection: close, HTTP/1.0,
``send_raw``) the server sends TLS close_notify (if TLS) and a FIN once everything was
written; ``conn.close()`` and ``close_idle_connections()`` close at once without
close_notify (TLS clients see a ragged EOF).  Leaving ``open_server`` cancels all handlers
and closes every socket.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import h11
import trustme
from anyio.abc import (
    AnyByteStream,
    ByteStream,
    Listener,
    SocketAttribute,
    SocketListener,
    SocketStream,
)
from anyio.streams.tls import TLSStream

Headers = Sequence[tuple[str, str]]
Handler = Callable[["ServerRequest", "ServerConnection"], Awaitable[None]]
# errors that just mean "the client went away or misbehaved"; anything else is a bug
_CONNECTION_ERRORS = (anyio.BrokenResourceError, anyio.EndOfStream, OSError, h11.ProtocolError)


@asynccontextmanager
async def open_blaster(payload: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that sends ``payload`` to each client at once, then records what it
    receives until EOF: (its port, what it received). For the socket streams' own tests."""
    received: list[bytes] = []

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                await stream.send(payload)
                while True:
                    received.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the client went away

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(SocketAttribute.local_port), received
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, polling every millisecond; fail after ``timeout``.

    For client-side state that has no event to wait on.  This is a bounded wait for a
    condition, not a delay: it returns as soon as the condition holds.
    """
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


@dataclass
class ServerRequest:
    """A request as received by the server (header names lowercased)."""

    method: str
    target: str  # path + query, exactly as sent
    headers: list[tuple[str, str]]
    connection_id: int  # 0-based index of the TCP connection it arrived on
    index_on_connection: int  # 0 for the first request on its connection
    http_version: str = "1.1"
    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # original name case
    body: bytes = b""  # filled once the body was read (by the handler or by draining)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (first value of each)."""
        result: dict[str, str] = {}
        for key, value in parse_qsl(urlsplit(self.target).query, keep_blank_values=True):
            result.setdefault(key, value)
        return result

    def header(self, name: str) -> str | None:
        """Value of header ``name`` (case-insensitive); repeated headers are joined by ", "."""
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None


class ServerConnection:
    """Server side of one TCP connection; handlers use it to answer (or misbehave)."""

    def __init__(self, server: TestServer, connection_id: int, stream: ByteStream) -> None:
        self.connection_id = connection_id
        self.closed = anyio.Event()  # set once the server has closed this connection's socket
        self.h11 = h11.Connection(h11.SERVER)
        self._server = server
        self._stream = stream
        self._request: ServerRequest | None = None
        self._raw = False  # send_raw() was used: h11 state abandoned
        self._closing = False
        self._idle = False  # waiting for the first byte of the next request
        self._idle_scope: anyio.CancelScope | None = None
        self._close_when_idle = False

    @property
    def is_idle(self) -> bool:
        """True while between requests, waiting for the next one."""
        return self._idle

    # -- handler API ----------------------------------------------------------------------

    async def read_body(self, *, send_continue: bool = True) -> bytes:
        """Read the whole request body (stored in ``req.body``).

        Sends ``100 Continue`` first if the client asked for it and nothing was sent yet.
        """
        req = self._current_request()
        if send_continue and self.h11.they_are_waiting_for_100_continue:
            await self.send_informational(100)
        chunks = [req.body]
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                chunks.append(event.data)
                req.body = b"".join(chunks)
            elif event is None or isinstance(event, h11.ConnectionClosed):
                raise anyio.EndOfStream
        return req.body

    async def send_informational(self, status: int, headers: Headers = ()) -> None:
        """Send a 1xx response (e.g. 100 Continue, 103 Early Hints)."""
        event = h11.InformationalResponse(
            status_code=status, headers=list(headers), reason=_reason(status)
        )
        await self._send(event)

    async def respond(
        self,
        status: int = 200,
        headers: Headers | None = None,
        body: bytes = b"",
        *,
        reason: str | None = None,
    ) -> None:
        """Send a complete response in one write.

        Adds ``content-length`` unless a content-length or transfer-encoding header is given
        (or the status is 1xx/204/304).  No body is sent for HEAD requests and 204/304.
        """
        head = list(headers or [])
        names = {name.lower() for name, _ in head}
        framed = names & {"content-length", "transfer-encoding"}
        if status >= 200 and status not in (204, 304) and not framed:
            head.append(("content-length", str(len(body))))
        data = self._h11_send(self._response(status, head, reason))
        if body and status not in (204, 304) and self._current_request().method != "HEAD":
            data += self._h11_send(h11.Data(data=body))
        data += self._h11_send(h11.EndOfMessage())
        await self._stream.send(data)

    async def send_head(
        self, status: int = 200, headers: Headers | None = None, *, reason: str | None = None
    ) -> None:
        """Start a streamed response; chunked unless a content-length header is given."""
        await self._send(self._response(status, list(headers or []), reason))

    async def send_data(self, data: bytes) -> None:
        """Send part of a streamed response body (one chunk when chunked)."""
        await self._send(h11.Data(data=data))

    async def end(self, trailers: Headers = ()) -> None:
        """Finish a streamed response (trailers only work with chunked encoding)."""
        await self._send(h11.EndOfMessage(headers=list(trailers)))

    async def send_raw(self, data: bytes) -> None:
        """Write bytes straight to the socket, bypassing h11 (bad framing, HTTP/1.0, ...).

        The connection can no longer be reused: it is closed when the handler returns.
        """
        self._raw = True
        await self._stream.send(data)

    async def close(self, *, reset: bool = False) -> None:
        """Close the TCP connection right away, without a response.

        Sends a FIN (no TLS close_notify); ``reset=True`` sends a TCP RST instead.
        """
        await self._shutdown(graceful=False, reset=reset)

    # -- internals ------------------------------------------------------------------------

    def _current_request(self) -> ServerRequest:
        if self._request is None:
            raise RuntimeError("no request is being handled on this connection")
        return self._request

    def _response(self, status: int, headers: Headers, reason: str | None) -> h11.Response:
        reason = _reason(status) if reason is None else reason
        return h11.Response(status_code=status, headers=list(headers), reason=reason)

    def _h11_send(self, event: h11.Event) -> bytes:
        if self._raw:
            raise RuntimeError("send_raw() was used; h11 state is abandoned")
        return self.h11.send(event) or b""

    async def _send(self, event: h11.Event) -> None:
        data = self._h11_send(event)
        if data:
            await self._stream.send(data)

    async def _receive(self) -> bytes:
        try:
            return await self._stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return b""

    async def _receive_idle(self) -> bytes | None:
        """Receive while between requests; None means close_idle_connections() hit us."""
        if self._close_when_idle:
            return None
        data = b""
        self._idle = True
        self._server._notify()
        try:
            with anyio.CancelScope() as self._idle_scope:
                data = await self._receive()
        finally:
            self._idle, self._idle_scope = False, None
            self._server._notify()
        return None if self._close_when_idle else data

    async def _next_event(self) -> h11.Event | None:
        """Next h11 event, receiving as needed; None if closed by close_idle_connections()."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                assert not isinstance(event, type)  # PAUSED is never reached here
                return event
            between_requests = self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]
            data = await (self._receive_idle() if between_requests else self._receive())
            if data is None:
                return None
            self.h11.receive_data(data)

    async def _serve(self, handler: Handler, ssl_context: ssl.SSLContext | None) -> None:
        graceful = False
        try:
            if ssl_context is not None:
                self._stream = await TLSStream.wrap(
                    self._stream, server_side=True, ssl_context=ssl_context,
                    standard_compatible=False,
                )  # fmt: skip
            graceful = await self._serve_requests(handler)
        except _CONNECTION_ERRORS:
            pass
        finally:
            await self._shutdown(graceful=graceful)

    async def _serve_requests(self, handler: Handler) -> bool:
        """Serve requests until the connection must close; returns whether to close gracefully."""
        index = 0
        while not self._close_when_idle:
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # answer garbage with 400
                    headers = [("connection", "close"), ("content-length", "0")]
                    await self._send(self._response(exc.error_status_hint, headers, None))
                    await self._send(h11.EndOfMessage())
                return True
            if not isinstance(event, h11.Request):
                return not self._close_when_idle  # EOF from client, or close_idle_connections()
            self._request = req = ServerRequest(
                method=event.method.decode("ascii"),
                target=event.target.decode("ascii"),
                headers=_decode_pairs(event.headers),
                raw_headers=_decode_pairs(event.headers.raw_items()),
                connection_id=self.connection_id,
                index_on_connection=index,
                http_version=event.http_version.decode("ascii"),
            )
            index += 1
            self._server.requests.append(req)
            self._server._notify()
            try:
                await handler(req, self)
            except Exception as exc:
                self._server.handler_errors.append(exc)
                return False
            if self._closing or self._raw:
                return True
            if self.h11.our_state is h11.DONE and self.h11.their_state is h11.SEND_BODY:
                await self.read_body(send_continue=False)  # drain the unread request body
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return True  # connection: close, HTTP/1.0, incomplete response, ...
            self.h11.start_next_cycle()
        return False

    async def _shutdown(self, *, graceful: bool, reset: bool = False) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            if graceful:  # TLS close_notify, then FIN after all data
                stream: AnyByteStream = self._stream
                if isinstance(stream, TLSStream):
                    await _send_close_notify(stream)
                    stream = stream.transport_stream
                await stream.send_eof()
        except Exception:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                if reset:
                    with suppress(Exception):
                        sock = self._stream.extra(SocketAttribute.raw_socket)
                        linger = struct.pack("ii", 1, 0)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                await anyio.aclose_forcefully(self._stream)
            self._server.open_connections -= 1
            self.closed.set()
            self._server._notify()


def _decode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in pairs]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def _send_close_notify(stream: TLSStream) -> None:
    # TLSStream.unwrap() would wait for the peer's close_notify; we only send ours.
    ssl_object: ssl.SSLObject = stream._ssl_object
    with suppress(ssl.SSLError):
        ssl_object.unwrap()
    await stream.transport_stream.send(stream._write_bio.read())


class TestServer:
    """A running server; see the module docstring.  Create it with ``open_server``."""

    __test__ = False  # not a pytest test class

    def __init__(self, host: str, port: int, *, tls: bool) -> None:
        self.host = host
        self.port = port
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = self.origin = f"{'https' if tls else 'http'}://{netloc}"
        self.connections_accepted = 0
        self.open_connections = 0
        self.connections: list[ServerConnection] = []
        self.requests: list[ServerRequest] = []
        self.handler_errors: list[Exception] = []
        self._changed = anyio.Event()

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    @property
    def idle_connections(self) -> int:
        """Number of connections waiting for their next request."""
        return sum(conn.is_idle for conn in self.connections)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(
        self, predicate: Callable[[TestServer], bool], *, timeout: float = 5.0
    ) -> None:
        """Wait until ``predicate(server)`` is true; re-checked on every server state change."""
        with anyio.fail_after(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_for_connections_closed(self, n_open: int = 0, *, timeout: float = 5.0) -> None:
        """Wait until at most ``n_open`` connections are still open on the server side."""
        await self.wait_until(lambda s: s.open_connections <= n_open, timeout=timeout)

    async def close_idle_connections(self, *, timeout: float = 5.0) -> int:
        """Close every connection that is between requests (simulates keep-alive timeouts).

        Connections that already sent their complete response are closed as soon as the
        handler returns, instead of reading another request (so calling this right after
        the client got a response is not racy).  Returns the number of connections closed,
        once all of them are closed (a handler stalling after its response would make this
        time out).
        """
        targets = [
            conn
            for conn in self.connections
            if not conn.closed.is_set()
            and (conn.is_idle or (conn.h11.our_state in (h11.DONE, h11.MUST_CLOSE)))
        ]
        for conn in targets:
            conn._close_when_idle = True
            if conn._idle_scope is not None:
                conn._idle_scope.cancel()
        with anyio.fail_after(timeout):
            for conn in targets:
                await conn.closed.wait()
        return len(targets)

    async def _accept_loop(
        self, listener: Listener[SocketStream], handler: Handler, ssl_context: ssl.SSLContext | None
    ) -> None:
        assert isinstance(listener, SocketListener)
        async with anyio.create_task_group() as tg:
            while True:
                stream = await listener.accept()
                _flush_before_returning_from_send(stream)
                conn = ServerConnection(self, len(self.connections), stream)
                self.connections.append(conn)
                self.connections_accepted += 1
                self.open_connections += 1
                self._notify()
                tg.start_soon(conn._serve, handler, ssl_context)


def _flush_before_returning_from_send(stream: SocketStream) -> None:
    # On asyncio, anyio's SocketStream.send() may return while data is still buffered in
    # the transport, and aclose() discards that buffer.  With a zero high-water mark send()
    # waits until the kernel has everything, so closing never truncates a response.
    transport = getattr(stream, "_transport", None)
    if transport is not None:
        transport.set_write_buffer_limits(0)


@asynccontextmanager
async def open_server(
    handler: Handler | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[TestServer]:
    """Serve ``handler`` (default: ``default_handler``) on ``host``, on a free port."""
    multi = await anyio.create_tcp_listener(local_host=host, local_port=0)
    listeners = list(multi.listeners)
    port = listeners[0].extra(SocketAttribute.local_port)
    server = TestServer(host, port, tls=ssl_context is not None)
    try:
        async with anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(
                    server._accept_loop, listener, handler or default_handler, ssl_context
                )
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await multi.aclose()
            for conn in server.connections:  # in case a task was cancelled before it started
                await conn._shutdown(graceful=False)


# -- default handler ------------------------------------------------------------------------


async def default_handler(req: ServerRequest, conn: ServerConnection) -> None:
    """Routes used by most client tests (anything else is a 404):

    ``/`` "hello" | ``/echo`` the request body, plus x-request-content-length and
    x-request-transfer-encoding headers | ``/status/<n>`` empty body with status n |
    ``/gzip``, ``/deflate`` b"hello gzip"*100 (b"hello deflate"*100), compressed if the
    accept-encoding asks for it | ``/stream?chunks=N&size=S`` chunked, N chunks of S b"x" |
    ``/bytes?n=N`` N b"x" | ``/close`` "bye" with connection: close | ``/http10`` raw
    HTTP/1.0 response framed by closing | ``/headers?size=N`` header x-big of N bytes |
    ``/headers-echo`` request headers as a JSON list of [name, value] pairs.
    """
    path, query = req.path, req.query
    accept_encoding = req.header("accept-encoding") or ""
    if path == "/":
        await conn.respond(200, [("content-type", "text/plain")], b"hello")
    elif path == "/echo":
        body = await conn.read_body()
        headers = [
            (f"x-request-{name}", value)
            for name in ("content-length", "transfer-encoding")
            if (value := req.header(name)) is not None
        ]
        await conn.respond(200, headers, body)
    elif path.startswith("/status/") and path[8:].isdigit():
        await conn.respond(int(path[8:]))
    elif path == "/gzip" and "gzip" in accept_encoding:
        body = gzip.compress(b"hello gzip" * 100)
        await conn.respond(200, [("content-encoding", "gzip")], body)
    elif path == "/deflate" and "deflate" in accept_encoding:
        body = zlib.compress(b"hello deflate" * 100)
        await conn.respond(200, [("content-encoding", "deflate")], body)
    elif path in ("/gzip", "/deflate"):
        await conn.respond(200, [], (b"hello " + path[1:].encode()) * 100)
    elif path == "/stream":
        await conn.send_head(200, [("content-type", "application/octet-stream")])
        for _ in range(int(query.get("chunks", "3"))):
            await conn.send_data(b"x" * int(query.get("size", "10")))
        await conn.end()
    elif path == "/bytes":
        await conn.respond(200, [], b"x" * int(query.get("n", "10")))
    elif path == "/close":
        await conn.respond(200, [("connection", "close")], b"bye")
    elif path == "/http10":
        await conn.send_raw(b"HTTP/1.0 200 OK\r\n\r\nold school")  # closed on return
    elif path == "/headers":
        await conn.respond(200, [("x-big", "b" * int(query.get("size", "100")))], b"ok")
    elif path == "/headers-echo":
        body = json.dumps([list(pair) for pair in req.headers]).encode()
        await conn.respond(200, [("content-type", "application/json")], body)
    else:
        await conn.respond(404, [], b"not found")


# -- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFixture:
    ca: trustme.CA
    server_context: ssl.SSLContext  # certificate for 127.0.0.1, ::1 and localhost
    client_context: ssl.SSLContext  # trusts ``ca``
    ca_file: Path | None = None  # CA certificate PEM, if make_tls() got a directory


def make_tls(tmp_dir: Path | None = None) -> TLSFixture:
    """Build a throwaway CA plus matching server and client SSL contexts (via trustme)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(server_context)
    server_context.set_alpn_protocols(["http/1.1"])
    client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_context)
    # asyncpool uses a tls_config as given: it offers the protocols set on it.
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    ca_file = None
    if tmp_dir is not None:
        ca_file = tmp_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
    return TLSFixture(ca, server_context, client_context, ca_file)


@asynccontextmanager
async def open_unix_server(
    path: Path, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[TestServer]:
    """The HTTP/1.1 test server (``default_handler``) on a Unix socket."""
    listener = await anyio.create_unix_listener(path)
    server = TestServer("uds.test", 80, tls=ssl_context is not None)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._accept_loop, listener, default_handler, ssl_context)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()
            for conn in server.connections:
                await conn._shutdown(graceful=False)
