"""The httptools backend against h11, the reference, at the edges of the grammar: for each odd
or malformed response, fed whole, cut at every byte and byte by byte, with and without the
server closing after it, both backends give the same events, the same reuse decision and
unsolicited bytes, or an error of the same type (the texts may differ). And for each request,
odd or invalid, both write the same bytes, or the Transport's check refuses it before either
writes (as h11 would)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import h11
import pytest

import asyncpool
from asyncpool import Request
from asyncpool._h1.protocol import (
    _KNOWN_LLHTTP_HEADS,
    END_OF_MESSAGE,
    HTTP1Protocol,
    HttptoolsProtocol,
    Informational,
    ResponseHead,
    make_protocol,
)
from asyncpool._models import check_target, check_wire_fields
from tests.http11_exchange import outcome

pytest.importorskip("httptools")

OK5 = b"Content-Length: 5\r\n\r\nhello"
CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"

# What llhttp takes and h11 refuses: the httptools backend refuses it too.
REFUSED_BY_H11 = {
    "status under 100": b"HTTP/1.1 099 OK\r\n" + OK5,
    "blank line before the status line": b"\r\nHTTP/1.1 200 OK\r\n" + OK5,
    "two Transfer-Encoding fields": b"HTTP/1.1 200 OK\r\n"
    + b"Transfer-Encoding: chunked\r\n"
    + CHUNKED
    + b"5\r\nhello\r\n0\r\n\r\n",
    "Transfer-Encoding gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n"
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    "Transfer-Encoding chunked, gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n"
    b"\r\nhello",
    "Transfer-Encoding identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello",
}

# What llhttp refuses and h11 takes: the httptools backend hands the connection to h11.
TAKEN_BY_H11 = {
    "bare LF line ends": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    "bare LF after the status line": b"HTTP/1.1 200 OK\n" + OK5,
    "bare LF ending the head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\nhello",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n" + OK5,
    "Content-Length 5, 5": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    "Content-Length twice": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + OK5,
    "control character in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n" + OK5,
    "DEL in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n" + OK5,
    "HTTP/1.2": b"HTTP/1.2 200 OK\r\n" + OK5,
    "a 1xx, then bare LF": b"HTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n"
    b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    "bare LF in a 1xx": b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\r\n" + OK5,
    "bare LF, chunked": b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n",
    "bare LF, until close": b"HTTP/1.1 200 OK\nX: y\n\nhello",
    "bare LF, Connection: close": b"HTTP/1.1 200 OK\nConnection: close\n"
    + b"Content-Length: 5\n\nhello",
    "bare LF, HTTP/1.0": b"HTTP/1.0 200 OK\nContent-Length: 5\n\nhello",
    "bare LF, then bytes nobody asked for": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhellojunk",
    "bare LF, then a bad chunk": b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nzz\r\n",
    "bare LF, server gone mid-head": b"HTTP/1.1 200 OK\nContent-Length: 5\n",
    "obs-fold, a large body": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 40000\r\n\r\n"
    + b"x" * 40000,
}

# Both refuse, or both take, and must agree on the details.
EDGES = {
    "Content-Length 5, 6": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
    "Content-Length 5 then 6": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "Content-Length -1": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
    "Content-Length +5": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "Content-Length huge": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "Content-Length empty": b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nhello",
    "whitespace around a value": b"HTTP/1.1 200 OK\r\nContent-Length:   5  \r\nX: a \t\r\n\r\nhello",
    "bare CR": b"HTTP/1.1 200 OK\rContent-Length: 5\r\n\r\nhello",
    "space before the colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    "bad name character": b"HTTP/1.1 200 OK\r\nX(A): 1\r\n" + OK5,
    "NUL in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + OK5,
    "empty name": b"HTTP/1.1 200 OK\r\n: x\r\n" + OK5,
    "whitespace before a name": b"HTTP/1.1 200 OK\r\n X-A: 1\r\n" + OK5,
    "Latin-1 value": b"HTTP/1.1 200 OK\r\nX-A: \xe9t\xe9\r\n" + OK5,
    "no reason": b"HTTP/1.1 200\r\n" + OK5,
    "UTF-8 reason": b"HTTP/1.1 200 \xc3\xa9\r\n" + OK5,
    "NUL in the reason": b"HTTP/1.1 200 O\x00K\r\n" + OK5,
    "VT in the reason": b"HTTP/1.1 200 O\x0bK\r\n" + OK5,
    "FF in the reason": b"HTTP/1.1 200 O\x0cK\r\n" + OK5,
    "control character in the reason": b"HTTP/1.1 200 O\x01K\r\n" + OK5,
    "DEL in the reason": b"HTTP/1.1 200 O\x7fK\r\n" + OK5,
    "tab in the reason": b"HTTP/1.1 200 O\tK \r\n" + OK5,
    "VT in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x0bb\r\n" + OK5,
    "FF in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x0cb\r\n" + OK5,
    "NUL in a 1xx reason": b"HTTP/1.1 103 E\x00\r\n\r\nHTTP/1.1 200 OK\r\n" + OK5,
    "status 2000": b"HTTP/1.1 2000 OK\r\n" + OK5,
    "status 999": b"HTTP/1.1 999 OK\r\n" + OK5,
    "HTTP/2.0": b"HTTP/2.0 200 OK\r\n" + OK5,
    "HTTP/0.9": b"HTTP/0.9 200 OK\r\n" + OK5,
    "lower-case http": b"http/1.1 200 OK\r\n" + OK5,
    "two spaces": b"HTTP/1.1  200 OK\r\n" + OK5,
    "chunk extension": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5;a=b\r\nhello\r\n0\r\n\r\n",
    "upper-case chunk size": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"A\r\nhellohello\r\n0\r\n\r\n",
    "space after a chunk size": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
    "no CRLF after chunk data": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5\r\nhelloXX0\r\n\r\n",
    "bare LF after a chunk size": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"fffffffffffffffffffff\r\nhello\r\n",
    "empty chunk size": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"\r\nhello\r\n0\r\n\r\n",
    "trailers (not head fields)": b"HTTP/1.1 200 OK\r\n"
    + CHUNKED
    + b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
    "Transfer-Encoding gzip in trailers": b"HTTP/1.1 200 OK\r\n"
    + CHUNKED
    + b"0\r\nTransfer-Encoding: gzip\r\n\r\n",
    "Transfer-Encoding chunked and Connection: close in trailers": b"HTTP/1.1 200 OK\r\n"
    + CHUNKED
    + b"0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    "bad trailer": b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5\r\nhello\r\n0\r\nX T: 1\r\n\r\n",
    "Transfer-Encoding Chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    "empty Transfer-Encoding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\nhello",
    "a 1xx with a Content-Length": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n"
    b"HTTP/1.1 200 OK\r\n" + OK5,
    "two 1xx": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 E\r\n\r\nHTTP/1.1 200 OK\r\n" + OK5,
    "204 with a Content-Length": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "204, then bytes": b"HTTP/1.1 204 No Content\r\n\r\nhello",
    "304, then a blank line": b"HTTP/1.1 304 Not Modified\r\n\r\n\r\n",
    "304 chunked": b"HTTP/1.1 304 Not Modified\r\n" + CHUNKED,
    "Connection: keep-alive, close": b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n" + OK5,
    "Connection: CLOSE": b"HTTP/1.1 200 OK\r\nConnection: CLOSE\r\n" + OK5,
    "HTTP/2.0, Connection: close": b"HTTP/2.0 200 OK\r\nConnection: close\r\n" + OK5,
}

# A HEAD response has no body; whatever follows its head was never asked for.
HEAD = {
    "HEAD": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    "HEAD, then bytes": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HEAD, then a response": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "HEAD, chunked": b"HTTP/1.1 200 OK\r\n" + CHUNKED,
    "HEAD, no length": b"HTTP/1.1 200 OK\r\n\r\n",  # still kept alive: it has no body
    "HEAD, no length, then bytes": b"HTTP/1.1 200 OK\r\n\r\nhello",
    "HEAD after a 1xx": b"HTTP/1.1 103 E\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    "HEAD after a 1xx, then bytes": b"HTTP/1.1 103 E\r\n\r\nHTTP/1.1 200 OK\r\n" + OK5,
    "HEAD, bare LF": b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",
    "HEAD, bare LF, then bytes": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
}

CASES = [
    *(("GET", k, v) for table in (REFUSED_BY_H11, TAKEN_BY_H11, EDGES) for k, v in table.items()),
    *(("HEAD", k, v) for k, v in HEAD.items()),
]
NEXT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def sent(p: HTTP1Protocol, method: str = "GET") -> HTTP1Protocol:
    """``p`` with a body-less request written, waiting for the response."""
    p.request_head(method, "/", [("Host", "h")])
    p.end_of_body()
    return p


def exchange(parser: str, method: str, reads: list[bytes], cycles: int = 1) -> list[Any]:
    """``cycles`` request/response cycles on one protocol: the reads, then a plain response
    for each further cycle, as long as the connection may be reused."""
    p = make_protocol(parser, "h:1", max_header_bytes=1 << 16)
    results: list[Any] = []
    for cycle in range(cycles):
        sent(p, method)
        result = outcome(p, reads if cycle == 0 else [NEXT_RESPONSE], error_text=False)
        results.append(result)
        if result[-2:] != [True, False]:  # not reusable, or bytes nobody asked for
            break
    return results


def cuttings(wire: bytes) -> list[list[bytes]]:
    """Whole; in two at every byte of the first 200 (the heads); byte by byte if short."""
    cuts = [*range(1, min(len(wire), 200)), len(wire) // 2, len(wire) - 1]
    return [
        [wire],
        *([wire[:i], wire[i:]] for i in sorted(set(cuts)) if 0 < i < len(wire)),
        *([[wire[i : i + 1] for i in range(len(wire))]] if len(wire) <= 200 else []),
    ]


@pytest.mark.parametrize(("method", "name", "wire"), CASES, ids=[c[1] for c in CASES])
def test_both_backends_agree(method: str, name: str, wire: bytes) -> None:
    for reads in cuttings(wire):
        for closed in ([], [b""]):
            h11_says = exchange("h11", method, reads + closed, cycles=2)
            assert exchange("httptools", method, reads + closed, cycles=2) == h11_says, (
                [len(r) for r in reads],
                closed,
            )


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_1xx_heads_and_the_final_head_share_the_header_limit(parser: str) -> None:
    """As Go (1.24): the 1xx heads of a response count against max_response_header_bytes with
    its head, whole or in pieces; a head over the limit alone fails too."""
    informational = b"HTTP/1.1 103 Early\r\nLink: </" + b"a" * 350 + b">\r\n\r\n"  # 383 bytes
    final = b"HTTP/1.1 200 OK\r\nX: " + b"b" * 200 + b"\r\n" + OK5
    for count, expected in ((2, [b"hello", END_OF_MESSAGE, True, False]), (3, [])):
        wire = informational * count + final
        for reads in ([wire], [wire[i : i + 100] for i in range(0, len(wire), 100)]):
            p = sent(make_protocol(parser, "h:1", max_header_bytes=1000))
            result = outcome(p, reads, error_text=True)
            if expected:
                assert result[count + 1 :] == expected
            else:  # the third 1xx head passes the limit
                assert result[2:4] == [
                    asyncpool.ResponseHeaderTooLarge,
                    PROTOCOL_PREFIX
                    + (
                        "the total of the interim (1xx) responses exceeds max_response_header_bytes=1000"
                    ),
                ]
    # Two 1xx heads leave 234 bytes of the 1000 for the final head's fields.
    wire = informational * 2 + b"HTTP/1.1 200 OK\r\nX: " + b"b" * 400 + b"\r\n" + OK5
    p = sent(make_protocol(parser, "h:1", max_header_bytes=1000))
    assert outcome(p, [wire], error_text=True)[2:] == [
        asyncpool.ResponseHeaderTooLarge,
        PROTOCOL_PREFIX + "response head with the interim (1xx) responses before it exceeds "
        "max_response_header_bytes=1000",
    ]
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 1200 + b"\r\n" + OK5
    for reads in ([big], [big[i : i + 100] for i in range(0, len(big), 100)]):
        p = sent(make_protocol(parser, "h:1", max_header_bytes=1000))
        assert outcome(p, reads, error_text=False) == [asyncpool.ResponseHeaderTooLarge]


PROTOCOL_PREFIX = "protocol h:1: "


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_endless_1xx_heads_dripping_in_end_at_the_limit_without_rescans(
    parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1xx heads for ever, a byte per read: the limit is reached after about its size in
    bytes, and the httptools backend never joins or scans the bytes kept (it joined and scanned
    them all on every read once past the limit: quadratic, and it kept every byte)."""
    scans: list[int] = []
    end_of_heads = HttptoolsProtocol._end_of_heads

    def counted(self: HttptoolsProtocol, count: int) -> int:
        scans.append(count)
        return end_of_heads(self, count)

    monkeypatch.setattr(HttptoolsProtocol, "_end_of_heads", counted)
    informational = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
    wire = informational * 20000  # 960 KB
    fed: list[int] = []

    def reads() -> Iterator[bytes]:
        for i in range(len(wire)):
            fed.append(i)
            yield wire[i : i + 1]

    p = sent(make_protocol(parser, "h:1", max_header_bytes=65536))
    result = outcome(p, reads(), error_text=False)
    assert result[-1] is asyncpool.ResponseHeaderTooLarge
    assert all(type(event) is Informational for event in result[:-1])
    assert 65536 - len(informational) < len(fed) <= 65536 + len(informational)
    assert scans == []


