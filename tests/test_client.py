"""The Client: verbs, bodies, params, redirects as Go's Client follows them, cookies, and an
overall timeout."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import pytest

import asyncpool
import asyncpool._client
import asyncpool._cookies
from asyncpool import Client, Request, Transport
from tests.servers import (
    ServerConnection,
    ServerRequest,
    TestServer,
    default_handler,
    open_server,
)

pytestmark = pytest.mark.anyio


async def app(req: ServerRequest, conn: ServerConnection) -> None:
    """Routes for the Client: redirects, cookies, and a request echo."""
    path, query = req.path, req.query
    if path.startswith("/redirect/"):
        await conn.read_body()
        code = int(path.rsplit("/", 1)[1])
        await conn.respond(code, [("location", query.get("to", "/inspect"))], b"moved")
    elif path == "/chunked-redirect":  # ?n=K: K redirects with a chunked body each, then 200
        left = int(query["n"])
        if not left:
            await conn.respond(200, [], b"arrived")
            return
        await conn.send_head(302, [("location", f"/chunked-redirect?n={left - 1}")])
        await conn.send_data(b"moved")
        await conn.end()
    elif path == "/inspect":  # how the request arrived, as JSON
        body = await conn.read_body()
        echo = {"method": req.method, "target": req.target, "body": body.decode()}
        echo["headers"] = {name: value for name, value in req.headers}
        await conn.respond(200, [("content-type", "application/json")], json.dumps(echo).encode())
    elif path == "/set-cookie":
        cookies = [("set-cookie", f"{k}={v}; Path=/") for k, v in query.items()]
        await conn.respond(200, cookies, b"set")
    elif path == "/set-cookie2":  # RFC 2965 (obsolete): only a jar whose policy asks reads it
        cookies = [("set-cookie2", f'{k}="{v}"; Version="1"; Path="/"') for k, v in query.items()]
        await conn.respond(200, cookies, b"set")
    elif path == "/loop":
        await conn.respond(302, [("location", "/loop")], b"")
    elif path == "/text":
        body = "héllo".encode("latin-1")
        await conn.respond(200, [("content-type", "text/plain; charset=latin-1")], body)
    elif path.startswith("/empty-gzip/"):  # a response without a body, "gzip" encoded
        code = int(path.rsplit("/", 1)[1])
        await conn.respond(code, [("content-encoding", "gzip"), ("etag", '"v1"')])
    elif path == "/gzip-members":  # two gzip members, one after the other (RFC 1952 2.2)
        body = gzip.compress(b"first member, ") + gzip.compress(b"second member")
        await conn.respond(200, [("content-encoding", "gzip")], body)
    elif path == "/redirect-unescaped":  # a Location as some servers send it: raw bytes
        location = "/inspect?q=a b&r=café".encode()
        await conn.send_raw(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n\r\n")
    elif path == "/stall-body":
        await conn.send_head(200, [("content-length", "10")])
        await conn.send_data(b"12345")
        await anyio.sleep_forever()
    else:
        await default_handler(req, conn)


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[TestServer]:
    async with open_server(app) as srv:
        yield srv


# -- requests and responses -------------------------------------------------------------------


async def test_verbs_read_the_body_and_send_a_user_agent(server: TestServer) -> None:
    async with Client() as client:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            response = await client.request(method, f"{server.url}/inspect")
            echo = response.json()
            assert echo["method"] == method
            assert echo["headers"]["user-agent"] == f"asyncpool/{asyncpool.__version__}"
        assert (await client.get(f"{server.url}/")).content == b"hello"
        assert (await client.head(f"{server.url}/")).content == b""
        assert (await client.post(f"{server.url}/inspect")).json()["method"] == "POST"
        assert client.transport.stats().dials == 1


async def test_json_form_text_and_bytes_bodies(server: TestServer) -> None:
    url = f"{server.url}/inspect"
    async with Client() as client:
        sent = (await client.post(url, json={"a": [1, 2]})).json()
        assert (sent["body"], sent["headers"]["content-type"]) == (
            '{"a":[1,2]}',
            "application/json",
        )
        sent = (await client.put(url, data={"x": "1 2", "y": ["a", "b"]})).json()
        assert sent["body"] == "x=1+2&y=a&y=b"
        assert sent["headers"]["content-type"] == "application/x-www-form-urlencoded"
        sent = (await client.patch(url, content="text")).json()
        assert sent["headers"]["content-type"] == "text/plain; charset=utf-8"
        sent = (await client.post(url, content=b"raw", headers={"Content-Type": "x/y"})).json()
        assert (sent["body"], sent["headers"]["content-type"]) == ("raw", "x/y")
        with pytest.raises(TypeError, match="at most one"):
            await client.post(url, json={}, data={})


async def test_base_url_params_and_default_headers(server: TestServer) -> None:
    async with Client(
        base_url=f"{server.url}/api",
        params={"v": 2},
        headers={"X-Team": "pool"},
    ) as client:
        echo = (await client.get(f"{server.url}/inspect?a=1", params={"b": "x y"})).json()
        assert echo["target"] == "/inspect?a=1&v=2&b=x+y"
        assert echo["headers"]["x-team"] == "pool"
        response = await client.get("status/204")
        assert response.request.url.target == "/api/status/204?v=2"


@pytest.mark.parametrize(
    "base", ["http://h.test/api", "http://h.test/api/", "http://h.test/api?k=K"]
)
def test_a_relative_url_goes_under_the_base_urls_path(base: str) -> None:
    """A base with a query lost its path (the "/" went after the query, and urljoin dropped
    the path); its query is not carried."""
    client = Client(base_url=base, trust_env=False)
    assert client.build_request("GET", "users").url.url == "http://h.test/api/users"
    assert client.build_request("GET", "/users?x=1").url.url == "http://h.test/api/users?x=1"


async def test_repeated_header_fields_are_all_sent(server: TestServer) -> None:
    # A list of pairs may name a field more than once (Headers is multi-valued); a request's
    # fields replace the Client's of the same name, all of them, and are kept whole.
    async with Client(headers=[("X-Team", "a"), ("X-Team", "b"), ("X-Env", "c")]) as client:
        response = await client.get(
            f"{server.url}/headers-echo", headers=[("X-Env", "d"), ("X-Env", "e")]
        )
    sent = [(name, value) for name, value in response.json() if name.startswith("x-")]
    assert sent == [("x-team", "a"), ("x-team", "b"), ("x-env", "d"), ("x-env", "e")]


async def test_userinfo_in_the_url_is_sent_as_basic_auth(server: TestServer) -> None:
    # As Go's Client (and curl, requests, httpx): user:password@ in the URL is Basic auth,
    # percent-decoded; an Authorization header given with the request wins.
    url = f"http://alice:p%40ss@127.0.0.1:{server.port}/inspect"
    async with Client() as client:
        sent = (await client.get(url)).json()["headers"]
        assert sent["authorization"] == "Basic YWxpY2U6cEBzcw=="  # alice:p@ss
        assert sent["host"] == f"127.0.0.1:{server.port}"
        sent = (await client.get(url, headers={"Authorization": "Bearer t"})).json()["headers"]
        assert sent["authorization"] == "Bearer t"


async def test_auth_set_after_construction_is_taken_as_the_constructor_takes_it(
    server: TestServer,
) -> None:
    async with Client() as client:
        client.auth = ("alice", "p@ss")  # a pair: Basic auth, as Client(auth=...) takes it
        assert isinstance(client.auth, asyncpool.BasicAuth)
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["authorization"] == "Basic YWxpY2U6cEBzcw=="
        client.auth = None
        assert "authorization" not in (await client.get(f"{server.url}/inspect")).json()["headers"]


async def test_text_json_and_raise_for_status(server: TestServer) -> None:
    async with Client() as client:
        assert (await client.get(f"{server.url}/text")).text == "héllo"
        ok = await client.get(f"{server.url}/")
        assert ok.raise_for_status() is ok and ok.is_success and ok.encoding == "utf-8"
        missing = await client.get(f"{server.url}/nowhere")
        with pytest.raises(asyncpool.HTTPStatusError, match="404 Not Found") as info:
            missing.raise_for_status()
        assert info.value.response is missing
        broken = await client.get(f"{server.url}/status/503")
        with pytest.raises(asyncpool.HTTPStatusError, match="server error"):
            broken.raise_for_status()


async def test_stream_reads_as_the_body_arrives(server: TestServer) -> None:
    async with Client() as client:
        url = f"{server.url}/stream?chunks=50&size=100"
        async with client.stream("GET", url) as response:
            chunks = [chunk async for chunk in response.aiter_bytes()]
        assert b"".join(chunks) == b"x" * 5000
        async with client.stream("GET", url) as response:
            pass  # left unread: closed on the way out
        assert response.is_closed
        assert client.transport.stats().in_use == 0


async def test_a_transport_passed_in_is_not_closed(server: TestServer) -> None:
    async with Transport() as pool:
        async with Client(transport=pool) as client:
            await client.get(f"{server.url}/")
        assert (await client.get(f"{server.url}/")).content == b"hello"
        assert pool.stats().dials == 1
    with pytest.raises(TypeError, match="pass Transport options"):
        Client(transport=Transport(), max_conns_per_host=1)


@pytest.mark.parametrize("code", [200, 204, 304])
async def test_an_empty_gzip_body_is_empty_not_a_decoding_error(
    server: TestServer, code: int
) -> None:
    # A 304 to a conditional GET often repeats the Content-Encoding of the cached body; Go's
    # Transport reads any body without a byte as empty.
    async with Client() as client:
        response = await client.get(f"{server.url}/empty-gzip/{code}")
        assert (response.status_code, response.content) == (code, b"")
        assert client.transport.stats().in_use == 0
        # A response that can have no body keeps its fields, as in Go: a 304's Content-Encoding
        # is the cached representation's.
        bodiless = code in (204, 304)
        assert ("content-encoding" in response.headers, response.uncompressed) == (
            bodiless,
            not bodiless,
        )


async def test_a_gzip_body_of_several_members_is_decoded_in_full(server: TestServer) -> None:
    # Go's gzip reader (and gzip.decompress) reads every member; stopping after the first
    # loses the rest of the body without an error.
    async with Client() as client:
        response = await client.get(f"{server.url}/gzip-members")
    assert response.content == b"first member, second member"


# -- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "method", "body"),
    [
        (301, "GET", ""),
        (302, "GET", ""),
        (303, "GET", ""),
        (307, "POST", "payload"),
        (308, "POST", "payload"),
    ],
)
async def test_redirects_of_each_code(
    server: TestServer, code: int, method: str, body: str
) -> None:
    async with Client() as client:
        response = await client.post(
            f"{server.url}/redirect/{code}",
            content=b"payload",
            headers={"Content-Type": "x/y"},
        )
    echo = response.json()
    assert (echo["method"], echo["body"]) == (method, body)
    assert ("content-type" in echo["headers"]) is (code in (307, 308))
    assert response.request.url.target == "/inspect"


async def test_a_location_with_a_space_or_raw_utf8_is_followed_percent_encoded(
    server: TestServer,
) -> None:
    # Go (url.Parse, then RequestURI), curl and browsers follow it, escaped.
    async with Client() as client:
        response = await client.get(f"{server.url}/redirect-unescaped")
    assert response.json()["target"] == "/inspect?q=a%20b&r=caf%C3%A9"


async def test_head_stays_head_through_a_303(server: TestServer) -> None:
    async with Client() as client:
        response = await client.head(f"{server.url}/redirect/303?to=/status/204")
    assert (response.status_code, response.request.method) == (204, "HEAD")


async def test_307_with_a_body_that_cannot_be_replayed_fails_clearly(server: TestServer) -> None:
    async def once() -> AsyncIterator[bytes]:
        yield b"stream"

    async with Client() as client:
        with pytest.raises(asyncpool.RedirectError, match="cannot be replayed"):
            await client.post(f"{server.url}/redirect/307", content=once())
        assert client.transport.stats().in_use == 0


async def test_redirect_bodies_of_unknown_length_are_read_to_keep_the_connection(
    server: TestServer,
) -> None:
    # Go's Client reads up to 2 KiB of a redirect's body whatever its length: one connection.
    async with Client() as client:
        response = await client.get(f"{server.url}/chunked-redirect?n=5")
        assert (response.text, len(response.history)) == ("arrived", 5)
        assert client.transport.stats().dials == 1


async def test_a_multipart_body_of_bytes_and_files_is_sent_again(
    server: TestServer, tmp_path: Path
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"from a file")
    async with Client() as client:
        with path.open("rb") as file:
            files = {"f": file, "g": ("g.bin", b"bytes")}
            response = await client.post(f"{server.url}/redirect/307", files=files)
    assert response.request.url.target == "/inspect"
    body = response.json()["body"]
    assert "from a file" in body and "bytes" in body


async def test_too_many_redirects(server: TestServer) -> None:
    async with Client(max_redirects=3) as client:
        with pytest.raises(asyncpool.TooManyRedirects, match="after 3 redirects"):
            await client.get(f"{server.url}/loop")
        assert len(server.requests) == 4
        assert client.transport.stats().in_use == 0


async def test_check_redirect_can_stop_or_return_the_last_response(server: TestServer) -> None:
    seen: list[tuple[str, list[str]]] = []

    def check(request: Request, via: list[Request]) -> None:
        seen.append((request.url.target, [r.url.target for r in via]))
        if len(via) == 2:
            raise asyncpool.UseLastResponse

    async with Client(check_redirect=check) as client:
        response = await client.get(f"{server.url}/redirect/302?to=/redirect/301")
        assert response.status_code == 301
        assert seen == [
            ("/redirect/301", ["/redirect/302?to=/redirect/301"]),
            ("/inspect", ["/redirect/302?to=/redirect/301", "/redirect/301"]),
        ]

    def refuse(request: Request, via: list[Request]) -> None:
        raise PermissionError(f"not following to {request.url}")

    async with Client(check_redirect=refuse) as client:
        with pytest.raises(PermissionError, match="not following"):
            await client.get(f"{server.url}/redirect/302")
    async with Client(follow_redirects=False) as client:
        assert (await client.get(f"{server.url}/redirect/302")).status_code == 302


async def test_credentials_are_dropped_when_a_redirect_leaves_the_origin(
    server: TestServer,
) -> None:
    secret = {"Authorization": "Bearer s3cret", "Cookie": "session=1", "X-Other": "kept"}
    async with open_server(app) as other, Client() as client:
        here = await client.get(f"{server.url}/redirect/302", headers=secret)
        assert here.json()["headers"]["authorization"] == "Bearer s3cret"
        away = await client.get(
            f"{server.url}/redirect/302?to={other.url}/inspect",
            headers=secret,
        )
    sent = away.json()["headers"]
    assert "authorization" not in sent and "cookie" not in sent
    assert sent["x-other"] == "kept"


async def test_a_host_field_of_ones_own_follows_only_a_relative_redirect(
    server: TestServer,
) -> None:
    """As Go's Client: a caller's Host is kept for a relative Location (the same virtual
    host), and left behind when the Location names another server, which gets its own."""
    custom = {"Host": "virtual.example"}
    async with open_server(app) as other, Client() as client:
        relative = await client.get(f"{server.url}/redirect/302", headers=custom)
        assert relative.json()["headers"]["host"] == "virtual.example"
        away = await client.get(f"{server.url}/redirect/307?to={other.url}/inspect", headers=custom)
        assert away.json()["headers"]["host"] == f"127.0.0.1:{other.port}"
        same_origin = await client.get(
            f"{server.url}/redirect/302?to={server.url}/inspect", headers=custom
        )
        assert same_origin.json()["headers"]["host"] == f"127.0.0.1:{server.port}"


# -- cookies ----------------------------------------------------------------------------------


async def test_cookies_are_set_and_sent(server: TestServer) -> None:
    async with Client() as client:
        await client.get(f"{server.url}/set-cookie?session=abc&theme=dark")
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["cookie"] in ("session=abc; theme=dark", "theme=dark; session=abc")
        assert {c.name for c in client.cookies} == {"session", "theme"}


async def test_cookies_follow_domain_rules(server: TestServer) -> None:
    async with Client() as client:
        await client.get(f"{server.url}/set-cookie?host=ip")
        url = f"http://localhost:{server.port}/inspect"
        sent = (await client.get(url)).json()["headers"]
    assert "cookie" not in sent  # 127.0.0.1's cookie is not localhost's


async def test_cookies_given_to_the_client_and_a_jar_of_ones_own(server: TestServer) -> None:
    async with Client(cookies={"a": "1"}) as client:
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["cookie"] == "a=1"
    jar = CookieJar()
    async with Client(cookies=jar) as client:
        await client.get(f"{server.url}/set-cookie?k=v")
    assert [c.name for c in jar] == ["k"]


async def test_cookies_set_by_a_redirect_are_sent_on(server: TestServer) -> None:
    async with Client() as client:
        response = await client.get(f"{server.url}/redirect/302?to=/set-cookie%3Fr%3D1")
        assert response.content == b"set"
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["cookie"] == "r=1"


async def test_adding_cookies_keeps_the_request_target_and_sni_hostname(
    server: TestServer,
) -> None:
    async with Client() as client:
        await client.get(f"{server.url}/set-cookie?session=abc")
        request = Request("GET", f"{server.url}/", target="/inspect", sni_hostname="api.test")
        response = await client.send(request, follow_redirects=False)
        async with response:
            echo = json.loads(await response.aread())
    assert (echo["target"], echo["headers"]["cookie"]) == ("/inspect", "session=abc")
    assert response.request.sni_hostname == "api.test"


async def test_a_cookie_set_after_requests_without_any_is_sent_on(server: TestServer) -> None:
    # Requests before any cookie skip the jar; the first Set-Cookie still lands in it, and
    # from then on it is sent, also while an earlier response is still being read.
    async with Client() as client:
        assert "cookie" not in (await client.get(f"{server.url}/inspect")).json()["headers"]
        async with client.stream("GET", f"{server.url}/stall-body") as open_response:
            await client.get(f"{server.url}/set-cookie?first=1")
            sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
            assert sent["cookie"] == "first=1"
            assert open_response.status_code == 200
        assert [c.name for c in client.cookies] == ["first"]


async def test_a_cookie_put_in_the_jar_directly_is_sent(server: TestServer) -> None:
    jar = CookieJar()
    async with Client(cookies=jar) as client:
        assert "cookie" not in (await client.get(f"{server.url}/inspect")).json()["headers"]
        jar.set_cookie(next(iter(asyncpool._cookies.new_jar({"direct": "1"}))))
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["cookie"] == "direct=1"
        client.cookies = asyncpool._cookies.new_jar({"swapped": "2"})
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["cookie"] == "swapped=2"


async def test_a_set_cookie2_is_stored_by_a_jar_whose_policy_reads_it(server: TestServer) -> None:
    async with Client() as client:
        await client.get(f"{server.url}/set-cookie2?old=1")
        assert list(client.cookies) == []  # the Client's policy, as http.cookiejar's default
    jar = CookieJar(DefaultCookiePolicy(rfc2965=True))
    async with Client(cookies=jar) as client:
        await client.get(f"{server.url}/set-cookie2?old=1")
    assert [(c.name, c.value, c.version) for c in jar] == [("old", "1", 1)]


class _StampingJar(CookieJar):
    """A jar of one's own whose sending and storing are its own: asked even when empty."""

    def __init__(self) -> None:
        super().__init__()
        self.stored = 0

    def add_cookie_header(self, request: urllib.request.Request) -> None:
        request.add_unredirected_header("Cookie", "stamp=1")

    def extract_cookies(self, response: Any, request: urllib.request.Request) -> None:
        self.stored += 1


