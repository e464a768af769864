"""URLs, headers, requests and the error tree: bad input is refused before any byte is sent."""

from __future__ import annotations

import copy
import gc
import pickle
import socket
import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest

import asyncpool
from asyncpool import URL, Headers, Request, Transport
from asyncpool._conn_common import RetryHint
from asyncpool._h1.protocol import PARSERS
from asyncpool._models import _VALID_FIELDS
from asyncpool.testing import MockServer, Reply, ServerConnection, ServerRequest, wait_until
from tests.servers import TestServer

# -- URL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("example.com/path", "no scheme"),
        ("http://", "no host"),
        ("ftp://example.com/", "unsupported scheme 'ftp'"),
        ("http://example.com:99999/", "cannot parse"),
        ("http://example.com/a b", "whitespace or control"),
        # A host with a space went into the Host field and, to a proxy, the request line.
        ("http://internal host/", "its host 'internal host' holds whitespace"),
        ("http://a\x0bb/", "holds whitespace or control"),
        ("http://a\x00b/", "holds whitespace or control"),
        ("http://[fe80::1%25\x00x]/", "holds whitespace or control"),
        ("http://[v1.x]/", "IPvFuture addresses are not supported"),
        ("http://[fe80::1%eth0]/", "written %25 and its name"),
    ],
)
def test_unusable_urls_raise_invalid_url(url: str, message: str) -> None:
    with pytest.raises(asyncpool.InvalidURL, match=message) as info:
        Request("GET", url)
    assert isinstance(info.value, ValueError)
    assert info.value.phase == "url"


def test_url_parts() -> None:
    url = URL("HTTPS://Example.COM/a/b?x=1&y=2")
    assert (url.scheme, url.host, url.port, url.target) == (
        "https",
        "example.com",
        443,
        "/a/b?x=1&y=2",
    )
    assert url.origin == "https://example.com"
    assert str(url) == "HTTPS://Example.COM/a/b?x=1&y=2"
    assert repr(url) == "URL('HTTPS://Example.COM/a/b?x=1&y=2')"


def test_an_ipv6_zone_is_dialled_and_never_sent() -> None:
    url = URL("http://[fe80::1%25eth0]:8080/x")
    assert (url.host, url.port, url.host_header) == ("fe80::1%eth0", 8080, "[fe80::1]:8080")
    assert url.origin == "http://[fe80::1%25eth0]:8080"  # zones apart: connections apart
    assert URL("http://[fe80::1%25eth1]:8080/").origin != url.origin


@pytest.mark.anyio
async def test_a_request_to_an_ipv6_zone_reaches_it() -> None:
    # A zone by number (glibc takes names for link-local addresses only, not for ::1).
    interface = socket.if_nameindex()[0][0]
    try:
        listener = await anyio.create_tcp_listener(local_host="::1", local_port=0)
    except OSError:
        pytest.skip("no IPv6 on this machine")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    heads: list[bytes] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            heads.append(await stream.receive())
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        dialled: list[object] = []
        trace = asyncpool.ClientTrace(
            connect_start=lambda network, address: dialled.append(address)
        )
        async with Transport() as pool:
            url = f"http://[::1%25{interface}]:{port}/"
            response = await pool.round_trip(Request("GET", url, trace=trace))
            assert await response.aread() == b"ok"
        tg.cancel_scope.cancel()
    assert dialled == [(f"::1%{interface}", port)]
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in heads[0]


def test_url_defaults_and_ports() -> None:
    assert URL("http://h").target == "/"
    assert URL("http://h:8080/").host_header == "h:8080"
    assert URL("http://h:80/").host_header == "h"
    ipv6 = URL("http://[::1]:8080/x")
    assert (ipv6.host, ipv6.port, ipv6.host_header) == ("::1", 8080, "[::1]:8080")
    assert ipv6.origin == "http://[::1]:8080"


async def read_one(url: str, **options: Any) -> None:
    """GET ``url`` on a Transport of ``options`` and read the response."""
    async with Transport(**options) as pool:
        await (await pool.round_trip(Request("GET", url))).aread()


@pytest.mark.anyio
@pytest.mark.parametrize("parser", PARSERS)
async def test_non_ascii_in_the_path_and_query_is_sent_percent_encoded(
    server: TestServer, parser: str
) -> None:
    # UTF-8, percent-encoded (as Go's EscapedPath; the Client does so to a Location); escapes
    # already there are kept as given. It was a raw UnicodeEncodeError, or latin-1 bytes.
    assert URL("http://h/caf\u00e9?q=\u20ac&r=%41").target == "/caf%C3%A9?q=%E2%82%AC&r=%41"
    await read_one(server.url_for("/caf\u00e9?q=\u20ac"), http1_parser=parser)
    assert server.requests[0].target == "/caf%C3%A9?q=%E2%82%AC"


