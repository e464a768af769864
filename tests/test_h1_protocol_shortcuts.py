"""The h11 backend's shortcuts (a large read gives h11 only its head; a Content-Length body is
counted outside h11; known heads and requests skip h11) against h11 itself: on generated exchanges, cut into reads at
random and around every head's end, both give the same events, reuse decisions and errors."""

from __future__ import annotations

import itertools
import random
from typing import Any

import h11

from asyncpool._h1.protocol import (
    _KNOWN_HEADS,
    _SENT_REQUESTS,
    HOLD_AFTER_HEAD_MIN,
    HTTP11Protocol,
    ResponseHead,
)
from tests.http11_exchange import outcome


class WithoutShortcuts(HTTP11Protocol):
    """The h11 backend with its shortcuts off (no held reads, no directly counted bodies, no
    known heads, every request told to h11 as it is written): h11 itself behind the same
    conversions, the reference the shortcuts must match."""

    __slots__ = ()

    def request_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        data = super().request_head(method, target, headers)
        if self._unsent is not None:  # a request written without h11: tell h11 at once
            self._send_unsent()
        return data

    def feed(self, data: bytes) -> None:
        if not data:
            self._peer_closed = True  # not a shortcut: h11 alone would reuse a closed connection
        self._h11.receive_data(data)

    def _response_head(self, event: Any) -> ResponseHead:
        headers, _, _ = self._checked_headers(event.headers)
        version = "HTTP/" + event.http_version.decode("ascii")
        return ResponseHead(event.status_code, event.reason.decode("latin-1"), version, headers)


def random_exchange(rng: random.Random) -> tuple[str, list[tuple[str, str]], list[bytes], int]:
    """A request's method and fields, the response's bytes cut into reads, a head limit: 1xx
    heads, every framing, bodies around the hold threshold, bytes after, truncation, EOF."""
    big = HOLD_AFTER_HEAD_MIN
    wire = b""
    for _ in range(rng.choice([0, 0, 1, 2])):
        pad = rng.choice(["", "", f"X-Pad: {'p' * big}\r\n"])
        wire += f"HTTP/1.1 {rng.choice([100, 103])} Info\r\nLink: </a>\r\n{pad}\r\n".encode()
    fields = [
        rng.choice(["", "Connection: close", "Connection: keep-alive", f"X-Big: {'b' * big}"])
    ]
    length = rng.choice([0, 1, 5, big - 50, big, 2 * big + 3])
    body = (b"ab\r\n\r\ncd" * length)[:length]  # a head's end inside the body too
    framing = rng.choice(["length", "length", "chunked", "none"])
    if framing == "length":
        fields.append(f"Content-Length: {length}")
    elif framing == "chunked":
        fields.append("Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (length, body) if body else b"") + b"0\r\n\r\n"
    head = "".join(f"{field}\r\n" for field in fields if field)
    status = rng.choice([200, 200, 404, 204, 304])
    wire += f"HTTP/{rng.choice(['1.1', '1.1', '1.0'])} {status} OK\r\n{head}\r\n".encode() + body
    wire += rng.choice([b"", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"x" * big])
    if rng.random() < 0.15:
        wire = wire[: rng.randrange(1, len(wire) + 1)]
    heads_end = [i for i in range(len(wire)) if wire.startswith(b"\r\n\r\n", i)][:6]
    cuts = {rng.randrange(1, len(wire) + 1) for _ in range(rng.choice([0, 1, 3]))}
    cuts |= {rng.choice(heads_end) + rng.randrange(5) for _ in range(2) if heads_end}
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(wire)), len(wire)]
    reads = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    if rng.random() < 0.4:
        reads.append(b"")  # the server closes
    method = rng.choice(["GET", "GET", "HEAD"])
    request_fields = rng.choice([[], [], [("Connection", "close")]])
    return method, request_fields, reads, rng.choice([1 << 20, 1000, big + 100])


class CountingKnownHeads(HTTP11Protocol):
    """The backend, counting the heads it took as known (without h11)."""

    __slots__ = ()
    known = 0

    def _known_head(self, data: bytes, our_state: Any) -> int:
        end = super()._known_head(data, our_state)
        CountingKnownHeads.known += end < 0
        return end


def test_the_shortcuts_change_nothing() -> None:
    _KNOWN_HEADS.clear()
    for seed in range(400):
        method, request_fields, reads, head_limit = random_exchange(random.Random(seed))
        results = []
        # The backend twice: the second time, a head h11 read the first time is known.
        for kind in (CountingKnownHeads, CountingKnownHeads, WithoutShortcuts):
            p = kind("h:1", max_header_bytes=head_limit)
            p.request_head(method, "/", [("Host", "h"), *request_fields])
            p.end_of_body()
            results.append(outcome(p, reads))
        assert results[0] == results[1] == results[2], (
            seed,
            method,
            request_fields,
            [len(r) for r in reads],
        )
    assert CountingKnownHeads.known >= 10  # the known heads were tried


HEAD = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5\r\n\r\n"


