"""Go's httptrace.ClientTrace in snake_case, plus the pool events Go keeps to itself.

A trace is a bag of optional plain callables, fired from the task where each event happens:
the caller (``get_conn``, ``got_conn``, waits, retries), the dial task (DNS, connect, TLS), the
connection's writer (``wrote_*``, ``wait_100_continue``) or reader (first byte, 1xx, body end,
``put_idle_conn``). Attach one to a request (``Request(trace=...)``), to every request made
inside a block (``with client_trace(trace):``), or to every request of a pool
(``Transport(trace=...)``); when several apply all fire, innermost first, as Go's
``WithClientTrace`` composes them. With no trace attached the cost is a context-variable lookup.

A hook that raises fails its request, and the connection is dropped as after any failure.
``conn_closed`` is the exception: it may fire outside any request, so what it raises is logged.

With the ``asyncpool`` logger at DEBUG, every event is also logged (nothing is built otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from ._conn_common import CloseReason  # re-exported: asyncpool._trace.CloseReason as before
from ._errors import TLSError
from ._models import Headers

if TYPE_CHECKING:
    from ._models import Request, Response

__all__ = [
    "ClientTrace",
    "CloseReason",
    "ConnClosedInfo",
    "DNSDoneInfo",
    "DNSStartInfo",
    "GotConnInfo",
    "ProxyConnectDoneInfo",
    "ProxyConnectStartInfo",
    "RequestDoneInfo",
    "RequestStartInfo",
    "RetryInfo",
    "Timings",
    "WroteRequestInfo",
    "client_trace",
    "current_trace",
    "logging_trace",
]

logger = logging.getLogger("asyncpool")

T = TypeVar("T")


def frozen(cls: type[T], /, **fields: Any) -> T:
    """``cls(**fields)`` for a frozen dataclass, without its ``__init__``: that one sets each
    field through ``object.__setattr__`` (1.3 µs for GotConnInfo's six, 2.5 µs for a
    ClientTrace), this puts them into the instance's dict at once. For what is made per
    request; a field not given keeps the class's default (give every field without one)."""
    made: T = object.__new__(cls)
    made.__dict__.update(fields)
    return made


@dataclasses.dataclass(frozen=True)
class GotConnInfo:
    """What ``got_conn`` learns about the connection a request obtained."""

    reused: bool  # it carried a request before
    was_idle: bool  # it came from the idle list (not straight from another request or a dial)
    idle_time: float  # seconds it sat idle, when was_idle
    local_address: Any = None
    remote_address: Any = None
    protocol: str = "HTTP/1.1"


@dataclasses.dataclass(frozen=True)
class DNSStartInfo:
    host: str


@dataclasses.dataclass(frozen=True)
class DNSDoneInfo:
    addrs: list[str]
    err: BaseException | None


@dataclasses.dataclass(frozen=True)
class WroteRequestInfo:
    err: BaseException | None


WROTE_REQUEST_OK = WroteRequestInfo(None)  # immutable: one for every request written


@dataclasses.dataclass(frozen=True)
class ConnClosedInfo:
    reason: CloseReason
    error: BaseException | None
    requests: int  # how many requests the connection carried
    local_address: Any = None
    remote_address: Any = None


@dataclasses.dataclass(frozen=True)
class RetryInfo:
    # The Transport's: a RetryHint (a str enum), "nothing written", "no response" or "refused"
    # (by an HTTP/2 server). A Client's retry= policy: "connect error", "read error" or
    # "status <code>" (``error`` is then an HTTPStatusError holding the response).
    reason: str
    error: BaseException
    attempt: int  # 1 for the first retry
    delay: float = 0.0  # seconds waited before this retry (HTTP/2's backoff)


@dataclasses.dataclass(frozen=True)
class ProxyConnectStartInfo:
    """A tunnel is asked of a proxy (CONNECT, or the SOCKS handshake)."""

    proxy: str  # the proxy's URL, without its password
    target: str  # "host:port" the tunnel goes to


@dataclasses.dataclass(frozen=True)
class ProxyConnectDoneInfo:
    """The tunnel negotiation ended: ``err`` None when the tunnel is open."""

    proxy: str
    target: str
    status_code: int | None  # an HTTP proxy's answer to CONNECT (None: SOCKS, or no answer)
    headers: list[tuple[str, str]]  # that answer's header fields
    err: BaseException | None