@pytest.mark.anyio
@pytest.mark.parametrize("parser", PARSERS)
async def test_a_non_ascii_host_name_is_sent_in_the_host_field_as_idna(
    server: TestServer, parser: str
) -> None:
    # As Go's Host: the name DNS is asked for (it was a raw UnicodeEncodeError, or latin-1).
    assert URL("http://b\u00fccher.example:8080/").host_header == "xn--bcher-kva.example:8080"

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return await anyio.connect_tcp("127.0.0.1", server.port)

    await read_one("http://b\u00fccher.example/", http1_parser=parser, dial=dial)
    assert server.requests[0].header("host") == "xn--bcher-kva.example"


def test_requests_to_one_url_share_its_url() -> None:
    first, second = Request("GET", "http://h/x"), Request("POST", "http://h/x")
    assert first.url is second.url
    assert Request("GET", "http://h/y").url is not first.url
    for _ in range(2):  # an invalid URL is not kept: it fails every time
        with pytest.raises(asyncpool.InvalidURL):
            Request("GET", "http://h/a b")


# -- Headers ----------------------------------------------------------------------------------


def test_headers_are_case_insensitive_ordered_and_multi_valued() -> None:
    headers = Headers(
        [("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2")]
    )
    assert headers["SET-COOKIE"] == "a=1, b=2"
    assert headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert headers.get("missing") is None
    assert headers.get("missing", "default") == "default"
    assert "content-type" in headers
    assert 42 not in headers
    assert list(headers) == ["set-cookie", "content-type"]
    assert headers.keys() == ["set-cookie", "content-type"]
    assert len(headers) == 3
    with pytest.raises(KeyError):
        headers["missing"]


def test_header_values_of_any_bytes_like_type_are_their_bytes() -> None:
    headers = Headers({"A": bytearray(b"\xe9t\xe9"), "B": memoryview(b"b"), "C": 3})
    assert headers.items() == [("A", "été"), ("B", "b"), ("C", "3")]  # not "bytearray(b'...')"


def test_headers_get_joins_every_field_of_the_name_in_order() -> None:
    headers = Headers([("A", "1"), ("b", "x"), ("a", "2"), ("C", "y"), ("A", "3")])
    assert headers.get("a") == "1, 2, 3"
    assert headers.get("B") == "x"
    assert headers.get("c", "default") == "y"
    assert Headers().get("a", "default") == "default"


def test_a_name_inside_another_name_is_not_that_name() -> None:
    headers = Headers([("X-Set-Cookie", "a"), ("Content-Type", "b"), ("Type", "c")])
    assert headers.get("set-cookie") is None
    assert headers.get("content") is None
    assert headers.get("TYPE") == "c"
    assert "Cookie" not in headers
    assert not headers._has("set-cookie")
    assert Headers([("SET-COOKIE", "a")])._has("set-cookie")


def test_requests_without_headers_have_their_own() -> None:
    first, second = Request("GET", "http://h/x"), Request("GET", "http://h/x")
    first.headers["X-A"] = "1"
    assert second.headers.items() == []
    assert first.headers.items() == [("X-A", "1")]


@pytest.mark.anyio
async def test_fields_added_to_a_request_made_without_any_are_sent(server: TestServer) -> None:
    async with Transport() as pool:
        for value in ("1", "2"):
            request = Request("GET", server.url_for("/headers-echo"))
            await (await pool.round_trip(request)).aread()  # the same request, no fields
            request.headers["X-A"] = value  # made now, kept by the request
            response = await pool.round_trip(request)
            await response.aread()
            assert [[name.lower(), v] for name, v in response.json()].count(["x-a", value]) == 1


def test_a_copy_of_headers_changes_apart_from_the_original() -> None:
    original = Headers({"a": "1"})
    assert original.get("b") is None  # (a lookup the original may keep)
    clone = copy.copy(original)
    clone.add("b", "2")
    assert (original.get("b"), "b" in original, original.items()) == (None, False, [("a", "1")])
    assert (clone.get("b"), "b" in clone) == ("2", True)


def test_headers_set_add_delete_and_compare() -> None:
    headers = Headers({"A": "1"})
    headers.add("a", "2")
    headers["B"] = "3"
    assert headers.items() == [("A", "1"), ("a", "2"), ("B", "3")]
    headers["a"] = "only"
    assert headers.get_list("A") == ["only"]
    del headers["b"]
    assert headers == Headers([("a", "only")])
    assert headers != Headers([("a", "other")])
    assert headers.__eq__("a") is NotImplemented
    assert Headers(headers) == headers
    assert "Headers(" in repr(headers)


