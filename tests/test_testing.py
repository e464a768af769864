"""asyncpool.testing: the in-memory stream pair and the scripted server, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

import asyncpool
from asyncpool import Request, Transport
from asyncpool.testing import (
    MockServer,
    Reply,
    ServerConnection,
    ServerRequest,
    memory_stream_pair,
    wait_until,
)

pytestmark = pytest.mark.anyio

URL = "http://example.test/"


async def get(pool: Transport, url: str = URL) -> bytes:
    response = await pool.round_trip(Request("GET", url))
    return await response.aread()


def assert_pool_at_rest(pool: Transport) -> None:
    stats = pool.stats()
    assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0), stats


# -- the stream pair --------------------------------------------------------------------------


async def test_bytes_sent_are_received_in_order_up_to_max_bytes() -> None:
    a, b = memory_stream_pair()
    await a.send(b"hello ")
    await a.send(b"world")
    assert await b.receive(4) == b"hell"
    assert await b.receive() == b"o world"
    await b.send(b"back")
    assert await a.receive() == b"back"


async def test_a_receive_waits_for_data_and_cancelling_it_loses_nothing() -> None:
    a, b = memory_stream_pair()
    with anyio.move_on_after(0):
        await b.receive()
    async with anyio.create_task_group() as tg:

        async def receiver() -> None:
            assert await b.receive() == b"late"

        tg.start_soon(receiver)
        await anyio.lowlevel.checkpoint()
        await a.send(b"late")


async def test_send_eof_ends_the_peers_reads_after_the_data_and_it_may_still_send() -> None:
    a, b = memory_stream_pair()
    await a.send(b"last")
    await a.send_eof()
    assert await b.receive() == b"last"
    with pytest.raises(anyio.EndOfStream):
        await b.receive()
    await b.send(b"reply")
    assert await a.receive() == b"reply"
    with pytest.raises(anyio.ClosedResourceError):
        await a.send(b"more")


async def test_close_gives_the_peer_eof_and_fails_its_sends() -> None:
    a, b = memory_stream_pair()
    await a.send(b"bye")
    await a.aclose()
    await a.aclose()  # idempotent
    assert a.is_closed and b.peer_gone
    assert await b.receive() == b"bye"
    with pytest.raises(anyio.EndOfStream):
        await b.receive()
    with pytest.raises(anyio.BrokenResourceError):
        await b.send(b"x")
    with pytest.raises(anyio.ClosedResourceError):
        await a.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await a.send_eof()


async def test_reset_fails_the_peers_reads_and_sends_at_once() -> None:
    a, b = memory_stream_pair()
    await a.send(b"lost")
    async with anyio.create_task_group() as tg:

        async def parked() -> None:
            with pytest.raises(anyio.BrokenResourceError):
                await a.receive()

        tg.start_soon(parked)
        await anyio.lowlevel.checkpoint()
        b.reset()
    with pytest.raises(anyio.BrokenResourceError):
        await a.send(b"x")
    assert b.is_closed and a.peer_gone


async def test_a_stream_pair_is_a_dial_function_result() -> None:
    client, server = memory_stream_pair()

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return client

    async def serve() -> None:
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            data += await server.receive()
        await server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with anyio.create_task_group() as tg, Transport(dial=dial) as pool:
        tg.start_soon(serve)
        assert await get(pool) == b"ok"


# -- the server, HTTP/1.1 ---------------------------------------------------------------------


async def test_routes_answer_by_path_or_method_and_path_and_requests_are_recorded() -> None:
    routes = {"/": Reply(200, [("x-a", "1")], b"root"), "POST /items": Reply(201, body=b"made")}
    async with MockServer(routes=routes) as server, Transport(dial=server.dial) as pool:
        response = await pool.round_trip(Request("GET", URL, headers={"X-Test": "yes"}))
        assert (response.status_code, response.headers["x-a"]) == (200, "1")
        assert await response.aread() == b"root"
        response = await pool.round_trip(Request("POST", URL + "items?q=1", content=b"data"))
        assert (response.status_code, await response.aread()) == (201, b"made")
        response = await pool.round_trip(Request("GET", URL + "items"))
        assert (response.status_code, await response.aread()) == (404, b"not found")
    first, second, _ = server.requests
    assert (first.method, first.target, first.header("x-test")) == ("GET", "/", "yes")
    assert first.header("host") == "example.test" and first.header("nope") is None
    assert (second.path, second.body, second.index_on_connection) == ("/items", b"data", 1)
    assert server.dials == [("example.test", 80)]


async def test_keep_alive_reuse_shows_in_the_pools_stats() -> None:
    async with MockServer() as server, Transport(dial=server.dial) as pool:
        for _ in range(5):
            assert await get(pool) == b"not found"
        stats = pool.stats()
        assert (stats.dials, stats.reused, stats.idle) == (1, 4, 1)
        assert (server.connections_made, server.open_connections) == (1, 1)
        await server.wait_until(lambda s: s.idle_connections == 1)
    assert server.open_connections == 0


async def test_a_stalled_request_cancelled_leaves_nothing_behind() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.stall()

    async with MockServer(handler) as server, Transport(dial=server.dial) as pool:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(get, pool)
                await server.wait_until(lambda s: s.stalled == 1)
                scope.cancel()
        # The pool closed the connection; the server saw it and dropped the handler.
        await server.wait_until(lambda s: s.open_connections == 0 and s.stalled == 0)
        assert_pool_at_rest(pool)
        assert pool.stats().total == 0


async def test_stall_until_the_test_releases_it_and_a_1xx_first() -> None:
    release = anyio.Event()
    informational: list[int] = []

    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_informational(103, [("link", "</style.css>")])
        await conn.stall(release)
        await conn.respond(200, body=b"late")

    trace = asyncpool.ClientTrace(got_1xx_response=lambda status, _: informational.append(status))
    async with MockServer(handler) as server, Transport(dial=server.dial, trace=trace) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, pool)
            await server.wait_until(lambda s: s.stalled == 1)
            release.set()
        assert informational == [103]


async def drop_second(request: ServerRequest, conn: ServerConnection) -> None:
    if request.index_on_connection == 1:
        await conn.close()
        return
    await conn.respond(200, body=b"ok")


async def reset_second(request: ServerRequest, conn: ServerConnection) -> None:
    if request.index_on_connection == 1:
        await conn.reset()
        return
    await conn.respond(200, body=b"ok")


@pytest.mark.parametrize("handler", [drop_second, reset_second], ids=["close", "reset"])
async def test_a_get_on_a_reused_connection_that_dies_is_retried(handler: object) -> None:
    async with MockServer(handler) as server, Transport(dial=server.dial) as pool:  # type: ignore[arg-type]
        await get(pool)
        assert await get(pool) == b"ok"
        assert (pool.stats().retries, server.connections_made) == (1, 2)
        assert_pool_at_rest(pool)


async def test_a_post_on_a_reused_connection_that_closes_fails_as_server_disconnected() -> None:
    async with MockServer(drop_second) as server, Transport(dial=server.dial) as pool:
        await get(pool)
        with pytest.raises(asyncpool.ServerDisconnected, match=r"example\.test:80"):
            await pool.round_trip(Request("POST", URL, content=b"x"))
        assert pool.stats().retries == 0


async def test_a_reset_on_a_fresh_connection_is_a_read_error_not_retried() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.reset()

    async with MockServer(handler) as server, Transport(dial=server.dial) as pool:
        with pytest.raises(asyncpool.ReadError):
            await get(pool)
        assert (pool.stats().retries, server.connections_made) == (0, 1)


async def test_close_idle_connections_is_seen_by_the_pool_as_a_server_close() -> None:
    async with MockServer() as server, Transport(dial=server.dial) as pool:
        await get(pool)
        assert await server.close_idle_connections() == 1
        await wait_until(lambda: pool.stats().total == 0)
        assert pool.stats().server_closed_idle == 1


async def test_a_refused_dial_is_a_connect_error() -> None:
    async with MockServer() as server, Transport(dial=server.dial) as pool:
        server.refuse_connections = True
        with pytest.raises(asyncpool.ConnectError):
            await get(pool)
        assert pool.stats().failed_dials == 1


async def test_a_streamed_response_and_an_unfinished_one() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200)
        await conn.send_data(b"a")
        if request.path == "/cut":
            return  # unfinished: the connection closes
        await conn.send_data(b"b")
        await conn.end()

    async with MockServer(handler) as server, Transport(dial=server.dial) as pool:
        assert await get(pool) == b"ab"
        with pytest.raises(asyncpool.RemoteProtocolError, match="incomplete"):
            await get(pool, URL + "cut")


async def test_a_handler_error_closes_the_connection_and_is_raised_at_the_end() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        raise ValueError("bug in the handler")

    with pytest.raises(ValueError, match="bug in the handler"):
        async with MockServer(handler) as server, Transport(dial=server.dial) as pool:
            with pytest.raises(asyncpool.ServerDisconnected):
                await get(pool)
            assert len(server.handler_errors) == 1


async def test_a_client_that_leaves_mid_body_ends_its_connection_quietly() -> None:
    scope = anyio.CancelScope()

    async def upload() -> AsyncIterator[bytes]:
        yield b"first chunk"
        scope.cancel()  # the caller gives up with 89 of the 100 bytes unsent
        await anyio.sleep_forever()

    async with MockServer() as server, Transport(dial=server.dial) as pool:
        request = Request("POST", URL, headers={"Content-Length": "100"}, content=upload())
        with scope:
            await pool.round_trip(request)
        await server.wait_until(lambda s: s.open_connections == 0)
        assert await get(pool) == b"not found"
        assert server.handler_errors == [] and server.requests[0].method == "GET"


async def test_a_target_starting_with_two_slashes_is_a_path() -> None:
    routes = {"//files/a": Reply(200, body=b"files"), "/a": Reply(200, body=b"wrong")}
    async with MockServer(routes=routes) as server, Transport(dial=server.dial) as pool:
        assert await get(pool, "http://example.test//files/a?x=1") == b"files"
        assert server.requests[0].path == "//files/a"


async def test_http2_only_actions_say_so_over_http11() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        with pytest.raises(RuntimeError, match="HTTP/2 only"):
            await conn.goaway()
        with pytest.raises(RuntimeError, match="HTTP/2 only"):
            await conn.reset_stream()
        await conn.respond(204)

    async with MockServer(handler) as server, Transport(dial=server.dial) as pool:
        assert await get(pool) == b""


async def test_misuse_is_explained() -> None:
    server = MockServer()
    with pytest.raises(RuntimeError, match="async with"):
        await server.dial("example.test", 80)
    async with server:
        with pytest.raises(RuntimeError, match="entered once"):
            await server.__aenter__()
    with pytest.raises(TimeoutError):
        await wait_until(lambda: False, timeout=0)


# -- the server, HTTP/2 -----------------------------------------------------------------------


def h2_pool(server: MockServer) -> Transport:
    return Transport(dial=server.dial, http2_prior_knowledge=True)


async def test_http2_requests_share_one_connection() -> None:
    body = b"x" * 200_000  # past the initial flow-control windows both ways
    routes = {"POST /": Reply(200, body=body)}
    async with MockServer(routes=routes, http2=True) as server, h2_pool(server) as pool:

        async def post() -> None:
            response = await pool.round_trip(Request("POST", URL, content=body))
            assert response.http_version == "HTTP/2"
            assert await response.aread() == body

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(post)
        assert server.connections_made == 1
        assert sorted(r.stream_id or 0 for r in server.requests) == [1, 3, 5]
        assert all(r.body == body and r.http_version == "2" for r in server.requests)


async def test_http2_goaway_is_retried_on_a_new_connection() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        if request.connection_id == 0:
            await conn.goaway(last_stream_id=0)  # refuses this stream: never processed
            return
        await conn.respond(200, body=b"second connection")

    async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
        assert await get(pool) == b"second connection"
        assert (pool.stats().retries, server.connections_made) == (1, 2)
        await server.wait_until(lambda s: s.open_connections == 1)


async def test_http2_goaway_lets_the_accepted_stream_finish() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.goaway()  # the last stream is this one
        await conn.respond(200, body=b"finished")

    async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
        assert await get(pool) == b"finished"
        assert pool.stats().retries == 0
        await server.wait_until(lambda s: s.open_connections == 0)


async def test_http2_a_handler_error_resets_its_stream_only() -> None:
    release = anyio.Event()

    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        if request.path == "/boom":
            raise ValueError("bug in the handler")
        await conn.stall(release)
        await conn.respond(200, body=b"slow")

    with pytest.raises(ValueError, match="bug in the handler"):
        async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
            async with anyio.create_task_group() as tg:
                tg.start_soon(get, pool, URL + "slow")
                await server.wait_until(lambda s: s.stalled == 1)
                with pytest.raises(asyncpool.StreamReset):
                    await get(pool, URL + "boom")
                release.set()
            assert await get(pool, URL + "again") == b"slow"
            assert server.connections_made == 1


@pytest.mark.parametrize("http2", [False, True])
async def test_a_head_response_has_the_length_and_no_body(http2: bool) -> None:
    routes = {"/": Reply(200, [("content-type", "text/plain")], b"hello")}
    async with (
        MockServer(routes=routes, http2=http2) as server,
        Transport(dial=server.dial, http2_prior_knowledge=http2) as pool,
    ):
        response = await pool.round_trip(Request("HEAD", URL))
        assert (response.headers["content-length"], await response.aread()) == ("5", b"")
        assert await get(pool) == b"hello"  # the connection is still in step


async def test_http2_rst_stream_fails_that_stream_only() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        if request.path == "/reset":
            await conn.reset_stream()
            return
        await conn.respond(200, body=b"ok")

    async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
        with pytest.raises(asyncpool.StreamReset):
            await get(pool, URL + "reset")
        assert await get(pool) == b"ok"
        assert server.connections_made == 1


async def test_http2_stall_cancelled_resets_the_stream_and_the_handler_ends() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        if request.path == "/stall":
            await conn.stall()
        await conn.send_informational(103)
        await conn.send_head(200)
        await conn.send_data(b"streamed")
        await conn.end()

    async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(get, pool, URL + "stall")
                await server.wait_until(lambda s: s.stalled == 1)
                scope.cancel()
        await server.wait_until(lambda s: s.stalled == 0)
        assert await get(pool) == b"streamed"
        assert_pool_at_rest(pool)
        assert server.connections_made == 1


@pytest.mark.parametrize("action", ["close", "reset"])
async def test_http2_connection_lost_mid_request(action: str) -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await (conn.close() if action == "close" else conn.reset())

    async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
        with pytest.raises(asyncpool.ReadError):
            await get(pool)
        await server.wait_until(lambda s: s.open_connections == 0)
        await wait_until(lambda: pool.stats().total == 0)


async def test_http2_unfinished_response_resets_the_stream() -> None:
    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        pass

    async with MockServer(handler, http2=True) as server, h2_pool(server) as pool:
        with pytest.raises(asyncpool.StreamReset):
            await get(pool)
