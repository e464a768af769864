"""Test helpers: an in-memory byte-stream pair and a scripted HTTP server for ``dial=``.

Test your own code against a real :class:`asyncpool.Transport` without a socket, the way
``trio.testing`` serves trio code and httpx's ``MockTransport`` serves httpx code. Nothing
here touches the network; it runs on asyncio and trio alike (through anyio) and never sleeps.

:class:`MockServer` is a server a Transport reaches through its ``dial=`` option: every dial
makes a new server-side connection over a :func:`memory_stream_pair`. It speaks HTTP/1.1 (h11)
by default and HTTP/2 (h2, for a Transport with ``http2_prior_knowledge=True``) with
``MockServer(http2=True)``. Canned routes answer by path (``"/users"``) or by method and path
(``"POST /users"``); anything else gets a 404::

    async with (
        MockServer(routes={"/": Reply(200, [("content-type", "text/plain")], b"hi")}) as server,
        asyncpool.Transport(dial=server.dial) as pool,
    ):
        response = await pool.round_trip(asyncpool.Request("GET", "http://example.test/"))
        assert await response.aread() == b"hi"
        assert server.requests[0].header("host") == "example.test"

A handler scripts anything else. It is called once per request, once the request's body has
arrived (``request.body``), with the :class:`ServerConnection` that answers it::

    release = anyio.Event()

    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        if request.path == "/slow":
            await conn.stall(release)          # until the test sets release (or the client leaves)
        if request.index_on_connection == 1:
            await conn.close()                 # the keep-alive race: drop a reused connection
            return
        await conn.respond(200, body=b"ok")

    async with MockServer(handler) as server, asyncpool.Transport(dial=server.dial) as pool:
        ...
        await server.wait_until(lambda s: s.stalled == 1)

Actions: ``respond``, ``send_informational`` (1xx), ``send_head`` / ``send_data`` / ``end`` (a
streamed body), ``stall``, ``close`` (the client reads EOF), ``reset`` (the client's reads and
writes fail, as after a TCP RST); over HTTP/2 also ``reset_stream`` (RST_STREAM) and ``goaway``.
A handler that returns without a complete response closes the HTTP/1.1 connection (resets the
HTTP/2 stream); one that raises does the same, and the exception is kept in
``server.handler_errors`` and raised when the server's block ends. A handler is cancelled when
its client goes away (HTTP/1.1: the connection ends; HTTP/2: the stream is reset).

The server records what it saw: ``requests`` (method, target, headers, body, connection),
``dials``, ``connections_made``, ``open_connections``, ``stalled``. ``wait_until(predicate)``
waits for server state without sleeping; the module's :func:`wait_until` polls any condition
(the pool's ``stats()``, say) at each turn of the event loop.

On a :class:`MemoryStream`, bytes sent are readable at once by the peer (the buffer is
unbounded: a send never blocks); ``send_eof`` ends the peer's reads after what was sent,
``aclose`` also makes the peer's sends fail, and ``reset`` makes the peer's reads and sends fail
at once with ``anyio.BrokenResourceError``, dropping what it had not read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h11

__all__ = [
    "Handler",
    "MemoryStream",
    "MockServer",
    "Reply",
    "ServerConnection",
    "ServerRequest",
    "memory_stream_pair",
    "wait_until",
]

HeaderPairs = Sequence[tuple[str, str]]
Handler = Callable[["ServerRequest", "ServerConnection"], Awaitable[None]]
# What ends a server connection quietly: the client went away.
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)


# -- the in-memory stream pair ----------------------------------------------------------------


class _Pipe:
    """One direction of a pair: bytes in flight and how the writing end finished."""

    __slots__ = ("broken", "buffer", "eof", "reader_gone", "waiter")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False  # the writer sent EOF or closed
        self.broken = False  # reset: reads fail at once
        self.reader_gone = False  # the reader closed: writes fail
        self.waiter: anyio.Event | None = None

    def wake(self) -> None:
        if self.waiter is not None:
            self.waiter.set()
            self.waiter = None


class MemoryStream(anyio.abc.ByteStream):
    """One end of an in-memory, bidirectional byte stream (see :func:`memory_stream_pair`)."""

    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self._in = incoming
        self._out = outgoing
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``EndOfStream`` once the peer finished and all was read."""
        await anyio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._in.broken:
                raise anyio.BrokenResourceError("connection reset by peer")
            if self._in.buffer:
                data = bytes(self._in.buffer[:max_bytes])
                del self._in.buffer[:max_bytes]
                return data
            if self._in.eof:
                raise anyio.EndOfStream
            if self._in.waiter is None:
                self._in.waiter = anyio.Event()
            await self._in.waiter.wait()

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        self.send_nowait(item)

    def send_nowait(self, item: bytes) -> None:
        """Send without waiting (a send never has to wait: the buffer is unbounded)."""
        if self._closed or self._out.eof:
            raise anyio.ClosedResourceError
        if self._out.broken or self._out.reader_gone:
            raise anyio.BrokenResourceError("connection reset by peer")
        if item:
            self._out.buffer += item
            self._out.wake()

    async def send_eof(self) -> None:
        """Half-close: the peer reads what was sent, then ``EndOfStream``; it may still send."""
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise anyio.ClosedResourceError
        self._out.eof = True
        self._out.wake()

    def close(self) -> None:
        """``aclose`` without waiting."""
        if self._closed:
            return
        self._closed = True
        self._out.eof = True  # the peer reads what was sent, then EndOfStream
        self._in.reader_gone = True  # the peer's sends now fail
        self._in.buffer.clear()
        self._out.wake()
        self._in.wake()  # our own pending receive raises ClosedResourceError

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def reset(self) -> None:
        """Abort the connection, as a TCP RST: the peer's reads and sends raise
        ``BrokenResourceError`` at once (what it had not read is lost); this end is closed."""
        self._out.broken = self._in.broken = True
        self._out.buffer.clear()
        self.close()

    @property
    def is_closed(self) -> bool:
        """True once this end was closed or reset."""
        return self._closed

    @property
    def peer_gone(self) -> bool:
        """True once the peer closed its end or reset the connection."""
        return self._out.reader_gone or self._in.broken


