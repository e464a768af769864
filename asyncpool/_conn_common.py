"""What the HTTP/1.1 and HTTP/2 connections share, below both of them.

The connection layer's vocabulary and the helpers both connection modules use, so that
``_h2.connection`` does not import ``_h1.connection`` (nor the reverse) and the pool above sees one
interface:

* ``Connection``: the surface the pool uses on a connection of either protocol (checked by mypy
  at the end of each connection module); the pool narrows with ``isinstance`` where it needs
  one protocol's specifics (HTTP/2 streams, HTTP/1.1 idle lists);
* ``CloseReason``: why a connection closed, the argument of ``Connection.close`` and what the
  ``conn_closed`` and ``put_idle_conn`` trace hooks report (``_trace`` re-exports it, so
  ``asyncpool.CloseReason`` is this class);
* ``RetryHint``: why a failure on a reused connection may be retried, set as
  ``HTTPError.retry_hint`` by the connections and read by the pool's retry decision;
* the helpers: reading from the server (``receive_some``, ``READ_SIZE`` bytes at a time;
  ``read_error``), waiting for a response head within the timeouts that count from the request's write (``WriteClock``,
  ``head_timeout``), firing ``conn_closed``
  (``report_closed``) and closing a request body however its iteration ends
  (``closing_body``).

Both enums derive from ``str``: their members compare equal to their values
(``CloseReason.ERROR == "error"``, ``RetryHint.REFUSED == "refused"``), and ``str()`` of a
``RetryHint`` is its value, the plain string a hint was before it became an enum.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc

from ._errors import ReadError, ReadTimeout, ResponseHeaderTimeout
from ._models import Request, Response
from ._sync import Event, WakeableEvent
from ._tasks import Spawner

if TYPE_CHECKING:
    import asyncio

    # Types only: _trace imports CloseReason from here (report_closed imports what it needs
    # from _trace when it fires).
    from ._trace import ClientTrace

__all__ = [
    "BIG_READ_SIZE",
    "MAX_CHUNK",
    "READ_SIZE",
    "CloseReason",
    "Connection",
    "HeadTimer",
    "RetryHint",
    "WriteClock",
    "closing_body",
    "head_timeout",
    "read_error",
    "receive_some",
    "report_closed",
]


class CloseReason(str, enum.Enum):
    """Why a connection closed."""

    IDLE_TIMEOUT = "idle timeout"
    EVICTED = "evicted (max_idle_conns)"
    MAKE_ROOM = "closed to make room for another host (max_conns)"
    IDLE_LIST_FULL = "idle list full (max_idle_conns_per_host)"
    SERVER_CLOSED = "server closed"
    NOT_REUSABLE = "not reusable"  # Connection: close, HTTP/1.0, keep-alives disabled
    CLOSE_IDLE = "close_idle_connections()"
    BODY_CLOSED_EARLY = "response body closed early"
    CANCELLED = "request cancelled"
    ERROR = "error"
    POOL_CLOSED = "pool closed"
    MAX_LIFETIME = "max lifetime (max_conn_lifetime)"
    MAX_REQUESTS = "max requests per connection (max_requests_per_conn)"
    # Not closed: the server switched protocols (101, a 2xx to CONNECT) and the connection left
    # the pool for the caller (Response.upgrade_stream()); its socket stays open.
    UPGRADED = "switched protocols (handed to the caller)"


class RetryHint(str, enum.Enum):
    """Why a failure on a reused connection may be retried (``HTTPError.retry_hint``)."""

    # Go's nothingWrittenError: not a byte of the request reached the server.
    NOTHING_WRITTEN = "nothing written"
    # Go's errServerClosedIdle / transportReadFromServerError: the server closed the connection
    # without a byte of response (the request may have been sent).
    NO_RESPONSE = "no response"
    # An HTTP/2 server refused a stream while it processed others on the connection (GOAWAY
    # past it, REFUSED_STREAM): it is cycling connections, not failing, so the retry is not
    # counted against the few a stale connection is allowed.
    REFUSED = "refused"

    def __str__(self) -> str:
        # The string it was before it became an enum, in str(), f-strings and %s too (an enum's
        # own __str__ gives "RetryHint.REFUSED").
        return self.value


class Connection(Protocol):
    """What the pool uses on a connection, HTTP/1.1 or HTTP/2 (``HTTP11Connection``,
    ``HTTP2Connection``)."""

    # Owned by the pool, changed only in its synchronous methods: when the connection became
    # idle (HTTP/1.1: entered an idle list; HTTP/2: its last stream ended), else None.
    idle_at: float | None
    # The trace of the request that last used the connection: told when it closes.
    trace: ClientTrace | None

    @property
    def key(self) -> str:
        """The pool key (origin) the connection serves."""

    @property
    def host_port(self) -> str:
        """The server as errors and trace hooks name it: "host:port"."""

    @property
    def protocol(self) -> str:
        """The protocol it speaks: "HTTP/1.1" or "HTTP/2"."""

    @property
    def local_address(self) -> object:
        """The socket's local address, when known (``GotConnInfo``, ``ConnClosedInfo``)."""

    @property
    def remote_address(self) -> object:
        """The server's address, when known."""

    @property
    def closed(self) -> bool:
        """``close`` was called: the connection carries no more requests."""

    @property
    def close_why(self) -> CloseReason | None:
        """Why it closed, once closed."""

    @property
    def close_error(self) -> BaseException | None:
        """The error it closed with, if any."""

    @property
    def requests_started(self) -> int:
        """Requests (HTTP/2: streams) started on it; more than 0 means reused, in Go's sense."""

    def start(self, tasks: Spawner) -> None:
        """Start the connection's tasks in the Transport's ``TaskSet``."""

    def close(self, why: CloseReason, error: BaseException | None = None) -> None:
        """Close now; synchronous and idempotent; tells the owner exactly once."""

    async def round_trip(
        self,
        request: Request,
        headers: list[tuple[str, str]],
        *,
        trace: ClientTrace | None,
        response_header_timeout: float | None,
        read_timeout: float | None = None,
    ) -> Response:
        """Send ``request`` with the wire ``headers`` the pool prepared; return the response
        once its head has arrived (the body is read later through the response)."""


