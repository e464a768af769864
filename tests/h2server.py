"""In-process HTTP/2 test server (h2 + anyio) that can misbehave on purpose.

Like ``tests.servers`` for HTTP/1.1, it runs inside the test's own event loop (asyncio or
trio) on a real loopback socket: h2c with prior knowledge (plain TCP, the client sends the
connection preface at once) or TLS with ALPN "h2"::

    async with open_h2_server() as server:                     # http://127.0.0.1:<port>
        ... requests to server.url_for("/echo") ...
    async with open_h2_server(ssl_context=make_h2_server_context(tls)) as server: ...

A handler runs in its own task per stream as soon as the request HEADERS arrived; the body
is read only when it calls ``stream.read_body()`` (WINDOW_UPDATEs go out as the body is
consumed, so a handler that never reads stalls the client's upload)::

    async def handler(req: H2Request, stream: H2Stream) -> None:
        await stream.send_informational(103, [("link", "</a.css>")])
        await stream.respond(200, [("content-type", "text/plain")], b"hi")

Responses respect the client's flow-control windows and SETTINGS_MAX_FRAME_SIZE.  A
handler that returns without ending its response has its stream reset (INTERNAL_ERROR);
one that responded without reading the whole request body resets it with NO_ERROR.  If
the client resets a stream, its handler is cancelled and ``server.resets_received`` gets
``(stream_id, error_code)``.  Handler exceptions go to ``server.handler_errors`` (the
stream is reset); protocol errors of the client to ``server.protocol_errors`` (h2 sends
GOAWAY and the connection is closed).

Misbehaviour: the SETTINGS the server advertises (``max_concurrent_streams``, ``None`` =
not advertised; ``initial_window_size``; ``max_frame_size``), and
``conn.advertise_max_concurrent_streams(n)`` mid-connection; ``await server.goaway()``
(graceful: the streams up to ``last_stream_id`` complete, later ones are ignored, new ones
refused, then the connection is closed); ``server.silence()`` / ``unsilence()`` (nothing is
read nor sent on any connection, not even PING acks, until unsilenced);
``await conn.close()`` (abrupt); ``await conn.reset()`` (TCP RST); ``conn.send_raw(bytes)`` (any frames, valid or not);
``await conn.flood(flood_frame("PING"), 100_000)`` (one frame again and again, until the client
closes); ``conn.stop_reading()`` (read nothing more, yet keep sending: the client's writes back up);
``stream.reset(code)``; ``server.on_connect = lambda conn: conn.goaway(0)`` (called with each new
connection: what it queues goes out with our SETTINGS, in one write);
``server.keepalive_requests = n`` (as nginx's: GOAWAY as a connection takes its nth stream).  A stream opened over ``max_concurrent_streams`` or after our
GOAWAY is refused (RST_STREAM REFUSED_STREAM) and kept in ``server.refused_requests``.

Waiting never sleeps: ``await server.wait_until(lambda s: s.active_streams == 2)`` wakes up
on every server state change.  Leaving ``open_h2_server`` cancels every handler and closes
every socket.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.lowlevel
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from anyio.abc import (
    AnyByteStream,
    ByteStream,
    Listener,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskGroup,
)
from anyio.streams.tls import TLSAttribute, TLSStream
from h2.errors import ErrorCodes
from hyperframe.frame import (
    DataFrame,
    ExtensionFrame,
    GoAwayFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.servers import TLSFixture, _flush_before_returning_from_send, _send_close_notify

Headers = Sequence[tuple[str, str]] | Sequence[tuple[bytes, bytes]]  # h2 takes either
H2Handler = Callable[["H2Request", "H2Stream"], Awaitable[None]]
_CONNECTION_ERRORS = (
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    anyio.ClosedResourceError,
    OSError,
)
_MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
_BACKPRESSURE = 256 * 1024  # send_data() waits while more than this is queued for the socket


def make_h2_server_context(tls: TLSFixture, alpn: Sequence[str] = ("h2",)) -> ssl.SSLContext:
    """A new server context with a certificate from ``tls.ca`` (127.0.0.1, ::1, localhost)
    offering ``alpn`` (the server only speaks h2, whatever ALPN selected)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(context)
    context.set_alpn_protocols(list(alpn))
    return context


