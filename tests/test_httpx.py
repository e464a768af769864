"""asyncpool.httpx.HTTPXTransport: httpx.AsyncClient on the pool, against the in-process
servers, on asyncio and trio."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream

import asyncpool
from asyncpool._compression import ACCEPT_ENCODING
from asyncpool.httpx import HTTPXTransport, _Exchange, _map_error, _NetworkStream
from tests.h2server import open_h2_server
from tests.servers import (
    ServerConnection,
    ServerRequest,
    TestServer,
    TLSFixture,
    default_handler,
    open_server,
    wait_until,
)

pytestmark = pytest.mark.anyio

NO_TIMEOUT = httpx.Timeout(None)


def client_for(transport: HTTPXTransport, server: TestServer | None = None) -> httpx.AsyncClient:
    base_url = server.url if server is not None else ""
    return httpx.AsyncClient(transport=transport, base_url=base_url)


class Recorder:
    """A trace callback that keeps (event name, info) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        self.events.append((name, info))


class AsyncRecorder(Recorder):
    async def __call__(self, name: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self.events.append((name, info))


def exchange_events(prefix: str, *, body: bool = True) -> list[str]:
    """httpcore's events for one request on an open connection."""
    names = ["send_request_headers", "send_request_body", "receive_response_headers"]
    if body:
        names.append("receive_response_body")
    names.append("response_closed")
    return [f"{prefix}.{name}.{end}" for name in names for end in ("started", "complete")]


CONNECT_TCP = ["connection.connect_tcp.started", "connection.connect_tcp.complete"]
START_TLS = ["connection.start_tls.started", "connection.start_tls.complete"]


@asynccontextmanager
async def silent_server(release: anyio.Event) -> AsyncIterator[int]:
    """A TCP server that accepts connections and says nothing (a stalled TLS handshake)
    until ``release`` is set, then closes them; yields its port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def hold(stream: SocketStream) -> None:
        async with stream:
            await release.wait()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        yield listener.extra(SocketAttribute.local_port)
        tg.cancel_scope.cancel()


def refused_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def stall_handler(req: ServerRequest, conn: ServerConnection) -> None:
    """``/stall``: never answers; ``/stall-body``: a head and part of the body, then nothing;
    ``/stall-upload``: reads nothing; anything else: ``default_handler``."""
    if req.path in ("/stall", "/stall-upload"):
        await anyio.sleep_forever()
    elif req.path == "/stall-body":
        await conn.send_head(200, [("content-length", "100")])
        await conn.send_data(b"x" * 10)
        await anyio.sleep_forever()
    else:
        await default_handler(req, conn)


# ------------------------------------------------------------------ layering


async def test_import_asyncpool_does_not_import_httpx() -> None:
    code = "import asyncpool, sys; assert 'httpx' not in sys.modules, 'httpx imported'"
    result = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 0, result.stderr.decode()


# ------------------------------------------------------------------ requests and bodies


async def test_get_and_post_json(server: TestServer) -> None:
    async with client_for(HTTPXTransport(), server) as client:
        response = await client.get("/")
        assert (response.status_code, response.text) == (200, "hello")
        assert response.headers["content-type"] == "text/plain"

        response = await client.post("/echo", json={"a": [1, 2]})
        assert response.json() == {"a": [1, 2]}
        assert response.headers["x-request-content-length"] == str(len(response.content))

    request = server.requests[1]
    assert request.method == "POST"
    assert request.header("content-type") == "application/json"
    assert request.header("host") == f"127.0.0.1:{server.port}"


async def test_request_headers_are_sent_as_httpx_built_them(server: TestServer) -> None:
    async with client_for(HTTPXTransport(), server) as client:
        response = await client.get("/headers-echo", headers={"X-Custom": "Yes"})
    sent = dict(response.json())
    assert sent["x-custom"] == "Yes"
    assert "gzip" in sent["accept-encoding"]  # httpx's own, not the pool's
    assert "user-agent" in sent
    raw_names = [name for name, _ in server.requests[0].raw_headers]
    assert "X-Custom" in raw_names  # the case httpx kept


async def test_requests_without_a_body_are_framed_as_httpx_built_them(server: TestServer) -> None:
    """An empty body is no body for the pool: GET and DELETE go without framing fields,
    POST and PUT with httpx's Content-Length: 0, on every request alike."""
    async with client_for(HTTPXTransport(), server) as client:
        for _ in range(2):  # the second request takes the fields the pool made for the first
            for method in ("GET", "DELETE", "POST", "PUT"):
                response = await client.request(method, "/echo")
                assert (response.status_code, response.content) == (200, b"")
    sent = [
        (request.method, request.header("content-length"), request.header("transfer-encoding"))
        for request in server.requests
    ]
    framing = [("GET", None, None), ("DELETE", None, None), ("POST", "0", None), ("PUT", "0", None)]
    assert sent == framing * 2


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-bad", b"a\nb")],
        [(b"x-bad", b"a\x00b")],
        [(b"x-bad", b"a\rb")],
        [(b"x-bad", b" leading")],
        [(b"bad name", b"v")],
        [(b"bad:name", b"v")],
        [(b"", b"v")],
        [(b"host", b"a"), (b"Host", b"b")],
    ],
)
async def test_header_fields_the_wire_refuses_are_a_local_protocol_error(
    server: TestServer, headers: list[tuple[bytes, bytes]]
) -> None:
    """httpx's fields go to the pool unchecked by the adapter: the pool's own check of what it
    sends refuses these before any connection is taken."""
    transport = HTTPXTransport()
    async with client_for(transport, server) as client:
        request = client.build_request("GET", "/")
        request.headers = httpx.Headers([*request.headers.raw, *headers])
        for _ in range(2):  # refused each time: a bad field list is never kept
            with pytest.raises(httpx.LocalProtocolError):
                await client.send(request)
        assert (await client.get("/")).text == "hello"
    assert transport.pool.stats().dials == 1
    assert len(server.requests) == 1


