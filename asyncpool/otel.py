"""OpenTelemetry for the pool: HTTP client metrics and spans from its trace hooks.

::

    from asyncpool.otel import instrument

    transport = asyncpool.Transport()
    instrument(transport)  # the global meter and tracer providers, or give them

``instrument(transport)`` attaches an ``OTelTrace`` to the Transport (composed with the trace it
already has) and observes its pool; ``OTelTrace(...).trace`` is a plain ``ClientTrace`` to pass
as ``Transport(trace=...)``, ``Request(trace=...)`` or ``client_trace(...)`` (then call
``observe(transport)`` for ``http.client.open_connections``). Needs the ``otel`` extra
(``opentelemetry-api``); an SDK (or any other implementation) decides where the data goes.

What it records, with the HTTP semantic conventions' names, units and attributes
(``http.request.method``, ``server.address``, ``server.port``, ``url.scheme``, and where known
``http.response.status_code``, ``network.protocol.version``, ``error.type``):

* ``http.client.request.duration`` (histogram, s): from the round trip's start to its response
  head (or failure), retries included. ``error.type`` is the exception's class name, or the
  status code for a status >= 400.
* ``http.client.active_requests`` (up-down counter): round trips under way.
* ``http.client.open_connections`` (observable up-down counter, ``http.connection.state``
  ``active`` or ``idle``): read from ``Transport.stats()`` at each collection (in the
  reader's thread); a host whose connections are all gone is reported as 0 once, then no more.
* ``http.client.connection.duration`` (histogram, s): from a connection's first request to its
  close (connections whose addresses are known: not through a ``dial=`` function without them).
* ``asyncpool.pool.wait.duration`` (histogram, s): how long a request waited for a connection
  when none was idle (the ``wait_for_conn_done`` hook).

A span per round trip (``SpanKind.CLIENT``, named after the method, ``HTTP`` for an unknown one),
with ``url.full`` (the values of signed URLs' credentials in the query redacted, as the
conventions ask: ``REDACTED_QUERY_KEYS``), events for the pool's and the dial's steps (``got_conn``, ``connect_done``,
``tls_handshake_done``, ``first_byte``, ``retry``), status ERROR on a failure or a status >=
400. The span's context goes out in the request's header fields (W3C ``traceparent``, through
the global propagator: ``opentelemetry.propagate.inject``), unless the request sets the field
itself; the fields are added to that round trip only.
"""

from __future__ import annotations

import ssl
import time
import weakref
from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics, propagate
    from opentelemetry import trace as ot_trace
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:
    raise ImportError(
        'asyncpool.otel needs opentelemetry-api: pip install "asyncpool-http[otel]"',
        name=exc.name,
    ) from exc

from ._errors import TLSError
from ._models import URL
from ._trace import (
    ClientTrace,
    ConnClosedInfo,
    GotConnInfo,
    RequestDoneInfo,
    RequestStartInfo,
    RetryInfo,
    frozen,
)
from ._transport import Transport
from ._version import __version__

__all__ = ["OTelTrace", "instrument"]

# The methods the semantic conventions know; any other is recorded as "_OTHER".
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
# Seconds, as the semantic conventions advise for HTTP durations.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Connections whose first request was seen and whose close was not (yet), at most.
_MAX_TRACKED_CONNS = 10_000

Attributes = dict[str, Any]


def _server_attributes(url: URL) -> Attributes:
    return {"server.address": url.host, "server.port": url.port, "url.scheme": url.scheme}


def _protocol_version(protocol: str) -> str:
    return protocol.removeprefix("HTTP/")  # "1.1", "2"


_DEFAULT_PORTS = {"http": 80, "https": 443}
# Query parameters whose values ``url.full`` shows as "REDACTED" (the semantic conventions'
# list: signed URLs' credentials).
REDACTED_QUERY_KEYS = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})


def _redacted(target: str) -> str:
    """``target`` with the values of ``REDACTED_QUERY_KEYS`` in its query replaced."""
    path, mark, query = target.partition("?")
    if not mark or not any(key in query for key in REDACTED_QUERY_KEYS):
        return target
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        pairs.append(f"{name}=REDACTED" if equals and name in REDACTED_QUERY_KEYS else pair)
    return f"{path}?{'&'.join(pairs)}"