@dataclasses.dataclass(frozen=True)
class RequestStartInfo:
    """A round trip starts (once per ``Transport.round_trip``, retries included)."""

    request: Request
    # Header fields a hook adds to what this request sends (a trace context): appended to the
    # wire headers of this round trip only, never to ``request.headers``, never cached.
    add_headers: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class RequestDoneInfo:
    """A round trip ended: the response head arrived (``response``), or it failed (``error``)."""

    request: Request
    response: Response | None
    error: BaseException | None


@dataclasses.dataclass(frozen=True)
class ClientTrace:
    """Hooks fired during one request; see the module docstring for where each fires.

    Each hook is called with positional arguments of the types given, and what it returns is
    ignored.
    """

    get_conn: Callable[[str], object] | None = None  # (host_port) "host:port", "[::1]:port"
    got_conn: Callable[[GotConnInfo], object] | None = None
    # (reason) None when the connection was pooled (or handed to a waiting request), else why it
    # was closed instead.
    put_idle_conn: Callable[[CloseReason | None], object] | None = None
    got_first_response_byte: Callable[[], object] | None = None
    got_100_continue: Callable[[], object] | None = None
    got_1xx_response: Callable[[int, Headers], object] | None = None  # (status_code, headers)
    dns_start: Callable[[DNSStartInfo], object] | None = None
    dns_done: Callable[[DNSDoneInfo], object] | None = None
    # ("tcp", (ip, port)); ("unix", (path, 0)) for Transport(uds=path)
    connect_start: Callable[[str, tuple[str, int]], object] | None = None
    # ("tcp", (ip, port), error or None); ("unix", (path, 0), error or None)
    connect_done: Callable[[str, tuple[str, int], OSError | None], object] | None = None
    tls_handshake_start: Callable[[], object] | None = None
    # (ssl_object, None) on success, (None, error) on failure
    tls_handshake_done: Callable[[ssl.SSLObject | None, TLSError | None], object] | None = None
    wrote_header_field: Callable[[str, list[str]], object] | None = None  # (name, [value])
    wrote_headers: Callable[[], object] | None = None
    wait_100_continue: Callable[[], object] | None = None
    wrote_request: Callable[[WroteRequestInfo], object] | None = None
    # Beyond Go: what the pool does.
    wait_for_conn_start: Callable[[], object] | None = (
        None  # no idle connection: the request queues
    )
    # (queued_seconds, error or None)
    wait_for_conn_done: Callable[[float, BaseException | None], object] | None = None
    got_response_end: Callable[[], object] | None = None  # the body was read to its end
    request_retried: Callable[[RetryInfo], object] | None = None
    conn_closed: Callable[[ConnClosedInfo], object] | None = None  # the connection that served it
    # Around the tunnel's negotiation with a proxy (in the dial task, after connect_done for
    # the proxy's address and before the origin's TLS handshake).
    proxy_connect_start: Callable[[ProxyConnectStartInfo], object] | None = None
    proxy_connect_done: Callable[[ProxyConnectDoneInfo], object] | None = None
    # Around the round trip, in the caller's task (beyond Go): ``request_start`` first of all,
    # and the trace it may return (None otherwise) is composed, innermost, for that request's
    # other hooks (its spans, say); ``request_done`` once the head arrived or the request failed.
    request_start: Callable[[RequestStartInfo], ClientTrace | None] | None = None
    request_done: Callable[[RequestDoneInfo], object] | None = None

    def compose(self, outer: ClientTrace | None) -> ClientTrace:
        """A trace firing this trace's hooks, then ``outer``'s."""
        if outer is None:
            return self
        merged: dict[str, Any] = {}
        for name in _HOOKS:
            mine, theirs = getattr(self, name), getattr(outer, name)
            if mine or theirs:
                merged[name] = _both(mine, theirs) if mine and theirs else (mine or theirs)
        if self.request_start and outer.request_start:
            merged["request_start"] = _both_starts(self.request_start, outer.request_start)
        return frozen(ClientTrace, **merged)  # composed per request where traces meet


_HOOKS = tuple(field.name for field in dataclasses.fields(ClientTrace))


def _both(first: Callable[..., object], second: Callable[..., object]) -> Callable[..., None]:
    def hook(*args: object) -> None:
        first(*args)
        second(*args)

    return hook


