"""One persistent HTTP/1.1 connection: framing both ways, streaming with back-pressure,
reuse rules, 100-continue, transparent decompression, limits and server misbehaviour."""

from __future__ import annotations

import contextlib
import functools
import gc
import gzip
import json
import os
import tracemalloc
import weakref
import zlib
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

import asyncpool
import asyncpool._h1.connection
from asyncpool import Request, Transport
from asyncpool._asyncio_stream import SendsNowait
from asyncpool._compression import (
    ACCEPT_ENCODING,
    DECODED_CHUNK_SIZE,
    DECOMPRESSION_RATIO_FLOOR,
    DecodedStream,
)
from tests.servers import (
    Handler,
    ServerConnection,
    ServerRequest,
    TestServer,
    open_blaster,
    open_server,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def fetch(pool: Transport, method: str, url: str, **kwargs: object) -> asyncpool.Response:
    response = await pool.round_trip(Request(method, url, **kwargs))  # type: ignore[arg-type]
    await response.aread()
    return response


# -- response framing -------------------------------------------------------------------------


async def test_content_length_body(server: TestServer) -> None:
    async with Transport() as pool:
        for n in (100000, 5, 0, 100000):  # h11 gives a large read only its head
            response = await fetch(pool, "GET", server.url_for(f"/bytes?n={n}"))
            assert response.content == b"x" * n
            assert (response.status_code, response.reason_phrase) == (200, "OK")
            assert response.http_version == "HTTP/1.1"
            assert pool.stats().idle == 1
        assert (pool.stats().dials, pool.stats().reused) == (1, 3)


async def test_chunked_body_is_streamed_in_pieces(server: TestServer) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(
            Request("GET", server.url_for("/stream?chunks=200&size=1000"))
        )
        chunks = [chunk async for chunk in response.aiter_bytes()]
        assert b"".join(chunks) == b"x" * 200_000
        assert len(chunks) > 1
        assert response.is_closed
        assert pool.stats().idle == 1


async def test_http10_read_until_close(server: TestServer) -> None:
    async with Transport() as pool:
        response = await fetch(pool, "GET", server.url_for("/http10"))
        assert response.content == b"old school"
        assert response.http_version == "HTTP/1.0"
        assert pool.stats().total == 0


async def test_http11_read_until_close_is_never_reused() -> None:
    """A body that ends where the server closes leaves no connection to reuse: the next
    request dials, it does not find a dead one in the pool (and retry)."""

    async def until_close(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 200 OK\r\n\r\nno length")

    async with open_server(until_close) as server, Transport() as pool:
        for _ in range(2):
            assert (await fetch(pool, "GET", server.url)).content == b"no length"
            assert pool.stats().total == 0
        assert (pool.stats().dials, pool.stats().reused, pool.stats().retries) == (2, 0, 0)


async def test_connection_close_from_the_server_is_honoured(server: TestServer) -> None:
    async with Transport() as pool:
        assert (await fetch(pool, "GET", server.url_for("/close"))).content == b"bye"
        assert pool.stats().total == 0
        await fetch(pool, "GET", server.url)
    assert server.connections_accepted == 2


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_bodyless_responses_free_the_connection_before_round_trip_returns(
    server: TestServer, method: str, status: int
) -> None:
    async with Transport() as pool:
        path = "/" if method == "HEAD" else f"/status/{status}"
        response = await pool.round_trip(Request(method, server.url_for(path)))
        assert response.status_code == status
        assert pool.stats().idle == 1  # before anyone reads or closes the body
        assert await response.aread() == b""


async def test_reading_twice_returns_the_same_body(server: TestServer) -> None:
    async with Transport() as pool:
        response = await fetch(pool, "GET", server.url)
        assert await response.aread() == b"hello"
        with pytest.raises(RuntimeError, match="closed"):
            response.aiter_bytes()


async def test_content_before_aread_is_an_error(server: TestServer) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url))
        with pytest.raises(RuntimeError, match="aread"):
            _ = response.content
        await response.aclose()


# -- request framing --------------------------------------------------------------------------


async def test_bytes_body_is_sent_with_content_length(server: TestServer) -> None:
    async with Transport() as pool:
        response = await fetch(pool, "POST", server.url_for("/echo"), content=b"payload")
    assert response.content == b"payload"
    assert response.headers["x-request-content-length"] == "7"


