"""ClientTrace: Go's hooks in Go's order, the pool events Go hides, composition, timings and
logging; a hook that raises fails its request without hurting the pool."""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

import asyncpool
from asyncpool import ClientTrace, CloseReason, GotConnInfo, Request, Transport, client_trace
from asyncpool._trace import frozen
from asyncpool.testing import MockServer, Reply
from tests.servers import (
    ServerConnection,
    ServerRequest,
    TestServer,
    TLSFixture,
    open_server,
    wait_until,
)

pytestmark = pytest.mark.anyio


class Recorder:
    """A trace recording every hook as ``name`` or ``name:detail``, in order."""

    # The round trip's bounds are recorded when asked for (test_round_trip_hooks), left out of
    # the sequences of the other tests.
    BOUNDS = ("request_start", "request_done")

    def __init__(self, *, bounds: bool = False) -> None:
        self.events: list[str] = []
        self.infos: dict[str, list[Any]] = {}
        hooks = {
            field: self._hook(field)
            for field in ClientTrace.__dataclass_fields__
            if bounds or field not in self.BOUNDS
        }
        self.trace = ClientTrace(**hooks)

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(*args: Any) -> None:
            check_hook_call(name, args)
            self.infos.setdefault(name, []).append(args)
            detail = DETAILS.get(name)
            self.events.append(f"{name}:{detail(*args)}" if detail else name)

        return hook

    def without(self, *names: str) -> list[str]:
        return [e for e in self.events if e.split(":")[0] not in names]


HOOK_TYPES = typing.get_type_hints(ClientTrace)