async def test_streaming_upload(server: TestServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three"):
            yield part

    async with client_for(HTTPXTransport(), server) as client:
        response = await client.post("/echo", content=body())
    assert response.text == "one two three"
    assert response.headers["x-request-transfer-encoding"] == "chunked"


async def test_stream_aiter_bytes_and_aiter_raw(server: TestServer) -> None:
    async with client_for(HTTPXTransport(), server) as client:
        async with client.stream("GET", "/stream?chunks=5&size=100") as response:
            chunks = [chunk async for chunk in response.aiter_bytes()]
        assert b"".join(chunks) == b"x" * 500

        async with client.stream("GET", "/gzip") as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert response.headers["content-encoding"] == "gzip"
        assert gzip.decompress(raw) == b"hello gzip" * 100


async def test_gzip_is_decoded_once(server: TestServer) -> None:
    async with client_for(HTTPXTransport(), server) as client:
        response = await client.get("/gzip")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == "hello gzip" * 100
    assert "gzip" in (server.requests[0].header("accept-encoding") or "")


async def test_pool_compression_on_without_httpx_accept_encoding(server: TestServer) -> None:
    """With disable_compression=False and httpx's Accept-Encoding removed, the pool asks for
    gzip and decodes it itself; httpx sees a plain body."""
    async with client_for(HTTPXTransport(disable_compression=False), server) as client:
        request = client.build_request("GET", "/gzip")
        del request.headers["accept-encoding"]
        response = await client.send(request)
    assert "content-encoding" not in response.headers
    assert response.text == "hello gzip" * 100
    assert server.requests[0].header("accept-encoding") == ACCEPT_ENCODING


async def test_early_close_of_a_streamed_body(server: TestServer) -> None:
    transport = HTTPXTransport()
    async with client_for(transport, server) as client:
        # Closed before its end. (Breaking out of `response.aiter_bytes()` would abandon
        # httpx's own async generators, which trio reports as a ResourceWarning.)
        async with client.stream("GET", "/stream?chunks=1000&size=1000") as response:
            assert response.status_code == 200
            assert transport.pool.stats().in_use == 1
        await server.wait_for_connections_closed()
        assert transport.pool.stats().total == 0
        assert (await client.get("/")).text == "hello"


async def test_reuse_10_requests_1_dial(server: TestServer) -> None:
    transport = HTTPXTransport()
    async with client_for(transport, server) as client:
        for _ in range(10):
            assert (await client.get("/")).status_code == 200
        stats = transport.pool.stats()
    assert (stats.dials, stats.reused) == (1, 9)
    assert server.connections_accepted == 1


async def test_extensions_http_version_reason_phrase_network_stream(server: TestServer) -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [], b"ok", reason="Fine Thanks")

    async with open_server(handler) as srv, client_for(HTTPXTransport(), srv) as client:
        response = await client.get("/")
        assert response.http_version == "HTTP/1.1"
        assert response.extensions["http_version"] == b"HTTP/1.1"
        assert response.reason_phrase == "Fine Thanks"
        assert "stream_id" not in response.extensions
        stream = response.extensions["network_stream"]
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", srv.port)
        client_addr = stream.get_extra_info("client_addr")
        assert client_addr[0] == "127.0.0.1"
        sock = stream.get_extra_info("socket")
        assert sock.getsockname() == client_addr
        assert stream.get_extra_info("ssl_object") is None
        assert stream.get_extra_info("is_readable") is None
        assert str(client_addr[1]) in repr(stream)


