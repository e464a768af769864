"""101 Switching Protocols and CONNECT tunnels over HTTP/1.1: the connection leaves the pool for
the caller (``Response.upgrade_stream()``, httpx's ``network_stream``), against the WebSocket
echo server and the tunnel of ``tests.websocket``, with both parsers, on asyncio and trio."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpcore
import httpx
import pytest

import asyncpool
from asyncpool._h1.protocol import PARSERS
from asyncpool.httpx import HTTPXTransport
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server, wait_until
from tests.websocket import (
    CLOSE,
    GREETING,
    TEXT,
    FrameReader,
    accept_key,
    echo_frames,
    encode_frame,
    handshake_headers,
    new_key,
    tunnel_handler,
    unasked_101_handler,
    websocket_handler,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("http1_parser", PARSERS, indirect=True),
]


@asynccontextmanager
async def ws_server() -> AsyncIterator[TestServer]:
    async with open_server(websocket_handler) as server:
        yield server


async def handshake(
    pool: asyncpool.Transport, server: TestServer, path: str = "/ws", **kwargs: object
) -> asyncpool.Response:
    key = new_key()
    request = asyncpool.Request("GET", server.url_for(path), headers=handshake_headers(key))
    response = await pool.round_trip(request)
    assert response.status_code == 101
    assert response.headers["sec-websocket-accept"] == accept_key(key)
    return response


async def next_frame(stream: asyncpool.UpgradeStream, reader: FrameReader) -> tuple[int, bytes]:
    frames: list[tuple[int, bytes]] = []
    while not frames:
        data = await stream.read(65536)
        assert data, "the server closed the connection"
        frames = reader.feed(data)
    assert len(frames) == 1
    return frames[0]


async def echo_once(stream: asyncpool.UpgradeStream, text: bytes) -> None:
    await stream.write(encode_frame(TEXT, text, mask=True))
    assert await next_frame(stream, FrameReader()) == (TEXT, text)


def closes(trace_log: list[asyncpool.ConnClosedInfo]) -> asyncpool.ClientTrace:
    return asyncpool.ClientTrace(conn_closed=trace_log.append)


# -- asyncpool's API ---------------------------------------------------------------------------


async def test_websocket_handshake_then_echo(http1_parser: str) -> None:
    closed: list[asyncpool.ConnClosedInfo] = []
    async with ws_server() as server, asyncpool.Transport(trace=closes(closed)) as pool:
        response = await handshake(pool, server)
        assert await response.aread() == b""  # no body: the rest is the new protocol's
        stream = response.upgrade_stream()
        assert response.upgrade_stream() is stream
        # The connection left the pool: no host slot held, and conn_closed said why.
        assert pool.stats().total == 0
        assert [info.reason for info in closed] == [asyncpool.CloseReason.UPGRADED]
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
        assert stream.get_extra_info("client_addr") is not None

        await echo_once(stream, b"hello")
        await echo_once(stream, b"x" * 70000)  # a 64-bit length, several reads
        await stream.write(encode_frame(CLOSE, b"\x03\xe8", mask=True))
        assert await next_frame(stream, FrameReader()) == (CLOSE, b"\x03\xe8")
        assert await stream.read(100) == b""  # the server hung up
        await stream.aclose()
        await server.wait_for_connections_closed()
        assert pool.stats().total == 0
        assert len(closed) == 1


async def test_bytes_right_after_the_101_head_come_first(http1_parser: str) -> None:
    async with ws_server() as server, asyncpool.Transport() as pool:
        response = await handshake(pool, server, "/ws?greet=1")
        stream = response.upgrade_stream()
        frame = encode_frame(TEXT, GREETING, mask=False)
        # They came in the head's read: handed out first, in pieces as asked.
        assert await stream.read(3) == frame[:3]
        piece = await stream.receive(1)
        assert (type(piece), piece) == (bytes, frame[3:4])
        assert await stream.receive(1000) == frame[4:]
        await echo_once(stream, b"after the greeting")
        await stream.aclose()


async def test_the_freed_slot_serves_the_host_while_the_stream_is_open(http1_parser: str) -> None:
    async with ws_server() as server, asyncpool.Transport(max_conns_per_host=1) as pool:
        stream = (await handshake(pool, server)).upgrade_stream()
        # The only slot of the host is free again: a plain request gets a connection.
        async with await pool.round_trip(asyncpool.Request("GET", server.url_for("/"))) as plain:
            assert plain.status_code == 426
            await plain.aread()
        second = (await handshake(pool, server)).upgrade_stream()  # on that connection
        await echo_once(stream, b"one")
        await echo_once(second, b"two")
        stats = pool.stats()
        assert (stats.total, stats.dials, stats.reused) == (0, 2, 1)
        await stream.aclose()
        await second.aclose()
        await server.wait_for_connections_closed()


async def test_the_stream_outlives_the_transport_once_taken(http1_parser: str) -> None:
    async with ws_server() as server:
        async with asyncpool.Transport() as pool:
            stream = (await handshake(pool, server)).upgrade_stream()
        await echo_once(stream, b"still here")
        await stream.aclose()
        await server.wait_for_connections_closed()


async def test_a_response_closed_without_taking_the_stream_closes_it(http1_parser: str) -> None:
    async with ws_server() as server, asyncpool.Transport() as pool:
        response = await handshake(pool, server)
        await response.aclose()
        await server.wait_for_connections_closed()
        with pytest.raises(RuntimeError, match="closed"):
            response.upgrade_stream()
        assert pool.stats().total == 0


async def test_the_transport_closes_a_stream_nobody_took(http1_parser: str) -> None:
    async with ws_server() as server:
        async with asyncpool.Transport() as pool:
            response = await handshake(pool, server)
        await server.wait_for_connections_closed()
        with pytest.raises(RuntimeError, match="closed"):  # not a stream that seems open
            response.upgrade_stream()
        await response.aclose()


async def test_a_collected_response_closes_its_stream(http1_parser: str) -> None:
    async with ws_server() as server, asyncpool.Transport() as pool:
        response = await handshake(pool, server)
        del response
        gc.collect()
        await server.wait_for_connections_closed()
        assert pool.stats().total == 0


async def test_cancelled_while_reading_leaks_nothing(http1_parser: str) -> None:
    async with ws_server() as server, asyncpool.Transport() as pool:
        stream = (await handshake(pool, server)).upgrade_stream()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.read, 100)  # nothing comes: it waits
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        await echo_once(stream, b"the stream survives a cancelled read")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await stream.read(100)
        await stream.aclose()
        await server.wait_for_connections_closed()
        assert pool.stats().total == 0


async def test_a_101_to_a_request_without_upgrade_is_a_protocol_error(http1_parser: str) -> None:
    async with open_server(unasked_101_handler) as server, asyncpool.Transport() as pool:
        with pytest.raises(asyncpool.RemoteProtocolError, match="without an Upgrade field"):
            await pool.round_trip(asyncpool.Request("GET", server.url_for("/")))
        await server.wait_for_connections_closed()
        assert pool.stats().total == 0


async def test_a_101_head_over_the_limit_is_refused(http1_parser: str) -> None:
    async def big_101(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            + b"X-Big: " + b"b" * 5000 + b"\r\n\r\n"
        )  # fmt: skip

    async with (
        open_server(big_101) as server,
        asyncpool.Transport(max_response_header_bytes=1000) as pool,
    ):
        request = asyncpool.Request("GET", server.url_for("/"), headers=handshake_headers("k"))
        with pytest.raises(asyncpool.ResponseHeaderTooLarge):
            await pool.round_trip(request)
        assert pool.stats().total == 0


async def test_a_101_before_the_request_body_was_sent_fails(http1_parser: str) -> None:
    """The server cannot switch in the middle of the request: the connection is closed."""
    never = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await never.wait()

    async def switch_at_once(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        await echo_frames(conn)

    async with open_server(switch_at_once) as server, asyncpool.Transport() as pool:
        headers = handshake_headers(new_key())
        request = asyncpool.Request("POST", server.url_for("/"), headers=headers, content=body())
        with pytest.raises(asyncpool.RemoteProtocolError, match="before the request body"):
            await pool.round_trip(request)
        await server.wait_for_connections_closed()
        assert pool.stats().total == 0


async def test_a_declined_upgrade_is_a_plain_response(http1_parser: str) -> None:
    async with ws_server() as server, asyncpool.Transport() as pool:
        request = asyncpool.Request("GET", server.url_for("/"), headers={"Upgrade": "h2c"})
        async with await pool.round_trip(request) as response:
            assert response.status_code == 426
            assert await response.aread() == b"upgrade to websocket"
            with pytest.raises(RuntimeError, match="no switch of protocols"):
                response.upgrade_stream()
        assert pool.stats().idle == 1  # and the connection is reused


async def test_connect_opens_a_tunnel(http1_parser: str) -> None:
    closed: list[asyncpool.ConnClosedInfo] = []
    async with open_server(tunnel_handler) as server, asyncpool.Transport() as pool:
        request = asyncpool.Request(
            "CONNECT", server.url, target="example.com:443", trace=closes(closed)
        )
        response = await pool.round_trip(request)
        assert (response.status_code, response.reason_phrase) == (200, "Connection established")
        assert server.requests[0].target == "example.com:443"
        tunnel = response.upgrade_stream()
        assert [info.reason for info in closed] == [asyncpool.CloseReason.UPGRADED]
        assert pool.stats().total == 0
        assert await tunnel.read(100) == b"tunnel open\n"  # sent with the 200's head
        await tunnel.write(b"through the tunnel")
        received = b""
        while len(received) < 18:
            received += await tunnel.read(100)
        assert received == b"through the tunnel"
        await tunnel.send_eof()
        assert await tunnel.read(100) == b""
        await tunnel.aclose()
        await server.wait_for_connections_closed()


async def test_a_tunnel_sends_on_after_the_server_half_closes(http1_parser: str) -> None:
    # On asyncio, the server's FIN closed the whole socket: the write after it failed.
    received: list[bytes] = []
    done = anyio.Event()

    async def half_closing(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 200 Connection established\r\n\r\nbye\n")
        await conn._stream.send_eof()  # done writing, still reading
        try:
            while True:
                received.append(await conn._stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            done.set()

    async with open_server(half_closing) as server, asyncpool.Transport() as pool:
        request = asyncpool.Request("CONNECT", server.url, target="example.com:443")
        tunnel = (await pool.round_trip(request)).upgrade_stream()
        assert await tunnel.read(100) == b"bye\n"
        assert await tunnel.read(100) == b""  # the server's end of stream
        await tunnel.write(b"still talking")
        await tunnel.send_eof()
        with anyio.fail_after(5):
            await done.wait()
        assert b"".join(received) == b"still talking"
        await tunnel.aclose()


async def test_a_refused_connect_is_a_plain_response(http1_parser: str) -> None:
    async with open_server(tunnel_handler) as server, asyncpool.Transport() as pool:
        request = asyncpool.Request("CONNECT", server.url, target="refuse.example:443")
        async with await pool.round_trip(request) as response:
            assert response.status_code == 407
            assert await response.aread() == b"who are you"
            with pytest.raises(RuntimeError):
                response.upgrade_stream()


async def test_through_the_client(http1_parser: str) -> None:
    """``Client.send`` leaves the response open; ``Client.request`` closes it, and with it the
    connection it switched protocols on."""
    async with ws_server() as server, asyncpool.Client() as client:
        headers = handshake_headers(new_key())
        response = await client.send(
            client.build_request("GET", server.url_for("/ws"), headers=headers)
        )
        assert response.status_code == 101 and await response.aread() == b""
        stream = response.upgrade_stream()
        await echo_once(stream, b"via Client")
        await stream.aclose()
        response = await client.get(server.url_for("/ws"), headers=handshake_headers(new_key()))
        assert response.status_code == 101
        with pytest.raises(RuntimeError, match="closed"):
            response.upgrade_stream()
        await server.wait_for_connections_closed()


# -- httpx ---------------------------------------------------------------------------------------


async def test_httpx_network_stream_after_101(http1_parser: str) -> None:
    async with (
        ws_server() as server,
        httpx.AsyncClient(transport=HTTPXTransport(), base_url=server.url) as client,
    ):
        key = new_key()
        async with client.stream("GET", "/ws?greet=1", headers=handshake_headers(key)) as response:
            assert response.status_code == 101
            assert response.headers["sec-websocket-accept"] == accept_key(key)
            stream = response.extensions["network_stream"]
            assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
            reader = FrameReader()
            assert reader.feed(await stream.read(65536, timeout=5)) == [(TEXT, GREETING)]
            await stream.write(encode_frame(TEXT, b"over httpx", mask=True), timeout=5)
            frames: list[tuple[int, bytes]] = []
            while not frames:
                frames = reader.feed(await stream.read(65536))
            assert frames == [(TEXT, b"over httpx")]
            with pytest.raises(httpcore.ReadTimeout):
                await stream.read(65536, timeout=0)
            with pytest.raises(NotImplementedError):
                await stream.start_tls(None)
            assert await response.aread() == b""
        # As with httpcore, closing the response closed the connection.
        await server.wait_for_connections_closed()
        with pytest.raises(httpcore.ReadError):
            await stream.read(10)


async def test_httpx_connect_tunnel(http1_parser: str) -> None:
    async with (
        open_server(tunnel_handler) as server,
        httpx.AsyncClient(transport=HTTPXTransport()) as client,
    ):
        async with client.stream(
            "CONNECT", server.url, extensions={"target": b"example.com:443"}
        ) as response:
            assert response.status_code == 200
            stream = response.extensions["network_stream"]
            assert await stream.read(100) == b"tunnel open\n"
            await stream.write(b"ping")
            assert await stream.read(100) == b"ping"
            await stream.aclose()
        await server.wait_for_connections_closed()
        assert server.requests[0].target == "example.com:443"


async def test_httpx_ws(http1_parser: str) -> None:
    httpx_ws = pytest.importorskip("httpx_ws")
    transport = HTTPXTransport()
    async with ws_server() as server, httpx.AsyncClient(transport=transport) as client:
        async with httpx_ws.aconnect_ws(server.url_for("/ws"), client) as ws:
            await ws.send_text("hello over httpx-ws")
            assert await ws.receive_text() == "hello over httpx-ws"
            await ws.send_bytes(b"\x00\x01")
            assert await ws.receive_bytes() == b"\x00\x01"
            assert transport.pool.stats().total == 0
        await server.wait_for_connections_closed()
        await wait_until(lambda: transport.pool.stats().total == 0)
