"""The pool, as Go's transport_test.go specifies it: reuse, idle limits, the LRU,
max_conns_per_host, socket late binding, idle timeouts, retries, and cancellation at every
stage leaving nothing behind."""

from __future__ import annotations

import gc
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

import asyncpool
import asyncpool.testing as mock
from asyncpool import Request, Transport
from asyncpool._transport import PoolInvariantError
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server, wait_until

# Where sockets are not the thing under test, the pool dials asyncpool.testing's MockServer.
MOCK_URL = "http://example.test/"
MOCK_ORIGIN = "http://example.test"

pytestmark = pytest.mark.anyio


def assert_pool_at_rest(pool: Transport, *, idle: int | None = None) -> None:
    """Nothing in use, nobody waiting, nothing dialing."""
    stats = pool.stats()
    assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0), stats
    if idle is not None:
        assert stats.idle == idle, stats


class Gate:
    """A handler that holds every response until the test opens the gate."""

    def __init__(self) -> None:
        self.open = anyio.Event()
        self.arrived = 0

    async def __call__(
        self,
        req: ServerRequest | mock.ServerRequest,
        conn: ServerConnection | mock.ServerConnection,
    ) -> None:
        self.arrived += 1
        await self.open.wait()
        await conn.respond(200, [], b"gated")


class StallingDialer:
    """A ``dial`` option whose dials number ``stall_from`` and later wait for ``release``."""

    def __init__(self, stall_from: int = 1) -> None:
        self.stall_from = stall_from
        self.release = anyio.Event()
        self.started = 0
        self.stalled = anyio.Event()

    async def __call__(self, host: str, port: int) -> anyio.abc.ByteStream:
        index = self.started
        self.started += 1
        if index >= self.stall_from:
            self.stalled.set()
            await self.release.wait()
        return await anyio.connect_tcp(host, port)


def start_cancellable(tg: anyio.abc.TaskGroup, fn: object, *args: object) -> anyio.CancelScope:
    """Start ``fn(*args)`` in its own cancel scope, returned to cancel it alone."""
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            await fn(*args)  # type: ignore[operator]

    tg.start_soon(run)
    return scope


async def get(pool: Transport, url: str, **kwargs: object) -> bytes:
    response = await pool.round_trip(Request("GET", url, **kwargs))  # type: ignore[arg-type]
    return await response.aread()


# -- life cycle -------------------------------------------------------------------------------


async def test_leaving_the_block_closes_every_connection(server: TestServer) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=50")))
        await get(pool, server.url)
        assert pool.stats().total == 2
    await server.wait_for_connections_closed()
    assert pool.stats().total == 0
    with pytest.raises(asyncpool.PoolClosed):
        await get(pool, server.url)
    with pytest.raises(asyncpool.PoolClosed, match="closed during the request"):
        await response.aread()


async def test_a_transport_is_entered_once() -> None:
    pool = Transport()
    async with pool:
        pass
    with pytest.raises(asyncpool.PoolClosed, match="entered once"):
        async with pool:
            pass


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_conns_per_host"):
        Transport(max_conns_per_host=-1)
    with pytest.raises(ValueError, match="max_body_bytes"):
        Transport(max_body_bytes=-1)
    with pytest.raises(ValueError, match="max_decompression_ratio"):
        Transport(max_decompression_ratio=-1)


# -- reuse and idle limits --------------------------------------------------------------------


async def test_100_sequential_requests_use_one_connection() -> None:
    routes = {"/": mock.Reply(body=b"hello")}
    async with mock.MockServer(routes=routes) as server, Transport(dial=server.dial) as pool:
        for _ in range(100):
            assert await get(pool, MOCK_URL) == b"hello"
        stats = pool.stats()
    assert server.connections_made == 1
    assert (stats.dials, stats.reused) == (1, 99)


async def test_concurrent_requests_leave_max_idle_conns_per_host_idle() -> None:
    gate = Gate()
    async with (
        mock.MockServer(gate) as server,
        Transport(max_idle_conns_per_host=2, dial=server.dial) as pool,
    ):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(get, pool, MOCK_URL)
            await server.wait_until(lambda _: gate.arrived == 3)
            assert pool.stats().in_use == 3
            gate.open.set()
        assert_pool_at_rest(pool, idle=2)
        await server.wait_until(lambda s: s.open_connections == 2)


