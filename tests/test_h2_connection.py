"""HTTP/2: negotiation, one connection for many streams, flow control both ways, stream
limits, and the failures real servers produce (GOAWAY, RST_STREAM, silence)."""

from __future__ import annotations

import hashlib
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import h2.connection
import h2.errors
import pytest
from hyperframe.frame import DataFrame

import asyncpool
import asyncpool._dial
import asyncpool._transport
from asyncpool import Request, Transport
from asyncpool._h2.connection import HTTP2Connection
from asyncpool._h2.protocol import MAX_IDLE_FRAMES, MAX_UNSENT_REPLIES
from asyncpool._pool import Pool
from tests.h2server import (
    H2Request,
    H2Stream,
    H2TestServer,
    default_h2_handler,
    flood_frame,
    make_h2_server_context,
    open_h2_server,
)
from tests.servers import TestServer, TLSFixture, wait_until

pytestmark = pytest.mark.anyio

H2C = {"http2_prior_knowledge": True}


@pytest.fixture
async def h2c(anyio_backend: str) -> AsyncIterator[H2TestServer]:
    async with open_h2_server() as server:
        yield server


async def get(pool: Transport, url: str, **kwargs: Any) -> asyncpool.Response:
    response = await pool.round_trip(Request("GET", url, **kwargs))
    await response.aread()
    return response


# -- negotiation ------------------------------------------------------------------------------


async def test_alpn_h2_over_tls(tls: TLSFixture) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    server_context = make_h2_server_context(tls)
    async with (
        open_h2_server(ssl_context=server_context) as server,
        Transport(tls_config=tls.client_context) as pool,
    ):
        response = await get(pool, server.url, trace=trace)
        assert (response.http_version, response.content) == ("HTTP/2", b"hello")
        await get(pool, server.url, trace=trace)
    assert server.connections[0].alpn_protocol == "h2"
    assert [(i.protocol, i.reused) for i in infos] == [("HTTP/2", False), ("HTTP/2", True)]


async def test_max_conns_closes_an_idle_http2_connection_for_another_host(
    tls: TLSFixture, server: TestServer
) -> None:
    # httpx's max_connections with http2=True: the other host's request waited for the idle
    # HTTP/2 connection's timeout (for ever without one).
    async with (
        open_h2_server(ssl_context=make_h2_server_context(tls)) as h2_server,
        Transport(tls_config=tls.client_context, max_conns=1, idle_conn_timeout=None) as pool,
    ):
        assert (await get(pool, h2_server.url)).http_version == "HTTP/2"
        with anyio.fail_after(5):
            assert (await get(pool, server.url)).content == b"hello"
        await h2_server.wait_until(lambda s: s.connections[0].closed.is_set())
        assert pool.stats().evictions == 1


async def test_alpn_http11_when_the_server_picks_it(
    tls_server: TestServer, tls: TLSFixture
) -> None:
    async with Transport(tls_config=tls.client_context) as pool:
        assert (await get(pool, tls_server.url)).http_version == "HTTP/1.1"
        assert (await get(pool, tls_server.url)).http_version == "HTTP/1.1"
        assert pool.stats().dials == 1


async def test_h2c_with_prior_knowledge(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool:
        response = await get(pool, h2c.url_for("/echo"))
        assert (response.http_version, response.stream_id) == ("HTTP/2", 1)
        response = await pool.round_trip(Request("POST", h2c.url_for("/echo"), content=b"ping"))
        assert await response.aread() == b"ping"
        assert response.headers["x-body-length"] == "4"
    assert h2c.requests[0].authority == f"127.0.0.1:{h2c.port}"
    assert h2c.requests[0].scheme == "http"


# -- many streams, one connection -------------------------------------------------------------


async def test_concurrent_requests_share_one_connection(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool, anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(get, pool, h2c.url_for("/wait"))
        await h2c.wait_until(lambda s: s.active_streams == 50)
        stats = pool.stats()
        assert stats.hosts[h2c.url].streams == 50
        assert (stats.dials, stats.total) == (1, 1)
        h2c.release.set()
    assert h2c.connections_accepted == 1


async def test_a_connection_that_is_full_makes_the_pool_open_another() -> None:
    async with open_h2_server(max_concurrent_streams=2) as server, Transport(**H2C) as pool:
        async with anyio.create_task_group() as tg:
            for _ in range(7):
                tg.start_soon(get, pool, server.url_for("/wait"))
            await server.wait_until(lambda s: s.active_streams == 7)
            server.release.set()
        assert server.connections_accepted == 4
        assert server.max_active_streams_seen == 2
        assert not server.refused_requests


async def test_strict_max_concurrent_streams_waits_for_a_free_stream() -> None:
    async with (
        open_h2_server(max_concurrent_streams=2) as server,
        Transport(strict_max_concurrent_streams=True, **H2C) as pool,
    ):
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(get, pool, server.url_for("/wait"))
            await server.wait_until(lambda s: s.active_streams == 2)
            await wait_until(lambda: pool.stats().waiting == 4)
            server.release.set()
        assert server.connections_accepted == 1
        assert len(server.requests) == 6


async def test_max_conns_per_host_bounds_http2_connections_too() -> None:
    async with (
        open_h2_server(max_concurrent_streams=1) as server,
        Transport(max_conns_per_host=2, **H2C) as pool,
        anyio.create_task_group() as tg,
    ):
        for _ in range(5):
            tg.start_soon(get, pool, server.url_for("/wait"))
        await server.wait_until(lambda s: s.active_streams == 2)
        await wait_until(lambda: pool.stats().waiting == 3)
        assert pool.stats().total == 2
        server.release.set()


# -- flow control -----------------------------------------------------------------------------


async def test_a_large_download_is_streamed_intact(h2c: H2TestServer) -> None:
    size = 16 << 20
    async with Transport(**H2C) as pool:
        response = await pool.round_trip(Request("GET", h2c.url_for(f"/bytes?n={size}")))
        received = 0
        async for chunk in response.aiter_bytes():
            assert chunk == b"x" * len(chunk)
            received += len(chunk)
        assert received == size
        assert pool.stats().hosts[h2c.url].streams == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "async-iterable"])
async def test_an_upload_through_a_tiny_window_arrives_intact(streamed: bool) -> None:
    payload = bytes(range(256)) * 80  # 20 KiB, 10 bytes at a time through the window

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 1500):
            yield payload[i : i + 1500]

    async with open_h2_server(initial_window_size=10) as server, Transport(**H2C) as pool:
        content: Any = chunks() if streamed else payload
        response = await pool.round_trip(Request("PUT", server.url_for("/echo"), content=content))
        assert hashlib.sha256(await response.aread()).digest() == hashlib.sha256(payload).digest()


async def test_a_slow_reader_does_not_hold_up_other_streams(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool:
        big = await pool.round_trip(Request("GET", h2c.url_for(f"/bytes?n={32 << 20}")))
        # Nobody reads ``big``: flow control stops it, while other streams go on.
        for _ in range(20):
            assert (await get(pool, h2c.url)).content == b"hello"
        await big.aclose()
        assert pool.stats().hosts[h2c.url].streams == 0
        assert (await get(pool, h2c.url)).content == b"hello"
    assert h2c.connections_accepted == 1


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error_code", [h2.errors.ErrorCodes.NO_ERROR, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
)
async def test_goaway_mid_load_fails_no_request(error_code: h2.errors.ErrorCodes) -> None:
    # Whatever its error code, a GOAWAY lets the streams it accepted finish (as Go's transport
    # does); the others were never processed and are retried elsewhere.
    async with open_h2_server() as server, Transport(**H2C) as pool:
        results: list[bytes] = []

        async def one() -> None:
            results.append((await get(pool, server.url_for("/wait"))).content)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
            await server.wait_until(lambda s: s.active_streams == 20)
            # streams 1..19 (ten of them) may finish
            await server.goaway(last_stream_id=19, error_code=error_code)
            await wait_until(lambda: pool.stats().retries == 10)
            server.release.set()
        assert results == [b"released"] * 20
        assert server.connections_accepted == 2
        assert pool.stats().dials == 2