async def test_a_jar_with_methods_of_its_own_is_asked_on_every_request(
    server: TestServer,
) -> None:
    jar = _StampingJar()
    async with Client(cookies=jar) as client:
        for _ in range(2):
            assert (await client.get(f"{server.url}/inspect")).json()["headers"]["cookie"] == (
                "stamp=1"
            )
    assert jar.stored == 2


async def test_a_request_s_fields_are_its_own(server: TestServer) -> None:
    # Requests without fields of their own start from the Client's: changing one's fields
    # (as an auth flow does) leaves the Client's as they were.
    async with Client(headers={"X-Team": "pool"}) as client:
        request = client.build_request("GET", f"{server.url}/inspect")
        request.headers["X-Team"] = "changed"
        assert client.headers["x-team"] == "pool"
        sent = (await client.get(f"{server.url}/inspect")).json()["headers"]
        assert sent["x-team"] == "pool"


# -- import time (issue 24) --------------------------------------------------------------------

# What `import asyncpool` must not import: the cookie jar and its urllib and email (about 125 ms
# before issue 24), the multipart encoder, hashlib (Digest auth), the zstd module; and what only
# a connection needs: h11 and asyncio (the first dial), h2 with hpack (the first HTTP/2
# connection), anyio's TLS stream (the first TLS handshake), certifi with importlib.resources (the
# first default SSL context); and UpgradeStream (its first use as asyncpool.UpgradeStream).
_IMPORTED_WHEN_NEEDED = (
    "email",
    "urllib.request",
    "http.cookiejar",
    "http.client",
    "mimetypes",
    "hashlib",
    "zstandard",
    "asyncpool._cookies",
    "asyncpool._multipart",
    "h2",
    "hpack",
    "anyio.streams.tls",
    "certifi",
    "importlib.resources",
    "h11",
    "asyncio",
    "asyncpool._h1.connection",
    "asyncpool._upgrade",
)


