"""Defaults people expect (issue 25, points 4 and 5): a caller's ``tls_config`` is used as
given, never changed; the Client and the CLI time out by default; a pool wait can be bounded."""

from __future__ import annotations

import ssl

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSAttribute, TLSStream

import asyncpool
from asyncpool import Client, Request, Transport
from asyncpool._cli import _parser
from asyncpool._client import DEFAULT_DIAL_TIMEOUT, DEFAULT_POOL_TIMEOUT, DEFAULT_READ_TIMEOUT
from tests.h2server import open_h2_server
from tests.servers import ServerConnection, ServerRequest, TLSFixture, open_server


def _server_context(tls: TLSFixture, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(alpn)
    return context


def _caller_context(tls: TLSFixture) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls.ca.configure_trust(context)
    return context


async def _alpn_offered(context: ssl.SSLContext, port: int) -> str | None:
    """What a server that picks h2 when offered negotiates with ``context`` as it is."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    tls = await TLSStream.wrap(stream, hostname="127.0.0.1", ssl_context=context)
    try:
        return tls.extra(TLSAttribute.alpn_protocol, None)
    finally:
        await anyio.aclose_forcefully(tls)


async def test_tls_config_is_used_as_given(anyio_backend: str, tls: TLSFixture) -> None:
    """Building a Transport (http2 on) and making requests leaves the caller's context as it
    was: no ALPN set on it, so it offers none, and https speaks HTTP/1.1."""
    caller = _caller_context(tls)
    server_context = _server_context(tls, ["h2", "http/1.1"])  # picks h2 when offered
    async with open_server(ssl_context=server_context) as server:
        port = server.port
        pool = Transport(tls_config=caller)
        assert await _alpn_offered(caller, port) is None
        async with pool:
            assert pool.tls_config is caller
            with anyio.fail_after(5):
                response = await pool.round_trip(Request("GET", server.url))
                assert (response.http_version, await response.aread()) == ("HTTP/1.1", b"hello")
        assert await _alpn_offered(caller, port) is None


async def test_h2_is_negotiated_with_the_callers_alpn(anyio_backend: str, tls: TLSFixture) -> None:
    caller = _caller_context(tls)
    caller.set_alpn_protocols(["h2", "http/1.1"])
    async with (
        open_h2_server(ssl_context=_server_context(tls, ["h2"])) as server,
        Transport(tls_config=caller) as pool,
    ):
        with anyio.fail_after(5):
            response = await pool.round_trip(Request("GET", server.url))
            assert response.http_version == "HTTP/2"
            await response.aread()


async def test_the_httpx_adapter_leaves_a_given_context_as_given(
    anyio_backend: str, tls: TLSFixture
) -> None:
    from asyncpool.httpx import HTTPXTransport

    caller = _caller_context(tls)
    server_context = _server_context(tls, ["h2", "http/1.1"])
    async with open_server(ssl_context=server_context) as server:
        port = server.port
        async with HTTPXTransport(verify=caller, http2=True):
            pass
        async with HTTPXTransport(tls_config=caller, http2=True):
            pass
        assert await _alpn_offered(caller, port) is None


# -- timeouts on by default where people expect them ----------------------------------------


def test_the_transport_keeps_gos_defaults() -> None:
    pool = Transport()
    assert (pool.dial_timeout, pool.tls_handshake_timeout) == (30.0, 10.0)
    assert (pool.response_header_timeout, pool.read_timeout, pool.pool_timeout) == (
        None,
        None,
        None,
    )


def test_a_client_times_out_connecting_reading_and_waiting_for_a_connection() -> None:
    transport = Client().transport
    assert (DEFAULT_DIAL_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_POOL_TIMEOUT) == (10.0, 30.0, 30.0)
    assert transport.dial_timeout == DEFAULT_DIAL_TIMEOUT
    assert transport.read_timeout == DEFAULT_READ_TIMEOUT
    assert transport.pool_timeout == DEFAULT_POOL_TIMEOUT
    assert transport.tls_handshake_timeout == 10.0
    ours = Client(dial_timeout=None, read_timeout=None, pool_timeout=None).transport
    assert (ours.dial_timeout, ours.read_timeout, ours.pool_timeout) == (None, None, None)


def test_the_cli_get_times_out_connecting_and_reading() -> None:
    subcommands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    args = subcommands["get"].parse_args(["http://example.test/"])
    assert (args.connect_timeout, args.read_timeout) == (DEFAULT_DIAL_TIMEOUT, DEFAULT_READ_TIMEOUT)


async def test_pool_timeout_fails_a_request_left_waiting_for_a_connection(
    anyio_backend: str,
) -> None:
    """max_conns_per_host=1 and the first request's response stalls (by script): the second
    waits for the one connection and fails with PoolTimeout; the first is unharmed."""
    release, first_arrived, first_done = anyio.Event(), anyio.Event(), anyio.Event()

    async def stall_first(request: ServerRequest, conn: ServerConnection) -> None:
        if request.target == "/stall":
            first_arrived.set()
            await release.wait()
        await conn.respond(200, [("content-type", "text/plain")], b"ok")

    async with (
        open_server(stall_first) as server,
        Transport(max_conns_per_host=1, pool_timeout=0.05) as pool,
        anyio.create_task_group() as tg,
    ):
        bodies: list[bytes] = []

        async def first() -> None:
            response = await pool.round_trip(Request("GET", server.url_for("/stall")))
            bodies.append(await response.aread())
            first_done.set()

        with anyio.fail_after(5):
            tg.start_soon(first)
            await first_arrived.wait()
            with pytest.raises(asyncpool.PoolTimeout, match=r"pool_timeout=0\.05") as info:
                await pool.round_trip(Request("GET", server.url_for("/second")))
            assert isinstance(info.value, asyncpool.TimeoutError)
            assert info.value.phase == "pool"
            assert info.value.host == f"127.0.0.1:{server.port}"
            assert pool.stats().total == 1
            release.set()
            await first_done.wait()
        assert bodies == [b"ok"]
        with anyio.fail_after(5):  # the connection serves the next request
            response = await pool.round_trip(Request("GET", server.url_for("/third")))
            assert await response.aread() == b"ok"
        assert server.connections_accepted == 1