def flood_frame(kind: str, stream_id: int = 1) -> bytes:
    """One serialized frame that moves no response forward, for ``conn.flood``: "PING",
    "SETTINGS" (empty), "WINDOW_UPDATE" (connection, +1), "PRIORITY" (of ``stream_id``),
    "unknown" (an extension type) or "empty DATA"
    (on ``stream_id``, no END_STREAM)."""
    frame: object
    if kind == "PING":
        frame = PingFrame(0, opaque_data=b"flooding")
    elif kind == "SETTINGS":
        frame = SettingsFrame(0)
    elif kind == "WINDOW_UPDATE":
        frame = WindowUpdateFrame(0, window_increment=1)
    elif kind == "PRIORITY":
        frame = PriorityFrame(stream_id, depends_on=0, stream_weight=15)
    elif kind == "unknown":
        frame = ExtensionFrame(0xEE, 0)
    elif kind == "empty DATA":
        frame = DataFrame(stream_id, data=b"")
    else:
        raise ValueError(kind)
    data: bytes = frame.serialize()  # type: ignore[attr-defined]
    return data


@dataclass
class H2Request:
    """A request as received (header names are lowercase, pseudo-headers split out)."""

    method: str
    path: str  # the :path pseudo-header as sent, query included
    authority: str
    scheme: str
    headers: list[tuple[str, str]]
    stream_id: int
    connection_id: int
    body: bytes = b""  # filled once read
    trailers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (first value of each)."""
        result: dict[str, str] = {}
        for key, value in parse_qsl(urlsplit(self.path).query, keep_blank_values=True):
            result.setdefault(key, value)
        return result

    def header(self, name: str) -> str | None:
        """Value of header ``name``; repeated headers are joined by ", "."""
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None


class H2StreamReset(Exception):
    """Raised by H2Stream methods once the stream was reset (by the client, or the handler)."""


class H2Stream:
    """Server side of one HTTP/2 stream; handlers answer (or misbehave) through it."""

    def __init__(self, conn: H2ServerConnection, request: H2Request) -> None:
        self.connection = conn
        self.server = conn.server
        self.request = request
        self.stream_id = request.stream_id
        self.reset_received: int | None = None  # error code of the client's RST_STREAM
        self._chunks: deque[tuple[bytes, int]] = deque()  # unread (data, flow-controlled length)
        self._remote_ended = self._local_ended = self._reset = self._head_sent = False
        self._changed = anyio.Event()
        self._scope = anyio.CancelScope()  # the handler's; cancelled when the client resets

    @property
    def closed(self) -> bool:
        return self._reset or (self._local_ended and self._remote_ended)

    async def read_body(self, *, send_continue: bool = True) -> bytes:
        """Read the request body to END_STREAM (also stored in ``request.body``).

        Sends ``100 Continue`` first if the client asked for it and nothing was sent yet.
        """
        if (
            send_continue
            and not self._head_sent
            and self.request.header("expect") == "100-continue"
        ):
            await self.send_informational(100)
        chunks = [self.request.body]
        while True:
            while self._chunks:
                data, length = self._chunks.popleft()
                chunks.append(data)
                self.connection.h2.acknowledge_received_data(length, self.stream_id)
            self.request.body = b"".join(chunks)
            self.connection._enqueue()
            if self._remote_ended:
                return self.request.body
            self._check()
            await self._changed.wait()

    async def send_headers(
        self, status: int, headers: Headers = (), end_stream: bool = False
    ) -> None:
        await self._send_headers([(":status", str(status)), *headers], end_stream)

    async def send_unchecked_headers(self, fields: Headers, end_stream: bool = True) -> None:
        """Send ``fields`` exactly as given, even malformed (no h2 validation): for testing
        how the client treats a bad response head."""
        config = self.connection.h2.config
        config.validate_outbound_headers = config.normalize_outbound_headers = False
        try:
            await self._send_headers(list(fields), end_stream)
        finally:
            config.validate_outbound_headers = config.normalize_outbound_headers = True

    async def send_informational(self, status: int = 103, headers: Headers = ()) -> None:
        """Send a 1xx response (103 Early Hints, 100 Continue, ...)."""
        assert 100 <= status < 200
        await self.send_headers(status, headers)

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send DATA frames within the client's windows and max frame size, waiting for
        WINDOW_UPDATE when a window is exhausted."""
        h2conn, offset = self.connection.h2, 0
        while True:
            self._check()
            while True:
                window = h2conn.local_flow_control_window(self.stream_id)
                size = max(0, min(len(data) - offset, window, h2conn.max_outbound_frame_size))
                last = end_stream and offset + size == len(data)
                if size:
                    h2conn.send_data(self.stream_id, data[offset : offset + size], end_stream=last)
                    offset += size
                elif last:
                    h2conn.end_stream(self.stream_id)
                if last or not size:
                    break
            self.connection._enqueue()
            if offset == len(data):
                break
            await self._changed.wait()  # window exhausted: wait for WINDOW_UPDATE or SETTINGS
        if end_stream:
            self._end_local()
        await self.connection._backpressure()

    async def end(self, trailers: Headers = ()) -> None:
        """End the response, with trailers if given."""
        if trailers:
            await self._send_headers(list(trailers), end_stream=True)
        else:
            await self.send_data(b"", end_stream=True)

    async def respond(self, status: int = 200, headers: Headers = (), body: bytes = b"") -> None:
        """A complete response; adds content-length unless given (or 1xx/204/304)."""
        fields = list(headers)
        framed = any(name.lower() == "content-length" for name, _ in fields)
        if status >= 200 and status not in (204, 304) and not framed:
            fields.append(("content-length", str(len(body))))
        no_body = not body or status in (204, 304) or self.request.method == "HEAD"
        await self.send_headers(status, fields, end_stream=no_body)
        if not no_body:
            await self.send_data(body, end_stream=True)

    async def reset(self, error_code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """Send RST_STREAM (nothing if the stream is already closed)."""
        self._reset_now(error_code)
        await anyio.lowlevel.checkpoint()

    # -- internals ------------------------------------------------------------------------

    async def _send_headers(self, fields: list[tuple[str, str]], end_stream: bool) -> None:
        self._check()
        self.connection.h2.send_headers(self.stream_id, fields, end_stream=end_stream)
        self._head_sent = True
        self.connection._enqueue()
        if end_stream:
            self._end_local()
        await self.connection._backpressure()

    def _check(self) -> None:
        if self._reset:
            raise H2StreamReset(f"stream {self.stream_id} was reset")

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _end_local(self) -> None:
        self._local_ended = True
        self.connection._stream_maybe_closed(self)

    def _reset_now(self, error_code: int) -> None:
        if not self.closed:
            self.connection.h2.reset_stream(self.stream_id, error_code)
            self.connection._enqueue()
            self._reset = True
            self.connection._stream_maybe_closed(self)

    def _drop(self) -> None:
        """Forget the stream without telling the client; cancel its handler."""
        self._reset = True
        self._scope.cancel()

    def _ack_unread(self) -> None:
        while self._chunks and not self.connection._deaf:
            self.connection.h2.acknowledge_received_data(self._chunks.popleft()[1], self.stream_id)
        self.connection._enqueue()


class H2ServerConnection:
    """Server side of one connection: an h2 state machine, a reader and a writer task."""

    def __init__(
        self,
        server: H2TestServer,
        connection_id: int,
        stream: ByteStream,
        settings: dict[h2.settings.SettingCodes, int],
    ) -> None:
        self.server = server
        self.connection_id = connection_id
        self.closed = anyio.Event()  # set once the socket is closed
        self.streams: dict[int, H2Stream] = {}  # open streams
        self.highest_stream_id = 0
        self.requests_accepted = 0  # streams taken (not refused) so far
        self.pings_received = 0
        self.data_received: dict[int, int] = {}  # DATA bytes per stream id, read or not
        self.goaway_last_stream_id: int | None = None  # set once we sent GOAWAY
        self.goaway_received: int | None = None  # error code of the client's GOAWAY
        self.alpn_protocol: str | None = None
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        # Our SETTINGS apply at once (not on the client's ACK); the connection window stays
        # 65535.  h2 would answer a stream over MAX_CONCURRENT_STREAMS with a connection error:
        # it is left unlimited in h2, and _on_request refuses such streams instead.
        self.max_concurrent_streams = settings.get(_MAX_STREAMS)
        h2_settings = {code: value for code, value in settings.items() if code != _MAX_STREAMS}
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=h2_settings)
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.h2.initiate_connection()
        self.h2.data_to_send()  # h2's SETTINGS frame is replaced by ours
        frame = SettingsFrame(0)
        advertised = dict(self.h2.local_settings) | settings
        frame.settings = {int(code): value for code, value in advertised.items()}
        self._stream = stream
        self._held: list[bytes] = []  # received while silenced
        self._outbox = bytearray(frame.serialize())  # first, even before the TLS handshake
        self._sent = 0  # bytes written to the socket so far
        self._want_write = anyio.Event()
        self._progress = anyio.Event()  # set (and replaced) whenever bytes were written
        self._finishing = False  # the writer closes gracefully once the outbox is empty
        self._deaf = False  # after a protocol error or the client's GOAWAY: ignore input
        self._abort = anyio.CancelScope()
        self._reading = anyio.Event()  # cleared by stop_reading()
        self._reading.set()
        self._tg: TaskGroup | None = None
        self._is_shut = False

    @property
    def held_bytes(self) -> int:
        """Bytes received while silenced, not yet processed."""
        return sum(map(len, self._held))

    def goaway(self, last_stream_id: int | None = None, error_code: int = 0) -> int:
        """Queue GOAWAY; streams above ``last_stream_id`` (default: the highest seen) are
        dropped, and the connection closes once the others are done.  Returns a write mark."""
        last = self.highest_stream_id if last_stream_id is None else last_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id, frame.error_code = last, int(error_code)
        previous = self.goaway_last_stream_id
        self.goaway_last_stream_id = last if previous is None else min(previous, last)
        mark = self._enqueue(frame.serialize())
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last:  # never processed, as far as the client is concerned
                stream._drop()
                del self.streams[stream_id]
        self._check_finished()
        self.server._notify()
        return mark

    def advertise_max_concurrent_streams(self, limit: int) -> None:
        """Queue a SETTINGS frame with a new MAX_CONCURRENT_STREAMS, enforced from now on."""
        frame = SettingsFrame(0)
        frame.settings = {int(_MAX_STREAMS): limit}
        self.max_concurrent_streams = limit
        self._enqueue(frame.serialize())

    async def send_raw(self, data: bytes) -> None:
        """Write ``data`` to the socket after everything queued so far (any frames at all)."""
        await self._wait_sent(self._enqueue(data))

    async def flood(self, frame: bytes, count: int, batch: int = 1000) -> int:
        """Send ``frame`` ``count`` times, ``batch`` to a write, until the connection closes;
        returns how many were written."""
        sent = 0
        while sent < count and not self.closed.is_set() and not self._deaf:
            n = min(batch, count - sent)
            await self.send_raw(frame * n)
            sent += n
        return sent

    def stop_reading(self) -> None:
        """Read nothing more from the socket (sending goes on), until ``resume_reading``."""
        self._reading = anyio.Event()

    def resume_reading(self) -> None:
        self._reading.set()

    async def close(self) -> None:
        """Close the socket at once (no GOAWAY, no TLS close_notify)."""
        self._abort.cancel()
        await self.closed.wait()

    async def reset(self) -> None:
        """Reset the TCP connection (SO_LINGER 0, then close: the client gets an RST, as from a
        crashed server or a middlebox), with no GOAWAY."""
        raw = self._stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.close()

    # -- internals ------------------------------------------------------------------------

    def _enqueue(self, raw: bytes = b"") -> int:
        self._outbox += self.h2.data_to_send()
        self._outbox += raw
        if self._outbox:
            self._want_write.set()
        return self._sent + len(self._outbox)

    async def _wait_sent(self, mark: int) -> None:
        while self._sent < mark and not self.closed.is_set():
            await self._progress.wait()

    async def _backpressure(self) -> None:
        await self._wait_sent(self._sent + len(self._outbox) - _BACKPRESSURE)

    def _stream_maybe_closed(self, stream: H2Stream) -> None:
        if stream.closed and self.streams.pop(stream.stream_id, None) is not None:
            self._check_finished()
            self.server._notify()

    def _check_finished(self) -> None:
        last = self.goaway_last_stream_id
        if last is not None and all(stream_id > last for stream_id in self.streams):
            self._finishing = True
            self._want_write.set()

    async def _serve(self, ssl_context: ssl.SSLContext | None) -> None:
        try:
            with self._abort:
                if ssl_context is not None:
                    self._stream = await TLSStream.wrap(
                        self._stream, server_side=True, ssl_context=ssl_context,
                        standard_compatible=False,
                    )  # fmt: skip
                    self.alpn_protocol = self._stream.extra(TLSAttribute.alpn_protocol, None)
                try:
                    async with anyio.create_task_group() as self._tg:
                        self._tg.start_soon(self._read_loop)
                        await self._write_loop()
                        self._tg.cancel_scope.cancel()
                finally:
                    self._tg = None  # no more handlers
                await self._close_gracefully()
        except _CONNECTION_ERRORS:
            pass
        finally:
            await self._shutdown()

    async def _read_loop(self) -> None:
        try:
            while True:
                await self._reading.wait()
                data = await self._stream.receive(65536)
                if self.server._silenced:
                    self._held.append(data)
                    self.server._notify()
                else:
                    self._feed(data)
        except _CONNECTION_ERRORS:
            self._abort.cancel()

    async def _write_loop(self) -> None:
        try:
            while self._outbox or not self._finishing:
                if not self._outbox:
                    self._want_write = anyio.Event()
                    await self._want_write.wait()
                    continue
                while self.server._silenced:
                    await self.server._unsilenced.wait()
                data = bytes(self._outbox)
                self._outbox.clear()
                await self._stream.send(data)
                self._sent += len(data)
                self._progress.set()
                self._progress = anyio.Event()
        except _CONNECTION_ERRORS:
            self._abort.cancel()

    async def _close_gracefully(self) -> None:
        """TLS close_notify and FIN, then discard what the client sends until it closes."""
        stream: AnyByteStream = self._stream
        if isinstance(stream, TLSStream):
            await _send_close_notify(stream)
            stream = stream.transport_stream
        await stream.send_eof()
        with anyio.move_on_after(5):  # a bound, not a delay: most clients close at once
            while await stream.receive():
                pass

    async def _shutdown(self) -> None:
        if self._is_shut:
            return
        self._is_shut = True
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self._stream)
        self.streams.clear()
        self.server.open_connections -= 1
        self.closed.set()
        self._progress.set()
        self.server._notify()

    def _resume(self) -> None:
        """unsilence(): process what was received meanwhile."""
        data, self._held = b"".join(self._held), []
        if data and self._tg is not None:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._deaf:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:  # send GOAWAY and close
            self.server.protocol_errors.append(exc)
            if self.h2.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                self.h2.close_connection(exc.error_code)  # a bad preface queues no GOAWAY
            self._stop()
            return
        for event in events:
            if not self._deaf:
                self._dispatch(event)
        self._enqueue()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event.stream_id, _decode(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            received = self.data_received.get(event.stream_id, 0) + len(event.data or b"")
            self.data_received[event.stream_id] = received
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream._chunks.append((event.data, event.flow_controlled_length))
                stream._wake()
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.streams:
            stream = self.streams[event.stream_id]
            stream._remote_ended = True
            stream._wake()
            self._stream_maybe_closed(stream)
        elif isinstance(event, h2.events.TrailersReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].request.trailers = _decode(event.headers)
        elif isinstance(event, h2.events.StreamReset):
            if event.remote_reset:
                self.server.resets_received.append((event.stream_id, int(event.error_code)))
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.reset_received = int(event.error_code) if event.remote_reset else None
                stream._reset = True
                stream._scope.cancel()
                stream._wake()
                self._stream_maybe_closed(stream)
            self.server._notify()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            stream_id = getattr(event, "stream_id", 0)
            for stream in self.streams.values():
                if stream_id in (0, stream.stream_id):
                    stream._wake()
        elif isinstance(event, h2.events.PingReceived):
            self.pings_received += 1
            self.server._notify()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_received = int(event.error_code or 0)
            self._stop()  # h2 cannot send anything after a GOAWAY, so its streams are lost

    def _stop(self) -> None:
        """Drop every stream and close gracefully once the outbox is written."""
        for stream in self.streams.values():
            stream._drop()
        self.streams.clear()
        self._deaf = self._finishing = True
        self._enqueue()
        self._want_write.set()
        self.server._notify()

    def _on_request(self, stream_id: int, headers: list[tuple[str, str]]) -> None:
        pseudo = {name: value for name, value in headers if name.startswith(":")}
        request = H2Request(
            method=pseudo.get(":method", ""),
            path=pseudo.get(":path", ""),
            authority=pseudo.get(":authority", ""),
            scheme=pseudo.get(":scheme", ""),
            headers=[(name, value) for name, value in headers if not name.startswith(":")],
            stream_id=stream_id,
            connection_id=self.connection_id,
        )
        after_goaway = (
            self.goaway_last_stream_id is not None and stream_id > self.goaway_last_stream_id
        )
        limit = self.max_concurrent_streams
        if after_goaway or (limit is not None and len(self.streams) >= limit):
            self.server.refused_requests.append(request)
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self.server._notify()
            return
        stream = H2Stream(self, request)
        self.streams[stream_id] = stream
        self.highest_stream_id = max(self.highest_stream_id, stream_id)
        self.server.requests.append(request)
        self.server.max_active_streams_seen = max(
            self.server.max_active_streams_seen, len(self.streams)
        )
        self.requests_accepted += 1
        if self.requests_accepted == self.server.keepalive_requests:
            self.goaway(stream_id)  # nginx's keepalive_requests: this one is the last
        self.server._notify()
        assert self._tg is not None
        self._tg.start_soon(self._run_handler, stream, name=f"h2 stream {stream_id}")

    async def _run_handler(self, stream: H2Stream) -> None:
        with stream._scope:
            try:
                await self.server._handler(stream.request, stream)
            except H2StreamReset:
                pass
            except Exception as exc:
                self.server.handler_errors.append(exc)
                stream._reset_now(ErrorCodes.INTERNAL_ERROR)
                self.server._notify()
        if not stream._local_ended:
            stream._reset_now(ErrorCodes.INTERNAL_ERROR)  # the handler left the response unfinished
        elif not stream._remote_ended:
            stream._reset_now(ErrorCodes.NO_ERROR)  # responded without reading the whole body
        stream._ack_unread()


def _decode(headers: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
    return [(str(name), str(value)) for name, value in headers]  # h2 decoded them already


class H2TestServer:
    """A running server; see the module docstring.  Create it with ``open_h2_server``."""

    def __init__(self, host: str, port: int, handler: H2Handler, *, tls: bool) -> None:
        self.host = host
        self.port = port
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"{'https' if tls else 'http'}://{netloc}"
        self.connections_accepted = 0
        self.open_connections = 0
        self.connections: list[H2ServerConnection] = []
        self.requests: list[H2Request] = []
        self.refused_requests: list[H2Request] = []  # after GOAWAY or over the stream limit
        self.resets_received: list[tuple[int, int]] = []  # (stream_id, error_code)
        self.handler_errors: list[Exception] = []
        self.protocol_errors: list[h2.exceptions.ProtocolError] = []
        self.max_active_streams_seen = 0  # on any one connection
        # As nginx's keepalive_requests: GOAWAY with a connection's Nth stream as the last.
        self.keepalive_requests: int | None = None
        self.release = anyio.Event()  # the default handler's /wait answers once this is set
        self.settings: dict[h2.settings.SettingCodes, int] = {}  # what we advertise
        # Called with each new connection before anything is sent on it (after our SETTINGS,
        # which are queued already): what it queues goes out in the same write.
        self.on_connect: Callable[[H2ServerConnection], object] | None = None
        self._handler = handler
        self._silenced = False
        self._unsilenced = anyio.Event()
        self._unsilenced.set()
        self._changed = anyio.Event()

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    @property
    def active_streams(self) -> int:
        """Streams currently open, over all connections."""
        return sum(len(conn.streams) for conn in self.connections)

    @property
    def pings_received(self) -> int:
        return sum(conn.pings_received for conn in self.connections)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(
        self, predicate: Callable[[H2TestServer], bool], *, timeout: float = 5.0
    ) -> None:
        """Wait until ``predicate(server)`` is true; re-checked on every server state change."""
        with anyio.fail_after(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def goaway(self, last_stream_id: int | None = None, error_code: int = 0) -> None:
        """Send GOAWAY on every open connection (see ``H2ServerConnection.goaway``); returns
        once it was written (at once while silenced)."""
        marks = [
            (conn, conn.goaway(last_stream_id, error_code))
            for conn in self.connections
            if not conn.closed.is_set()
        ]
        if not self._silenced:
            for conn, mark in marks:
                await conn._wait_sent(mark)

    def silence(self) -> None:
        """Stop reading and answering anything (PINGs included) on every connection."""
        if not self._silenced:
            self._silenced = True
            self._unsilenced = anyio.Event()

    def unsilence(self) -> None:
        """Process what arrived meanwhile and answer again."""
        self._silenced = False
        self._unsilenced.set()
        for conn in self.connections:
            conn._resume()

    async def _accept_loop(
        self, listener: Listener[SocketStream], ssl_context: ssl.SSLContext | None
    ) -> None:
        assert isinstance(listener, SocketListener)
        async with anyio.create_task_group() as tg:
            while True:
                stream = await listener.accept()
                _flush_before_returning_from_send(stream)
                conn = H2ServerConnection(self, len(self.connections), stream, self.settings)
                self.connections.append(conn)
                self.connections_accepted += 1
                self.open_connections += 1
                self._notify()
                if self.on_connect is not None:
                    self.on_connect(conn)
                tg.start_soon(conn._serve, ssl_context)


@asynccontextmanager
async def open_h2_server(
    handler: H2Handler | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_concurrent_streams: int | None = 100,
    initial_window_size: int = 65535,
    max_frame_size: int = 16384,
    host: str = "127.0.0.1",
) -> AsyncIterator[H2TestServer]:
    """Serve ``handler`` (default: ``default_h2_handler``) over h2c, or h2 with ``ssl_context``
    (see ``make_h2_server_context``), on a free port of ``host``."""
    multi = await anyio.create_tcp_listener(local_host=host, local_port=0)
    listeners = list(multi.listeners)
    port = listeners[0].extra(SocketAttribute.local_port)
    server = H2TestServer(host, port, handler or default_h2_handler, tls=ssl_context is not None)
    codes = h2.settings.SettingCodes
    server.settings = {
        codes.INITIAL_WINDOW_SIZE: initial_window_size,
        codes.MAX_FRAME_SIZE: max_frame_size,
        codes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
    }
    if max_concurrent_streams is not None:
        server.settings[codes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
    try:
        async with anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(server._accept_loop, listener, ssl_context)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await multi.aclose()
            for conn in server.connections:  # in case a task was cancelled before it started
                await conn._shutdown()


# -- default handler ------------------------------------------------------------------------


async def default_h2_handler(req: H2Request, stream: H2Stream) -> None:
    """Routes (anything else is a 404):

    ``/`` "hello" | ``/echo`` the request body, with header x-body-length | ``/bytes?n=N``
    N b"x" | ``/stream?chunks=N&size=S`` N DATA frames of S b"x" | ``/wait`` "released" once
    ``server.release`` is set | ``/reset`` RST_STREAM(INTERNAL_ERROR) | ``/refuse``
    RST_STREAM(REFUSED_STREAM) | ``/status/<n>`` empty body with status n.
    """
    path, query = urlsplit(req.path).path, req.query
    if path == "/":
        await stream.respond(200, [("content-type", "text/plain")], b"hello")
    elif path == "/echo":
        body = await stream.read_body()
        await stream.respond(200, [("x-body-length", str(len(body)))], body)
    elif path == "/bytes":
        await stream.respond(200, [], b"x" * int(query.get("n", "10")))
    elif path == "/stream":
        await stream.send_headers(200, [("content-type", "application/octet-stream")])
        for _ in range(int(query.get("chunks", "3"))):
            await stream.send_data(b"x" * int(query.get("size", "10")))
        await stream.end()
    elif path == "/wait":
        await stream.server.release.wait()
        await stream.respond(200, [], b"released")
    elif path == "/reset":
        await stream.reset(ErrorCodes.INTERNAL_ERROR)
    elif path == "/refuse":
        await stream.reset(ErrorCodes.REFUSED_STREAM)
    elif path.startswith("/status/") and path[8:].isdigit():
        await stream.respond(int(path[8:]))
    else:
        await stream.respond(404, [], b"not found")