async def test_a_stream_slot_lost_to_goaway_before_its_stream_opened_is_retried() -> None:
    """A request waiting for a stream is handed the slot a response frees, and the GOAWAY that
    came in the same read (nginx's keepalive_requests) ends the connection before the stream
    opens: its streamed body was never read, so it is sent on the next connection (Go's
    errClientConnUnusable), not failed as a body that cannot be replayed."""

    async def handler(req: H2Request, stream: H2Stream) -> None:
        body = await stream.read_body()
        if req.path == "/first":
            await stream.server.release.wait()
            conn = stream.connection  # the response and GOAWAY in one write
            conn.h2.send_headers(stream.stream_id, [(":status", "200"), ("content-length", "0")])
            conn.h2.end_stream(stream.stream_id)
            stream._end_local()
            conn.goaway(stream.stream_id)
            return
        await stream.respond(200, [], body)

    async def streamed() -> AsyncIterator[bytes]:
        yield b"never read twice"

    async with (
        open_h2_server(handler, max_concurrent_streams=1) as server,
        Transport(max_conns_per_host=1, **H2C) as pool,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, pool, server.url_for("/first"))
            await server.wait_until(lambda s: s.active_streams == 1)
            second = Request("POST", server.url_for("/second"), content=streamed())
            results: list[bytes] = []

            async def post() -> None:
                response = await pool.round_trip(second)
                results.append(await response.aread())

            tg.start_soon(post)
            await wait_until(lambda: pool.stats().waiting == 1)
            server.release.set()
        assert results == [b"never read twice"]
        assert server.connections_accepted == 2


async def test_rst_stream_fails_that_stream_only(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool, anyio.create_task_group() as tg:
        tg.start_soon(get, pool, h2c.url_for("/wait"))
        await h2c.wait_until(lambda s: s.active_streams == 1)
        with pytest.raises(asyncpool.StreamReset, match="INTERNAL_ERROR") as info:
            await get(pool, h2c.url_for("/reset"))
        assert info.value.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert f"127.0.0.1:{h2c.port}" in str(info.value)
        h2c.release.set()
    assert h2c.connections_accepted == 1


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ([("content-type", "text/plain")], "no valid :status"),
        ([(":status", "2000")], "no valid :status"),
        ([(":status", "200"), (":status", "200")], "misplaced, repeated"),
        ([(":status", "200"), (":path", "/")], "misplaced, repeated"),
        ([("x-a", "1"), (":status", "200")], "misplaced, repeated"),
        ([(":status", "200"), ("X-Upper", "1")], "invalid header field"),
        ([(":status", "200"), ("x-split", "a\r\nx-injected: 1")], "invalid header field"),
    ],
)
async def test_a_malformed_response_head_fails_that_stream_only(
    fields: list[tuple[str, str]], complaint: str
) -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/bad":
            await stream.send_unchecked_headers(fields, end_stream=False)
            await stream.server.release.wait()  # until the client resets the stream
        else:
            await stream.respond(200, [("x-fine", "yes")], b"fine")

    async with open_h2_server(handler) as server, Transport(**H2C) as pool:
        with pytest.raises(asyncpool.RemoteProtocolError, match=complaint) as info:
            await get(pool, server.url_for("/bad"))
        assert f"127.0.0.1:{server.port}" in str(info.value)
        await server.wait_until(lambda s: len(s.resets_received) == 1)
        assert server.resets_received[0][1] == h2.errors.ErrorCodes.CANCEL
        response = await get(pool, server.url_for("/good"))  # the connection lives on
        assert (response.content, response.headers["x-fine"]) == (b"fine", "yes")
        # Good heads are remembered once checked; a bad one fails every time.
        with pytest.raises(asyncpool.RemoteProtocolError, match=complaint):
            await get(pool, server.url_for("/bad"))
        assert server.connections_accepted == 1


async def test_a_repeated_head_gives_each_response_its_own_fields(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool:
        first = await get(pool, h2c.url_for("/echo"))
        second = await get(pool, h2c.url_for("/echo"))  # the same head, checked once
        first.headers.add("x-added", "1")
        assert "x-added" not in second.headers
        third = await get(pool, h2c.url_for("/echo"))
        assert "x-added" not in third.headers
        assert list(second.headers.items()) == list(third.headers.items())


async def test_request_fields_are_sent_as_http2_wants_them(h2c: H2TestServer) -> None:
    headers = [
        ("X-Mixed-Case", "in\tside"),  # whitespace at either end is refused (test_wire_validation)
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "gzip"),
        ("Authorization", "secret"),
    ]
    async with Transport(**H2C) as pool:
        await get(pool, h2c.url_for("/echo"), headers=headers)
        await get(pool, h2c.url_for("/echo"), headers=[("te", "trailers")])
    first, second = h2c.requests[0], h2c.requests[1]
    assert first.header("x-mixed-case") == "in\tside"
    assert first.header("authorization") == "secret"
    for dropped in ("connection", "keep-alive", "te", "host"):
        assert first.header(dropped) is None
    assert second.header("te") == "trailers"


async def test_a_refused_stream_is_retried_with_backoff_then_given_up(
    h2c: H2TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses everything (it processed nothing on the connection) gets Go's
    6 retries, the second and later after a doubling wait (1 s, 2 s, ... in Go; scaled down
    here), so it is not hammered."""
    monkeypatch.setattr(asyncpool._transport, "H2_RETRY_BACKOFF", 0.001)
    retries: list[asyncpool.RetryInfo] = []
    trace = asyncpool.ClientTrace(request_retried=retries.append)
    async with Transport(**H2C) as pool:
        with pytest.raises(asyncpool.StreamReset, match="gave up after 6 retries"):
            await get(pool, h2c.url_for("/refuse"), trace=trace)
        assert pool.stats().retries == 6
    assert [info.attempt for info in retries] == [1, 2, 3, 4, 5, 6]
    assert {info.reason for info in retries} == {"nothing written"}
    assert retries[0].delay == 0
    for n, info in enumerate(retries[1:]):
        assert 0.001 * 2**n <= info.delay <= 0.0011 * 2**n


async def test_a_caller_cancelled_while_waiting_to_retry_leaves_nothing(
    h2c: H2TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncpool._transport, "H2_RETRY_BACKOFF", 60.0)
    async with Transport(**H2C) as pool:
        with anyio.fail_after(10), anyio.CancelScope() as scope:  # fail_after: a hang guard

            def cancel_when_waiting(info: asyncpool.RetryInfo) -> None:
                if info.delay:  # the second retry, about to wait 60 s
                    scope.cancel()

            trace = asyncpool.ClientTrace(request_retried=cancel_when_waiting)
            await get(pool, h2c.url_for("/refuse"), trace=trace)
        assert scope.cancelled_caught
        assert pool.stats().hosts[h2c.url].streams == 0
        assert (await get(pool, h2c.url)).content == b"hello"


@pytest.mark.parametrize("learning", [True, False], ids=["learning", "not-learning"])
async def test_a_server_closing_connections_after_a_few_requests_loses_none(
    learning: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nginx's keepalive_requests over HTTP/2: each connection takes 5 streams, then GOAWAY
    refuses the rest. Those retries are not counted against a stale connection's 6, and the
    pool learns to give a new connection only 5 streams: 50 concurrent requests need 10
    connections, and each refused request is refused once, not moved as a herd from one
    new connection to the next. Without the lesson the herd needs 9 rounds: still no loss."""
    if not learning:
        monkeypatch.setattr(Pool, "_learn_stream_cap", lambda *args: None)
    retries: list[asyncpool.RetryInfo] = []
    trace = asyncpool.ClientTrace(request_retried=retries.append)
    async with open_h2_server() as server, Transport(trace=trace, **H2C) as pool:
        server.keepalive_requests = 5
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get, pool, server.url)
        assert server.connections_accepted == 10
        assert len(server.requests) == 50
        assert {info.reason for info in retries} == {"refused"}
        if learning:
            assert (len(retries), max(info.attempt for info in retries)) == (45, 1)
        else:
            assert (len(retries), max(info.attempt for info in retries)) == (225, 9)
        await wait_until(lambda: pool.stats().total == 0)
        # The pool forgets what it learnt once a connection takes more.
        server.keepalive_requests = None
        for _ in range(7):
            await get(pool, server.url)
        assert pool.stats().hosts[server.url].total == 1