# Bytes asked of the socket per read, by the connections on anyio's streams and by
# _asyncio_stream's transports (until reads come back full: BIG_READ_SIZE): big bodies in few
# chunks, yet under glibc malloc's default mmap threshold (128 KiB). CPython allocates the whole
# size for every recv and shrinks it afterwards; above the threshold that is an mmap, an mremap
# and a munmap for each small response (a quarter of a 12-byte request's time at c=100). Here,
# not in _asyncio_stream: that one imports asyncio.
READ_SIZE = 126976
# After a read that filled READ_SIZE (a big body arriving faster than it is read), the asyncio
# stream asks for this much until a read comes back short of READ_SIZE: fewer reads, loop turns
# and reader wake-ups for a big body (the allocation above the mmap threshold is paid once a
# quarter MiB then), while the small responses of a busy connection keep the small reads.
BIG_READ_SIZE = 1 << 18
# A stream that reads ahead (``receive_size`` on its class: the asyncio stream) returns a
# buffered read whole up to this (splitting one copies it): the most a read can be.
MAX_CHUNK = BIG_READ_SIZE


async def receive_some(stream: anyio.abc.ByteStream, host_port: str) -> bytes:
    """The next bytes from the server; ``b""`` when it closed its side."""
    try:
        # READ_SIZE is what anyio's streams allocate for each read; asyncio's own has read
        # already and would only split what it holds (its class says so: ``receive_size``).
        size: int = getattr(stream, "receive_size", READ_SIZE)
        return await stream.receive(size)
    except anyio.EndOfStream:
        return b""
    except (OSError, anyio.BrokenResourceError) as exc:
        raise read_error(exc, host_port) from exc


def read_error(exc: BaseException, host_port: str) -> ReadError:
    return ReadError(f"reading from the server failed: {exc!r}", host=host_port)


class HeadTimer:
    """The timer of the head waits on one HTTP/1.1 connection, on asyncio: armed lazily and
    shared by its requests one after another.

    A request's deadline does not get a timer of its own: while a timer is armed no later than
    the deadline, the request only takes its place as the waiter. A timer that fires wakes the
    waiter if its deadline has come, else it is armed again for that deadline; with no waiter it
    just ends. So a connection keeps about one timer per ``read_timeout`` instead of setting and
    cancelling one per request: asyncio's timers are a heap ordered by Python comparisons, and
    that cost a request ~20 µs at c=100 (56.7 against 36.8 µs of CPU with and without
    ``read_timeout=30``). An HTTP/2 stream has one of its own, not shared: its timer is
    cancelled when its wait ends, since many streams wait at once. ``WriteClock`` reads and sets
    the fields below itself, in the same turn, to spare a request two calls.
    """

    __slots__ = ("handle", "next_fire", "now", "shared", "waiter")

    def __init__(self, head_ready: Event, *, shared: bool) -> None:
        self.shared = shared
        # The loop's clock when a timer can wake a waiter without setting its event (asyncio;
        # told by an event of the loop's kind, ``head_ready``), else None (trio: a scope).
        self.now: Callable[[], float] | None = (
            head_ready.time if hasattr(head_ready, "wake") else None  # type: ignore[attr-defined]
        )
        self.waiter: WriteClock | None = None  # the wait in progress, if any
        self.next_fire = math.inf  # when the earliest armed timer fires (inf: none known)
        self.handle: asyncio.TimerHandle | None = None  # not shared: to cancel it

    def arm(self, clock: WriteClock) -> None:
        """Fire at ``clock``'s deadline, earlier than any timer armed."""
        deadline = self.next_fire = clock.deadline
        event = clock.event
        assert event is not None
        self.handle = event.call_at(deadline, functools.partial(self._fire, deadline))

    def _fire(self, when: float) -> None:
        if when <= self.next_fire:
            self.next_fire, self.handle = math.inf, None
        clock = self.waiter
        if clock is None:
            return
        if clock.deadline <= when:
            assert clock.event is not None
            clock.event.wake()
        elif clock.deadline < self.next_fire:  # an earlier request's: armed for this one's
            self.arm(clock)