async def test_network_stream_of_a_streamed_tls_body(
    tls_server: TestServer, tls: TLSFixture
) -> None:
    transport = HTTPXTransport(tls_config=tls.client_context)
    async with client_for(transport, tls_server) as client:
        async with client.stream("GET", "/stream?chunks=3") as response:
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            assert ssl_object.server_hostname == "127.0.0.1"
            await response.aread()
        # A body that came whole with its head: found among the pool's connections.
        response = await client.get("/")
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)


async def test_target_and_sni_hostname_extensions(tls_server: TestServer, tls: TLSFixture) -> None:
    transport = HTTPXTransport(tls_config=tls.client_context)
    async with client_for(transport, tls_server) as client:
        response = await client.get(
            "/", extensions={"target": b"/echo?x=1", "sni_hostname": "localhost"}
        )
        assert response.status_code == 200
        assert tls_server.requests[0].target == "/echo?x=1"
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.server_hostname == "localhost"

        with pytest.raises(httpx.ConnectError) as info:
            await client.get("/", extensions={"sni_hostname": "example.invalid"})
        assert isinstance(info.value.__cause__, asyncpool.TLSError)


async def test_http2_prior_knowledge() -> None:
    recorder = Recorder()
    async with (
        open_h2_server() as server,
        httpx.AsyncClient(transport=HTTPXTransport(http2_prior_knowledge=True)) as client,
    ):
        first = await client.get(server.url_for("/"), extensions={"trace": recorder})
        second = await client.post(server.url_for("/echo"), content=b"abc")
        async with client.stream("GET", server.url_for("/stream?chunks=4&size=5")) as third:
            body = await third.aread()
    assert (first.status_code, first.text, first.http_version) == (200, "hello", "HTTP/2")
    assert first.extensions["http_version"] == b"HTTP/2"
    assert first.reason_phrase == "OK"  # httpx's, as HTTP/2 has none
    assert (first.extensions["stream_id"], second.extensions["stream_id"]) == (1, 3)
    assert third.extensions["stream_id"] == 5
    assert second.text == "abc"
    assert body == b"x" * 20
    assert first.extensions["network_stream"].get_extra_info("server_addr") == (
        "127.0.0.1",
        server.port,
    )
    assert recorder.names == [
        *CONNECT_TCP,
        "http2.send_connection_init.started",
        "http2.send_connection_init.complete",
        "http2.receive_remote_settings.started",
        "http2.receive_remote_settings.complete",
        *exchange_events("http2"),
    ]
    status, headers = recorder.events[-5][1]["return_value"]
    assert status == 200
    assert (b"content-type", b"text/plain") in headers


# ------------------------------------------------------------------ trace extension


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_trace_event_names_in_order(server: TestServer, kind: str) -> None:
    recorder = Recorder() if kind == "sync" else AsyncRecorder()
    async with client_for(HTTPXTransport(), server) as client:
        await client.get("/", extensions={"trace": recorder})
        await client.get("/", extensions={"trace": recorder})
        async with client.stream("HEAD", "/", extensions={"trace": recorder}):
            pass
    assert recorder.names == [
        *CONNECT_TCP,
        *exchange_events("http11"),
        *exchange_events("http11"),
        *exchange_events("http11", body=False),
    ]
    started = dict(recorder.events)["http11.send_request_headers.started"]
    assert isinstance(started["request"], httpx.Request)
    connect = recorder.events[0][1]
    assert (connect["host"], connect["port"]) == ("127.0.0.1", server.port)
    version, status, reason, headers = dict(recorder.events)[
        "http11.receive_response_headers.complete"
    ]["return_value"]
    assert (version, status, reason) == (b"HTTP/1.1", 200, b"OK")
    assert (b"content-length", b"5") in headers