async def test_early_aclose_resets_the_stream_and_frees_it(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool:
        response = await pool.round_trip(Request("GET", h2c.url_for(f"/bytes?n={32 << 20}")))
        await response.aclose()
        await h2c.wait_until(lambda s: len(s.resets_received) == 1)
        assert h2c.resets_received[0][1] == h2.errors.ErrorCodes.CANCEL
        assert pool.stats().hosts[h2c.url] == asyncpool.HostStats(1, 0, 0, 0, 1, 0)
        assert (await get(pool, h2c.url)).content == b"hello"


async def test_cancelling_one_stream_leaves_the_others_alone(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool:
        results: list[bytes] = []

        async def one() -> None:
            results.append((await get(pool, h2c.url_for("/wait"))).content)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(get, pool, h2c.url_for("/wait"))
                await h2c.wait_until(lambda s: s.active_streams == 4)
                doomed.cancel_scope.cancel()
            await h2c.wait_until(lambda s: len(s.resets_received) == 1)
            assert pool.stats().hosts[h2c.url].streams == 3
            h2c.release.set()
        assert results == [b"released"] * 3
        assert h2c.connections_accepted == 1


async def test_a_silent_server_is_found_by_ping_and_closed() -> None:
    closed: list[asyncpool.ConnClosedInfo] = []
    trace = asyncpool.ClientTrace(conn_closed=closed.append)
    options = {"read_idle_timeout": 0.05, "ping_timeout": 0.05, "trace": trace, **H2C}
    async with open_h2_server() as server, Transport(**options) as pool:  # type: ignore[arg-type]
        await get(pool, server.url)
        server.silence()
        await wait_until(lambda: pool.stats().total == 0)
        assert closed[0].reason is asyncpool.CloseReason.ERROR
        assert "ping_timeout" in str(closed[0].error)
        server.unsilence()
        assert (await get(pool, server.url)).content == b"hello"


async def test_ping_keeps_a_quiet_but_live_connection(h2c: H2TestServer) -> None:
    async with Transport(read_idle_timeout=0.02, ping_timeout=5, **H2C) as pool:
        await get(pool, h2c.url)
        await h2c.wait_until(lambda s: s.pings_received >= 3)
        assert pool.stats().total == 1


async def test_idle_conn_timeout_applies_to_http2(h2c: H2TestServer) -> None:
    async with Transport(idle_conn_timeout=0.05, **H2C) as pool:
        await get(pool, h2c.url)
        await wait_until(lambda: pool.stats().total == 0)
        assert pool.stats().idle_timeouts == 1


@pytest.mark.parametrize("after_goaway", [False, True])
async def test_a_connection_lost_mid_stream_fails_its_streams(
    h2c: H2TestServer, after_goaway: bool
) -> None:
    errors: list[BaseException] = []

    async def doomed() -> None:
        try:
            await get(pool, h2c.url_for("/wait"))
        except asyncpool.ReadError as exc:
            errors.append(exc)

    async with Transport(**H2C) as pool:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(doomed)
            await h2c.wait_until(lambda s: s.active_streams == 3)
            if after_goaway:  # all three accepted: they die with the connection, saying why
                await h2c.goaway(last_stream_id=5, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
            await h2c.connections[0].close()
        assert len(errors) == 3
        assert "connection lost" in str(errors[0])
        goaway = "after the server sent GOAWAY (<ErrorCodes.INTERNAL_ERROR"
        assert (goaway in str(errors[0])) is after_goaway
        assert pool.stats().total == 0
        assert (await get(pool, h2c.url)).content == b"hello"


async def test_a_body_closed_unread_after_its_end_gives_its_window_back(
    h2c: H2TestServer,
) -> None:
    # 7 x 3 MiB arrive whole (each fits the 4 MiB stream window) and are closed unread: the
    # 16 MiB connection window only lasts if what they held is acknowledged.
    async with Transport(**H2C) as pool:
        for _ in range(7):
            response = await pool.round_trip(Request("GET", h2c.url_for(f"/bytes?n={3 << 20}")))
            await wait_until(lambda body=response._stream: body.is_consumed)  # END_STREAM came
            await response.aclose()
        assert (await get(pool, h2c.url_for("/"))).content == b"hello"
    assert h2c.connections_accepted == 1


async def test_response_header_timeout_resets_the_stream(h2c: H2TestServer) -> None:
    async with Transport(response_header_timeout=0.05, **H2C) as pool:
        with pytest.raises(asyncpool.ResponseHeaderTimeout):
            await get(pool, h2c.url_for("/wait"))
        await h2c.wait_until(lambda s: len(s.resets_received) == 1)
        assert pool.stats().hosts[h2c.url].streams == 0


async def test_read_timeout_fails_a_stalled_stream_only(h2c: H2TestServer) -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/mid-body":
            await stream.send_headers(200, [])
            await stream.send_data(b"12345")
            await stream.server.release.wait()
        else:
            await default_h2_handler(req, stream)

    async with open_h2_server(handler) as server, Transport(read_timeout=0.1, **H2C) as pool:
        with pytest.raises(asyncpool.ReadTimeout, match=r"read_timeout=0\.1s"):
            await get(pool, server.url_for("/wait"))
        response = await pool.round_trip(Request("GET", server.url_for("/mid-body")))
        with pytest.raises(asyncpool.ReadTimeout, match="stalled"):
            await response.aread()
        await server.wait_until(lambda s: len(s.resets_received) == 2)
        assert pool.stats().hosts[server.url].streams == 0
        assert (await get(pool, server.url)).content == b"hello"  # the connection lives on
        assert server.connections_accepted == 1
        server.release.set()


async def test_the_first_dial_is_shared_by_requests_made_meanwhile(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(get, pool, h2c.url)
    assert pool.stats().dials == 1
    assert h2c.connections_accepted == 1


async def test_a_failed_first_dial_fails_everyone_waiting_on_it() -> None:
    async def refuse(host: str, port: int) -> Any:
        await anyio.lowlevel.checkpoint()
        raise ConnectionRefusedError("nobody home")

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await get(pool, "http://127.0.0.1:9/")
        except asyncpool.ConnectError as exc:
            errors.append(exc)

    async with Transport(dial=refuse, **H2C) as pool:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        assert len(errors) == 5
        assert pool.stats().dials == 1
        assert pool.stats().total == 0


async def test_trace_hooks_have_http2_meanings(h2c: H2TestServer) -> None:
    events: list[str] = []
    trace = asyncpool.ClientTrace(
        got_conn=lambda info: events.append(f"got_conn:{info.reused}"),
        wrote_headers=lambda: events.append("wrote_headers"),
        wrote_request=lambda info: events.append("wrote_request"),
        got_first_response_byte=lambda: events.append("first_byte"),
        got_response_end=lambda: events.append("end"),
    )
    async with Transport(**H2C) as pool:
        await get(pool, h2c.url, trace=trace)
        response = await pool.round_trip(
            Request("POST", h2c.url_for("/echo"), content=b"x", trace=trace)
        )
        await response.aread()
    assert events == [
        "got_conn:False",
        "wrote_headers",
        "wrote_request",
        "first_byte",
        "end",
        "got_conn:True",
        "wrote_headers",
        "wrote_request",
        "first_byte",
        "end",
    ]


async def test_close_idle_connections_closes_idle_http2_connections(h2c: H2TestServer) -> None:
    async with Transport(**H2C) as pool:
        await get(pool, h2c.url)
        await pool.close_idle_connections()
        assert pool.stats().total == 0
        assert (await get(pool, h2c.url)).content == b"hello"
    assert h2c.connections_accepted == 2


async def test_a_failing_body_iterator_resets_only_its_stream(h2c: H2TestServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"start"
        raise ValueError("the body source broke")

    async with Transport(**H2C) as pool:
        with pytest.raises(ValueError, match="body source broke"):
            await pool.round_trip(Request("POST", h2c.url_for("/echo"), content=body()))
        await h2c.wait_until(lambda s: len(s.resets_received) == 1)
        assert (await get(pool, h2c.url)).content == b"hello"
        assert pool.stats().dials == 1


async def test_1xx_responses_on_http2() -> None:
    async def hints(req: H2Request, stream: H2Stream) -> None:
        await stream.send_informational(103, [("link", "</a.css>")])
        await stream.respond(200, [], b"final")

    events: list[object] = []
    trace = asyncpool.ClientTrace(
        got_1xx_response=lambda code, headers: events.append((code, headers["link"])),
        got_100_continue=lambda: events.append(100),
    )
    async with open_h2_server(hints) as server, Transport(**H2C) as pool:
        assert (await get(pool, server.url, trace=trace)).content == b"final"
        request = Request(
            "PUT",
            server.url_for("/echo"),
            headers={"Expect": "100-continue"},
            content=b"x",
            trace=trace,
        )
        await (await pool.round_trip(request)).aread()
    assert events[0] == (103, "</a.css>")


async def test_response_header_timeout_after_an_upload(h2c: H2TestServer) -> None:
    async with Transport(response_header_timeout=0.05, **H2C) as pool:
        with pytest.raises(asyncpool.ResponseHeaderTimeout):
            await pool.round_trip(Request("POST", h2c.url_for("/wait"), content=b"body"))
        assert (await get(pool, h2c.url)).content == b"hello"


async def test_goaway_in_the_preface_fails_the_dial_and_frees_its_host_slot() -> None:
    # SETTINGS and GOAWAY in one write: the client sees the GOAWAY inside its handshake.
    async with open_h2_server() as server, Transport(**H2C) as pool:
        server.on_connect = lambda conn: conn.goaway(0)
        with pytest.raises(asyncpool.ReadError, match="GOAWAY during the HTTP/2 preface"):
            await get(pool, server.url)
        assert pool.stats().hosts == {}
        server.on_connect = None
        assert (await get(pool, server.url)).content == b"hello"
        assert pool.stats().total == 1


async def test_response_header_timeout_lets_a_head_through_before_the_upload_ends() -> None:
    # Full duplex: the body's second part is only produced once the response head is seen.
    head_seen = anyio.Event()

    async def echo_after_head(req: H2Request, stream: H2Stream) -> None:
        await stream.send_headers(200)
        await stream.send_data(await stream.read_body(), end_stream=True)

    async def body() -> AsyncIterator[bytes]:
        yield b"first,"
        await head_seen.wait()
        yield b"second"

    async with (
        open_h2_server(echo_after_head) as server,
        Transport(response_header_timeout=30, **H2C) as pool,
    ):
        with anyio.fail_after(5):  # a hang guard, not a timing assertion
            response = await pool.round_trip(Request("POST", server.url, content=body()))
        head_seen.set()
        assert await response.aread() == b"first,second"


async def test_a_stream_reserved_before_the_server_lowers_its_limit_is_retried() -> None:
    lower = anyio.Event()

    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/lower":
            await lower.wait()
            # END_STREAM, then SETTINGS in the same write: the waiting request gets this
            # stream's slot, and only then does the limit fall to 1.
            await stream.respond(200)
            stream.connection.advertise_max_concurrent_streams(1)
        else:
            await stream.server.release.wait()
            await stream.respond(200, [], b"released")

    results: list[bytes] = []

    async def one(path: str) -> None:
        results.append((await get(pool, server.url_for(path))).content)

    async with (
        open_h2_server(handler, max_concurrent_streams=2) as server,
        Transport(strict_max_concurrent_streams=True, **H2C) as pool,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "/wait")
            await server.wait_until(lambda s: s.active_streams == 1)
            tg.start_soon(one, "/lower")
            await server.wait_until(lambda s: s.active_streams == 2)
            tg.start_soon(one, "/wait")
            await wait_until(lambda: pool.stats().waiting == 1)
            lower.set()
            await wait_until(lambda: pool.stats().retries == 1)
            server.release.set()
        assert sorted(results) == [b"", b"released", b"released"]
        assert server.connections_accepted == 1
        assert not server.refused_requests and not server.protocol_errors


@pytest.mark.parametrize("how", ["cancelled", "closed early"])
async def test_idle_conn_timeout_applies_after_the_last_stream_ends_on_our_side(how: str) -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/head":
            await stream.send_headers(200)
        await stream.server.release.wait()  # until the client resets the stream

    async with open_h2_server(handler) as server, Transport(idle_conn_timeout=0.05, **H2C) as pool:
        if how == "cancelled":
            async with anyio.create_task_group() as tg:
                tg.start_soon(get, pool, server.url)
                await server.wait_until(lambda s: s.active_streams == 1)
                tg.cancel_scope.cancel()
        else:
            response = await pool.round_trip(Request("GET", server.url_for("/head")))
            await response.aclose()
        await server.wait_until(lambda s: len(s.resets_received) == 1)  # it answers nothing
        await wait_until(lambda: pool.stats().total == 0)
        assert pool.stats().idle_timeouts == 1


@pytest.mark.parametrize(
    ("length", "sent", "complaint"),
    [
        (b"10", b"12345", "short"),
        (b"10", b"x" * 15, "longer"),
        (b"\xb2", b"xx", "invalid content-length"),  # latin-1 "²": a digit to str.isdigit
    ],
)
async def test_a_body_that_disagrees_with_its_content_length_fails_that_stream_only(
    length: bytes, sent: bytes, complaint: str
) -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/bad":
            await stream.send_headers(200, [(b"content-length", length)])
            await stream.send_data(sent, end_stream=True)
        else:
            await stream.server.release.wait()
            await stream.respond(200, [], b"released")

    results: list[bytes] = []

    async def waiting() -> None:
        results.append((await get(pool, server.url_for("/wait"))).content)

    async with open_h2_server(handler) as server, Transport(**H2C) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting)
            await server.wait_until(lambda s: s.active_streams == 1)
            with pytest.raises(asyncpool.RemoteProtocolError, match=complaint) as info:
                await get(pool, server.url_for("/bad"))
            assert f"127.0.0.1:{server.port}" in str(info.value)
            server.release.set()
        assert results == [b"released"]
        assert (await get(pool, server.url_for("/wait"))).content == b"released"
        assert server.connections_accepted == 1


async def test_a_server_that_allows_no_stream_fails_the_requests_instead_of_dialing_on() -> None:
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await get(pool, server.url)
        except asyncpool.HTTPError as exc:
            errors.append(exc)

    async with (
        open_h2_server(max_concurrent_streams=0) as server,
        Transport(**H2C) as pool,
    ):
        with anyio.fail_after(5):  # a hang guard, not a timing assertion
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
        assert len(errors) == 5
        assert "MAX_CONCURRENT_STREAMS" in str(errors[0])
        assert f"127.0.0.1:{server.port}" in str(errors[0])
        assert server.connections_accepted == 1
        assert pool.stats().hosts == {}


async def test_data_received_before_rst_stream_is_read_before_the_error() -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/reset":
            await stream.send_headers(200)
            await stream.send_data(b"arrived ")
            await stream.send_data(b"too")
            await stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
        else:
            await stream.respond(200, [], b"fine")

    async with open_h2_server(handler) as server, Transport(**H2C) as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/reset")))
        await wait_until(lambda: pool.stats().hosts[server.url].streams == 0)  # RST came
        received = b""
        with pytest.raises(asyncpool.StreamReset, match="INTERNAL_ERROR"):
            async for chunk in response.aiter_bytes():
                received += chunk
        assert received == b"arrived too"
        assert (await get(pool, server.url)).content == b"fine"
        assert server.connections_accepted == 1


async def test_a_server_without_a_stream_limit_takes_over_100_streams_on_one_connection() -> None:
    async with (
        open_h2_server(max_concurrent_streams=None) as server,
        Transport(**H2C) as pool,
        anyio.create_task_group() as tg,
    ):
        for _ in range(120):
            tg.start_soon(get, pool, server.url_for("/wait"))
        await server.wait_until(lambda s: s.active_streams == 120)
        assert server.connections_accepted == 1
        server.release.set()


async def test_a_raising_wrote_request_hook_fails_its_stream_not_the_pool(
    h2c: H2TestServer,
) -> None:
    def boom(info: object) -> None:
        raise RuntimeError("wrote_request hook failed")

    trace = asyncpool.ClientTrace(wrote_request=boom)
    async with Transport(**H2C) as pool:
        with anyio.fail_after(5), pytest.raises(RuntimeError, match="wrote_request hook failed"):
            await pool.round_trip(Request("POST", h2c.url_for("/echo"), content=b"x", trace=trace))
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0)
        assert stats.hosts[h2c.url].streams == 0
        assert (await get(pool, h2c.url)).content == b"hello"
        assert pool.stats().dials == 1


@pytest.mark.parametrize(
    "hook", ["got_first_response_byte", "got_1xx_response", "got_response_end"]
)
async def test_a_raising_reader_hook_fails_its_stream_not_the_others(hook: str) -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/early-hints":
            await stream.send_informational(103, [("link", "</a.css>")])
            await stream.respond(200, [], b"hinted")
        else:
            await default_h2_handler(req, stream)

    def boom(*args: object) -> None:
        raise RuntimeError(f"{hook} hook failed")

    trace = asyncpool.ClientTrace(**{hook: boom})
    async with open_h2_server(handler) as server, Transport(**H2C) as pool:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                results: list[bytes] = []

                async def other() -> None:
                    results.append((await get(pool, server.url_for("/wait"))).content)

                tg.start_soon(other)
                await server.wait_until(lambda s: s.active_streams == 1)
                with pytest.raises(RuntimeError, match=f"{hook} hook failed"):
                    await get(pool, server.url_for("/early-hints"), trace=trace)
                server.release.set()
        assert results == [b"released"]  # the other stream on the connection was not hurt
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing, stats.dials) == (0, 0, 0, 1)
        assert (await get(pool, server.url)).content == b"hello"
        assert pool.stats().dials == 1


async def test_a_stream_handed_over_as_the_pool_closes_fails_with_pool_closed() -> None:
    errors: list[BaseException] = []

    async def queued(pool: Transport, url: str) -> None:
        try:
            await pool.round_trip(Request("GET", url))
        except Exception as exc:
            errors.append(exc)

    async with open_h2_server(max_concurrent_streams=1) as server:
        with anyio.fail_after(5):
            async with (
                anyio.create_task_group() as outside,
                Transport(**H2C, strict_max_concurrent_streams=True) as pool,
            ):
                first = await pool.round_trip(
                    Request("GET", server.url_for("/stream?chunks=1000&size=1000"))
                )
                outside.start_soon(queued, pool, server.url)
                await wait_until(lambda: pool.stats().waiting == 1)
                await first.aclose()  # its stream slot goes to the queued request...
                # ...and the pool closes before that request runs: it used to retry, queue a
                # dial the closing task group cancelled, and wait for it forever.
    assert len(errors) == 1 and isinstance(errors[0], asyncpool.PoolClosed), errors


# -- faults of real servers: answers before the body, 100-continue, big heads, resets ---------


def h2_open_streams(pool: Transport) -> list[int]:
    """For each HTTP/2 connection of the pool, the streams h2 itself counts open (an exact
    walk, not the lazy count): a stream our side forgot but h2 holds open is a leaked slot."""
    counts = []
    for conn in list(pool._pool.open):
        if isinstance(conn, HTTP2Connection) and not conn.closed:
            counts.append(h2.connection.H2Connection.open_outbound_streams.fget(conn._h2))
    return counts


def assert_nothing_in_use(pool: Transport) -> None:
    stats = pool.stats()
    assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0)
    assert all(host.streams == 0 for host in stats.hosts.values())
    assert all(count == 0 for count in h2_open_streams(pool)), h2_open_streams(pool)


async def test_a_response_that_ends_before_the_body_is_sent_closes_its_stream() -> None:
    # The server answers 413 and ends its side without reading the body, and without a
    # RST_STREAM of its own: ours (NO_ERROR, as Go's) is what closes the stream. Without it
    # h2 kept each one open (half-closed remote) against the server's limit of 3.
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/reject":
            await stream.respond(413)
            await stream.server.release.wait()  # until the client resets the stream
        else:
            await default_h2_handler(req, stream)

    async with (
        open_h2_server(handler, max_concurrent_streams=3, initial_window_size=10) as server,
        Transport(**H2C) as pool,
    ):
        for _ in range(5):
            request = Request("POST", server.url_for("/reject"), content=b"x" * 1000)
            response = await pool.round_trip(request)
            assert response.status_code == 413
            await response.aread()
            assert_nothing_in_use(pool)
        await server.wait_until(lambda s: len(s.resets_received) == 5)
        assert {code for _, code in server.resets_received} == {h2.errors.ErrorCodes.NO_ERROR}
        assert (await get(pool, server.url)).content == b"hello"
        assert (pool.stats().dials, pool.stats().retries) == (1, 0)
        assert not server.refused_requests


async def test_streams_h2_holds_open_behind_our_back_fail_loudly_and_close_the_connection() -> None:
    # A leaked slot (h2 counts a stream open that the connection no longer knows) used to be
    # taken for a lowered stream limit and retried on the same connection, 6 times.
    async with open_h2_server(max_concurrent_streams=2) as server, Transport(**H2C) as pool:
        assert (await get(pool, server.url)).content == b"hello"
        (conn,) = pool._pool.open
        assert isinstance(conn, HTTP2Connection)
        for _ in range(2):  # behind the connection's back
            conn._h2.send_headers(
                conn._h2.get_next_available_stream_id(),
                [(":method", "GET"), (":authority", "x"), (":scheme", "http"), (":path", "/")],
                end_stream=True,
            )
        with pytest.raises(asyncpool.HTTPError, match="h2 counts 2 open streams") as info:
            await get(pool, server.url)
        assert f"127.0.0.1:{server.port}" in str(info.value)
        assert info.value.retry_hint is None
        assert conn.closed
        assert (await get(pool, server.url)).content == b"hello"
        assert (pool.stats().dials, pool.stats().retries) == (2, 0)
        assert_nothing_in_use(pool)


def continue_trace(events: list[str]) -> asyncpool.ClientTrace:
    return asyncpool.ClientTrace(
        wait_100_continue=lambda: events.append("wait"),
        got_100_continue=lambda: events.append("100"),
        wrote_request=lambda info: events.append("wrote_request"),
    )


async def test_expect_100_continue_a_final_response_first_means_the_body_is_never_sent() -> None:
    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/too-big":
            await stream.respond(413, [], b"no")  # ends its side, reads nothing
            await stream.server.release.wait()  # sends no RST_STREAM of its own
        else:
            await default_h2_handler(req, stream)

    events: list[str] = []
    async with open_h2_server(handler) as server, Transport(**H2C) as pool:
        request = Request(
            "PUT",
            server.url_for("/too-big"),
            headers={"Expect": "100-continue"},
            content=b"x" * (128 << 10),
            trace=continue_trace(events),
        )
        response = await pool.round_trip(request)
        assert (response.status_code, await response.aread()) == (413, b"no")
        await server.wait_until(lambda s: len(s.resets_received) == 1)
        sid = server.requests[0].stream_id
        assert server.resets_received == [(sid, h2.errors.ErrorCodes.NO_ERROR)]
        assert server.connections[0].data_received.get(sid, 0) == 0  # not a byte of the body
        assert events == ["wait"]
        assert_nothing_in_use(pool)
        assert (await get(pool, server.url)).content == b"hello"
        assert pool.stats().dials == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "async-iterable"])
