"""HTTPXTransport takes httpx.AsyncHTTPTransport's arguments with httpx's meaning (limits over
all hosts, keep-alive, connect retries, uds, local_address, verify / cert, http1 / http2), and
refuses by name what it cannot do. On asyncio and trio."""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

import asyncpool
from asyncpool import CloseReason
from asyncpool.httpx import HTTPXTransport
from asyncpool.testing import MockServer, Reply
from tests.servers import TestServer

pytestmark = pytest.mark.anyio

ROUTES = {"/": Reply(body=b"hello")}


async def test_limits_max_connections_counts_every_host() -> None:
    release = anyio.Event()

    async def handler(request: object, conn: asyncpool.testing.ServerConnection) -> None:
        await conn.send_head(200, [])
        await conn.send_data(b"held")  # a body still streaming: its connection is in use
        await release.wait()
        await conn.end()

    async with MockServer(handler) as server:
        transport = HTTPXTransport(dial=server.dial, limits=httpx.Limits(max_connections=1))
        async with httpx.AsyncClient(transport=transport) as client:
            async with client.stream("GET", "http://a.test/", timeout=httpx.Timeout(None)) as a:
                with pytest.raises(httpx.PoolTimeout):
                    await client.get("http://b.test/", timeout=httpx.Timeout(None, pool=1e-9))
                release.set()
                await a.aread()
            # a's connection is idle now: it is closed to make room for b's.
            response = await client.get("http://b.test/", timeout=httpx.Timeout(None))
            assert response.status_code == 200
            stats = transport.pool.stats()
    assert set(stats.hosts) == {"http://b.test"} and stats.evictions == 1


async def test_limits_map_to_the_pools_options() -> None:
    limits = httpx.Limits(max_connections=7, max_keepalive_connections=3, keepalive_expiry=2.5)
    options = HTTPXTransport(limits=limits).pool._pool.options
    assert (options.max_conns, options.max_idle_conns, options.idle_conn_timeout) == (7, 3, 2.5)
    options = HTTPXTransport(limits=httpx.Limits(max_keepalive_connections=0)).pool._pool.options
    assert (options.max_conns, options.max_idle_conns_per_host) == (0, 0)
    assert not options.disable_keep_alives  # httpcore keeps none, but sends no Connection: close


async def test_max_keepalive_connections_0_keeps_no_connection_and_says_nothing() -> None:
    async with MockServer(routes=ROUTES) as server:
        limits = httpx.Limits(max_keepalive_connections=0)
        transport = HTTPXTransport(dial=server.dial, limits=limits)
        closed: list[CloseReason] = []
        trace = asyncpool.ClientTrace(put_idle_conn=closed.append)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                response = await client.get("http://a.test/", extensions={"client_trace": trace})
                assert response.status_code == 200
    assert server.connections_made == 2
    assert closed == [CloseReason.IDLE_LIST_FULL] * 2
    # httpx's own "Connection: keep-alive", not the pool's "close" of disable_keep_alives.
    assert [request.header("connection") for request in server.requests] == ["keep-alive"] * 2


async def test_retries_retry_a_failed_connect() -> None:
    async with MockServer(routes=ROUTES) as server:
        attempts = 0

        async def flaky(host: str, port: int) -> anyio.abc.ByteStream:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ConnectionRefusedError("refused")
            return await server.dial(host, port)

        async with httpx.AsyncClient(transport=HTTPXTransport(dial=flaky)) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://a.test/")
        attempts = 0
        async with httpx.AsyncClient(transport=HTTPXTransport(dial=flaky, retries=1)) as client:
            assert (await client.get("http://a.test/")).status_code == 200
        assert attempts == 2


async def test_uds_connects_every_request_to_the_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    listener = await anyio.create_unix_listener(path)

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nuds")

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with httpx.AsyncClient(transport=HTTPXTransport(uds=path)) as client:
            response = await client.get("http://anything.test/")
        assert response.text == "uds"
        tg.cancel_scope.cancel()


async def test_local_address_is_the_connections_local_ip(server: TestServer) -> None:
    transport = HTTPXTransport(local_address="127.0.0.1")
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(server.url)
        assert response.extensions["network_stream"].get_extra_info("client_addr")[0] == (
            "127.0.0.1"
        )


def test_verify_and_cert_make_httpxs_ssl_context() -> None:
    assert HTTPXTransport(verify=False).pool.tls_config.verify_mode == ssl.CERT_NONE
    context = ssl.create_default_context()
    assert HTTPXTransport(verify=context).pool.tls_config is context


def test_http1_and_http2_as_httpcore() -> None:
    assert not HTTPXTransport(http2=False).pool.http2
    h2_only = HTTPXTransport(http1=False, http2=True).pool
    assert h2_only.http2 and h2_only.http2_prior_knowledge
    with pytest.raises(ValueError, match="http1 or http2"):
        HTTPXTransport(http1=False, http2=False)


def test_what_cannot_be_done_is_refused_by_name() -> None:
    with pytest.raises(NotImplementedError, match=r"Proxy\(ssl_context="):
        HTTPXTransport(
            proxy=httpx.Proxy("https://p.test", ssl_context=ssl.create_default_context())
        )
    with pytest.raises(NotImplementedError, match=r"socket_options="):
        HTTPXTransport(socket_options=[(1, 2, 3)])
    with pytest.raises(TypeError, match="max_conns"):
        HTTPXTransport(limits=httpx.Limits(), max_conns=3)
    with pytest.raises(TypeError, match="tls_config"):
        HTTPXTransport(verify=False, tls_config=ssl.create_default_context())

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        raise AssertionError("unused")

    with pytest.raises(TypeError, match="dial"):
        HTTPXTransport(uds="/tmp/x.sock", dial=dial)


def test_transport_options_lists_every_transport_option() -> None:
    import inspect

    parameters = set(inspect.signature(asyncpool.Transport).parameters)
    assert set(asyncpool.TransportOptions.__annotations__) | {"http2", "connect_retries"} >= (
        parameters
    )
    assert set(asyncpool.TransportOptions.__optional_keys__) == parameters