@pytest.mark.parametrize(
    "fields",
    [
        [("Content-Length", "abc")],
        [("Content-Length", "+3")],
        [("Content-Length", "-1")],
        [("Content-Length", "3, 4")],
        [("Content-Length", "3"), ("Content-Length", "4")],
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
    ],
    ids=["not a number", "plus sign", "negative", "list", "twice", "gzip", "TE twice"],
)
async def test_body_framing_fields_h11_refuses_are_refused_before_anything_is_sent(
    server: TestServer, fields: list[tuple[str, str]]
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    async with Transport() as pool:
        with pytest.raises(asyncpool.LocalProtocolError):
            await pool.round_trip(
                Request("POST", server.url_for("/bad"), headers=fields, content=body())
            )
        assert (await fetch(pool, "POST", server.url_for("/echo"), content=b"ok")).content == b"ok"
    await server.wait_for_connections_closed()
    assert [request.target for request in server.requests] == ["/echo"]


async def test_async_iterable_body_is_sent_chunked(server: TestServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"one ", b"", b"two ", b"three"):
            yield part

    async with Transport() as pool:
        response = await fetch(pool, "PUT", server.url_for("/echo"), content=body())
    assert response.content == b"one two three"
    assert response.headers["x-request-transfer-encoding"] == "chunked"


async def test_an_idle_connection_holds_nothing_of_its_last_request(server: TestServer) -> None:
    """A request, and its body however large, is freed once its response has been read: not
    kept until the connection carries the next request."""

    class Body:  # an async iterable that can be weakly referenced
        def __aiter__(self) -> AsyncIterator[bytes]:
            return self._chunks()

        async def _chunks(self) -> AsyncIterator[bytes]:
            yield b"payload"

    body = Body()
    body_alive = weakref.ref(body)
    async with Transport() as pool:
        assert (await fetch(pool, "PUT", server.url_for("/echo"), content=body)).content == (
            b"payload"
        )
        del body
        gc.collect()
        assert pool.stats().idle == 1
        assert body_alive() is None


async def test_post_without_body_sends_content_length_zero(server: TestServer) -> None:
    async with Transport() as pool:
        await fetch(pool, "POST", server.url_for("/echo"))
        await fetch(pool, "GET", server.url_for("/echo"))
    assert server.requests[0].header("content-length") == "0"
    assert server.requests[1].header("content-length") is None


async def test_host_header_and_user_headers_are_sent(server: TestServer) -> None:
    async with Transport() as pool:
        response = await fetch(
            pool, "GET", server.url_for("/headers-echo"), headers=[("X-A", "1"), ("X-A", "2")]
        )
    sent = json.loads(response.content)
    assert ["host", f"127.0.0.1:{server.port}"] in sent
    assert [pair for pair in sent if pair[0] == "x-a"] == [["x-a", "1"], ["x-a", "2"]]


async def test_each_request_sends_its_own_headers(server: TestServer) -> None:
    # Wire headers of body-less requests are made once and shared, in a bounded cache.
    async with Transport() as pool:
        for i in [*range(300), 7, 299]:
            response = await fetch(
                pool, "GET", server.url_for("/headers-echo"), headers={"X-N": str(i)}
            )
            sent = json.loads(response.content)
            assert [pair for pair in sent if pair[0] == "x-n"] == [["x-n", str(i)]]


async def test_a_failing_body_iterator_fails_the_request_and_closes_the_connection(
    server: TestServer,
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"start"
        raise ValueError("the body source broke")

    async with Transport() as pool:
        with pytest.raises(ValueError, match="body source broke"):
            await pool.round_trip(Request("POST", server.url_for("/echo"), content=body()))
        assert pool.stats().total == 0


# -- early close and forgotten bodies -----------------------------------------------------------


async def test_early_aclose_closes_the_connection(server: TestServer) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=1000")))
        async for _ in response.aiter_bytes():
            break
        await response.aclose()
        assert pool.stats().total == 0
        await server.wait_for_connections_closed()
        await fetch(pool, "GET", server.url)
    assert server.connections_accepted == 2


async def test_async_with_response_closes_it(server: TestServer) -> None:
    async with Transport() as pool:
        async with await pool.round_trip(Request("GET", server.url_for("/stream?chunks=1000"))):
            pass
        assert pool.stats().total == 0


async def test_an_unclosed_response_warns_and_frees_its_connection_on_the_loop(
    server: TestServer,
) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=1000")))
        assert pool.stats().in_use == 1
        with pytest.warns(ResourceWarning, match="unclosed response"):
            del response
            gc.collect()
        # The collector runs inside any allocation, perhaps inside the pool's own code: it
        # does no pool work itself, it leaves that to the event loop.
        assert pool.stats().in_use == 1
        await wait_until(lambda: pool.stats().total == 0)


# -- 1xx and 100-continue ---------------------------------------------------------------------


def continue_trace(events: list[str]) -> asyncpool.ClientTrace:
    return asyncpool.ClientTrace(
        wait_100_continue=lambda: events.append("wait"),
        got_100_continue=lambda: events.append("100"),
        got_1xx_response=lambda code, headers: events.append(f"{code}:{headers['link']}"),
        wrote_request=lambda info: events.append(f"wrote:{info.err}"),
    )


async def test_100_continue_sends_the_body_after_the_100(server: TestServer) -> None:
    events: list[str] = []
    async with Transport(expect_continue_timeout=60) as pool:
        with anyio.fail_after(10):  # would take 60 s if the 100 were ignored
            response = await fetch(
                pool,
                "POST",
                server.url_for("/echo"),
                headers={"Expect": "100-continue"},
                content=b"big upload",
                trace=continue_trace(events),
            )
    assert response.content == b"big upload"
    assert events == ["wait", "100", "wrote:None"]


@pytest.mark.parametrize("timeout", [0.01, 0])
async def test_100_continue_without_a_100_sends_the_body_after_the_timeout(
    timeout: float,
) -> None:
    # 0 sends it at once (Go: "Zero means no timeout and causes the body to be sent
    # immediately, without waiting for the server to approve"), not never.
    async def no_continue(req: ServerRequest, conn: ServerConnection) -> None:
        body = await conn.read_body(send_continue=False)
        await conn.respond(200, [], body)

    async with (
        open_server(no_continue) as server,
        Transport(expect_continue_timeout=timeout) as pool,
    ):
        with anyio.fail_after(5):  # a hang guard: 0 once meant waiting for ever
            response = await fetch(
                pool,
                "POST",
                server.url,
                headers={"Expect": "100-continue"},
                content=b"sent anyway",
            )
        assert response.content == b"sent anyway"


async def test_a_final_response_instead_of_100_means_the_body_is_never_sent() -> None:
    async def refuse(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(417, [], b"no thanks")

    async with open_server(refuse) as server, Transport(expect_continue_timeout=60) as pool:
        with anyio.fail_after(10):
            response = await fetch(
                pool, "PUT", server.url, headers={"Expect": "100-continue"}, content=b"x" * 1000
            )
        assert (response.status_code, response.content) == (417, b"no thanks")
        assert pool.stats().total == 0  # the request was left half-sent: not reusable
        await server.wait_for_connections_closed()
        assert server.requests[0].body == b""


async def test_other_1xx_responses_are_reported_and_skipped() -> None:
    async def early_hints(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_informational(103, [("link", "</style.css>")])
        await conn.respond(200, [], b"final")

    events: list[str] = []
    async with open_server(early_hints) as server, Transport() as pool:
        response = await fetch(pool, "GET", server.url, trace=continue_trace(events))
    assert response.content == b"final"
    assert events == ["wrote:None", "103:</style.css>"]


# -- transparent decompression ----------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_bodies_are_decoded(server: TestServer, encoding: str) -> None:
    async with Transport() as pool:
        response = await fetch(pool, "GET", server.url_for(f"/{encoding}"))
    assert response.content == f"hello {encoding}".encode() * 100
    assert response.uncompressed
    assert "content-encoding" not in response.headers
    assert "content-length" not in response.headers
    assert server.requests[0].header("accept-encoding") == ACCEPT_ENCODING


async def test_raw_deflate_is_decoded() -> None:
    import zlib

    async def raw_deflate(req: ServerRequest, conn: ServerConnection) -> None:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = compressor.compress(b"raw" * 100) + compressor.flush()
        await conn.respond(200, [("content-encoding", "deflate")], body)

    async with open_server(raw_deflate) as server, Transport() as pool:
        assert (await fetch(pool, "GET", server.url)).content == b"raw" * 100


async def test_no_decoding_when_the_caller_asked_for_an_encoding(server: TestServer) -> None:
    async with Transport() as pool:
        response = await fetch(
            pool, "GET", server.url_for("/gzip"), headers={"Accept-Encoding": "gzip"}
        )
    assert gzip.decompress(response.content) == b"hello gzip" * 100
    assert not response.uncompressed
    assert response.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(
    ("method", "options", "headers"),
    [
        ("GET", {"disable_compression": True}, {}),
        ("HEAD", {}, {}),
        ("GET", {}, {"Range": "bytes=0-10"}),
    ],
)
async def test_compression_is_not_asked_for(
    server: TestServer, method: str, options: dict[str, bool], headers: dict[str, str]
) -> None:
    async with Transport(**options) as pool:  # type: ignore[arg-type]
        await fetch(pool, method, server.url_for("/gzip"), headers=headers)
    assert server.requests[0].header("accept-encoding") is None


async def test_a_corrupt_gzip_body_fails_clearly() -> None:
    async def corrupt(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [("content-encoding", "gzip")], b"this is not gzip")

    async with open_server(corrupt) as server, Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url))
        with pytest.raises(asyncpool.DecodingError, match=f"127.0.0.1:{server.port}"):
            await response.aread()


async def test_a_truncated_gzip_body_fails_clearly() -> None:
    async def truncated(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [("content-encoding", "gzip")], gzip.compress(b"x" * 1000)[:-8])

    async with open_server(truncated) as server, Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url))
        with pytest.raises(asyncpool.DecodingError, match="truncated"):
            await response.aread()