async def test_max_idle_conns_0_means_no_limit_and_keeps_connections(server: TestServer) -> None:
    # 0 is "no limit" (Go's MaxIdleConns); the per-host limit, which defaults to it, must not
    # read it as "keep none" and turn keep-alive off.
    async with Transport(max_idle_conns=0) as pool:
        for _ in range(3):
            assert await get(pool, server.url) == b"hello"
        stats = pool.stats()
    assert (stats.dials, stats.reused, stats.idle) == (1, 2, 1)
    assert server.connections_accepted == 1


async def test_lru_evicts_the_oldest_hosts_idle_connection() -> None:
    servers = {host: mock.MockServer() for host in ("a.test", "b.test", "c.test")}

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return await servers[host].dial(host, port)

    async with (
        servers["a.test"] as a,
        servers["b.test"] as b,
        servers["c.test"] as c,
        Transport(max_idle_conns=2, dial=dial) as pool,
    ):
        for host in servers:
            await get(pool, f"http://{host}/")
        stats = pool.stats()
        assert stats.evictions == 1
        assert set(stats.hosts) == {"http://b.test", "http://c.test"}
        await a.wait_until(lambda s: s.open_connections == 0)
        assert (b.open_connections, c.open_connections) == (1, 1)
        # b is now the oldest; using it makes c the oldest.
        await get(pool, "http://b.test/")
        await get(pool, "http://a.test/")
        assert set(pool.stats().hosts) == {"http://a.test", "http://b.test"}
        assert b.connections_made == 1


async def test_max_conns_per_host_1_with_10_concurrent_requests_dials_once() -> None:
    gate = Gate()
    async with (
        mock.MockServer(gate) as server,
        Transport(max_conns_per_host=1, dial=server.dial) as pool,
    ):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(get, pool, MOCK_URL)
            await mock.wait_until(lambda: pool.stats().waiting == 9)
            assert pool.stats().hosts[MOCK_ORIGIN].total == 1
            gate.open.set()
        stats = pool.stats()
    assert stats.dials == 1
    assert server.connections_made == 1
    assert len(server.requests) == 10


async def test_max_conns_per_host_serves_waiters_in_fifo_order() -> None:
    gate = Gate()
    async with (
        mock.MockServer(gate) as server,
        Transport(max_conns_per_host=1, dial=server.dial) as pool,
        anyio.create_task_group() as tg,
    ):
        for i in range(5):
            tg.start_soon(lambda i=i: get(pool, MOCK_URL, headers={"x-order": str(i)}))
            # Queued in this order: the first one dialing (counted in total), the rest waiting.
            await mock.wait_until(lambda i=i: pool.stats().waiting + pool.stats().total == i + 1)  # type: ignore[misc]
        gate.open.set()
    assert [r.header("x-order") for r in server.requests] == ["0", "1", "2", "3", "4"]


async def test_socket_late_binding_a_freed_connection_serves_a_stalled_dial() -> None:
    gate, dialer = Gate(), StallingDialer(stall_from=1)
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    async with open_server(gate) as server, Transport(dial=dialer) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, pool, server.url)  # first dial, then held by the gate
            await server.wait_until(lambda _: gate.arrived == 1)
            tg.start_soon(lambda: get(pool, server.url, trace=trace))  # its dial stalls
            await dialer.stalled.wait()
            gate.open.set()  # the first request ends; its connection serves the second
        assert [(i.reused, i.was_idle) for i in infos] == [(True, False)]
        assert server.connections_accepted == 1
        assert pool.stats().dialing == 1
        dialer.release.set()  # the losing dial is not wasted: it joins the idle list
        await wait_until(lambda: pool.stats().idle == 2)
        assert_pool_at_rest(pool, idle=2)
        assert pool.stats().dials == 2


# -- idle connections going away --------------------------------------------------------------


