"""The Client's cookies (issue 25): a cookie it could not send is never stored nor sent, a
``Domain`` attribute may not name another IP address nor a public suffix."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncpool import Client
from asyncpool._cookies import is_public_suffix
from asyncpool._h1.protocol import PARSERS
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server

pytestmark = pytest.mark.anyio


async def app(req: ServerRequest, conn: ServerConnection) -> None:
    """``/set?h=<hex>&h=...``: one ``Set-Cookie`` per ``h``, its bytes as given (h11 sends
    obs-text); ``/inspect``: the request's ``Cookie`` field ("-" without one)."""
    if req.path == "/set":
        hexes = [value for name, value in _query_pairs(req.target) if name == "h"]
        headers: Any = [(b"set-cookie", bytes.fromhex(h)) for h in hexes]
        await conn.respond(200, headers, b"set")
    else:
        await conn.respond(200, [], (req.header("cookie") or "-").encode())


def _query_pairs(target: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    return parse_qsl(urlsplit(target).query)


def set_url(base: str, *set_cookies: bytes) -> str:
    return f"{base}/set?" + "&".join(f"h={raw.hex()}" for raw in set_cookies)


@pytest.fixture
async def cookie_server(anyio_backend: str) -> AsyncIterator[TestServer]:
    async with open_server(app) as srv:
        yield srv


@asynccontextmanager
async def any_host() -> AsyncIterator[Client]:
    """A Client whose every connection reaches ``app`` (on a Unix socket), whatever the URL's
    host: hosts and IP addresses without DNS."""
    directory = Path(tempfile.mkdtemp(prefix="asyncpool-"))
    path = directory / "http.sock"
    listener = await anyio.create_unix_listener(path)
    server = TestServer("uds.test", 80, tls=False)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._accept_loop, listener, app, None)
            try:
                async with Client(uds=str(path)) as client:
                    yield client
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()
            for conn in server.connections:
                await conn._shutdown(graceful=False)
        shutil.rmtree(directory, ignore_errors=True)


async def sent(client: Client, url: str) -> str:
    response = await client.get(url)
    assert response.status_code == 200
    return response.text


# -- cookies the Client could not send ----------------------------------------------------------


@pytest.mark.parametrize("http1_parser", PARSERS, indirect=True)
async def test_a_cookie_with_a_non_ascii_byte_is_dropped(cookie_server: TestServer) -> None:
    base = cookie_server.url
    async with Client() as client:
        await client.get(set_url(base, b"bad=caf\xe9; Path=/", b"good=1; Path=/"))
        await client.get(set_url(base, b"caf\xe9=x; Path=/", b"tab=a\tb; Path=/"))
        assert [c.name for c in client.cookies] == ["good"]
        assert await sent(client, f"{base}/inspect") == "good=1"  # the host still works
        assert await sent(client, f"{base}/inspect") == "good=1"


async def test_a_subdomain_cannot_break_its_parent_domain() -> None:
    async with any_host() as client:
        poison = b"p=\xe9; Domain=example.com; Path=/"
        await client.get(set_url("http://evil.example.com", poison))
        assert list(client.cookies) == []
        assert await sent(client, "http://www.example.com/inspect") == "-"


async def test_a_stored_cookie_that_cannot_be_sent_is_skipped(cookie_server: TestServer) -> None:
    base = cookie_server.url
    jar = CookieJar()  # a jar of one's own keeps its own (standard library) policy
    async with Client(cookies=jar) as client:
        await client.get(set_url(base, b"bad=caf\xe9; Path=/", b"good=1; Path=/"))
        assert {c.name for c in jar} == {"bad", "good"}
        assert await sent(client, f"{base}/inspect") == "good=1"
    async with Client(cookies={"x": "café", "ok": "1"}) as client:
        assert await sent(client, f"{base}/inspect") == "ok=1"


# -- the Domain attribute ---------------------------------------------------------------------


async def test_a_domain_attribute_naming_another_ip_address_is_refused() -> None:
    async with any_host() as client:
        await client.get(set_url("http://127.0.0.1", b"a=1; Domain=0.0.1; Path=/"))
        await client.get(set_url("http://127.0.0.1", b"b=1; Domain=.0.0.1; Path=/"))
        assert list(client.cookies) == []
        assert await sent(client, "http://10.0.0.1/inspect") == "-"
        assert await sent(client, "http://127.0.0.1/inspect") == "-"


async def test_a_domain_attribute_naming_the_ip_address_itself_is_kept() -> None:
    async with any_host() as client:
        await client.get(set_url("http://127.0.0.1", b"a=1; Domain=127.0.0.1; Path=/"))
        assert await sent(client, "http://127.0.0.1/inspect") == "a=1"
        assert await sent(client, "http://10.0.0.1/inspect") == "-"


needs_list = pytest.mark.skipif(
    is_public_suffix("co.uk") is None,
    reason="no Public Suffix List installed (publicsuffixlist or publicsuffix2)",
)


