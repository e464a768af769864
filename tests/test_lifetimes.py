"""Connection lifetimes end to end, over real loopback (the pool's rules are specified with a
fake clock in tests/test_pool.py): ``max_requests_per_conn`` replaces an HTTP/1.1 connection
and drains an HTTP/2 one; ``max_conn_lifetime`` retires a connection whose deadline passed;
the ``conn_closed`` trace hook and ``stats()`` say why. No sleeps, no timing."""

from __future__ import annotations

import anyio
import pytest

from asyncpool import ClientTrace, CloseReason, ConnClosedInfo, Request, Transport
from tests.h2server import open_h2_server
from tests.servers import TestServer, wait_until

pytestmark = pytest.mark.anyio


class Closes:
    """A trace recording each connection's CloseReason, in order."""

    def __init__(self) -> None:
        self.reasons: list[CloseReason] = []
        self.addresses: list[object] = []  # each closed connection's local address
        self.trace = ClientTrace(conn_closed=self._closed)

    def _closed(self, info: ConnClosedInfo) -> None:
        self.reasons.append(info.reason)
        self.addresses.append(info.local_address)


async def get(pool: Transport, url: str) -> bytes:
    response = await pool.round_trip(Request("GET", url))
    return await response.aread()


async def test_max_requests_per_conn_replaces_an_http11_connection(server: TestServer) -> None:
    closes = Closes()
    async with Transport(max_requests_per_conn=2, trace=closes.trace) as pool:
        for _ in range(5):
            await get(pool, server.url)
        assert server.connections_accepted == 3  # 2 + 2 + 1 requests
        assert closes.reasons == [CloseReason.MAX_REQUESTS] * 2
        assert pool.stats().max_requests_expirations == 2
        assert pool.stats().idle == 1
    assert closes.reasons[2:] == [CloseReason.POOL_CLOSED]


async def test_a_connection_past_its_lifetime_closes_when_its_response_ends(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    closes = Closes()
    # Every connection ends as it is made (no clock to wait for): each request needs a new one.
    monkeypatch.setattr(Transport, "_conn_deadline", lambda self, now: now)
    async with Transport(max_conn_lifetime=60.0, trace=closes.trace) as pool:
        for _ in range(3):
            assert await get(pool, server.url)
        assert server.connections_accepted == 3
        assert closes.reasons == [CloseReason.MAX_LIFETIME] * 3
        assert pool.stats().lifetime_expirations == 3


async def test_an_http2_connection_drains_after_max_requests_per_conn(anyio_backend: str) -> None:
    closes = Closes()
    async with (
        open_h2_server() as server,
        Transport(http2_prior_knowledge=True, max_requests_per_conn=1, trace=closes.trace) as pool,
    ):
        results: list[bytes] = []

        async def slow() -> None:
            results.append(await get(pool, server.url_for("/wait")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await wait_until(lambda: server.active_streams == 1)
            # Its one request spent, the first connection takes no new stream: a second one.
            assert await get(pool, server.url) == b"hello"
            assert server.connections_accepted == 2
            # The second (one request, done) closed; the first still drains its open stream.
            assert closes.reasons == [CloseReason.MAX_REQUESTS]
            server.release.set()
        assert results == [b"released"]
        await wait_until(lambda: len(closes.reasons) == 2)
        assert closes.reasons == [CloseReason.MAX_REQUESTS] * 2
        assert closes.addresses[0] != closes.addresses[1]  # the first closed last
        assert pool.stats().max_requests_expirations == 2


def test_the_transport_takes_the_options() -> None:
    pool = Transport(max_conn_lifetime=30.0, max_requests_per_conn=100)
    assert pool.max_conn_lifetime == 30.0 and pool.max_requests_per_conn == 100
    assert pool._pool.options.max_requests_per_conn == 100


async def test_the_sweeper_drains_an_http2_connection_in_use_at_its_deadline(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    closes = Closes()
    # The connection ends as it is made: the dial wakes the sweeper (asleep until something is
    # idle), which retires it while its one stream is still open.
    monkeypatch.setattr(Transport, "_conn_deadline", lambda self, now: now)
    async with (
        open_h2_server() as server,
        Transport(http2_prior_knowledge=True, max_conn_lifetime=60.0, trace=closes.trace) as pool,
    ):
        results: list[bytes] = []

        async def slow() -> None:
            results.append(await get(pool, server.url_for("/wait")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await wait_until(lambda: pool.stats().lifetime_expirations == 1)
            assert closes.reasons == []  # draining: its stream is open
            server.release.set()
        assert results == [b"released"]
        await wait_until(lambda: bool(closes.reasons))
        assert closes.reasons == [CloseReason.MAX_LIFETIME]


async def test_the_idle_timeout_applies_while_a_lifetime_deadline_is_pending(
    server: TestServer,
) -> None:
    """The sweeper sleeps until the next deadline it knows (here a lifetime an hour away);
    a connection that goes idle meanwhile wakes it, for its idle timeout comes first (it was
    kept for the hour)."""
    async with Transport(idle_conn_timeout=0.05, max_conn_lifetime=3600) as pool:
        response = await pool.round_trip(Request("GET", server.url))
        await response.aread()
        assert pool.stats().idle == 1
        await server.wait_for_connections_closed()
        stats = pool.stats()
        assert (stats.idle, stats.idle_timeouts, stats.lifetime_expirations) == (0, 1, 0)


async def test_a_connection_handed_out_and_not_used_does_not_count_a_request(
    server: TestServer,
) -> None:
    """A ``got_conn`` hook that raises fails its request before it uses the idle connection it
    was given: that hand-out is not one of ``max_requests_per_conn`` (the connection was
    retired with one request done)."""

    def failing_hook(info: object) -> None:
        raise RuntimeError("got_conn hook failed")

    async with Transport(max_requests_per_conn=2) as pool:
        await (await pool.round_trip(Request("GET", server.url))).aread()
        with pytest.raises(RuntimeError, match="got_conn hook failed"):
            await pool.round_trip(
                Request("GET", server.url, trace=ClientTrace(got_conn=failing_hook))
            )
        stats = pool.stats()
        assert (stats.idle, stats.max_requests_expirations) == (1, 0)
        await (await pool.round_trip(Request("GET", server.url))).aread()
        assert pool.stats().max_requests_expirations == 1  # its second request