async def test_the_sweeper_closes_each_idle_connection_as_it_expires(server: TestServer) -> None:
    # The idle-timeout rules themselves are tests/test_pool.py's (on a fake clock); this is
    # the wiring: the sweeper task wakes for an idle connection, closes its socket when it
    # expires, then waits for the next one. A tiny timeout, and no sleep: each round waits for
    # the server to see the close.
    reasons: list[asyncpool.CloseReason] = []
    trace = asyncpool.ClientTrace(conn_closed=lambda info: reasons.append(info.reason))
    async with Transport(idle_conn_timeout=0.01, trace=trace) as pool:
        for n in (1, 2):
            await get(pool, server.url)
            await server.wait_for_connections_closed()
            stats = pool.stats()
            assert (stats.total, stats.dials, stats.idle_timeouts) == (0, n, n)
    assert reasons == [asyncpool.CloseReason.IDLE_TIMEOUT] * 2


async def test_a_reset_idle_connection_leaves_the_pool() -> None:
    reset = anyio.Event()

    async def handler(req: mock.ServerRequest, conn: mock.ServerConnection) -> None:
        await conn.respond(200, body=b"ok")
        if req.path == "/then-reset":
            await conn.stall(reset)
            await conn.reset()

    async with mock.MockServer(handler) as server, Transport(dial=server.dial) as pool:
        await get(pool, MOCK_URL + "then-reset")
        reset.set()
        await mock.wait_until(lambda: pool.stats().total == 0)
        await get(pool, MOCK_URL)
        assert (pool.stats().dials, pool.stats().reused) == (2, 0)


async def test_server_closing_an_idle_connection_takes_it_out_of_the_pool(
    server: TestServer,
) -> None:
    async with Transport() as pool:
        await get(pool, server.url)
        await server.close_idle_connections()
        await wait_until(lambda: pool.stats().total == 0)
        assert pool.stats().server_closed_idle == 1
        # A POST then goes out on a fresh connection and cannot be hurt.
        response = await pool.round_trip(Request("POST", server.url_for("/echo"), content=b"x"))
        assert await response.aread() == b"x"


async def test_close_idle_connections_closes_idle_and_later_freed_ones() -> None:
    gate = Gate()
    async with open_server(gate) as server, Transport() as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, pool, server.url)
            await server.wait_until(lambda _: gate.arrived == 1)
            await pool.close_idle_connections()
            gate.open.set()
        await server.wait_for_connections_closed()
        assert pool.stats().total == 0


async def test_a_request_after_close_idle_connections_keeps_its_connection(
    server: TestServer,
) -> None:
    async with Transport() as pool:
        await get(pool, server.url)
        await pool.close_idle_connections()
        assert pool.stats().total == 0
        await get(pool, server.url)
        assert pool.stats().idle == 1


async def test_disable_keep_alives_uses_a_connection_per_request(server: TestServer) -> None:
    async with Transport(disable_keep_alives=True) as pool:
        for _ in range(3):
            await get(pool, server.url)
        assert pool.stats().total == 0
    assert server.connections_accepted == 3
    assert all(r.header("connection") == "close" for r in server.requests)


# -- retries ----------------------------------------------------------------------------------


async def drop_second_request(req: mock.ServerRequest, conn: mock.ServerConnection) -> None:
    """The keep-alive race: the server gives up on a connection as a request arrives on it."""
    if req.index_on_connection == 1:
        await conn.close()
        return
    await conn.respond(200, [], b"ok:" + req.body)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),
        ("HEAD", {}),
        ("POST", {"Idempotency-Key": "k1"}),
        ("PUT", {"X-Idempotency-Key": "k"}),
    ],
)
async def test_replayable_request_on_a_dead_reused_connection_is_retried(
    anyio_backend: str, method: str, headers: dict[str, str]
) -> None:
    async with (
        mock.MockServer(drop_second_request) as server,
        Transport(dial=server.dial) as pool,
    ):
        await get(pool, MOCK_URL)
        response = await pool.round_trip(Request(method, MOCK_URL, headers=headers, content=b""))
        await response.aread()
        assert response.status_code == 200
        assert pool.stats().retries == 1
        assert server.connections_made == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_taking_an_idle_connection_as_the_close_arrives_is_retried(
    server: TestServer, method: str
) -> None:
    """The server closes an idle connection and the next request takes it before the
    connection's reader has run: on asyncio the loop learns of the close first, so the writer
    finds the socket gone before it writes a byte. Nothing reached the server, so even a POST
    goes out again, on a new connection (Go counts the bytes written)."""
    async with Transport() as pool:
        await get(pool, server.url)
        await server.close_idle_connections()
        # No await in between: the request is queued on the connection in this very turn.
        response = await pool.round_trip(Request(method, server.url_for("/echo"), content=b"x"))
        assert await response.aread() == b"x"
        assert server.connections_accepted == 2
        assert_pool_at_rest(pool, idle=1)


