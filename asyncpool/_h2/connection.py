"""A persistent HTTP/2 connection: many concurrent streams over one socket.

Theory of operation
-------------------
The ``h2`` state machine is shared by everyone on the connection; every call into it is
synchronous, so calls never interleave. Only the **writer task** writes to the socket: it
moves request bodies into h2 as the flow-control windows allow and flushes whatever h2 has
to send. Everyone else (a caller opening a stream, the reader acknowledging data, a body being
closed early) changes h2 and then *kicks* the writer.

The **reader task** reads frames and routes each event to its stream: the response head goes
to the caller waiting in ``round_trip``; DATA goes into the stream's unbounded channel, which
flow control bounds: data is acknowledged (a WINDOW_UPDATE later) only as the caller consumes
it, so a slow reader throttles its own stream and no other. When nothing is in flight the same
read carries the idle timeout, and with ``read_idle_timeout`` a silent connection is probed by
PING and closed when no answer comes within ``ping_timeout``.

A request with ``Expect: 100-continue`` sends its HEADERS and holds its body back until
100 Continue arrives (the reader hands the body to the writer at once) or the caller's
``expect_continue_timeout`` expires (then it goes anyway), as Go's transport does; a final
response first means the body is never sent.

A server gets a bounded number of frames that move no response forward (PING, SETTINGS,
WINDOW_UPDATE, empty DATA, ...: ``MAX_IDLE_FRAMES`` in a row) and of replies to them it leaves
unread (``MAX_UNSENT_REPLIES``); past either, the connection ends with
GOAWAY(ENHANCE_YOUR_CALM) and its streams fail with ``FloodError`` (see ``_h2.protocol``). Empty DATA
is never queued for the caller. 1xx heads count against ``max_response_header_bytes`` with the
final head, per stream, so endless 1xx fail their stream with ``ResponseHeaderTooLarge``.

A GOAWAY lets streams up to its ``last_stream_id`` finish; the others fail with a retry hint
(the server never processed them: ``RetryHint.REFUSED`` when it processed others on the
connection, else ``NOTHING_WRITTEN``), and the pool opens no new stream on the connection.

What this module shares with the HTTP/1.1 one (reading, waiting for a head, ``conn_closed``,
request bodies, ``CloseReason``, ``RetryHint``, the ``Connection`` protocol both satisfy) is in
``_conn_common``; neither connection module imports the other.

A server whose first SETTINGS allow no stream at all (MAX_CONCURRENT_STREAMS = 0) fails the
handshake, so the dial fails and so do the requests waiting on it: waiting could last forever,
and dialing again for them would only pile up more connections the server will not use.

Invariants
----------
* Capacity is the pool's: ``reserved`` counts streams promised to requests (opened or about to
  be) and is changed only by the pool's synchronous methods; a stream gives its slot back
  exactly once (``_Stream.released``), through ``H2Owner.release_stream``.
* Every stream ends exactly once: with a complete body, or with an error; streams still open
  when the connection dies fail on the reader's way out, saying why it died (``_lost``: the
  same error whether the reader or the writer saw it first) and whether the server may have
  processed the request: once its HEADERS were handed to the socket it may have, and the
  request is not sent again (as Go); one never handed over is retried.
* A cancelled caller, or a body closed before its end, resets its stream (RST_STREAM CANCEL)
  and never disturbs the other streams.
* A stream the pool is done with is closed in h2 too, on both sides: a response that ends
  before our body is all sent closes our side with RST_STREAM(NO_ERROR), as Go does. So h2's
  count of open streams equals ``len(_streams)`` whenever no call into h2 is under way; a
  TooManyStreamsError with the two apart is our bug: the connection closes and the request
  fails, not retried.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterable, Callable
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.abc
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple

from .._conn_common import (
    CloseReason,
    Connection,
    RetryHint,
    WriteClock,
    closing_body,
    head_timeout,
    receive_some,
    report_closed,
)
from .._errors import (
    FloodError,
    HTTPError,
    PoolClosed,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseHeaderTooLarge,
    ServerDisconnected,
    StreamReset,
    WriteError,
)
from .._models import Headers, Request, Response
from .._sync import Channel, Event, event_factory
from .._tasks import Spawner
from .._trace import WROTE_REQUEST_OK, ClientTrace
from .protocol import FloodDetected, new_client_connection

__all__ = ["H2Owner", "HTTP2Connection"]

STREAM_WINDOW = 4 << 20  # bytes a stream may have in flight to us
CONNECTION_WINDOW = 16 << 20  # bytes all streams together may have in flight to us
# Unread DATA queued for a stream: from this many chunks on, a new frame joins the last chunk,
# up to MERGED_CHUNK_MAX bytes (so a 4 MiB window holds at most ~80 chunks, however small its
# frames).
MERGE_AFTER_CHUNKS = 16
MERGED_CHUNK_MAX = 1 << 16
UPLOAD_BUFFER = 1 << 16  # bytes a streamed request body may run ahead of flow control
PING_PAYLOAD = b"asyncpl!"
# How long a connection that failed the server (a flood, a protocol error) tries to say so
# with h2's GOAWAY before it closes: a bound, not a delay (it is one small write).
GOAWAY_WRITE_TIMEOUT = 1.0
# The highest stream identifier (RFC 9113, 5.1.1: 31 bits); a client's are the odd ones.
LAST_STREAM_ID = 2**31 - 1
# Streams taken on a connection whose server's first SETTINGS set no MAX_CONCURRENT_STREAMS
# (RFC 9113: then there is no limit); Go's http2 transport takes 1000 too. Until those SETTINGS
# arrive, the limit is 100.
UNADVERTISED_MAX_STREAMS = 1000
_MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS

# Connection-specific fields HTTP/2 forbids (RFC 9113, 8.2.2); Host becomes :authority.
_DROPPED_FIELDS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}
)
# Kept out of HPACK's tables (as h2's own normalisation does), so that their values cannot be
# guessed by watching how well later headers compress.
_SENSITIVE_FIELDS = frozenset({"authorization", "proxy-authorization"})
# A response field: a lowercase token name; a value without CR, LF or NUL (RFC 9113, 8.2.1).
_RESPONSE_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")
# Response heads checked once and remembered, per connection: how many, and the largest kept
# (RFC 9113 size), so that what they hold stays bounded (64 heads of 2 KiB, fields and key).
CHECKED_HEADS = 64
CHECKED_HEAD_MAX = 2 << 10


def _check_head(raw: list[tuple[bytes, bytes]]) -> tuple[int, list[str], int] | str:
    """A response head's status, fields (flat) and RFC 9113 size (6.5.2: name + value + 32
    per field, pseudo-headers included), checked as RFC 9113 (8.2, 8.3) asks; or what is
    wrong with it."""
    status = b""
    headers: list[str] = []
    size = 0
    for name, value in raw:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if name != b":status" or status or headers:
                return f"pseudo-header {name!r} misplaced, repeated or not for a response"
            status = value
        elif not _RESPONSE_FIELD_NAME.fullmatch(name) or _FORBIDDEN_IN_VALUE.search(value):
            return f"invalid header field {name!r}"
        else:
            headers += (name.decode("latin-1"), value.decode("latin-1"))
    if len(status) == 3 and status.isdigit():
        return int(status), headers, size
    return f"no valid :status ({status!r})"


class H2Owner(Protocol):
    """What an HTTP/2 connection needs from the pool that owns it (see ``ConnOwner`` in
    ``_h1.connection``: the same owner object)."""

    def release_stream(self, conn: HTTP2Connection) -> None:
        """A stream ended: its slot is free again."""

    def capacity_changed(self, conn: HTTP2Connection) -> None:
        """SETTINGS or GOAWAY changed how many streams the connection takes."""

    def conn_closed(self, conn: HTTP2Connection) -> None:
        """The connection closed (called exactly once)."""

    def idle_timed_out(self, conn: HTTP2Connection) -> None:
        """No stream for ``idle_conn_timeout``."""


class _OutBody:
    """A request body on its way into h2, as flow control allows."""

    __slots__ = ("buffer", "eof", "offset", "pump_scope", "space")

    def __init__(self, data: bytes, eof: bool, space: Event) -> None:
        self.buffer = bytearray(data)
        self.offset = 0
        self.eof = eof
        self.space = space  # set when the writer drained the buffer
        # A streamed body's pump task's scope, made when the task is spawned: a stream that
        # ends before the task's first turn cancels it all the same.
        self.pump_scope: anyio.CancelScope | None = None

    def take(self, limit: int) -> bytes:
        chunk = bytes(self.buffer[self.offset : self.offset + limit])
        self.offset += len(chunk)
        if self.offset == len(self.buffer):
            self.buffer.clear()
            self.offset = 0
            self.space.set()
        return chunk


class _Stream:
    """One request/response exchange on the connection."""

    __slots__ = (
        "body",
        "body_done",
        "chunks",
        "continue_event",
        "delivered",
        "ended",
        "error",
        "head_bytes",
        "head_ready",
        "out",
        "pending_body",
        "read_timeout",
        "released",
        "remaining",
        "request",
        "response",
        "response_started",
        "sent",
        "stream_id",
        "trace",
        "written",
    )

    def __init__(
        self,
        stream_id: int,
        request: Request,
        trace: ClientTrace | None,
        new_event: Callable[[], Event],
    ) -> None:
        self.stream_id = stream_id
        self.request = request
        self.trace = trace
        self.head_ready = new_event()
        self.written: WriteClock | None = None
        self.response: Response | None = None
        self.delivered = False
        self.error: BaseException | None = None
        self.response_started = False
        self.ended = False  # END_STREAM received: the body is complete
        self.released = False  # the slot went back to the pool
        self.remaining = -1  # body bytes its content-length still promises (-1: no length)
        self.head_bytes = 0  # RFC 9113 size of its heads so far, 1xx included
        self.out: _OutBody | None = None
        self.read_timeout: float | None = None  # the longest wait for the next DATA
        self.body_done = False  # our side is closed: END_STREAM sent (or no body at all)
        self.sent = False  # its HEADERS were handed to the socket: the server may have them
        # Expect: 100-continue: the body held back until 100 Continue or the timeout (None
        # once sent, or refused by a final response), and what the caller waits on meanwhile.
        self.pending_body: bytes | AsyncIterable[bytes] | None = None
        self.continue_event: Event | None = None
        # DATA as (bytes, flow-controlled length), unbounded: flow control bounds it.
        self.chunks: Channel[tuple[bytes | bytearray, int]] = Channel(new_event)
        self.body: _H2Body | None = None


class HTTP2Connection:
    """One HTTP/2 connection in the pool. See the module docstring."""

    protocol: Final[Literal["HTTP/2"]] = "HTTP/2"  # the pool tells the two kinds apart by it

    def __init__(
        self,
        owner: H2Owner,
        stream: anyio.abc.ByteStream,
        *,
        key: str,
        host_port: str,
        authority: str,
        scheme: str,
        idle_conn_timeout: float | None,
        read_idle_timeout: float | None,
        ping_timeout: float,
        expect_continue_timeout: float | None,
        max_header_bytes: int,
        local_address: Any = None,
        remote_address: Any = None,
    ) -> None:
        # Immutable after construction.
        self.key = key
        self.host_port = host_port
        self.local_address = local_address
        self.remote_address = remote_address
        self._owner = owner
        self._stream = stream
        self._authority = authority.encode()
        self._scheme = scheme.encode()
        self._idle_conn_timeout = idle_conn_timeout
        self._read_idle_timeout = read_idle_timeout
        self._ping_timeout = ping_timeout
        self._expect_continue_timeout = expect_continue_timeout
        self._max_header_bytes = max_header_bytes  # per head, as RFC 9113 counts its size
        # Header blocks are ours to build and check; see _h2.protocol for the decoder's bound.
        self._h2 = new_client_connection(max_header_bytes)

        # Owned by the pool, changed only in its synchronous methods.
        self.reserved = 0  # streams promised to requests, open or about to open
        self.handed_out = 0  # streams ever reserved on it
        self.stream_cap: int | None = None  # the most it hands out in its life (None: no cap)
        # The pool retired it (max_conn_lifetime, max_requests_per_conn): no new stream.
        self.expired: CloseReason | None = None
        # The end of its lifetime, set by the Transport before the pool sees it; None: no end.
        self.expires_at: float | None = None
        self.idle_at: float | None = None  # when ``reserved`` last fell to 0
        self.requests_started = 0  # streams opened so far (> 0: reused, in Go's sense)

        # Owned by the connection.
        self.max_streams = 100  # the server's SETTINGS_MAX_CONCURRENT_STREAMS, once known
        self.goaway = False  # no new stream may open
        # Streams the server is known to have taken: answered ones, or up to a GOAWAY's last.
        self.streams_accepted = 0
        self.refused_streams = False  # the server refused a stream (GOAWAY or REFUSED_STREAM)
        self._goaway_detail = ""  # what the server's GOAWAY said, for errors after it
        self.closed = False
        self.close_why: CloseReason | None = None
        self.close_error: BaseException | None = None
        self.trace: ClientTrace | None = None  # the last request's: told when it closes
        self._streams: dict[int, _Stream] = {}
        self._checked_heads: dict[tuple[tuple[bytes, bytes], ...], tuple[int, list[str], int]] = {}
        self._outgoing: dict[int, _Stream] = {}  # streams whose body is still being sent
        self._unsent: list[_Stream] = []  # opened, HEADERS not yet handed to the socket
        self._tasks: Spawner | None = None  # set by start()
        self._new_event = event_factory()
        self._wakeup = self._new_event()  # kicks the writer
        self._ping_deadline: float | None = None
        self._reader_scope = anyio.CancelScope()
        # The reader's, around its reads; cancelled by went_idle() while it waits with no deadline.
        self._wake_scope = anyio.CancelScope()
        self._waiting_unbounded = False
        self._writer_scope = anyio.CancelScope()
        self._writer_parked = False  # the writer waits for a kick, with nothing half-written

    def __repr__(self) -> str:
        return f"<HTTP2Connection {self.key} streams={len(self._streams)}/{self.max_streams}>"

    @property
    def has_capacity(self) -> bool:
        if self.closed or self.goaway or self.expired or self.reserved >= self.max_streams:
            return False
        return self.stream_cap is None or self.handed_out < self.stream_cap

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    # -- life cycle ---------------------------------------------------------------------------

    async def handshake(self) -> None:
        """Send our preface and settings; read until the server's SETTINGS are known."""
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                # As Go advertises MaxHeaderListSize from MaxResponseHeaderBytes.
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self._max_header_bytes,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        await self._send_in_handshake(self._h2.data_to_send())
        while True:
            data = await receive_some(self._stream, self.host_port)
            if not data:
                raise ReadError(
                    "the server closed the connection during the HTTP/2 preface",
                    host=self.host_port,
                )
            events = self._receive_events(data)
            settings_seen = False
            for event in events:
                if isinstance(event, h2.events.RemoteSettingsChanged) and not settings_seen:
                    settings_seen = True
                    if _MAX_STREAMS not in event.changed_settings:
                        self.max_streams = UNADVERTISED_MAX_STREAMS
                self._dispatch(event)
            if self.closed:
                raise self.close_error or ReadError(
                    "the server sent GOAWAY during the HTTP/2 preface", host=self.host_port
                )
            pending = self._h2.data_to_send()
            if pending:
                await self._send_in_handshake(pending)
                self._h2.unsent_replies = 0
            if settings_seen:
                if self.max_streams == 0:
                    # Nothing can ever be sent on it, and another dial would bring the same.
                    raise RemoteProtocolError(
                        "the server allows no streams (SETTINGS_MAX_CONCURRENT_STREAMS = 0)",
                        host=self.host_port,
                    )
                return

    async def _send_in_handshake(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise WriteError(
                f"writing the HTTP/2 handshake failed: {exc!r}", host=self.host_port
            ) from exc

    def start(self, tasks: Spawner) -> None:
        """Start the reader and writer tasks (in the Transport's ``TaskSet``); body pumps
        start there too."""
        self._tasks = tasks
        tasks.start_soon(self._write_loop, name=f"asyncpool h2 writer {self.key}")
        tasks.start_soon(self._read_loop, name=f"asyncpool h2 reader {self.key}")

    def close(self, why: CloseReason, error: BaseException | None = None) -> None:
        """Close now; synchronous and idempotent. Open streams fail as the reader ends."""
        if self.closed:
            return
        self.closed = True
        self.close_why, self.close_error = why, error
        self._reader_scope.cancel()
        self._writer_scope.cancel()
        for stream in self._outgoing.values():
            if stream.out is not None and stream.out.pump_scope is not None:
                stream.out.pump_scope.cancel()
        if self._tasks is not None:  # closed in handshake(): the pool does not know it yet
            self._owner.conn_closed(self)
        report_closed(self.trace, self, why, error)

    def _kick(self) -> None:
        self._wakeup.set()

    def went_idle(self) -> None:
        """The pool set ``idle_at``. The last stream may have ended outside the reader (a
        caller cancelled, closed a body early) while it waits with no deadline: wake it so
        that the idle timeout applies."""
        if self._waiting_unbounded:
            self._waiting_unbounded = False
            self._wake_scope.cancel()

    # -- the caller's side --------------------------------------------------------------------

    async def round_trip(
        self,
        request: Request,
        headers: list[tuple[str, str]],
        *,
        trace: ClientTrace | None,
        response_header_timeout: float | None,
        read_timeout: float | None = None,
    ) -> Response:
        """Open a stream for ``request`` (a slot the pool reserved) and wait for its head."""
        if self.closed or self.goaway:
            error = ReadError(
                "the connection went away before the stream opened", host=self.host_port
            )
            error.retry_hint = self._refused_hint()
            error.request_unused = True
            self._owner.release_stream(self)
            raise error
        try:
            stream = self._open_stream(request, headers, trace)
        except h2.exceptions.TooManyStreamsError:
            self._owner.release_stream(self)
            held = self._h2.count_open_streams()
            if held != len(self._streams):
                # h2 holds streams open that we ended (or the reverse): a leaked slot, our bug.
                # Retrying here would meet the same wall; close the connection so the pool
                # dials afresh, and say so loudly (the fault tests check the two counts).
                broken = HTTPError(
                    f"internal error: h2 counts {held} open streams where the connection has "
                    f"{len(self._streams)}; the connection is closed",
                    host=self.host_port,
                    phase="protocol",
                )
                self.close(CloseReason.ERROR, broken)
                raise broken from None
            # The server lowered SETTINGS_MAX_CONCURRENT_STREAMS after this slot was reserved.
            lowered = RemoteProtocolError(
                f"the server lowered its stream limit to {self.max_streams} before the "
                "stream opened",
                host=self.host_port,
            )
            lowered.retry_hint = RetryHint.NOTHING_WRITTEN
            lowered.request_unused = True
            raise lowered from None
        except BaseException:
            self._owner.release_stream(self)
            raise
        stream.read_timeout = read_timeout
        if response_header_timeout is not None or read_timeout is not None:
            stream.written = WriteClock(stream.head_ready)
            if stream.body_done:
                stream.written.set()
        try:
            if trace:
                if trace.wrote_header_field:
                    for name, value in headers:
                        trace.wrote_header_field(name, [value])
                if trace.wrote_headers:
                    trace.wrote_headers()
                if stream.body_done and trace.wrote_request:
                    trace.wrote_request(WROTE_REQUEST_OK)
            if stream.continue_event is not None:
                # As Go's HTTP/2 transport: the body waits for 100 Continue, a final response
                # (then it is never sent) or expect_continue_timeout (then it goes anyway).
                if trace and trace.wait_100_continue:
                    trace.wait_100_continue()
                with anyio.move_on_after(self._expect_continue_timeout):
                    await stream.continue_event.wait()
                self._release_body(stream)
            written = stream.written
            if written is None:
                await stream.head_ready.wait()
            else:
                try:
                    await written.wait(stream.head_ready, response_header_timeout, read_timeout)
                finally:
                    written.end()
                if not stream.head_ready.is_set():
                    self._reset(
                        stream, head_timeout(response_header_timeout, read_timeout, self.host_port)
                    )
        except BaseException:
            self._reset(stream, ReadError("request cancelled", host=self.host_port))
            if stream.response is not None:
                stream.response._discard()
                stream.response = None
            raise
        response, stream.response = stream.response, None
        if response is None:
            assert stream.error is not None
            raise stream.error
        return response

    def _open_stream(
        self, request: Request, headers: list[tuple[str, str]], trace: ClientTrace | None
    ) -> _Stream:
        fields: list[tuple[bytes, bytes]] = [
            (b":method", request.method.encode()),
            (b":authority", self._authority),
            (b":scheme", self._scheme),
            (b":path", request.target.encode()),
        ]
        # Checked by the Transport (check_wire_fields): names are tokens, values Latin-1 with
        # no control character h11 refuses and no whitespace at either end. HTTP/2 wants names
        # in lowercase and no connection-specific field.
        for name, value in headers:
            lower = name.lower()
            if lower in _DROPPED_FIELDS or (lower == "te" and value.lower() != "trailers"):
                continue
            field = (lower.encode(), value.encode("latin-1"))
            if lower in _SENSITIVE_FIELDS or (lower == "cookie" and len(value) < 20):
                field = NeverIndexedHeaderTuple(*field)
            fields.append(field)
        content = request.content
        has_body = bool(content) if isinstance(content, bytes) else content is not None
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_request_headers(stream_id, fields, end_stream=not has_body)
        if stream_id >= LAST_STREAM_ID:
            # No stream can open after this one (2**30 streams in): the connection takes no
            # more and closes after its last, as after a GOAWAY; the pool dials afresh.
            self.goaway = True
            self._goaway_detail = "its stream identifiers ran out"
            self._owner.capacity_changed(self)
        self.requests_started += 1
        self.trace = trace
        stream = _Stream(stream_id, request, trace, self._new_event)
        stream.body_done = not has_body
        self._streams[stream_id] = stream
        self._unsent.append(stream)
        if content is not None and has_body:
            if self._expect_continue_timeout is not None and any(
                k.lower() == "expect" and v.lower() == "100-continue"
                for k, v in request.headers._pairs()
            ):
                stream.pending_body = content
                stream.continue_event = self._new_event()
            else:
                self._send_body(stream, content)
        self._kick()
        return stream

    def _send_body(self, stream: _Stream, content: bytes | AsyncIterable[bytes]) -> None:
        """Hand a request body to the writer (through a pump task when it is streamed)."""
        if isinstance(content, bytes):
            stream.out = _OutBody(content, True, self._new_event())
            self._outgoing[stream.stream_id] = stream
        else:
            out = stream.out = _OutBody(b"", False, self._new_event())
            out.pump_scope = anyio.CancelScope()
            self._outgoing[stream.stream_id] = stream
            assert self._tasks is not None
            self._tasks.start_soon(
                self._pump_body, stream, content, name=f"asyncpool h2 body {self.key}"
            )
        self._kick()

    def _release_body(self, stream: _Stream) -> None:
        """Send a body held back for 100 Continue, unless it was refused or the stream ended."""
        content, stream.pending_body = stream.pending_body, None
        if content is not None and not stream.released and not self.closed:
            self._send_body(stream, content)

    async def _pump_body(self, stream: _Stream, content: AsyncIterable[bytes]) -> None:
        """Feed a streamed request body into the stream's buffer, a little ahead of flow
        control, in its own task so that a slow producer holds up no other stream."""
        out = stream.out
        assert out is not None and out.pump_scope is not None
        with out.pump_scope:
            try:
                async with closing_body(content) as chunks:
                    if stream.released:  # ended before this task's first turn: not a chunk
                        return
                    async for chunk in chunks:
                        while len(out.buffer) >= UPLOAD_BUFFER:
                            out.space = self._new_event()
                            await out.space.wait()
                        out.buffer += chunk
                        self._kick()
            except Exception as exc:
                self._reset(stream, exc)
                return
            out.eof = True
            self._kick()

    def _reset(self, stream: _Stream, error: BaseException) -> None:
        """End a stream early on our side (RST_STREAM CANCEL), failing whoever waits on it."""
        if stream.released:
            return
        if not stream.ended and not self.closed:
            try:
                self._h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:
                pass
            self._kick()
        self._fail(stream, error)

    def _fail(self, stream: _Stream, error: BaseException, *, keep_unread: bool = False) -> None:
        """End ``stream`` with ``error``. With ``keep_unread`` (the server reset it), the body's
        reader gets the DATA that arrived before the error, as Go's transport gives it."""
        if stream.error is None and not stream.ended:
            stream.error = error
        if not stream.delivered:
            stream.head_ready.set()
        if stream.written is not None:
            stream.written.set()
        if stream.continue_event is not None:
            stream.continue_event.set()
        stream.chunks.close()
        if (stream.error is not None and not keep_unread) or not stream.delivered:
            self._discard_unread(stream)  # nobody will read what arrived
        self._finish(stream)

    def _discard_unread(self, stream: _Stream) -> None:
        """Drop what a stream received and nobody will read; it still counts against the
        connection's window, so acknowledge it."""
        unread = 0
        while True:
            try:
                unread += stream.chunks.receive_nowait()[1]
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        self._consumed(stream, unread)

    def _finish(self, stream: _Stream) -> None:
        """The stream is over for the pool: give the slot back, once."""
        if stream.released:
            return
        stream.released = True
        self._streams.pop(stream.stream_id, None)
        sending = self._outgoing.pop(stream.stream_id, None)
        if sending is not None and sending.out is not None and sending.out.pump_scope is not None:
            sending.out.pump_scope.cancel()
        self._owner.release_stream(self)
        if self.goaway and not self._streams:
            self.close(CloseReason.NOT_REUSABLE)

    def _consumed(self, stream: _Stream, flow_length: int) -> None:
        """The caller took a chunk: let the server send that much more."""
        if flow_length and not self.closed:
            self._h2.acknowledge_received_data(flow_length, stream.stream_id)
            self._kick()

    # -- the writer task ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            with self._writer_scope:
                h2c = self._h2
                while True:
                    self._move_bodies()
                    replies = h2c.unsent_replies
                    data = h2c.data_to_send()
                    if data:
                        for stream in self._unsent:  # once handed over, maybe received
                            stream.sent = True
                        self._unsent.clear()
                        await self._stream.send(data)
                        h2c.unsent_replies -= replies  # those are out
                        continue
                    self._writer_parked = True
                    await self._wakeup.wait()
                    self._writer_parked = False
                    self._wakeup = self._new_event()
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException | None) -> None:
        """The socket failed (``exc``) or the server closed it (None), seen by the reader or
        the writer: whichever sees it first, the connection closes with the same error."""
        if exc is None:
            why, detail = CloseReason.SERVER_CLOSED, "the server closed the connection"
        elif isinstance(exc, (ConnectionError, anyio.BrokenResourceError)):
            # ECONNRESET to the reader, EPIPE or ECONNRESET to the writer: the same event.
            why, detail = CloseReason.ERROR, "the server reset the connection"
        else:
            why, detail = CloseReason.ERROR, f"the connection failed ({exc!r})"
        error = ReadError(detail, host=self.host_port)
        error.__cause__ = exc
        self.close(why, error)

    def _move_bodies(self) -> None:
        """Put as much of each pending body into h2 as its flow-control window allows."""
        h2c = self._h2
        for stream in list(self._outgoing.values()):
            out = stream.out
            assert out is not None
            sid = stream.stream_id
            try:
                while len(out.buffer) > out.offset:
                    window = h2c.local_flow_control_window(sid)
                    if window <= 0:
                        break
                    h2c.send_data(sid, out.take(min(window, h2c.max_outbound_frame_size)))
                    h2c.idle_frames = 0  # progress: WINDOW_UPDATEs will answer it
                if out.eof and len(out.buffer) == out.offset:
                    h2c.end_stream(sid)
                    stream.body_done = True
                    del self._outgoing[sid]
                    if stream.written is not None:
                        stream.written.set()
                    if stream.trace and stream.trace.wrote_request:
                        try:
                            stream.trace.wrote_request(WROTE_REQUEST_OK)
                        except Exception as exc:  # it fails its stream, not the connection
                            self._reset(stream, exc)
            except h2.exceptions.StreamClosedError:
                self._outgoing.pop(sid, None)

    # -- the reader task ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            with self._reader_scope:
                while True:
                    with anyio.CancelScope() as self._wake_scope:
                        while True:
                            data = await self._receive_live()
                            if data is None:
                                return
                            if not data:
                                self._lost(None)
                                return
                            for event in self._receive_events(data):
                                self._dispatch(event)
                            self._kick()
        except ReadError as exc:
            if isinstance(exc.__cause__, (OSError, anyio.BrokenResourceError)):  # the socket
                self._lost(exc.__cause__)
            self.close(CloseReason.ERROR, exc)
        except RemoteProtocolError as exc:  # the server broke HTTP/2 (h2 queued a GOAWAY)
            parked = self._writer_parked and not self.closed
            self.close(CloseReason.ERROR, exc)
            if parked:
                await self._say_goaway()
        except Exception as exc:
            self.close(CloseReason.ERROR, exc)
        finally:
            self.close(CloseReason.ERROR, ReadError("connection closed", host=self.host_port))
            for stream in list(self._streams.values()):
                self._fail(stream, self._error_for(stream))
            await anyio.aclose_forcefully(self._stream)

    async def _say_goaway(self) -> None:
        """Write the GOAWAY h2 queued for the server's error, so that it learns why (a flood:
        ENHANCE_YOUR_CALM). Only from a writer parked with nothing half-written (now cancelled:
        the socket is ours); bounded, as a flooding server may not read."""
        data = self._h2.data_to_send()
        if not data:  # pragma: no cover - h2 queues a GOAWAY for each of its errors
            return
        # The HEADERS h2 queued since the writer last ran go out first: those requests may
        # reach the server, so they are not retried as never sent.
        for stream in self._unsent:
            stream.sent = True
        self._unsent.clear()
        with anyio.move_on_after(GOAWAY_WRITE_TIMEOUT):
            try:
                await self._stream.send(data)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    def _error_for(self, stream: _Stream) -> BaseException:
        if self.close_why is CloseReason.POOL_CLOSED:
            return PoolClosed("the Transport closed during the request", host=self.host_port)
        cause = self.close_error
        if isinstance(cause, RemoteProtocolError):
            # The server broke the protocol (a flood, a frame h2 refuses): every stream fails
            # with that kind of error, not as if the server had hung up; one never handed to the
            # socket is retried.
            broken = type(cause)(cause.detail, host=self.host_port)
            if not stream.sent:
                broken.retry_hint = RetryHint.NOTHING_WRITTEN
            broken.__cause__ = cause
            return broken
        detail = cause.detail if isinstance(cause, HTTPError) else f"closed: {self.close_why}"
        if self._goaway_detail:
            detail = f"{detail}, after {self._goaway_detail}"
        error: HTTPError
        # What the server may have done with it decides whether it is safe to send again.
        if stream.response_started:
            error = ReadError(f"HTTP/2 connection lost mid-response: {detail}", host=self.host_port)
        elif not stream.sent:
            error = WriteError(
                f"HTTP/2 connection lost: {detail}; the request was not sent", host=self.host_port
            )
            error.retry_hint = RetryHint.NOTHING_WRITTEN
        else:
            error = ServerDisconnected(
                f"HTTP/2 connection lost: {detail}; the request was sent and the server may "
                "have processed it",
                host=self.host_port,
            )
        error.__cause__ = cause
        return error

    async def _receive_live(self) -> bytes | None:
        """The next bytes; meanwhile the idle timeout and the PING check apply. None when the
        connection was closed for either."""
        idle_timeout, read_idle = self._idle_conn_timeout, self._read_idle_timeout
        while True:
            idle_at, ping_deadline = self.idle_at, self._ping_deadline
            idle_deadline = math.inf
            if idle_at is not None and idle_timeout is not None:
                idle_deadline = idle_at + idle_timeout
            probe_deadline = ping_deadline
            if probe_deadline is None and read_idle is not None:
                probe_deadline = anyio.current_time() + read_idle
            deadline = min(idle_deadline, probe_deadline or math.inf)
            if deadline == math.inf:  # streams in flight and no PING check: no scope needed
                self._waiting_unbounded = True
                data = await receive_some(self._stream, self.host_port)
                self._waiting_unbounded = False
                self._ping_deadline = None
                return data
            with anyio.CancelScope(deadline=deadline):
                data = await receive_some(self._stream, self.host_port)
                self._ping_deadline = None  # anything from the server proves it alive
                return data
            now = anyio.current_time()
            if now >= idle_deadline and self.idle_at == idle_at:
                self._owner.idle_timed_out(self)
                return None
            if ping_deadline is not None and now >= ping_deadline:
                error = ReadError(
                    f"no answer to PING within ping_timeout={self._ping_timeout}s",
                    host=self.host_port,
                )
                self.close(CloseReason.ERROR, error)
                return None
            if ping_deadline is None and probe_deadline is not None and now >= probe_deadline:
                self._h2.ping(PING_PAYLOAD)  # read_idle_timeout of silence: is it alive?
                self._kick()
                self._ping_deadline = now + self._ping_timeout

    def _receive_events(self, data: bytes) -> list[h2.events.Event]:
        try:
            return self._h2.receive_data(data)
        except FloodDetected as exc:  # h2 queued GOAWAY(ENHANCE_YOUR_CALM)
            raise self._flood_error(exc) from None
        except h2.exceptions.ProtocolError as exc:
            raise RemoteProtocolError(f"HTTP/2 protocol error: {exc}", host=self.host_port) from exc

    def _flood_error(self, exc: FloodDetected) -> FloodError:
        return FloodError(
            f"HTTP/2 flood: {exc.kind} (limit {exc.limit}); the connection is closed with "
            "GOAWAY(ENHANCE_YOUR_CALM)",
            host=self.host_port,
        )

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None or stream.released:
                self._h2.acknowledge_received_data(
                    event.flow_controlled_length or 0,
                    event.stream_id,
                )
            else:
                data, flow_length = event.data or b"", event.flow_controlled_length or 0
                if not data:
                    # Nothing for the caller: queueing it would cost memory flow control does
                    # not bound. Padding gives its window back now, as Go does.
                    self._consumed(stream, flow_length)
                    if event.stream_ended is None:  # with END_STREAM it is progress
                        self._no_progress("empty DATA frames")
                    return
                self._h2.idle_frames = 0
                if stream.remaining >= 0:
                    stream.remaining -= len(data)
                    if stream.remaining < 0:
                        self._h2.acknowledge_received_data(flow_length, event.stream_id)
                        error = RemoteProtocolError(
                            "the response body is longer than its content-length",
                            host=self.host_port,
                        )
                        self._reset(stream, error)
                        return
                chunks = stream.chunks
                if len(chunks) >= MERGE_AFTER_CHUNKS:
                    # Flow control bounds the bytes, not the frames: tiny frames piling up
                    # unread join the last chunk, so memory follows the bytes.
                    last, last_flow = chunks.peek_last()
                    if len(last) < MERGED_CHUNK_MAX:
                        merged = last if type(last) is bytearray else bytearray(last)
                        merged += data
                        chunks.replace_last((merged, last_flow + flow_length))
                        return
                chunks.send_nowait((data, flow_length))
        elif isinstance(event, h2.events.ResponseReceived):
            self._head(event.stream_id, event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._h2.idle_frames = 0
                self._ended(stream)
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._h2.idle_frames = 0  # it ends a request of ours
                self._fail(stream, self._reset_error(event), keep_unread=True)
        elif isinstance(event, h2.events.InformationalResponseReceived):
            self._informational(event)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if setting is not None:
                self.max_streams = setting.new_value
                self._owner.capacity_changed(self)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event)

    def _no_progress(self, kind: str) -> None:
        """Count a frame without progress that h2 handed on as an event."""
        try:
            self._h2.no_progress(kind)
        except FloodDetected as exc:
            self._h2.close_connection(exc.error_code)  # queues GOAWAY(ENHANCE_YOUR_CALM)
            raise self._flood_error(exc) from None

    def _reset_error(self, event: h2.events.StreamReset) -> HTTPError:
        code = event.error_code
        error = StreamReset(f"the server reset the stream ({code!r})", host=self.host_port)
        error.error_code = code
        if code == h2.errors.ErrorCodes.REFUSED_STREAM:
            self.refused_streams = True
            error.retry_hint = self._refused_hint()  # never processed: safe to send again
        return error

    def _head_fields(
        self, stream: _Stream, raw: list[tuple[bytes, bytes]]
    ) -> tuple[int, list[str]] | None:
        """A response head's status and fields (flat, as Headers keeps them), checked as
        RFC 9113 (8.2, 8.3) asks; a malformed one resets its stream and fails its request
        (None)."""
        key = tuple(raw)
        checked: tuple[int, list[str], int] | str | None = self._checked_heads.get(key)
        if checked is None:
            checked = _check_head(raw)
            if not isinstance(checked, str) and checked[2] <= CHECKED_HEAD_MAX:
                # Servers send the same heads again and again (and HPACK replays hand us
                # the very same bytes objects, whose hashes are kept): check each once.
                if len(self._checked_heads) >= CHECKED_HEADS:
                    self._checked_heads.clear()
                self._checked_heads[key] = checked
        if isinstance(checked, str):
            error = RemoteProtocolError(f"malformed response head: {checked}", host=self.host_port)
            self._reset(stream, error)
            return None
        status, fields, size = checked
        # 1xx heads count with the final one (as Go 1.23 counts them over HTTP/1.1): a
        # server cannot hold a request with 1xx heads forever.
        earlier = stream.head_bytes
        stream.head_bytes += size
        if stream.head_bytes > self._max_header_bytes:
            # The server ignored our SETTINGS_MAX_HEADER_LIST_SIZE: this stream fails, the
            # connection goes on (the block was decoded whole: HPACK's state is intact).
            what = f"head of {size} bytes (RFC 9113 size)"
            if earlier:
                what = f"heads of {stream.head_bytes} bytes (RFC 9113 size, 1xx included)"
            too_large = ResponseHeaderTooLarge(
                f"HTTP/2 response {what} exceeds "
                f"max_response_header_bytes={self._max_header_bytes}",
                host=self.host_port,
            )
            self._reset(stream, too_large)
            return None
        return status, list(fields)  # each response its own list

    def _head(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not self._first_byte(stream):
            return
        checked = self._head_fields(stream, raw)
        if checked is None:
            return
        status, headers = checked
        self._h2.idle_frames = 0
        promised = self._promised_length(stream, status, headers)
        if promised is None:
            return
        stream.remaining = promised
        body = _H2Body(self, stream)
        stream.body = body
        stream.response = Response(
            status,
            http_version="HTTP/2",
            headers=Headers._trusted(headers),
            request=stream.request,
            stream=body,
            stream_id=stream.stream_id,
            network_stream=self._stream,
        )
        stream.delivered = True
        self.streams_accepted += 1
        if stream.written is not None:  # the head came before the body was all sent
            stream.written.set()
        if stream.continue_event is not None:
            # A final response before 100 Continue: the body is never sent. Our side closes
            # when the response ends (RST_STREAM NO_ERROR, in _ended) or the caller resets it.
            stream.pending_body = None
            stream.continue_event.set()
        stream.head_ready.set()

    def _promised_length(self, stream: _Stream, status: int, headers: list[str]) -> int | None:
        """The body length a response head promises: 0 when it can have no body, -1 when it
        names none; None when its content-length is malformed (then the stream is reset)."""
        if stream.request.method == "HEAD" or status in (204, 304):
            return 0
        promised = -1
        for i in range(0, len(headers), 2):  # names are lowercase (checked)
            if headers[i] == "content-length":
                length = headers[i + 1]  # ASCII digits only: "²" is a digit to str.isdigit
                if not (length.isascii() and length.isdigit()) or 0 <= promised != int(length):
                    error = RemoteProtocolError(
                        f"invalid content-length {length!r}", host=self.host_port
                    )
                    self._reset(stream, error)
                    return None
                promised = int(length)
        return promised

    def _first_byte(self, stream: _Stream) -> bool:
        """False when the stream's hook raised (the stream failed)."""
        if not stream.response_started:
            stream.response_started = True
            if stream.trace and stream.trace.got_first_response_byte:
                return self._fire(stream, stream.trace.got_first_response_byte)
        return True

    def _fire(self, stream: _Stream, hook: Callable[..., object], *args: object) -> bool:
        """Call a trace hook of ``stream`` from the reader. One that raises fails its own
        stream with its error, not the connection the other streams share; then False."""
        try:
            hook(*args)
        except Exception as exc:
            self._reset(stream, exc)
            return False
        return True

    def _informational(self, event: h2.events.InformationalResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        if not self._first_byte(stream):
            return
        checked = self._head_fields(stream, event.headers or [])
        if checked is None:
            return
        code, fields = checked
        trace = stream.trace
        if code == 100:
            if trace and trace.got_100_continue and not self._fire(stream, trace.got_100_continue):
                return
            if stream.continue_event is not None:
                stream.continue_event.set()
                self._release_body(stream)  # now, not when the caller gets to run
        elif trace and trace.got_1xx_response:
            self._fire(stream, trace.got_1xx_response, code, Headers._trusted(fields))

    def _ended(self, stream: _Stream) -> None:
        if stream.remaining > 0:
            error = RemoteProtocolError(
                f"the response body ended {stream.remaining} bytes short of its content-length",
                host=self.host_port,
            )
            self._reset(stream, error)
            return
        trace = stream.trace
        if trace and trace.got_response_end and not self._fire(stream, trace.got_response_end):
            return
        stream.ended = True
        stream.chunks.close()
        if not stream.body_done and not self.closed:
            # Answered before our body was all sent (RFC 9113, 8.1): the server wants no more
            # of it. Our side is still open (h2 counts the stream against the server's limit
            # until it closes), so close it with RST_STREAM(NO_ERROR), as Go does; _finish
            # stops the body.
            try:
                self._h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:  # pragma: no cover - h2 closed it already
                pass
            self._kick()
        if not stream.delivered:  # END_STREAM without a head
            self._fail(
                stream, RemoteProtocolError("stream ended without a response", host=self.host_port)
            )
        self._finish(stream)

    def _refused_hint(self) -> RetryHint:
        """The retry hint of a stream the server never processed: not counted when the
        server processed others on this connection (it is cycling connections)."""
        return RetryHint.REFUSED if self.streams_accepted else RetryHint.NOTHING_WRITTEN

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.goaway = True
        last = event.last_stream_id or 0
        self._goaway_detail = f"the server sent GOAWAY ({event.error_code!r}, last stream {last})"
        # Client stream ids are the odd numbers in order: those up to ``last`` were accepted.
        self.streams_accepted = max(self.streams_accepted, (last + 1) // 2)
        # Whatever the error code, streams up to ``last`` were accepted: they finish, or die
        # with the connection (as Go's transport does).
        for stream_id, stream in list(self._streams.items()):
            if stream_id > last:
                self.refused_streams = True
                error = ReadError(self._goaway_detail, host=self.host_port)
                error.retry_hint = self._refused_hint()  # never processed
                self._fail(stream, error)
        self._owner.capacity_changed(self)
        if not self._streams:
            self.close(CloseReason.SERVER_CLOSED)


class _H2Body:
    """A response body on an HTTP/2 stream; reading acknowledges the data (flow control)."""

    __slots__ = ("_conn", "_stream")

    def __init__(self, conn: HTTP2Connection, stream: _Stream) -> None:
        self._conn = conn
        self._stream = stream

    @property
    def is_consumed(self) -> bool:
        return self._stream.ended

    async def read_chunk(self) -> bytes:
        stream = self._stream
        while True:
            try:
                data, flow_length = await self._next_chunk()
            except anyio.EndOfStream:
                if stream.error is not None:
                    raise stream.error from None
                return b""
            self._conn._consumed(stream, flow_length)
            if data:
                return data if type(data) is bytes else bytes(data)

    async def _next_chunk(self) -> tuple[bytes | bytearray, int]:
        stream = self._stream
        timeout = stream.read_timeout
        if timeout is None:
            return await stream.chunks.receive()
        with anyio.move_on_after(timeout):
            return await stream.chunks.receive()
        error = ReadTimeout(
            f"the response stalled: nothing for read_timeout={timeout}s",
            host=self._conn.host_port,
        )
        self._conn._reset(stream, error)
        raise error

    async def aclose(self) -> None:
        self.abandon()

    def abandon(self) -> None:
        stream = self._stream
        if not stream.ended:
            self._conn._reset(
                stream, ReadError("response body closed before its end", host=self._conn.host_port)
            )
        self._conn._discard_unread(stream)


_: type[Connection] = HTTP2Connection  # mypy checks that it has what the pool uses
