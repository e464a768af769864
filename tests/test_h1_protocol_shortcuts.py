"""The h11 backend's two shortcuts (a large read gives h11 only its head; a Content-Length
body is counted outside h11) against h11 itself: on generated exchanges, cut into reads at
random and around every head's end, both give the same events, reuse decisions and errors."""

from __future__ import annotations

import itertools
import random
from typing import Any

from asyncpool._h1.protocol import (
    HOLD_AFTER_HEAD_MIN,
    HTTP11Protocol,
    ResponseHead,
)
from tests.http11_exchange import outcome


class WithoutShortcuts(HTTP11Protocol):
    """The h11 backend with its two shortcuts off (no held reads, no directly counted bodies):
    h11 itself behind the same conversions, the reference the shortcuts must match."""

    __slots__ = ()

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


def test_the_shortcuts_change_nothing() -> None:
    for seed in range(400):
        method, request_fields, reads, head_limit = random_exchange(random.Random(seed))
        results = []
        for kind in (HTTP11Protocol, WithoutShortcuts):
            p = kind("h:1", max_header_bytes=head_limit)
            p.request_head(method, "/", [("Host", "h"), *request_fields])
            p.end_of_body()
            results.append(outcome(p, reads))
        assert results[0] == results[1], (seed, method, request_fields, [len(r) for r in reads])