async def test_post_on_a_dead_reused_connection_fails_clearly() -> None:
    async with (
        mock.MockServer(drop_second_request) as server,
        Transport(dial=server.dial) as pool,
    ):
        await get(pool, MOCK_URL)
        with pytest.raises(asyncpool.ServerDisconnected) as info:
            await pool.round_trip(Request("POST", MOCK_URL, content=b"data"))
        assert "example.test:80" in str(info.value)
        assert "reused" in str(info.value) and "Idempotency-Key" in str(info.value)
        assert info.value.phase == "read"
        assert pool.stats().retries == 0
        assert_pool_at_rest(pool, idle=0)


async def test_a_fresh_connection_is_never_retried() -> None:
    async def drop_all(req: mock.ServerRequest, conn: mock.ServerConnection) -> None:
        await conn.close()

    async with mock.MockServer(drop_all) as server, Transport(dial=server.dial) as pool:
        with pytest.raises(asyncpool.ServerDisconnected):
            await get(pool, MOCK_URL)
        assert server.connections_made == 1
        assert pool.stats().total == 0


async def test_a_streamed_body_is_not_replayed() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    async with (
        mock.MockServer(drop_second_request) as server,
        Transport(dial=server.dial) as pool,
    ):
        await get(pool, MOCK_URL)
        request = Request("PUT", MOCK_URL, headers={"Idempotency-Key": "k"}, content=body())
        with pytest.raises(asyncpool.ServerDisconnected):
            await pool.round_trip(request)


async def test_stats_may_be_read_while_the_pool_changes(server: TestServer) -> None:
    # As an OpenTelemetry reader's thread reads them while the loop works: here the pool
    # forgets a host between two steps of the read, deterministically (the read used to
    # iterate the live dict: "dictionary changed size during iteration", the point dropped).
    async with Transport() as pool:
        assert await get(pool, server.url) == b"hello"
        hosts = pool._pool.hosts
        (key,) = hosts
        host = hosts[key]

        class ChangedMidRead(dict):  # type: ignore[type-arg]
            def __iter__(self) -> Any:
                hosts.pop(key, None)  # the loop's change, between two steps of the read
                return super().__iter__()

        host.h2_conns = ChangedMidRead()
        try:
            assert pool.stats().hosts[key].idle == 1
        finally:
            hosts[key], host.h2_conns = host, {}


# -- cancellation at every stage --------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("content", [None, b"order #1"])
async def test_a_request_that_acts_is_not_sent_from_a_scope_already_cancelled(
    server: TestServer, method: str, content: bytes | None
) -> None:
    # As Go checks the request's context first: a deadline used up before the call (a budget
    # passed down) or a scope cancelled in the same turn sends nothing, and the idle
    # connection stays in the pool. (A GET, HEAD, OPTIONS or TRACE is not checked: anyio
    # delivers the cancellation at its head wait, and the server's answer is dropped.)
    async with Transport() as pool:
        assert await get(pool, server.url) == b"hello"
        with anyio.move_on_after(0) as scope:  # the deadline has passed as the scope opens
            await pool.round_trip(Request(method, server.url_for("/echo"), content=content))
        assert scope.cancelled_caught
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pool.round_trip(Request(method, server.url_for("/echo"), content=content))
        assert_pool_at_rest(pool, idle=1)
        assert await get(pool, server.url) == b"hello"
    assert [r.method for r in server.requests] == ["GET", "GET"]
    assert server.connections_accepted == 1


async def test_cancel_while_queued_for_a_host_slot() -> None:
    gate = Gate()
    async with open_server(gate) as server, Transport(max_conns_per_host=1) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, pool, server.url)
            await server.wait_until(lambda _: gate.arrived == 1)
            queued = start_cancellable(tg, get, pool, server.url)
            await wait_until(lambda: pool.stats().waiting == 1)
            queued.cancel()
            await wait_until(lambda: pool.stats().waiting == 0)
            assert pool.stats().in_use == 1
            gate.open.set()
        assert_pool_at_rest(pool, idle=1)
        with anyio.fail_after(5):  # the slot was not leaked
            assert await get(pool, server.url) == b"gated"