def memory_stream_pair() -> tuple[MemoryStream, MemoryStream]:
    """Two connected :class:`MemoryStream` ends: what one sends, the other receives."""
    a_to_b, b_to_a = _Pipe(), _Pipe()
    return MemoryStream(b_to_a, a_to_b), MemoryStream(a_to_b, b_to_a)


async def wait_until(predicate: Callable[[], bool], *, timeout: float | None = 10.0) -> None:
    """Wait until ``predicate()`` is true, checking it at every turn of the event loop; fail
    with ``TimeoutError`` after ``timeout`` seconds (a guard against a hang, not a delay).

    For state that has no event, such as ``pool.stats()``; for the server's own state
    ``MockServer.wait_until`` wakes on its changes instead.
    """
    with anyio.fail_after(timeout):
        turns = 0
        while not predicate():
            # A few turns of the loop settle most things; after that, poll less eagerly (a
            # timer may be what the condition waits for).
            turns += 1
            await anyio.sleep(0 if turns < 100 else 0.001)


# -- what the server saw and answers ----------------------------------------------------------


@dataclass
class ServerRequest:
    """A request as the server received it (header names in lower case)."""

    method: str
    target: str  # path and query, as sent (HTTP/2: the :path)
    headers: list[tuple[str, str]]
    body: bytes
    connection_id: int  # 0 for the server's first connection
    index_on_connection: int  # 0 for the first request on its connection
    http_version: str  # "1.1" or "2"
    stream_id: int | None = None  # HTTP/2 only

    @property
    def path(self) -> str:
        """The target's path (``//a`` stays a path: an origin-form target has no host)."""
        if self.target.startswith("/"):
            return self.target.partition("?")[0]
        return urlsplit(self.target).path

    def header(self, name: str) -> str | None:
        """The value of field ``name`` (any case); repeated fields joined by ", "."""
        values = [value for key, value in self.headers if key == name.lower()]
        return ", ".join(values) if values else None


@dataclass(frozen=True)
class Reply:
    """A canned response for ``MockServer(routes=...)``; content-length is added."""

    status: int = 200
    headers: HeaderPairs = ()
    body: bytes = b""


