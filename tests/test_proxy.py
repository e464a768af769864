"""Proxies: http:// targets forwarded in absolute form on shared connections to the proxy,
https:// targets through CONNECT tunnels (TLS and HTTP/2 inside, TLS in TLS through an https
proxy), the proxy's failures as typed errors naming it, hooks, keys and cancellation."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import anyio
import pytest

import asyncpool
from asyncpool import ProxyConnectDoneInfo, ProxyConnectStartInfo, Request, Transport
from asyncpool._proxy import parse_proxy
from tests.h2server import make_h2_server_context, open_h2_server
from tests.proxies import TestProxy, open_proxy
from tests.servers import TLSFixture, open_server, wait_until
from tests.socks_server import SocksScript, open_socks_server

pytestmark = pytest.mark.anyio


async def get(pool: Transport, url: str, **kwargs: object) -> tuple[int, bytes]:
    response = await pool.round_trip(Request("GET", url, **kwargs))  # type: ignore[arg-type]
    return response.status_code, await response.aread()


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "user", "password", "shown"),
    [
        ("proxy.test:3128", "http", "proxy.test", 3128, None, None, "http://proxy.test:3128"),
        ("http://proxy.test", "http", "proxy.test", 80, None, None, "http://proxy.test:80"),
        ("https://a:b%40c@p.test", "https", "p.test", 443, "a", "b@c", "https://a@p.test:443"),
        ("socks5h://[::1]:1080", "socks5h", "::1", 1080, None, None, "socks5h://[::1]:1080"),
        ("SOCKS4A://u@s.test", "socks4a", "s.test", 1080, "u", None, "socks4a://u@s.test:1080"),
        ("socks4://s.test", "socks4", "s.test", 1080, None, None, "socks4://s.test:1080"),
    ],
)
def test_parse_proxy(
    url: str, scheme: str, host: str, port: int, user: str | None, password: str | None, shown: str
) -> None:
    proxy = parse_proxy(url)
    assert (proxy.scheme, proxy.host, proxy.port) == (scheme, host, port)
    assert (proxy.username, proxy.password, proxy.url) == (user, password, shown)


@pytest.mark.parametrize("url", ["ftp://p.test", "http://", "http://p.test/path", "http://p:x"])
def test_a_bad_proxy_url_fails_the_transport(url: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        Transport(proxy=url)


def test_proxy_authorization_is_basic() -> None:
    assert parse_proxy("http://alice:s3cret@p.test").authorization == "Basic YWxpY2U6czNjcmV0"
    assert parse_proxy("http://p.test").authorization is None


# -- http:// targets: forwarded ---------------------------------------------------------------


async def test_http_targets_share_one_connection_to_the_proxy(anyio_backend: str) -> None:
    async with open_proxy(auth="alice:s3cret") as proxy, open_server() as one, open_server() as two:
        proxy_url = proxy.url.replace("http://", "http://alice:s3cret@")
        async with Transport(proxy=proxy_url) as pool:
            assert await get(pool, one.url_for("/?a=1")) == (200, b"hello")
            assert await get(pool, two.url_for("/")) == (200, b"hello")
            stats = pool.stats()
            assert list(stats.hosts) == [f"via {parse_proxy(proxy_url).key}"]
            assert "s3cret" not in str(stats)
            assert stats.dials == 1 and stats.reused == 1
    assert proxy.connections_accepted == 1
    assert [r.target for r in proxy.requests] == [one.url_for("/?a=1"), two.url_for("/")]
    authorization = "Basic YWxpY2U6czNjcmV0"
    assert all(r.header("proxy-authorization") == authorization for r in proxy.requests)
    assert proxy.requests[0].header("host") == f"127.0.0.1:{one.port}"
    # The proxy strips it; the origin never sees the proxy's credentials.
    assert one.requests[0].header("proxy-authorization") is None


async def test_forwarded_without_credentials_gets_407(anyio_backend: str) -> None:
    async with (
        open_proxy(auth="alice:s3cret") as proxy,
        open_server() as origin,
        Transport(proxy=proxy.url) as pool,
    ):
        response = await pool.round_trip(Request("GET", origin.url_for("/")))
        assert response.status_code == 407  # a forwarded request's answer is the response
        assert response.headers["proxy-authenticate"] == 'Basic realm="test"'
        await response.aread()


async def test_proxy_function_chooses_per_request(anyio_backend: str) -> None:
    async with open_proxy() as proxy, open_server() as proxied, open_server() as direct:
        seen: list[str] = []

        def choose(request: Request) -> str | None:
            seen.append(request.url.url)
            return proxy.url if request.url.port == proxied.port else None

        async with Transport(proxy=choose) as pool:
            assert await get(pool, proxied.url_for("/")) == (200, b"hello")
            assert await get(pool, direct.url_for("/")) == (200, b"hello")
            assert sorted(pool.stats().hosts) == sorted(
                [f"via {proxy.url}", f"http://127.0.0.1:{direct.port}"]
            )
    assert seen == [proxied.url_for("/"), direct.url_for("/")]
    assert [r.target for r in proxy.requests] == [proxied.url_for("/")]
    assert direct.requests[0].target == "/"


async def test_a_bad_url_from_the_proxy_function_fails_the_request(anyio_backend: str) -> None:
    async with Transport(proxy=lambda request: "gopher://p.test") as pool:
        with pytest.raises(asyncpool.ProxyError, match="unsupported proxy scheme"):
            await pool.round_trip(Request("GET", "http://example.test/"))
        assert pool.stats().hosts == {}


# -- https:// targets: CONNECT tunnels -------------------------------------------------------


async def test_https_through_connect_with_the_origins_sni_and_h2(
    anyio_backend: str, tls: TLSFixture
) -> None:
    context = make_h2_server_context(tls)
    server_names: list[str | None] = []
    context.sni_callback = lambda ssl_object, name, ctx: server_names.append(name)  # type: ignore[assignment,func-returns-value,misc]
    async with open_proxy(auth="u:p") as proxy, open_h2_server(ssl_context=context) as origin:
        proxy_url = proxy.url.replace("http://", "http://u:p@")
        url = f"https://localhost:{origin.port}/"
        async with Transport(
            proxy=proxy_url,
            tls_config=tls.client_context,
            proxy_connect_headers={"X-Tunnel": "yes"},
        ) as pool:
            for _ in range(3):
                response = await pool.round_trip(Request("GET", url))
                assert response.http_version == "HTTP/2"
                assert await response.aread() == b"hello"
            key = f"https://localhost:{origin.port} via {parse_proxy(proxy_url).key}"
            assert list(pool.stats().hosts) == [key]
            assert pool.stats().dials == 1
    assert server_names == ["localhost"]
    (connect,) = proxy.requests
    assert (connect.method, connect.target) == ("CONNECT", f"localhost:{origin.port}")
    assert connect.header("host") == f"localhost:{origin.port}"
    assert connect.header("proxy-authorization") == "Basic dTpw"
    assert connect.header("x-tunnel") == "yes"
    assert origin.requests[0].authority == f"localhost:{origin.port}"


async def test_many_requests_reuse_one_http1_tunnel(anyio_backend: str, tls: TLSFixture) -> None:
    async with (
        open_proxy() as proxy,
        open_server(ssl_context=tls.server_context) as origin,
        Transport(proxy=proxy.url, tls_config=tls.client_context) as pool,
    ):
        for _ in range(20):
            assert await get(pool, origin.url_for("/")) == (200, b"hello")
        assert pool.stats().reused == 19
    assert proxy.connections_accepted == origin.connections_accepted == 1
    assert len(proxy.requests) == 1


async def test_tls_in_tls_through_an_https_proxy(anyio_backend: str, tls: TLSFixture) -> None:
    async with (
        open_proxy(ssl_context=tls.server_context) as proxy,
        open_server(ssl_context=tls.server_context) as origin,
        open_server() as plain,
        Transport(proxy=proxy.url, tls_config=tls.client_context) as pool,
    ):
        assert await get(pool, origin.url_for("/")) == (200, b"hello")
        assert await get(pool, plain.url_for("/")) == (200, b"hello")  # forwarded over TLS
        assert sorted(pool.stats().hosts) == sorted(
            [f"{origin.url} via {proxy.url}", f"via {proxy.url}"]
        )
    assert [r.method for r in proxy.requests] == ["CONNECT", "GET"]
    assert proxy.requests[1].target == plain.url_for("/")


async def test_max_conns_per_host_counts_per_origin(anyio_backend: str, tls: TLSFixture) -> None:
    gate = anyio.Event()
    arrived = 0

    async def handler(req: object, conn: object) -> None:
        nonlocal arrived
        arrived += 1
        await gate.wait()
        await conn.respond(200, [], b"ok")  # type: ignore[attr-defined]

    async with (
        open_proxy() as proxy,
        open_server(handler, ssl_context=tls.server_context) as one,
        open_server(handler, ssl_context=tls.server_context) as two,
        Transport(proxy=proxy.url, tls_config=tls.client_context, max_conns_per_host=1) as pool,
    ):
        results: list[int] = []

        async def fetch(url: str) -> None:
            results.append((await get(pool, url))[0])

        async with anyio.create_task_group() as tg:
            for url in (one.url_for("/"), two.url_for("/"), one.url_for("/")):
                tg.start_soon(fetch, url)
            await wait_until(lambda: arrived == 2)  # one per origin, the third waits
            hosts = pool.stats().hosts
            assert hosts[f"{one.url} via {proxy.url}"].waiting == 1
            assert hosts[f"{two.url} via {proxy.url}"].total == 1
            gate.set()
        assert results == [200, 200, 200]
    assert proxy.connections_accepted == 2


# -- the proxy fails --------------------------------------------------------------------------


async def test_407_to_connect_is_a_proxy_error_with_the_head(
    anyio_backend: str, tls: TLSFixture
) -> None:
    async with (
        open_proxy(auth="u:p") as proxy,
        Transport(proxy=proxy.url, tls_config=tls.client_context) as pool,
    ):
        with pytest.raises(asyncpool.ProxyError) as caught:
            await pool.round_trip(Request("GET", "https://origin.test:8443/"))
        assert pool.stats().total == 0
    error = caught.value
    assert error.status_code == 407
    assert ("Proxy-Authenticate", 'Basic realm="test"') in error.headers
    assert error.host == f"127.0.0.1:{proxy.port}"
    assert error.target == "origin.test:8443"
    assert error.phase == "proxy"
    assert "407" in str(error) and "origin.test:8443" in str(error) and proxy.url in str(error)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("502", "answered 502"),
        ("close", "closed the connection|broke|handshake failed"),
        ("early-bytes", "8 bytes after its 200"),
    ],
)
async def test_a_failing_tunnel(
    anyio_backend: str, tls: TLSFixture, mode: str, message: str
) -> None:
    async with (
        open_proxy(mode=mode) as proxy,
        Transport(proxy=proxy.url, tls_config=tls.client_context) as pool,
    ):
        with pytest.raises((asyncpool.ProxyError, asyncpool.TLSError)) as caught:
            await pool.round_trip(Request("GET", "https://origin.test/"))
        assert pool.stats().total == 0
    assert caught.match(message)
    if mode == "close":  # the tunnel opened, then the origin's TLS failed: the origin's error
        assert isinstance(caught.value, asyncpool.TLSError)
        assert caught.value.host == "origin.test:443"
    else:
        assert caught.value.host == f"127.0.0.1:{proxy.port}"


async def test_a_stalling_proxy_times_out_within_dial_timeout(
    anyio_backend: str, tls: TLSFixture
) -> None:
    async with (
        open_proxy(mode="stall") as proxy,
        Transport(proxy=proxy.url, tls_config=tls.client_context, dial_timeout=0.2) as pool,
    ):
        with anyio.fail_after(5), pytest.raises(asyncpool.ConnectTimeout) as caught:
            await pool.round_trip(Request("GET", "https://origin.test/"))
        assert pool.stats().total == 0
    assert caught.value.host == f"127.0.0.1:{proxy.port}"
    assert caught.value.phase == "proxy"
    assert "dial_timeout=0.2" in str(caught.value)


async def test_an_unreachable_proxy_names_the_proxy(anyio_backend: str) -> None:
    async with open_proxy() as proxy:
        port = proxy.port
    async with Transport(proxy=f"http://127.0.0.1:{port}") as pool:
        with pytest.raises(asyncpool.ConnectError) as caught:
            await pool.round_trip(Request("GET", "http://origin.test/"))
    assert caught.value.host == f"127.0.0.1:{port}"


async def test_cancelled_while_the_tunnel_is_built_leaks_nothing(
    anyio_backend: str, tls: TLSFixture
) -> None:
    async def cancel_a_request_in_the_tunnel(pool: Transport, proxy: TestProxy) -> None:
        async with anyio.create_task_group() as tg:

            async def request() -> None:
                await pool.round_trip(Request("GET", "https://origin.test/"))

            tg.start_soon(request)
            await proxy.connect_received.wait()
            assert pool.stats().dialing == 1
            tg.cancel_scope.cancel()

    async with open_proxy(mode="stall") as proxy:
        async with Transport(proxy=proxy.url, tls_config=tls.client_context) as pool:
            await cancel_a_request_in_the_tunnel(pool, proxy)
            # The dial is the Transport's own task: it goes on for the next request (socket
            # late binding) until dial_timeout; closing the Transport cancels it.
            assert pool.stats().dialing == 1 and pool.stats().waiting == 0
        assert pool.stats().total == 0
        assert pool._tasks is not None and len(pool._tasks) == 0
        await proxy.wait_until(lambda p: p.open_connections == 0)


async def test_on_proxy_connect_response_sees_the_answer_and_may_fail_the_dial(
    anyio_backend: str, tls: TLSFixture
) -> None:
    seen: list[tuple[str, str, int, list[tuple[str, str]]]] = []

    def check(proxy_url: str, target: str, status: int, headers: list[tuple[str, str]]) -> None:
        seen.append((proxy_url, target, status, headers))
        raise asyncpool.ProxyError("not this proxy", host="checker")

    async with (
        open_proxy() as proxy,
        open_server(ssl_context=tls.server_context) as origin,
        Transport(
            proxy=proxy.url, tls_config=tls.client_context, on_proxy_connect_response=check
        ) as pool,
    ):
        with pytest.raises(asyncpool.ProxyError, match="not this proxy"):
            await pool.round_trip(Request("GET", origin.url_for("/")))
        assert pool.stats().total == 0
    assert seen == [(proxy.url, f"127.0.0.1:{origin.port}", 200, [])]
    assert origin.connections_accepted == 1  # the tunnel was open, and closed unused
    assert origin.requests == []


async def test_proxy_connect_headers_function(anyio_backend: str, tls: TLSFixture) -> None:
    calls: list[tuple[str, str]] = []

    def headers(proxy_url: str, target: str) -> Mapping[str, str]:
        calls.append((proxy_url, target))
        return {"X-Target": target}

    async with (
        open_proxy() as proxy,
        open_server(ssl_context=tls.server_context) as origin,
        Transport(
            proxy=proxy.url, tls_config=tls.client_context, proxy_connect_headers=headers
        ) as pool,
    ):
        assert await get(pool, origin.url_for("/")) == (200, b"hello")
    target = f"127.0.0.1:{origin.port}"
    assert calls == [(proxy.url, target)]
    assert proxy.requests[0].header("x-target") == target


# -- trace ------------------------------------------------------------------------------------


async def test_trace_hooks_in_order(anyio_backend: str, tls: TLSFixture) -> None:
    events: list[object] = []
    trace = asyncpool.ClientTrace(
        connect_start=lambda network, addr: events.append(("connect_start", addr[1])),
        connect_done=lambda network, addr, err: events.append(("connect_done", addr[1])),
        proxy_connect_start=lambda info: events.append(info),
        proxy_connect_done=lambda info: events.append(info),
        tls_handshake_start=lambda: events.append("tls_start"),
        tls_handshake_done=lambda ssl_object, err: events.append("tls_done"),
        got_conn=lambda info: events.append("got_conn"),
    )
    async with (
        open_proxy() as proxy,
        open_server(ssl_context=tls.server_context) as origin,
        Transport(proxy=proxy.url, tls_config=tls.client_context) as pool,
    ):
        assert await get(pool, origin.url_for("/"), trace=trace) == (200, b"hello")
    target = f"127.0.0.1:{origin.port}"
    assert events == [
        ("connect_start", proxy.port),
        ("connect_done", proxy.port),
        ProxyConnectStartInfo(proxy.url, target),
        ProxyConnectDoneInfo(proxy.url, target, 200, [], None),
        "tls_start",
        "tls_done",
        "got_conn",
    ]


async def test_trace_of_a_refused_tunnel(anyio_backend: str, tls: TLSFixture) -> None:
    done: list[ProxyConnectDoneInfo] = []
    trace = asyncpool.ClientTrace(proxy_connect_done=done.append)
    async with (
        open_proxy(mode="502") as proxy,
        Transport(proxy=proxy.url, tls_config=tls.client_context) as pool,
    ):
        with pytest.raises(asyncpool.ProxyError):
            await pool.round_trip(Request("GET", "https://origin.test/", trace=trace))
    (info,) = done
    assert info.status_code == 502 and isinstance(info.err, asyncpool.ProxyError)


async def test_trace_of_a_negotiation_cut_short_by_the_pools_close(
    anyio_backend: str, tls: TLSFixture
) -> None:
    # The dial outlives its request (late binding): closing the pool cancels it mid-CONNECT,
    # and proxy_connect_done says the tunnel did not open.
    done: list[ProxyConnectDoneInfo] = []
    trace = asyncpool.ClientTrace(proxy_connect_done=done.append)
    async with open_proxy(mode="stall") as proxy:
        pool = Transport(proxy=proxy.url, tls_config=tls.client_context, trace=trace)
        async with anyio.create_task_group() as tg:

            async def request() -> None:
                with pytest.raises(asyncpool.PoolClosed):
                    await pool.round_trip(Request("GET", "https://origin.test/"))

            tg.start_soon(request)
            await proxy.connect_received.wait()
            await pool.aclose()
    (info,) = done
    assert info.status_code is None and info.err is not None


def test_proxy_hooks_compose() -> None:
    calls: list[str] = []
    inner = asyncpool.ClientTrace(proxy_connect_start=lambda info: calls.append("inner"))
    outer = asyncpool.ClientTrace(proxy_connect_start=lambda info: calls.append("outer"))
    hook = inner.compose(outer).proxy_connect_start
    assert hook is not None
    hook(ProxyConnectStartInfo("http://p:1", "o:2"))
    assert calls == ["inner", "outer"]


# -- Client, and the environment (its rules are _proxy_env's: a fake module here) --------------


async def test_client_proxy(anyio_backend: str) -> None:
    async with (
        open_proxy() as proxy,
        open_server() as origin,
        asyncpool.Client(proxy=proxy.url) as client,
    ):
        assert (await client.get(origin.url_for("/"))).text == "hello"
    assert [r.target for r in proxy.requests] == [origin.url_for("/")]


async def test_client_trusts_the_environment_read_when_it_is_made(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client(trust_env=True), the default, takes its proxy from HTTP_PROXY and NO_PROXY, read
    once when the Client's Transport is made (as Go caches them); trust_env=False and
    proxy=None go direct. origin.test is a name only the test proxy resolves."""
    dialed: list[tuple[str, int]] = []
    async with open_proxy() as proxy, open_server() as origin:
        proxy.hosts["origin.test"] = "127.0.0.1"
        url = f"http://origin.test:{origin.port}/"

        async def direct(host: str, port: int) -> anyio.abc.ByteStream:
            dialed.append((host, port))
            return await anyio.connect_tcp("127.0.0.1", port)

        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with asyncpool.Client() as client:
            monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # read already: not used
            assert (await client.get(url)).text == "hello"
            assert (await client.get(url)).text == "hello"
        assert [r.target for r in proxy.requests] == [url, url]
        monkeypatch.setenv("NO_PROXY", "origin.test")
        async with asyncpool.Client(dial=direct) as client:
            assert (await client.get(url)).text == "hello"
        monkeypatch.delenv("NO_PROXY")
        async with asyncpool.Client(trust_env=False, dial=direct) as client:
            assert (await client.get(url)).text == "hello"
        async with asyncpool.Client(proxy=None, dial=direct) as client:
            assert (await client.get(url)).text == "hello"
    assert len(proxy.requests) == 2 and len(origin.requests) == 5
    assert dialed == [("origin.test", origin.port)] * 3


