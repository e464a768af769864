"""A TCP byte stream for the asyncio backend that keeps reading on.

anyio's asyncio socket stream resumes the transport's reading before every ``receive`` and
pauses it after, two changes to the event loop's selector per call. A pooled connection's
reader is parked on its socket all the time, so it would pay that on every response for
nothing. This stream leaves reading on and pauses it only when too much is buffered unread
(back-pressure). ``receive`` returns buffered data without suspending, and checkpoints once
every ``CHECKPOINT_EVERY`` such calls in a row, so that a reader fed without pause still
reaches a cancellation point. It is an ``anyio.abc.SocketStream``, so TLS wraps it and every socket
attribute works as usual; under trio, ``_trio_stream`` has the same role.
"""

from __future__ import annotations

import asyncio
import collections
import socket

import anyio
import anyio.abc

from ._conn_common import BIG_READ_SIZE, MAX_CHUNK, READ_SIZE

__all__ = [
    "BIG_READ_SIZE",
    "MAX_CHUNK",
    "READ_SIZE",
    "AsyncioSocketStream",
    "SendRefused",
    "SendsNowait",
    "connect_tcp_asyncio",
]

# READ_SIZE (bytes asked of the socket per read), BIG_READ_SIZE and MAX_CHUNK are _conn_common's:
# the connections use them on any stream, and importing this module imports asyncio.
HIGH_WATER = 1 << 20  # bytes buffered unread before reading pauses
LOW_WATER = 1 << 18
# anyio cancels a task only where it suspends, and ``receive`` does not when data is buffered
# (a trip through the event loop per read would cost a good share of a small request), nor
# ``send`` when the socket takes what it is given. A reader slower than its socket, or a writer
# faster than a peer that keeps up, cancelled (its body closed, the pool closing), could then
# run on for as long as data keeps coming or going. So after this many calls in a row that did
# not wait, one checkpoint, before a byte moves: a counter on the hot path, a loop trip only
# under a continuous feed.
CHECKPOINT_EVERY = 64


class SendRefused(anyio.BrokenResourceError):
    """``send`` found the connection already lost (or, on a pooled connection, the server's
    end of stream): not a byte of its data went out.

    A request whose every send was refused never reached the server, so it may be retried
    (Go counts the bytes a connection actually wrote). The asyncio loop may learn of a close
    before the connection's reader task runs, so the writer can be the first to find out.
    """


class SendsNowait:
    """A TCP stream of asyncpool's own (asyncio's, trio's) that can send without waiting:
    ``send_nowait`` hands over what the socket takes at once and returns the rest. An HTTP/1.1
    caller writes a bodiless request itself with it, without a writer task (see
    ``_h1.connection``)."""

    __slots__ = ()

    def send_nowait(self, item: bytes) -> bytes:
        """Send what can go at once; the bytes not sent (empty: all of them went). Raises as
        ``send`` does, ``SendRefused`` only before a byte went out."""
        raise NotImplementedError

    def unflushed(self) -> bool:
        """Whether the stream still holds bytes it was given that the socket has not taken
        (asyncio's transport keeps them and sends them later; a stream whose ``send_nowait``
        returns the rest holds none)."""
        return False

    def allow_half_close(self) -> None:
        """The stream left the pool (a tunnel, a switch of protocols): it sends on after the
        peer's end of stream, as a socket does (a pooled connection's sends are refused
        then, see ``SendRefused``)."""