# -- limits, timeouts and a misbehaving server ------------------------------------------------


async def test_oversized_response_headers_are_rejected(server: TestServer) -> None:
    async with Transport(max_response_header_bytes=4096) as pool:
        with pytest.raises(asyncpool.ResponseHeaderTooLarge, match="max_response_header_bytes"):
            await pool.round_trip(Request("GET", server.url_for("/headers?size=10000")))
        assert pool.stats().total == 0
        response = await fetch(pool, "GET", server.url_for("/headers?size=1000"))
        assert len(response.headers["x-big"]) == 1000


async def test_response_header_timeout() -> None:
    release = anyio.Event()

    async def stall(req: ServerRequest, conn: ServerConnection) -> None:
        await release.wait()

    async with open_server(stall) as server, Transport(response_header_timeout=0.05) as pool:
        with pytest.raises(asyncpool.ResponseHeaderTimeout) as info:
            await pool.round_trip(Request("GET", server.url))
        assert info.value.phase == "read"
        assert f"127.0.0.1:{server.port}" in str(info.value)
        assert isinstance(info.value, TimeoutError)
        assert pool.stats().total == 0
        release.set()


async def test_response_header_timeout_counts_from_the_end_of_the_upload() -> None:
    """The clock starts when the request is written: an upload longer than the timeout,
    answered at once, is not timed out; a stall after it still is."""

    async def body() -> AsyncIterator[bytes]:
        yield b"first,"
        await anyio.sleep(0.6)  # an upload longer than the timeout (not synchronisation)
        yield b"second"

    release = anyio.Event()

    async def echo_or_stall(req: ServerRequest, conn: ServerConnection) -> None:
        content = await conn.read_body()
        if req.path == "/stall":
            await release.wait()
        await conn.respond(200, body=content)

    async with open_server(echo_or_stall) as server, Transport(response_header_timeout=0.3) as pool:
        response = await pool.round_trip(Request("POST", server.url, content=body()))
        assert await response.aread() == b"first,second"
        with pytest.raises(asyncpool.ResponseHeaderTimeout):
            await pool.round_trip(Request("POST", server.url_for("/stall"), content=body()))
        release.set()