def test_what_h11_refuses_is_refused() -> None:
    for wire in REFUSED_BY_H11.values():
        assert exchange("httptools", "GET", [wire])[0][-1] is asyncpool.RemoteProtocolError


def test_what_only_h11_takes_is_answered() -> None:
    """A response llhttp refuses and h11 takes is a response, and the connection goes on."""
    [first, second] = exchange("httptools", "GET", [TAKEN_BY_H11["Content-Length 5, 5"]], 2)
    assert first[0] == ResponseHead(200, "OK", "HTTP/1.1", ["Content-Length", "5"])
    assert first[1:] == [b"hello", END_OF_MESSAGE, True, False]
    assert second[1:] == [b"ok", END_OF_MESSAGE, True, False]
    [[informational, head, *_]] = exchange(
        "httptools", "GET", [TAKEN_BY_H11["a 1xx, then bare LF"]]
    )
    assert informational == Informational(103, ["Link", "</a>"])  # given once, not replayed
    assert isinstance(head, ResponseHead) and head.status_code == 200


def test_a_head_llhttp_refuses_while_the_request_body_is_still_going_out() -> None:
    """The server answers early; the request's body is still framed by the backend itself,
    and the connection is not reused while it is unfinished."""
    p = make_protocol("httptools", "h:1", max_header_bytes=1 << 16)
    p.request_head("POST", "/", [("Host", "h"), ("Content-Length", "4")])
    p.feed(b"HTTP/1.1 413 Too Large\nContent-Length: 0\n\n")
    assert isinstance(p.next_event(), ResponseHead) and p.next_event() is END_OF_MESSAGE
    assert not p.request_complete
    assert p.body_chunk(b"data") == b"data" and p.end_of_body() == b""
    assert p.request_complete
    assert p.start_next_cycle() is True
    with pytest.raises(asyncpool.LocalProtocolError):
        p.request_head("POST", "/", [("Host", "h"), ("Content-Length", "1")])
        p.body_chunk(b"too much")