def test_known_heads_as_h11_reads_them() -> None:
    """A head read before, in the same state, gives what h11 gave: with its body in the same
    read or later, bytes after the body, a request that said close, a response that says so,
    a head over a lower limit, a large body; and not for another method."""
    big = HOLD_AFTER_HEAD_MIN * 2
    big_head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big
    close_head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
    cases: list[tuple[str, list[tuple[str, str]], list[bytes], int]] = [
        ("GET", [], [HEAD + b"hello"], 1 << 20),
        ("GET", [], [HEAD, b"hel", b"lo"], 1 << 20),
        ("GET", [], [HEAD + b"hello" + HEAD], 1 << 20),
        ("GET", [], [HEAD + b"he", b""], 1 << 20),
        ("GET", [("Connection", "close")], [HEAD + b"hello"], 1 << 20),
        ("GET", [], [close_head + b"hello"], 1 << 20),
        ("GET", [], [HEAD + b"hello"], 20),
        ("HEAD", [], [HEAD], 1 << 20),
        ("GET", [], [big_head + b"x" * big], 1 << 20),
        ("GET", [], [big_head + b"x" * (big - 1), b"xy"], 1 << 20),
        ("GET", [], [HEAD.replace(b"\r\n", b"\n") + b"hello"], 1 << 20),
    ]
    for method, request_fields, reads, head_limit in cases:
        results = []
        _KNOWN_HEADS.clear()
        CountingKnownHeads.known = 0
        for kind in (CountingKnownHeads, CountingKnownHeads, WithoutShortcuts):
            p = kind("h:1", max_header_bytes=head_limit)
            p.request_head(method, "/", [("Host", "h"), *request_fields])
            p.end_of_body()
            results.append(outcome(p, reads))
        assert results[0] == results[1] == results[2], (method, request_fields, reads)
        expect_known = method == "GET" and head_limit > 20
        assert (CountingKnownHeads.known == 1) is expect_known, (method, reads)


def test_a_known_heads_fields_are_the_callers_own() -> None:
    """Each response gets its own list of fields: Headers over it may be changed."""
    heads = []
    for _ in range(2):
        p = HTTP11Protocol("h:1", max_header_bytes=1 << 20)
        p.request_head("GET", "/", [("Host", "h")])
        p.end_of_body()
        p.feed(HEAD + b"hello")
        head = p.next_event()
        assert isinstance(head, ResponseHead)
        heads.append(head)
    heads[1].headers.append("X-Added")
    assert heads[0].headers == ["Server", "t", "Content-Length", "5"]
    assert heads[1].headers is not _KNOWN_HEADS[("GET", h11.DONE, HEAD)].headers


def test_known_requests_and_heads_over_many_cycles() -> None:
    """One connection, cycle after cycle: a bodiless request h11 wrote before is written alike
    without h11, a known head is read without it, and a head that is not known (a new Date),
    a request that said close or one with a body bring h11 in exactly where it would be."""
    _KNOWN_HEADS.clear()
    fields = [("Host", "h"), ("X-Cycles", "1")]
    p = HTTP11Protocol("h:1", max_header_bytes=1 << 20)
    reference = WithoutShortcuts("h:1", max_header_bytes=1 << 20)
    dated = HEAD.replace(b"Server: t", b"Date: 2")
    cycles: list[tuple[str, list[tuple[str, str]], bytes, list[bytes]]] = [
        ("GET", fields, b"", [HEAD + b"hello"]),
        ("GET", fields, b"", [HEAD + b"hello"]),
        ("GET", fields, b"", [HEAD + b"hel", b"lo"]),
        ("GET", fields, b"", [dated + b"hello"]),
        ("GET", fields, b"", [dated + b"hello"]),
        ("POST", [*fields, ("Content-Length", "2")], b"ab", [HEAD + b"hello"]),
        ("GET", fields, b"", [b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"hello"]),
        ("GET", fields, b"", [HEAD + b"hello"]),
        ("GET", [*fields, ("Connection", "close")], b"", [HEAD + b"hello"]),
    ]
    for method, request_fields, body, reads in cycles:
        results, written = [], []
        for q in (p, reference):
            data = q.request_head(method, "/", request_fields)
            data += q.body_chunk(body) if body else b""
            data += q.end_of_body()
            written.append(data)
            results.append(outcome(q, reads))
        assert written[0] == written[1]
        assert results[0] == results[1], (method, request_fields, reads)
    assert results[0][-2:] == [False, False]  # the last request said close
    assert ("GET", "/", tuple(fields)) in _SENT_REQUESTS
    # A request with a body is tried once, then never again.
    assert _SENT_REQUESTS[("POST", "/", (*fields, ("Content-Length", "2")))][1] is None


def test_a_known_request_is_told_to_h11_before_anything_else_reads_it() -> None:
    """Written without h11, then a response that is not known, bytes nobody asked for, or the
    server closing: h11 reads each as if it had written the request itself."""
    fields = [("Host", "h"), ("X-Told", "1")]
    for reads in ([b"HTTP/1.1 204 No\r\n\r\n"], [b"junk\r\n\r\n"], [b""], [HEAD, b""]):
        results = []
        for kind in (HTTP11Protocol, HTTP11Protocol, WithoutShortcuts):
            p = kind("h:1", max_header_bytes=1 << 20)
            p.request_head("GET", "/", fields)
            p.end_of_body()
            results.append(outcome(p, reads))
        assert results[0] == results[1] == results[2], reads
