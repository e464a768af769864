"""The HTTP/1.1 protocol layer, bytes in and events out, for both parser backends: they must
agree on framing, keep-alive decisions and the error types of malformed input."""

from __future__ import annotations

import itertools

import pytest

import asyncpool
from asyncpool._h1.protocol import (
    END_OF_MESSAGE,
    HOLD_AFTER_HEAD_MIN,
    NEED_DATA,
    PARSERS,
    PAUSED,
    HTTP1Protocol,
    Informational,
    ResponseHead,
    make_protocol,
)

BIG = HOLD_AFTER_HEAD_MIN * 3  # read whole, h11's backend gives h11 the head alone

pytestmark = pytest.mark.parametrize("parser", PARSERS)


def protocol(
    parser: str,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    max_header_bytes: int = 1 << 20,
) -> HTTP1Protocol:
    p = make_protocol(parser, "h:1", max_header_bytes=max_header_bytes)
    p.request_head(method, "/", [("Host", "h"), *(headers or [])])
    p.end_of_body()
    return p


def events(p: HTTP1Protocol, *chunks: bytes) -> list[object]:
    """Feed ``chunks`` and collect every event until the parser needs more or pauses."""
    out: list[object] = []
    for chunk in chunks:
        p.feed(chunk)
        while True:
            event = p.next_event()
            if event is NEED_DATA or str(event) == "Sentinel.PAUSED":
                break
            out.append(event)
            if event is END_OF_MESSAGE:
                return out
    return out


def body(evs: list[object]) -> bytes:
    return b"".join(e for e in evs if isinstance(e, bytes))