@needs_list
@pytest.mark.parametrize("suffix", ["github.io", "co.uk", "com"])
async def test_a_public_suffix_domain_is_refused(suffix: str) -> None:
    async with any_host() as client:
        await client.get(set_url(f"http://evil.{suffix}", f"a=1; Domain={suffix}".encode()))
        assert list(client.cookies) == []
        assert await sent(client, f"http://victim.{suffix}/inspect") == "-"


async def test_a_cookie_set_without_a_domain_goes_back_to_its_host_only() -> None:
    """RFC 6265 §5.3 step 6, as Go's jar: the default policy of http.cookiejar sent it to
    every subdomain of the host that set it."""
    async with any_host() as client:
        await client.get(set_url("http://example.test", b"sid=secret; Path=/"))
        assert await sent(client, "http://example.test/inspect") == "sid=secret"
        assert await sent(client, "http://EXAMPLE.test/inspect") == "sid=secret"
        assert await sent(client, "http://evil.example.test/inspect") == "-"
        assert await sent(client, "http://deep.evil.example.test/inspect") == "-"


# -- what worked still works ------------------------------------------------------------------


async def test_domain_cookies_reach_sibling_hosts() -> None:
    async with any_host() as client:
        await client.get(set_url("http://a.example.co.uk", b"s=1; Domain=example.co.uk; Path=/"))
        await client.get(set_url("http://a.example.co.uk", b"h=2; Path=/"))
        assert await sent(client, "http://b.example.co.uk/inspect") == "s=1"
        assert await sent(client, "http://a.example.co.uk/inspect") in ("s=1; h=2", "h=2; s=1")
        assert await sent(client, "http://other.co.uk/inspect") == "-"


@pytest.mark.parametrize("http1_parser", PARSERS, indirect=True)
async def test_ordinary_cookies_are_stored_and_sent(cookie_server: TestServer) -> None:
    base = cookie_server.url
    async with Client() as client:
        values = (b'q="quoted"; Path=/', b"__Host-id=a%20b-c_d.e~f; Path=/")
        await client.get(set_url(base, *values))
        got = await sent(client, f"{base}/inspect")
        assert sorted(got.split("; ")) == ["__Host-id=a%20b-c_d.e~f", 'q="quoted"']


# -- deletions, attributes, hosts --------------------------------------------------------------


@pytest.mark.parametrize("own_jar", [False, True])
async def test_a_site_cannot_delete_another_sites_cookies(own_jar: bool) -> None:
    """http.cookiejar deletes the cookie an expired one names before its policy is asked:
    any site could log the user out of any other."""
    jar = CookieJar() if own_jar else None
    async with any_host() as client:
        if jar is not None:
            client.cookies = jar
        await client.get(set_url("http://bank.test", b"sid=secret; Domain=bank.test; Path=/"))
        await client.get(set_url("http://evil.test", b"sid=; Domain=bank.test; Max-Age=0"))
        await client.get(set_url("http://evil.test", b"sid=; Path=/; Max-Age=0"))  # its own
        assert await sent(client, "http://www.bank.test/inspect") == "sid=secret"
        # The site itself still can.
        await client.get(set_url("http://bank.test", b"sid=; Domain=bank.test; Max-Age=0"))
        assert await sent(client, "http://www.bank.test/inspect") == "-"


@needs_list
async def test_a_public_suffix_host_naming_itself_sets_a_host_only_cookie() -> None:
    async with any_host() as client:
        tok = b"tok=secret; Domain=s3.amazonaws.com; Path=/"
        await client.get(set_url("http://s3.amazonaws.com", tok))
        assert await sent(client, "http://s3.amazonaws.com/inspect") == "tok=secret"
        assert await sent(client, "http://victim.s3.amazonaws.com/inspect") == "-"


async def test_an_unusable_attribute_is_ignored_not_the_cookie() -> None:
    async with any_host() as client:
        cookies = (b"a=1; Domain=; Path=/", b"b=2; Max-Age=3600s; Path=/", b"c=3; Path=dir")
        await client.get(set_url("http://example.test", *cookies))
        got = await sent(client, "http://example.test/inspect")
        assert sorted(got.split("; ")) == ["a=1", "b=2", "c=3"]  # c: the default path
        assert await sent(client, "http://other.example.test/inspect") == "-"  # a: host-only


async def test_the_hosts_cookies_whatever_the_urls_userinfo_or_script() -> None:
    async with any_host() as client:
        await client.get(
            set_url("http://alice:s3cret@a.test", b"h=1; Path=/", b"d=2; Domain=a.test")
        )
        assert sorted((await sent(client, "http://a.test/inspect")).split("; ")) == ["d=2", "h=1"]
        assert all("s3cret" not in cookie.domain for cookie in client.cookies)
        await client.get(set_url("http://bücher.example", b"u=1; Path=/"))
        assert await sent(client, "http://xn--bcher-kva.example/inspect") == "u=1"
        assert await sent(client, "http://bücher.example/inspect") == "u=1"