# -- httpx -----------------------------------------------------------------------------------


async def test_httpx_transport_takes_httpx_proxy(anyio_backend: str, tls: TLSFixture) -> None:
    import httpx

    from asyncpool.httpx import HTTPXTransport

    async with (
        open_proxy(auth="u:p w") as proxy,
        open_server(ssl_context=tls.server_context) as origin,
        open_server() as plain,
    ):
        transport = HTTPXTransport(
            verify=tls.client_context,
            proxy=httpx.Proxy(proxy.url, auth=("u", "p w"), headers={"X-Tunnel": "1"}),
        )
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(origin.url_for("/"))).text == "hello"
            assert (await client.get(plain.url_for("/"))).text == "hello"
    connect, forwarded = proxy.requests
    assert connect.method == "CONNECT" and connect.header("x-tunnel") == "1"
    assert forwarded.target == plain.url_for("/") and forwarded.header("x-tunnel") is None
    assert forwarded.header("proxy-authorization") == connect.header("proxy-authorization")


async def test_httpx_maps_proxy_error(anyio_backend: str, tls: TLSFixture) -> None:
    import httpx

    from asyncpool.httpx import HTTPXTransport

    async with open_proxy(mode="502") as proxy:
        transport = HTTPXTransport(verify=tls.client_context, proxy=proxy.url)
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ProxyError, match="502"):
                await client.get("https://origin.test/")


