"""httpx's timeouts on HTTPXTransport, phase by phase: ``pool`` only while a request waits for a
connection or a slot (never the adapter's own work, nor a dial started for it), ``connect``
for the dial (and the dial itself gets it), and a deadline that fired reported as its own
phase whatever the pool's tasks did since. On asyncio and trio, over asyncpool.testing's
MockServer."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

import asyncpool
import asyncpool._transport
from asyncpool.httpx import HTTPXTransport, _Exchange
from asyncpool.testing import MockServer, Reply, wait_until

pytestmark = pytest.mark.anyio

MOCK_URL = "http://mock.test/"
ROUTES = {"/": Reply(body=b"hello")}
# Far less than the adapter's own work takes: only a pool phase that never starts survives it.
TINY = 1e-9


async def test_a_tiny_pool_timeout_never_fires_while_a_slot_is_free() -> None:
    async with MockServer(routes=ROUTES) as server:
        transport = HTTPXTransport(dial=server.dial)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):  # a dial for the first, then the idle connection
                response = await client.get(MOCK_URL, timeout=httpx.Timeout(None, pool=TINY))
                assert response.status_code == 200
    assert server.connections_made == 1


async def test_http2_requests_sharing_a_dial_in_flight_are_past_their_pool_phase() -> None:
    # As httpcore assigns them to the connection being established: no pool timeout applies.
    gate = anyio.Event()
    async with MockServer(routes=ROUTES, http2=True) as server:

        async def gated_dial(host: str, port: int) -> anyio.abc.ByteStream:
            await gate.wait()
            return await server.dial(host, port)

        transport = HTTPXTransport(http2_prior_knowledge=True, dial=gated_dial)
        statuses: list[int] = []
        async with httpx.AsyncClient(transport=transport) as client:

            async def get() -> None:
                response = await client.get(MOCK_URL, timeout=httpx.Timeout(None, pool=TINY))
                statuses.append(response.status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(get)
                await wait_until(lambda: transport.pool.stats().waiting == 3)
                assert transport.pool.stats().dialing == 1
                gate.set()
    assert statuses == [200, 200, 200]
    assert server.connections_made == 1


async def test_a_request_waiting_at_the_limit_gets_pool_timeout() -> None:
    release = anyio.Event()

    async def handler(request: Any, conn: Any) -> None:
        await conn.send_head(200, [])
        await conn.send_data(b"held")
        await release.wait()
        await conn.end()

    async with MockServer(handler) as server:
        transport = HTTPXTransport(dial=server.dial, max_conns_per_host=1)
        async with (
            httpx.AsyncClient(transport=transport) as client,
            client.stream("GET", MOCK_URL, timeout=httpx.Timeout(None)),
        ):
            with pytest.raises(httpx.PoolTimeout, match=r"pool timeout of 1e-09 s"):
                await client.get(MOCK_URL, timeout=httpx.Timeout(None, pool=TINY))
            release.set()


def _exchange(timeouts: dict[str, float | None]) -> _Exchange:
    request = httpx.Request("GET", "http://127.0.0.1/")
    return _Exchange(request, timeouts, None, HTTPXTransport().pool, anyio.CancelScope())


async def test_a_deadline_that_fired_is_reported_as_its_phase_whatever_comes_after() -> None:
    exchange = _exchange({"pool": TINY, "connect": None, "write": None, "read": None})
    with exchange.scope:
        exchange.conn_waiting()
        await anyio.sleep_forever()  # ended by the pool deadline
    assert exchange.scope.cancel_called
    # The pool's tasks move on meanwhile (a dial for it, the connection handed over, written):
    # none of that makes it another phase's timeout, nor one "of None".
    exchange.conn_dialing()
    exchange.conn_assigned()
    trace = exchange.client_trace()
    assert trace.got_conn is not None and trace.wrote_request is not None
    trace.got_conn(asyncpool.GotConnInfo(reused=False, was_idle=False, idle_time=0.0))
    trace.wrote_request(asyncpool.WroteRequestInfo(None))
    error = exchange.timeout_error()
    assert type(error) is httpx.PoolTimeout
    assert "within the pool timeout of 1e-09 s" in str(error)


async def test_the_phases_follow_the_pools_decisions_and_only_move_forward() -> None:
    exchange = _exchange({"pool": 1.0, "connect": 2.0, "write": 3.0, "read": 4.0})
    assert (exchange.phase, exchange.scope.deadline) == ("start", float("inf"))
    exchange.conn_dialing()  # a dial started for it: no pool phase at all
    assert exchange.phase == "connect"
    exchange.conn_waiting()  # told again after its dial started: no step back
    assert exchange.phase == "connect"
    exchange.conn_assigned()
    assert exchange.phase == "write"


async def test_httpx_connect_timeout_is_the_dials_for_each_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Timeout(None, connect=15)``: the TLS handshake is not cut at the pool's 10 s."""
    seen: list[tuple[float | None, float | None]] = []

    async def fake_dial(*args: object, **kwargs: Any) -> Any:
        seen.append((kwargs["dial_timeout"], kwargs["tls_handshake_timeout"]))
        raise asyncpool.ConnectError("refused", host="example.test:443")

    monkeypatch.setattr(asyncpool._transport, "dial", fake_dial)
    async with httpx.AsyncClient(transport=HTTPXTransport()) as client:
        for timeout in (httpx.Timeout(None, connect=15), httpx.Timeout(None)):
            with pytest.raises(httpx.ConnectError):
                await client.get("https://example.test/", timeout=timeout)
    # connect=None: httpx has no limit; the pool's own dial timeouts stay as a ceiling.
    assert seen == [(15, 15), (30.0, 10.0)]


async def test_asyncpool_request_connect_timeout_overrides_the_transports() -> None:
    seen: list[tuple[str, int]] = []

    async def never(host: str, port: int) -> anyio.abc.ByteStream:
        seen.append((host, port))
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with asyncpool.Transport(dial=never, dial_timeout=None) as pool:
        request = asyncpool.Request("GET", MOCK_URL, connect_timeout=TINY)
        with pytest.raises(asyncpool.ConnectTimeout, match="1e-09"):
            await pool.round_trip(request)
    assert seen == [("mock.test", 80)]


async def test_the_write_timeout_bounds_each_write_not_the_whole_upload() -> None:
    """As httpcore's, httpx's write timeout bounds each write of a streamed body; the time the
    caller's iterator takes to make a chunk is not a write. The upload below takes longer than
    the write timeout (its producer is slow on purpose) while every write is quick: it used to
    fail with WriteTimeout."""
    from tests.servers import open_server

    async def slow_producer() -> Any:
        for _ in range(4):
            await anyio.sleep(0.1)  # the scenario: 0.4 s of making chunks against write=0.25
            yield b"x" * 10

    async with open_server() as server:
        timeout = httpx.Timeout(5.0, write=0.25)
        async with httpx.AsyncClient(transport=HTTPXTransport(), timeout=timeout) as client:
            response = await client.post(server.url_for("/echo"), content=slow_producer())
            assert response.content == b"x" * 40


async def test_each_connect_attempt_gets_the_connect_timeout_and_the_back_off_none() -> None:
    """``retries=``: httpcore gives each attempt the connect timeout and does not count its
    back-off (0.5 s, then 1 s). A refused connection is a ConnectError after every attempt (it
    was a ConnectTimeout in the first back-off)."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    timeout = httpx.Timeout(5.0, connect=0.3)
    async with httpx.AsyncClient(transport=HTTPXTransport(retries=2), timeout=timeout) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(f"http://127.0.0.1:{port}/")
    assert not isinstance(info.value, httpx.TimeoutException)
