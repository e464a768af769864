"""Hostile servers: a catalogue of small scripted servers on loopback that misbehave on purpose,
the same way every time (benchmarks/hostile.py runs clients against them; benchmarks/HOSTILE.md).

Each case is a name, a protocol (``h1``, or ``h2``: h2c with prior knowledge) and an async
function given one accepted connection: it reads the request and answers with the hostile bytes
(HTTP/1.1 written by hand; HTTP/2 through the h2 library in server mode for the handshake, and
raw hyperframe/hpack frames for what h2 would refuse to send)::

    async with serve(CASES["cl_te"]) as url, serve(CONTROL["h1"]) as control_url:
        ...  # a request to url meets the hostile server; control_url answers 200 "ok"

``expect`` says what a careful client does: ``ok`` (a 200 response whose body it reads in
full), ``error`` (an error of its own typed tree) or ``either``. Every loop is bounded (so much
sent, then the connection is closed) and every connection has a deadline: a server never hangs.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import anyio
import h2.config
import h2.connection
import h2.events
import hpack
from anyio.abc import ByteStream, SocketAttribute
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

__all__ = ["CASES", "CONTROL", "Case", "serve"]

Serve = Callable[[ByteStream], Awaitable[None]]

CONNECTION_DEADLINE = 60.0  # seconds a server spends on one connection, whatever happens
HEAD_LIMIT = 2 << 20  # the longest request head a server reads (the redirect case's is ~0.9 MB)
WRITE_SIZE = 64 << 10  # repeated blocks go out in writes of about this size
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


@dataclass(frozen=True)
class Case:
    name: str
    protocol: str  # "h1" or "h2" (h2c, prior knowledge)
    what: str  # what the server does, in one line
    serve: Serve  # one accepted connection
    expect: str = "error"  # "ok", "error" or "either"
    size: int | None = None  # the body size of an "ok"
    stream: bool = False  # the body is read as a stream, counted and dropped (aiter_bytes)
    redirects: bool = False  # the client follows redirects (asyncpool.Client)
    fast: bool = False  # milliseconds: in `--quick` and tests/test_hostile.py


CASES: dict[str, Case] = {}


def case(name: str, protocol: str, what: str, **options: object) -> Callable[[Serve], Serve]:
    """Register the decorated function as case `name` (options: Case's fields)."""

    def register(function: Serve) -> Serve:
        CASES[name] = Case(name, protocol, what, function, **options)  # type: ignore[arg-type]
        return function

    return register


@asynccontextmanager
async def serve(hostile: Case) -> AsyncIterator[str]:
    """Listen on 127.0.0.1 and serve `hostile` on every connection; yields its URL."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def handle(stream: ByteStream) -> None:
        async with stream:
            with anyio.move_on_after(CONNECTION_DEADLINE), suppress(*GONE):
                await hostile.serve(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield f"http://127.0.0.1:{port}/{hostile.name}"
        finally:
            tg.cancel_scope.cancel()


# ====================================================================== HTTP/1.1


class Reader:
    """Request heads from a connection (a GET has no body)."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def head(self) -> bytes:
        """The next request head without its blank line; EndOfStream when the client left."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > HEAD_LIMIT:
                raise anyio.EndOfStream
            self.buffer += await self.stream.receive()
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head


async def send_repeated(stream: ByteStream, block: bytes, count: int) -> None:
    """`block`, `count` times, in writes of about WRITE_SIZE."""
    per_write = max(1, WRITE_SIZE // len(block))
    group = block * per_write
    for _ in range(count // per_write):
        await stream.send(group)
    if count % per_write:
        await stream.send(block * (count % per_write))


def respond(head: bytes, block: bytes = b"", count: int = 0, tail: bytes = b"") -> Serve:
    """A server that reads the request, then sends `head`, `block` `count` times and `tail`,
    and closes the connection."""

    async def serve(stream: ByteStream) -> None:
        await Reader(stream).head()
        await stream.send(head)
        if count:
            await send_repeated(stream, block, count)
        if tail:
            await stream.send(tail)

    return serve


@case(
    "good", "h1", "a plain 200 response, keep-alive (the control)", expect="ok", size=2, fast=True
)
async def good(stream: ByteStream) -> None:
    reader = Reader(stream)
    for _ in range(1000):
        await reader.head()
        await stream.send(OK)


# -- framing: the pool already refuses these; the suite proves it stays so

BAD_FRAMING = {
    "cl_te": (
        "Content-Length and Transfer-Encoding: chunked (request smuggling's favourite)",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "error",
    ),
    "cl_conflict": (
        "two different Content-Length fields",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        "error",
    ),
    "chunk_overflow": (
        "a chunk size of 18 hex digits (overflows 64 bits)",
        CHUNKED + b"ffffffffffffffffff\r\nok\r\n0\r\n\r\n",
        "error",
    ),
    "bare_lf": (
        "bare LF line endings (RFC 9112 lets a recipient accept them)",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        "either",
    ),
    "obs_fold": (
        "a header folded over two lines (obs-fold; accepted as one space, or refused)",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        "either",
    ),
    "nul_header": (
        "a NUL byte in a header value",
        b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok",
        "error",
    ),
    "http09": ("an HTTP/0.9 answer: a body with no status line, then close", b"ok\n", "error"),
}
for _name, (_what, _response, _expect) in BAD_FRAMING.items():
    case(_name, "h1", _what, expect=_expect, fast=True)(respond(_response))

case(
    "header_flood",
    "h1",
    "100,000 small header fields (2.1 MB: over max_response_header_bytes)",
    fast=True,
)(
    respond(
        b"HTTP/1.1 200 OK\r\n", b"X-Flood-Header: yes\r\n", 100_000, b"Content-Length: 0\r\n\r\n"
    )
)

# -- the new cases

case(
    "trailers_many",
    "h1",
    "a chunked body, then 1,000,000 small trailer fields (16 MB)",
    expect="either",
)(respond(CHUNKED + b"2\r\nok\r\n0\r\n", b"X-Trailer: yes\r\n", 1_000_000, b"\r\n"))

case(
    "trailer_endless",
    "h1",
    "a chunked body, then one trailer field whose value never ends (128 MiB, then close)",
)(respond(CHUNKED + b"2\r\nok\r\n0\r\nX-Endless: ", b"a" * WRITE_SIZE, 2048))

case(
    "informational_flood",
    "h1",
    "100,000 heads of 103 Early Hints (2.7 MB: over max_response_header_bytes, which 1xx heads"
    " share with the final head, as in Go 1.24) before the 200",
)(respond(b"", b"HTTP/1.1 103 Early Hints\r\n\r\n", 100_000, OK))

case(
    "informational_giant",
    "h1",
    "one 103 Early Hints head with an endless Link field (128 MiB, then close)",
)(respond(b"HTTP/1.1 103 Early Hints\r\nLink: ", b"a" * WRITE_SIZE, 2048))

# Bytes of zeros in the gzip bomb: what a careless client holds at once depends on the size of
# its reads (a 64 KiB read inflates to 64 MiB), not on the total; 1 GiB shows the same, 4x slower.
BOMB_SIZE = 256 << 20
MEMBERS, MEMBER_SIZE = 2500, 16 << 10


@functools.cache
def gzip_bomb() -> bytes:
    """BOMB_SIZE zeros gzipped (256 KiB on the wire), built in milliseconds: with a full flush
    every MiB, each MiB of zeros compresses to the same bytes."""
    mib = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(BOMB_SIZE >> 20):
        crc = zlib.crc32(mib, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, BOMB_SIZE & 0xFFFFFFFF)
    return header + segment * (BOMB_SIZE >> 20) + deflate.flush() + trailer


@functools.cache
def gzip_members() -> bytes:
    """MEMBERS gzip members of MEMBER_SIZE zeros each, one after the other (RFC 1952 allows it)."""
    member = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    one = member.compress(bytes(MEMBER_SIZE)) + member.flush()
    return one * MEMBERS


def gzipped(body: Callable[[], bytes]) -> Serve:
    async def serve(stream: ByteStream) -> None:
        data = body()
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(data)}\r\n\r\n"
        await Reader(stream).head()
        await stream.send(head.encode())
        for start in range(0, len(data), WRITE_SIZE):
            await stream.send(data[start : start + WRITE_SIZE])

    return serve


case(
    "gzip_bomb",
    "h1",
    "Content-Encoding: gzip, 256 MiB of zeros in 256 KiB (read as a stream)",
    expect="ok",
    size=BOMB_SIZE,
    stream=True,
)(gzipped(gzip_bomb))

case(
    "gzip_members",
    "h1",
    f"Content-Encoding: gzip, {MEMBERS:,} gzip members of 16 KiB of zeros (read as a stream)",
    expect="ok",
    size=MEMBERS * MEMBER_SIZE,
    stream=True,
)(gzipped(gzip_members))

REDIRECTS, URL_BYTES = 8, 900_000


@case(
    "redirect_url",
    "h1",
    f"{REDIRECTS} redirects, each to a fresh ~0.9 MB URL, then 200 (through the Client)",
    expect="either",
    size=2,
    redirects=True,
)
async def redirect_url(stream: ByteStream) -> None:
    reader = Reader(stream)
    for _ in range(REDIRECTS + 1):
        hop = (await reader.head()).split(b" ", 2)[1].count(b"/hop")
        if hop >= REDIRECTS:
            await stream.send(OK)
            continue
        fresh = b"/hop" * (hop + 1) + b"/" + os.urandom(URL_BYTES // 2).hex().encode()
        await stream.send(
            b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % fresh
        )


# ====================================================================== HTTP/2 (h2c)


async def h2_request(stream: ByteStream) -> tuple[h2.connection.H2Connection, int]:
    """The server side of the handshake, up to a request's HEADERS: (connection, stream id)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    await stream.send(conn.data_to_send())
    for _ in range(100):
        events = conn.receive_data(await stream.receive())
        await stream.send(conn.data_to_send())
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                return conn, event.stream_id
    raise anyio.EndOfStream


async def h2_ok(stream: ByteStream, conn: h2.connection.H2Connection, stream_id: int) -> None:
    conn.send_headers(stream_id, [(":status", "200"), ("content-length", "2")])
    conn.send_data(stream_id, b"ok", end_stream=True)
    await stream.send(conn.data_to_send())


@case("good_h2", "h2", "a plain 200 response (the HTTP/2 control)", expect="ok", size=2, fast=True)
async def good_h2(stream: ByteStream) -> None:
    conn, stream_id = await h2_request(stream)
    await h2_ok(stream, conn, stream_id)
    for _ in range(1000):
        for event in conn.receive_data(await stream.receive()):
            if isinstance(event, h2.events.RequestReceived):
                await h2_ok(stream, conn, event.stream_id)
        await stream.send(conn.data_to_send())


def h2_raw(
    frames: Callable[[int], bytes], count: int = 1, *, answer: bool = True, head: bool = False
) -> Serve:
    """A server that takes the request, sends (with `head`) a 200 HEADERS, then
    `frames(stream_id)` `count` times, then (with `answer`) the body "ok" (and the HEADERS before
    it unless sent), and waits for the client to close. What the client sends after its request
    (ACKs) is read and dropped all along: a server that left it unread would make the outcome
    depend on socket buffer sizes (both sides blocked on a write, or a reset at close)."""

    async def serve(stream: ByteStream) -> None:
        conn, stream_id = await h2_request(stream)
        async with anyio.create_task_group() as tg:  # (whose errors come in a group)
            tg.start_soon(discard, stream)
            with suppress(*GONE):
                if head:
                    conn.send_headers(stream_id, [(":status", "200")])
                    await stream.send(conn.data_to_send())
                await send_repeated(stream, frames(stream_id), count)
                if answer and head:
                    conn.send_data(stream_id, b"ok", end_stream=True)
                    await stream.send(conn.data_to_send())
                elif answer:
                    await h2_ok(stream, conn, stream_id)

    return serve


async def discard(stream: ByteStream) -> None:
    """Read and drop what the client sends until it closes the connection."""
    with suppress(*GONE):
        for _ in range(100_000):
            await stream.receive()


FLOOD = 10_000

case("h2_data_flood", "h2", f"200 HEADERS, {FLOOD:,} zero-length DATA frames, then the body")(
    h2_raw(lambda sid: DataFrame(sid).serialize(), FLOOD, head=True)
)
case("h2_settings_flood", "h2", f"{FLOOD:,} SETTINGS frames (each wants an ACK), then 200")(
    h2_raw(lambda sid: SettingsFrame(0).serialize(), FLOOD)
)
case("h2_ping_flood", "h2", f"{FLOOD:,} PING frames (each wants an ACK), then 200")(
    h2_raw(lambda sid: PingFrame(0, opaque_data=b"hostile!").serialize(), FLOOD)
)
case(
    "h2_window_overflow",
    "h2",
    "WINDOW_UPDATE that takes the connection window over 2^31-1 (FLOW_CONTROL_ERROR)",
    fast=True,
)(h2_raw(lambda sid: WindowUpdateFrame(0, window_increment=2**31 - 1).serialize()))


def _push_promise(stream_id: int) -> bytes:
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/pushed")]
    block = hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(*h) for h in request])
    frame = PushPromiseFrame(stream_id, promised_stream_id=2, data=block, flags=["END_HEADERS"])
    return frame.serialize()


