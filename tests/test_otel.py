"""asyncpool.otel: metrics against the SDK's InMemoryMetricReader, spans against its
InMemorySpanExporter, over real loopback servers (HTTP/1.1, and HTTP/2 prior knowledge)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncpool import (
    ClientTrace,
    ConnectError,
    LocalProtocolError,
    Request,
    Transport,
    client_trace,
)
from asyncpool.otel import OTelTrace, _key_attributes, instrument
from tests.h2server import open_h2_server
from tests.servers import TestServer

pytestmark = pytest.mark.anyio


@dataclass
class OTel:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def instrument(self, transport: Transport) -> OTelTrace:
        return instrument(
            transport, meter_provider=self.meter_provider, tracer_provider=self.tracer_provider
        )

    def metrics(self) -> dict[str, Any]:
        """Each metric by name (the last collection)."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)


@pytest.fixture
def otel() -> Iterator[OTel]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    yield OTel(reader, exporter, meter_provider, tracer_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


async def get(pool: Transport, url: str, method: str = "GET") -> tuple[int, bytes]:
    response = await pool.round_trip(Request(method, url))
    return response.status_code, await response.aread()


def server_attrs(server: TestServer | Any) -> dict[str, Any]:
    return {"server.address": "127.0.0.1", "server.port": server.port, "url.scheme": "http"}


async def test_request_duration_http11(otel: OTel, server: TestServer) -> None:
    async with Transport() as pool:
        otel.instrument(pool)
        assert await get(pool, server.url_for("/")) == (200, b"hello")
        assert (await get(pool, server.url_for("/status/500")))[0] == 500
        assert (await get(pool, server.url_for("/"), method="FROB"))[0] == 200
    metric = otel.metrics()["http.client.request.duration"]
    assert metric.unit == "s"
    by_attrs = {frozenset(p.attributes.items()): p for p in metric.data.data_points}
    base = {**server_attrs(server), "network.protocol.version": "1.1"}
    ok = {**base, "http.request.method": "GET", "http.response.status_code": 200}
    failed = {**base, "http.request.method": "GET", "http.response.status_code": 500}
    other = {**base, "http.request.method": "_OTHER", "http.response.status_code": 200}
    assert set(by_attrs) == {
        frozenset(ok.items()),
        frozenset({**failed, "error.type": "500"}.items()),
        frozenset(other.items()),
    }
    assert all(p.count == 1 and p.sum > 0 for p in by_attrs.values())
    active = otel.points("http.client.active_requests")
    assert active and all(p.value == 0 for p in active)
    assert otel.metrics()["http.client.active_requests"].unit == "{request}"
    # The connection closed with the pool: its duration was recorded.
    (conn,) = otel.points("http.client.connection.duration")
    assert dict(conn.attributes) == {**server_attrs(server), "network.protocol.version": "1.1"}
    assert conn.count == 1


async def test_request_duration_http2_prior_knowledge(otel: OTel) -> None:
    async with open_h2_server() as server, Transport(http2_prior_knowledge=True) as pool:
        otel.instrument(pool)
        response = await pool.round_trip(Request("GET", server.url + "/"))
        await response.aread()
    (point,) = otel.points("http.client.request.duration")
    assert point.attributes["network.protocol.version"] == "2"
    assert point.attributes["http.response.status_code"] == response.status_code
    (span,) = otel.exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["network.protocol.version"] == "2"


async def test_connect_failure(otel: OTel) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nobody listens there any more
    async with Transport() as pool:
        otel.instrument(pool)
        with pytest.raises(ConnectError):
            await get(pool, f"http://127.0.0.1:{port}/")
    (point,) = otel.points("http.client.request.duration")
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.scheme": "http",
        "error.type": "ConnectError",
    }
    (span,) = otel.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    events = [event.name for event in span.events]
    assert "connect_done" in events and "exception" in events


