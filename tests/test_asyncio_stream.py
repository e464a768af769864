"""The asyncio byte stream that keeps reading on (asyncio only: trio's stream is tested in
test_trio_stream.py): back-pressure, EOF, errors after close."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from asyncpool._asyncio_stream import (
    BIG_READ_SIZE,
    CHECKPOINT_EVERY,
    HIGH_WATER,
    MAX_CHUNK,
    READ_SIZE,
    connect_tcp_asyncio,
)
from tests.servers import open_blaster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

PAYLOAD = bytes(range(256)) * (4 * HIGH_WATER // 256)  # four times the high-water mark


@pytest.fixture
async def blaster(anyio_backend: str) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that sends PAYLOAD at once, then records what it receives until EOF."""
    async with open_blaster(PAYLOAD) as port_and_received:
        yield port_and_received


async def test_reading_pauses_when_too_much_is_unread_and_resumes(
    blaster: tuple[int, list[bytes]],
) -> None:
    port, received = blaster
    stream = await connect_tcp_asyncio("127.0.0.1", port)
    protocol = stream._protocol
    await wait_until(lambda: protocol.reading_paused)  # nobody reads: back-pressure
    assert protocol.buffered > HIGH_WATER
    data = bytearray()
    while len(data) < len(PAYLOAD):
        data += await stream.receive(100_000)  # larger chunks are split to max_bytes
    assert bytes(data) == PAYLOAD
    assert not protocol.reading_paused
    assert stream.extra(anyio.abc.SocketAttribute.remote_port) == port
    await stream.send(b"ping")
    await stream.send_eof()
    await wait_until(lambda: b"".join(received) == b"ping")
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.send(b"late")


async def test_a_peer_that_goes_away(blaster: tuple[int, list[bytes]]) -> None:
    port, _ = blaster
    stream = await connect_tcp_asyncio("127.0.0.1", port)
    stream._transport.abort()  # the connection is lost under the stream
    await wait_until(lambda: stream._protocol.eof)
    with pytest.raises(anyio.BrokenResourceError):
        await stream.send(b"x")
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        while True:
            await stream.receive()


async def test_aclose_fails_a_send_waiting_on_a_peer_that_reads_nothing() -> None:
    # The peer never reads: a send of more than the socket buffers take waits on write
    # back-pressure. Closing the stream from another task fails that send and closes the
    # socket now, instead of both waiting for a flush that never comes.
    connected = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            connected.set()
            await anyio.sleep_forever()

    errors: list[BaseException] = []

    async def send_too_much(stream: anyio.abc.SocketStream) -> None:
        try:
            await stream.send(b"x" * (64 << 20))
        except anyio.ClosedResourceError as exc:
            errors.append(exc)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            stream = await connect_tcp_asyncio(
                "127.0.0.1", listener.extra(anyio.abc.SocketAttribute.local_port)
            )
            await connected.wait()
            tg.start_soon(send_too_much, stream)
            await wait_until(lambda: stream._protocol.write_waiter is not None)
            await stream.aclose()
            await wait_until(lambda: bool(errors))
            assert stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno() == -1
            tg.cancel_scope.cancel()


async def test_a_reader_that_always_finds_data_still_reaches_a_cancellation_point(
    blaster: tuple[int, list[bytes]],
) -> None:
    # A reader slower than its socket finds data buffered on every receive, which then never
    # suspends: cancelled (its body closed, the pool closing), it ran on for as long as data
    # came. Here the data "arrives" before each receive, as under a continuous feed.
    port, _ = blaster
    stream = await connect_tcp_asyncio("127.0.0.1", port)
    reads = 0
    with anyio.CancelScope() as scope:
        scope.cancel()  # delivered at the reader's next cancellation point
        while reads < 100_000:
            stream._protocol.data_received(b"more")
            await stream.receive()
            reads += 1
    assert reads < CHECKPOINT_EVERY, reads
    await stream.aclose()