# -- Request ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Evil": "a\r\nSet-Cookie: b"}, "header injection"),
        ({"X-Evil": "a\nb"}, "header injection"),
        ({"X-Evil": "a\x00b"}, "header injection"),
        ({"Bad Name": "x"}, "invalid header name"),
        ({"X-Bad\r\n": "x"}, "invalid header name"),
        ({"X-Bad\n": "x"}, "invalid header name"),  # "$" would match before a final LF
    ],
)
def test_header_injection_is_refused(headers: dict[str, str], message: str) -> None:
    with pytest.raises(asyncpool.LocalProtocolError, match=message) as info:
        Request("GET", "http://example.com/", headers=headers)
    assert info.value.host == "example.com"


def test_fields_found_valid_before_are_checked_again_once_changed() -> None:
    """Valid field lists are remembered (a client sends the same ones again and again), but a
    list that grew or changed is checked again, and a huge one is not remembered."""
    headers = Headers([("User-Agent", "x"), ("Accept", "*/*")])
    for _ in range(2):
        Request("GET", "http://example.com/", headers=headers)
    assert tuple(headers._fields) in _VALID_FIELDS
    headers.add("X-Evil", "a\r\nSet-Cookie: b")
    with pytest.raises(asyncpool.LocalProtocolError, match="header injection"):
        Request("GET", "http://example.com/", headers=headers)
    headers = Headers([("User-Agent", "x"), ("Accept", "*/*\n")])
    with pytest.raises(asyncpool.LocalProtocolError, match="header injection"):
        Request("GET", "http://example.com/", headers=headers)
    huge = Headers([("Cookie", "c" * 5000)])
    Request("GET", "http://example.com/", headers=huge)
    assert tuple(huge._fields) not in _VALID_FIELDS


@pytest.mark.parametrize("method", ["", "GE T", "GET\r\n", "G\x00", "GET\n"])
def test_invalid_methods_are_refused(method: str) -> None:
    with pytest.raises(asyncpool.LocalProtocolError, match="invalid method"):
        Request(method, "http://example.com/")


def test_content_must_be_bytes_or_an_async_iterable() -> None:
    with pytest.raises(TypeError, match="content must be bytes"):
        Request("POST", "http://example.com/", content="text")  # type: ignore[arg-type]


async def _body() -> object:  # pragma: no cover - never iterated
    yield b""


@pytest.mark.parametrize(
    ("method", "headers", "streamed", "replayable"),
    [
        ("GET", {}, False, True),
        ("HEAD", {}, False, True),
        ("OPTIONS", {}, False, True),
        ("TRACE", {}, False, True),
        ("POST", {}, False, False),
        ("POST", {"Idempotency-Key": "1"}, False, True),
        ("DELETE", {"X-Idempotency-Key": "1"}, False, True),
        ("GET", {}, True, False),
    ],
)
def test_replayable_requests(
    method: str, headers: dict[str, str], streamed: bool, replayable: bool
) -> None:
    content = _body() if streamed else b"x"
    request = Request(method, "http://h/", headers=headers, content=content)  # type: ignore[arg-type]
    assert request.is_replayable is replayable
    assert request.body_is_rewindable is not streamed
    assert repr(request) == f"<Request {method} http://h/>"
    if streamed:
        content.aclose().close()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_refused_request_sends_nothing(server: TestServer) -> None:
    async with Transport() as pool:
        with pytest.raises(asyncpool.LocalProtocolError):
            await pool.round_trip(Request("GET", server.url, headers={"X": "a\r\nb"}))
    assert server.connections_accepted == 0


@pytest.mark.anyio
async def test_aread_after_part_of_the_body_was_iterated_fails(server: TestServer) -> None:
    # The chunks already handed out are gone: aread would return the rest as if it were all.
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=3")))
        async with response:
            first = await response.aiter_bytes().__anext__()
            assert first.startswith(b"x")
            with pytest.raises(RuntimeError, match="aiter_bytes"):
                await response.aread()
            assert not response.is_closed