class ServerConnection:
    """How a handler answers its request. Over HTTP/2 there is one per stream, and ``close``,
    ``reset`` and ``goaway`` act on the stream's whole connection."""

    http_version = ""

    def __init__(self, server: MockServer, stream: MemoryStream, connection_id: int) -> None:
        self.server = server
        self.stream = stream  # the server's end
        self.connection_id = connection_id

    async def respond(
        self, status: int = 200, headers: HeaderPairs = (), body: bytes = b""
    ) -> None:
        """A whole response; ``content-length`` is added unless the headers frame the body."""
        raise NotImplementedError

    async def send_informational(self, status: int = 103, headers: HeaderPairs = ()) -> None:
        """A 1xx response (``100`` Continue, ``103`` Early Hints) before the final one."""
        raise NotImplementedError

    async def send_head(self, status: int = 200, headers: HeaderPairs = ()) -> None:
        """Start a streamed response (HTTP/1.1: chunked unless a content-length is given)."""
        raise NotImplementedError

    async def send_data(self, data: bytes) -> None:
        """Part of a streamed body."""
        raise NotImplementedError

    async def end(self) -> None:
        """End a streamed body."""
        raise NotImplementedError

    async def stall(self, event: anyio.Event | None = None) -> None:
        """Wait until the test sets ``event`` (for ever without one). ``server.stalled``
        counts the handlers stalled now; the handler is cancelled if its client goes away."""
        self.server.stalled += 1
        self.server._notify()
        try:
            if event is None:
                await anyio.sleep_forever()
            else:
                await event.wait()
        finally:
            self.server.stalled -= 1
            self.server._notify()

    async def close(self) -> None:
        """Close the connection now: the client reads what was sent, then EOF."""
        self.stream.close()
        await anyio.lowlevel.checkpoint()

    async def reset(self) -> None:
        """Reset the connection now: the client's reads and writes fail (a TCP RST)."""
        self.stream.reset()
        await anyio.lowlevel.checkpoint()

    async def reset_stream(self, error_code: int = h2.errors.ErrorCodes.INTERNAL_ERROR) -> None:
        """HTTP/2: reset this request's stream (RST_STREAM)."""
        raise RuntimeError("reset_stream() is HTTP/2 only")

    async def goaway(self, last_stream_id: int | None = None, error_code: int = 0) -> None:
        """HTTP/2: send GOAWAY. Streams above ``last_stream_id`` (default: the highest seen)
        are left unanswered, for the client to retry; the connection closes once the others
        are done."""
        raise RuntimeError("goaway() is HTTP/2 only")


def _with_length(status: int, headers: HeaderPairs, body: bytes) -> list[tuple[str, str]]:
    fields = list(headers)
    names = {name.lower() for name, _ in fields}
    if status >= 200 and status not in (204, 304) and not names & _FRAMING:
        fields.append(("content-length", str(len(body))))
    return fields


_FRAMING = {"content-length", "transfer-encoding"}


# -- HTTP/1.1 ---------------------------------------------------------------------------------