async def test_trace_event_names_match_httpcore(tls_server: TestServer, tls: TLSFixture) -> None:
    """The same requests through httpx's own transport (httpcore) give the same names."""

    async def names_for(transport: httpx.AsyncBaseTransport) -> list[str]:
        recorder = AsyncRecorder()
        async with client_for(transport, tls_server) as client:  # type: ignore[arg-type]
            await client.get("/", extensions={"trace": recorder})
            await client.post("/echo", content=b"hi", extensions={"trace": recorder})
            async with client.stream("GET", "/stream", extensions={"trace": recorder}):
                pass
        return recorder.names

    ours = await names_for(HTTPXTransport(tls_config=tls.client_context))
    # httpcore sets its ALPN protocols on the context it is given: not the shared one.
    theirs_context = ssl.create_default_context()
    tls.ca.configure_trust(theirs_context)
    theirs = await names_for(httpx.AsyncHTTPTransport(verify=theirs_context))
    assert ours == theirs
    assert ours[:4] == CONNECT_TCP + START_TLS


async def test_trace_failed_events(server: TestServer) -> None:
    recorder = Recorder()
    async with client_for(HTTPXTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{refused_port()}/", extensions={"trace": recorder})
        assert recorder.names == ["connection.connect_tcp.started", "connection.connect_tcp.failed"]
        assert isinstance(recorder.events[1][1]["exception"], OSError)

        recorder.events.clear()
        async with open_server(stall_handler) as srv:
            with pytest.raises(httpx.ReadTimeout) as info:
                await client.get(
                    srv.url_for("/stall"),
                    timeout=httpx.Timeout(5, read=0.05),
                    extensions={"trace": recorder},
                )
        assert recorder.names == [
            *CONNECT_TCP,
            *exchange_events("http11")[:5],
            "http11.receive_response_headers.failed",
            "http11.response_closed.started",
            "http11.response_closed.complete",
        ]
        assert recorder.events[-3][1]["exception"] is info.value


async def test_trace_of_a_retried_request() -> None:
    """The second request on a connection is dropped by the server unanswered: the pool
    retries it on a new connection, and the trace shows both attempts."""

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.index_on_connection == 1:
            await conn.close()
        else:
            await conn.respond(200, [], b"ok")

    recorder = Recorder()
    transport = HTTPXTransport()
    async with open_server(handler) as srv, client_for(transport, srv) as client:
        await client.get("/")
        response = await client.get("/", extensions={"trace": recorder})
        assert response.text == "ok"
        assert transport.pool.stats().retries == 1
    first_attempt = exchange_events("http11")[:5]
    assert recorder.names == [
        *first_attempt,
        "http11.receive_response_headers.failed",
        "http11.response_closed.started",
        "http11.response_closed.complete",
        *CONNECT_TCP,
        *exchange_events("http11"),
    ]
    assert isinstance(recorder.events[5][1]["exception"], asyncpool.ServerDisconnected)


async def test_trace_callback_error_propagates_and_frees_the_connection(
    server: TestServer,
) -> None:
    def trace(name: str, info: dict[str, Any]) -> None:
        if name == "http11.receive_response_headers.complete":
            raise ValueError("boom")

    transport = HTTPXTransport()
    async with client_for(transport, server) as client:
        with pytest.raises(ValueError, match="boom"):
            await client.get("/stream", extensions={"trace": trace})
        assert transport.pool.stats().in_use == 0


async def test_client_trace_extension_is_composed(server: TestServer) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    recorder = Recorder()
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    async with client_for(HTTPXTransport(), server) as client:
        await client.get("/", extensions={"client_trace": trace, "trace": recorder})
        await client.get("/", extensions={"client_trace": trace})
    assert [info.reused for info in infos] == [False, True]
    assert recorder.names[:2] == CONNECT_TCP


# ------------------------------------------------------------------ timeouts


async def test_read_timeout_waiting_for_the_head() -> None:
    async with open_server(stall_handler) as srv, client_for(HTTPXTransport(), srv) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get("/stall", timeout=httpx.Timeout(5, read=0.05))
        assert "read timeout" in str(info.value)
        assert info.value.request.url.path == "/stall"
        assert (await client.get("/")).text == "hello"  # the pool is fine


async def test_read_timeout_in_the_body() -> None:
    recorder = Recorder()
    transport = HTTPXTransport()
    async with open_server(stall_handler) as srv, client_for(transport, srv) as client:
        async with client.stream(
            "GET",
            "/stall-body",
            timeout=httpx.Timeout(5, read=0.05),
            extensions={"trace": recorder},
        ) as response:
            with pytest.raises(httpx.ReadTimeout):
                await response.aread()
        assert transport.pool.stats().total == 0
    assert recorder.names[-4:] == [
        "http11.receive_response_body.started",
        "http11.receive_response_body.failed",
        "http11.response_closed.started",
        "http11.response_closed.complete",
    ]


async def test_a_body_that_arrived_whole_is_read_whatever_its_read_timeout(
    server: TestServer,
) -> None:
    """A body all in when its head came has no read left to wait for: it is read with no read
    deadline at all (as httpcore reads what h11 holds already, without the socket), while a body
    still on its way gets one per read (test_read_timeout_in_the_body)."""
    recorder = Recorder()
    transport = HTTPXTransport()
    async with (
        client_for(transport, server) as client,
        client.stream("GET", "/", extensions={"trace": recorder}) as response,
    ):
        # The connection is back in the pool once the pool has the whole body.
        await wait_until(lambda: transport.pool.stats().idle == 1)
        response.request.extensions["timeout"]["read"] = 0  # what the adapter reads from
        assert await response.aread() == b"hello"
    assert recorder.names[-4:] == [
        "http11.receive_response_body.started",
        "http11.receive_response_body.complete",
        "http11.response_closed.started",
        "http11.response_closed.complete",
    ]


class Endless(httpx.AsyncByteStream):
    """An upload that never ends. (Not an async generator: the pool abandons an upload that
    timed out, and trio warns about an abandoned async generator.)"""

    def __aiter__(self) -> Endless:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        return b"u" * 65536


async def test_write_timeout() -> None:
    transport = HTTPXTransport()
    async with open_server(stall_handler) as srv, client_for(transport, srv) as client:
        request = client.build_request(
            "POST",
            "/stall-upload",
            headers={"transfer-encoding": "chunked"},
            timeout=httpx.Timeout(5, write=0.1),
        )
        request.stream = Endless()
        with pytest.raises(httpx.WriteTimeout):
            await client.send(request)
        assert transport.pool.stats().total == 0


async def test_connect_timeout_on_a_stalled_tls_handshake(tls: TLSFixture) -> None:
    recorder = Recorder()
    release = anyio.Event()
    transport = HTTPXTransport(tls_config=tls.client_context)
    async with silent_server(release) as port, client_for(transport) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(
                f"https://127.0.0.1:{port}/",
                timeout=httpx.Timeout(5, connect=0.1),
                extensions={"trace": recorder},
            )
        # The dial has the request's connect timeout too (as httpcore's): it gives up as well.
        release.set()
        await wait_until(lambda: transport.pool.stats().dialing == 0)
        assert transport.pool.stats().failed_dials == 1
    assert recorder.names == [
        *CONNECT_TCP,
        "connection.start_tls.started",
        "connection.start_tls.failed",
    ]
    assert recorder.events[2][1]["server_hostname"] == "127.0.0.1"
    assert recorder.events[2][1]["ssl_context"] is tls.client_context


async def test_connect_timeout_with_a_dial_function_that_never_connects() -> None:
    calls: list[tuple[str, int]] = []

    async def never(host: str, port: int) -> anyio.abc.ByteStream:
        calls.append((host, port))
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    recorder = Recorder()
    async with client_for(HTTPXTransport(dial=never)) as client:
        with pytest.raises(httpx.ConnectTimeout) as info:
            await client.get(
                "http://127.0.0.1:9/",
                timeout=httpx.Timeout(5, connect=0.05),
                extensions={"trace": recorder},
            )
    assert calls == [("127.0.0.1", 9)]
    assert recorder.names == ["connection.connect_tcp.started", "connection.connect_tcp.failed"]
    assert recorder.events[1][1]["exception"] is info.value


async def test_dial_function_that_connects(server: TestServer) -> None:
    dialed: list[int] = []

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        dialed.append(port)
        return await anyio.connect_tcp(host, port)

    recorder = Recorder()
    async with client_for(HTTPXTransport(dial=dial), server) as client:
        for _ in range(2):
            response = await client.get("/", extensions={"trace": recorder})
            assert response.text == "hello"
    assert dialed == [server.port]
    assert recorder.names == [*CONNECT_TCP, *exchange_events("http11"), *exchange_events("http11")]


async def test_dial_function_failure_is_a_connect_error() -> None:
    async def refuse(host: str, port: int) -> anyio.abc.ByteStream:
        raise ConnectionRefusedError("no")

    async with client_for(HTTPXTransport(dial=refuse)) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get("http://127.0.0.1:9/")
    assert isinstance(info.value.__cause__, asyncpool.ConnectError)


async def test_pool_dial_timeout_maps_to_connect_timeout() -> None:
    async def never(host: str, port: int) -> anyio.abc.ByteStream:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with client_for(HTTPXTransport(dial=never, dial_timeout=0.05)) as client:
        with pytest.raises(httpx.ConnectTimeout) as info:
            await client.get("http://127.0.0.1:9/", timeout=NO_TIMEOUT)
    assert isinstance(info.value.__cause__, asyncpool.ConnectTimeout)


async def test_pool_timeout() -> None:
    release = anyio.Event()

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path == "/hold":
            await conn.send_head(200, [])
            await conn.send_data(b"held")
            await release.wait()
            await conn.end()
        else:
            await default_handler(req, conn)

    transport = HTTPXTransport(max_conns_per_host=1)
    async with open_server(handler) as srv, client_for(transport, srv) as client:
        async with client.stream("GET", "/hold") as held:
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/", timeout=httpx.Timeout(5, pool=0.05))
            assert transport.pool.stats().waiting == 0
            release.set()
            assert await held.aread() == b"held"
        assert (await client.get("/")).text == "hello"
        assert transport.pool.stats().dials == 1


async def test_response_header_timeout_maps_to_read_timeout() -> None:
    transport = HTTPXTransport(response_header_timeout=0.05)
    async with open_server(stall_handler) as srv, client_for(transport, srv) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get("/stall", timeout=NO_TIMEOUT)
    assert isinstance(info.value.__cause__, asyncpool.ResponseHeaderTimeout)


# ------------------------------------------------------------------ errors


async def test_connection_refused_is_a_connect_error() -> None:
    async with client_for(HTTPXTransport()) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(f"http://127.0.0.1:{refused_port()}/")
    assert isinstance(info.value.__cause__, asyncpool.ConnectError)
    assert info.value.request.method == "GET"


async def test_server_closing_without_a_response_is_a_remote_protocol_error() -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.close()

    async with open_server(handler) as srv, client_for(HTTPXTransport(), srv) as client:
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await client.get("/")
    assert isinstance(info.value.__cause__, asyncpool.ServerDisconnected)


async def test_connection_lost_mid_body_is_a_read_error() -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [])
        await conn.send_data(b"part")
        await conn.close(reset=True)

    async with open_server(handler) as srv, client_for(HTTPXTransport(), srv) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as info:
            await client.get("/")
    assert isinstance(info.value.__cause__, asyncpool.HTTPError)