def _key_attributes(key: str) -> Attributes:
    """A pool key's server attributes, as the requests' own metrics name the server.

    Keys (``Request.pool_key``, the proxy routes' ``route.key``): an origin without its default
    port, maybe followed by "|..." (a TLS name); "<origin> via <proxy>" through a tunnel (the
    origin is the server), or "via <proxy>" when forwarded (the proxy is); a proxy's part may
    name a user and end with " (credentials <digest>)".
    """
    origin = key.split("|", 1)[0]
    if origin.startswith("via "):
        origin = origin[4:]
    else:
        origin = origin.partition(" via ")[0]
    origin = origin.split(" ", 1)[0]  # (" (credentials ...)")
    scheme, sep, rest = origin.partition("://")
    if not sep:
        return {"server.address": key}
    rest = rest.rpartition("@")[2]
    if rest.startswith("["):
        host, _, after = rest[1:].partition("]")
        port = after.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    attributes: Attributes = {"server.address": host}
    number = int(port) if port.isdigit() else _DEFAULT_PORTS.get(scheme)
    if number is not None:
        attributes["server.port"] = number
    attributes["url.scheme"] = scheme
    return attributes


class OTelTrace:
    """OpenTelemetry metrics and spans for the requests of the pool(s) it is attached to.

    ``trace`` is the ``ClientTrace`` to attach; ``observe(transport)`` adds a Transport's pool
    to ``http.client.open_connections`` (``instrument`` does both).
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        meter = metrics.get_meter("asyncpool", __version__, meter_provider)
        self._tracer = ot_trace.get_tracer("asyncpool", __version__, tracer_provider)
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._active = meter.create_up_down_counter(
            "http.client.active_requests",
            unit="{request}",
            description="Number of active HTTP requests.",
        )
        self._conn_duration = meter.create_histogram(
            "http.client.connection.duration",
            unit="s",
            description="The duration of the successfully established outbound HTTP connections.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._wait_duration = meter.create_histogram(
            "asyncpool.pool.wait.duration",
            unit="s",
            description="Time a request waited for a connection when none was idle.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._transports: weakref.WeakSet[Transport] = weakref.WeakSet()
        self._reported: set[tuple[str, str]] = set()  # (pool key, state) of the last collection
        meter.create_observable_up_down_counter(
            "http.client.open_connections",
            callbacks=[self._observe_connections],
            unit="{connection}",
            description="Number of outbound HTTP connections that are currently active or idle.",
        )
        # (local, remote) address -> (first request's time, attributes)
        self._conns: dict[tuple[object, object], tuple[float, Attributes]] = {}
        self.trace = ClientTrace(request_start=self._request_start, conn_closed=self._conn_closed)

    def observe(self, transport: Transport) -> None:
        """Count ``transport``'s connections in ``http.client.open_connections``."""
        self._transports.add(transport)

    def _observe_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        counts: dict[tuple[str, str], int] = {}
        for transport in list(self._transports):
            for key, host in transport.stats().hosts.items():
                for state, count in (("active", host.in_use), ("idle", host.idle)):
                    counts[key, state] = counts.get((key, state), 0) + count
        # A host the pool forgot (its last connection closed) is reported as 0 once, then no
        # more: a client that reaches many hosts in turn keeps no series of each for ever.
        gone = self._reported - counts.keys()
        self._reported = set(counts)
        counts.update(dict.fromkeys(gone, 0))
        for (key, state), count in counts.items():
            yield Observation(count, {**_key_attributes(key), "http.connection.state": state})

    def _conn_closed(self, info: ConnClosedInfo) -> None:
        opened = self._conns.pop((info.local_address, info.remote_address), None)
        if opened is not None:
            self._conn_duration.record(time.perf_counter() - opened[0], opened[1])

    def _conn_opened(self, info: GotConnInfo, attributes: Attributes) -> None:
        if info.reused or info.local_address is None or info.remote_address is None:
            return
        conns = self._conns
        if len(conns) >= _MAX_TRACKED_CONNS:
            conns.clear()  # closes we were not told of (a trace attached to some requests only)
        conns.setdefault(
            (info.local_address, info.remote_address), (time.perf_counter(), attributes)
        )

    def _request_start(self, info: RequestStartInfo) -> ClientTrace:
        return _Request(self, info).trace