async def test_cancel_while_dialing_hands_the_connection_to_the_pool(server: TestServer) -> None:
    dialer = StallingDialer(stall_from=0)
    async with Transport(dial=dialer) as pool:
        async with anyio.create_task_group() as tg:
            dialing = start_cancellable(tg, get, pool, server.url)
            await dialer.stalled.wait()
            dialing.cancel()
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 1)
        dialer.release.set()
        await wait_until(lambda: pool.stats().idle == 1)
        assert_pool_at_rest(pool, idle=1)


async def test_cancel_while_dialing_then_the_dial_fails(server: TestServer) -> None:
    release = anyio.Event()

    async def failing_dial(host: str, port: int) -> anyio.abc.ByteStream:
        await release.wait()
        raise ConnectionRefusedError("refused")

    async with Transport(dial=failing_dial) as pool:
        async with anyio.create_task_group() as tg:
            dialing = start_cancellable(tg, get, pool, server.url)
            await wait_until(lambda: pool.stats().dialing == 1)
            dialing.cancel()
        release.set()
        await wait_until(lambda: pool.stats().dialing == 0)
        assert pool.stats().total == 0
        assert pool.stats().failed_dials == 1


async def test_cancel_while_writing_the_body(server: TestServer) -> None:
    never = anyio.Event()

    async def endless_body() -> AsyncIterator[bytes]:
        yield b"first"
        await never.wait()
        yield b"never"  # pragma: no cover

    async with Transport() as pool:
        async with anyio.create_task_group() as tg:
            request = Request("POST", server.url_for("/echo"), content=endless_body())
            writing = start_cancellable(tg, pool.round_trip, request)
            await server.wait_until(lambda s: len(s.requests) == 1)
            writing.cancel()
        assert pool.stats().total == 0
        await server.wait_for_connections_closed()


async def test_cancel_while_awaiting_the_head() -> None:
    gate = Gate()
    async with open_server(gate) as server, Transport() as pool:
        async with anyio.create_task_group() as tg:
            waiting = start_cancellable(tg, get, pool, server.url)
            await server.wait_until(lambda _: gate.arrived == 1)
            waiting.cancel()
        assert pool.stats().total == 0
        gate.open.set()


async def test_cancel_as_the_head_arrives_gives_up_the_unread_body(server: TestServer) -> None:
    # The reader hands the head over in the same turn as the cancellation: the caller never
    # sees the response, so the body still arriving must be given up with the connection.
    scope = anyio.CancelScope()
    trace = asyncpool.ClientTrace(got_first_response_byte=scope.cancel)
    url = server.url_for("/stream?chunks=1000&size=1000")
    async with Transport() as pool:
        with scope:
            await pool.round_trip(Request("GET", url, trace=trace))
        assert scope.cancelled_caught
        assert_pool_at_rest(pool)
        await server.wait_for_connections_closed()
        assert await get(pool, server.url) == b"hello"


async def test_cancel_mid_body(server: TestServer) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(
            Request("GET", server.url_for("/stream?chunks=1000&size=1000"))
        )
        with anyio.CancelScope() as scope:
            async with response:
                async for _ in response.aiter_bytes():
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()  # where the cancellation lands
        assert scope.cancelled_caught
        assert pool.stats().total == 0
        await server.wait_for_connections_closed()
        assert await get(pool, server.url) == b"hello"


async def test_cancel_from_many_requests_at_once_leaves_nothing(server: TestServer) -> None:
    async with Transport(max_conns_per_host=3) as pool:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(get, pool, server.url_for("/stream?chunks=100&size=100"))
                await wait_until(lambda: pool.stats().in_use == 3)
                scope.cancel()
        await wait_until(lambda: pool.stats().dialing == 0)
        assert_pool_at_rest(pool)
        with anyio.fail_after(5):
            assert await get(pool, server.url) == b"hello"


