"""The trio byte stream that calls the socket directly (trio only: under asyncio the pool uses
its own asyncio stream): data in order, EOF, errors as anyio's, closes from another task, and
cancellation points for a task that never has to wait."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from asyncpool._asyncio_stream import CHECKPOINT_EVERY, SendRefused
from asyncpool._trio_stream import TrioSocketStream, connect_tcp_trio
from tests.servers import open_blaster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["trio"])]

PAYLOAD = bytes(range(256)) * (4 << 20 >> 8)  # 4 MiB: more than the socket buffers hold


@pytest.fixture
async def blaster(anyio_backend: str) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that sends PAYLOAD at once, then records what it receives until EOF."""
    async with open_blaster(PAYLOAD) as port_and_received:
        yield port_and_received


async def test_data_in_order_then_eof_and_errors_after_close(
    blaster: tuple[int, list[bytes]],
) -> None:
    port, received = blaster
    stream = await connect_tcp_trio("127.0.0.1", port)
    assert isinstance(stream, anyio.abc.SocketStream)
    assert stream.extra(anyio.abc.SocketAttribute.remote_port) == port
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    with pytest.raises(ValueError):
        await stream.receive(0)
    data = bytearray()
    while len(data) < len(PAYLOAD):
        chunk = await stream.receive(100_000)
        assert len(chunk) <= 100_000
        data += chunk
    assert bytes(data) == PAYLOAD
    await stream.send(b"ping")
    await stream.send_eof()
    await wait_until(lambda: b"".join(received) == b"ping")
    with pytest.raises(anyio.EndOfStream):  # the server closes after our EOF
        await stream.receive()
    await stream.aclose()
    assert raw.fileno() == -1
    with pytest.raises(anyio.ClosedResourceError):
        await stream.send(b"late")
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    await stream.aclose()  # idempotent


async def test_a_peer_that_resets_the_connection() -> None:
    # A read finds the reset (BrokenResourceError, from the OSError); a send after it gets
    # not a byte out, which the connection may retry on: SendRefused.
    reset = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # with a zero linger: a reset
        reset.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            stream = await connect_tcp_trio(
                "127.0.0.1", listener.extra(anyio.abc.SocketAttribute.local_port)
            )
            await reset.wait()
            with pytest.raises(anyio.BrokenResourceError) as caught:
                await stream.receive()
            assert isinstance(caught.value.__cause__, ConnectionResetError)
            with pytest.raises(SendRefused):
                await stream.send(b"x")
            await stream.aclose()
            tg.cancel_scope.cancel()


async def test_aclose_from_another_task_fails_a_waiting_receive_and_send() -> None:
    # The peer neither sends nor reads: a receive waits for data, a send of more than the
    # socket buffers take waits for room. Closing the stream from a third task fails both
    # with ClosedResourceError and closes the socket at once.
    connected = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            connected.set()
            await anyio.sleep_forever()

    errors: list[BaseException] = []

    async def call(fn: object) -> None:
        try:
            await fn()  # type: ignore[operator]
        except anyio.ClosedResourceError as exc:
            errors.append(exc)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            stream = await connect_tcp_trio(
                "127.0.0.1", listener.extra(anyio.abc.SocketAttribute.local_port)
            )
            await connected.wait()
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            tg.start_soon(call, stream.receive)
            tg.start_soon(call, lambda: stream.send(b"x" * (64 << 20)))
            await anyio.wait_all_tasks_blocked()
            assert not errors
            await stream.aclose()
            await wait_until(lambda: len(errors) == 2)
            assert raw.fileno() == -1
            tg.cancel_scope.cancel()


async def test_a_reader_that_always_finds_data_still_reaches_a_cancellation_point(
    blaster: tuple[int, list[bytes]],
) -> None:
    # A reader slower than its socket finds data on every receive, which then never waits:
    # cancelled (its body closed, the pool closing), it must not run on for as long as data
    # comes. It checkpoints before it reads, so the cancellation loses no byte either.
    port, _ = blaster
    stream = await connect_tcp_trio("127.0.0.1", port)
    data = bytearray(await stream.receive(1))  # waits once; now the socket has more
    await wait_until(lambda: _unread(stream) > CHECKPOINT_EVERY)
    reads = 0
    with anyio.CancelScope() as scope:
        scope.cancel()  # delivered at the reader's next cancellation point
        while reads < 100_000:
            data += await stream.receive(1)  # 1 byte: never drains the socket
            reads += 1
    assert reads <= CHECKPOINT_EVERY, reads
    data += await stream.receive(1)
    assert bytes(data) == PAYLOAD[: len(data)]  # nothing lost to the cancellation
    await stream.aclose()


async def test_a_writer_that_never_waits_still_reaches_a_cancellation_point(
    blaster: tuple[int, list[bytes]],
) -> None:
    port, received = blaster
    stream = await connect_tcp_trio("127.0.0.1", port)
    sends = 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        while sends < 100_000:  # the kernel takes each byte at once
            await stream.send(b"x")
            sends += 1
    assert 0 < sends <= CHECKPOINT_EVERY, sends
    await stream.send_eof()
    while True:  # the server sends its payload first, then records ours until our EOF
        try:
            await stream.receive()
        except anyio.EndOfStream:
            break
    assert b"".join(received) == b"x" * sends
    await stream.aclose()


async def test_a_failed_connect_leaves_no_socket_open(anyio_backend: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: refused
        port = unused.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await connect_tcp_trio("127.0.0.1", port)
    # Not our address: the bind fails before the connect. Either socket would be reported
    # unclosed (a ResourceWarning, an error under -W error) if it were left open.
    with pytest.raises(OSError):
        await connect_tcp_trio("127.0.0.1", port, local_host="192.0.2.1")


def _unread(stream: TrioSocketStream) -> int:
    """Bytes waiting in the socket's receive buffer."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    buf = fcntl.ioctl(raw.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


async def test_send_nowait_sends_what_the_socket_takes_and_returns_the_rest() -> None:
    ours, peer = socket.socketpair()
    stream = TrioSocketStream(ours)
    with peer:
        chunk = bytes(range(256)) * 256
        sent = b""
        while not (rest := stream.send_nowait(chunk)):  # until the socket's buffer is full
            sent += chunk
        assert chunk.endswith(rest)
        sent += chunk[: len(chunk) - len(rest)]
        assert stream.send_nowait(chunk) == chunk  # full: none of it taken
        peer.setblocking(False)
        received = b""
        with pytest.raises(BlockingIOError):
            while True:
                received += peer.recv(1 << 20)
        assert received == sent
    with pytest.raises(SendRefused):  # the peer is gone: not a byte went out
        stream.send_nowait(b"x")
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        stream.send_nowait(b"x")
