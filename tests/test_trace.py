"""ClientTrace: attached per request or around a block, composed inner first, and a hook that
raises fails its request without hurting the pool."""

from __future__ import annotations

import pytest

import asyncpool
from asyncpool import ClientTrace, Request, Transport, client_trace
from tests.servers import TestServer

pytestmark = pytest.mark.anyio


def recorder(events: list[str], name: str) -> ClientTrace:
    return ClientTrace(
        get_conn=lambda host_port: events.append(f"{name}:get_conn"),
        got_conn=lambda info: events.append(f"{name}:got_conn"),
    )


async def test_request_trace_and_block_traces_compose_innermost_first(server: TestServer) -> None:
    events: list[str] = []
    async with Transport() as pool:
        with client_trace(recorder(events, "outer")), client_trace(recorder(events, "inner")):
            request = Request("GET", server.url, trace=recorder(events, "request"))
            await (await pool.round_trip(request)).aread()
    assert events == [
        "request:get_conn",
        "inner:get_conn",
        "outer:get_conn",
        "request:got_conn",
        "inner:got_conn",
        "outer:got_conn",
    ]


async def test_a_block_trace_applies_only_inside_the_block(server: TestServer) -> None:
    events: list[str] = []
    async with Transport() as pool:
        with client_trace(recorder(events, "block")):
            await (await pool.round_trip(Request("GET", server.url))).aread()
        await (await pool.round_trip(Request("GET", server.url))).aread()
    assert events == ["block:get_conn", "block:got_conn"]


async def test_got_conn_reports_reuse_and_idle_time(server: TestServer) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    trace = ClientTrace(got_conn=infos.append)
    async with Transport() as pool:
        for _ in range(2):
            await (await pool.round_trip(Request("GET", server.url, trace=trace))).aread()
    fresh, reused = infos
    assert (fresh.reused, fresh.was_idle, fresh.idle_time) == (False, False, 0.0)
    assert (reused.reused, reused.was_idle) == (True, True)
    assert reused.idle_time >= 0
    assert reused.remote_address[:2] == ("127.0.0.1", server.port)
    assert reused.protocol == "HTTP/1.1"


@pytest.mark.parametrize("hook", ["got_first_response_byte", "wrote_headers", "connect_start"])
async def test_a_raising_hook_fails_its_request_and_leaves_the_pool_consistent(
    server: TestServer, hook: str
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError(f"{hook} hook failed")

    async with Transport() as pool:
        with pytest.raises(RuntimeError, match=f"{hook} hook failed"):
            response = await pool.round_trip(
                Request("GET", server.url, trace=ClientTrace(**{hook: boom}))
            )
            await response.aread()
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0)
        assert await (await pool.round_trip(Request("GET", server.url))).aread() == b"hello"