@pytest.mark.anyio
@pytest.mark.parametrize("second", ["aread", "aiter_bytes"])
async def test_a_second_reader_of_a_body_fails_and_the_first_gets_it_all(second: str) -> None:
    # Two readers waited on one channel of the connection, and the first waited for ever.
    release = anyio.Event()

    async def handler(request: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_head(200, [("content-length", "4")])
        await conn.stall(release)
        await conn.send_data(b"body")
        await conn.end()

    async with MockServer(handler) as server, Transport(dial=server.dial) as pool:
        response = await pool.round_trip(Request("GET", "http://example.test/"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(response.aread)
            await server.wait_until(lambda s: s.stalled == 1)
            await wait_until(lambda: response._reading)
            with pytest.raises(RuntimeError, match="another task is reading"):
                if second == "aread":
                    await response.aread()
                else:
                    await response.aiter_bytes().__anext__()
            release.set()
        assert response.content == b"body"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("charset", "encoding"), [("latin-1", "latin-1"), ("nosuch", "utf-8"), ("base64", "utf-8")]
)
async def test_text_decodes_by_a_text_charset_else_utf8(charset: str, encoding: str) -> None:
    # base64 is a codec Python knows, of bytes to bytes: .text raised LookupError.
    reply = Reply(200, [("content-type", f"text/plain; charset={charset}")], "é".encode(encoding))
    async with MockServer(routes={"/": reply}) as server, Transport(dial=server.dial) as pool:
        response = await pool.round_trip(Request("GET", "http://example.test/"))
        await response.aread()
        assert (response.encoding, response.text) == (encoding, "é")


@pytest.mark.anyio
async def test_text_of_a_charset_that_takes_no_error_handler() -> None:
    reply = Reply(200, [("content-type", "text/plain; charset=idna")], b"\xff")
    async with MockServer(routes={"/": reply}) as server, Transport(dial=server.dial) as pool:
        response = await pool.round_trip(Request("GET", "http://example.test/"))
        await response.aread()
        assert response.text == "\ufffd"  # utf-8's replacement, not idna's UnicodeError


# -- errors -----------------------------------------------------------------------------------


def test_errors_name_the_phase_and_the_host() -> None:
    error = asyncpool.ConnectError("refused", host="example.com:443")
    assert str(error) == "connect example.com:443: refused"
    assert (error.host, error.phase, error.detail) == ("example.com:443", "connect", "refused")
    assert isinstance(error, asyncpool.NetworkError)
    assert isinstance(error, asyncpool.HTTPError)
    assert str(asyncpool.HTTPError("no host")) == "request: no host"


@pytest.mark.parametrize(
    "copier", [copy.copy, copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))]
)
def test_errors_survive_copy_and_pickle(copier: Callable[[Exception], Exception]) -> None:
    # As a process pool or a task queue hands an exception back: the same message, host and phase.
    error = asyncpool.LocalProtocolError("bad chunk", host="h:1", phase="write")
    error.retry_hint = RetryHint.NO_RESPONSE
    copied = copier(error)
    assert type(copied) is asyncpool.LocalProtocolError
    assert str(copied) == str(error) == "write h:1: bad chunk"
    assert (copied.host, copied.phase, copied.detail) == ("h:1", "write", "bad chunk")
    assert copied.retry_hint is RetryHint.NO_RESPONSE and copied.retry_hint == "no response"
    timeout = copier(asyncpool.ConnectTimeout("too slow", host="h:1"))  # an OSError underneath
    assert (str(timeout), timeout.host) == ("connect h:1: too slow", "h:1")


def test_timeouts_are_builtin_timeouts() -> None:
    for cls in (
        asyncpool.ConnectTimeout,
        asyncpool.TLSHandshakeTimeout,
        asyncpool.ResponseHeaderTimeout,
    ):
        error = cls("too slow", host="h:1")
        assert isinstance(error, TimeoutError)
        assert isinstance(error, asyncpool.TimeoutError)


@pytest.mark.parametrize("parser", PARSERS)
def test_huge_urls_a_server_redirects_to_are_not_kept(parser: str) -> None:
    """A server can send a client to fresh ~1 MB URLs, one redirect after another: the
    per-URL caches (parsed URLs, checked request heads) keep usual URLs only, so nothing of
    those stays allocated once the requests are gone."""
    from asyncpool._h1.protocol import make_protocol

    def send_all(count: int) -> None:
        for i in range(count):
            request = Request("GET", f"http://h/{parser}{count}-{i}/" + "a" * 900_000)
            protocol = make_protocol(parser, "h", max_header_bytes=1 << 20)
            headers = [("Host", request.url.host_header), ("Cookie", f"c={i}" + "b" * 50_000)]
            protocol.request_head(request.method, request.url.target, headers)

    send_all(1)  # the first call's imports and one-time allocations
    gc.collect()
    tracemalloc.start()
    try:
        send_all(40)  # 36 MB of URLs
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 1 << 20