def test_content_length_across_reads(parser: str) -> None:
    p = protocol(parser)
    evs = events(p, b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\n\r\nhel", b"lo")
    head = evs[0]
    assert isinstance(head, ResponseHead)
    assert (head.status_code, head.reason_phrase, head.http_version) == (200, "OK", "HTTP/1.1")
    assert head.headers == ["Content-Length", "5"]  # flat: name, value, ...
    assert body(evs) == b"hello" and evs[-1] is END_OF_MESSAGE
    assert p.start_next_cycle() is True


def test_chunked_body(parser: str) -> None:
    p = protocol(parser)
    evs = events(
        p, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"0\r\n\r\n"
    )
    assert body(evs) == b"hello" and evs[-1] is END_OF_MESSAGE
    assert p.start_next_cycle() is True


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_read_until_close(parser: str, version: bytes) -> None:
    """A body without a length ends where the server closes: never a connection to reuse (h11
    alone would let an HTTP/1.1 one start its next cycle)."""
    p = protocol(parser)
    evs = events(p, b"HTTP/" + version + b" 200 OK\r\n\r\nold ", b"school", b"")
    assert body(evs) == b"old school" and evs[-1] is END_OF_MESSAGE
    assert p.start_next_cycle() is False


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_bodyless_responses_end_with_the_head(parser: str, method: str, status: int) -> None:
    p = protocol(parser, method)
    evs = events(p, f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
    assert isinstance(evs[0], ResponseHead) and evs[1:] == [END_OF_MESSAGE]
    assert p.start_next_cycle() is True
    assert not p.has_buffered_data


def test_1xx_then_the_response(parser: str) -> None:
    p = protocol(parser)
    evs = events(
        p,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Hints\r\nLink: </a>\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    assert [type(e).__name__ for e in evs[:3]] == ["Informational", "Informational", "ResponseHead"]
    assert isinstance(evs[1], Informational) and evs[1].headers == ["Link", "</a>"]
    assert body(evs) == b"ok"


@pytest.mark.parametrize(
    ("request_headers", "response", "reusable"),
    [
        ([], b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        ([], b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        # h11 keeps no HTTP/1.0 connection alive, asked or not; both backends follow it.
        ([], b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", False),
        ([("Connection", "close")], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        ([], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_keep_alive_decisions(
    parser: str, request_headers: list[tuple[str, str]], response: bytes, reusable: bool
) -> None:
    p = protocol(parser, headers=request_headers)
    assert events(p, response)[-1] is END_OF_MESSAGE
    assert p.start_next_cycle() is reusable


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 304 Not Modified\r\nConnection: close\r\n\r\n",
    ],
)
@pytest.mark.parametrize("after", [b"HTTP/1.1 200 OK\r\n", b"\x00 not http"])
def test_bytes_after_a_response_are_unsolicited(parser: str, response: bytes, after: bytes) -> None:
    """Whatever follows a complete response, the response stands; the connection is not
    reused."""
    for chunks in [(response + after,), (response, after)]:
        p = protocol(parser)
        evs = events(p, *chunks)  # up to the end of the response
        assert isinstance(evs[0], ResponseHead) and evs[-1] is END_OF_MESSAGE
        for chunk in chunks[1:]:
            p.feed(chunk)
        reusable = p.start_next_cycle()
        assert p.has_buffered_data or not reusable


@pytest.mark.parametrize(
    "garbage",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # Ambiguous framing, "ought to be handled as an error" (RFC 9112, 6.3): h11 lets
        # Transfer-Encoding win, llhttp refuses; both backends refuse.
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ],
)
def test_malformed_input_is_a_remote_protocol_error(parser: str, garbage: bytes) -> None:
    with pytest.raises(asyncpool.RemoteProtocolError):
        events(protocol(parser), garbage)


def test_an_error_comes_after_the_events_before_it(parser: str) -> None:
    """A head and a body's beginning are given out before the error in the bytes after them,
    which stays: the connection is not parsed any further."""
    p = protocol(parser)
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX")
    assert isinstance(p.next_event(), ResponseHead)
    assert p.next_event() == b"hello"
    for more in (b"0\r\n\r\n", b""):
        with pytest.raises(asyncpool.RemoteProtocolError):
            p.next_event()
        p.feed(more)


def test_eof_before_a_response_or_mid_body(parser: str) -> None:
    with pytest.raises(asyncpool.RemoteProtocolError):
        events(protocol(parser), b"")
    with pytest.raises(asyncpool.RemoteProtocolError, match="complete message body"):
        events(protocol(parser), b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", b"")


def big_response(*extra_headers: str, version: str = "1.1", length: int = BIG) -> bytes:
    fields = "".join(f"{field}\r\n" for field in extra_headers)
    return f"HTTP/{version} 200 OK\r\n{fields}Content-Length: {length}\r\n\r\n".encode()


def test_a_large_body_split_anywhere_then_the_next_cycle(parser: str) -> None:
    payload = bytes(range(256)) * (BIG // 256)
    wire = big_response() + payload
    for cuts in [(), (40,), (len(wire) - BIG + 7, len(wire) - 1), (20000, 30000, 40000)]:
        p = protocol(parser)
        bounds = [0, *cuts, len(wire)]
        evs = events(p, *[wire[a:b] for a, b in itertools.pairwise(bounds)])
        assert body(evs) == payload and evs[-1] is END_OF_MESSAGE, cuts
        assert p.next_event() is PAUSED
        assert p.start_next_cycle() is True and not p.has_buffered_data
        p.request_head("GET", "/", [("Host", "h")])
        p.end_of_body()
        evs = events(p, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert body(evs) == b"ok" and p.start_next_cycle() is True


@pytest.mark.parametrize(
    ("request_headers", "response", "reusable"),
    [
        ([], big_response("Connection: close"), False),
        ([], big_response(version="1.0"), False),
        ([("Connection", "close")], big_response(), False),
        ([], big_response("Connection: keep-alive"), True),
    ],
)
def test_keep_alive_decisions_after_a_large_body(
    parser: str, request_headers: list[tuple[str, str]], response: bytes, reusable: bool
) -> None:
    p = protocol(parser, headers=request_headers)
    evs = events(p, response + b"x" * BIG)
    assert len(body(evs)) == BIG and evs[-1] is END_OF_MESSAGE
    assert p.start_next_cycle() is reusable


def test_bytes_after_a_large_body_are_unsolicited(parser: str) -> None:
    p = protocol(parser)
    evs = events(p, big_response() + b"x" * BIG + b"HTTP/1.1 200 OK\r\n")
    assert len(body(evs)) == BIG
    p.start_next_cycle()
    assert p.has_buffered_data


def test_eof_mid_large_body(parser: str) -> None:
    with pytest.raises(asyncpool.RemoteProtocolError, match="complete message body"):
        events(protocol(parser), big_response() + b"x" * 100, b"")


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 304)])
def test_large_bodyless_responses_end_with_the_head(parser: str, method: str, status: int) -> None:
    p = protocol(parser, method)
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {BIG}\r\n\r\n".encode()
    evs = events(p, head + b"HTTP/1.1 200 OK\r\n" + b"x" * BIG)
    assert isinstance(evs[0], ResponseHead) and evs[1:] == [END_OF_MESSAGE]
    p.start_next_cycle()
    assert p.has_buffered_data


def test_large_reads_with_1xx_heads_or_a_chunked_body(parser: str) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (BIG, b"c" * BIG)
    evs = events(protocol(parser), chunked)
    assert body(evs) == b"c" * BIG and evs[-1] is END_OF_MESSAGE
    informational = b"HTTP/1.1 103 Hints\r\nLink: </a>\r\n\r\n"
    evs = events(protocol(parser), informational + big_response() + b"i" * BIG)
    assert isinstance(evs[0], Informational) and isinstance(evs[1], ResponseHead)
    assert body(evs) == b"i" * BIG


def test_a_large_response_before_the_request_body_is_sent(parser: str) -> None:
    p = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    p.request_head("POST", "/", [("Host", "h"), ("Content-Length", "5")])
    evs = events(p, big_response() + b"e" * BIG)
    assert len(body(evs)) == BIG and evs[-1] is END_OF_MESSAGE
    assert not p.request_complete
    p.body_chunk(b"hello")
    p.end_of_body()
    assert p.request_complete and p.start_next_cycle() is True


LARGE_FIELD = f"X-Pad: {'p' * HOLD_AFTER_HEAD_MIN}"  # a head too large to hold anything after


@pytest.mark.parametrize(
    ("method", "head", "rest", "expected"),
    [
        ("GET", "HTTP/1.0 200 OK", [b"hello", b""], b"hello"),  # read until close
        (
            "GET",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
            [b"5\r\nhello\r\n0\r\n\r\n"],
            b"hello",
        ),
        ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 5", [b"hello"], b"hello"),
        ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 0", [], b""),
        ("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5", [], b""),
    ],
)
def test_a_large_read_that_ends_with_the_head(
    parser: str, method: str, head: str, rest: list[bytes], expected: bytes
) -> None:
    """A read as large as the ones whose tail h11's backend holds back, ending exactly where the
    head does: nothing is held, and nothing reads as the server closing."""
    p = protocol(parser, method)
    first = f"{head}\r\n{LARGE_FIELD}\r\n\r\n".encode()
    evs = events(p, first, *rest)
    assert isinstance(evs[0], ResponseHead) and body(evs) == expected
    assert evs[-1] is END_OF_MESSAGE
    if head.startswith("HTTP/1.1"):
        assert p.start_next_cycle() is True and not p.has_buffered_data
        p.request_head("GET", "/", [("Host", "h")])
        p.end_of_body()
        assert body(events(p, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) == b"ok"


def test_a_large_1xx_head_that_ends_a_read(parser: str) -> None:
    p = protocol(parser)
    hints = f"HTTP/1.1 103 Early Hints\r\n{LARGE_FIELD}\r\n\r\n".encode()
    evs = events(p, hints, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert isinstance(evs[0], Informational) and isinstance(evs[1], ResponseHead)
    assert body(evs) == b"ok"


def test_no_empty_body_chunk_before_unsolicited_bytes(parser: str) -> None:
    """The head's last byte in one read, the body and more in a large next one."""
    p = protocol(parser)
    evs = events(
        p,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r",
        b"\nhello" + b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * HOLD_AFTER_HEAD_MIN,
    )
    assert [e for e in evs if isinstance(e, bytes)] == [b"hello"]
    p.start_next_cycle()
    assert p.has_buffered_data


SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: Upgrade\r\n\r\n"


@pytest.mark.parametrize("after", [b"", b"ws bytes", b"w" * HOLD_AFTER_HEAD_MIN])
def test_101_switching_protocols(parser: str, after: bytes) -> None:
    """Asked for: the final head, then nothing more in HTTP, and the bytes after the head are
    the new protocol's (the connection is not reused). Not asked for: a protocol error."""
    p = protocol(parser, headers=[("Upgrade", "ws"), ("Connection", "Upgrade")])
    p.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCHING + after)
    assert p.next_event() == Informational(100, [])
    assert p.next_event() == ResponseHead(
        101, "Switching Protocols", "HTTP/1.1", ["Upgrade", "ws", "Connection", "Upgrade"]
    )
    assert p.next_event() is PAUSED
    assert p.switched and p.switched_data() == after
    assert p.start_next_cycle() is False
    with pytest.raises(asyncpool.RemoteProtocolError, match="without an Upgrade field"):
        events(protocol(parser), SWITCHING)


@pytest.mark.parametrize(
    "framing", [b"", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"]
)
def test_a_2xx_to_connect_is_a_tunnel(parser: str, framing: bytes) -> None:
    """Whatever framing the head claims, the bytes after it are the tunnel's."""
    p = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    p.request_head("CONNECT", "example.com:443", [("Host", "example.com:443")])
    p.end_of_body()
    p.feed(b"HTTP/1.1 200 Connection established\r\n" + framing + b"\r\n\x16\x03\x01")
    head = p.next_event()
    assert isinstance(head, ResponseHead) and head.status_code == 200
    assert p.next_event() is PAUSED
    assert p.switched and p.switched_data() == b"\x16\x03\x01"
    refused = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    refused.request_head("CONNECT", "example.com:443", [("Host", "example.com:443")])
    refused.end_of_body()
    evs = events(refused, b"HTTP/1.1 407 Who\r\nContent-Length: 2\r\n\r\nno")
    assert body(evs) == b"no" and not refused.switched


def test_a_head_over_the_limit_whole_or_dripping(parser: str) -> None:
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 5000 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(asyncpool.ResponseHeaderTooLarge):
        events(protocol(parser, max_header_bytes=1000), big)
    with pytest.raises(asyncpool.ResponseHeaderTooLarge):
        events(
            protocol(parser, max_header_bytes=1000),
            *[big[i : i + 100] for i in range(0, 2000, 100)],
        )


def test_writing_a_request(parser: str) -> None:
    p = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    head = p.request_head("POST", "/x?y=1", [("Host", "h"), ("Content-Length", "5")])
    assert head.startswith(b"POST /x?y=1 HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 5\r\n" in head
    assert not p.request_complete
    assert p.body_chunk(b"") == b""
    assert p.body_chunk(b"hello") == b"hello"
    p.end_of_body()
    assert p.request_complete
    q = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    q.request_head("POST", "/", [("Host", "h"), ("Content-Length", "1")])
    with pytest.raises(asyncpool.LocalProtocolError, match="Too much data"):
        q.body_chunk(b"ab")


def test_writing_chunked_and_short_bodies(parser: str) -> None:
    p = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    p.request_head("PUT", "/", [("Host", "h"), ("Transfer-Encoding", "chunked")])
    assert p.body_chunk(b"abc") == b"3\r\nabc\r\n"
    assert p.end_of_body() == b"0\r\n\r\n"
    q = make_protocol(parser, "h:1", max_header_bytes=1 << 20)
    q.request_head("PUT", "/", [("Host", "h"), ("Content-Length", "5")])
    q.body_chunk(b"ab")
    with pytest.raises(asyncpool.LocalProtocolError, match="Too little data"):
        q.end_of_body()


def test_transport_option_chooses_the_parser(parser: str) -> None:
    assert asyncpool.Transport(http1_parser=parser).http1_parser == parser
    with pytest.raises(ValueError, match="http1_parser"):
        asyncpool.Transport(http1_parser="picohttp")