class _H1Connection(ServerConnection):
    http_version = "1.1"

    def __init__(self, server: MockServer, stream: MemoryStream, connection_id: int) -> None:
        super().__init__(server, stream, connection_id)
        self.h11 = h11.Connection(h11.SERVER)
        self._request: ServerRequest | None = None
        self.idle = False
        self.close_when_idle = False
        self.idle_scope: anyio.CancelScope | None = None

    async def respond(
        self, status: int = 200, headers: HeaderPairs = (), body: bytes = b""
    ) -> None:
        assert self._request is not None
        data = self._h11(
            h11.Response(status_code=status, headers=_with_length(status, headers, body))
        )
        if body and self._request.method != "HEAD" and status not in (204, 304):
            data += self._h11(h11.Data(data=body))
        await self.stream.send(data + self._h11(h11.EndOfMessage()))

    async def send_informational(self, status: int = 103, headers: HeaderPairs = ()) -> None:
        await self.stream.send(
            self._h11(h11.InformationalResponse(status_code=status, headers=list(headers)))
        )

    async def send_head(self, status: int = 200, headers: HeaderPairs = ()) -> None:
        fields = list(headers)
        if not {name.lower() for name, _ in fields} & _FRAMING:
            fields.append(("transfer-encoding", "chunked"))
        await self.stream.send(self._h11(h11.Response(status_code=status, headers=fields)))

    async def send_data(self, data: bytes) -> None:
        await self.stream.send(self._h11(h11.Data(data=data)))

    async def end(self) -> None:
        await self.stream.send(self._h11(h11.EndOfMessage()))

    def _h11(self, event: h11.Event) -> bytes:
        return self.h11.send(event) or b""

    async def _next_event(self) -> h11.Event | None:
        """The next h11 event; None when the client left or ``close_idle_connections`` hit."""
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA and not isinstance(event, type):
                return event
            if self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]:
                data = await self._receive_idle()
                if data is None:
                    return None
            else:
                data = await self._receive()
            self.h11.receive_data(data)

    async def _receive(self) -> bytes:
        try:
            return await self.stream.receive()
        except _GONE:
            return b""

    async def _receive_idle(self) -> bytes | None:
        """Receive between requests; None when ``close_idle_connections`` closes us."""
        if self.close_when_idle:
            return None
        self.idle = True
        self.server._notify()
        data = b""
        try:
            with anyio.CancelScope() as self.idle_scope:
                data = await self._receive()
        finally:
            self.idle, self.idle_scope = False, None
            self.server._notify()
        return None if self.close_when_idle else data

    async def serve(self) -> None:
        index = 0
        while True:
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError:
                return
            if not isinstance(event, h11.Request):
                return
            request = ServerRequest(
                method=event.method.decode("ascii"),
                target=event.target.decode("ascii"),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
                body=b"",
                connection_id=self.connection_id,
                index_on_connection=index,
                http_version="1.1",
            )
            index += 1
            self._request = request
            body = bytearray()
            while self.h11.their_state is h11.SEND_BODY:
                if self.h11.they_are_waiting_for_100_continue:
                    await self.send_informational(100)
                try:
                    part = await self._next_event()
                except h11.RemoteProtocolError:
                    return  # the client left (or broke the framing) mid-body
                if part is None:
                    return
                if isinstance(part, h11.Data):
                    body += part.data
            request.body = bytes(body)
            self.server.requests.append(request)
            self.server._notify()
            await self._handle(request)
            if self.stream.is_closed:
                return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return  # an unfinished response, connection: close, HTTP/1.0
            self.h11.start_next_cycle()

    async def _handle(self, request: ServerRequest) -> None:
        """Run the handler while watching for the client to leave (then it is cancelled).
        What the client sends meanwhile (its next request) waits for the next cycle."""
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    try:
                        data = await self.stream.receive()
                    except _GONE:
                        tg.cancel_scope.cancel()
                        return
                    self.h11.receive_data(data)

            tg.start_soon(watch)
            await self.server._run_handler(request, self)
            tg.cancel_scope.cancel()


# -- HTTP/2 -----------------------------------------------------------------------------------


class _H2Stream(ServerConnection):
    http_version = "2"

    def __init__(self, conn: _H2Connection, stream_id: int, method: str) -> None:
        super().__init__(conn.server, conn.stream, conn.connection_id)
        self.conn = conn
        self.stream_id = stream_id
        self.method = method
        self.ended = False  # we sent END_STREAM or RST_STREAM
        self.scope = anyio.CancelScope()

    async def respond(
        self, status: int = 200, headers: HeaderPairs = (), body: bytes = b""
    ) -> None:
        fields = [(":status", str(status)), *_with_length(status, headers, body)]
        if self.method == "HEAD" or status in (204, 304):
            body = b""  # the length above is the body's a GET would get; none is sent
        self.conn.h2.send_headers(self.stream_id, fields, end_stream=not body)
        self.conn.flush()
        if body:
            await self._send_body(body, end_stream=True)
        self.ended = True

    async def send_informational(self, status: int = 103, headers: HeaderPairs = ()) -> None:
        self.conn.h2.send_headers(self.stream_id, [(":status", str(status)), *headers])
        self.conn.flush()
        await anyio.lowlevel.checkpoint()

    async def send_head(self, status: int = 200, headers: HeaderPairs = ()) -> None:
        self.conn.h2.send_headers(self.stream_id, [(":status", str(status)), *headers])
        self.conn.flush()
        await anyio.lowlevel.checkpoint()

    async def send_data(self, data: bytes) -> None:
        await self._send_body(data, end_stream=False)

    async def end(self) -> None:
        self.conn.h2.end_stream(self.stream_id)
        self.conn.flush()
        self.ended = True
        await anyio.lowlevel.checkpoint()

    async def reset_stream(self, error_code: int = h2.errors.ErrorCodes.INTERNAL_ERROR) -> None:
        self.conn.h2.reset_stream(self.stream_id, error_code)
        self.conn.flush()
        self.ended = True
        await anyio.lowlevel.checkpoint()

    async def goaway(self, last_stream_id: int | None = None, error_code: int = 0) -> None:
        self.conn.goaway(last_stream_id, error_code)
        await anyio.lowlevel.checkpoint()

    async def _send_body(self, data: bytes, *, end_stream: bool) -> None:
        """DATA frames as flow control allows, waiting for WINDOW_UPDATEs as needed."""
        h2conn, view = self.conn.h2, memoryview(data)
        while True:
            size = min(h2conn.local_flow_control_window(self.stream_id), len(view))
            size = min(size, h2conn.max_outbound_frame_size)
            if size <= 0 and view:
                await self.conn.window_changed.wait()
                continue
            chunk, view = view[:size], view[size:]
            h2conn.send_data(self.stream_id, bytes(chunk), end_stream=end_stream and not view)
            self.conn.flush()
            await anyio.lowlevel.checkpoint()
            if not view:
                return


