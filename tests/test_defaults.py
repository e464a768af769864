"""Defaults people expect (issue 25, points 4 and 5): a caller's ``tls_config`` is used as
given, never changed; the Client and the CLI time out by default; a pool wait can be bounded."""

from __future__ import annotations

import ssl

import anyio
import anyio.abc
from anyio.streams.tls import TLSAttribute, TLSStream

from asyncpool import Request, Transport
from tests.h2server import open_h2_server
from tests.servers import TLSFixture, open_server


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