async def test_an_unclosed_response_collected_as_a_request_queues_breaks_nothing(
    server: TestServer,
) -> None:
    # The garbage collector may run at any allocation, and collecting an unclosed response
    # closes its connection: here the host's last one, just as a request that found no idle
    # connection queues for a dial (forced from a hook that runs at that point). The pool then
    # forgot the host (no connection, nobody waiting yet) and the request went on with it,
    # orphaned: releasing its connection raised KeyError in the reader task, which took the
    # Transport's task group down.
    url = server.url_for("/stream?chunks=1000&size=1000")
    trace = asyncpool.ClientTrace(wait_for_conn_start=gc.collect)
    async with Transport() as pool:
        cycle: list[object] = [await pool.round_trip(Request("GET", url))]
        cycle.append(cycle)  # unreachable once dropped: only a collection finalizes it
        del cycle
        with pytest.warns(ResourceWarning, match="unclosed response"):
            assert await get(pool, server.url, trace=trace) == b"hello"
        assert_pool_at_rest(pool, idle=1)


async def test_a_response_collected_where_warnings_are_errors_frees_its_connection(
    server: TestServer,
) -> None:
    # Under -W error the ResourceWarning raised in __del__ before the connection was given up:
    # the pool waited for ever for a body nobody would read.
    url = server.url_for("/stream?chunks=1000&size=1000")
    async with Transport(max_conns_per_host=1) as pool:
        response = await pool.round_trip(Request("GET", url))
        unraisable: list[Any] = []
        hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ResourceWarning)
                del response
        finally:
            sys.unraisablehook = hook
        assert [type(u.exc_value) for u in unraisable] == [ResourceWarning]
        with anyio.fail_after(5):
            assert await get(pool, server.url) == b"hello"


async def test_an_error_leaves_the_block_as_it_is_not_in_a_group() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(asyncpool.ConnectError):  # not an ExceptionGroup
        async with Transport() as pool:
            await get(pool, f"http://127.0.0.1:{port}/")
    with anyio.move_on_after(0.01) as scope:  # and an outer cancellation still lands
        async with Transport():
            await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_leaving_the_block_mid_upload_to_a_stalled_server_closes_the_socket() -> None:
    # The server reads the head, then no more: the upload stalls on write back-pressure with
    # more of the body buffered than the socket takes. Leaving the block fails the request
    # with PoolClosed, closes its body, and closes the socket now: not once the server, which
    # may never read again, has taken what is buffered.
    stalled = anyio.Event()
    body_closed = anyio.Event()
    sent: list[int] = []

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        stalled.set()
        await anyio.sleep_forever()

    async def huge_body() -> AsyncIterator[bytes]:
        try:
            sent.append(1)
            yield b"x" * (64 << 20)  # more than the socket buffers on both sides take
            await anyio.sleep_forever()
            yield b"never"  # pragma: no cover
        finally:
            body_closed.set()

    errors: list[BaseException] = []

    async def upload(pool: Transport, url: str) -> None:
        try:
            await pool.round_trip(Request("POST", url, content=huge_body()))
        except asyncpool.HTTPError as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with open_server(handler) as server, anyio.create_task_group() as tg:
            async with Transport() as pool:
                tg.start_soon(upload, pool, server.url)
                await stalled.wait()
                await wait_until(lambda: bool(sent))
                (conn,) = pool._pool.open
                raw_socket = conn._stream.extra(anyio.abc.SocketAttribute.raw_socket)
            await body_closed.wait()
            await wait_until(lambda: bool(errors))
            assert isinstance(errors[0], asyncpool.PoolClosed)
            assert raw_socket.fileno() == -1  # closed, though the server reads nothing
            tg.cancel_scope.cancel()


# -- the invariant checker ------------------------------------------------------------------


def _lose_from_lru(pool: Transport) -> None:
    pool._pool.idle_lru.clear()


def _count_a_ghost_conn(pool: Transport) -> None:
    pool._pool.hosts[MOCK_ORIGIN].conns += 1


def _count_a_ghost_want(pool: Transport) -> None:
    pool._pool.hosts[MOCK_ORIGIN].waiting += 1


def _forget_idle_at(pool: Transport) -> None:
    next(iter(pool._pool.idle_lru)).idle_at = None


