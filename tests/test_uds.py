"""``Transport(uds=...)``: every connection to one Unix socket, whatever the URL's host (the
Host header, the pool's keys, TLS's server name and HTTP/2 stay the URL's); and
``Transport(local_address=...)``: the source IP of TCP connections."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h2.connection
import h2.settings
import httpx
import pytest
from anyio.abc import SocketAttribute

import asyncpool
from asyncpool import Client, ClientTrace, GotConnInfo, Request, Transport
from asyncpool.httpx import HTTPXTransport
from tests.h2server import H2TestServer, default_h2_handler
from tests.servers import TestServer, TLSFixture, open_unix_server

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def open_unix_h2_server(path: Path) -> AsyncIterator[H2TestServer]:
    """``tests.h2server``'s h2c server (``default_h2_handler``) on a Unix socket, with the
    settings ``open_h2_server`` advertises by default."""
    listener = await anyio.create_unix_listener(path)
    server = H2TestServer("uds.test", 80, default_h2_handler, tls=False)
    codes = h2.settings.SettingCodes
    server.settings = {
        codes.INITIAL_WINDOW_SIZE: 65535,
        codes.MAX_FRAME_SIZE: 16384,
        codes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
        codes.MAX_CONCURRENT_STREAMS: 100,
    }
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._accept_loop, listener, None)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()
            for conn in server.connections:
                await conn._shutdown()


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    # AF_UNIX paths are short (108 bytes on Linux, 104 on macOS): pytest's tmp_path may not fit.
    if len(str(tmp_path / "http.sock")) < 100:
        return tmp_path / "http.sock"
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="asyncpool-"))
    return directory / "http.sock"


async def test_requests_over_uds_reuse_one_connection(socket_path: Path) -> None:
    events: list[tuple[str, object]] = []
    trace = ClientTrace(
        dns_start=lambda info: events.append(("dns_start", info.host)),
        connect_start=lambda network, addr: events.append(("connect_start", (network, addr))),
        connect_done=lambda network, addr, err: events.append(("connect_done", (network, err))),
    )
    async with open_unix_server(socket_path) as server, Transport(uds=str(socket_path)) as pool:
        for _ in range(3):
            response = await pool.round_trip(Request("GET", "http://api.test/", trace=trace))
            assert await response.aread() == b"hello"
        assert server.connections_accepted == 1
        assert pool.stats().dials == 1
        assert [req.header("host") for req in server.requests] == ["api.test"] * 3
    assert events == [
        ("connect_start", ("unix", (str(socket_path), 0))),
        ("connect_done", ("unix", None)),
    ]


async def test_the_host_header_and_pool_key_stay_the_urls(socket_path: Path) -> None:
    async with open_unix_server(socket_path) as server, Transport(uds=str(socket_path)) as pool:
        for url in ("http://a.test:8080/", "http://b.test/", "http://a.test:8080/"):
            response = await pool.round_trip(Request("GET", url))
            await response.aread()
        assert [req.header("host") for req in server.requests] == [
            "a.test:8080",
            "b.test",
            "a.test:8080",
        ]
        stats = pool.stats()
        assert stats.dials == 2  # one connection per host, as without uds
        assert set(stats.hosts) == {"http://a.test:8080", "http://b.test"}


async def test_client_takes_uds(socket_path: Path) -> None:
    async with open_unix_server(socket_path) as server, Client(uds=str(socket_path)) as client:
        for _ in range(2):
            response = await client.get("http://api.test/")
            assert await response.aread() == b"hello"
        assert server.connections_accepted == 1


async def test_tls_over_uds_names_the_urls_host(socket_path: Path, tls: TLSFixture) -> None:
    names: list[str] = []

    def on_tls(ssl_object: ssl.SSLObject | None, err: BaseException | None) -> None:
        assert ssl_object is not None and ssl_object.server_hostname is not None
        names.append(ssl_object.server_hostname)

    trace = ClientTrace(tls_handshake_done=on_tls)
    async with (
        open_unix_server(socket_path, ssl_context=tls.server_context) as server,
        Transport(uds=str(socket_path), tls_config=tls.client_context) as pool,
    ):
        for _ in range(2):
            response = await pool.round_trip(Request("GET", "https://localhost/", trace=trace))
            assert await response.aread() == b"hello"
        assert server.connections_accepted == 1
        # The certificate is for localhost, not for another name on the same socket.
        with pytest.raises(asyncpool.TLSError, match="certificate verify failed"):
            await pool.round_trip(Request("GET", "https://other.test/"))
    assert names == ["localhost"]


async def test_http2_prior_knowledge_over_uds(socket_path: Path) -> None:
    async with (
        open_unix_h2_server(socket_path) as server,
        Transport(uds=str(socket_path), http2_prior_knowledge=True) as pool,
    ):
        versions: list[str] = []

        async def get() -> None:
            response = await pool.round_trip(Request("GET", "http://h2.test/"))
            await response.aread()
            versions.append(response.http_version)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(get)
        assert versions == ["HTTP/2"] * 5
        assert server.connections_accepted == 1
        assert {req.authority for req in server.requests} == {"h2.test"}


async def test_a_missing_socket_is_a_connect_error_naming_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.sock")
    errors: list[OSError | None] = []
    trace = ClientTrace(connect_done=lambda network, addr, err: errors.append(err))
    async with Transport(uds=path) as pool:
        with pytest.raises(asyncpool.ConnectError, match=r"missing\.sock") as info:
            await pool.round_trip(Request("GET", "http://api.test:81/", trace=trace))
        assert (info.value.phase, info.value.host) == ("connect", "api.test:81")
        assert "Unix socket" in str(info.value)
        assert pool.stats().failed_dials == 1
    assert len(errors) == 1 and isinstance(errors[0], OSError)


async def test_connect_retries_apply_to_uds(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    attempts = 0

    def on_connect_done(network: str, addr: tuple[str, int], err: OSError | None) -> None:
        nonlocal attempts
        attempts += 1

    trace = ClientTrace(connect_done=on_connect_done)
    async with Transport(uds=str(path), connect_retries=1) as pool:
        with pytest.raises(asyncpool.ConnectError):
            await pool.round_trip(Request("GET", "http://api.test/", trace=trace))
    assert attempts == 2


def test_uds_and_dial_are_exclusive() -> None:
    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        raise AssertionError("unused")

    with pytest.raises(TypeError, match=r"uds=.*dial="):
        Transport(uds="/tmp/x.sock", dial=dial)
    with pytest.raises(TypeError, match=r"local_address=.*dial="):
        Transport(local_address="127.0.0.1", dial=dial)
    with pytest.raises(TypeError, match=r"uds=.*local_address="):
        Transport(uds="/tmp/x.sock", local_address="127.0.0.1")
    with pytest.raises(TypeError, match=r"uds=.*proxy="):
        Transport(uds="/tmp/x.sock", proxy="http://127.0.0.1:3128")


def test_the_options_are_typed_options() -> None:
    options: asyncpool.TransportOptions = {"uds": "/tmp/x.sock"}
    pool = Transport(**options)
    assert (pool.uds, pool.local_address) == ("/tmp/x.sock", None)
    assert Transport(local_address="127.0.0.1").local_address == "127.0.0.1"


# -- local_address ---------------------------------------------------------------------------

SOURCES = [
    "127.0.0.1",
    pytest.param(
        "127.0.0.2",
        marks=pytest.mark.skipif(
            not sys.platform.startswith("linux"), reason="127.0.0.0/8 is all local on Linux"
        ),
    ),
]


@pytest.mark.parametrize("source", SOURCES)
async def test_local_address_is_the_peer_address_the_server_sees(
    server: TestServer, source: str
) -> None:
    infos: list[GotConnInfo] = []
    trace = ClientTrace(got_conn=infos.append)
    async with Transport(local_address=source) as pool:
        for _ in range(2):
            response = await pool.round_trip(Request("GET", server.url, trace=trace))
            assert await response.aread() == b"hello"
        assert server.connections_accepted == 1
        peer = server.connections[0]._stream.extra(SocketAttribute.remote_address)
    assert peer[0] == source
    assert [info.local_address[0] for info in infos] == [source, source]


async def test_a_local_address_that_cannot_be_bound_is_a_connect_error(
    server: TestServer,
) -> None:
    async with Transport(local_address="192.0.2.1") as pool:  # TEST-NET-1: not ours
        with pytest.raises(asyncpool.ConnectError, match="cannot connect") as info:
            await pool.round_trip(Request("GET", server.url))
        assert info.value.host == f"127.0.0.1:{server.port}"


# -- the httpx adapter -----------------------------------------------------------------------


async def test_httpx_adapter_uds_is_the_pools(socket_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str, info: dict[str, Any]) -> None:
        events.append((name, info))

    transport = HTTPXTransport(uds=str(socket_path))
    assert transport.pool.uds == str(socket_path)
    async with (
        open_unix_server(socket_path) as server,
        httpx.AsyncClient(transport=transport) as client,
    ):
        for _ in range(2):
            response = await client.get("http://api.test/", extensions={"trace": recorder})
            assert response.text == "hello"
        assert server.connections_accepted == 1
        assert [req.header("host") for req in server.requests] == ["api.test"] * 2
    connect = [(name, info) for name, info in events if name.startswith("connection.")]
    assert [name for name, _ in connect] == [
        "connection.connect_unix_socket.started",
        "connection.connect_unix_socket.complete",
    ]
    assert connect[0][1]["path"] == str(socket_path)


async def test_httpx_adapter_local_address_is_the_pools(server: TestServer) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str, info: dict[str, Any]) -> None:
        events.append((name, info))

    transport = HTTPXTransport(local_address="127.0.0.1")
    assert transport.pool.local_address == "127.0.0.1"
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(server.url, extensions={"trace": recorder})
        assert response.extensions["network_stream"].get_extra_info("client_addr")[0] == (
            "127.0.0.1"
        )
    started = dict(events)["connection.connect_tcp.started"]
    assert started["local_address"] == "127.0.0.1"


async def test_httpx_adapter_missing_socket_is_httpx_connect_error(tmp_path: Path) -> None:
    transport = HTTPXTransport(uds=str(tmp_path / "missing.sock"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match=r"missing\.sock"):
            await client.get("http://api.test/")


def test_httpx_adapter_uds_and_dial_are_exclusive() -> None:
    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        raise AssertionError("unused")

    with pytest.raises(TypeError, match=r"uds=.*dial="):
        HTTPXTransport(uds="/tmp/x.sock", dial=dial)
