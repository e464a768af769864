"""The Client's retry policy (``Client(retry=Retry(...))``): what is retried and what is not,
the counts, Retry-After, backoff with full jitter, the retry budget, the overall timeout, the
trace and the stats; and ``Transport(retry_unprocessed=False)``.

No test waits for real: the Retrier's ``sleep`` is replaced by one that records the delays."""

from __future__ import annotations

import email.utils
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

import asyncpool
from asyncpool import Client, Retry, RetryBudget, RetryInfo, RetryStats
from asyncpool._retry import Retrier, parse_retry_after
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server

pytestmark = pytest.mark.anyio

Handler = Callable[[ServerRequest, ServerConnection], Awaitable[None]]


def failing(statuses: list[int], headers: list[tuple[str, str]] | None = None) -> Handler:
    """Answers with ``statuses`` in turn (a status 0 closes the connection without an answer),
    then 200 "ok" for ever."""
    schedule = list(statuses)

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.read_body()
        status = schedule.pop(0) if schedule else 200
        if status == 0:
            await conn.close()
        elif status == 200:
            await conn.respond(200, [], b"ok")
        else:
            await conn.respond(status, headers or [], f"failed {status}".encode())

    return handler


def always(status: int) -> Handler:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.read_body()
        await conn.respond(status, [], b"down")

    return handler