async def test_open_connections_active_idle_closed(otel: OTel, server: TestServer) -> None:
    def states() -> dict[str, int]:
        found = {"active": 0, "idle": 0}
        for point in otel.points("http.client.open_connections"):
            attributes = dict(point.attributes)
            assert attributes.pop("http.connection.state") in found
            found[point.attributes["http.connection.state"]] += point.value
            assert attributes == server_attrs(server)
        return found

    async with Transport() as pool:
        otel.instrument(pool)
        response = await pool.round_trip(Request("GET", server.url_for("/stream")))
        assert states() == {"active": 1, "idle": 0}
        assert otel.metrics()["http.client.open_connections"].unit == "{connection}"
        await response.aread()
        assert states() == {"active": 0, "idle": 1}
    assert states() == {"active": 0, "idle": 0}
    # Reported as 0 once, then forgotten: a client that reaches many hosts keeps no series.
    assert "http.client.open_connections" not in otel.metrics()


@pytest.mark.parametrize(
    ("url", "proxy", "attributes"),
    [
        ("https://example.com/", None, ("example.com", 443, "https")),  # the key: no port
        ("http://[2001:db8::1]/", None, ("2001:db8::1", 80, "http")),
        ("http://[2001:db8::1]:8080/", None, ("2001:db8::1", 8080, "http")),
        # forwarded through a proxy (with credentials: its key names the user and a digest)
        ("http://origin.test/", "http://user:pw@proxy.test:3128", ("proxy.test", 3128, "http")),
        ("http://origin.test/", "http://[::1]:3128", ("::1", 3128, "http")),
        # tunnelled: the origin is the server
        ("https://origin.test/", "http://user:pw@proxy.test:3128", ("origin.test", 443, "https")),
        ("http://origin.test/", "socks5h://user:pw@proxy.test", ("origin.test", 80, "http")),
    ],
)
def test_open_connections_name_the_server_as_the_requests_metrics_do(
    url: str, proxy: str | None, attributes: tuple[str, int, str]
) -> None:
    key = Request("GET", url).pool_key
    if proxy is not None:
        route_for = Transport(proxy=proxy)._route_for
        assert route_for is not None
        key = route_for(Request("GET", url)).key
    address, port, scheme = attributes
    expected = {"server.address": address, "server.port": port, "url.scheme": scheme}
    assert _key_attributes(key) == expected


async def test_pool_wait_duration(otel: OTel, server: TestServer) -> None:
    async with Transport(max_conns_per_host=1) as pool:
        otel.instrument(pool)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(get, pool, server.url_for("/stream"))
    assert server.connections_accepted == 1
    (point,) = otel.points("asyncpool.pool.wait.duration")
    assert dict(point.attributes) == server_attrs(server)
    assert point.count == 3  # each of them queued: the first for the dial
    assert otel.metrics()["asyncpool.pool.wait.duration"].unit == "s"


async def test_url_full_redacts_the_credentials_of_a_signed_url(
    otel: OTel, server: TestServer
) -> None:
    query = "a=1&Signature=s3cret&sig=abc&X-Goog-Signature=f00&AWSAccessKeyId=AKIA&sigma=2"
    async with Transport() as pool:
        otel.instrument(pool)
        await get(pool, server.url_for(f"/?{query}"))
    (span,) = otel.exporter.get_finished_spans()
    assert span.attributes is not None
    redacted = "a=1&Signature=REDACTED&sig=REDACTED&X-Goog-Signature=REDACTED"
    assert span.attributes["url.full"] == server.url_for(
        f"/?{redacted}&AWSAccessKeyId=REDACTED&sigma=2"
    )


async def test_span_per_request_with_events(otel: OTel, server: TestServer) -> None:
    async with Transport() as pool:
        otel.instrument(pool)
        await get(pool, server.url_for("/?a=1"))
        await get(pool, server.url_for("/status/404"))
    first, second = otel.exporter.get_finished_spans()
    assert first.name == "GET" and first.kind is SpanKind.CLIENT
    assert first.attributes is not None
    assert first.attributes["url.full"] == server.url_for("/?a=1")
    assert first.attributes["http.response.status_code"] == 200
    assert first.status.status_code is StatusCode.UNSET
    assert [event.name for event in first.events] == ["connect_done", "got_conn", "first_byte"]
    assert [event.name for event in second.events] == ["got_conn", "first_byte"]
    assert second.status.status_code is StatusCode.ERROR
    assert second.attributes is not None and second.attributes["error.type"] == "404"


async def test_unknown_method_span(otel: OTel, server: TestServer) -> None:
    async with Transport() as pool:
        otel.instrument(pool)
        await get(pool, server.url_for("/"), method="FROB")
    (span,) = otel.exporter.get_finished_spans()
    assert span.name == "HTTP"
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "FROB"