class CountingParser:
    """An llhttp parser that counts the feeds it is given."""

    def __init__(self, parser: Any, feeds: list[int]) -> None:
        self._parser, self._feeds = parser, feeds

    def feed_data(self, data: bytes) -> None:
        self._feeds.append(len(data))
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


@pytest.mark.parametrize("where", ["head", "trailers"])
def test_a_field_dripping_in_is_fed_to_llhttp_in_batches(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httptools joins the pieces of an unfinished field as bytes on every feed: a 256 KiB
    field a byte per read cost 256 Ki feeds and 32 GiB copied. Past 16 KiB without a callback,
    llhttp is fed at line ends or in 16 KiB batches; the response is the same as h11's."""
    feeds: list[int] = []
    new_parser = HttptoolsProtocol._new_parser
    monkeypatch.setattr(
        HttptoolsProtocol, "_new_parser", lambda self: CountingParser(new_parser(self), feeds)
    )
    field = b"X-Long: " + b"v" * (256 << 10) + b"\r\n"
    if where == "head":
        wire = b"HTTP/1.1 200 OK\r\n" + field + OK5
    else:
        wire = b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5\r\nhello\r\n0\r\n" + field + b"\r\n"
    reads = [wire[i : i + 1] for i in range(len(wire))]
    results = {}
    for parser in ("h11", "httptools"):
        p = sent(make_protocol(parser, "h:1", max_header_bytes=1 << 20))
        results[parser] = outcome(p, reads, error_text=False)
    assert results["httptools"] == results["h11"]
    assert results["h11"][-3:] == [END_OF_MESSAGE, True, False]
    assert len(feeds) < 16384 + 200  # a byte per read up to 16 KiB, then batches and lines


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_the_trailer_section_is_bounded_by_the_header_limit(parser: str) -> None:
    """Many fields or one endless one, in large reads or small: past max_header_bytes the body
    ends with ResponseHeaderTooLarge, as h11 bounds it (the httptools backend may take one
    read more: it does not count the bytes that followed its last callback in a read)."""
    start = b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"5\r\nhello\r\n0\r\n"
    for first, piece in ((b"", b"X-T: 1\r\n" * 1000), (b"X-T: ", b"t" * 8000)):
        wire = start + first + piece * 20
        for reads in ([wire, piece * 9], [wire[i : i + 4096] for i in range(0, len(wire), 4096)]):
            p = sent(make_protocol(parser, "h:1", max_header_bytes=65536))
            result = outcome(p, reads, error_text=True)
            assert result[1:3] == [b"hello", asyncpool.ResponseHeaderTooLarge]
            assert "max_response_header_bytes=65536" in result[3]


# -- writing: the same Request, through the Transport's checks, gives the same bytes on both
# backends, or LocalProtocolError before any backend writes.


def _request(target: str = "/", headers: list[tuple[str, str | bytes]] | None = None) -> Request:
    request = Request("GET", "http://example.test/", headers=headers)
    request.target = target  # as set after construction: only the Transport's check is left
    return request


REQUESTS: dict[str, Callable[[], Request]] = {
    "plain": lambda: Request("GET", "http://example.test/a?b=c", headers=[("X-A", "1")]),
    "tab inside a value": lambda: _request(headers=[("X-A", "a\tb  c")]),
    "control character and DEL in a value (h11 takes them)": lambda: _request(
        headers=[("X-A", "a\x01b\x7f")]
    ),
    "empty value": lambda: _request(headers=[("X-A", "")]),
    "Latin-1 str value": lambda: _request(headers=[("X-A", "caf\xe9")]),
    "bytes value": lambda: _request(headers=[("X-A", b"caf\xe9\xff")]),
    "own Host field": lambda: _request(headers=[("host", "other.test")]),
    "VT in the path": lambda: Request("GET", "http://example.test/a\x0bb"),
    "FF in the path": lambda: Request("GET", "http://example.test/a\x0cb"),
    "DEL in the path": lambda: Request("GET", "http://example.test/a\x7fb"),
    "target with TAB": lambda: _request("/a\tb"),
    "target with VT": lambda: _request("/a\x0bb"),
    "empty target": lambda: _request(""),
    "non-ASCII target": lambda: _request("/\xe9"),
    "two Host fields": lambda: _request(headers=[("Host", "a"), ("Host", "b")]),
    "leading space in a value": lambda: _request(headers=[("X-A", " a")]),
    "trailing whitespace in a value": lambda: _request(headers=[("X-A", "a \t")]),
    "only a tab": lambda: _request(headers=[("X-A", "\t")]),
    "VT in a value": lambda: _request(headers=[("X-A", "a\x0bb")]),
    "FF in a value": lambda: _request(headers=[("X-A", "a\x0cb")]),
    "NUL in the URL's host": lambda: Request("GET", "http://a\x00b/"),
    "NUL in an IPv6 zone id": lambda: Request("GET", "http://[fe80::1%25\x00x]/"),
    "value Latin-1 cannot hold": lambda: _request(headers=[("X-A", "\u20ac")]),
}


def wire(parser: str, make: Callable[[], Request]) -> bytes | type[Exception]:
    """The request head a backend writes for the Request, as the Transport has it written."""
    try:
        request = make()
    except (asyncpool.InvalidURL, asyncpool.LocalProtocolError) as exc:
        return type(exc)
    transport = asyncpool.Transport(disable_compression=True)
    try:
        check_target(request.target, request.url.host_header)
        headers, _ = transport._wire_headers(request)
        p = make_protocol(parser, "h:1", max_header_bytes=1 << 16)
        return p.request_head(request.method, request.target, headers)
    except asyncpool.LocalProtocolError:
        return asyncpool.LocalProtocolError


@pytest.mark.parametrize("name", list(REQUESTS))
def test_both_backends_write_the_same_request(name: str) -> None:
    assert wire("httptools", REQUESTS[name]) == wire("h11", REQUESTS[name])


def test_what_the_backends_write() -> None:
    assert wire("httptools", REQUESTS["bytes value"]) == (
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: caf\xe9\xff\r\n\r\n"
    )
    assert wire("h11", REQUESTS["Latin-1 str value"]) == (
        b"GET / HTTP/1.1\r\nHost: example.test\r\nX-A: caf\xe9\r\n\r\n"
    )
    for name in ("VT in the path", "NUL in the URL's host", "empty target", "two Host fields"):
        assert wire("httptools", REQUESTS[name]) in (
            asyncpool.InvalidURL,
            asyncpool.LocalProtocolError,
        ), name


FIELD_VALUES = [
    "a",
    "",
    "a b",
    "a\tb",
    "a\x01b",
    "a\x7f",
    "\xe9",
    "\x80\xff",
    " a",
    "a ",
    "\t",
    "a\x0bb",
    "a\x0cb",
    "a\x00b",
    "a\rb",
    "a\nb",
    "a\x85b",
    "a\xa0b",
    "a\x1cb",
]
TARGETS = ["/", "*", "/a?b", "", "/a b", "/a\tb", "/a\x0bb", "/a\x7f", "/a\x01", "/\xe9", "/a\x85"]


@pytest.mark.parametrize("value", FIELD_VALUES)
def test_the_wire_check_takes_the_field_values_h11_takes(value: str) -> None:
    """check_wire_fields against h11 itself (given the value's Latin-1 bytes)."""
    try:
        h11.Request(
            method="GET", target="/", headers=[("Host", "h"), ("X", value.encode("latin-1"))]
        )
    except h11.LocalProtocolError:
        with pytest.raises(asyncpool.LocalProtocolError):
            check_wire_fields([("Host", "h"), ("X", value)], "h")
    else:
        check_wire_fields([("Host", "h"), ("X", value)], "h")


@pytest.mark.parametrize("target", TARGETS)
def test_the_target_check_takes_the_targets_h11_takes(target: str) -> None:
    try:
        h11.Request(method="GET", target=target, headers=[("Host", "h")])
    except (h11.LocalProtocolError, UnicodeEncodeError):
        with pytest.raises(asyncpool.LocalProtocolError):
            check_target(target, "h")
    else:
        check_target(target, "h")


KNOWN_HEAD_WIRES = {
    "body in the head's read": b"HTTP/1.1 200 OK\r\nServer: t\r\n" + OK5,
    "bytes after the body": b"HTTP/1.1 200 OK\r\nServer: t\r\n" + OK5 + b"HTTP/1.1 200",
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + OK5,
    "HTTP/1.0": b"HTTP/1.0 200 OK\r\n" + OK5,
    "a large body": b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n" + b"x" * 40000,
    "cut short": b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 9\r\n\r\nhello",
}


@pytest.mark.parametrize("name", KNOWN_HEAD_WIRES)
def test_known_heads_on_httptools_as_llhttp_reads_them(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head llhttp read before for the same method is taken without llhttp, its body
    counted: the same events, reuse decisions and errors as llhttp's (and h11's), however the
    reads are cut and whether the server closes, over two cycles."""
    known = []
    taken_as_known = HttptoolsProtocol._known_head

    def counting(self: HttptoolsProtocol, data: bytes) -> bool:
        known.append(taken_as_known(self, data))
        return known[-1]

    monkeypatch.setattr(HttptoolsProtocol, "_known_head", counting)
    wire = KNOWN_HEAD_WIRES[name]
    for reads in cuttings(wire)[:60]:
        for closed in ([], [b""], [wire[-1:], b""]):
            _KNOWN_LLHTTP_HEADS.clear()
            learning = exchange("httptools", "GET", reads + closed, cycles=2)
            known.clear()
            again = exchange("httptools", "GET", reads + closed, cycles=2)
            assert learning == again == exchange("h11", "GET", reads + closed, cycles=2), (
                [len(r) for r in reads],
                closed,
            )
            if len(reads[0]) >= wire.index(b"\r\n\r\n") + 4:  # the head came whole
                assert known[0] is True


def test_a_request_head_made_again_from_the_same_fields_is_the_same() -> None:
    """The httptools backend keeps the last head it made: the same list of fields (as the
    Transport shares among bodiless requests), method and target give the same bytes and the
    same framing (a Content-Length counted from its start again); another target or list
    makes a head anew."""
    p = make_protocol("httptools", "h:1", max_header_bytes=1 << 16)
    plain = [("Host", "h")]
    sized = [("Host", "h"), ("Content-Length", "2")]
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for fields, target, wire in [
        (sized, "/", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"),
        (sized, "/", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"),
        (plain, "/", b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"),
        (plain, "/b", b"POST /b HTTP/1.1\r\nHost: h\r\n\r\n"),
        ([*sized], "/b", b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"),
    ]:
        head = p.request_head("POST", target, fields)
        body = p.body_chunk(b"ab") if len(fields) == 2 else b""
        assert head + body + p.end_of_body() == wire
        assert outcome(p, [response])[-2:] == [True, False]
    closing = [("Host", "h"), ("Connection", "close")]
    for _ in range(2):  # a head kept by another connection's protocol is not this one's
        p = make_protocol("httptools", "h:1", max_header_bytes=1 << 16)
        p.request_head("GET", "/", closing)
        p.end_of_body()
        assert outcome(p, [response])[-2:] == [False, False]