class WriteClock:
    """When a request was written: the timeouts of its response head count from then.

    The writer calls ``set`` once the request is out (the reader too, when the response came
    first); the caller awaits ``wait`` and then calls ``end`` (in a ``finally``), and the
    deadline is armed the moment both the write and the wait are known, whichever comes first.
    The caller so waits on the head alone: no event for the write to wake it first. On asyncio
    a timer wakes the caller's wait on the head's event without setting it
    (``WakeableEvent.wake``; a ``HeadTimer``, shared by a connection's requests); on trio the
    deadline is a cancel scope's. Owned by one exchange or stream (a connection's requests
    share its timer, not a clock: a request's caller may end its wait after the next request
    began its own); every call is in the event loop's thread.
    """

    __slots__ = (
        "_limit",
        "_now",
        "_scope",
        "_timer",
        "_waiting",
        "deadline",
        "event",
        "written_at",
    )

    def __init__(self, head_ready: Event, timer: HeadTimer | None = None) -> None:
        if timer is None:
            timer = HeadTimer(head_ready, shared=False)
        self._timer = timer
        self.written_at: float | None = None  # on the loop's clock, when the request was out
        self.deadline = math.inf
        now = timer.now
        # The head's event when a timer can wake its waiter (asyncio), else None.
        self.event: WakeableEvent | None = None if now is None else head_ready  # type: ignore[assignment]
        self._now = anyio.current_time if now is None else now
        self._waiting = False  # the caller is in ``wait``
        self._limit = math.inf
        self._scope: anyio.CancelScope | None = None  # trio: the caller's wait

    def set(self) -> None:
        if self.written_at is None:
            self.written_at = self._now()
            if self._waiting:
                self._arm()

    def _arm(self) -> None:
        assert self.written_at is not None
        deadline = self.deadline = self.written_at + self._limit
        if self.event is not None:
            timer = self._timer
            timer.waiter = self
            if deadline < timer.next_fire:
                timer.arm(self)
        elif self._scope is not None:
            self._scope.deadline = deadline

    def wait(
        self, head_ready: Event, timeout: float | None, read_timeout: float | None
    ) -> Awaitable[None]:
        """The wait for ``head_ready`` within the shorter of the limits (one is given), counted
        from the write; ``end`` must follow it, however it ends. Not a coroutine on asyncio:
        the head event's own wait, which the timer wakes (one frame less a request)."""
        if read_timeout is None:
            limit = timeout
        elif timeout is None or read_timeout < timeout:
            limit = read_timeout
        else:
            limit = timeout
        assert limit is not None, "a clock is made for a timeout"
        self._limit = limit
        self._waiting = True
        if self.event is None:
            return self._wait_in_scope(head_ready)
        written_at = self.written_at
        if written_at is not None:  # (``_arm``, without the call)
            deadline = self.deadline = written_at + limit
            timer = self._timer
            timer.waiter = self
            if deadline < timer.next_fire:
                timer.arm(self)
        return head_ready.wait()  # the head, or the timer

    async def _wait_in_scope(self, head_ready: Event) -> None:
        with anyio.CancelScope() as self._scope:
            if self.written_at is not None:
                self._arm()
            await head_ready.wait()

    def end(self) -> None:
        """The wait ended (the head came, the deadline passed, or it was cancelled). A shared
        timer stays armed (the next request may use it)."""
        self._waiting = False
        self._scope = None
        timer = self._timer
        if timer.waiter is self:
            timer.waiter = None
        if not timer.shared and timer.handle is not None:
            timer.handle.cancel()
            timer.handle, timer.next_fire = None, math.inf


def head_timeout(
    timeout: float | None, read_timeout: float | None, host_port: str
) -> ResponseHeaderTimeout | ReadTimeout:
    """The error of a head that did not come within the shorter limit (see ``WriteClock``)."""
    if read_timeout is None or (timeout is not None and timeout <= read_timeout):
        return ResponseHeaderTimeout(
            f"no response head within response_header_timeout={timeout}s", host=host_port
        )
    return ReadTimeout(
        f"no response within read_timeout={read_timeout}s of writing the request", host=host_port
    )


def report_closed(
    trace: ClientTrace | None, conn: Connection, why: CloseReason, error: BaseException | None
) -> None:
    """Fire ``conn_closed``; it may fire outside any request, so what it raises is logged."""
    hook = None if trace is None else trace.conn_closed
    if hook is None:
        return
    # Imported here, not above: _trace imports this module (for CloseReason).
    from ._trace import ConnClosedInfo, logger

    info = ConnClosedInfo(
        why, error, conn.requests_started, conn.local_address, conn.remote_address
    )
    try:
        hook(info)
    except Exception:
        logger.exception("a conn_closed trace hook raised")


@contextlib.asynccontextmanager
async def closing_body(content: AsyncIterable[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Iterate a request body and close it (an async generator's ``aclose``) however the
    iteration ends, even cancelled mid-way, so that its ``finally`` runs now, not at GC."""
    iterator = aiter(content)
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