async def test_expect_100_continue_the_body_waits_for_100_continue(
    h2c: H2TestServer, streamed: bool
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"pay"
        yield b"load"

    events: list[str] = []
    # A timeout far beyond the test: only 100 Continue can let the body go.
    async with Transport(expect_continue_timeout=60, **H2C) as pool:
        request = Request(
            "PUT",
            h2c.url_for("/echo"),  # sends 100 Continue, then reads the body
            headers={"Expect": "100-continue"},
            content=chunks() if streamed else b"payload",
            trace=continue_trace(events),
        )
        response = await pool.round_trip(request)
        assert await response.aread() == b"payload"
        assert events == ["wait", "100", "wrote_request"]
        assert_nothing_in_use(pool)


async def test_expect_100_continue_without_an_answer_sends_the_body_after_the_timeout() -> None:
    async def deaf(req: H2Request, stream: H2Stream) -> None:
        body = await stream.read_body(send_continue=False)
        await stream.respond(200, [], body)

    events: list[str] = []
    async with open_h2_server(deaf) as server, Transport(expect_continue_timeout=0, **H2C) as pool:
        request = Request(
            "PUT",
            server.url,
            headers={"Expect": "100-continue"},
            content=b"payload",
            trace=continue_trace(events),
        )
        response = await pool.round_trip(request)
        assert await response.aread() == b"payload"
        assert events == ["wait", "wrote_request"]
        assert_nothing_in_use(pool)


def big_head_handler(size: int) -> Any:
    """``/big`` answers with a head of about ``size`` bytes (one field, RFC 9113 size) and
    waits to be reset; ``/big?end=1`` then sends "big" and ends; the rest as the default
    handler."""

    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path.startswith("/big"):
            value = hashlib.sha256(b"seed").hexdigest() * (size // 64 + 1)
            await stream.send_headers(200, [("x-big", value[:size])])
            if req.query.get("end"):
                await stream.send_data(b"big", end_stream=True)
            await stream.server.release.wait()
        else:
            await default_h2_handler(req, stream)

    return handler


async def test_a_response_head_over_max_response_header_bytes_fails_that_stream_only() -> None:
    results: list[bytes] = []

    async def other() -> None:
        results.append((await get(pool, server.url_for("/wait"))).content)

    limit = 8 << 10
    async with (
        open_h2_server(big_head_handler(16 << 10)) as server,
        Transport(max_response_header_bytes=limit, **H2C) as pool,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await server.wait_until(lambda s: s.active_streams == 1)
            with anyio.fail_after(5), pytest.raises(asyncpool.ResponseHeaderTooLarge) as info:
                await get(pool, server.url_for("/big"))  # (a hang guard, not a timing assertion)
            message = str(info.value)
            assert f"max_response_header_bytes={limit}" in message
            assert f"127.0.0.1:{server.port}" in message
            await server.wait_until(lambda s: len(s.resets_received) == 1)
            server.release.set()
        assert results == [b"released"]  # the other stream on the connection lived on
        # Advertised as Go does, from the same option.
        assert server.connections[0].h2.remote_settings.max_header_list_size == limit
        assert_nothing_in_use(pool)
        assert (await get(pool, server.url)).content == b"hello"
        assert (pool.stats().dials, server.connections_accepted) == (1, 1)


async def test_a_response_head_over_64_kib_is_fine_under_the_default_limit() -> None:
    # h2's own default (64 KiB) used to cap heads, and going over it killed the connection.
    async with open_h2_server(big_head_handler(200 << 10)) as server, Transport(**H2C) as pool:
        response = await get(pool, server.url_for("/big?end=1"))
        assert (response.content, len(response.headers["x-big"])) == (b"big", 200 << 10)
        assert (await get(pool, server.url)).content == b"hello"
        assert_nothing_in_use(pool)
        assert server.connections_accepted == 1


class GatedStream(anyio.abc.ByteStream):
    """The pool's own TCP stream with a gate on what ``receive`` returns or raises: closed,
    the connection's reader cannot tell what the socket says, so its writer finds out first."""

    def __init__(self, inner: anyio.abc.ByteStream) -> None:
        self.inner = inner
        self.receive_gate = anyio.Event()
        self.receive_gate.set()
        self.send_gate = anyio.Event()  # closed: the writer waits in send() with its bytes
        self.send_gate.set()
        self.send_held = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self.inner.receive(max_bytes)
        except Exception:
            await self.receive_gate.wait()
            raise
        await self.receive_gate.wait()
        return data

    async def send(self, item: bytes) -> None:
        if not self.send_gate.is_set():
            self.send_held = True
            await self.send_gate.wait()
        await self.inner.send(item)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self.inner.extra_attributes

    def tcp_closed(self) -> bool:
        """The kernel took the connection down (an RST arrived): TCP_INFO's state is CLOSE."""
        sock = self.inner.extra(anyio.abc.SocketAttribute.raw_socket)
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 7
        except OSError:  # asyncio's transport closed the socket on the error it read
            return True


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux's TCP_INFO")
@pytest.mark.parametrize("first", ["reader", "writer"])
async def test_a_connection_reset_says_so_and_what_the_server_may_have_processed(
    h2c: H2TestServer, first: str
) -> None:
    streams: list[GatedStream] = []

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        streams.append(GatedStream(await asyncpool._dial._connect_tcp(host, port)))
        return streams[-1]

    errors: list[BaseException] = []

    async def sent() -> None:
        try:
            await get(pool, h2c.url_for("/wait"))
        except asyncpool.HTTPError as exc:
            errors.append(exc)

    async with Transport(dial=dial, **H2C) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sent)
            await h2c.wait_until(lambda s: s.active_streams == 1)
            if first == "writer":
                streams[0].receive_gate = anyio.Event()  # the reader sees nothing
            await h2c.connections[0].reset()
            if first == "writer":
                await wait_until(streams[0].tcp_closed)
                # A new stream: the writer's send meets the reset first.
                with pytest.raises(asyncpool.ServerDisconnected):
                    await get(pool, h2c.url)
        (error,) = errors
        assert isinstance(error, asyncpool.ServerDisconnected)
        assert str(error) == (
            f"read 127.0.0.1:{h2c.port}: HTTP/2 connection lost: the server reset the "
            "connection; the request was sent and the server may have processed it"
        )
        assert error.retry_hint is None  # not replayed, as Go
        assert pool.stats().retries == 0
        assert_nothing_in_use(pool)
        assert pool.stats().total == 0
        assert (await get(pool, h2c.url)).content == b"hello"


async def test_a_connection_reset_retries_the_requests_it_never_sent(h2c: H2TestServer) -> None:
    streams: list[GatedStream] = []

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        streams.append(GatedStream(await asyncpool._dial._connect_tcp(host, port)))
        return streams[-1]

    outcomes: dict[str, object] = {}

    async def one(name: str, path: str) -> None:
        try:
            outcomes[name] = (await get(pool, h2c.url_for(path))).content
        except asyncpool.HTTPError as exc:
            outcomes[name] = exc

    async with Transport(dial=dial, **H2C) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "sent", "/wait")
            await h2c.wait_until(lambda s: s.active_streams == 1)
            streams[0].send_gate = anyio.Event()
            tg.start_soon(one, "handed over", "/wait")  # its HEADERS wait in send()
            await wait_until(lambda: streams[0].send_held)
            tg.start_soon(one, "not sent", "/")  # the writer is busy: never handed over
            await wait_until(lambda: pool.stats().hosts[h2c.url].streams == 3)
            await h2c.connections[0].reset()
        assert outcomes["not sent"] == b"hello"  # retried on a new connection
        for name in ("sent", "handed over"):  # the server may have them: not retried
            error = outcomes[name]
            assert isinstance(error, asyncpool.ServerDisconnected), error
            assert "the server reset the connection" in str(error)
            assert "the server may have processed it" in str(error)
        assert pool.stats().retries == 1
        assert (pool.stats().dials, h2c.connections_accepted) == (2, 2)
        assert_nothing_in_use(pool)


# -- hostile servers: floods, endless 1xx, huge heads; memory and time stay bounded -----------


def flood_handler(kind: str, count: int) -> Any:
    """``/flood`` answers a head, then ``count`` frames of ``kind`` (see ``flood_frame``), then
    "done" and END_STREAM; the rest as the default handler."""

    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/flood":
            await stream.send_headers(200)
            await stream.connection.flood(flood_frame(kind, req.stream_id), count)
            await stream.send_data(b"done", end_stream=True)
        else:
            await default_h2_handler(req, stream)

    return handler


@pytest.mark.parametrize(
    "kind", ["PING", "SETTINGS", "WINDOW_UPDATE", "PRIORITY", "unknown", "empty DATA"]
)
async def test_a_control_frame_flood_fails_the_connection_with_enhance_your_calm(
    kind: str,
) -> None:
    # 100 times the limit: the old code read them all and answered "done".
    errors: list[BaseException] = []

    async def other() -> None:
        try:
            await get(pool, server.url_for("/wait"))
        except asyncpool.HTTPError as exc:
            errors.append(exc)

    async with (
        open_h2_server(flood_handler(kind, 100 * MAX_IDLE_FRAMES)) as server,
        Transport(**H2C) as pool,
    ):
        with anyio.fail_after(30):  # a hang guard, not a timing assertion
            async with anyio.create_task_group() as tg:
                tg.start_soon(other)
                await server.wait_until(lambda s: s.active_streams == 1)
                with pytest.raises(asyncpool.FloodError) as info:  # from the head or body
                    await get(pool, server.url_for("/flood"))
        message = str(info.value)
        frames = "frames of unknown types" if kind == "unknown" else f"{kind} frames"
        assert f"{frames} without progress (limit {MAX_IDLE_FRAMES})" in message
        assert f"127.0.0.1:{server.port}" in message
        assert "ENHANCE_YOUR_CALM" in message
        # The other stream on the connection fails with it; it was sent: not retried.
        assert len(errors) == 1 and isinstance(errors[0], asyncpool.FloodError), errors
        assert errors[0].retry_hint is None
        await server.wait_until(
            lambda s: s.connections[0].goaway_received == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        )
        assert (await get(pool, server.url)).content == b"hello"  # on a new connection
        assert (pool.stats().dials, pool.stats().retries) == (2, 0)
        assert_nothing_in_use(pool)


async def test_empty_data_frames_for_an_unread_body_take_no_memory() -> None:
    # The caller holds its response unread while the server sends 200,000 empty DATA frames:
    # each was queued for the caller (flow control does not count empty frames), over 10 MiB.
    count = 200 * MAX_IDLE_FRAMES
    async with (
        open_h2_server(flood_handler("empty DATA", count)) as server,
        Transport(**H2C) as pool,
    ):
        tracemalloc.start()
        try:
            response = await pool.round_trip(Request("GET", server.url_for("/flood")))
            with anyio.fail_after(30):  # a hang guard
                # The stream ends: with "done" after the flood, or with the connection.
                await wait_until(
                    lambda: not any(h.streams for h in pool.stats().hosts.values()), timeout=30
                )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 << 20, peak  # ~1 MiB of it is the servers' and h2's own
        with pytest.raises(asyncpool.FloodError, match="empty DATA frames without progress"):
            await response.aread()
        assert (await get(pool, server.url)).content == b"hello"
        assert_nothing_in_use(pool)


async def test_replies_a_server_does_not_read_are_bounded() -> None:
    # The server reads nothing and sends PINGs, with a body byte now and then (progress): each
    # PING queues an ACK the writer cannot hand over once the socket buffers are full.
    rounds, pings = 200, 500  # 100,000 ACKs, 1.7 MB; the socket buffers take a few 10 KiB

    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path != "/flood":
            await default_h2_handler(req, stream)
            return
        stream.connection.stop_reading()
        await stream.send_headers(200)
        raw = flood_frame("PING") * pings + DataFrame(req.stream_id, data=b"x").serialize()
        for _ in range(rounds):
            await stream.connection.send_raw(raw)
        await stream.send_data(b"", end_stream=True)

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        stream = await asyncpool._dial._connect_tcp(host, port)
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return stream

    def small_receive_buffer(conn: Any) -> None:
        sock = conn._stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async with open_h2_server(handler) as server, Transport(dial=dial, **H2C) as pool:
        server.on_connect = small_receive_buffer
        with anyio.fail_after(30):  # a hang guard
            response = await pool.round_trip(Request("GET", server.url_for("/flood")))
            (conn,) = pool._pool.open
            assert isinstance(conn, HTTP2Connection)
            with pytest.raises(asyncpool.FloodError) as info:
                async for _ in response.aiter_bytes():
                    assert getattr(conn._h2, "unsent_replies", 0) <= MAX_UNSENT_REPLIES
        assert f"the server does not read (limit {MAX_UNSENT_REPLIES})" in str(info.value)
        server.connections[0].resume_reading()
        assert (await get(pool, server.url)).content == b"hello"
        assert_nothing_in_use(pool)


async def test_endless_1xx_heads_fail_their_stream_only() -> None:
    limit = 16 << 10

    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path == "/hints":
            for i in range(100 * limit // 150):  # 100 times the limit, then a response
                await stream.send_informational(103, [("link", f"</{i}.css>" + "x" * 100)])
                await anyio.lowlevel.checkpoint()  # a server that stops once reset
            await stream.respond(200, [], b"late")
        else:
            await default_h2_handler(req, stream)

    results: list[bytes] = []

    async def other() -> None:
        results.append((await get(pool, server.url_for("/wait"))).content)

    async with (
        open_h2_server(handler) as server,
        Transport(max_response_header_bytes=limit, **H2C) as pool,
    ):
        with anyio.fail_after(30):  # a hang guard
            async with anyio.create_task_group() as tg:
                tg.start_soon(other)
                await server.wait_until(lambda s: s.active_streams == 1)
                with pytest.raises(asyncpool.ResponseHeaderTooLarge) as info:
                    await get(pool, server.url_for("/hints"))
                server.release.set()
        message = str(info.value)
        assert "1xx included" in message and f"max_response_header_bytes={limit}" in message
        assert results == [b"released"]  # the other stream lived on
        await server.wait_until(lambda s: len(s.resets_received) == 1)
        assert (await get(pool, server.url)).content == b"hello"
        assert (pool.stats().dials, server.connections_accepted) == (1, 1)
        assert_nothing_in_use(pool)


async def test_leaving_the_transport_while_the_server_floods_returns(tls: TLSFixture) -> None:
    # The body is closed; the server goes on sending DATA on the stream we reset, as fast as
    # it can, over TLS (a reader that finds data buffered on each read never waits).
    started = anyio.Event()

    async def handler(req: H2Request, stream: H2Stream) -> None:
        await stream.send_headers(200)
        await stream.send_data(b"x")
        started.set()
        await anyio.sleep_forever()

    frame = DataFrame(1, data=b"y" * 16000).serialize()
    async with open_h2_server(handler, ssl_context=make_h2_server_context(tls)) as server:
        with anyio.fail_after(30):  # a hang guard
            async with (
                anyio.create_task_group() as tg,
                Transport(tls_config=tls.client_context) as pool,
            ):
                response = await pool.round_trip(Request("GET", server.url))
                await started.wait()
                tg.start_soon(server.connections[0].flood, frame, 10**6, 64)
                await response.aclose()
                await anyio.lowlevel.checkpoint()
        assert server.connections[0].closed.is_set()


async def test_one_byte_data_frames_for_an_unread_body_take_memory_by_bytes_not_frames() -> None:
    # Flow control bounds the bytes a server may send, not the frames: 1-byte DATA frames, each
    # queued for the caller as its own chunk, cost ~100 bytes of Python objects per byte sent
    # (10 MB for 100,000 of them). Queued chunks merge, so memory follows the bytes.
    count = 100_000

    async def handler(req: H2Request, stream: H2Stream) -> None:
        if req.path != "/tiny":
            await default_h2_handler(req, stream)
            return
        await stream.send_headers(200)
        frame = DataFrame(req.stream_id, data=b"x").serialize()
        await stream.connection.flood(frame, count)
        await stream.send_data(b"", end_stream=True)

    async with open_h2_server(handler) as server, Transport(**H2C) as pool:
        tracemalloc.start()
        try:
            response = await pool.round_trip(Request("GET", server.url_for("/tiny")))
            with anyio.fail_after(30):  # a hang guard
                await wait_until(lambda body=response._stream: body.is_consumed, timeout=30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, peak
        assert await response.aread() == b"x" * count
        assert_nothing_in_use(pool)


# -- found by review: a pump that starts late, a GOAWAY's flush, stream identifiers run out ----


def _body_pumps() -> int:
    from tests.test_lifetime import pool_tasks

    return sum(name.startswith("asyncpool h2 body") for name in pool_tasks())


@pytest.mark.parametrize("ended_by", ["the final response", "a raising wrote_headers hook"])
async def test_a_body_pump_that_starts_after_its_stream_ended_pulls_nothing_and_ends(
    ended_by: str,
) -> None:
    """A streamed body's pump task may get its first turn after the stream ended (100 Continue
    and the final response in one read; a hook that fails the stream in round_trip). Its scope
    is made with the task, so it ends then, without a chunk: it used to pull 64 KiB of the
    body and then wait for ever, its iterator open, until the Transport closed."""
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 4096

    async def continue_then_answer(req: H2Request, stream: H2Stream) -> None:
        await stream.send_informational(100)  # with the final response, in one read
        await stream.respond(200, [], b"done")

    def boom() -> None:
        raise RuntimeError("wrote_headers hook failed")

    by_response = ended_by == "the final response"
    handler = continue_then_answer if by_response else default_h2_handler
    trace = None if by_response else asyncpool.ClientTrace(wrote_headers=boom)
    async with (
        open_h2_server(handler) as server,
        Transport(expect_continue_timeout=60, **H2C) as pool,
    ):
        request = Request(
            "PUT",
            server.url_for("/echo"),
            headers={"Expect": "100-continue"} if by_response else None,
            content=body(),
            trace=trace,
        )
        if by_response:
            assert await (await pool.round_trip(request)).aread() == b"done"
        else:
            with pytest.raises(RuntimeError, match="wrote_headers hook failed"):
                await pool.round_trip(request)
        await wait_until(lambda: _body_pumps() == 0)
        assert pulled == 0
        assert_nothing_in_use(pool)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the order of the turns below
async def test_headers_that_go_out_with_a_goaway_are_not_retried_as_never_sent() -> None:
    """The server breaks the protocol while a request's HEADERS wait in h2 for the writer: the
    reader writes h2's GOAWAY, and with it those HEADERS. That request may reach the server, so
    it must not be retried as never sent (it reached the server twice). On asyncio the turns
    are fixed: the caller opens its stream, then the reader reads the bad frame, both before
    the writer runs."""
    data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # a connection error for h2
    async with open_h2_server() as server, Transport(**H2C) as pool:
        await (await pool.round_trip(Request("GET", server.url))).aread()  # a connection
        go = anyio.Event()
        outcome: list[object] = []

        async def caller() -> None:
            await go.wait()
            try:
                outcome.append(await pool.round_trip(Request("GET", server.url_for("/b"))))
            except asyncpool.HTTPError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await wait_until(lambda: go.statistics().tasks_waiting == 1)
            raw = server.connections[0]._stream.extra(anyio.abc.SocketAttribute.raw_socket)
            os.write(raw.fileno(), data_on_stream_0)  # readable by the client at its next poll
            await anyio.lowlevel.checkpoint()
            go.set()  # the caller runs, then the reader
        (result,) = outcome
        assert isinstance(result, asyncpool.RemoteProtocolError)
        assert result.retry_hint is None
    assert [r.path for r in server.requests].count("/b") <= 1


async def test_a_connection_whose_stream_identifiers_ran_out_takes_no_more_streams() -> None:
    """After 2**30 streams a connection has no identifier left (RFC 9113, 5.1.1): the stream
    that takes the last one is served, the connection closes after it, and the next request
    gets a new one (every request failed with h2's NoAvailableStreamIDError, untyped)."""
    async with open_h2_server() as server, Transport(**H2C) as pool:
        await (await pool.round_trip(Request("GET", server.url))).aread()
        (conn,) = [c for c in pool._pool.open if isinstance(c, HTTP2Connection)]
        conn._h2.highest_outbound_stream_id = 2**31 - 3  # the next stream takes the last id
        for _ in range(3):
            response = await pool.round_trip(Request("GET", server.url))
            await response.aread()
            assert response.status_code == 200
        assert conn.closed
        assert pool.stats().dials == 2
        assert_nothing_in_use(pool)


async def test_a_stream_given_back_unused_lets_its_connection_idle_out() -> None:
    """A stream reserved for a waiting request that then gives it back unused (here its own
    ``wait_for_conn_done`` hook fails it) may leave the connection idle: its reader, waiting
    with no deadline while the stream was reserved, is told, so the idle timeout closes it (the
    connection stayed open as long as the server kept quiet)."""

    def failing_hook(waited: float, error: BaseException | None) -> None:
        raise RuntimeError("wait_for_conn_done hook failed")

    trace = asyncpool.ClientTrace(wait_for_conn_done=failing_hook)
    async with (
        open_h2_server(max_concurrent_streams=1) as server,
        Transport(strict_max_concurrent_streams=True, idle_conn_timeout=0.1, **H2C) as pool,
    ):
        async with anyio.create_task_group() as tg:

            async def first() -> None:
                await (await pool.round_trip(Request("GET", server.url_for("/wait")))).aread()

            async def second() -> None:
                with pytest.raises(RuntimeError, match="wait_for_conn_done hook failed"):
                    await pool.round_trip(Request("GET", server.url, trace=trace))

            tg.start_soon(first)
            await wait_until(lambda: server.active_streams == 1)
            tg.start_soon(second)
            await wait_until(lambda: pool.stats().waiting == 1)
            server.release.set()
        await server.wait_until(lambda s: s.open_connections == 0)
        assert pool.stats().idle_timeouts == 1