async def test_traceparent_injected_under_a_parent_span(otel: OTel, server: TestServer) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    async with Transport() as pool:
        otel.instrument(pool)
        with tracer.start_as_current_span("parent") as parent:
            await get(pool, server.url_for("/"))
            await get(pool, server.url_for("/"))  # body-less: its wire headers are cached
    headers = [dict(request.headers) for request in server.requests]
    client_spans = [s for s in otel.exporter.get_finished_spans() if s.name == "GET"]
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    for sent, span in zip(headers, client_spans, strict=True):
        span_id = f"{span.context.span_id:016x}"
        assert sent["traceparent"].startswith(f"00-{trace_id}-{span_id}-")  # then its flags
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert headers[0]["traceparent"] != headers[1]["traceparent"]  # not cached


async def test_traceparent_kept_when_the_request_sets_it(otel: OTel, server: TestServer) -> None:
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with Transport() as pool:
        otel.instrument(pool)
        response = await pool.round_trip(
            Request("GET", server.url_for("/"), headers={"traceparent": given})
        )
        await response.aread()
    assert [v for n, v in server.requests[0].headers if n == "traceparent"] == [given]


async def test_no_traceparent_without_a_tracer(otel: OTel, server: TestServer) -> None:
    """Metrics only (no tracer provider configured: the API's no-op one): nothing injected."""
    async with Transport() as pool:
        instrument(pool, meter_provider=otel.meter_provider)
        await get(pool, server.url_for("/"))
    assert "traceparent" not in dict(server.requests[0].headers)
    assert otel.points("http.client.request.duration")


async def test_composes_with_existing_traces(otel: OTel, server: TestServer) -> None:
    seen: list[str] = []
    pool_trace = ClientTrace(got_conn=lambda info: seen.append("pool"))
    async with Transport(trace=pool_trace) as pool:
        otel.instrument(pool)
        with client_trace(ClientTrace(got_conn=lambda info: seen.append("block"))):
            await get(pool, server.url_for("/"))
    assert seen == ["block", "pool"]
    assert len(otel.exporter.get_finished_spans()) == 1


async def test_otel_trace_given_to_a_request(otel: OTel, server: TestServer) -> None:
    traced = OTelTrace(otel.meter_provider, otel.tracer_provider)
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url_for("/"), trace=traced.trace))
        await response.aread()
        await get(pool, server.url_for("/"))  # not traced
    assert len(otel.exporter.get_finished_spans()) == 1
    (point,) = otel.points("http.client.request.duration")
    assert point.count == 1


def test_asyncpool_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, asyncpool\n"
        "assert not any(m.startswith(('opentelemetry', 'asyncpool.otel')) for m in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_import_without_opentelemetry_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import asyncpool.otel\n"
        "except ImportError as exc:\n"
        "    assert 'asyncpool-http[otel]' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('imported')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def _active_requests(otel: OTel) -> float:
    return sum(point.value for point in otel.points("http.client.active_requests"))


async def test_a_span_ends_when_a_field_a_trace_adds_is_refused(
    otel: OTel, server: TestServer
) -> None:
    """The fields a request_start hook adds are checked after the OTel span started: a refused
    one fails the request, and the span ends with it (it was never ended, and the request
    stayed counted as active)."""
    bad = ClientTrace(request_start=lambda info: info.add_headers.append(("X-Bad", "a\nb")))
    async with Transport(trace=bad) as pool:
        otel.instrument(pool)
        with pytest.raises(LocalProtocolError):
            await pool.round_trip(Request("GET", server.url))
    (span,) = otel.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert _active_requests(otel) == 0


async def test_a_span_ends_when_a_later_request_start_hook_raises(
    otel: OTel, server: TestServer
) -> None:
    """Composed starts: the OTel trace's started a span, the next one raises. The span ends
    with the error (the trace holding it was dropped with the exception)."""

    def failing_start(info: object) -> None:
        raise RuntimeError("request_start hook failed")

    async with Transport(trace=ClientTrace(request_start=failing_start)) as pool:
        with (
            client_trace(otel.instrument(pool).trace),
            pytest.raises(RuntimeError, match="request_start hook failed"),
        ):
            await pool.round_trip(Request("GET", server.url))
    (span,) = otel.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert _active_requests(otel) == 0
