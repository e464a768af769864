"""A request no writer may send fails with LocalProtocolError in the Transport, before any
connection is taken or dialed, on HTTP/1.1 (both parsers: see conftest's HTTP1_SUITES) and on
HTTP/2 alike; h11's rules are the reference (tests/test_h1_protocol_backends.py holds the
differential tests). Header values are Latin-1 on every path: ``str`` encoded, ``bytes`` as
given."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import asyncpool
from asyncpool import Request, Transport
from asyncpool.testing import MockServer, Reply

pytestmark = pytest.mark.anyio

ROUTES = {"/": Reply(200, [], b"ok")}


def _mutated_target() -> Request:
    request = Request("GET", "http://example.test/")
    request.target = "/a\x0bb"  # set after construction, which checked the URL's
    return request


def _mutated_headers() -> Request:
    request = Request("GET", "http://example.test/")
    request.headers.add("X-A", "a\x0cb")
    return request


# Requests that construct, and that only the Transport's check can refuse (each was written
# by the httptools backend before, or failed on h11 with UnicodeEncodeError).
BAD: dict[str, tuple[Callable[[], Request], str]] = {
    "leading space in a value": (
        lambda: Request("GET", "http://example.test/", headers=[("X-A", " a")]),
        "'X-A'",
    ),
    "trailing tab in a value": (
        lambda: Request("GET", "http://example.test/", headers=[("X-A", "a\t")]),
        "'X-A'",
    ),
    "VT in a value": (
        lambda: Request("GET", "http://example.test/", headers=[("X-A", "a\x0bb")]),
        "'X-A'",
    ),
    "FF in a value, added later": (_mutated_headers, "'X-A'"),
    "two Host fields": (
        lambda: Request("GET", "http://example.test/", headers=[("Host", "a"), ("host", "b")]),
        "more than one Host",
    ),
    "value Latin-1 cannot hold": (
        lambda: Request("GET", "http://example.test/", headers=[("X-Euro", "5 \u20ac")]),
        "'X-Euro'.*Latin-1",
    ),
    "target with VT, set later": (_mutated_target, "request target"),
}


async def _assert_refused_before_dialing(http2: bool) -> None:
    options = {"http2_prior_knowledge": True} if http2 else {}
    async with (
        MockServer(routes=ROUTES, http2=http2) as server,
        Transport(dial=server.dial, **options) as pool,  # type: ignore[arg-type]
    ):
        for name, (make, complaint) in BAD.items():
            with pytest.raises(asyncpool.LocalProtocolError, match=complaint):
                await pool.round_trip(make())
            assert server.dials == [], name
            assert pool.stats().dials == 0, name
        # The pool is untouched, and serves a good request.
        response = await pool.round_trip(Request("GET", "http://example.test/"))
        assert await response.aread() == b"ok"
        assert len(server.dials) == 1


async def test_a_bad_request_fails_before_any_dial_on_http1() -> None:
    await _assert_refused_before_dialing(http2=False)


async def test_a_bad_request_fails_before_any_dial_on_http2() -> None:
    await _assert_refused_before_dialing(http2=True)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_latin1_str_and_bytes_values_arrive_as_the_same_bytes(http2: bool) -> None:
    options = {"http2_prior_knowledge": True} if http2 else {}
    async with (
        MockServer(routes=ROUTES, http2=http2) as server,
        Transport(dial=server.dial, **options) as pool,  # type: ignore[arg-type]
    ):
        for value in ("caf\xe9", b"caf\xe9", b"\xff\x80"):
            request = Request("GET", "http://example.test/", headers=[("X-V", value)])
            response = await pool.round_trip(request)
            await response.aread()
        # The server decodes what arrived as Latin-1.
        assert [r.header("x-v") for r in server.requests] == ["caf\xe9", "caf\xe9", "\xff\x80"]


def test_bytes_values_are_kept_as_their_latin1_str() -> None:
    headers = asyncpool.Headers([("X-A", b"\xe9")])
    headers.add("X-B", b"b")
    headers["X-C"] = b"\x80"
    assert headers.items() == [("X-A", "\xe9"), ("X-B", "b"), ("X-C", "\x80")]


@pytest.mark.parametrize("path", ["/a\x0bb", "/a\x0cb", "/a\x7fb", "/a\x01b"])
def test_a_url_with_control_characters_in_its_path_is_invalid(path: str) -> None:
    with pytest.raises(asyncpool.InvalidURL, match="control characters"):
        Request("GET", "http://example.test" + path + "?x")


@pytest.mark.parametrize("target", ["", "/a\tb", "/a\x0bb", "/a b", "/\xe9"])
def test_a_request_target_h11_refuses_is_refused_at_construction(target: str) -> None:
    with pytest.raises(asyncpool.LocalProtocolError, match="invalid request target"):
        Request("GET", "http://example.test/", target=target)