async def test_read_timeout_fires_for_a_request_after_others_on_its_connection() -> None:
    """A connection's requests share one head timer, armed for an earlier request's deadline:
    when it fires for a later request still waiting, it is armed again and times that out."""
    release = anyio.Event()

    async def answer_then_stall(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path == "/stall":
            await release.wait()
        await conn.respond(200, body=b"ok")

    async with open_server(answer_then_stall) as server, Transport(read_timeout=0.5) as pool:
        for _ in range(3):
            assert (await fetch(pool, "GET", server.url)).content == b"ok"
        with anyio.fail_after(5), pytest.raises(asyncpool.ReadTimeout):  # a hang guard
            await pool.round_trip(Request("GET", server.url_for("/stall")))
        assert pool.stats().dials == 1  # all on one connection
        release.set()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_read_timeout_fires_for_the_request_handed_the_connection(method: str) -> None:
    """The connection goes back to the pool (and to a request waiting for it) before the caller
    of its last request has ended its wait: that late end must leave the next request's
    deadline alone. (Each round has two requests for one connection slot; trio runs a batch
    of woken tasks in either order, hence the rounds.)"""
    release = anyio.Event()

    async def answer_then_stall(req: ServerRequest, conn: ServerConnection) -> None:
        if req.index_on_connection > 0:
            await release.wait()
        await conn.respond(200, body=b"ok")

    async with (
        open_server(answer_then_stall) as server,
        Transport(read_timeout=0.1, max_conns_per_host=1) as pool,
    ):
        for _ in range(10):
            outcomes: list[object] = []

            async def one(outcomes: list[object]) -> None:
                content = b"x" if method == "POST" else None
                try:
                    response = await pool.round_trip(Request(method, server.url, content=content))
                    outcomes.append(await response.aread())
                except asyncpool.ReadTimeout:
                    outcomes.append("timeout")

            with anyio.fail_after(5):  # a hang guard
                async with anyio.create_task_group() as tg:
                    tg.start_soon(one, outcomes)
                    tg.start_soon(one, outcomes)
            assert sorted(outcomes, key=str) == [b"ok", "timeout"]
        release.set()


async def test_read_timeout_bounds_the_wait_for_a_head_and_for_a_stalled_body() -> None:
    release = anyio.Event()

    async def stall(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path == "/mid-body":
            await conn.send_head(200, [("content-length", "10")])
            await conn.send_data(b"12345")
        await release.wait()

    async with open_server(stall) as server, Transport(read_timeout=0.1) as pool:
        with pytest.raises(asyncpool.ReadTimeout, match=r"read_timeout=0\.1s") as info:
            await pool.round_trip(Request("GET", server.url))
        assert (info.value.phase, info.value.host) == ("read", f"127.0.0.1:{server.port}")
        response = await pool.round_trip(Request("GET", server.url_for("/mid-body")))
        with pytest.raises(asyncpool.ReadTimeout, match="stalled"):
            await response.aread()
        assert pool.stats().total == 0
        release.set()


async def test_read_timeout_does_not_count_a_slow_reader() -> None:
    """Only the server's silence counts: a caller that takes its time between chunks,
    while the response waits in buffers, is not timed out."""
    async with open_server() as server, Transport(read_timeout=0.2) as pool:
        response = await pool.round_trip(
            Request("GET", server.url_for("/stream?chunks=8&size=100000"))
        )
        await anyio.sleep(0.5)  # a slow consumer (not synchronisation): the reader is stopped
        assert len(await response.aread()) == 800000
        assert pool.stats().idle == 1


async def test_a_body_cut_short_is_a_read_error() -> None:
    async def short(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    async with open_server(short) as server, Transport() as pool:
        with pytest.raises(asyncpool.RemoteProtocolError, match="without sending complete"):
            # Whether the end arrives before or after the head is handed over is up to the
            # network: the error comes from whichever call is waiting then.
            response = await pool.round_trip(Request("GET", server.url))
            await response.aread()
        assert pool.stats().total == 0


async def test_garbage_instead_of_a_response_is_a_protocol_error() -> None:
    async def garbage(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_raw(b"SMTP ready\r\n\r\n")

    async with open_server(garbage) as server, Transport() as pool:
        with pytest.raises(asyncpool.RemoteProtocolError) as info:
            await pool.round_trip(Request("GET", server.url))
        assert info.value.phase == "protocol"
        assert pool.stats().total == 0


async def test_responses_with_bare_lf_line_ends_are_read_and_the_connection_reused() -> None:
    """h11 takes a bare LF for CRLF (RFC 9112 allows it) and llhttp does not: with either
    parser the responses are read whole and the connection is kept (the httptools backend hands
    the connection to h11 from the first such head)."""
    chunked = b"Transfer-Encoding: chunked\n\n" + b"1000\r\n" + b"c" * 4096 + b"\r\n0\r\n\r\n"
    responses = [
        (b"Content-Length: 5\n\nhello", b"hello"),
        (b"Content-Length: 200000\n\n" + b"x" * 200_000, b"x" * 200_000),
        (chunked, b"c" * 4096),
        (b"Content-Length: 2\r\n\r\nok", b"ok"),  # and CRLF again
    ]

    async def serve(stream: anyio.abc.ByteStream) -> None:
        received = b""
        async with stream:
            for rest_of_head, _ in responses:
                while b"\r\n\r\n" not in received:
                    received += await stream.receive()
                received = received.partition(b"\r\n\r\n")[2]
                await stream.send(b"HTTP/1.1 200 OK\n" + rest_of_head)
            with contextlib.suppress(anyio.EndOfStream):
                await stream.receive()  # until the client closes

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        async with Transport() as pool:
            for _, body in responses:
                response = await fetch(pool, "GET", f"http://127.0.0.1:{port}/")
                assert response.content == body
            assert (pool.stats().dials, pool.stats().reused) == (1, 3)
        tg.cancel_scope.cancel()


async def test_an_unsolicited_response_closes_the_idle_connection() -> None:
    async def chatty(req: ServerRequest, conn: ServerConnection) -> None:
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        await conn.send_raw(response)
        await conn.send_raw(response)  # nobody asked for this one

    async with open_server(chatty) as server, Transport() as pool:
        assert (await fetch(pool, "GET", server.url)).content == b"ok"
        await wait_until(lambda: pool.stats().total == 0)
        assert (await fetch(pool, "GET", server.url)).content == b"ok"
        assert pool.stats().server_closed_idle == 0


async def test_a_response_before_the_whole_body_was_sent_keeps_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reader waits a moment (Go's 50 ms) for the writer to finish: what is tested is that
    # the connection is kept when it does, not how long a loaded machine takes to get there.
    monkeypatch.setattr(asyncpool._h1.connection, "MAX_WRITE_WAIT_BEFORE_REUSE", 10.0)

    async def early(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [], b"early")  # before reading the body; the server drains it

    answered = anyio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await answered.wait()
        for _ in range(10):
            yield b"x" * 1000

    async with open_server(early) as server, Transport() as pool:
        response = await pool.round_trip(Request("POST", server.url, content=body()))
        answered.set()
        assert await response.aread() == b"early"
        await wait_until(lambda: pool.stats().idle == 1)  # once the writer is done
        assert (await fetch(pool, "GET", server.url)).content == b"early"
        assert pool.stats().dials == 1
    assert server.requests[0].body == b"first" + b"x" * 10000


async def test_a_streamed_body_cut_short_is_closed_at_once() -> None:
    async def never_reads(req: ServerRequest, conn: ServerConnection) -> None:
        await anyio.sleep_forever()

    finalized = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 65536
        finally:
            finalized.set()

    async with open_server(never_reads) as server, Transport() as pool:
        with anyio.move_on_after(0.1):
            await pool.round_trip(Request("POST", server.url, content=endless()))
        with anyio.fail_after(5):
            await finalized.wait()  # closed by the pool, not left to the garbage collector
        assert pool.stats().total == 0


async def test_a_response_exposes_its_connections_attributes(server: TestServer) -> None:
    async with Transport() as pool:
        response = await fetch(pool, "GET", server.url)
        address = response.extra(anyio.abc.SocketAttribute.remote_address)
        assert address == ("127.0.0.1", server.port)
    assert response.stream_id is None  # HTTP/1.1
    detached = asyncpool.Response(200, request=response.request, stream=response._stream)
    assert detached.extra(anyio.abc.SocketAttribute.remote_address, "none") == "none"


class _SendReturnsAfterTheResponse(anyio.abc.ByteStream):
    """A stream whose ``send`` returns only once the response has been received: the writer is
    still in its last send when the reader has the whole response (as a trio writer may still
    be in its last checkpoint)."""

    def __init__(self, inner: anyio.abc.ByteStream) -> None:
        self.inner = inner
        self.answered = anyio.Event()

    async def send(self, item: bytes) -> None:
        await self.inner.send(item)
        await self.answered.wait()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self.inner.receive(max_bytes)
        self.answered.set()
        return data

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_response_before_the_writer_returns_frees_the_connection_first() -> None:
    """All of the request was handed over, the response is complete, and the writer has yet to
    return from its send: the reader waits for it and frees the connection before the caller
    sees the response, so that the caller's next request reuses it."""

    async def respond(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [], await conn.read_body())

    async with open_server(respond) as server:

        async def dial(host: str, port: int) -> anyio.abc.ByteStream:
            return _SendReturnsAfterTheResponse(await anyio.connect_tcp(host, port))

        async with Transport(dial=dial) as pool:
            with anyio.fail_after(5):  # a hang guard
                for _ in range(3):
                    assert (await fetch(pool, "POST", server.url, content=b"x")).content == b"x"
            assert (pool.stats().dials, pool.stats().reused) == (1, 2)


class _SendNeverReturns(_SendReturnsAfterTheResponse):
    """A stream whose ``send`` hands its bytes over and then never returns: a writer stuck in
    its last send for good."""

    async def send(self, item: bytes) -> None:
        await self.inner.send(item)
        await anyio.sleep_forever()


async def test_a_caller_cancelled_while_the_reader_waits_for_the_writer_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The response is complete and the reader waits for the writer before it hands the
    response over: the caller cancelled then closes the connection, and nothing of it stays
    in use, idle or running."""
    monkeypatch.setattr(asyncpool._h1.connection, "MAX_WRITE_WAIT_BEFORE_REUSE", 60.0)

    async def respond(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [], await conn.read_body())

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return _SendNeverReturns(await anyio.connect_tcp(host, port))

    with anyio.fail_after(5):  # a hang guard: leaving the block ends every task
        async with open_server(respond) as server, Transport(dial=dial) as pool:
            with anyio.CancelScope() as scope:
                # Fired by the reader just before it waits for the writer.
                trace = asyncpool.ClientTrace(got_response_end=scope.cancel)
                await pool.round_trip(Request("POST", server.url, content=b"x", trace=trace))
            assert scope.cancelled_caught
            stats = pool.stats()
            assert (stats.total, stats.in_use, stats.idle) == (0, 0, 0)
            await server.wait_for_connections_closed(n_open=0)


async def test_a_response_while_a_bytes_body_is_still_being_written_frees_no_connection() -> None:
    """Answered before a bytes body was all written (the server stops reading it): the
    connection is not reused while the writer is stuck in the body, as with a streamed body
    (Go's wroteRequest), so the next request does not queue behind it on a dead end."""
    release = anyio.Event()

    async def early(req: ServerRequest, conn: ServerConnection) -> None:
        if req.connection_id == 0:
            await conn.respond(200, [], b"early")  # and reads none of the body
            await release.wait()
        else:
            await conn.respond(200, [], b"next")

    async with open_server(early) as server, Transport() as pool:
        big = b"x" * (32 << 20)  # more than the socket buffers hold
        with anyio.fail_after(5):
            assert (await fetch(pool, "POST", server.url, content=big)).content == b"early"
            assert (await fetch(pool, "GET", server.url)).content == b"next"
        assert pool.stats().dials == 2
        release.set()


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "streamed"])
async def test_an_answer_to_an_upload_the_server_stops_reading_is_the_result(
    streamed: bool,
) -> None:
    """A server answers 413 and closes while the body is still going out: the write fails
    (the server reset the connection), but the response came first and is what the caller
    gets, as Go's persistConn prefers a response to the write error."""

    async def too_large(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(413, [("connection", "close")], b"too large")  # reads no body

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * (1 << 20)

    async with open_server(too_large) as server, Transport() as pool:
        content = chunks() if streamed else b"x" * (64 << 20)  # more than socket buffers hold
        response = await fetch(pool, "POST", server.url, content=content)
        assert (response.status_code, response.content) == (413, b"too large")
        await wait_until(lambda: pool.stats().total == 0)
        assert (await fetch(pool, "GET", server.url)).status_code == 413


# -- a hostile server: memory and work stay bounded -------------------------------------------

MiB = 1 << 20
MEMORY_BOUND = 10 * MiB  # traced peak around one hostile response; what it sends is far larger
HEADER_LIMIT = 65536


def hostile(head: bytes, piece: bytes, total: int = 16 * MiB) -> Handler:
    """On /hostile: ``head``, then ``piece`` again and again up to ``total`` bytes (or until the
    client hangs up), then close. Anything else gets a plain 200 "ok"."""

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path != "/hostile":
            await conn.respond(200, [], b"ok")
            return
        await conn.send_raw(head)
        for _ in range(total // len(piece)):
            await conn.send_raw(piece)

    return handler


@contextlib.contextmanager
def traced_peak() -> Iterator[list[int]]:
    """The peak of traced memory in the block, appended to the list on leaving it."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


async def assert_the_pool_recovers(
    pool: Transport, server: TestServer, *, closed: bool = True
) -> None:
    """Nothing is left in use: the hostile connection is closed (or idle, when not ``closed``:
    its body had arrived whole); and the next request on the pool succeeds."""
    assert pool.stats().in_use == 0
    if closed:
        assert pool.stats().total == 0
    assert (await fetch(pool, "GET", server.url)).content == b"ok"
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.dialing, stats.waiting) == (0, 1, 0, 0)


CHUNKED_HELLO = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"


@pytest.mark.parametrize(
    ("trailer_start", "piece"),
    [(b"0\r\nX-Trailer: ", b"a" * 65536), (b"0\r\n", b"X-Trailer: 1\r\n" * 4096)],
    ids=["one endless value", "endless small fields"],
)
async def test_an_endless_trailer_section_is_cut_at_the_header_limit(
    trailer_start: bytes, piece: bytes
) -> None:
    """Trailers are bounded by max_response_header_bytes with either parser (llhttp kept every
    field, and joined one endless value again on every read: 16 MiB were held, 1 GB copied)."""
    handler = hostile(CHUNKED_HELLO + trailer_start, piece)
    async with (
        open_server(handler) as server,
        Transport(max_response_header_bytes=HEADER_LIMIT) as pool,
    ):
        with traced_peak() as peak, pytest.raises(asyncpool.ResponseHeaderTooLarge) as info:
            # The head may be handed over before the limit is hit, or not (the network
            # decides): the error comes from whichever call is waiting.
            response = await pool.round_trip(Request("GET", server.url_for("/hostile")))
            await response.aread()
        assert f"max_response_header_bytes={HEADER_LIMIT}" in str(info.value)
        assert info.value.host == f"127.0.0.1:{server.port}"
        assert peak[0] < MEMORY_BOUND
        await assert_the_pool_recovers(pool, server)


async def test_endless_1xx_heads_count_against_the_header_limit() -> None:
    """1xx heads for ever: they share max_response_header_bytes with the final head (as Go),
    so the request fails after about that many bytes of them instead of waiting for ever
    (h11: 16 MiB of heads read, every one reported; httptools: every byte kept, and joined and
    scanned again on every read)."""
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
    handler = hostile(b"", early_hints * 1024)
    hints: list[int] = []
    trace = asyncpool.ClientTrace(got_1xx_response=lambda code, headers: hints.append(code))
    async with (
        open_server(handler) as server,
        Transport(max_response_header_bytes=HEADER_LIMIT) as pool,
    ):
        with traced_peak() as peak, pytest.raises(asyncpool.ResponseHeaderTooLarge) as info:
            await pool.round_trip(Request("GET", server.url_for("/hostile"), trace=trace))
        assert "interim (1xx) responses" in str(info.value)
        assert f"max_response_header_bytes={HEADER_LIMIT}" in str(info.value)
        assert info.value.host == f"127.0.0.1:{server.port}"
        assert len(hints) == HEADER_LIMIT // len(early_hints)
        assert peak[0] < MEMORY_BOUND
        await assert_the_pool_recovers(pool, server)


@functools.cache
def gzip_bomb(size: int = 256 * MiB) -> bytes:
    """``size`` zero bytes gzipped (about 1/1000 of it)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MiB)
    return b"".join(compressor.compress(block) for _ in range(size // MiB)) + compressor.flush()


def serve_gzip(body: bytes) -> Handler:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path != "/hostile":
            await conn.respond(200, [], b"ok")
            return
        await conn.respond(200, [("content-encoding", "gzip")], body)

    return handler


async def test_a_gzip_bomb_streams_in_bounded_chunks() -> None:
    """Each read of a decoded body gives at most DECODED_CHUNK_SIZE bytes: a streaming caller
    holds that much whatever one compressed read inflates to (it got 130 MB at once)."""
    async with open_server(serve_gzip(gzip_bomb())) as server, Transport() as pool:
        with traced_peak() as peak:
            response = await pool.round_trip(Request("GET", server.url_for("/hostile")))
            total = largest = 0
            async for chunk in response.aiter_bytes():
                total, largest = total + len(chunk), max(largest, len(chunk))
                assert chunk.count(0) == len(chunk)
        assert (total, largest) == (256 * MiB, DECODED_CHUNK_SIZE)
        assert peak[0] < MEMORY_BOUND
        assert pool.stats().idle == 1  # read to its end: the connection was kept


async def test_many_gzip_members_decode_in_linear_work() -> None:
    """2,500 gzip members of 16 KiB of zeros (127 KB on the wire): each member's output was
    appended to a growing bytes, and one read stalled the loop for tens of seconds. Now a read
    gives at most DECODED_CHUNK_SIZE bytes and keeps the rest of the members for the next."""
    member = gzip.compress(bytes(16384))
    async with open_server(serve_gzip(member * 2500)) as server, Transport() as pool:
        with traced_peak() as peak:
            response = await pool.round_trip(Request("GET", server.url_for("/hostile")))
            sizes = [len(chunk) async for chunk in response.aiter_bytes()]
        assert sum(sizes) == 2500 * 16384
        assert max(sizes) == DECODED_CHUNK_SIZE
        assert peak[0] < MEMORY_BOUND
        assert pool.stats().idle == 1  # read to its end: the connection was kept


async def test_aread_of_a_gzip_bomb_stops_at_the_decompression_ratio() -> None:
    async with open_server(serve_gzip(gzip_bomb())) as server, Transport() as pool:
        with traced_peak() as peak:
            response = await pool.round_trip(Request("GET", server.url_for("/hostile")))
            with pytest.raises(asyncpool.DecompressionBomb) as info:
                await response.aread()
        assert "max_decompression_ratio=100" in str(info.value)
        assert info.value.host == f"127.0.0.1:{server.port}"
        assert isinstance(info.value, asyncpool.ResponseTooLarge)
        assert isinstance(info.value, asyncpool.DecodingError)
        # 100 times a 124 KiB read and a chunk: the body held at most.
        assert peak[0] < 2 * DECOMPRESSION_RATIO_FLOOR
        assert response.is_closed
        # The compressed body (~260 KB) fits in the reader's run-ahead: it may have read it
        # all, and freed the connection, before the caller's first decode gave up (on trio the
        # reader reads what the socket holds without a trip through the scheduler).
        await assert_the_pool_recovers(pool, server, closed=False)


async def test_the_decompression_ratio_limit_can_be_lifted() -> None:
    body = bytes(12 * MiB)  # over the floor, 1,000 times its gzip
    async with (
        open_server(serve_gzip(gzip.compress(body))) as server,
        Transport(max_decompression_ratio=None) as pool,
    ):
        response = await fetch(pool, "GET", server.url_for("/hostile"))
        assert response.content == body


@pytest.mark.parametrize("compressed", [False, True])
async def test_max_body_bytes_caps_aread(compressed: bool) -> None:
    """An endless body, plain or gzipped: aread stops at max_body_bytes; streaming is not
    capped (it holds a chunk at a time)."""
    if compressed:
        handler = serve_gzip(gzip_bomb(64 * MiB))
    else:
        handler = hostile(b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 65536, total=64 * MiB)
    async with open_server(handler) as server, Transport(max_body_bytes=MiB) as pool:
        with traced_peak() as peak:
            response = await pool.round_trip(Request("GET", server.url_for("/hostile")))
            with pytest.raises(asyncpool.ResponseTooLarge) as info:
                await response.aread()
        assert type(info.value) is asyncpool.ResponseTooLarge
        assert f"max_body_bytes={MiB}" in str(info.value)
        assert (info.value.host, info.value.phase) == (f"127.0.0.1:{server.port}", "read")
        assert peak[0] < MEMORY_BOUND
        await assert_the_pool_recovers(pool, server, closed=not compressed)
        response = await pool.round_trip(Request("GET", server.url_for("/hostile")))
        async with response:
            async for _ in response.aiter_bytes():  # streaming is not capped
                break


class ChunksStream:
    """A ResponseStream over given compressed chunks."""

    is_consumed = False

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def read_chunk(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def aclose(self) -> None:
        self._chunks = []

    def abandon(self) -> None:
        self._chunks = []


async def decode_all(encoding: str, chunks: list[bytes]) -> list[bytes]:
    stream = DecodedStream(ChunksStream(chunks), encoding, "h:1")
    out = []
    while chunk := await stream.read_chunk():
        out.append(chunk)
    return out


async def test_decoding_is_the_same_wherever_the_reads_are_cut() -> None:
    """Members, zero padding after them and the deflate fallback, cut into reads anywhere
    (raw deflate is told from zlib's container on the first read: it needs two bytes)."""
    zlib_deflate = zlib.compress(b"deflate" * 30000)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(b"raw" * 30000) + raw.flush()
    members = gzip.compress(b"a" * 100000) + gzip.compress(b"") + gzip.compress(b"b" * 70000)
    cases = [
        ("gzip", members + bytes(300), b"a" * 100000 + b"b" * 70000),
        ("deflate", zlib_deflate + b"ignored", b"deflate" * 30000),
        ("deflate", raw_deflate, b"raw" * 30000),
    ]
    for encoding, wire, expected in cases:
        for size in (1 if wire is not raw_deflate else 2, 7, 4096, 65536, len(wire)):
            reads = [wire[i : i + size] for i in range(0, len(wire), size)]
            if size == 1:
                reads = [*reads[:5000], b"".join(reads[5000:])]
            chunks = await decode_all(encoding, reads)
            assert b"".join(chunks) == expected
            assert max(map(len, chunks)) <= DECODED_CHUNK_SIZE
    with pytest.raises(asyncpool.DecodingError, match="truncated"):
        await decode_all("gzip", [members[:-3]])
    with pytest.raises(asyncpool.DecodingError):
        await decode_all("gzip", [gzip.compress(b"x") + b"garbage"])


# -- requests without a body are written in the caller's turn ------------------------------------


def _writers_and_readers() -> tuple[int, int]:
    from tests.test_lifetime import pool_tasks

    names = pool_tasks()
    writers = sum(name.startswith("asyncpool writer") for name in names)
    return writers, sum(name.startswith("asyncpool reader") for name in names)


async def test_the_writer_task_starts_with_the_first_request_that_has_a_body(
    server: TestServer, anyio_backend: str
) -> None:
    """On asyncpool's TCP streams (asyncio's and trio's) a request without a body is written by
    its caller, so a connection that carries only such requests has no writer task."""
    async with Transport() as pool:
        for _ in range(3):
            assert (await fetch(pool, "GET", server.url_for("/bytes?n=5"))).content == b"xxxxx"
        assert _writers_and_readers() == (0, 1)
        response = await fetch(pool, "POST", server.url_for("/echo"), content=b"payload")
        assert response.content == b"payload"
        assert _writers_and_readers() == (1, 1)
        assert (await fetch(pool, "GET", server.url_for("/bytes?n=2"))).content == b"xx"
        assert pool.stats().dials == 1
    assert _writers_and_readers() == (0, 0)


class _TakesPartOfEachHead(SendsNowait, anyio.abc.ByteStream):
    """A stream that sends without waiting (as asyncpool's own) but takes only the first
    ``taken`` bytes of each head so (as a full socket buffer would): the rest is the writer's,
    sent after them."""

    def __init__(self, inner: anyio.abc.ByteStream, taken: int) -> None:
        self.inner = inner
        self.taken = taken
        self.held = b""  # taken, not sent yet: they go first with the next send

    def send_nowait(self, item: bytes) -> bytes:
        self.held += item[: self.taken]
        return item[self.taken :]

    async def send(self, item: bytes) -> None:
        data, self.held = self.held + item, b""
        await self.inner.send(data)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.inner.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("taken", [0, 10])
async def test_what_the_socket_did_not_take_of_a_callers_head_the_writer_sends(
    server: TestServer, taken: int
) -> None:
    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return _TakesPartOfEachHead(await anyio.connect_tcp(host, port), taken)

    async with Transport(dial=dial) as pool:
        with anyio.fail_after(5):  # a hang guard
            for n in (5, 7, 9):
                response = await fetch(pool, "GET", server.url_for(f"/bytes?n={n}"))
                assert response.content == b"x" * n
        assert _writers_and_readers() == (1, 1)
        assert (pool.stats().dials, pool.stats().reused) == (1, 2)


class _TakesNothingAndNeverSends(_TakesPartOfEachHead):
    """The socket takes none of a caller's head, and the writer's send of it never returns."""

    async def send(self, item: bytes) -> None:
        await anyio.sleep_forever()


async def test_a_caller_cancelled_while_the_writer_sends_the_rest_leaves_nothing(
    server: TestServer,
) -> None:
    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        return _TakesNothingAndNeverSends(await anyio.connect_tcp(host, port), 0)

    async with Transport(dial=dial) as pool:
        with anyio.move_on_after(0.2) as scope:
            await pool.round_trip(Request("GET", server.url))
        assert scope.cancelled_caught
        assert pool.stats().total == 0  # closed, its host slot free
        await wait_until(lambda: _writers_and_readers() == (0, 0))


class _SendsPartOfEachHead(_TakesPartOfEachHead):
    """A stream that sends the first ``taken`` bytes of each head at once (as a socket whose
    buffer is nearly full) and then stalls: the server has stopped reading. The rest is the
    writer's, whose send never returns."""

    def send_nowait(self, item: bytes) -> bytes:
        fileno = self.inner.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        return item[os.write(fileno, item[: self.taken]) :]

    async def send(self, item: bytes) -> None:
        await anyio.sleep_forever()


class _HoldsTheRestOfEachHead(_SendsPartOfEachHead):
    """The same, as asyncio's transport does it: it takes the whole head, sends what the socket
    takes and holds the rest (``unflushed``), which never goes out."""

    def send_nowait(self, item: bytes) -> bytes:
        self.held += super().send_nowait(item)
        return b""

    def unflushed(self) -> bool:
        return bool(self.held)


@contextlib.asynccontextmanager
async def _answers_the_first_request_early() -> AsyncIterator[str]:
    """A server that answers its first connection's request once it has the request line, and
    then reads no more; later connections are answered once the head is in. Yields its URL."""
    connections = 0

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal connections
        connections += 1
        early = connections == 1
        received = b""
        async with stream:
            while (b"\r\n" if early else b"\r\n\r\n") not in received:
                received += await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await anyio.sleep_forever()  # reading nothing more

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}/"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("first_stream", [_SendsPartOfEachHead, _HoldsTheRestOfEachHead])
async def test_a_connection_answered_before_its_request_was_all_out_is_not_reused(
    first_stream: type[_SendsPartOfEachHead],
) -> None:
    """A server may answer before it has read the whole request (an early answer to a head it
    stopped reading). The connection goes back to the pool only once the request is out: as
    Go's, it is closed instead, and the next request does not queue behind the rest of the
    first (on trio that request hung, its head timeout never armed)."""
    dials = 0

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        nonlocal dials
        dials += 1
        stream = await anyio.connect_tcp(host, port)
        return first_stream(stream, len(b"GET / HTTP/1.1\r\n")) if dials == 1 else stream

    async with _answers_the_first_request_early() as url, Transport(dial=dial) as pool:
        with anyio.fail_after(5):  # a hang guard
            assert (await fetch(pool, "GET", url)).content == b"ok"
            assert pool.stats().total == 0  # closed, not given back
            assert (await fetch(pool, "GET", url)).content == b"ok"
        assert pool.stats().dials == 2


class _AnswerHeldUntil(anyio.abc.ByteStream):
    """A stream (not ``SendsNowait``: a writer task writes each request) whose first receive
    returns, once ``ready`` is set, the answer that the server sent before the request went
    out."""

    def __init__(self, inner: anyio.abc.ByteStream, answer: bytes, ready: anyio.Event) -> None:
        self.inner, self.answer, self.ready = inner, answer, ready

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self.answer:
            await self.ready.wait()
            data, self.answer = self.answer, b""
            return data
        return await self.inner.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self.inner.send(item)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_answer_read_before_the_writer_ran_is_the_response() -> None:
    """A server may answer before the request went out (it answers at once). The reader can
    parse that answer before the writer task's first turn: the caller has made the head
    already, so the protocol knows the request (h11's state machine failed with an
    AttributeError otherwise). Here the reader gets the answer the moment the caller took its
    connection (``got_conn``), ahead of the writer (always on asyncio)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    got_conn = anyio.Event()

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        stream = await anyio.connect_tcp(host, port)
        received = b""
        while len(received) < len(answer):
            received += await stream.receive()
        return _AnswerHeldUntil(stream, received, got_conn)

    trace = asyncpool.ClientTrace(got_conn=lambda info: got_conn.set())
    async with open_blaster(answer) as (port, received), Transport(dial=dial) as pool:
        with anyio.fail_after(5):  # a hang guard
            response = await pool.round_trip(
                Request("GET", f"http://127.0.0.1:{port}/", trace=trace)
            )
            assert (response.status_code, await response.aread()) == (200, b"ok")
            await wait_until(lambda: b"".join(received).startswith(b"GET / HTTP/1.1\r\n"))


async def test_a_connection_closed_with_a_request_queued_for_its_writer_sends_nothing(
    server: TestServer,
) -> None:
    """The pool closes (as on a cancelled caller or an error) between a request's queueing and
    its writer's turn: the writer, woken with the request still queued, must not send it. (On
    asyncio the order below is fixed: the closing task runs before the writer it woke.)"""
    async with Transport() as pool:
        await fetch(pool, "POST", server.url, content=b"warm")  # the writer task, parked
        failed: list[BaseException] = []

        async def transfer() -> None:
            try:
                await pool.round_trip(Request("POST", server.url, content=b"transfer $100"))
            except asyncpool.HTTPError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(transfer)
            await anyio.lowlevel.checkpoint()  # transfer queues its request and waits
            await pool.aclose()
        assert len(failed) == 1
        await server.wait_for_connections_closed()
    assert [request.method for request in server.requests] == ["POST"]  # the first one only
    await wait_until(lambda: _writers_and_readers() == (0, 0))


async def test_a_raising_wrote_request_hook_fails_its_request_and_closes_the_connection(
    server: TestServer,
) -> None:
    def boom(info: object) -> None:
        raise RuntimeError("wrote_request hook failed")

    trace = asyncpool.ClientTrace(wrote_request=boom)
    async with Transport() as pool:
        with anyio.fail_after(5), pytest.raises(RuntimeError, match="wrote_request hook failed"):
            await pool.round_trip(Request("GET", server.url_for("/bytes?n=5"), trace=trace))
        await wait_until(lambda: pool.stats().total == 0)
        assert (await fetch(pool, "GET", server.url_for("/bytes?n=5"))).content == b"xxxxx"
        assert pool.stats().dials == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncio's stream
async def test_a_request_finds_more_stale_connections_than_max_retries_and_succeeds() -> None:
    """After a server reload every idle connection can be dead, and a caller may meet them all
    in one turn of the loop (nothing written on any): each is used up, none counts as a retry
    of the request, as in Go, and the request goes out on a new connection."""
    stale = asyncpool._transport.MAX_RETRIES + 3
    arrived = 0
    all_in = anyio.Event()

    async def answer_once_all_are_in(req: ServerRequest, conn: ServerConnection) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == stale:
            all_in.set()
        await all_in.wait()  # so that every request holds a connection of its own
        await conn.respond(200, body=b"ok")

    async with (
        open_server(answer_once_all_are_in) as server,
        Transport(max_idle_conns_per_host=stale) as pool,
    ):
        streams = []

        async def one() -> None:
            response = await pool.round_trip(Request("GET", server.url))
            streams.append(response._network_stream)
            await response.aread()

        async with anyio.create_task_group() as tg:
            for _ in range(stale):
                tg.start_soon(one)
        assert pool.stats().idle == stale
        for stream in streams:
            stream._transport.close()  # the readers have not run since
        with anyio.fail_after(5):
            response = await fetch(pool, "GET", server.url)
        assert response.content == b"ok"
        assert pool.stats().dials == stale + 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncio's stream
async def test_a_request_on_a_connection_the_loop_saw_close_is_retried_as_never_sent(
    server: TestServer,
) -> None:
    """The writer, here the caller itself, can be the first to find a reused connection
    closed: nothing was sent, so the request goes out again on a new connection."""
    async with Transport() as pool:
        response = await fetch(pool, "GET", server.url_for("/bytes?n=5"))
        stream = response._network_stream
        assert type(stream) is asyncpool._h1.connection.AsyncioSocketStream
        stream._transport.close()  # closing: the reader has not run since
        with anyio.fail_after(5):
            response = await fetch(pool, "GET", server.url_for("/bytes?n=3"))
        assert response.content == b"xxx"
        assert pool.stats().dials == 2