def _imported_by(code: str) -> list[str]:
    check = f"import sys\n{code}\nprint(' '.join(m for m in {_IMPORTED_WHEN_NEEDED!r} if m in sys.modules))"
    # Without pytest-cov's variables: coverage started in the child would import hashlib.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_import_asyncpool_leaves_the_heavy_modules_for_their_first_use() -> None:
    assert _imported_by("import asyncpool; asyncpool.Client()") == []
    # and the first use loads them
    assert "http.cookiejar" in _imported_by("import asyncpool; asyncpool.Client().cookies")
    assert "certifi" in _imported_by("import asyncpool; asyncpool.Transport().tls_config")
    assert "asyncpool._upgrade" in _imported_by("from asyncpool import UpgradeStream")


# -- the overall timeout ----------------------------------------------------------------------


async def test_the_overall_timeout_fires_mid_body(server: TestServer) -> None:
    async with Client(timeout=0.1) as client:
        with pytest.raises(asyncpool.RequestTimeout, match=r"timeout=0\.1") as info:
            await client.get(f"{server.url}/stall-body")
        assert isinstance(info.value, TimeoutError)
        assert client.transport.stats().total == 0
        with pytest.raises(asyncpool.RequestTimeout):
            async with client.stream("GET", f"{server.url}/stall-body", timeout=0.05) as response:
                await response.aread()
        assert (await client.get(f"{server.url}/", timeout=None)).content == b"hello"


