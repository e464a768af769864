"""The loop-native Event and Channel the connections use on their hot path."""

from __future__ import annotations

import anyio
import pytest

from asyncpool._sync import SET_EVENT, Channel, clock, event_factory

pytestmark = pytest.mark.anyio


async def test_event_wakes_its_waiter() -> None:
    event = event_factory()()
    woken = []

    async def waiter() -> None:
        await event.wait()
        woken.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not event.is_set() and not woken
        event.set()
        event.set()  # idempotent
    assert event.is_set() and woken == [True]


async def test_a_set_event_does_not_wait() -> None:
    event = event_factory()()
    event.set()
    with anyio.fail_after(5):
        await event.wait()


async def test_a_cancelled_wait_leaves_the_event_usable() -> None:
    event = event_factory()()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await event.wait()
    assert scope.cancelled_caught and not event.is_set()

    async def setter() -> None:
        await anyio.wait_all_tasks_blocked()
        event.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(setter)
        with anyio.fail_after(5):
            await event.wait()


async def test_the_set_event_stays_set() -> None:
    # What an exchange keeps in place of its head event once that has fired.
    SET_EVENT.set()
    assert SET_EVENT.is_set()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await SET_EVENT.wait()  # done at once: no checkpoint, so the cancellation never lands
    assert not scope.cancelled_caught


async def test_channel_delivers_in_order_and_ends_after_close() -> None:
    channel: Channel[int] = Channel(event_factory())
    received: list[int] = []

    async def consumer() -> None:
        while True:
            try:
                received.append(await channel.receive())
            except anyio.EndOfStream:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.wait_all_tasks_blocked()
        channel.send_nowait(1)
        channel.send_nowait(2)
        assert len(channel) == 2
        await anyio.wait_all_tasks_blocked()
        channel.send_nowait(3)
        channel.close()
    assert received == [1, 2, 3]
    with pytest.raises(anyio.ClosedResourceError):
        channel.send_nowait(4)


async def test_channel_receive_nowait() -> None:
    channel: Channel[str] = Channel(event_factory())
    with pytest.raises(anyio.WouldBlock):
        channel.receive_nowait()
    channel.send_nowait("a")
    channel.close()
    assert channel.receive_nowait() == "a"  # what was queued survives the close
    with pytest.raises(anyio.EndOfStream):
        channel.receive_nowait()
    with pytest.raises(anyio.EndOfStream):
        await channel.receive()


async def test_a_cancelled_receive_loses_nothing() -> None:
    channel: Channel[int] = Channel(event_factory())
    with anyio.CancelScope() as scope:
        scope.cancel()
        await channel.receive()
    channel.send_nowait(7)
    assert await channel.receive() == 7
    # A receive that parks after a cancelled one is woken by the next item.
    with anyio.CancelScope() as scope:
        scope.cancel()
        await channel.wait_receivable()
    received: list[int] = []

    async def consumer() -> None:
        received.append(await channel.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.wait_all_tasks_blocked()
        assert not received
        channel.send_nowait(8)
    assert received == [8]


async def test_clock_is_the_loops_clock() -> None:
    now = clock()
    assert abs(now() - anyio.current_time()) < 1.0


async def test_a_bounded_channel_holds_its_producer_back() -> None:
    channel: Channel[int] = Channel(event_factory(), max_items=2)
    sent: list[int] = []

    async def producer() -> None:
        for n in range(5):
            await channel.send(n)
            sent.append(n)
        channel.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        assert sent == [0, 1] and len(channel) == 2  # full: the producer waits
        with pytest.raises(anyio.WouldBlock):
            channel.send_nowait(9)
        received = [await channel.receive() for _ in range(5)]
    assert received == [0, 1, 2, 3, 4]
    with pytest.raises(anyio.EndOfStream):
        await channel.receive()


async def test_a_departed_consumer_fails_the_producer() -> None:
    channel: Channel[int] = Channel(event_factory(), max_items=1)
    channel.send_nowait(1)
    outcome: list[BaseException] = []

    async def producer() -> None:
        try:
            await channel.send(2)
        except anyio.BrokenResourceError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        channel.close_receiver()
    assert len(outcome) == 1 and len(channel) == 0
    with pytest.raises(anyio.ClosedResourceError):
        await channel.receive()
    with pytest.raises(anyio.ClosedResourceError):
        channel.receive_nowait()
    with pytest.raises(anyio.BrokenResourceError):
        channel.send_nowait(3)


def test_trio_as_a_guest_on_an_asyncio_loop_gets_trio_primitives() -> None:
    """trio.lowlevel.start_guest_run runs trio on an asyncio loop (a GUI's, say): asyncio
    reports its loop as running, but the code is trio's, and asyncio futures failed it."""
    asyncio = pytest.importorskip("asyncio")
    trio = pytest.importorskip("trio")
    from asyncpool import Request, Transport
    from asyncpool.testing import MockServer, Reply

    async def guest() -> bytes:
        routes = {"/": Reply(200, body=b"from the guest")}
        async with MockServer(routes=routes) as server, Transport(dial=server.dial) as pool:
            response = await pool.round_trip(Request("GET", "http://example.test/"))
            return await response.aread()

    async def host() -> bytes:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        trio.lowlevel.start_guest_run(
            guest,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        body: bytes = (await done).unwrap()
        return body

    assert asyncio.run(host()) == b"from the guest"