def conforms(value: object, expected: Any) -> bool:
    """``value`` is of the annotated type ``expected`` (the few forms ClientTrace uses)."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is type(None):
        return value is None
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, arg) for arg in args)
    if origin is tuple:
        return (
            isinstance(value, tuple) and len(value) == len(args) and all(map(conforms, value, args))
        )
    if origin is list:
        return isinstance(value, list) and all(conforms(item, args[0]) for item in value)
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def check_hook_call(name: str, args: tuple[Any, ...]) -> None:
    """Every hook is called as its annotation in ClientTrace says (the type checkers trust it)."""
    (hook_type,) = [t for t in typing.get_args(HOOK_TYPES[name]) if t is not type(None)]
    params = typing.get_args(hook_type)[0]
    assert len(args) == len(params) and all(map(conforms, args, params)), (
        f"{name}{args!r} does not match {hook_type}"
    )


DETAILS: dict[str, Callable[..., object]] = {
    "got_conn": lambda info: f"reused={info.reused},was_idle={info.was_idle}",
    "put_idle_conn": lambda err: err,
    "connect_done": lambda network, addr, err: "ok" if err is None else "failed",
    "wrote_request": lambda info: info.err,
    "wait_for_conn_done": lambda queued, err: "ok" if err is None else type(err).__name__,
    "got_1xx_response": lambda code, headers: code,
    "request_retried": lambda info: info.reason,
    "conn_closed": lambda info: info.reason.name,
    "tls_handshake_done": lambda ssl_object, err: err,
}
FIELDS = ("wrote_header_field",)  # one event per header: left out of the sequences below


async def get(pool: Transport, url: str, trace: ClientTrace | None = None, **kw: Any) -> bytes:
    response = await pool.round_trip(Request("GET", url, trace=trace, **kw))
    return await response.aread()


# -- Go's order -------------------------------------------------------------------------------


async def test_hooks_of_a_fresh_connection(server: TestServer) -> None:
    rec = Recorder()
    async with Transport() as pool:
        await get(pool, server.url, rec.trace)
    assert rec.without(*FIELDS) == [
        "get_conn",
        "wait_for_conn_start",
        "connect_start",
        "connect_done:ok",
        "wait_for_conn_done:ok",
        "got_conn:reused=False,was_idle=False",
        "wrote_headers",
        "wrote_request:None",
        "got_first_response_byte",
        "got_response_end",
        "put_idle_conn:None",
        "conn_closed:POOL_CLOSED",
    ]
    fields = [args[0] for args in rec.infos["wrote_header_field"]]
    assert fields == ["Host", "Accept-Encoding"]
    assert rec.infos["get_conn"] == [(f"127.0.0.1:{server.port}",)]


async def test_round_trip_hooks(server: TestServer) -> None:
    """request_start first of all, request_done once the head arrived; the trace request_start
    returns fires for that request only, innermost; add_headers reach the wire, uncached."""
    rec, extra = Recorder(bounds=True), Recorder(bounds=True)
    sent: list[Any] = []

    def start(info: asyncpool.RequestStartInfo) -> ClientTrace | None:
        rec.trace.request_start(info)  # type: ignore[misc]
        info.add_headers.append(("x-added", str(len(sent))))
        sent.append(info.request)
        return extra.trace if len(sent) == 1 else None

    trace = dataclasses.replace(rec.trace, request_start=start)
    async with Transport(trace=trace) as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/")))
        await response.aread()
        await get(pool, server.url_for("/"))
    events = [e for e in rec.events if e != "wrote_header_field"]
    assert events[0] == "request_start"
    assert events.index("request_done") > events.index("got_first_response_byte")
    assert events.count("request_start") == events.count("request_done") == 2
    ((done,),) = extra.infos["request_done"]
    assert done.request is sent[0] and done.response is response and done.error is None
    assert "request_start" not in extra.infos  # fired by the outer trace only
    assert [r.header("x-added") for r in server.requests] == ["0", "1"]
    assert "x-added" not in sent[0].headers


async def test_request_done_on_failure() -> None:
    rec = Recorder(bounds=True)
    async with Transport(trace=rec.trace) as pool:
        with pytest.raises(asyncpool.ConnectError):
            await get(pool, "http://127.0.0.1:1/")
    ((done,),) = rec.infos["request_done"]
    assert done.response is None and isinstance(done.error, asyncpool.ConnectError)


async def test_hooks_of_a_fresh_tls_connection(tls_server: TestServer, tls: TLSFixture) -> None:
    rec = Recorder()
    async with Transport(tls_config=tls.client_context) as pool:
        await get(pool, tls_server.url.replace("127.0.0.1", "localhost"), rec.trace)
    dial = rec.events[2 : rec.events.index("wait_for_conn_done:ok")]
    assert dial[:2] == ["dns_start", "dns_done"]
    assert dial[-3:] == ["connect_done:ok", "tls_handshake_start", "tls_handshake_done:None"]
    assert rec.infos["dns_start"][0][0].host == "localhost"
    assert "127.0.0.1" in rec.infos["dns_done"][0][0].addrs


async def test_hooks_of_a_reused_connection(server: TestServer) -> None:
    rec = Recorder()
    async with Transport() as pool:
        await get(pool, server.url)
        await get(pool, server.url, rec.trace)
    assert rec.without(*FIELDS) == [
        "get_conn",
        "got_conn:reused=True,was_idle=True",
        "wrote_headers",
        "wrote_request:None",
        "got_first_response_byte",
        "got_response_end",
        "put_idle_conn:None",
        "conn_closed:POOL_CLOSED",
    ]
    (info,) = rec.infos["got_conn"][0]
    assert 0 < info.idle_time < 60


async def test_hooks_of_a_connection_handed_straight_to_a_waiting_request() -> None:
    release = anyio.Event()

    async def held_once(req: ServerRequest, conn: ServerConnection) -> None:
        if len(server.requests) == 1:
            await release.wait()
        await conn.respond(200, [], b"ok")

    rec = Recorder()
    async with (
        open_server(held_once) as server,
        Transport(max_conns_per_host=1) as pool,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(get, pool, server.url)
        await server.wait_until(lambda s: len(s.requests) == 1)
        tg.start_soon(get, pool, server.url, rec.trace)
        await wait_until(lambda: pool.stats().waiting == 1)
        release.set()
    assert rec.without(*FIELDS)[:4] == [
        "get_conn",
        "wait_for_conn_start",
        "wait_for_conn_done:ok",
        "got_conn:reused=True,was_idle=False",
    ]
    queued, _ = rec.infos["wait_for_conn_done"][0]
    assert queued > 0


async def test_hooks_of_a_failed_dial() -> None:
    async def refuse(host: str, port: int) -> anyio.abc.ByteStream:
        raise ConnectionRefusedError("refused")

    rec = Recorder()
    async with Transport(dial=refuse) as pool:
        with pytest.raises(asyncpool.ConnectError):
            await get(pool, "http://127.0.0.1:9/", rec.trace)
    assert rec.events == ["get_conn", "wait_for_conn_start", "wait_for_conn_done:ConnectError"]


async def test_hooks_of_a_retried_request() -> None:
    async def drop_second(req: ServerRequest, conn: ServerConnection) -> None:
        if req.index_on_connection == 1:
            await conn.close()
        else:
            await conn.respond(200, [], b"ok")

    rec = Recorder()
    async with open_server(drop_second) as server, Transport() as pool:
        await get(pool, server.url)
        await get(pool, server.url, rec.trace)
    events = rec.without(*FIELDS, "wrote_headers", "connect_start", "connect_done")
    assert events == [
        "get_conn",
        "got_conn:reused=True,was_idle=True",
        "wrote_request:None",
        "conn_closed:SERVER_CLOSED",
        "request_retried:no response",
        "get_conn",
        "wait_for_conn_start",
        "wait_for_conn_done:ok",
        "got_conn:reused=False,was_idle=False",
        "wrote_request:None",
        "got_first_response_byte",
        "got_response_end",
        "put_idle_conn:None",
        "conn_closed:POOL_CLOSED",
    ]
    (info,) = rec.infos["request_retried"][0]
    assert isinstance(info.error, asyncpool.ServerDisconnected)
    assert info.attempt == 1


async def test_hooks_of_100_continue(server: TestServer) -> None:
    rec = Recorder()
    async with Transport() as pool:
        request = Request(
            "PUT",
            server.url_for("/echo"),
            headers={"Expect": "100-continue"},
            content=b"body",
            trace=rec.trace,
        )
        await (await pool.round_trip(request)).aread()
    assert rec.without(*FIELDS)[-8:] == [
        "wrote_headers",
        "wait_100_continue",
        "got_first_response_byte",
        "got_100_continue",
        "wrote_request:None",
        "got_response_end",
        "put_idle_conn:None",
        "conn_closed:POOL_CLOSED",
    ]


async def test_hooks_of_a_1xx_response() -> None:
    async def hints(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.send_informational(103, [("link", "</a.css>")])
        await conn.respond(200, [], b"ok")

    rec = Recorder()
    async with open_server(hints) as server, Transport() as pool:
        await get(pool, server.url, rec.trace)
    assert rec.without(*FIELDS)[-6:] == [
        "wrote_request:None",
        "got_first_response_byte",
        "got_1xx_response:103",
        "got_response_end",
        "put_idle_conn:None",
        "conn_closed:POOL_CLOSED",
    ]
    _, headers = rec.infos["got_1xx_response"][0]
    assert headers["link"] == "</a.css>"


# -- pool events ------------------------------------------------------------------------------


async def test_conn_closed_says_why(server: TestServer) -> None:
    rec = Recorder()
    # IDLE_TIMEOUT is tests/test_transport.py's sweeper test's, which needs no long wait.
    async with open_server() as other, Transport(trace=rec.trace, max_idle_conns=1) as pool:
        await get(pool, server.url_for("/close"))  # NOT_REUSABLE: Connection: close
        await get(pool, server.url)
        await get(pool, other.url)  # EVICTED: the server's idle connection, by the LRU
        await other.close_idle_connections()  # SERVER_CLOSED: other's
        await wait_until(lambda: pool.stats().total == 0)
        response = await pool.round_trip(Request("GET", server.url_for("/stream?chunks=1000")))
    await response.aclose()  # POOL_CLOSED: in use when the pool closed
    reasons = [e.split(":")[1] for e in rec.events if e.startswith("conn_closed")]
    assert reasons == ["NOT_REUSABLE", "EVICTED", "SERVER_CLOSED", "POOL_CLOSED"]
    (info,) = rec.infos["conn_closed"][0]
    assert info.requests == 1 and info.remote_address[0] == "127.0.0.1"
    assert info.reason is CloseReason.NOT_REUSABLE and info.error is None


async def test_a_raising_conn_closed_hook_is_logged_not_raised(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(info: object) -> None:
        raise RuntimeError("observer broke")

    async with Transport(trace=ClientTrace(conn_closed=boom)) as pool:
        await get(pool, server.url_for("/close"))
        assert pool.stats().total == 0
    assert "conn_closed trace hook raised" in caplog.text


# -- composition ------------------------------------------------------------------------------


def recorder(events: list[str], name: str) -> ClientTrace:
    return ClientTrace(
        get_conn=lambda host_port: events.append(f"{name}:get_conn"),
        got_conn=lambda info: events.append(f"{name}:got_conn"),
    )


async def test_traces_compose_innermost_first(server: TestServer) -> None:
    events: list[str] = []
    async with Transport(trace=recorder(events, "pool")) as pool:
        with client_trace(recorder(events, "outer")), client_trace(recorder(events, "inner")):
            await get(pool, server.url, recorder(events, "request"))
    names = ["request", "inner", "outer", "pool"]
    assert events == [f"{n}:get_conn" for n in names] + [f"{n}:got_conn" for n in names]


async def test_a_block_trace_applies_only_inside_the_block(server: TestServer) -> None:
    events: list[str] = []
    async with Transport() as pool:
        with client_trace(recorder(events, "block")):
            await get(pool, server.url)
        await get(pool, server.url)
    assert events == ["block:get_conn", "block:got_conn"]


async def test_got_conn_reports_addresses_and_protocol(server: TestServer) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    async with Transport() as pool:
        await get(pool, server.url, ClientTrace(got_conn=infos.append))
    assert infos[0].remote_address[:2] == ("127.0.0.1", server.port)
    assert infos[0].local_address[0] == "127.0.0.1"
    assert infos[0].protocol == "HTTP/1.1"


@pytest.mark.parametrize(
    "hook",
    [
        "get_conn",
        "wait_for_conn_start",
        "connect_start",
        "wait_for_conn_done",
        "got_conn",
        "wrote_headers",
        "wrote_request",
        "got_first_response_byte",
        "got_response_end",
        "put_idle_conn",
    ],
)
async def test_a_raising_hook_fails_its_request_and_leaves_the_pool_consistent(
    server: TestServer, hook: str
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError(f"{hook} hook failed")

    async with Transport() as pool:
        with pytest.raises(RuntimeError, match=f"{hook} hook failed"):
            await get(pool, server.url, ClientTrace(**{hook: boom}))
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.dialing) == (0, 0, 0)
        assert await get(pool, server.url) == b"hello"
        assert pool.stats().in_use == 0


async def test_a_raising_connect_done_hook_closes_the_connected_socket(server: TestServer) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("connect_done hook failed")

    async with Transport() as pool:
        with pytest.raises(RuntimeError, match="connect_done hook failed"):
            await get(pool, server.url, ClientTrace(connect_done=boom))
        assert server.connections_accepted == 1
        await server.wait_for_connections_closed()  # the socket was not left open
        assert pool.stats().total == 0


async def test_a_raising_put_idle_conn_hook_spares_the_request_the_connection_went_to(
    server: TestServer,
) -> None:
    def boom(reason: object) -> None:
        raise RuntimeError("put_idle_conn hook failed")

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"  # a body that cannot be replayed: no retry hides a lost connection

    results: list[object] = []

    async def post(pool: Transport) -> None:
        try:
            response = await pool.round_trip(
                Request("POST", server.url_for("/echo"), content=body())
            )
            results.append(await response.aread())
        except Exception as exc:
            results.append(exc)

    async with Transport(max_conns_per_host=1) as pool:
        trace = ClientTrace(put_idle_conn=boom)
        url = server.url_for("/stream?chunks=100&size=10")
        first = await pool.round_trip(Request("GET", url, trace=trace))
        async with anyio.create_task_group() as tg:
            tg.start_soon(post, pool)
            await wait_until(lambda: pool.stats().waiting == 1)
            with pytest.raises(RuntimeError, match="put_idle_conn hook failed"):
                await first.aread()  # its end hands the connection to the waiting POST
        assert results == [b"abc"]
        assert server.connections_accepted == 1


# -- timings and logging ----------------------------------------------------------------------


async def test_timings_of_a_fresh_and_a_reused_connection(
    tls_server: TestServer, tls: TLSFixture
) -> None:
    async with Transport(tls_config=tls.client_context) as pool:
        fresh, reused = asyncpool.Timings(), asyncpool.Timings()
        await get(pool, tls_server.url_for("/bytes?n=100000"), fresh.trace)
        await get(pool, tls_server.url, reused.trace)
    phases = fresh.phases()
    assert list(phases) == list(asyncpool.Timings.PHASES)
    assert phases["dns"] is None  # an IP address
    for name in ("queued", "connect", "tls", "request", "server", "transfer"):
        assert phases[name] is not None and phases[name] >= 0, name  # type: ignore[operator]
    assert fresh.total is not None and fresh.total >= sum(v for v in phases.values() if v)
    assert fresh.conn is not None and not fresh.conn.reused
    again = reused.phases()
    assert (again["connect"], again["tls"]) == (None, None)
    assert again["server"] is not None


async def test_timings_of_a_redirected_request_are_its_last_hops() -> None:
    """The trace goes with each hop of a redirect: every get_conn starts the phases over, so
    they are those of the request that got the final response, never a mix."""
    routes = {"/old": Reply(302, [("location", "/new")]), "/new": Reply(200, body=b"moved")}
    timings = asyncpool.Timings()
    async with MockServer(routes=routes) as server, Transport(dial=server.dial) as pool:
        request = Request("GET", "http://example.test/old", trace=timings.trace)
        response = await asyncpool.Client(transport=pool).send(request)
        assert await response.aread() == b"moved"
    assert timings.attempts == 2
    assert timings.conn is not None and timings.conn.reused  # the second hop's
    phases = timings.phases()
    assert phases["connect"] is None  # the first hop's dial is not the last hop's
    assert phases["queued"] is not None and phases["queued"] >= 0
    assert timings.total is not None and timings.total >= sum(v for v in phases.values() if v)


async def test_debug_logging_reports_every_event(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with Transport() as pool:
        with caplog.at_level(logging.DEBUG, logger="asyncpool"):
            await get(pool, server.url)
        messages = [r.getMessage() for r in caplog.records if r.name == "asyncpool"]
        assert any(m.startswith(f"GET {server.url}: got_conn GotConnInfo(") for m in messages)
        assert any("put_idle_conn" in m for m in messages)
        caplog.clear()
        await get(pool, server.url)  # DEBUG off again: nothing is logged
    assert not [r for r in caplog.records if r.name == "asyncpool"]


async def test_stats_after_concurrent_load_and_cancellations(server: TestServer) -> None:
    async with Transport(max_conns_per_host=5) as pool:
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get, pool, server.url_for("/bytes?n=1000"))
        stats = pool.stats()
        assert stats.hosts[server.origin] == asyncpool.HostStats(
            idle=5, in_use=0, dialing=0, waiting=0, total=5
        )
        assert (stats.dials, stats.reused, stats.failed_dials, stats.retries) == (5, 45, 0, 0)

        stream = server.url_for("/stream?chunks=1000&size=100")
        async with anyio.create_task_group() as active:
            for _ in range(5):
                active.start_soon(get, pool, stream)
            await wait_until(lambda: pool.stats().in_use == 5)
            async with anyio.create_task_group() as queued:
                for _ in range(15):
                    queued.start_soon(get, pool, stream)
                await wait_until(lambda: pool.stats().waiting == 15)
                queued.cancel_scope.cancel()
            assert pool.stats().waiting == 0
            active.cancel_scope.cancel()
        stats = pool.stats()
        assert stats.hosts == {}  # every connection was mid-body, so closed; nothing left
        assert (stats.in_use, stats.waiting, stats.dialing, stats.total) == (0, 0, 0, 0)
        assert (stats.dials, stats.reused, stats.failed_dials) == (5, 50, 0)


def test_a_trace_made_without_the_dataclass_init_is_the_same_trace() -> None:
    def hook(*args: object) -> None:
        pass

    fast = frozen(ClientTrace, got_conn=hook, wrote_request=hook)
    assert fast == ClientTrace(got_conn=hook, wrote_request=hook)
    assert fast.got_conn is hook and fast.get_conn is None
    assert dataclasses.replace(fast, get_conn=hook).get_conn is hook
    composed = fast.compose(ClientTrace(get_conn=hook))
    assert (composed.get_conn, composed.got_conn) == (hook, hook)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.got_conn = None  # type: ignore[misc]
    info = frozen(GotConnInfo, reused=True, was_idle=False, idle_time=0.0)
    assert info == GotConnInfo(True, False, 0.0) and hash(info) == hash(
        GotConnInfo(True, False, 0.0)
    )