async def test_reads_grow_while_they_come_back_full_and_shrink_when_they_do_not(
    blaster: tuple[int, list[bytes]],
) -> None:
    """Nobody reads, so the socket holds more than a read takes: the reads grow to
    BIG_READ_SIZE. A chunk is returned whole, up to MAX_CHUNK; a short read shrinks them back."""
    port, _ = blaster
    stream = await connect_tcp_asyncio("127.0.0.1", port)
    protocol, transport = stream._protocol, stream._transport
    await wait_until(lambda: protocol.reading_paused)
    assert READ_SIZE in {len(chunk) for chunk in protocol.buffer}
    assert BIG_READ_SIZE in {len(chunk) for chunk in protocol.buffer}
    assert protocol.read_size == transport.max_size == BIG_READ_SIZE  # type: ignore[attr-defined]
    data = bytearray()
    while len(data) < len(PAYLOAD):
        chunk = await stream.receive(MAX_CHUNK)
        assert len(chunk) <= MAX_CHUNK
        data += chunk
    assert bytes(data) == PAYLOAD
    protocol.data_received(b"short")  # as a small response would come
    assert protocol.read_size == transport.max_size == READ_SIZE  # type: ignore[attr-defined]
    assert await stream.receive() == b"short"
    await stream.aclose()


async def test_unflushed_tells_what_the_transport_holds_until_the_peer_takes_it() -> None:
    """``send_nowait`` hands everything to the transport; what the socket did not take stays
    there (``unflushed``) until the peer reads it. The HTTP/1.1 connection gives itself back to
    the pool only once nothing is left (a server answering early has not read it)."""
    reading = anyio.Event()
    received = 0
    big = b"x" * (32 << 20)  # more than the kernel's buffers take from a peer that reads nothing

    async def handle(peer: anyio.abc.SocketStream) -> None:
        nonlocal received
        async with peer:
            await reading.wait()
            while received < len(big):
                received += len(await peer.receive())

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        stream = await connect_tcp_asyncio("127.0.0.1", port)
        assert not stream.unflushed()
        assert stream.send_nowait(big) == b""
        assert stream.unflushed()
        reading.set()
        await wait_until(lambda: not stream.unflushed())
        await wait_until(lambda: received == len(big))
        await stream.aclose()
        tg.cancel_scope.cancel()


async def test_a_receive_cancelled_at_its_checkpoint_takes_nothing() -> None:
    """The checkpoint a receive makes now and then (CHECKPOINT_EVERY) comes before it takes a
    byte: cancelled there, it takes nothing (it took a chunk, then lost it)."""
    async with open_blaster(b"") as (port, _):
        stream = await connect_tcp_asyncio("127.0.0.1", port)
        for i in range(2 * CHECKPOINT_EVERY):  # numbered chunks, as a continuous feed brings
            stream._protocol.data_received(bytes([i]))
        got = bytearray()
        for _ in range(CHECKPOINT_EVERY - 1):
            got += await stream.receive()
        with anyio.CancelScope() as scope:
            scope.cancel()
            got += await stream.receive()  # the one that checkpoints, cancelled
        assert scope.cancelled_caught
        got += await stream.receive()
        assert list(got) == list(range(CHECKPOINT_EVERY))
        await stream.aclose()


async def test_a_writer_that_never_waits_still_reaches_a_cancellation_point(
    blaster: tuple[int, list[bytes]],
) -> None:
    """As a reader: a send the socket takes at once does not suspend, so every
    CHECKPOINT_EVERY sends in a row one checkpoints (a cancelled writer ran on)."""
    port, received = blaster
    stream = await connect_tcp_asyncio("127.0.0.1", port)
    sends = 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        while sends < 1000:  # 10 kB: the socket takes it all, writing never pauses
            await stream.send(b"x" * 10)
            sends += 1
    assert scope.cancelled_caught
    assert sends == CHECKPOINT_EVERY - 1  # cancelled at the checkpoint, before that send
    await stream.send_eof()
    await wait_until(lambda: len(b"".join(received)) == 10 * sends)
    await stream.aclose()
