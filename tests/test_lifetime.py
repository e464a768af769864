"""A Transport's life: made anywhere, started by its first request, closed by ``aclose()`` from
any task (or ``async with``), under cancellation too, leaving no task, connection or socket;
and an abandoned one warns and lets its sockets go. The same for ``Client`` and
``HTTPXTransport``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import httpx
import pytest
import sniffio

import asyncpool
from asyncpool import Client, Request, Transport
from asyncpool._tasks import TaskSet
from asyncpool.httpx import HTTPXTransport
from tests.h2server import H2TestServer, open_h2_server
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server, wait_until

pytestmark = pytest.mark.anyio


def pool_tasks() -> list[str]:
    """The names of the asyncpool tasks alive on the running loop."""
    if sniffio.current_async_library() == "asyncio":
        names = [task.get_name() for task in asyncio.all_tasks() if not task.done()]
    else:
        import trio

        names = []
        todo = [trio.lowlevel.current_root_task()]
        while todo:
            task = todo.pop()
            names.append(task.name)
            todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return sorted(name for name in names if name.startswith("asyncpool "))


async def get(pool: Transport, url: str) -> bytes:
    response = await pool.round_trip(Request("GET", url))
    return await response.aread()


async def stall(req: ServerRequest, conn: ServerConnection) -> None:
    """Never answer; return when the client closes the connection (a GET sends no body)."""
    while await conn._receive():
        pass


async def assert_closed(pool: Transport, server: TestServer | H2TestServer) -> None:
    """Nothing of the pool is left: no task, no connection, no socket."""
    assert pool_tasks() == []
    assert pool.stats().total == 0
    await server.wait_until(lambda s: s.open_connections == 0)  # type: ignore[arg-type]
    with pytest.raises(asyncpool.PoolClosed, match="closed"):
        await get(pool, server.url)


# -- made anywhere, started by use ----------------------------------------------------------


def test_made_without_a_running_loop() -> None:
    # Made at import time, as people make clients: nothing starts, so nothing is left to warn.
    pools = [Transport(), Client(), HTTPXTransport()]
    assert all(p._tasks is None for p in (pools[0], pools[1].transport, pools[2].pool))
    del pools
    gc.collect()


async def test_used_without_async_with_then_closed(server: TestServer) -> None:
    pool = Transport()
    assert pool_tasks() == []
    assert await get(pool, server.url) == b"hello"
    assert pool.stats().idle == 1
    assert "asyncpool idle sweeper" in pool_tasks()
    await pool.aclose()
    await assert_closed(pool, server)


async def test_entered_after_first_use_and_only_once(server: TestServer) -> None:
    pool = Transport()
    await get(pool, server.url)
    async with pool:
        await get(pool, server.url)
        assert pool.stats().dials == 1
    await assert_closed(pool, server)
    with pytest.raises(asyncpool.PoolClosed, match="entered once"):
        await pool.__aenter__()


async def test_opened_in_one_task_and_closed_in_another(server: TestServer) -> None:
    pools: list[Transport] = []

    async def open_and_use() -> None:  # a fixture's setup, an application's startup
        pool = Transport()
        await pool.__aenter__()
        await get(pool, server.url)
        pools.append(pool)

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_and_use)
    (pool,) = pools
    assert await get(pool, server.url) == b"hello"  # the connection outlived its task
    assert pool.stats().dials == 1
    await pool.__aexit__(None, None, None)
    await assert_closed(pool, server)


@pytest.fixture
async def fixture_client(server: TestServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=HTTPXTransport(), base_url=server.url) as client:
        yield client


async def test_an_httpx_client_from_a_fixture(
    fixture_client: httpx.AsyncClient, server: TestServer
) -> None:
    assert (await fixture_client.get("/")).text == "hello"


# -- closing: from anywhere, under cancellation, twice ----------------------------------------


@pytest.mark.parametrize("how", ["move_on_after", "cancelled_scope"])
async def test_aclose_completes_under_cancellation(server: TestServer, how: str) -> None:
    pool = Transport()
    await get(pool, server.url)
    response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=50")))
    if how == "move_on_after":
        with anyio.move_on_after(0):
            await pool.aclose()
    else:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pool.aclose()
    await anyio.lowlevel.checkpoint()  # the task's own scopes are intact (trio checks)
    await assert_closed(pool, server)
    with pytest.raises(asyncpool.PoolClosed, match="closed during the request"):
        await response.aread()


async def test_aclose_twice_and_concurrently(server: TestServer) -> None:
    pool = Transport()
    await get(pool, server.url)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.aclose)
        tg.start_soon(pool.aclose)
    await pool.aclose()  # a no-op
    await assert_closed(pool, server)
    await Transport().aclose()  # never used: nothing to close


async def test_requests_racing_aclose_fail_with_pool_closed() -> None:
    errors: list[BaseException] = []

    async def request(pool: Transport, url: str) -> None:
        try:
            await get(pool, url)
        except asyncpool.PoolClosed as exc:
            errors.append(exc)

    async with open_server(stall) as server:
        pool = Transport(max_conns_per_host=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(request, pool, server.url)  # in flight on the one connection
            await server.wait_until(lambda s: len(s.requests) == 1)
            tg.start_soon(request, pool, server.url)  # waiting for a host slot
            await wait_until(lambda: pool.stats().waiting == 1)
            await pool.aclose()
        assert len(errors) == 2
        await assert_closed(pool, server)


async def test_an_h2_upload_in_flight_leaves_no_task() -> None:
    never = anyio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield b"first"
        await never.wait()
        yield b"never"

    async with open_h2_server() as server:
        pool = Transport(http2_prior_knowledge=True)
        failed = anyio.Event()

        async def post() -> None:
            with pytest.raises(asyncpool.PoolClosed):
                await pool.round_trip(Request("POST", server.url_for("/echo"), content=upload()))
            failed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(post)
            await server.wait_until(lambda s: s.active_streams == 1)
            assert any(name.startswith("asyncpool h2 body") for name in pool_tasks())
            await pool.aclose()
            await failed.wait()
        await assert_closed(pool, server)


# -- abandoned ----------------------------------------------------------------------------------


async def test_an_abandoned_transport_warns_and_lets_its_sockets_go(server: TestServer) -> None:
    pool = Transport()
    response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=50")))
    await get(pool, server.url)  # on a second connection, left idle
    tasks = pool._tasks
    assert tasks is not None and server.open_connections == 2
    with pytest.warns(ResourceWarning, match="unclosed Transport"):
        del pool
        gc.collect()
    await tasks.wait_closed()  # the finalizer cancelled them, on the loop
    assert pool_tasks() == []
    await server.wait_until(lambda s: s.open_connections == 0)
    with pytest.raises(asyncpool.ReadError):
        await response.aread()


# -- Client and HTTPXTransport ------------------------------------------------------------------


async def test_client_without_async_with(server: TestServer) -> None:
    client = Client()
    assert (await client.get(server.url)).text == "hello"
    await client.aclose()
    await client.aclose()
    await assert_closed(client.transport, server)


async def test_client_closed_in_another_task(server: TestServer) -> None:
    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.__aenter__)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.get, server.url)
    await client.__aexit__(None, None, None)
    await assert_closed(client.transport, server)


async def test_httpx_client_without_async_with(server: TestServer) -> None:
    transport = HTTPXTransport()
    client = httpx.AsyncClient(transport=transport)
    assert (await client.get(server.url)).text == "hello"
    await client.aclose()
    await assert_closed(transport.pool, server)


async def test_httpx_client_opened_in_one_task_and_closed_in_another(server: TestServer) -> None:
    transport = HTTPXTransport()
    client = httpx.AsyncClient(transport=transport)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.__aenter__)
    assert (await client.get(server.url)).text == "hello"
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.__aexit__)
    await assert_closed(transport.pool, server)


async def test_httpx_transport_closed_raises_an_httpx_error(server: TestServer) -> None:
    transport = HTTPXTransport()
    await transport.aclose()
    with pytest.raises(httpx.TransportError, match="closed") as info:
        await transport.handle_async_request(httpx.Request("GET", server.url))
    assert isinstance(info.value.__cause__, asyncpool.PoolClosed)


# -- the TaskSet ------------------------------------------------------------------------------


async def test_a_failing_task_is_logged_and_recorded(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet()

    async def broken() -> None:
        raise ValueError("bug")

    with caplog.at_level(logging.ERROR, logger="asyncpool"):
        tasks.start_soon(broken, name="asyncpool broken")
        await tasks.wait_closed()
    assert isinstance(tasks.failure, ValueError)
    assert "asyncpool broken" in caplog.text
    await tasks.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio cancels a task only where it runs
async def test_a_task_cancelled_natively_before_its_first_step_is_forgotten() -> None:
    """asyncio.run cancels every task left as it ends; one cancelled before its first step
    never runs its body's ``finally``, and the set forgets it all the same (``aclose`` waited
    for it for ever)."""
    tasks = TaskSet()
    tasks.start_soon(anyio.sleep_forever, name="asyncpool victim")
    (victim,) = [task for task in asyncio.all_tasks() if task.get_name() == "asyncpool victim"]
    victim.cancel()
    with anyio.fail_after(5):  # a hang guard: aclose is shielded
        await tasks.aclose()
    assert len(tasks) == 0


async def test_a_task_started_after_aclose_starts_cancelled() -> None:
    tasks = TaskSet()

    async def body() -> None:
        await anyio.sleep_forever()

    tasks.start_soon(body, name="asyncpool first")
    await tasks.aclose()
    tasks.start_soon(body, name="asyncpool late")
    await tasks.wait_closed()
    assert pool_tasks() == []
    assert tasks.failure is None