async def test_a_client_gives_up_on_a_stalled_body_by_default(server: TestServer) -> None:
    """The Transport waits as long as Go's does (no read timeout); a Client made with its
    own Transport does not: its read_timeout is on unless set to None."""
    assert Transport().read_timeout is None
    assert Client().transport.read_timeout == asyncpool._client.DEFAULT_READ_TIMEOUT
    assert Client(read_timeout=None).transport.read_timeout is None
    mine = Transport(read_timeout=None)
    assert Client(transport=mine).transport.read_timeout is None  # a given one is left alone
    async with Client(read_timeout=0.1) as client:
        with pytest.raises(asyncpool.ReadTimeout, match="stalled"):
            await client.get(f"{server.url}/stall-body")
        assert client.transport.stats().total == 0


def test_the_verbs_are_coroutine_functions_for_mocks() -> None:
    """A user's test doubles (``create_autospec``, ``AsyncMock(spec=...)``) make awaitable
    mocks only of coroutine functions: every verb, ``request``, ``send`` and ``aclose`` is one."""
    mocked = mock.create_autospec(Client, instance=True)
    for name in ("get", "head", "options", "delete", "post", "put", "patch", "request", "send"):
        assert inspect.iscoroutinefunction(getattr(Client, name)), name
        assert isinstance(getattr(mocked, name), mock.AsyncMock), name
    assert isinstance(mocked.aclose, mock.AsyncMock)