class _Request:
    """One round trip's span and measurements: its hooks make the trace composed for it."""

    __slots__ = ("attributes", "otel", "protocol", "span", "start", "trace")

    def __init__(self, otel: OTelTrace, info: RequestStartInfo) -> None:
        request = info.request
        url = request.url
        self.otel = otel
        method = request.method
        known = method in KNOWN_METHODS
        self.attributes: Attributes = {
            "http.request.method": method if known else "_OTHER",
            **_server_attributes(url),
        }
        self.protocol: str | None = None
        span_attributes: Attributes = {
            **self.attributes,
            "url.full": f"{url.scheme}://{url.host_header}{_redacted(request.target)}",
        }
        if not known:
            span_attributes["http.request.method_original"] = method
        self.span: Span = otel._tracer.start_span(
            method if known else "HTTP", kind=SpanKind.CLIENT, attributes=span_attributes
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ot_trace.set_span_in_context(self.span))
        for name, value in carrier.items():
            if name not in request.headers:
                info.add_headers.append((name, value))
        otel._active.add(1, self.attributes)
        self.start = time.perf_counter()
        self.trace = frozen(
            ClientTrace,
            got_conn=self._got_conn,
            wait_for_conn_done=self._wait_for_conn_done,
            connect_done=self._connect_done,
            tls_handshake_done=self._tls_handshake_done,
            got_first_response_byte=self._first_byte,
            request_retried=self._retried,
            request_done=self._done,
        )

    def _event(self, name: str, attributes: Attributes | None = None) -> None:
        # Dial hooks may fire after the span ended (a dial serving another request).
        if self.span.is_recording():
            self.span.add_event(name, attributes)

    def _got_conn(self, info: GotConnInfo) -> None:
        self.protocol = _protocol_version(info.protocol)
        self.otel._conn_opened(
            info, {**self.attributes_without_method(), "network.protocol.version": self.protocol}
        )
        self._event(
            "got_conn",
            {"reused": info.reused, "was_idle": info.was_idle, "idle_time": info.idle_time},
        )

    def attributes_without_method(self) -> Attributes:
        return {k: v for k, v in self.attributes.items() if k != "http.request.method"}

    def _wait_for_conn_done(self, queued: float, error: BaseException | None) -> None:
        self.otel._wait_duration.record(queued, self.attributes_without_method())

    def _connect_done(self, network: str, addr: tuple[str, int], error: OSError | None) -> None:
        attributes: Attributes = {"network.peer.address": str(addr[0])}
        if network == "tcp":
            attributes["network.peer.port"] = addr[1]
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        self._event("connect_done", attributes)

    def _tls_handshake_done(self, ssl_object: ssl.SSLObject | None, error: TLSError | None) -> None:
        attributes: Attributes = {}
        if ssl_object is not None:
            attributes["tls.protocol.version"] = str(ssl_object.version())
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        self._event("tls_handshake_done", attributes)

    def _first_byte(self) -> None:
        self._event("first_byte")

    def _retried(self, info: RetryInfo) -> None:
        self._event(
            "retry",
            {
                "reason": str(info.reason),
                "attempt": info.attempt,
                "error.type": type(info.error).__qualname__,
            },
        )

    def _done(self, info: RequestDoneInfo) -> None:
        elapsed = time.perf_counter() - self.start
        otel, span = self.otel, self.span
        otel._active.add(-1, self.attributes)
        attributes = dict(self.attributes)
        response, error = info.response, info.error
        error_type = None
        if response is not None:
            status = response.status_code
            attributes["http.response.status_code"] = status
            if status >= 400:
                error_type = str(status)
            if response.http_version:
                self.protocol = _protocol_version(response.http_version)
        if error is not None:
            error_type = type(error).__qualname__
        if self.protocol is not None:
            attributes["network.protocol.version"] = self.protocol
        if error_type is not None:
            attributes["error.type"] = error_type
        otel._duration.record(elapsed, attributes)
        if span.is_recording():
            span.set_attributes(attributes)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error) or error_type))
            elif error_type is not None:
                span.set_status(Status(StatusCode.ERROR))
        span.end()


def instrument(
    transport: Transport,
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> OTelTrace:
    """Attach OpenTelemetry to ``transport``: every request's metrics and span (after the
    trace it already has), and its pool in ``http.client.open_connections``."""
    otel = OTelTrace(meter_provider, tracer_provider)
    existing = transport._trace
    transport._trace = otel.trace if existing is None else existing.compose(otel.trace)
    otel.observe(transport)
    return otel