_GOAWAY = 0x7  # the frame type


class _H2Connection:
    def __init__(self, server: MockServer, stream: MemoryStream, connection_id: int) -> None:
        self.server = server
        self.stream = stream
        self.connection_id = connection_id
        # Fields are decoded as Latin-1 here, as the HTTP/1.1 side does (h2 would use UTF-8).
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.streams: dict[int, _H2Stream] = {}  # streams with a handler running
        self.bodies: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.requests = 0
        self.highest_stream_id = 0
        self.goaway_last: int | None = None
        self.window_changed = anyio.Event()
        self.done = anyio.Event()
        self.tg: anyio.abc.TaskGroup | None = None

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.stream.is_closed:
            self.stream.send_nowait(data)

    def goaway(self, last_stream_id: int | None, error_code: int) -> None:
        last = self.highest_stream_id if last_stream_id is None else last_stream_id
        self.goaway_last = last if self.goaway_last is None else min(self.goaway_last, last)
        # Written by hand: once h2 sent GOAWAY it sends nothing more, but the streams the
        # GOAWAY accepts may still be answered.
        self.flush()
        payload = (last & 0x7FFFFFFF).to_bytes(4, "big") + error_code.to_bytes(4, "big")
        frame = len(payload).to_bytes(3, "big") + bytes([_GOAWAY, 0]) + bytes(4) + payload
        self.stream.send_nowait(frame)
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last:  # never processed, for the client: it retries it
                stream.scope.cancel()
                stream.ended = True
        self._check_done()

    def _check_done(self) -> None:
        last = self.goaway_last
        if last is not None and all(stream_id > last for stream_id in self.streams):
            self.done.set()

    async def serve(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        async with anyio.create_task_group() as self.tg:
            self.tg.start_soon(self._read_loop)
            await self.done.wait()
            self.tg.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = await self.stream.receive()
                    events = self.h2.receive_data(data)
                except _GONE:
                    break
                except h2.exceptions.ProtocolError:
                    self.flush()
                    break
                for event in events:
                    self._dispatch(event)
                self.flush()
        finally:
            self.done.set()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            stream_id = event.stream_id
            if self.goaway_last is not None and stream_id > self.goaway_last:
                return  # after our GOAWAY: ignored, the client retries it
            self.highest_stream_id = max(self.highest_stream_id, stream_id)
            fields = [
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in event.headers or ()
            ]
            self.bodies[stream_id] = (fields, bytearray())
            if event.stream_ended is not None:
                self._start(stream_id)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id in self.bodies:
                self.bodies[event.stream_id][1].extend(event.data or b"")
            if event.stream_ended is not None and event.stream_id in self.bodies:
                self._start(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.bodies:
            self._start(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.bodies.pop(event.stream_id, None)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                stream.scope.cancel()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_changed.set()
            self.window_changed = anyio.Event()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.done.set()

    def _start(self, stream_id: int) -> None:
        fields, body = self.bodies.pop(stream_id)
        pseudo = dict(pair for pair in fields if pair[0].startswith(":"))
        request = ServerRequest(
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", ""),
            headers=[pair for pair in fields if not pair[0].startswith(":")],
            body=bytes(body),
            connection_id=self.connection_id,
            index_on_connection=self.requests,
            http_version="2",
            stream_id=stream_id,
        )
        self.requests += 1
        self.server.requests.append(request)
        self.server._notify()
        stream = self.streams[stream_id] = _H2Stream(self, stream_id, request.method)
        assert self.tg is not None
        self.tg.start_soon(self._run, request, stream)

    async def _run(self, request: ServerRequest, stream: _H2Stream) -> None:
        with stream.scope:
            await self.server._run_handler(request, stream)
        try:
            if not stream.ended and not self.stream.is_closed:
                self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                self.flush()
        except (h2.exceptions.StreamClosedError, *_GONE):
            pass
        del self.streams[stream.stream_id]
        self._check_done()


# -- the server -------------------------------------------------------------------------------


class MockServer:
    """A scripted HTTP server for ``asyncpool.Transport(dial=server.dial)``; see the module
    docstring. Use it in ``async with``, entered before the Transport that dials it."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        routes: Mapping[str, Reply] | None = None,
        http2: bool = False,
    ) -> None:
        self._handler = handler
        self.routes = dict(routes or {})
        self.http2 = http2
        self.requests: list[ServerRequest] = []
        self.dials: list[tuple[str, int]] = []  # (host, port) of every dial
        self.connections_made = 0
        self.open_connections = 0
        self.stalled = 0  # handlers in stall() now
        self.refuse_connections = False  # when True, a dial fails as a refused connection
        self.handler_errors: list[Exception] = []
        self.client_streams: list[MemoryStream] = []  # the client's end of every connection
        self._h1: list[_H1Connection] = []
        self._changed: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> MockServer:
        if self._tg is not None:
            raise RuntimeError("a MockServer is entered once")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        result = await self._tg.__aexit__(exc_type, exc, tb)
        if exc is None and self.handler_errors:
            raise self.handler_errors[0]
        return result

    async def dial(self, host: str, port: int) -> anyio.abc.ByteStream:
        """The ``dial=`` option: a new connection to this server, whatever the host."""
        if self._tg is None or self._tg.cancel_scope.cancel_called:
            raise RuntimeError("use the MockServer in `async with` around the Transport")
        await anyio.lowlevel.checkpoint()
        self.dials.append((host, port))
        if self.refuse_connections:
            self._notify()
            raise ConnectionRefusedError(f"{host}:{port} refused the connection (MockServer)")
        client, server_end = memory_stream_pair()
        self.client_streams.append(client)
        connection_id = self.connections_made
        self.connections_made += 1
        self.open_connections += 1
        self._notify()
        self._tg.start_soon(self._serve, server_end, connection_id)
        return client

    async def _serve(self, stream: MemoryStream, connection_id: int) -> None:
        conn: _H1Connection | _H2Connection
        if self.http2:
            conn = _H2Connection(self, stream, connection_id)
        else:
            conn = _H1Connection(self, stream, connection_id)
            self._h1.append(conn)
        try:
            await conn.serve()
        except _GONE:
            pass
        finally:
            if isinstance(conn, _H1Connection):
                self._h1.remove(conn)
            stream.close()
            self.open_connections -= 1
            self._notify()

    async def _run_handler(self, request: ServerRequest, conn: ServerConnection) -> None:
        try:
            if self._handler is not None:
                await self._handler(request, conn)
            else:
                reply = self.routes.get(f"{request.method} {request.path}") or self.routes.get(
                    request.path, Reply(404, [("content-type", "text/plain")], b"not found")
                )
                await conn.respond(reply.status, reply.headers, reply.body)
        except (*_GONE, h2.exceptions.StreamClosedError):
            pass  # the client went away mid-answer
        except Exception as exc:
            self.handler_errors.append(exc)
            if not isinstance(conn, _H2Stream):  # (an HTTP/2 stream is reset by its _run)
                conn.stream.close()
            self._notify()

    # -- waiting and closing ------------------------------------------------------------------

    @property
    def idle_connections(self) -> int:
        """HTTP/1.1 connections waiting for their next request."""
        return sum(conn.idle for conn in self._h1)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(
        self, predicate: Callable[[MockServer], bool], *, timeout: float | None = 10.0
    ) -> None:
        """Wait until ``predicate(server)`` is true, checked on every change of the server's
        state (a request, a connection made or closed, a stall); no polling."""
        with anyio.fail_after(timeout):
            while not predicate(self):
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    async def close_idle_connections(self) -> int:
        """Close every HTTP/1.1 connection between requests, as a server's keep-alive timeout
        does (a connection that has just sent its response counts as idle); returns how many."""
        targets = [
            conn
            for conn in self._h1
            if conn.idle or conn.h11.our_state in (h11.DONE, h11.MUST_CLOSE)
        ]
        for conn in targets:
            conn.close_when_idle = True
            if conn.idle_scope is not None:
                conn.idle_scope.cancel()
        await self.wait_until(lambda _: all(conn not in self._h1 for conn in targets))
        return len(targets)