async def test_invalid_requests() -> None:
    transport = HTTPXTransport()
    async with transport:
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))
        with pytest.raises(httpx.LocalProtocolError):
            await transport.handle_async_request(
                httpx.Request("GET", "http://127.0.0.1:9/", headers={"x-bad": "a\nb"})
            )
        with pytest.raises(TypeError, match="async request body"):
            await transport.handle_async_request(
                httpx.Request("POST", "http://127.0.0.1:9/", content=iter([b"sync"]))
            )


async def test_request_body_error_propagates(server: TestServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        raise ValueError("the body broke")

    recorder = Recorder()
    transport = HTTPXTransport()
    async with client_for(transport, server) as client:
        with pytest.raises(ValueError, match="the body broke"):
            await client.post("/echo", content=body(), extensions={"trace": recorder})
        assert transport.pool.stats().in_use == 0
    assert "http11.send_request_body.started" in recorder.names


ERRORS: list[tuple[asyncpool.HTTPError, type[Exception]]] = [
    (asyncpool.ConnectError("x"), httpx.ConnectError),
    (asyncpool.TLSError("x"), httpx.ConnectError),
    (asyncpool.ConnectTimeout("x"), httpx.ConnectTimeout),
    (asyncpool.TLSHandshakeTimeout("x"), httpx.ConnectTimeout),
    (asyncpool.ResponseHeaderTimeout("x"), httpx.ReadTimeout),
    (asyncpool.TimeoutError("x"), httpx.TimeoutException),
    (asyncpool.WriteError("x"), httpx.WriteError),
    (asyncpool.ServerDisconnected("x"), httpx.RemoteProtocolError),
    (asyncpool.ReadError("x"), httpx.ReadError),
    (asyncpool.NetworkError("x"), httpx.NetworkError),
    (asyncpool.RemoteProtocolError("x"), httpx.RemoteProtocolError),
    (asyncpool.StreamReset("x"), httpx.RemoteProtocolError),
    (asyncpool.ResponseHeaderTooLarge("x"), httpx.RemoteProtocolError),
    (asyncpool.DecodingError("x"), httpx.DecodingError),
    (asyncpool.DecompressionBomb("x"), httpx.DecodingError),
    (asyncpool.ResponseTooLarge("x"), httpx.RemoteProtocolError),
    (asyncpool.LocalProtocolError("x"), httpx.LocalProtocolError),
    (asyncpool.InvalidURL("x"), httpx.InvalidURL),
    (asyncpool.PoolClosed("x"), httpx.TransportError),
    (asyncpool.HTTPError("x"), httpx.TransportError),
]


@pytest.mark.parametrize(("error", "expected"), ERRORS, ids=lambda v: type(v).__name__)
async def test_error_mapping_table(error: asyncpool.HTTPError, expected: type[Exception]) -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    mapped = _map_error(error, request)
    assert type(mapped) is expected
    assert str(mapped) == str(error)
    if isinstance(mapped, httpx.RequestError):
        assert mapped.request is request


# ------------------------------------------------------------------ life cycle


async def test_closed_and_reopened(server: TestServer) -> None:
    transport = HTTPXTransport()
    async with transport:
        pass
    await transport.aclose()  # idempotent
    with pytest.raises(httpx.TransportError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", server.url))
    with pytest.raises(RuntimeError, match="opened once"):
        await transport.__aenter__()
    await HTTPXTransport().aclose()  # never opened: nothing to close


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_response_stream_aclose_is_idempotent_and_completes_when_cancelled(
    kind: str,
) -> None:
    recorder = Recorder() if kind == "sync" else AsyncRecorder()
    transport = HTTPXTransport()
    async with open_server(stall_handler) as srv, client_for(transport, srv) as client:
        async with client.stream("GET", "/stall-body", extensions={"trace": recorder}) as response:
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            assert transport.pool.stats().in_use == 1
            with anyio.CancelScope() as scope:
                scope.cancel()
                await response.aclose()
            assert transport.pool.stats().total == 0  # closed, cancelled or not
            await stream.aclose()  # again: nothing happens
        if kind == "sync":
            assert recorder.names.count("http11.response_closed.complete") == 1
            assert recorder.names[-1] == "http11.response_closed.complete"
        else:  # the async callback was cancelled: its events are lost, not the close
            assert "http11.response_closed.started" not in recorder.names
        # Iterating a closed stream ends at once.
        assert [chunk async for chunk in stream] == []


async def test_cancelled_request_frees_its_slot() -> None:
    transport = HTTPXTransport()
    async with open_server(stall_handler) as srv, client_for(transport, srv) as client:
        async with anyio.create_task_group() as tg:

            async def get() -> None:
                await client.get("/stall", timeout=NO_TIMEOUT)

            tg.start_soon(get)
            await srv.wait_until(lambda s: len(s.requests) == 1)
            tg.cancel_scope.cancel()
        assert transport.pool.stats().total == 0
        assert (await client.get("/")).text == "hello"


async def test_many_concurrent_requests(server: TestServer) -> None:
    transport = HTTPXTransport(max_conns_per_host=4)
    results: list[int] = []
    async with client_for(transport, server) as client:

        async def get() -> None:
            results.append((await client.get("/bytes?n=1000")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get)
        stats = transport.pool.stats()
    assert results == [200] * 50
    assert stats.dials <= 4
    assert stats.in_use == 0


async def test_large_bodies(server: TestServer) -> None:
    """A body large enough to stream (not complete with the head) is read whole."""
    async with client_for(HTTPXTransport(), server) as client:
        response = await client.get("/bytes?n=300000")
        assert response.content == b"x" * 300000
        payload = {"k": "v" * 100000}
        response = await client.post("/echo", json=payload)
        assert json.loads(response.content) == payload


async def test_dns_then_connect_with_a_host_name(server: TestServer) -> None:
    recorder = Recorder()
    async with client_for(HTTPXTransport()) as client:
        response = await client.get(
            f"http://localhost:{server.port}/", extensions={"trace": recorder}
        )
    assert response.text == "hello"
    connection = [name for name in recorder.names if name.startswith("connection.")]
    # One attempt per address until one connects (::1 may come first and be refused).
    assert connection[-2:] == CONNECT_TCP
    assert recorder.names[len(connection) :] == exchange_events("http11")


class Held(httpx.AsyncByteStream):
    """A request body that sends one chunk, then waits until the connection gives up on it."""

    def __init__(self) -> None:
        self.sent = False

    def __aiter__(self) -> Held:
        return self

    async def __anext__(self) -> bytes:
        if not self.sent:
            self.sent = True
            return b"first"
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_answered_before_the_request_body_was_sent() -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [], b"early")

    recorder = Recorder()
    async with open_server(handler) as srv, client_for(HTTPXTransport(), srv) as client:
        request = client.build_request(
            "POST", "/", headers={"transfer-encoding": "chunked"}, extensions={"trace": recorder}
        )
        request.stream = Held()
        response = await client.send(request)
    assert response.text == "early"
    # The body's send ends when the head arrives, as far as the trace is concerned.
    assert recorder.names == [*CONNECT_TCP, *exchange_events("http11")]


async def test_network_stream_of_a_closed_connection(server: TestServer) -> None:
    transport = HTTPXTransport()
    async with client_for(transport, server) as client:
        await client.get("/")  # another connection stays in the pool
        response = await client.get("/close", headers={"connection": "close"})
        assert response.text == "bye"
        stream = response.extensions["network_stream"]
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
        assert stream.get_extra_info("unknown") is None


async def test_concurrent_requests_with_a_dial_function(server: TestServer) -> None:
    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return await anyio.connect_tcp(host, port)

    recorders = [Recorder() for _ in range(3)]
    async with client_for(HTTPXTransport(dial=dial), server) as client:

        async def get(recorder: Recorder) -> None:
            assert (await client.get("/", extensions={"trace": recorder})).text == "hello"

        async with anyio.create_task_group() as tg:
            for recorder in recorders:
                tg.start_soon(get, recorder)
    for recorder in recorders:
        assert recorder.names[-10:] == exchange_events("http11")


async def test_late_hooks_are_ignored() -> None:
    """Hooks fire in the pool's tasks: those of a dial that served another request, or that
    come after the request ended, change nothing."""
    request = httpx.Request("GET", "http://127.0.0.1/")
    recorder = Recorder()
    pool = HTTPXTransport().pool
    exchange = _Exchange(request, {"write": 1.0, "read": 2.0}, recorder, pool, anyio.CancelScope())
    trace = exchange.client_trace()
    assert trace.connect_start is not None and trace.got_conn is not None
    trace.connect_start("tcp", ("127.0.0.1", 80))
    trace.got_conn(asyncpool.GotConnInfo(reused=True, was_idle=True, idle_time=0.0))
    # The dial lost the race: its events end with got_conn.
    assert exchange.phase == "write"
    for hook, args in [
        (trace.connect_start, ("tcp", ("127.0.0.1", 80))),
        (trace.connect_done, ("tcp", ("127.0.0.1", 80), None)),
        (trace.tls_handshake_start, ()),
        (trace.tls_handshake_done, (None, None)),
    ]:
        assert hook is not None
        hook(*args)
    assert exchange.phase == "write"
    # wrote_request without wrote_headers (never happens today) still moves on.
    assert trace.wrote_request is not None and trace.wrote_headers is not None
    trace.wrote_request(asyncpool.WroteRequestInfo(None))
    assert exchange.phase == "read"
    trace.wrote_headers()  # out of order: ignored
    trace.wrote_request(asyncpool.WroteRequestInfo(None))  # again: stays in read
    assert exchange.phase == "read"
    trace.wrote_request(asyncpool.WroteRequestInfo(OSError("x")))
    await exchange.flush()
    assert recorder.names == [
        "connection.connect_tcp.started",
        "http11.send_request_headers.started",
        "http11.send_request_headers.complete",
        "http11.receive_response_headers.started",
        "http11.receive_response_headers.complete",
        "http11.receive_response_headers.started",
    ]

    exchange.done = True
    before = list(recorder.names)
    assert trace.request_retried is not None
    trace.got_conn(asyncpool.GotConnInfo(reused=False, was_idle=False, idle_time=0.0))
    trace.wrote_headers()
    trace.wrote_request(asyncpool.WroteRequestInfo(None))
    trace.request_retried(asyncpool.RetryInfo("no response", OSError("x"), 1))
    assert recorder.names == before
    await exchange.flush()
    assert exchange.events == deque()


async def test_network_stream_without_connection_info() -> None:
    class Unconnected:  # a response whose connection offers no attributes
        def extra(self, attribute: object, default: object = None) -> object:
            return default

    stream = _NetworkStream(Unconnected(), None)  # type: ignore[arg-type]
    assert repr(stream) == "<NetworkStream>"
    for name in ("client_addr", "server_addr", "ssl_object", "socket"):
        assert stream.get_extra_info(name) is None


async def test_max_body_bytes_applies_to_the_bodies_httpx_reads(server: TestServer) -> None:
    """httpx streams every body, and the pool applies its limit only in its own ``aread``: the
    adapter applies it as httpx reads (an HTTPXTransport(max_body_bytes=...) read everything)."""
    async with httpx.AsyncClient(transport=HTTPXTransport(max_body_bytes=1000)) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="max_body_bytes=1000"):
            await client.get(server.url_for("/bytes?n=100000"))
        assert (await client.get(server.url_for("/bytes?n=10"))).content == b"x" * 10
