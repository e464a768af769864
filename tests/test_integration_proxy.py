"""Proxy integration tests: asyncpool through a real squid (HTTP proxy: absolute form for http
origins, CONNECT tunnels for https, Basic proxy auth) and a real microsocks (SOCKS5, socks5 and
socks5h, username/password), to origins on a private nginx (tests/nginx.py) with HTTP/1.1 and,
over TLS, HTTP/2 by ALPN. On asyncio and trio.

The `test_fixture_*` tests check the fixtures themselves with httpx's own proxy support (and
openssl), independently of asyncpool: `pytest tests/test_integration_proxy.py -k "fixture or httpx"`.

Skipped when nginx, squid or microsocks is not installed, unless ASYNCPOOL_REQUIRE_INTEGRATION=1
(`.ci/run` installs them: `apt-get install nginx-light squid microsocks`).
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator

import anyio
import httpx
import pytest
import trustme

import asyncpool
from tests.nginx import (
    ONE_MIB_BODY,
    SMALL_BODY,
    Nginx,
    require_nginx,
    run_nginx,
    tls_files_from_trustme,
)
from tests.servers import wait_until
from tests.socks5 import Socks5, require_socks5, run_socks5
from tests.squid import Squid, apr1_hash, require_squid, run_squid

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SQUID_AUTH = ("alice", "s3cret")
SOCKS_AUTH = ("bob", "hunter2")


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA, *, http2: bool = True) -> ssl.SSLContext:
    """A fresh client context trusting `ca`, offering h2 (if `http2`) and http/1.1 by ALPN
    (the Transport uses a tls_config as given)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Nginx]:
    """The origin: plain HTTP/1.1 on `port`, TLS with h2 + http/1.1 on `tls_port`; the
    certificate names 127.0.0.1 and localhost (socks5h sends the name to the proxy)."""
    require_nginx()
    directory = tmp_path_factory.mktemp("proxy-origin-tls")
    files = tls_files_from_trustme(ca.issue_cert("127.0.0.1", "localhost"), directory)
    with run_nginx(http2_tls=files) as server:
        yield server


@pytest.fixture(scope="module")
def squid_open() -> Iterator[Squid]:
    require_squid()
    with run_squid() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def squid_auth() -> Iterator[Squid]:
    require_squid()
    with run_squid(auth=SQUID_AUTH) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def fresh_squid_logs(request: pytest.FixtureRequest) -> None:
    """The squids are shared by the module's tests: each test reads only its own log lines."""
    for name in ("squid_open", "squid_auth"):
        if name in request.fixturenames:
            request.getfixturevalue(name).forget_log()


@pytest.fixture(params=["open", "auth"])
def squid(request: pytest.FixtureRequest) -> Squid:
    """Each squid test runs against the open squid and the one requiring Basic credentials."""
    name = "squid_open" if request.param == "open" else "squid_auth"
    proxy: Squid = request.getfixturevalue(name)
    proxy.forget_log()
    return proxy


@pytest.fixture(scope="module")
def socks_open() -> Iterator[Socks5]:
    require_socks5()
    with run_socks5() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def socks_auth() -> Iterator[Socks5]:
    require_socks5()
    with run_socks5(auth=SOCKS_AUTH) as proxy:
        yield proxy


@pytest.fixture(params=["open", "auth"])
def socks(request: pytest.FixtureRequest) -> Socks5:
    name = "socks_open" if request.param == "open" else "socks_auth"
    proxy: Socks5 = request.getfixturevalue(name)
    return proxy


def origin_url(nginx: Nginx, scheme: str, path: str = "/small", host: str = "127.0.0.1") -> str:
    port = nginx.tls_port if scheme == "https" else nginx.port
    return f"{scheme}://{host}:{port}{path}"


async def wait_for_log(proxy: Squid, needle: str, *, timeout: float = 10.0) -> None:
    """squid logs a transaction when it ends (a CONNECT tunnel when it closes): wait for it."""
    await wait_until(lambda: needle in proxy.access_log(), timeout=timeout)