class _Protocol(asyncio.Protocol):
    __slots__ = (
        "buffer",
        "buffered",
        "eof",
        "error",
        "read_size",
        "read_waiter",
        "reading_paused",
        "transport",
        "write_waiter",
        "writing_paused",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # What the transport reads at a time (its max_size); 0 for a transport without one
        # (not a selector loop's), whose reads are left as they are.
        self.read_size = 0
        # Reads not received yet; the rest of one split by a smaller receive is a memoryview.
        self.buffer: collections.deque[bytes | memoryview] = collections.deque()
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.error: BaseException | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if hasattr(transport, "max_size"):  # the selector loop's recv size, 256 KiB by default
            transport.max_size = self.read_size = READ_SIZE

    def data_received(self, data: bytes) -> None:
        size, read_size = len(data), self.read_size
        if read_size:
            if size >= read_size:
                if read_size != BIG_READ_SIZE:  # a full read of READ_SIZE: more is waiting
                    self.read_size = self.transport.max_size = BIG_READ_SIZE  # type: ignore[union-attr]
            elif size < READ_SIZE and read_size != READ_SIZE:
                self.read_size = self.transport.max_size = READ_SIZE  # type: ignore[union-attr]
        self.buffer.append(data)
        self.buffered += size
        if self.buffered > HIGH_WATER and not self.reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        # The write side stays open, as a socket's: a stream handed over may send on (see
        # allow_half_close). A pooled connection's reader closes it on the end of stream.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.writing_paused = False
        self._wake_writer()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None:
            self.read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self.write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncioSocketStream(SendsNowait, anyio.abc.SocketStream):
    # What receive_some asks for: a read made already, returned whole (see MAX_CHUNK).
    receive_size = MAX_CHUNK

    def __init__(
        self, transport: asyncio.Transport, protocol: _Protocol, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._loop = loop  # kept: each get_running_loop() is a getpid() call on Python 3.11
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._send_after_eof = False  # (allow_half_close)
        # Calls in a row that returned without waiting, per direction (see CHECKPOINT_EVERY).
        self._unchecked = 0
        self._send_unchecked = 0

    @property
    def _raw_socket(self) -> socket.socket:
        sock: socket.socket = self._transport.get_extra_info("socket")
        return sock

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._protocol.buffer:
            self._unchecked += 1
            if self._unchecked >= CHECKPOINT_EVERY:
                self._unchecked = 0
                # A cancellation point (see CHECKPOINT_EVERY), before a byte is taken: a
                # receive cancelled here takes nothing, and loses nothing.
                await asyncio.sleep(0)
        chunk = self.receive_nowait(max_bytes)
        if chunk is None:
            self._unchecked = 0
            while chunk is None:
                await self.wait_receivable()
                chunk = self.receive_nowait(max_bytes)
        if not chunk:
            raise anyio.EndOfStream
        return chunk

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What ``receive`` would return now, without waiting: None when nothing has arrived
        yet, ``b""`` at the end of the stream (where ``receive`` raises EndOfStream)."""
        protocol = self._protocol
        if not protocol.buffer:
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.eof:
                if protocol.error is not None:
                    raise anyio.BrokenResourceError from protocol.error
                return b""
            return None
        chunk = protocol.buffer.popleft()
        if len(chunk) > max_bytes:
            # A view of what is left, not a copy: a read split into n pieces (TLS asks for
            # 64 KiB at a time) is then copied once, not about n/2 times.
            view = chunk if type(chunk) is memoryview else memoryview(chunk)
            protocol.buffer.appendleft(view[max_bytes:])
            chunk = view[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered < LOW_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk if type(chunk) is bytes else bytes(chunk)

    def wait_receivable(self) -> asyncio.Future[None]:
        """A future done when ``receive_nowait`` may have something new to say. The future
        itself, not a coroutine: a connection's reader parks here between responses, and with
        many connections open every object a park holds is one more for the garbage collector
        to walk. Cancelling the wait cancels the future, which the protocol then ignores."""
        waiter = self._protocol.read_waiter = self._loop.create_future()
        return waiter

    def send_nowait(self, item: bytes) -> bytes:
        """Hand ``item`` to the transport without waiting out back-pressure (the transport
        buffers it all). Raises, before a byte is handed over, as ``send`` does."""
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if (
            protocol.error is not None
            or self._transport.is_closing()
            or (protocol.eof and not self._send_after_eof)  # the server is gone: not retried
        ):
            raise SendRefused from protocol.error
        self._transport.write(item)
        return b""

    def allow_half_close(self) -> None:
        self._send_after_eof = True

    def unflushed(self) -> bool:
        return bool(self._transport.get_write_buffer_size())

    async def send(self, item: bytes) -> None:
        protocol = self._protocol
        self._send_unchecked += 1
        if self._send_unchecked >= CHECKPOINT_EVERY:
            self._send_unchecked = 0
            # A cancellation point (see CHECKPOINT_EVERY), before a byte is handed over: a
            # send cancelled here sends nothing.
            await asyncio.sleep(0)
        self.send_nowait(item)
        if protocol.writing_paused:
            self._send_unchecked = 0  # it waits below
        while protocol.writing_paused and not self._closed:
            waiter = protocol.write_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                protocol.write_waiter = None
        if self._closed:  # closed by another task while this send waited
            raise anyio.ClosedResourceError
        if protocol.error is not None:
            raise anyio.BrokenResourceError from protocol.error

    async def send_eof(self) -> None:
        self._transport.write_eof()

    async def aclose(self) -> None:
        self._closed = True
        transport = self._transport
        transport.close()  # flushes what was written, then closes
        if transport.get_write_buffer_size():
            # The peer is not taking what is buffered, and may never: waiting for the flush
            # would keep the socket open as long. Close it now, as anyio's stream does.
            transport.abort()
        self._protocol._wake_reader()
        self._protocol._wake_writer()  # a send waiting on back-pressure fails


async def connect_tcp_asyncio(
    host: str, port: int, local_host: str | None = None
) -> AsyncioSocketStream:
    """Connect to an IP address (no DNS here), from ``local_host`` if given; raises OSError as
    anyio.connect_tcp does."""
    loop = asyncio.get_running_loop()
    local_addr = None if local_host is None else (local_host, 0)
    transport, protocol = await loop.create_connection(_Protocol, host, port, local_addr=local_addr)
    assert isinstance(transport, asyncio.Transport)
    return AsyncioSocketStream(transport, protocol, loop)