@pytest.mark.parametrize(
    ("corrupt", "invariant"),
    [
        (_lose_from_lru, "an idle connection is open, in its host's idle list and in the LRU"),
        (_count_a_ghost_conn, "_Host.conns counts the host's dials and open connections"),
        (_count_a_ghost_want, "no want waits while its host has an idle connection"),
        (_forget_idle_at, "an idle list is ordered by idle_at"),
    ],
)
async def test_the_invariant_checker_names_what_a_corrupted_pool_breaks(
    corrupt: Callable[[Transport], None], invariant: str
) -> None:
    async with mock.MockServer() as server, Transport(dial=server.dial) as pool:
        await get(pool, MOCK_URL)
        pool._check_invariants()  # a pool at rest keeps them
        host = pool._pool.hosts[MOCK_ORIGIN]
        saved = (dict(pool._pool.idle_lru), host.conns, host.waiting, host.idle.copy())
        idle_at = {conn: conn.idle_at for conn in pool._pool.idle_lru}
        corrupt(pool)
        with pytest.raises(PoolInvariantError, match=f"^pool invariant broken: {invariant} "):
            pool._check_invariants()
        # Put it back, so that the pool closes cleanly (and passes the check on the way).
        pool._pool.idle_lru.update(saved[0])
        host.conns, host.waiting, host.idle = saved[1], saved[2], saved[3]
        for conn, at in idle_at.items():
            conn.idle_at = at


async def test_the_checker_fails_the_decision_that_broke_the_pool() -> None:
    """With ASYNCPOOL_CHECK_INVARIANTS=1 (as in this suite) the decision after a corruption
    fails at once, with the state in the message."""
    async with mock.MockServer() as server, Transport(dial=server.dial) as pool:
        await get(pool, MOCK_URL)
        pool._pool.hosts[MOCK_ORIGIN].conns += 1
        with pytest.raises(PoolInvariantError, match=r"conns=2 dialing=0 h2_dialing=0 open=1"):
            await get(pool, MOCK_URL)
        pool._pool.hosts[MOCK_ORIGIN].conns -= 1


async def test_without_the_flag_decisions_run_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks cost O(pool) per decision: off unless asked for."""
    monkeypatch.setenv("ASYNCPOOL_CHECK_INVARIANTS", "0")
    async with mock.MockServer() as server, Transport(dial=server.dial) as pool:
        await get(pool, MOCK_URL)
        pool._pool.hosts[MOCK_ORIGIN].conns += 1
        await get(pool, MOCK_URL)  # unchecked: the corruption goes unnoticed
        pool._pool.hosts[MOCK_ORIGIN].conns -= 1


async def test_a_slot_given_back_twice_raises_even_under_python_O() -> None:
    async with mock.MockServer() as server, Transport(dial=server.dial) as pool:
        await get(pool, MOCK_URL)
        host = pool._pool.hosts[MOCK_ORIGIN]
        host.conns -= 1
        with pytest.raises(PoolInvariantError, match="a host slot is given back once"):
            pool._pool._free_host_slot(host)
        host.conns = 1


async def test_a_shared_http2_dial_goes_on_retrying_for_the_requests_that_wait_on_it() -> None:
    """The request an HTTP/2 dial was made for gives up while another waits on that dial
    (``undialed``); the dial's first attempt then fails. With ``connect_retries`` left it tries
    again for the one still waiting (it gave up, and failed that request with its error)."""
    from tests.h2server import open_h2_server

    first_started, gate = anyio.Event(), anyio.Event()
    attempts = 0

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            first_started.set()
            await gate.wait()
            raise OSError("first attempt refused")
        return await anyio.connect_tcp(host, port)

    async with (
        open_h2_server() as server,
        Transport(http2_prior_knowledge=True, connect_retries=1, dial=dial) as pool,
    ):
        statuses: list[int] = []

        async def second() -> None:
            response = await pool.round_trip(Request("GET", server.url))
            await response.aread()
            statuses.append(response.status_code)

        first = anyio.CancelScope()

        async def first_request() -> None:
            with first:
                await pool.round_trip(Request("GET", server.url))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_request)
            await first_started.wait()
            tg.start_soon(second)
            await wait_until(lambda: pool.stats().waiting == 2)
            assert pool.stats().dialing == 1  # the second waits on the first's HTTP/2 dial
            first.cancel()
            await wait_until(lambda: pool.stats().waiting == 1)
            gate.set()
        assert statuses == [200]
        assert attempts == 2
