"""Self-tests of the in-process test server, using raw anyio sockets as the client."""

from __future__ import annotations

import socket
import ssl

import anyio
import h11
import pytest
from anyio.abc import ByteStream

from tests.servers import ServerConnection, ServerRequest, TestServer, TLSFixture, open_server

pytestmark = pytest.mark.anyio


class RawClient:
    """Minimal HTTP/1.1 client over one anyio stream, parsing responses with h11."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, target: str, method: str = "GET", body: bytes = b""
    ) -> tuple[h11.Response, bytes]:
        headers = [("host", "test"), ("content-length", str(len(body)))]
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        await self.stream.send(data)
        return await self.read_response()

    async def read_response(self) -> tuple[h11.Response, bytes]:
        response, chunks = None, []
        with anyio.fail_after(5):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await receive_or_eof(self.stream))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
        assert response is not None
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return response, b"".join(chunks)


async def receive_or_eof(stream: ByteStream) -> bytes:
    try:
        return await stream.receive()
    except anyio.EndOfStream:
        return b""


async def read_until(stream: ByteStream, suffix: bytes) -> bytes:
    received = b""
    with anyio.fail_after(5):
        while not received.endswith(suffix):
            received += await stream.receive()
    return received


async def read_until_eof(stream: ByteStream) -> bytes:
    chunks = []
    with anyio.fail_after(5):
        while chunk := await receive_or_eof(stream):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_get_root_by_hand(server: TestServer) -> None:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        await stream.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        received = await read_until(stream, b"\r\n\r\nhello")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5\r\n" in received
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.url_for("/x?y=1") == server.url + "/x?y=1"
    [req] = server.requests
    assert (req.method, req.target, req.path, req.header("HOST")) == ("GET", "/", "/", "example")


async def test_keep_alive_and_default_routes(server: TestServer) -> None:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        client = RawClient(stream)
        response, body = await client.request("/echo?a=1&a=2", method="POST", body=b"ping")
        assert (response.status_code, body) == (200, b"ping")
        assert (b"x-request-content-length", b"4") in response.headers
        response, body = await client.request("/stream?chunks=2&size=3")
        assert (b"transfer-encoding", b"chunked") in response.headers
        assert body == b"xxxxxx"
        response, body = await client.request("/status/204")
        assert (response.status_code, body) == (204, b"")
    assert server.connections_accepted == 1
    assert [(r.connection_id, r.index_on_connection) for r in server.requests] == [
        (0, 0),
        (0, 1),
        (0, 2),
    ]
    assert server.requests[0].body == b"ping"
    assert server.requests[0].query == {"a": "1"}
    await server.wait_for_connections_closed()


async def test_unread_body_is_drained_for_keep_alive() -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, body=b"ignored your body")

    async with open_server(handler) as server:
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            client = RawClient(stream)
            await client.request("/", method="POST", body=b"a" * 100_000)
            await client.request("/")
        assert server.connections_accepted == 1
        assert len(server.requests[0].body) == 100_000


async def test_close_idle_connections(server: TestServer) -> None:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        assert (await RawClient(stream).request("/"))[1] == b"hello"
        assert await server.close_idle_connections() == 1
        assert server.open_connections == 0
        assert server.connections[0].closed.is_set()
        assert await read_until_eof(stream) == b""


async def test_connection_close_and_http10(server: TestServer) -> None:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        assert (await RawClient(stream).request("/close"))[1] == b"bye"
        assert await read_until_eof(stream) == b""
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        await stream.send(b"GET /http10 HTTP/1.1\r\nHost: example\r\n\r\n")
        assert await read_until_eof(stream) == b"HTTP/1.0 200 OK\r\n\r\nold school"
    await server.wait_for_connections_closed()
    assert server.connections_accepted == 2


async def test_tls(tls_server: TestServer, tls: TLSFixture) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    stream = await anyio.connect_tcp(
        tls_server.host, tls_server.port, ssl_context=tls.client_context
    )
    async with stream:
        client = RawClient(stream)
        assert (await client.request("/"))[1] == b"hello"
        assert (await client.request("/close"))[1] == b"bye"
        assert await read_until_eof(stream) == b""  # needs close_notify (standard_compatible)
    assert tls_server.connections_accepted == 1


async def test_tls_untrusted_client_is_rejected(tls_server: TestServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await anyio.connect_tcp(
            tls_server.host, tls_server.port, ssl_context=ssl.create_default_context()
        )
    await tls_server.wait_for_connections_closed()


async def test_misbehaving_handlers() -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path == "/raise":
            raise ValueError("boom")
        if req.path == "/reset":
            await conn.close(reset=True)
        await anyio.sleep_forever()

    async with open_server(handler) as server:
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            await stream.send(b"GET /raise HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await read_until_eof(stream) == b""
        assert [type(exc) for exc in server.handler_errors] == [ValueError]
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            await stream.send(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(anyio.BrokenResourceError):
                await read_until_eof(stream)
        stalled = await anyio.connect_tcp(server.host, server.port)
        await stalled.send(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        await server.wait_until(lambda s: len(s.requests) == 3)
    async with stalled:  # leaving open_server did not hang and closed the stalled connection
        assert await read_until_eof(stalled) == b""
    assert server.open_connections == 0


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
async def test_ipv6() -> None:
    async with open_server(host="::1") as server:
        assert server.url == f"http://[::1]:{server.port}"
        async with await anyio.connect_tcp("::1", server.port) as stream:
            assert (await RawClient(stream).request("/"))[1] == b"hello"


async def test_expect_continue_and_bad_request(server: TestServer) -> None:
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        await stream.send(head + b"\r\n")
        assert await read_until(stream, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send(b"hi")
        response, body = await RawClient(stream).read_response()
        assert (response.status_code, body) == (200, b"hi")
    async with await anyio.connect_tcp(server.host, server.port) as stream:
        await stream.send(b"NONSENSE\r\n\r\n")
        assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 400 ")