# -- SOCKS: the wiring only (the handshake is _socks.py's) -----------------------------------


async def test_socks_without_socksio_says_which_extra_to_install(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # as if not installed
    async with (
        open_socks_server() as proxy,
        Transport(proxy=f"socks5h://{proxy.host}:{proxy.port}") as pool,
    ):
        with pytest.raises(ImportError, match=r"asyncpool-http\[socks\]"):
            await pool.round_trip(Request("GET", "http://origin.test/"))
        assert pool.stats().total == 0


@pytest.mark.parametrize("scheme", ["socks5h", "socks5"])
async def test_socks_tunnels_http_targets_too(anyio_backend: str, scheme: str) -> None:
    """Through SOCKS even an http:// target is tunnelled (origin form, its own pool key), and
    socks5h leaves the name to the proxy while socks5 sends the address it resolved."""
    script = SocksScript(auth="password", credentials=("user", "pw"))
    async with open_server() as origin:
        upstream = ("127.0.0.1", origin.port)
        async with open_socks_server(script, upstream=upstream) as proxy:
            proxy_url = f"{scheme}://user:pw@127.0.0.1:{proxy.port}"
            url = f"http://localhost:{origin.port}/"
            async with Transport(proxy=proxy_url) as pool:
                assert await get(pool, url) == (200, b"hello")
                assert await get(pool, url) == (200, b"hello")
                key = f"http://localhost:{origin.port} via {parse_proxy(proxy_url).key}"
                assert list(pool.stats().hosts) == [key]
                assert pool.stats().dials == 1  # one tunnel, reused
    assert origin.requests[0].target == "/"  # tunnelled: origin form
    (asked,) = proxy.requests
    assert (asked.username, asked.password, asked.port) == ("user", "pw", origin.port)
    if scheme == "socks5h":
        assert (asked.atype, asked.address) == ("domain", "localhost")
    else:
        assert asked.atype in ("ipv4", "ipv6") and asked.address in ("127.0.0.1", "::1")


# -- found by review: credentials in pool keys and messages, a non-ASCII CONNECT target ------


async def test_a_tunnel_opened_with_one_password_never_serves_another(tls: TLSFixture) -> None:
    """Tunnels are pooled by the proxy URL with its password (a keyed digest of it, never the
    password itself), as Go keys them: a request whose proxy function gives another password
    gets its own CONNECT, and the proxy refuses it (it rode the tunnel of the right one)."""
    async with (
        open_proxy(auth="alice:right") as proxy,
        open_server(ssl_context=tls.server_context) as origin,
    ):
        good = proxy.url.replace("http://", "http://alice:right@")
        bad = proxy.url.replace("http://", "http://alice:wrong@")
        chosen = iter([good, bad])
        async with Transport(
            proxy=lambda request: next(chosen), tls_config=tls.client_context
        ) as pool:
            assert await get(pool, origin.url_for("/")) == (200, b"hello")
            with pytest.raises(asyncpool.ProxyError) as info:
                await pool.round_trip(Request("GET", origin.url_for("/")))
            assert info.value.status_code == 407
            assert not any("right" in key or "wrong" in key for key in pool.stats().hosts)
    assert len([r for r in proxy.requests if r.method == "CONNECT"]) == 2


async def test_a_socks_tunnel_opened_with_one_password_never_serves_another() -> None:
    script = SocksScript(auth="password", credentials=("alice", "right"))
    async with open_server() as origin:
        upstream = ("127.0.0.1", origin.port)
        async with open_socks_server(script, upstream=upstream) as proxy:
            good = f"socks5h://alice:right@127.0.0.1:{proxy.port}"
            bad = f"socks5h://alice:wrong@127.0.0.1:{proxy.port}"
            chosen = iter([good, bad])
            url = f"http://origin.test:{origin.port}/"
            async with Transport(proxy=lambda request: next(chosen)) as pool:
                assert await get(pool, url) == (200, b"hello")
                with pytest.raises(asyncpool.ProxyError):
                    await pool.round_trip(Request("GET", url))


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:s3cret@p.test:99999",
        "http://alice:s3cret@p.test:abc",
        "http://alice:s3cret/x@p.test:3128",  # an unescaped "/" ends the host early
    ],
)
def test_an_invalid_proxy_url_is_reported_without_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="proxy") as info:
        Transport(proxy=url)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError) as info:
        asyncpool.EnvironmentProxies.from_environ({"HTTPS_PROXY": url.replace("3128", "x")})
    assert "s3cret" not in str(info.value)


def test_environment_proxies_show_no_password() -> None:
    proxies = asyncpool.EnvironmentProxies.from_environ(
        {"HTTPS_PROXY": "http://alice:s3cret@p.test:3128"}
    )
    assert "s3cret" not in repr(proxies)
    assert "alice@p.test:3128" in repr(proxies)


async def test_connect_names_a_non_ascii_host_in_its_idna_form(tls: TLSFixture) -> None:
    """As the Host field of a forwarded request: h11 refused the Unicode name, and its
    UnicodeEncodeError escaped untyped."""
    async with open_proxy() as proxy, open_server(ssl_context=tls.server_context) as origin:
        proxy.hosts["xn--bcher-kva.test"] = "127.0.0.1"
        async with Transport(proxy=proxy.url, tls_config=tls.client_context) as pool:
            with pytest.raises(asyncpool.TLSError):  # the test certificate names other hosts
                await pool.round_trip(Request("GET", f"https://bücher.test:{origin.port}/"))
    (connect,) = proxy.requests
    assert connect.target == f"xn--bcher-kva.test:{origin.port}"