case(
    "h2_push_promise",
    "h2",
    "PUSH_PROMISE although the client's SETTINGS_ENABLE_PUSH is 0 (PROTOCOL_ERROR)",
    fast=True,
)(h2_raw(_push_promise))

HPACK_ENTRY, HPACK_REFERENCES = ("x-bomb", "a" * 4000), 12_000


def _hpack_bomb(stream_id: int) -> bytes:
    fields = [(":status", "200"), *[HPACK_ENTRY] * HPACK_REFERENCES]
    block = hpack.Encoder().encode(fields)  # one 4 KB entry, then 1-byte references to it
    return HeadersFrame(stream_id, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()


case(
    "h2_hpack_bomb",
    "h2",
    f"a 15 KB header block: {HPACK_REFERENCES:,} references to a 4 KB table entry (48 MB)",
    fast=True,
)(h2_raw(_hpack_bomb, answer=False))
case(
    "h2_goaway_bogus",
    "h2",
    "GOAWAY with last-stream-id 2^31-1 (more than the client opened), then 200 and close",
    expect="either",
    fast=True,
)(h2_raw(lambda sid: GoAwayFrame(0, last_stream_id=2**31 - 1).serialize()))

CONTROL = {"h1": CASES["good"], "h2": CASES["good_h2"]}