def via_key(
    pool: asyncpool.Transport, origin: str, proxy_port: int, *, forwarded: bool = False
) -> str:
    """The stats() key of `origin` reached through the proxy on `proxy_port`:
    "<origin> via <proxy>" for a tunnel, "via <proxy>" for http forwarded by an HTTP proxy (one
    pool for every origin, as Go's), the proxy named without its password (a keyed digest of
    it follows, when there is one)."""
    prefix = "via " if forwarded else f"{origin} via "
    keys = [key for key in pool.stats().hosts if key.startswith(prefix)]
    assert len(keys) == 1, pool.stats().hosts
    key = keys[0]
    assert re.fullmatch(rf".*127\.0\.0\.1:{proxy_port}( \(credentials [0-9a-f]{{16}}\))?", key), key
    for secret in (SQUID_AUTH[1], SOCKS_AUTH[1]):
        assert secret not in key, key
    return key


async def get(
    pool: asyncpool.Transport, url: str, trace: asyncpool.ClientTrace | None = None
) -> tuple[str, int, bytes]:
    response = await pool.round_trip(asyncpool.Request("GET", url, trace=trace))
    async with response:
        return response.http_version, response.status_code, await response.aread()


# ---------------------------------------------------------------------- the fixtures themselves


def test_fixture_apr1_hash_matches_openssl() -> None:
    """The htpasswd line squid checks: our $apr1$ hash is the one openssl makes."""
    assert apr1_hash("s3cret", "abcdefgh") == "$apr1$abcdefgh$M2T3erDstkD7SsE2QQnfH0"
    openssl = shutil.which("openssl")
    if openssl is None:
        return
    for password in ("s3cret", "", "p@ss:w/rd", "x" * 40):
        out = subprocess.run(
            [openssl, "passwd", "-apr1", "-salt", "saltsalt", password],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert apr1_hash(password, "saltsalt") == out.stdout.strip()


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_fixture_squid_forwards_and_tunnels_with_httpx(
    nginx: Nginx, squid: Squid, ca: trustme.CA, scheme: str
) -> None:
    """httpx through squid: an http origin in absolute form, an https origin through CONNECT
    (HTTP/2 inside the tunnel); squid's access log shows both went through it."""
    url = origin_url(nginx, scheme)
    async with httpx.AsyncClient(proxy=squid.url, verify=client_context(ca), http2=True) as client:
        with anyio.fail_after(20):
            for _ in range(3):
                response = await client.get(url)
                assert (response.status_code, response.content) == (200, SMALL_BODY)
    if scheme == "https":
        assert response.http_version == "HTTP/2"
        await wait_for_log(squid, f"CONNECT 127.0.0.1:{nginx.tls_port}")
        assert "TCP_TUNNEL/200" in squid.access_log()
    else:
        await wait_for_log(squid, f"GET {url}")
    if squid.auth is not None:
        assert f" {SQUID_AUTH[0]} " in squid.access_log()  # the authenticated user


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_fixture_squid_wants_credentials_with_httpx(
    nginx: Nginx, squid_auth: Squid, ca: trustme.CA, scheme: str
) -> None:
    """The authenticating squid answers 407 to no or wrong credentials: a 407 response for an
    http origin, a refused CONNECT (httpx.ProxyError) for an https one."""
    url = origin_url(nginx, scheme)
    for proxy in (squid_auth.bare_url, squid_auth.url_with(SQUID_AUTH[0], "wrong")):
        async with httpx.AsyncClient(proxy=proxy, verify=client_context(ca)) as client:
            with anyio.fail_after(20):
                if scheme == "http":
                    response = await client.get(url)
                    assert response.status_code == 407
                    assert response.headers["proxy-authenticate"].startswith("Basic ")
                else:
                    with pytest.raises(httpx.ProxyError, match="407"):
                        await client.get(url)


def test_fixture_squid_with_curl(nginx: Nginx, squid_auth: Squid) -> None:
    """curl, where installed: the same squid forwards with the right credentials only."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    for proxy, expected in ((squid_auth.url, "200"), (squid_auth.url_with("alice", "x"), "407")):
        out = subprocess.run(
            [
                curl,
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                proxy,
                nginx.url("/small"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert out.stdout == expected


@pytest.mark.parametrize("proxy_scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_fixture_socks5_with_httpx(
    nginx: Nginx, socks: Socks5, ca: trustme.CA, scheme: str, proxy_scheme: str
) -> None:
    """httpx (httpcore + socksio) through microsocks, to an origin named `localhost`."""
    url = origin_url(nginx, scheme, host="localhost")
    async with httpx.AsyncClient(
        proxy=socks.url(proxy_scheme), verify=client_context(ca), http2=True
    ) as client:
        with anyio.fail_after(20):
            response = await client.get(url)
    assert (response.status_code, response.content) == (200, SMALL_BODY)
    assert response.http_version == ("HTTP/2" if scheme == "https" else "HTTP/1.1")


def _socks5_get(proxy: Socks5, auth: tuple[str, str] | None, port: int) -> bytes:
    """A SOCKS5 exchange by hand (RFC 1928 + RFC 1929): authenticate with `auth`, CONNECT to
    127.0.0.1:`port`, GET /small; returns the HTTP response, or raises on a refusal."""
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.sendall(b"\x05\x01" + (b"\x02" if auth else b"\x00"))
        method = sock.recv(2)
        if method[1:] == b"\xff":
            raise ConnectionRefusedError("no acceptable method")
        if auth is not None:
            user, password = (part.encode() for part in auth)
            sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
            if sock.recv(2) != b"\x01\x00":
                raise ConnectionRefusedError("credentials refused")
        sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + port.to_bytes(2, "big"))
        reply = sock.recv(10)
        if reply[:2] != b"\x05\x00":
            raise ConnectionRefusedError(f"CONNECT refused: {reply!r}")
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        return response


def test_fixture_socks5_checks_credentials_by_hand(
    nginx: Nginx, socks_open: Socks5, socks_auth: Socks5
) -> None:
    """microsocks without a client library: the open one takes "no authentication", the other
    only the right username/password, on every connection (no auth-once)."""
    assert _socks5_get(socks_open, None, nginx.port).endswith(b"\r\n\r\n" + SMALL_BODY)
    for _ in range(2):
        response = _socks5_get(socks_auth, SOCKS_AUTH, nginx.port)
        assert response.startswith(b"HTTP/1.1 200 ")
        assert response.endswith(SMALL_BODY)
        for wrong in (None, (SOCKS_AUTH[0], "wrong"), ("eve", SOCKS_AUTH[1])):
            with pytest.raises(ConnectionRefusedError):
                _socks5_get(socks_auth, wrong, nginx.port)


# ---------------------------------------------------------------------- asyncpool through squid


async def test_squid_http_origin_in_absolute_form(nginx: Nginx, squid: Squid) -> None:
    """An http origin through an HTTP proxy: absolute-form requests on one pooled connection
    to the proxy (100 requests, one dial)."""
    url = nginx.url("/small")
    async with asyncpool.Transport(proxy=squid.url) as pool:
        with anyio.fail_after(30):
            for _ in range(100):
                assert await get(pool, url) == ("HTTP/1.1", 200, SMALL_BODY)
        stats = pool.stats()
        assert (stats.dials, stats.reused, stats.failed_dials) == (1, 99, 0)
        key = via_key(pool, f"http://127.0.0.1:{nginx.port}", squid.port, forwarded=True)
        assert pool.stats().hosts[key].idle == 1
        assert f"http://127.0.0.1:{nginx.port}" not in pool.stats().hosts  # nothing direct
    # squid logs each transaction as it ends, the last one perhaps after the response reached us.
    await wait_until(lambda: squid.access_log().count(f"GET {url}") >= 100, timeout=10)
    assert squid.access_log().count(f"GET {url}") == 100


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_squid_https_origin_through_connect(
    nginx: Nginx, squid: Squid, ca: trustme.CA, http2: bool
) -> None:
    """An https origin through a CONNECT tunnel, then TLS to the origin: ALPN picks HTTP/2
    inside the tunnel (or HTTP/1.1 with http2=False); 100 requests, one tunnel."""
    url = nginx.tls_url("/small")
    version = "HTTP/2" if http2 else "HTTP/1.1"
    async with asyncpool.Transport(
        proxy=squid.url, tls_config=client_context(ca, http2=http2), http2=http2
    ) as pool:
        with anyio.fail_after(30):
            for _ in range(100):
                assert await get(pool, url) == (version, 200, SMALL_BODY)
        stats = pool.stats()
        assert (stats.dials, stats.reused, stats.failed_dials) == (1, 99, 0)
        via_key(pool, f"https://127.0.0.1:{nginx.tls_port}", squid.port)
    # The tunnel is logged when it closes: once, for the one CONNECT.
    await wait_for_log(squid, f"CONNECT 127.0.0.1:{nginx.tls_port}")
    assert squid.access_log().count(f"CONNECT 127.0.0.1:{nginx.tls_port}") == 1


async def test_squid_concurrent_http2_requests_share_one_tunnel(
    nginx: Nginx, squid_open: Squid, ca: trustme.CA
) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    results: list[tuple[str, int, bytes]] = []

    async def one() -> None:
        results.append(await get(pool, nginx.tls_url("/small"), trace))

    async with asyncpool.Transport(proxy=squid_open.url, tls_config=client_context(ca)) as pool:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(one)
        assert results == [("HTTP/2", 200, SMALL_BODY)] * 100
        assert pool.stats().dials == 1
        assert {info.protocol for info in infos} == {"HTTP/2"}
        key = via_key(pool, f"https://127.0.0.1:{nginx.tls_port}", squid_open.port)
        host = pool.stats().hosts[key]
        assert (host.total, host.idle, host.in_use, host.streams) == (1, 1, 0, 0)


async def test_squid_one_mib_body_through_the_tunnel(
    nginx: Nginx, squid_open: Squid, ca: trustme.CA
) -> None:
    async with asyncpool.Transport(proxy=squid_open.url, tls_config=client_context(ca)) as pool:
        with anyio.fail_after(30):
            for scheme in ("http", "https"):
                _, status, body = await get(pool, origin_url(nginx, scheme, "/1mb.bin"))
                assert (status, body == ONE_MIB_BODY) == (200, True)


async def test_squid_max_conns_per_host_is_counted_per_origin(
    nginx: Nginx, squid_open: Squid, ca: trustme.CA
) -> None:
    """max_conns_per_host=2 with two https origins tunnelled through the same proxy: two
    connections for each origin (four to the proxy), the other requests wait for their own
    origin's. (http forwarded by the proxy shares one pool for every origin, as Go's.)"""
    origins = [f"https://127.0.0.1:{nginx.tls_port}", f"https://localhost:{nginx.tls_port}"]
    release = anyio.Event()
    bodies: list[bytes] = []

    async def one(origin: str) -> None:
        response = await pool.round_trip(asyncpool.Request("GET", f"{origin}/1mb.bin"))
        async with response:
            await release.wait()  # holds its connection: 1 MiB is not read yet
            bodies.append(await response.aread())

    async with asyncpool.Transport(
        proxy=squid_open.url,
        max_conns_per_host=2,
        http2=False,
        tls_config=client_context(ca, http2=False),
    ) as pool:

        def saturated() -> bool:
            hosts = pool.stats().hosts
            keys = [k for k in hosts if " via " in k]
            return len(keys) == 2 and all(
                (hosts[k].in_use, hosts[k].waiting) == (2, 3) for k in keys
            )

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for origin in origins:
                    for _ in range(5):
                        tg.start_soon(one, origin)
                await wait_until(saturated, timeout=20)
                for origin in origins:
                    via_key(pool, origin, squid_open.port)
                assert pool.stats().in_use == 4
                release.set()
        assert bodies == [ONE_MIB_BODY] * 10
        stats = pool.stats()
        assert stats.dials == 4
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0)


async def test_squid_cancelled_while_the_tunnel_is_built_leaks_nothing(
    nginx: Nginx, squid: Squid, ca: trustme.CA
) -> None:
    """The request is cancelled as the CONNECT starts: nothing stays in use, dialing or
    waiting; a tunnel that was finished anyway is idle in the pool (Go hands a cancelled
    request's dial to the pool) and goes with close_idle_connections(); then the pool is empty,
    squid sees the tunnel closed, and the next request works."""
    events: list[str] = []
    scope = anyio.CancelScope()

    def proxy_connect_start(*args: object) -> None:
        events.append("proxy_connect_start")
        scope.cancel()

    trace = asyncpool.ClientTrace(proxy_connect_start=proxy_connect_start)
    async with asyncpool.Transport(proxy=squid.url, tls_config=client_context(ca)) as pool:
        with scope, anyio.fail_after(20):
            await get(pool, nginx.tls_url("/small"), trace)
        assert scope.cancelled_caught
        assert events == ["proxy_connect_start"]
        await wait_until(lambda: pool.stats().dialing == 0, timeout=20)
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0), stats
        assert stats.total == stats.idle <= 1
        await pool.close_idle_connections()
        assert pool.stats().total == 0
        if stats.dials:
            await wait_for_log(squid, f"CONNECT 127.0.0.1:{nginx.tls_port}")
        with anyio.fail_after(20):
            assert await get(pool, nginx.tls_url("/small")) == ("HTTP/2", 200, SMALL_BODY)
    assert pool.stats().total == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_squid_wrong_credentials_are_a_proxy_error_with_407(
    nginx: Nginx, squid_auth: Squid, ca: trustme.CA, scheme: str
) -> None:
    """No or wrong credentials: squid's 407. Refusing a CONNECT is a ProxyError (phase
    "proxy") with the proxy's status and headers; for an http origin in absolute form the 407
    is either the response (as Go and httpx return it) or that same ProxyError."""
    url = origin_url(nginx, scheme)
    target = f"127.0.0.1:{nginx.tls_port if scheme == 'https' else nginx.port}"
    for proxy in (squid_auth.bare_url, squid_auth.url_with(SQUID_AUTH[0], "wrong")):
        async with asyncpool.Transport(proxy=proxy, tls_config=client_context(ca)) as pool:
            with anyio.fail_after(20):
                if scheme == "http":
                    try:
                        _, status, _ = await get(pool, url)
                    except asyncpool.ProxyError as exc:
                        status = exc.status_code or 0
                    assert status == 407
                    continue
                with pytest.raises(asyncpool.ProxyError) as info:
                    await get(pool, url)
            error = info.value
            assert isinstance(error, asyncpool.ConnectError)
            assert error.phase == "proxy"
            assert error.status_code == 407
            assert error.target == target
            assert error.host == f"127.0.0.1:{squid_auth.port}"
            headers = {name.lower(): value for name, value in error.headers}
            assert headers["proxy-authenticate"].startswith("Basic ")
            assert SQUID_AUTH[1] not in str(error)
            stats = pool.stats()
            assert (stats.total, stats.failed_dials) == (0, 1)


async def test_squid_credentials_are_percent_decoded(nginx: Nginx, ca: trustme.CA) -> None:
    """A user name and password with reserved characters, percent-encoded in the proxy URL."""
    require_squid()
    with run_squid(auth=("al ice", "p@ss:w/rd%")) as proxy:
        assert "%40" in proxy.url and "%3A" in proxy.url
        async with asyncpool.Transport(proxy=proxy.url, tls_config=client_context(ca)) as pool:
            with anyio.fail_after(20):
                for scheme in ("http", "https"):
                    _, status, body = await get(pool, origin_url(nginx, scheme))
                    assert (status, body) == (200, SMALL_BODY)


async def test_squid_proxy_chosen_per_request_by_a_callable(
    nginx: Nginx, squid_open: Squid, ca: trustme.CA
) -> None:
    """proxy=callable: `localhost` goes through squid, 127.0.0.1 directly."""
    asked: list[str] = []

    def choose(request: asyncpool.Request) -> str | None:
        asked.append(request.url.host)
        return squid_open.url if request.url.host == "localhost" else None

    async with asyncpool.Transport(proxy=choose, tls_config=client_context(ca)) as pool:
        with anyio.fail_after(20):
            for host in ("localhost", "127.0.0.1"):
                for scheme in ("http", "https"):
                    _, status, body = await get(pool, origin_url(nginx, scheme, host=host))
                    assert (status, body) == (200, SMALL_BODY)
        hosts = pool.stats().hosts
        assert f"http://127.0.0.1:{nginx.port}" in hosts
        assert f"https://127.0.0.1:{nginx.tls_port}" in hosts
        via_key(pool, f"http://localhost:{nginx.port}", squid_open.port, forwarded=True)
        via_key(pool, f"https://localhost:{nginx.tls_port}", squid_open.port)
        assert set(asked) == {"localhost", "127.0.0.1"}
    await wait_for_log(squid_open, f"GET http://localhost:{nginx.port}/small")
    assert f"127.0.0.1:{nginx.port}/small" not in squid_open.access_log()


async def test_squid_trace_reports_the_proxy_connect_once_per_tunnel(
    nginx: Nginx, squid_open: Squid, ca: trustme.CA
) -> None:
    events: list[str] = []
    trace = asyncpool.ClientTrace(
        proxy_connect_start=lambda *args: events.append("proxy_connect_start"),
        proxy_connect_done=lambda *args: events.append("proxy_connect_done"),
        tls_handshake_start=lambda: events.append("tls_handshake_start"),
    )
    async with asyncpool.Transport(proxy=squid_open.url, tls_config=client_context(ca)) as pool:
        with anyio.fail_after(20):
            for _ in range(3):
                assert await get(pool, nginx.tls_url("/small"), trace) == (
                    "HTTP/2",
                    200,
                    SMALL_BODY,
                )
    # The CONNECT exchange comes before the TLS handshake with the origin, once.
    assert events == ["proxy_connect_start", "proxy_connect_done", "tls_handshake_start"]


# ---------------------------------------------------------------------- asyncpool through SOCKS5


@pytest.mark.parametrize("proxy_scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_socks5_tunnels_http_and_https_origins(
    nginx: Nginx, socks: Socks5, ca: trustme.CA, scheme: str, proxy_scheme: str
) -> None:
    """SOCKS5 tunnels everything (an http origin too: origin-form requests inside the tunnel);
    https gets HTTP/2 by ALPN. socks5h leaves the name `localhost` to the proxy: the client does
    not look it up."""
    url = origin_url(nginx, scheme, host="localhost")
    version = "HTTP/2" if scheme == "https" else "HTTP/1.1"
    looked_up: list[str] = []
    trace = asyncpool.ClientTrace(dns_start=lambda info: looked_up.append(info.host))
    async with asyncpool.Transport(
        proxy=socks.url(proxy_scheme), tls_config=client_context(ca)
    ) as pool:
        with anyio.fail_after(30):
            for _ in range(50):
                assert await get(pool, url, trace) == (version, 200, SMALL_BODY)
        stats = pool.stats()
        assert (stats.dials, stats.reused, stats.failed_dials) == (1, 49, 0)
        via_key(pool, url.rsplit("/", 1)[0], socks.port)
    if proxy_scheme == "socks5h":
        assert "localhost" not in looked_up


async def test_socks5_max_conns_per_host_is_counted_per_origin(
    nginx: Nginx, socks_open: Socks5
) -> None:
    origins = [f"http://127.0.0.1:{nginx.port}", f"http://localhost:{nginx.port}"]
    release = anyio.Event()
    bodies: list[bytes] = []

    async def one(origin: str) -> None:
        response = await pool.round_trip(asyncpool.Request("GET", f"{origin}/1mb.bin"))
        async with response:
            await release.wait()
            bodies.append(await response.aread())

    async with asyncpool.Transport(proxy=socks_open.url(), max_conns_per_host=1) as pool:

        def saturated() -> bool:
            hosts = pool.stats().hosts
            keys = [k for k in hosts if " via " in k]
            return len(keys) == 2 and all(
                (hosts[k].in_use, hosts[k].waiting) == (1, 2) for k in keys
            )

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for origin in origins:
                    for _ in range(3):
                        tg.start_soon(one, origin)
                await wait_until(saturated, timeout=20)
                release.set()
        assert bodies == [ONE_MIB_BODY] * 6
        assert pool.stats().dials == 2


@pytest.mark.parametrize("proxy_scheme", ["socks5", "socks5h"])
async def test_socks5_wrong_credentials_are_a_proxy_error(
    nginx: Nginx, socks_auth: Socks5, ca: trustme.CA, proxy_scheme: str
) -> None:
    wrong = [
        socks_auth.url_with(SOCKS_AUTH[0], "wrong", scheme=proxy_scheme),
        f"{proxy_scheme}://{socks_auth.host}:{socks_auth.port}",  # none at all
    ]
    for proxy in wrong:
        async with asyncpool.Transport(proxy=proxy, tls_config=client_context(ca)) as pool:
            for scheme in ("http", "https"):
                with anyio.fail_after(20), pytest.raises(asyncpool.ProxyError) as info:
                    await get(pool, origin_url(nginx, scheme))
                assert info.value.phase == "proxy"
                assert info.value.host == f"127.0.0.1:{socks_auth.port}"
                assert info.value.status_code is None
            assert pool.stats().total == 0


async def test_socks5_cancelled_while_the_tunnel_is_built_leaks_nothing(
    nginx: Nginx, socks_auth: Socks5, ca: trustme.CA
) -> None:
    scope = anyio.CancelScope()
    trace = asyncpool.ClientTrace(proxy_connect_start=lambda *args: scope.cancel())
    async with asyncpool.Transport(proxy=socks_auth.url(), tls_config=client_context(ca)) as pool:
        with scope, anyio.fail_after(20):
            await get(pool, nginx.tls_url("/small"), trace)
        assert scope.cancelled_caught
        await wait_until(lambda: pool.stats().dialing == 0, timeout=20)
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0), stats
        await pool.close_idle_connections()
        assert pool.stats().total == 0
        with anyio.fail_after(20):
            assert await get(pool, nginx.tls_url("/small")) == ("HTTP/2", 200, SMALL_BODY)
