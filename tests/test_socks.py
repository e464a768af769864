"""The SOCKS handshake (asyncpool._socks) against tests.socks_server over loopback TCP, then
HTTP/1.1 (and HTTPS) through the tunnel with asyncpool's own Transport (``dial=``)."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

import asyncpool
from asyncpool import Request, Transport
from asyncpool._socks import socks_handshake
from asyncpool.testing import memory_stream_pair
from tests.servers import TestServer, TLSFixture
from tests.socks_server import SocksScript, SocksServer, open_socks_server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(server: TestServer) -> AsyncIterator[SocksServer]:
    """A well-behaved SOCKS proxy whose every tunnel goes to ``server``."""
    async with open_socks_server(upstream=(server.host, server.port)) as socks:
        yield socks


def via(
    socks: SocksServer,
    scheme: str,
    username: str | None = None,
    password: str | None = None,
) -> Any:
    """A ``dial=`` function: TCP to the proxy, then the handshake for the origin."""

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        stream = await anyio.connect_tcp(socks.host, socks.port)
        await socks_handshake(
            stream,
            scheme=scheme,
            host=host,
            port=port,
            username=username,
            password=password,
            proxy=socks.proxy,
        )
        return stream

    return dial


async def get(dial: Any, url: str, **options: Any) -> bytes:
    async with Transport(dial=dial, **options) as pool:
        response = await pool.round_trip(Request("GET", url))
        assert response.status_code == 200
        return await response.aread()


async def handshake(
    socks: SocksServer,
    scheme: str = "socks5h",
    host: str = "origin.test",
    port: int = 80,
    username: str | None = None,
    password: str | None = None,
) -> anyio.abc.SocketStream:
    stream = await anyio.connect_tcp(socks.host, socks.port)
    await socks_handshake(
        stream,
        scheme=scheme,
        host=host,
        port=port,
        username=username,
        password=password,
        proxy=socks.proxy,
    )
    return stream


async def refused(socks: SocksServer, **kwargs: Any) -> asyncpool.ProxyError:
    with pytest.raises(asyncpool.ProxyError) as info:
        await handshake(socks, **kwargs)
    error = info.value
    assert error.host == socks.proxy
    assert error.phase == "proxy"
    assert isinstance(error, asyncpool.ConnectError)
    return error


# -- tunnels that work ---------------------------------------------------------------------


async def test_socks5h_sends_the_name_to_the_proxy(proxy: SocksServer, server: TestServer) -> None:
    assert await get(via(proxy, "socks5h"), "http://origin.test:8080/") == b"hello"
    [asked] = proxy.requests
    assert (asked.version, asked.atype, asked.address, asked.port) == (
        5,
        "domain",
        "origin.test",
        8080,
    )
    assert asked.methods == [0]  # no credentials: "no authentication" only
    assert server.requests[0].header("host") == "origin.test:8080"


async def test_socks5_resolves_the_name_and_sends_the_address(proxy: SocksServer) -> None:
    assert await get(via(proxy, "socks5"), "http://localhost:8080/") == b"hello"
    [asked] = proxy.requests
    assert asked.atype in ("ipv4", "ipv6")
    assert asked.address in ("127.0.0.1", "::1")
    assert asked.port == 8080


async def test_socks5_sends_the_first_address_resolved(
    proxy: SocksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        assert host == "origin.test"
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port)),
        ]

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    assert await get(via(proxy, "socks5"), "http://origin.test/") == b"hello"
    [asked] = proxy.requests
    assert (asked.atype, asked.address, asked.port) == ("ipv6", "2001:db8::1", 80)


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("host", ["::1", "[::1]"])
async def test_an_ipv6_literal_is_sent_as_an_address(
    proxy: SocksServer, scheme: str, host: str
) -> None:
    stream = await handshake(proxy, scheme, host=host, port=443)
    await stream.aclose()
    [asked] = proxy.requests
    assert (asked.atype, asked.address, asked.port) == ("ipv6", "::1", 443)


async def test_socks5h_sends_an_ip_literal_as_an_address(proxy: SocksServer) -> None:
    await (await handshake(proxy, "socks5h", host="192.0.2.7")).aclose()
    assert (proxy.requests[0].atype, proxy.requests[0].address) == ("ipv4", "192.0.2.7")


async def test_socks5h_sends_an_international_name_in_idna(proxy: SocksServer) -> None:
    await (await handshake(proxy, "socks5h", host="bücher.test")).aclose()
    assert proxy.requests[0].address == "xn--bcher-kva.test"


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a"])
async def test_the_name_sent_is_the_one_the_host_field_and_dns_use(
    proxy: SocksServer, server: TestServer, scheme: str
) -> None:
    # IDNA 2008 (UTS 46), as the Host field, a CONNECT and DNS: Python's "idna" codec is IDNA
    # 2003, which maps ß to ss, another domain (fass.example).
    url = f"{scheme}://{proxy.host}:{proxy.port}"
    async with Transport(proxy=url) as pool:
        response = await pool.round_trip(Request("GET", "http://faß.example:8080/"))
        assert await response.aread() == b"hello"
    assert server.requests[0].header("host") == "xn--fa-hia.example:8080"
    assert proxy.requests[0].address == "xn--fa-hia.example"


async def test_a_tunnel_to_the_address_asked_for(server: TestServer) -> None:
    # No upstream override: the proxy connects where it was told, as a real one.
    async with open_socks_server() as socks:
        assert await get(via(socks, "socks5"), server.url_for("/")) == b"hello"
        assert socks.tunnels == 1


async def test_https_through_the_tunnel(tls_server: TestServer, tls: TLSFixture) -> None:
    async with open_socks_server() as socks:
        body = await get(via(socks, "socks5h"), tls_server.url, tls_config=tls.client_context)
    assert body == b"hello"
    assert socks.requests[0].address == "127.0.0.1"


async def test_username_and_password_accepted(server: TestServer) -> None:
    script = SocksScript(auth="password", credentials=("alice", "pässword"))
    async with open_socks_server(script, upstream=(server.host, server.port)) as socks:
        dial = via(socks, "socks5h", "alice", "pässword")
        assert await get(dial, "http://origin.test/") == b"hello"
    assert socks.greetings == [[0, 2]]  # both offered, as Go: the proxy chooses
    assert socks.credentials == [("alice", "pässword")]


async def test_credentials_are_not_sent_to_a_proxy_that_needs_none(proxy: SocksServer) -> None:
    await (await handshake(proxy, username="alice", password="secret")).aclose()
    assert proxy.greetings == [[0, 2]]
    assert proxy.credentials == []


async def test_an_empty_password(server: TestServer) -> None:
    script = SocksScript(auth="password", credentials=("alice", ""))
    async with open_socks_server(script, upstream=(server.host, server.port)) as socks:
        await (await handshake(socks, username="alice", password=None)).aclose()
    assert socks.credentials == [("alice", "")]


@pytest.mark.parametrize("bound", ["ipv4", "ipv6", "domain"])
async def test_the_bound_address_is_read_whatever_its_type(server: TestServer, bound: Any) -> None:
    # The HTTP response parses only if exactly the reply was consumed.
    async with open_socks_server(
        SocksScript(bound=bound), upstream=(server.host, server.port)
    ) as socks:
        assert await get(via(socks, "socks5h"), "http://origin.test/") == b"hello"


async def test_socks4a_sends_the_name_to_the_proxy(proxy: SocksServer) -> None:
    dial = via(proxy, "socks4a", username="bob")
    assert await get(dial, "http://origin.test:8080/") == b"hello"
    [asked] = proxy.requests
    assert (asked.version, asked.atype, asked.address, asked.port) == (
        4,
        "domain",
        "origin.test",
        8080,
    )
    assert asked.username == "bob"


async def test_socks4a_sends_an_ipv4_literal_as_an_address(proxy: SocksServer) -> None:
    await (await handshake(proxy, "socks4a", host="192.0.2.7")).aclose()
    assert (proxy.requests[0].atype, proxy.requests[0].address) == ("ipv4", "192.0.2.7")
    assert proxy.requests[0].username == ""


async def test_socks4_resolves_the_name_to_ipv4(proxy: SocksServer) -> None:
    assert await get(via(proxy, "socks4"), "http://localhost/") == b"hello"
    [asked] = proxy.requests
    assert (asked.version, asked.atype, asked.address, asked.port) == (4, "ipv4", "127.0.0.1", 80)


async def test_a_socks4_proxy_url(proxy: SocksServer) -> None:
    async with Transport(proxy=f"socks4://{proxy.host}:{proxy.port}") as pool:
        response = await pool.round_trip(Request("GET", "http://localhost/"))
        assert await response.aread() == b"hello"
    [asked] = proxy.requests
    assert (asked.version, asked.address) == (4, "127.0.0.1")


# -- refusals -----------------------------------------------------------------------------


async def test_wrong_password_names_the_proxy_and_the_target() -> None:
    async with open_socks_server(SocksScript(auth="password")) as socks:
        error = await refused(socks, host="origin.test", username="user", password="wrong")
    assert error.target == "origin.test:80"
    assert "rejected the user name and password" in str(error)
    assert socks.proxy in str(error)
    assert "wrong" not in str(error)


async def test_no_credentials_for_a_proxy_that_needs_them() -> None:
    async with open_socks_server(SocksScript(auth="password")) as socks:
        error = await refused(socks)
    assert "accepted none of the authentication methods offered" in str(error)
    assert "no auth required" in str(error)
    assert socks.greetings == [[0]]


async def test_no_acceptable_method() -> None:
    async with open_socks_server(SocksScript(auth="refuse")) as socks:
        error = await refused(socks, username="user", password="secret")
    assert "accepted none of the authentication methods offered" in str(error)
    assert "0xff" in str(error)


@pytest.mark.parametrize("answer", [b"\x05\x02", b"\x05\x01"])
async def test_a_method_that_was_not_offered(answer: bytes) -> None:
    # \x02 username/password without credentials to send; \x01 GSSAPI, never offered.
    async with open_socks_server(SocksScript(auth=answer)) as socks:
        error = await refused(socks)
    assert f"it answered {answer[1]:#04x}" in str(error)


async def test_not_a_socks5_proxy(server: TestServer) -> None:
    # An HTTP server answers the greeting with HTTP (or not at all): the first bytes tell.
    async with open_socks_server(SocksScript(auth=b"HT")) as socks:
        error = await refused(socks)
    assert "not a SOCKS5 proxy" in str(error)


async def test_a_lenient_auth_status() -> None:
    client, peer = memory_stream_pair()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: socks_handshake(
                client,
                scheme="socks5h",
                host="origin.test",
                port=80,
                username="u",
                password="p",
                proxy="proxy.test:1080",
            )
        )
        assert await peer.receive() == b"\x05\x02\x00\x02"
        await peer.send(b"\x05\x02")
        assert await peer.receive() == b"\x01\x01u\x01p"
        await peer.send(b"\x05\x00")  # version 5, status success
        assert await peer.receive() == b"\x05\x01\x00\x03\x0borigin.test\x00\x50"
        await peer.send(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90" + b"tunnel")
    assert await client.receive() == b"tunnel"  # not taken by the handshake


SOCKS5_FAILURES = [
    (0x01, "general SOCKS server failure"),
    (0x02, "connection not allowed by ruleset"),
    (0x03, "network unreachable"),
    (0x04, "host unreachable"),
    (0x05, "connection refused by destination host"),
    (0x06, "TTL expired"),
    (0x07, "command not supported"),
    (0x08, "address type not supported"),
    (0x42, "unknown reply code"),
]


@pytest.mark.parametrize(("code", "meaning"), SOCKS5_FAILURES)
async def test_socks5_failure_replies(code: int, meaning: str) -> None:
    async with open_socks_server(SocksScript(reply=code)) as socks:
        error = await refused(socks, host="origin.test", port=443)
    assert error.target == "origin.test:443"
    assert f"{meaning} ({code:#04x})" in str(error)
    assert str(error).startswith(f"proxy {socks.proxy}: the SOCKS5 proxy refused")


async def test_a_real_refusal_by_the_destination() -> None:
    # Nothing listens on the port the tunnel is asked for: the proxy's connect is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening
        async with open_socks_server() as socks:
            error = await refused(socks, scheme="socks5", host="127.0.0.1", port=port)
    assert "connection refused by destination host (0x05)" in str(error)
    assert error.target == f"127.0.0.1:{port}"


SOCKS4_FAILURES = [
    (0x5B, "request rejected or failed"),
    (0x5C, "could not reach identd"),
    (0x5D, "identd did not confirm the user ID"),
    (0x00, "unknown reply code"),
]


@pytest.mark.parametrize(("code", "meaning"), SOCKS4_FAILURES)
async def test_socks4_failure_replies(code: int, meaning: str) -> None:
    async with open_socks_server(SocksScript(reply=code)) as socks:
        error = await refused(socks, scheme="socks4a")
    assert "the SOCKS4 proxy refused the connection" in str(error)
    assert meaning in str(error)
    assert f"({code:#04x})" in str(error)


@pytest.mark.parametrize(
    ("scheme", "close_at"),
    [
        ("socks5h", "greeting"),
        ("socks5h", "auth"),
        ("socks5h", "request"),
        ("socks5h", "reply"),
        ("socks4a", "request"),
        ("socks4a", "reply"),
    ],
)
async def test_a_proxy_that_closes_mid_handshake(scheme: str, close_at: Any) -> None:
    script = SocksScript(auth="password", close_at=close_at)
    async with open_socks_server(script) as socks:
        error = await refused(socks, scheme=scheme, username="user", password="secret")
    assert "the SOCKS proxy closed the connection during the handshake" in str(error)
    assert error.target == "origin.test:80"


async def test_a_reply_with_an_unknown_address_type() -> None:
    client, peer = memory_stream_pair()
    async with anyio.create_task_group() as tg:

        async def answer() -> None:
            await peer.receive()
            await peer.send(b"\x05\x00")
            await peer.receive()
            await peer.send(b"\x05\x00\x00\x07")

        tg.start_soon(answer)
        with pytest.raises(asyncpool.ProxyError, match="unknown address type 0x07"):
            await socks_handshake(
                client,
                scheme="socks5h",
                host="origin.test",
                port=80,
                username=None,
                password=None,
                proxy="proxy.test:1080",
            )
    assert client.is_closed


@pytest.mark.parametrize(
    ("scheme", "answer", "message"),
    [
        ("socks5h", b"\x04\x5a\x00\x00", "not a SOCKS5 reply"),
        ("socks4a", b"\x05\x00\x00\x01\x7f\x00\x00\x01", "not a SOCKS4 reply"),
    ],
)
async def test_a_reply_of_another_version(scheme: str, answer: bytes, message: str) -> None:
    client, peer = memory_stream_pair()
    async with anyio.create_task_group() as tg:

        async def answer_request() -> None:
            if scheme == "socks5h":
                await peer.receive()
                await peer.send(b"\x05\x00")
            await peer.receive()
            await peer.send(answer)

        tg.start_soon(answer_request)
        with pytest.raises(asyncpool.ProxyError, match=message):
            await socks_handshake(
                client,
                scheme=scheme,
                host="origin.test",
                port=80,
                username=None,
                password=None,
                proxy="proxy.test:1080",
            )


# -- the connection breaks, the caller cancels ----------------------------------------------


async def run_handshake(stream: anyio.abc.ByteStream, scheme: str = "socks5h") -> None:
    await socks_handshake(
        stream,
        scheme=scheme,
        host="origin.test",
        port=80,
        username=None,
        password=None,
        proxy="proxy.test:1080",
    )


async def test_a_connection_reset_while_reading() -> None:
    client, peer = memory_stream_pair()
    async with anyio.create_task_group() as tg:

        async def reset() -> None:
            await peer.receive()
            peer.reset()

        tg.start_soon(reset)
        with pytest.raises(asyncpool.ProxyError, match="reading from the SOCKS proxy failed"):
            await run_handshake(client)
    assert client.is_closed


async def test_a_connection_broken_before_sending() -> None:
    client, peer = memory_stream_pair()
    peer.reset()
    with pytest.raises(asyncpool.ProxyError, match="sending to the SOCKS proxy failed"):
        await run_handshake(client)
    assert client.is_closed


async def test_cancelling_the_handshake_closes_the_stream() -> None:
    client, peer = memory_stream_pair()
    async with anyio.create_task_group() as tg:

        async def cancel_once_asked() -> None:
            await peer.receive()  # the greeting: the client now waits for the answer
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_once_asked)
        await run_handshake(client)
        pytest.fail("the handshake returned though its proxy never answered")  # pragma: no cover
    assert client.is_closed


# -- what cannot be sent ------------------------------------------------------------------


async def test_dns_failure_for_socks5_names_the_origin(
    proxy: SocksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    with pytest.raises(asyncpool.ConnectError) as info:
        await handshake(proxy, "socks5", host="nowhere.test", port=8080)
    assert not isinstance(info.value, asyncpool.ProxyError)
    assert (info.value.host, info.value.phase) == ("nowhere.test:8080", "dns")
    assert "cannot resolve 'nowhere.test'" in str(info.value)
    assert proxy.greetings == []  # nothing was sent


async def test_socks4_cannot_reach_ipv6(proxy: SocksServer) -> None:
    error = await refused(proxy, scheme="socks4", host="::1")
    assert "SOCKS4 can only reach IPv4 addresses" in str(error)
    assert error.target == "[::1]:80"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": "", "password": "x"}, "user name of 1 to 255 bytes"),
        ({"username": "u" * 256, "password": "x"}, "user name of 1 to 255 bytes"),
        ({"username": "u", "password": "p" * 256}, "password of 255 at most"),
        ({"host": "a" * 256}, "the host name is 256 bytes long"),
        ({"host": "ü" + "a" * 70 + ".test"}, "cannot send the host name"),
        ({"scheme": "socks4a", "username": "a\x00b"}, "user ID cannot hold a NUL byte"),
    ],
)
async def test_what_socks_cannot_carry(
    proxy: SocksServer, kwargs: dict[str, Any], message: str
) -> None:
    error = await refused(proxy, **kwargs)
    assert message in str(error)
    assert proxy.greetings == [] and proxy.requests == []


async def test_an_unknown_scheme() -> None:
    client, _peer = memory_stream_pair()
    with pytest.raises(ValueError, match="not a SOCKS scheme: 'socks6'"):
        await run_handshake(client, scheme="socks6")
    assert client.is_closed


async def test_without_socksio_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)
    client, _peer = memory_stream_pair()
    with pytest.raises(ImportError, match=r"pip install 'asyncpool-http\[socks\]'"):
        await run_handshake(client)
    assert client.is_closed