def _both_starts(
    first: Callable[[RequestStartInfo], ClientTrace | None],
    second: Callable[[RequestStartInfo], ClientTrace | None],
) -> Callable[[RequestStartInfo], ClientTrace | None]:
    def hook(info: RequestStartInfo) -> ClientTrace | None:
        mine = first(info)
        try:
            theirs = second(info)
        except BaseException as exc:
            # The request fails before its round trip: what the first start began (a span)
            # ends here, for nobody else knows of the trace it returned.
            if mine is not None and mine.request_done:
                mine.request_done(
                    frozen(RequestDoneInfo, request=info.request, response=None, error=exc)
                )
            raise
        return mine.compose(theirs) if mine is not None else theirs

    return hook


_current: ContextVar[ClientTrace | None] = ContextVar("asyncpool_client_trace", default=None)


def current_trace() -> ClientTrace | None:
    return _current.get()


@contextlib.contextmanager
def client_trace(trace: ClientTrace) -> Iterator[ClientTrace]:
    """Attach ``trace`` to every request made inside the block (composed with any outer one)."""
    effective = trace.compose(_current.get())
    token = _current.set(effective)
    try:
        yield effective
    finally:
        _current.reset(token)


def logging_trace(what: str) -> ClientTrace:
    """A trace that logs every event of the request ``what`` at DEBUG."""

    def log(event: str) -> Callable[..., None]:
        def hook(*args: object) -> None:
            logger.debug("%s: %s %s", what, event, ", ".join(map(str, args)))

        return hook

    return frozen(ClientTrace, **{name: log(name) for name in _HOOKS})


class Timings:
    """Where one request's time went, from its trace hooks: an httpstat-style waterfall.

    ``timings = Timings()``, send the request with ``trace=timings.trace`` (or compose it),
    read the body, then ``timings.phases()`` gives seconds per phase (None when a phase did not
    happen, such as DNS on a reused connection). A request that went out again (a redirect's
    next hop, a retry) starts over at its ``get_conn``: the phases are its last attempt's, and
    ``attempts`` counts them.
    """

    PHASES = ("queued", "dns", "connect", "tls", "request", "server", "transfer")

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.marks: dict[str, float] = {}
        self.conn: GotConnInfo | None = None
        self.attempts = 0
        mark = self._mark
        self.trace = ClientTrace(
            get_conn=self._get_conn,
            dns_start=lambda info: mark("dns_start"),
            dns_done=lambda info: mark("dns_done"),
            connect_start=lambda network, addr: mark("connect_start", first=True),
            connect_done=lambda network, addr, err: mark("connect_done"),
            tls_handshake_start=lambda: mark("tls_start"),
            tls_handshake_done=lambda ssl_object, err: mark("tls_done"),
            got_conn=self._got_conn,
            wrote_request=lambda info: mark("wrote_request"),
            got_first_response_byte=lambda: mark("first_byte"),
            got_response_end=lambda: mark("body_done"),
        )

    def _mark(self, name: str, *, first: bool = False) -> None:
        if not (first and name in self.marks):
            self.marks[name] = self._clock()

    def _get_conn(self, host_port: str) -> None:
        self.attempts += 1
        self.marks.clear()
        self.conn = None
        self._mark("start")

    def _got_conn(self, info: GotConnInfo) -> None:
        self.conn = info
        self._mark("got_conn")

    def _span(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return self.marks[end] - self.marks[start]
        return None

    def phases(self) -> dict[str, float | None]:
        """Seconds per phase, in order; ``queued`` excludes the dial's own phases."""
        dial = [self._span(*pair) for pair in _DIAL_SPANS]
        queued = self._span("start", "got_conn")
        if queued is not None:
            queued -= sum(span for span in dial if span is not None)
        return {
            "queued": queued,
            "dns": dial[0],
            "connect": dial[1],
            "tls": dial[2],
            "request": self._span("got_conn", "wrote_request"),
            "server": self._span("wrote_request", "first_byte"),
            "transfer": self._span("first_byte", "body_done"),
        }

    @property
    def total(self) -> float | None:
        return self._span("start", "body_done")


_DIAL_SPANS = (
    ("dns_start", "dns_done"),
    ("connect_start", "connect_done"),
    ("tls_start", "tls_done"),
)