class Recorder:
    """The Retrier's sleep and trace: what it waited and what it reported."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.retries: list[RetryInfo] = []
        self.trace = asyncpool.ClientTrace(request_retried=self.retries.append)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)


def retrier(client: Client) -> Retrier:
    assert client._retrier is not None
    return client._retrier


def make_client(recorder: Recorder, *, trace: bool = True, **retry: object) -> Client:
    retry.setdefault("backoff_factor", 0)
    client = Client(
        retry=Retry(**retry),  # type: ignore[arg-type]
        trust_env=False,
        trace=recorder.trace if trace else None,
    )
    retrier(client).sleep = recorder.sleep
    return client


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def test_a_policy_set_after_construction_is_the_one_used() -> None:
    client = Client(trust_env=False)
    client.retry = Retry(backoff_factor=0)
    async with client:
        async with open_server(failing([503])) as server:
            response = await client.get(server.url_for("/"))
            assert (response.status_code, response.content) == (200, b"ok")
            assert client.retry_stats().status_retries == 1
        client.retry = None  # and none, once taken away
        async with open_server(failing([503])) as server:
            assert (await client.get(server.url_for("/"))).status_code == 503


async def test_status_retried_until_success(recorder: Recorder) -> None:
    async with open_server(failing([503, 503])) as server, make_client(recorder) as client:
        response = await client.get(server.url_for("/"))
    assert (response.status_code, response.content) == (200, b"ok")
    assert len(server.requests) == 3
    assert [(r.reason, r.attempt) for r in recorder.retries] == [
        ("status 503", 1),
        ("status 503", 2),
    ]
    error = recorder.retries[0].error
    assert isinstance(error, asyncpool.HTTPStatusError)
    stats = client.retry_stats()
    assert (stats.requests, stats.retries, stats.status_retries) == (1, 2, 2)
    # The retried responses were read, so their connection carried the next request.
    assert server.connections_accepted == 1


async def test_status_retries_exhausted_return_the_last_response(recorder: Recorder) -> None:
    async with open_server(always(503)) as server, make_client(recorder, total=2) as client:
        response = await client.get(server.url_for("/"))
    assert (response.status_code, response.content) == (503, b"down")
    assert len(server.requests) == 3
    assert client.retry_stats().exhausted == 1


async def test_status_count_limits_before_total(recorder: Recorder) -> None:
    async with (
        open_server(always(502)) as server,
        make_client(recorder, total=5, status=1) as client,
    ):
        response = await client.get(server.url_for("/"))
    assert response.status_code == 502
    assert len(server.requests) == 2


async def test_status_outside_the_forcelist_is_not_retried(recorder: Recorder) -> None:
    async with open_server(always(500)) as server, make_client(recorder) as client:
        response = await client.get(server.url_for("/"))
    assert response.status_code == 500
    assert len(server.requests) == 1
    assert recorder.retries == []


async def test_post_is_not_retried(recorder: Recorder) -> None:
    async with open_server(failing([503, 0])) as server, make_client(recorder) as client:
        response = await client.post(server.url_for("/"), content=b"body")
        assert response.status_code == 503
        with pytest.raises(asyncpool.ReadError):
            await client.post(server.url_for("/"), content=b"body")
    assert len(server.requests) == 2


async def test_post_with_an_idempotency_key_is_retried(recorder: Recorder) -> None:
    async with open_server(failing([503, 0])) as server, make_client(recorder) as client:
        response = await client.post(
            server.url_for("/"), content=b"body", headers={"Idempotency-Key": "k1"}
        )
    assert response.status_code == 200
    assert [r.body for r in server.requests] == [b"body"] * 3
    # The 503 was read and its connection reused: the Transport retried the request that
    # died on it (Go's retry), not the policy.
    assert [r.reason for r in recorder.retries] == ["status 503", "no response"]
    assert client.retry_stats().retries == 1


async def test_a_body_that_cannot_be_replayed_is_not_retried(recorder: Recorder) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    async with open_server(always(503)) as server, make_client(recorder) as client:
        response = await client.put(server.url_for("/"), content=body())
    assert response.status_code == 503
    assert len(server.requests) == 1


async def test_read_error_retried_for_get(recorder: Recorder) -> None:
    async with open_server(failing([0, 0])) as server, make_client(recorder) as client:
        response = await client.get(server.url_for("/"))
    assert response.status_code == 200
    assert len(server.requests) == 3
    assert client.retry_stats().read_retries == 2
    assert isinstance(recorder.retries[0].error, asyncpool.ReadError)


async def test_read_count_zero_raises_the_error(recorder: Recorder) -> None:
    async with open_server(failing([0])) as server, make_client(recorder, read=0) as client:
        with pytest.raises(asyncpool.ServerDisconnected):
            await client.get(server.url_for("/"))
    assert len(server.requests) == 1


async def test_connection_refused_then_up(recorder: Recorder, server: TestServer) -> None:
    dials = 0

    async def dial(host: str, port: int) -> anyio.abc.ByteStream:
        nonlocal dials
        dials += 1
        if dials == 1:
            raise ConnectionRefusedError("refused")
        return await anyio.connect_tcp(server.host, server.port)

    async with Client(retry=Retry(backoff_factor=0), dial=dial, trust_env=False) as client:
        retrier(client).sleep = recorder.sleep
        response = await client.get(server.url_for("/"))
    assert response.status_code == 200
    assert dials == 2
    stats = client.retry_stats()
    assert (stats.retries, stats.connect_retries) == (1, 1)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connect_errors_retried_whatever_the_method(recorder: Recorder) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    async with make_client(recorder, total=2) as client:
        with pytest.raises(asyncpool.ConnectError):
            await client.post(url, content=b"x")
    assert [(r.reason, r.attempt) for r in recorder.retries] == [
        ("connect error", 1),
        ("connect error", 2),
    ]
    assert client.retry_stats().connect_retries == 2


async def test_retry_after_seconds(recorder: Recorder) -> None:
    handler = failing([503], [("retry-after", "7")])
    async with open_server(handler) as server, make_client(recorder, backoff_factor=1) as client:
        response = await client.get(server.url_for("/"))
    assert response.status_code == 200
    assert recorder.delays == [7.0]
    assert recorder.retries[0].delay == 7.0


async def test_retry_after_http_date_is_capped(recorder: Recorder) -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 3600, usegmt=True)
    handler = failing([429], [("retry-after", date)])
    async with (
        open_server(handler) as server,
        make_client(recorder, retry_after_max=30) as client,
    ):
        retrier(client).now = lambda: now
        response = await client.get(server.url_for("/"))
    assert response.status_code == 200
    assert recorder.delays == [30.0]


async def test_retry_after_ignored_when_asked(recorder: Recorder) -> None:
    handler = failing([503], [("retry-after", "7")])
    async with (
        open_server(handler) as server,
        make_client(recorder, respect_retry_after=False) as client,
    ):
        await client.get(server.url_for("/"))
    assert recorder.delays == []  # backoff_factor 0: no wait


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    # RFC 9110's obsolete forms are accepted too, all in GMT: asctime has no zone at all.
    assert parse_retry_after("Tue Nov 14 22:13:27 2023", now) == 7.0
    assert parse_retry_after("Tuesday, 14-Nov-23 22:13:27 GMT", now) == 7.0
    # What a hostile server may send is no wait, not an untyped error.
    assert parse_retry_after("²", now) is None  # a digit to str.isdigit, not to float
    assert parse_retry_after("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", now) is None


async def test_backoff_full_jitter_with_a_seeded_random(recorder: Recorder) -> None:
    async with (
        open_server(always(503)) as server,
        make_client(recorder, total=4, backoff_factor=0.5, backoff_max=3.0) as client,
    ):
        retrier(client).uniform = random.Random(42).uniform
        await client.get(server.url_for("/"))
    expected = random.Random(42)
    ceilings = [0.5, 1.0, 2.0, 3.0]  # factor * 2**n, capped at backoff_max
    assert recorder.delays == [expected.uniform(0, c) for c in ceilings]
    assert all(0 <= d <= c for d, c in zip(recorder.delays, ceilings, strict=True))
    assert [r.delay for r in recorder.retries] == recorder.delays


def test_backoff_ceiling() -> None:
    policy = Retry(backoff_factor=2.0, backoff_max=10.0)
    highest: Callable[[float, float], float] = lambda low, high: high  # noqa: E731
    assert [policy.backoff(n, highest) for n in range(5)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.backoff(10_000, highest) == 10.0
    assert Retry(backoff_factor=0).backoff(3, highest) == 0.0


def test_policy_is_checked_and_normalised() -> None:
    with pytest.raises(ValueError, match="total"):
        Retry(total=-1)
    with pytest.raises(ValueError):
        RetryBudget(window=0)
    policy = Retry(allowed_methods={"get"}, status_forcelist=[500])  # type: ignore[arg-type]
    assert policy.allowed_methods == frozenset({"GET"})
    assert policy.status_forcelist == frozenset({500})
    hash(policy)


async def run_concurrently(client: Client, url: str, n: int) -> None:
    async def one() -> None:
        response = await client.get(url)
        assert response.status_code == 503

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)


@pytest.mark.parametrize("budget", [True, False])
async def test_budget_caps_retries_of_an_always_failing_server(
    recorder: Recorder, budget: bool
) -> None:
    n = 40
    policy = RetryBudget(ratio=0.1, min_per_second=0.2, window=10.0)  # floor: 2 retries
    async with (
        open_server(always(503)) as server,
        make_client(recorder, trace=False, total=3, budget=policy if budget else None) as client,
    ):
        retrier(client).clock = lambda: 100.0  # one window for the whole run
        await run_concurrently(client, server.url_for("/"), n)
    stats = client.retry_stats()
    assert stats.requests == n
    assert len(server.requests) == n + stats.retries
    if budget:
        assert stats.retries <= 0.1 * n + 2
        assert stats.budget_exhausted > 0
    else:
        assert stats.retries == 3 * n


def test_budget_window_slides() -> None:
    retrier = Retrier(Retry(budget=RetryBudget(ratio=0.5, min_per_second=0, window=10.0)))
    budget = retrier._budget
    assert budget is not None
    now = 0.0
    retrier.clock = lambda: now
    for _ in range(4):
        budget.deposit()
    assert [budget.try_withdraw() is not None for _ in range(3)] == [True, True, False]
    now = 10.5  # the deposits and withdrawals left the window
    assert budget.try_withdraw() is None
    budget.deposit()
    budget.deposit()
    assert [budget.try_withdraw() is not None for _ in range(2)] == [True, False]


async def test_overall_timeout_covers_retries_and_waits(recorder: Recorder) -> None:
    async def wait_for_ever(delay: float) -> None:
        recorder.delays.append(delay)
        await anyio.sleep_forever()

    async with (
        open_server(always(503)) as server,
        Client(retry=Retry(backoff_factor=1), timeout=0.2, trust_env=False) as client,
    ):
        retrier(client).sleep = wait_for_ever
        retrier(client).uniform = lambda low, high: 0.1  # a wait that could end in time
        with pytest.raises(asyncpool.RequestTimeout):
            await client.get(server.url_for("/"))
    assert len(recorder.delays) == 1


async def test_a_wait_past_the_deadline_is_not_made(recorder: Recorder) -> None:
    async with (
        open_server(always(503)) as server,
        Client(retry=Retry(backoff_factor=1), timeout=30, trust_env=False) as client,
    ):
        retrier(client).sleep = recorder.sleep
        retrier(client).uniform = lambda low, high: 60.0  # past the Client's timeout
        response = await client.get(server.url_for("/"))
        assert response.status_code == 503  # the server's answer, at once, not a timeout
        assert (recorder.delays, len(server.requests)) == ([], 1)
        assert client.retry_stats().past_deadline == 1


async def test_a_cancelled_wait_gives_its_budget_token_back(recorder: Recorder) -> None:
    scope = anyio.CancelScope()

    async def cancelled_sleep(delay: float) -> None:
        scope.cancel()  # the caller gives up during the wait: no retry is made
        await anyio.sleep_forever()

    budget = RetryBudget(ratio=0, min_per_second=0.1, window=10)  # one token in all
    async with (
        open_server(always(503)) as server,
        Client(retry=Retry(total=1, budget=budget), trust_env=False) as client,
    ):
        retrier(client).sleep = cancelled_sleep
        with scope:
            await client.get(server.url_for("/"))
        assert client.retry_stats().retries == 0
        retrier(client).sleep = recorder.sleep
        response = await client.get(server.url_for("/"))  # the token is there again
        assert response.status_code == 503 and len(server.requests) == 3
        stats = client.retry_stats()
        assert (stats.retries, stats.status_retries, stats.budget_exhausted) == (1, 1, 0)


async def test_no_policy_no_retries(server: TestServer) -> None:
    async with open_server(always(503)) as server, Client(trust_env=False) as client:
        response = await client.get(server.url_for("/"))
    assert response.status_code == 503
    assert len(server.requests) == 1
    assert client.retry_stats() == RetryStats()
    assert client._retrier is None


async def stale_connection(server: TestServer, **options: object) -> list[RetryInfo]:
    """A GET on a keep-alive connection the server drops at its second request."""
    retries: list[RetryInfo] = []
    trace = asyncpool.ClientTrace(request_retried=retries.append)
    async with Client(trust_env=False, trace=trace, **options) as client:  # type: ignore[arg-type]
        assert (await client.get(server.url_for("/"))).status_code == 200
        assert (await client.get(server.url_for("/"))).status_code == 200
    return retries


async def drop_second(req: ServerRequest, conn: ServerConnection) -> None:
    if req.index_on_connection == 1:
        await conn.close()
    else:
        await conn.respond(200, [], b"ok")


async def test_transport_retries_unprocessed_requests_by_default() -> None:
    async with open_server(drop_second) as server:
        retries = await stale_connection(server)
    assert [r.reason for r in retries] == ["no response"]


async def test_retry_unprocessed_false_turns_the_transport_retry_off() -> None:
    async with open_server(drop_second) as server:
        with pytest.raises(asyncpool.ServerDisconnected):
            await stale_connection(server, retry_unprocessed=False)
        # The Client's policy retries it instead.
        retries = await stale_connection(
            server, retry_unprocessed=False, retry=Retry(backoff_factor=0)
        )
    assert [r.reason for r in retries] == ["read error"]
