"""A persistent HTTP/1.1 connection: Go's persistConn, with its readLoop and writeLoop.

Theory of operation
-------------------
A connection owns one byte stream and up to two tasks of the Transport's (its ``TaskSet``):

* the **writer** takes exchanges from ``_write_queue`` (a memory channel) and writes each
  request: the head its caller made (so that the protocol knows the request before the reader
  can parse an answer to it), then the body (after ``100 Continue`` where the request expects
  one). When a write fails after bytes went out, a response the server sent before it stopped
  reading is still the answer: the writer lets the reader find it before the connection
  closes. On asyncpool's own TCP streams (asyncio's and trio's, without TLS: ``SendsNowait``) a
  request without a body is written by its caller instead, in ``round_trip``, with a send that
  never waits (the writer sends what the socket did not take at once), and the writer task is
  started only when a request needs it: most connections never do;
* the **reader** is parked on the socket whenever it is not reading a response. When bytes
  arrive it takes the exchange they answer from ``_read_queue``, parses the head, hands it to
  the caller (who builds the Response) and streams the body into a bounded channel
  (back-pressure). At the end of the body it gives the connection back to its owner (the pool)
  *before* the caller sees the end, so the caller's next request finds it idle.

A server that switches protocols (``101`` to a request with ``Upgrade``, a 2xx to ``CONNECT``)
ends HTTP on the connection: the reader closes it as ``CloseReason.UPGRADED``, which stops the
writer and frees the host slot but leaves the socket open, and delivers the head with an
``UpgradeStream`` over the socket (``Response.upgrade_stream()``). The reader then only waits
until the caller takes the stream (the task ends, the socket is the caller's) or gives the
response up (the task closes the socket, as it does when the Transport closes first).

A caller (``round_trip``) puts its exchange into both channels (or writes it and puts it into
``_read_queue`` only) without awaiting and waits for the head. The channels and events are the
loop-native ones of ``_sync`` (anyio's cost several times more per request). Between requests
the writer waits on its channel and the reader on the socket. Because the reader is always
parked on the socket, a server that closes an idle connection is noticed at once. The idle timeout is the pool's business (one sweeper for all
idle connections), so a connection arms no timer per request.

Invariants
----------
* At most one exchange is in flight: the owner hands a connection to one request at a time, so
  both channels are empty when a request starts (checked: a second one fails loudly).
* ``close`` is synchronous, idempotent, and the only way a connection dies: it cancels both
  tasks (the reader's only when it closed the stream: after a switch of protocols the reader
  still holds it for the caller) and tells the owner exactly once (which frees the host slot).
* Every exchange ends exactly once: with a response, or with an error; one still queued when the
  connection dies is failed by the reader on its way out.
* No await in ``round_trip`` can be cancelled and leave the connection in someone's hands: a
  cancelled caller closes it unless its response was already complete. A closed connection
  writes nothing more: the writer ends before it takes another exchange, even one already
  queued (a request whose caller gave up never reaches the server).
* A connection goes back to its owner only once the whole request is out: a server can answer
  before it has read it all (an early answer, to a head or body it stopped reading), and a
  connection whose writer is still sending, or whose stream still holds bytes the socket has
  not taken, would make the next request wait behind them. As Go's ``wroteRequest``, the reader
  gives the writer a moment (``MAX_WRITE_WAIT_BEFORE_REUSE``), then closes it.

A failure on a reused connection carries a ``RetryHint`` for the pool: ``NOTHING_WRITTEN``
when not a byte of the request went out, ``NO_RESPONSE`` when the server closed the connection
before a byte of response. What this module shares with the HTTP/2 one (reading, waiting for a
head, ``conn_closed``, request bodies, the ``Connection`` protocol) is in ``_conn_common``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Final, Literal, Protocol

import anyio
import anyio.abc

from .._asyncio_stream import MAX_CHUNK, AsyncioSocketStream, SendRefused, SendsNowait
from .._conn_common import (
    CloseReason,
    Connection,
    HeadTimer,
    RetryHint,
    WriteClock,
    closing_body,
    head_timeout,
    read_error,
    receive_some,
    report_closed,
)
from .._errors import (
    HTTPError,
    PoolClosed,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ServerDisconnected,
    WriteError,
)
from .._models import Headers, Request, Response
from .._sync import SET_EVENT, Channel, Event, event_factory
from .._tasks import Spawner
from .._trace import WROTE_REQUEST_OK, ClientTrace, WroteRequestInfo
from .._upgrade import UpgradeStream
from .protocol import (
    END_OF_MESSAGE,
    NEED_DATA,
    Informational,
    ResponseHead,
    make_protocol,
)

__all__ = [
    "ConnOwner",
    "HTTP11Connection",
]

BODY_CHANNEL_SIZE = 4  # chunks the reader may run ahead of a slow body reader
MAX_WRITE_WAIT_BEFORE_REUSE = 0.05  # seconds, as Go's maxWriteWaitBeforeConnReuse
# After a failed write, how long the reader may take to find a response that came before the
# failure: the socket is broken, so its read ends at once; this only bounds odd cases.
RESPONSE_AFTER_WRITE_ERROR_WAIT = 1.0

# Body kinds, decided once per request.
_EXPECTS_CONTINUE = "100-continue"


class ConnOwner(Protocol):
    """What a connection needs from the pool that owns it (the Transport's private owner object:
    each call is one pool decision, queued when it arrives while another's actions run)."""

    def release(self, conn: HTTP11Connection, trace: ClientTrace | None) -> None:
        """A response ended and the connection may carry another request."""

    def conn_closed(self, conn: HTTP11Connection) -> None:
        """The connection closed (called exactly once)."""


class _Exchange:
    """One request and its response, shared by the caller, the writer and the reader."""

    __slots__ = (
        "body",
        "body_sent",
        "continue_event",
        "continue_refused",
        "error",
        "head",
        "head_fields",
        "head_ready",
        "headers",
        "http_version",
        "read_timeout",
        "reason_phrase",
        "request",
        "response_started",
        "reused",
        "status_code",
        "trace",
        "unsent",
        "whole_body",
        "woken",
        "write_done",
        "write_error",
        "written",
        "wrote_any",
    )

    def __init__(
        self,
        request: Request,
        headers: list[tuple[str, str]],
        trace: ClientTrace | None,
        reused: bool,
        new_event: Callable[[], Event],
        *,
        head_timer: HeadTimer | None,
        expects_continue: bool,
    ) -> None:
        self.request = request
        self.headers = headers
        self.trace = trace
        self.reused = reused
        self.head_ready = new_event()
        # With a timeout that counts from the write (head_timer: the connection's, shared).
        self.written = None if head_timer is None else WriteClock(self.head_ready, head_timer)
        self.continue_event = new_event() if expects_continue else None
        self.continue_refused = False
        self.head = b""  # made by the caller for the writer to send (see _writes_inline)
        self.unsent: bytes | None = None  # a head its caller began to write: the rest
        self.read_timeout: float | None = None  # the longest wait for the server mid-response
        # The response as the reader hands it over: the head, and the body whole or streaming.
        # The caller builds the Response. What a reader's turn allocates for others to free adds
        # up over the batch of readers the loop runs together (hundreds with 1,000 requests in
        # flight) and can set off young collections, which then find every request in flight
        # alive (benchmarks/README.md has the counts); what the caller allocates and frees
        # balances within its own turns.
        self.status_code = 0
        self.reason_phrase = self.http_version = ""
        self.head_fields: list[str] | None = None  # set (never None again) on delivery
        self.whole_body: bytes | None = None
        self.body: _StreamingBody | None = None
        self.error: BaseException | None = None
        self.write_done: Event | None = None  # made by a reader that waits for the writer
        # Writing failed after bytes went out; the reader may still find the server's answer.
        self.write_error: WriteError | None = None
        self.woken: Event | None = None  # made by that writer: set with head_ready
        # Every byte of the request is out (set by whoever wrote the last of them: the writer,
        # or the caller that wrote a bodiless request whole). The protocol calls a request
        # complete once its bytes are made, before they are sent; a server may answer earlier.
        self.body_sent = False
        self.wrote_any = False  # the writer handed (or may have handed) bytes to the socket
        self.response_started = False  # the reader saw at least one byte of the response

    @property
    def finished(self) -> bool:
        """The caller no longer depends on the connection for this exchange."""
        if self.error is not None:
            return True
        if self.head_fields is None:  # not delivered yet
            return False
        return self.body is None or self.body.is_consumed

    def deliver(self, head: ResponseHead, body: bytes | _StreamingBody) -> None:
        # The head's fields, not the head: it dies with the reader's turn.
        self.status_code, self.reason_phrase, self.http_version, self.head_fields = head
        if isinstance(body, bytes):
            self.whole_body = body
        else:
            self.body = body
        self._wake()

    def fail(self, error: BaseException) -> None:
        """End the exchange with ``error``, wherever it is (waiting for its head or mid-body)."""
        if self.error is not None:
            return
        if self.head_fields is None:  # not delivered yet
            self.error = error
            self._wake()
        elif self.body is not None and not self.body.is_consumed:
            self.error = error
            self.body.fail(error)

    def _wake(self) -> None:
        self.head_ready.set()
        # The caller waits on what the event's wait() gave (a bare future on asyncio), not on
        # the event: let it die here, in the reader's turn (see head_fields above).
        self.head_ready = SET_EVENT
        written = self.written
        if written is not None and written.written_at is None:  # (no call once written)
            written.set()
        if self.continue_event is not None:
            self.continue_event.set()
        if self.woken is not None:
            self.woken.set()


class HTTP11Connection:
    """One HTTP/1.1 connection in the pool. See the module docstring."""

    # Slots, here and in the stream's protocol: with a thousand connections each request finds
    # its connection's memory cold, and slots are fewer cache lines to fetch than an instance
    # dict (benchmarks/README.md).
    __slots__ = (
        "_absolute_form",
        "_expect_continue_timeout",
        "_head_timer",
        "_new_event",
        "_nowait_stream",
        "_owner",
        "_protocol",
        "_read_queue",
        "_reader_scope",
        "_stream",
        "_tasks",
        "_upgraded",
        "_write_queue",
        "_writer_scope",
        "close_error",
        "close_why",
        "closed",
        "expires_at",
        "handed_out",
        "host_port",
        "idle_at",
        "key",
        "local_address",
        "remote_address",
        "requests_started",
        "trace",
    )
    protocol: Final[Literal["HTTP/1.1"]] = "HTTP/1.1"  # the pool tells the two kinds apart by it

    def __init__(
        self,
        owner: ConnOwner,
        stream: anyio.abc.ByteStream,
        *,
        key: str,
        host_port: str,
        max_header_bytes: int,
        expect_continue_timeout: float | None,
        parser: str = "h11",
        local_address: tuple[object, ...] | None = None,
        remote_address: tuple[object, ...] | None = None,
        absolute_form: bool = False,
    ) -> None:
        # Immutable after construction.
        self.key = key
        # A connection to a forward proxy: request targets in absolute form (RFC 9112, 3.2.2).
        self._absolute_form = absolute_form
        self.host_port = host_port
        self.local_address = local_address
        self.remote_address = remote_address
        self._owner = owner
        self._stream = stream
        # The stream when its callers can write bodiless requests themselves (_writes_inline).
        self._nowait_stream = stream if isinstance(stream, SendsNowait) else None
        self._expect_continue_timeout = expect_continue_timeout
        # The head waits' timer (see _conn_common), made for the first request with a timeout.
        self._head_timer: HeadTimer | None = None
        self._protocol = make_protocol(parser, host_port, max_header_bytes=max_header_bytes)

        # Owned by the pool, changed only in its synchronous methods: when the connection
        # entered the idle list, or None while it is not there.
        self.idle_at: float | None = None
        self.handed_out = 0  # requests the pool handed it out for
        # The end of its lifetime (max_conn_lifetime), set by the Transport before the pool
        # sees it; None: no end.
        self.expires_at: float | None = None

        # Owned by the connection.
        self.requests_started = 0  # by round_trip; > 0 means reused (Go's isReused)
        self.closed = False
        self.close_why: CloseReason | None = None
        self.close_error: BaseException | None = None
        # The trace of the request that last used the connection: told when it closes.
        self.trace: ClientTrace | None = None
        self._new_event = event_factory()
        self._read_queue: Channel[_Exchange] = Channel(self._new_event)
        # The writer's, made when it starts (see start).
        self._write_queue: Channel[_Exchange] | None = None
        self._writer_scope: anyio.CancelScope | None = None
        self._reader_scope = anyio.CancelScope()
        # The stream handed over after a switch of protocols (see _switch_protocols).
        self._upgraded: UpgradeStream | None = None
        # Where the writer task is started, until it is (None before start() and after).
        self._tasks: Spawner | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("idle" if self.idle_at is not None else "active")
        return f"<HTTP11Connection {self.key} {state} requests={self.requests_started}>"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, tasks: Spawner) -> None:
        """Start the reader task (in the Transport's ``TaskSet``), and the writer, on a stream
        that sends without waiting only once a request needs it (see ``_writes_inline``)."""
        self._tasks = tasks
        if self._nowait_stream is None:
            self._start_writer()
        tasks.start_soon(self._read_loop, name=f"asyncpool reader {self.key}")

    def _start_writer(self) -> Channel[_Exchange]:
        """Start the writer task, with its channel and scope (none of them made before: most
        connections never need them)."""
        tasks, self._tasks = self._tasks, None
        assert tasks is not None, "the writer starts once, after start()"
        queue = self._write_queue = Channel(self._new_event)
        scope = self._writer_scope = anyio.CancelScope()
        if self.closed:  # as close() leaves them: the task only ends
            queue.close()
            scope.cancel()
        tasks.start_soon(self._write_loop, name=f"asyncpool writer {self.key}")
        return queue

    def close(self, why: CloseReason, error: BaseException | None = None) -> None:
        """Close the connection now; synchronous and idempotent. Both tasks end soon after."""
        if self.closed:
            return
        self.closed = True
        self.close_why, self.close_error = why, error
        self._read_queue.close()
        if why is not CloseReason.UPGRADED:  # the reader keeps the stream for the caller
            self._reader_scope.cancel()
        if self._write_queue is not None and self._writer_scope is not None:
            self._write_queue.close()
            self._writer_scope.cancel()
        self._owner.conn_closed(self)
        report_closed(self.trace, self, why, error)

    # -- the caller's side --------------------------------------------------------------------

    def _new_head_timer(self) -> HeadTimer:
        # (An event of the loop's kind, made to tell whether a timer can wake its waiter.)
        timer = self._head_timer = HeadTimer(self._new_event(), shared=True)
        return timer

    async def round_trip(
        self,
        request: Request,
        headers: list[tuple[str, str]],
        *,
        trace: ClientTrace | None,
        response_header_timeout: float | None,
        read_timeout: float | None = None,
    ) -> Response:
        """Send ``request`` (with the wire ``headers`` the transport prepared) and wait for the
        response head. The body is read later through the response."""
        expects_continue = (
            self._expect_continue_timeout is not None
            and request.content
            and any(
                k.lower() == "expect" and v.lower() == _EXPECTS_CONTINUE
                for k, v in request.headers._pairs()
            )
        )
        exchange = _Exchange(
            request,
            headers,
            trace,
            self.requests_started > 0,
            self._new_event,
            head_timer=(
                None
                if response_header_timeout is None and read_timeout is None
                else self._head_timer or self._new_head_timer()
            ),
            expects_continue=bool(expects_continue),
        )
        exchange.read_timeout = read_timeout
        assert not (self._read_queue or self._write_queue), f"{self!r} given two requests"
        self.requests_started += 1
        self.trace = trace
        try:
            self._read_queue.send_nowait(exchange)
            if not self._writes_inline(exchange):
                queue = self._write_queue
                (self._start_writer() if queue is None else queue).send_nowait(exchange)
        except anyio.ClosedResourceError:
            raise self._error_for(exchange) from None
        try:
            written = exchange.written
            if written is None:  # no timeout: just the head
                await exchange.head_ready.wait()
            else:
                head_ready = exchange.head_ready
                try:
                    await written.wait(head_ready, response_header_timeout, read_timeout)
                finally:
                    written.end()
                if exchange.head_ready is not SET_EVENT:  # not woken (``_wake``): timed out
                    timeout = head_timeout(response_header_timeout, read_timeout, self.host_port)
                    exchange.fail(timeout)
                    self.close(CloseReason.ERROR, timeout)
        except BaseException:
            # Cancelled: unless the exchange already ended cleanly, nobody can tell where the
            # connection is in the protocol any more (a body nobody will read included).
            if not exchange.finished:
                self.close(
                    CloseReason.CANCELLED, ReadError("request cancelled", host=self.host_port)
                )
            elif self._upgraded is not None:  # switched protocols: nobody will take it now
                self._upgraded._abandon()
            raise
        if exchange.head_fields is None:
            assert exchange.error is not None
            raise exchange.error
        # A body failure since delivery surfaces when the body is read.
        body: _CompleteBody | _StreamingBody
        if exchange.whole_body is not None:
            body = _CompleteBody(exchange.whole_body)
        else:
            assert exchange.body is not None
            body = exchange.body
        return Response(
            exchange.status_code,
            reason_phrase=exchange.reason_phrase,
            http_version=exchange.http_version,
            headers=Headers._trusted(exchange.head_fields),
            request=request,
            stream=body,
            network_stream=self._stream,
            upgraded=self._upgraded,
        )

    def _error_for(self, exchange: _Exchange, cause: BaseException | None = None) -> BaseException:
        """The error an exchange fails with when the connection closes under it (by default
        for the reason it was closed with)."""
        if cause is None:
            if self.close_why is CloseReason.POOL_CLOSED:
                return PoolClosed("the Transport closed during the request", host=self.host_port)
            cause = self.close_error
        if exchange.write_error is not None and not exchange.response_started:
            return exchange.write_error  # no answer came: the write failed first
        reason = cause
        detail = reason.detail if isinstance(reason, HTTPError) else f"closed: {self.close_why}"
        if exchange.response_started:
            return ReadError(f"connection lost mid-response ({detail})", host=self.host_port)
        error: HTTPError
        if not exchange.wrote_any:
            error = WriteError(
                f"connection closed before the request was sent ({detail})", host=self.host_port
            )
            error.retry_hint = RetryHint.NOTHING_WRITTEN if exchange.reused else None
        else:
            if exchange.reused:
                detail = f"{detail} (on a reused connection)"
            error = ServerDisconnected(detail, host=self.host_port)
            error.retry_hint = RetryHint.NO_RESPONSE if exchange.reused else None
        return error

    # -- writing ---------------------------------------------------------------------------------

    def _writes_inline(self, exchange: _Exchange) -> bool:
        """Make the request's head here, in the caller's turn, and write a request without a
        body here too when the stream sends without waiting (``SendsNowait``: a head need not
        wait out back-pressure). True when written, or failed with the exchange (and the
        connection) ended; False leaves the rest to the writer task: the head (``head``), or the
        bytes the socket did not take of it (``unsent``). The head is made before the writer or
        the reader runs: a server may answer before the writer's turn, and the protocol must
        have the request before it reads an answer (h11's state machine failed otherwise).
        Writing here spares a task switch a request, and a connection that only carries such
        requests its writer task (its coroutines, scopes and futures; the reader then finds the
        exchange in ``_read_queue`` alone)."""
        stream = self._nowait_stream
        try:
            head = self._request_head(exchange)
            if stream is None or exchange.request.content is not None:
                exchange.head = head
                return False
            head += self._protocol.end_of_body()
            unsent = stream.send_nowait(head)  # raises only before a byte is handed over
            if unsent:  # trio's socket took only part of it, or none: the writer sends the rest
                exchange.wrote_any = len(unsent) < len(head)
                exchange.unsent = unsent
                return False
            exchange.wrote_any = True
            trace = exchange.trace
            if trace and trace.wrote_request:
                trace.wrote_request(WROTE_REQUEST_OK)
        except Exception as exc:
            error = self._write_failure(exchange, exc)
            exchange.fail(error)
            self.close(CloseReason.ERROR, error)
            return True
        exchange.body_sent = True
        if exchange.written is not None:
            exchange.written.set()
        return True

    def _write_failure(self, exchange: _Exchange, exc: Exception) -> BaseException:
        """What a failed write ends its exchange with, once the trace is told."""
        error: BaseException = exc
        if isinstance(exc, (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)):
            error = WriteError(f"writing the request failed: {exc!r}", host=self.host_port)
        if isinstance(error, WriteError) and not exchange.wrote_any:
            error.retry_hint = RetryHint.NOTHING_WRITTEN if exchange.reused else None
        trace = exchange.trace
        if trace and trace.wrote_request:
            try:
                trace.wrote_request(WroteRequestInfo(error))
            except Exception as hook_error:  # it fails the request, not the pool
                error = hook_error
        return error

    # -- the writer task (Go's writeLoop) -------------------------------------------------------

    async def _write_loop(self) -> None:
        queue, scope = self._write_queue, self._writer_scope
        assert queue is not None and scope is not None
        with scope:
            while True:
                await queue.wait_receivable()  # parked here between requests
                if self.closed:
                    # Closed meanwhile (a cancelled caller, an error, the pool): a queued
                    # exchange is failed by the reader; its request must not go out now. The
                    # wait above returns at once with one queued, and a send need not
                    # suspend, so the cancelled scope alone would not stop it.
                    return
                try:
                    exchange = queue.receive_nowait()
                except anyio.EndOfStream:
                    return
                try:
                    await self._write_request(exchange)
                except Exception as exc:
                    error = self._write_failure(exchange, exc)
                    if isinstance(error, WriteError) and await self._response_after_write_error(
                        exchange, error
                    ):
                        return  # the reader has the answer and closes the connection after it
                    exchange.fail(error)
                    self.close(CloseReason.ERROR, error)
                    return
                exchange.body_sent = True
                if exchange.written is not None:
                    exchange.written.set()
                if exchange.write_done is not None:
                    exchange.write_done.set()
                # Not held while parked: the request (its body too) is freed with its response,
                # in the turn of the caller that allocates the next one. Freed here instead, it
                # left each caller's turn objects up, and a batch of callers set off most young
                # collections at c=1000 (benchmarks/README.md).
                del exchange

    async def _response_after_write_error(self, exchange: _Exchange, error: WriteError) -> bool:
        """Whether the server answered a request it stopped reading (a 413 to an upload, then
        a reset): that answer, not the write error, is the result, as Go's persistConn prefers
        it. It came before the reset, so the reader finds it before the connection's end."""
        if not exchange.wrote_any:
            return False  # nothing reached the server: nothing it could answer
        exchange.write_error = error
        if exchange.write_done is not None:
            exchange.write_done.set()  # the reader waits for the writer: it is done
        if exchange.head_fields is None and exchange.error is None:
            exchange.woken = self._new_event()  # head_ready has its one waiter: the caller
            with anyio.move_on_after(RESPONSE_AFTER_WRITE_ERROR_WAIT):
                await exchange.woken.wait()
        return exchange.head_fields is not None

    async def _send(self, exchange: _Exchange, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except SendRefused:
            raise  # not a byte went out: the server cannot have seen the request
        except BaseException:
            exchange.wrote_any = True  # some of it may have gone out
            raise
        exchange.wrote_any = True

    def _request_head(self, exchange: _Exchange) -> bytes:
        request, trace = exchange.request, exchange.trace
        target = request.target
        if self._absolute_form and target.startswith("/"):
            target = f"{request.url.scheme}://{request.url.host_header}{target}"
        head = self._protocol.request_head(request.method, target, exchange.headers)
        if trace:
            if trace.wrote_header_field:
                for name, value in exchange.headers:
                    trace.wrote_header_field(name, [value])
            if trace.wrote_headers:
                trace.wrote_headers()
        return head

    async def _write_request(self, exchange: _Exchange) -> None:
        request, trace, protocol = exchange.request, exchange.trace, self._protocol
        if exchange.unsent is not None:  # the rest of what its caller began to write
            await self._send(exchange, exchange.unsent)
            exchange.unsent = None
            if trace and trace.wrote_request:
                trace.wrote_request(WROTE_REQUEST_OK)
            return
        head, exchange.head = exchange.head, b""
        content = request.content
        if exchange.continue_event is not None:
            await self._send(exchange, head)
            if trace and trace.wait_100_continue:
                trace.wait_100_continue()
            # 0 waits not at all (Go: "Zero ... causes the body to be sent immediately").
            with anyio.move_on_after(self._expect_continue_timeout):
                await exchange.continue_event.wait()
            if exchange.continue_refused or exchange.error is not None:
                return  # a final response came first: the body is never sent
            head = b""
        if isinstance(content, bytes):
            await self._send(exchange, head + protocol.body_chunk(content) + protocol.end_of_body())
        elif isinstance(content, AsyncIterable):
            if head:
                await self._send(exchange, head)
            async with closing_body(content) as chunks:
                async for chunk in chunks:
                    if chunk:
                        await self._send(exchange, protocol.body_chunk(chunk))
            await self._send(exchange, protocol.end_of_body())
        else:
            await self._send(exchange, head + protocol.end_of_body())
        if trace and trace.wrote_request:
            trace.wrote_request(WROTE_REQUEST_OK)

    # -- the reader task (Go's readLoop) --------------------------------------------------------

    async def _read_loop(self) -> None:
        exchange: _Exchange | None = None
        # asyncio's plain TCP stream lets the reader park on a bare future: a park lasts as long
        # as a request is in flight, and the two coroutines of receive_some would be two more
        # objects per request for the garbage collector to walk when many are in flight.
        stream = self._stream if type(self._stream) is AsyncioSocketStream else None
        try:
            with self._reader_scope:
                while True:
                    if stream is None:
                        data = await receive_some(self._stream, self.host_port)  # parked here
                    else:
                        while (data_now := receive_nowait(stream, self.host_port)) is None:
                            await stream.wait_receivable()  # parked here
                        data = data_now
                    try:
                        exchange = self._read_queue.receive_nowait()
                    except anyio.WouldBlock:
                        if data:
                            message = "unsolicited response on an idle connection"
                            self.close(
                                CloseReason.ERROR, RemoteProtocolError(message, host=self.host_port)
                            )
                        else:
                            message = "server closed the idle connection"
                            self.close(
                                CloseReason.SERVER_CLOSED,
                                ServerDisconnected(message, host=self.host_port),
                            )
                        return
                    if not await self._read_response(exchange, data):
                        return
                    exchange = None
        except Exception as exc:  # a protocol error, or a trace hook that raised
            why = CloseReason.SERVER_CLOSED if isinstance(exc, ServerDisconnected) else None
            self.close(why or CloseReason.ERROR, exc)
            if exchange is not None:
                exchange.fail(exc)
        finally:
            self.close(CloseReason.ERROR, ReadError("connection closed", host=self.host_port))
            if exchange is not None:
                exchange.fail(self._error_for(exchange))
            while True:
                try:
                    queued = self._read_queue.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                queued.fail(self._error_for(queued))
            upgraded = self._upgraded
            if upgraded is None or not upgraded.taken:
                if upgraded is not None:
                    upgraded._abandon()  # closed here: upgrade_stream() says so, from now on
                await anyio.aclose_forcefully(self._stream)

    async def _read_response(self, exchange: _Exchange, data: bytes) -> bool:
        """Read one response; True when the connection may carry another request."""
        protocol, trace = self._protocol, exchange.trace
        if not data:
            cause = ServerDisconnected(
                "server closed the connection before responding", host=self.host_port
            )
            raise self._error_for(exchange, cause)
        exchange.response_started = True
        if trace and trace.got_first_response_byte:
            trace.got_first_response_byte()
        protocol.feed(data)

        # The head, after any 1xx.
        while True:
            event = protocol.next_event()
            if event is NEED_DATA:
                protocol.feed(await self._receive_more(exchange))
            elif type(event) is Informational:
                self._informational(exchange, event)
            elif type(event) is ResponseHead:
                break
            else:  # pragma: no cover - h11 only emits the above before a head
                raise RemoteProtocolError(
                    f"unexpected {event!r} before the head", host=self.host_port
                )
        head = event
        if exchange.continue_event is not None and not exchange.continue_event.is_set():
            exchange.continue_refused = True
            exchange.continue_event.set()
        if protocol.switched:
            await self._switch_protocols(exchange, head)
            return False

        # Whatever of the body came with the head.
        chunks: list[bytes] = []
        while True:
            event = protocol.next_event()
            if type(event) is bytes:
                chunks.append(event)
            elif event is END_OF_MESSAGE:
                if trace and trace.got_response_end:
                    trace.got_response_end()
                whole = b"".join(chunks) if len(chunks) > 1 else chunks[0] if chunks else b""
                # Free the connection before the caller even sees the head, so that its next
                # request finds it.
                stream = self._nowait_stream  # (what _unflushed says, without its call)
                if exchange.body_sent and (stream is None or not stream.unflushed()):
                    reusable = self._start_next_cycle(exchange)
                elif not self._protocol.request_complete:
                    # Answered while the body is still being produced: the caller need not
                    # wait for it (the body may even wait for the response).
                    exchange.deliver(head, whole)
                    return await self._finish_cycle(exchange)
                else:
                    # Its last bytes are being written (on trio the writer may only be in its
                    # last checkpoint; or the server stopped reading): wait for the writer
                    # first, as Go does before it hands over a response without a body.
                    reusable = await self._finish_cycle(exchange)
                if exchange.error is None:  # else a put_idle_conn hook raised: that is the answer
                    exchange.deliver(head, whole)
                return reusable
            else:
                break

        if self.closed:
            return False  # the caller gave up while this task was being scheduled
        # Stream the rest through a bounded channel.
        body_channel: Channel[bytes] = Channel(self._new_event, BODY_CHANNEL_SIZE)
        body = _StreamingBody(self, chunks, body_channel)
        exchange.deliver(head, body)
        try:
            while True:
                event = protocol.next_event()
                if type(event) is bytes:
                    try:
                        await body_channel.send(event)
                    except anyio.BrokenResourceError:
                        return False  # the caller closed the body early (and closed us)
                elif event is NEED_DATA:
                    protocol.feed(await self._receive_more(exchange))
                elif event is END_OF_MESSAGE:
                    if trace and trace.got_response_end:
                        trace.got_response_end()
                    reusable = await self._finish_cycle(exchange)
                    body.is_consumed = True  # from the pool's view: nothing more to read
                    return reusable
                else:  # pragma: no cover
                    raise RemoteProtocolError(
                        f"unexpected {event!r} in a body", host=self.host_port
                    )
        finally:
            body_channel.close()

    async def _switch_protocols(self, exchange: _Exchange, head: ResponseHead) -> None:
        """The server switched protocols (a 101 to an Upgrade request, a 2xx to CONNECT): the
        connection leaves the pool (its host slot freed at once) and its stream goes to the
        caller through the response. Until the caller takes it, this task keeps it, and
        closes it if the caller never does (the response closed or collected, the Transport
        closing); taken, the task ends without a further touch of the socket."""
        if exchange.write_error is not None:  # the server stopped reading the request
            raise exchange.write_error
        if not (exchange.body_sent or exchange.continue_refused):
            # As in _finish_cycle: the request's last bytes may still be on their way out.
            exchange.write_done = self._new_event()
            with anyio.move_on_after(MAX_WRITE_WAIT_BEFORE_REUSE):
                await exchange.write_done.wait()
            if not exchange.body_sent:
                raise RemoteProtocolError(
                    "the server switched protocols before the request body was sent",
                    host=self.host_port,
                )
        if self.closed:
            return  # the caller gave up meanwhile
        settled = self._new_event()
        leading = self._protocol.switched_data()
        if self._nowait_stream is not None:
            self._nowait_stream.allow_half_close()  # its owner may send after the server's FIN
        self._upgraded = UpgradeStream(self._stream, leading, self.host_port, settled)
        self.close(CloseReason.UPGRADED)  # stops the writer; the owner frees the host slot
        exchange.deliver(head, b"")
        await settled.wait()

    async def _receive_more(self, exchange: _Exchange) -> bytes:
        """More of a response the protocol is waiting for, within ``read_timeout``."""
        timeout = exchange.read_timeout
        if timeout is None:
            return await receive_some(self._stream, self.host_port)
        with anyio.move_on_after(timeout):
            return await receive_some(self._stream, self.host_port)
        raise ReadTimeout(
            f"the response stalled: nothing for read_timeout={timeout}s", host=self.host_port
        )

    def _informational(self, exchange: _Exchange, event: Informational) -> None:
        trace = exchange.trace
        if event.status_code == 100:
            if trace and trace.got_100_continue:
                trace.got_100_continue()
            if exchange.continue_event is not None:
                exchange.continue_event.set()
        elif trace and trace.got_1xx_response:
            trace.got_1xx_response(event.status_code, Headers._trusted(event.headers))

    async def _finish_cycle(self, exchange: _Exchange) -> bool:
        """At the end of a response: back to the owner if both sides allow another request."""
        if exchange.write_error is not None:  # the server stopped reading the request
            self.close(CloseReason.NOT_REUSABLE)
            return False
        if not (exchange.body_sent or exchange.continue_refused or exchange.error):
            # Answered before the request body was all sent (Go's wroteRequest): give the
            # writer a moment to finish rather than throw the connection away.
            exchange.write_done = self._new_event()
            with anyio.move_on_after(MAX_WRITE_WAIT_BEFORE_REUSE):
                await exchange.write_done.wait()
            if not exchange.body_sent:  # a body still going out, made whole or not
                self.close(CloseReason.NOT_REUSABLE)
                return False
        if self._unflushed():
            # Written, but the stream holds bytes the socket has not taken: the server
            # answered before it read them (had it read the request, they would be out).
            self.close(CloseReason.NOT_REUSABLE)
            return False
        return self._start_next_cycle(exchange)

    def _unflushed(self) -> bool:
        stream = self._nowait_stream
        return stream is not None and stream.unflushed()

    def _start_next_cycle(self, exchange: _Exchange) -> bool:
        """The request and its response are both complete: release or close."""
        if self._protocol.start_next_cycle():
            if self._protocol.has_buffered_data:
                error = RemoteProtocolError(
                    "unsolicited bytes after a response", host=self.host_port
                )
                self.close(CloseReason.ERROR, error)
                return False
            try:
                self._owner.release(self, exchange.trace)
            except Exception as exc:
                # A put_idle_conn hook raised: that fails its request, but the connection is
                # pooled already, maybe in another request's hands: not this one's to close.
                exchange.fail(exc)
            return not self.closed
        self.close(CloseReason.NOT_REUSABLE)
        return False


def receive_nowait(stream: AsyncioSocketStream, host_port: str) -> bytes | None:
    """As ``receive_some`` without waiting: None when nothing has arrived yet."""
    try:
        return stream.receive_nowait(MAX_CHUNK)
    except (OSError, anyio.BrokenResourceError) as exc:
        raise read_error(exc, host_port) from exc


class _CompleteBody:
    """A body that arrived whole with its head; the connection is already free."""

    __slots__ = ("_data",)
    is_consumed = True

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read_chunk(self) -> bytes:
        data, self._data = self._data, b""
        return data

    async def aclose(self) -> None:
        self._data = b""

    def abandon(self) -> None:
        self._data = b""


class _StreamingBody:
    """A body the reader task streams in; closing it before its end closes the connection."""

    __slots__ = ("_conn", "_error", "_initial", "_receive", "is_consumed")

    def __init__(
        self,
        conn: HTTP11Connection,
        initial: list[bytes],
        receive: Channel[bytes],
    ) -> None:
        self._conn = conn
        self._initial = initial
        self._receive = receive
        self._error: BaseException | None = None
        self.is_consumed = False  # set by the reader at the end of the message

    def fail(self, error: BaseException) -> None:
        self._error = error

    async def read_chunk(self) -> bytes:
        if self._initial:
            return self._initial.pop(0)
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            if self._error is not None:
                raise self._error from None
            return b""
        except anyio.ClosedResourceError:
            raise ReadError("the response body was closed", host=self._conn.host_port) from None

    async def aclose(self) -> None:
        self.abandon()

    def abandon(self) -> None:
        if not self.is_consumed:
            error = ReadError("response body closed before its end", host=self._conn.host_port)
            self._conn.close(CloseReason.BODY_CLOSED_EARLY, error)
        self._receive.close_receiver()


_: type[Connection] = HTTP11Connection  # mypy checks that it has what the pool uses
