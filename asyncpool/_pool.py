"""The pool's decisions, without I/O: which connection serves which request, when to dial,
what to close.

Theory of operation
-------------------
``Pool`` is the bookkeeping of Go's ``net/http.Transport`` as plain synchronous code, in the
manner of h11: it performs no I/O, reads no clock and calls nothing outside itself. Each
*decision* (a method below) takes the time as an argument, updates the state, and appends what
must happen to ``actions``: ``Deliver`` (wake a want: its result is set), ``Dial`` (start a dial
for a want) and ``Close`` (close a connection). The Transport carries the actions out after the
decision returns and reports what came of them (a dial done or failed, a connection closed) as
further decisions. Since nothing here calls out, no decision runs inside another: a connection
that closes while an action is carried out reports it into a queue that the Transport drains
after, one decision at a time.

A request asks for a connection to its key (its origin: scheme, host, port) with ``take``: a
stream on a host's HTTP/2 connection with room first, then the most recently used live idle
HTTP/1.1 connection. Otherwise it registers a *want* (``add_want``) in the queues of its host:
``idle_waiters`` (served by the next connection that any request frees), when
``max_conns_per_host`` is reached ``dial_waiters`` (served by the next free host slot), and,
when it waits on an HTTP/2 dial in flight instead of dialing, ``undialed`` (dialed for if that
dial does not serve it). Whichever comes first serves the want, a freed connection or a fresh
dial (socket late binding), and the loser is not wasted: it goes to the next want or the idle
list. A want cancelled in the queue for a host slot leaves its place to the next of the wants
that waited on its dial.

``max_conns`` limits the connections of all hosts together (httpx's ``max_connections``): a
want that may dial (its host under ``max_conns_per_host``) while the pool is at the limit waits
in ``slot_waiters``, first come first served over all hosts, for the next slot any host frees;
like httpcore, the pool closes an idle connection of another host for each such want: the least
recently used HTTP/1.1 one, else the HTTP/2 one with no stream that has been idle longest; and
one freed (an HTTP/1.1 connection, an HTTP/2 one's last stream) with such a want waiting is
closed instead of kept.

HTTP/2 connections are shared: a host keeps them in ``h2_conns`` and a request takes a stream on
the first one with room. While a dial that may bring HTTP/2 is in flight (https with ``http2``,
or prior knowledge), new wants queue behind it instead of dialing too; when it brings HTTP/2 it
serves them in order, as far as the server's MAX_CONCURRENT_STREAMS allows, and a full
connection makes the pool dial one more (one dial at a time) unless
``strict_max_concurrent_streams``. When it brings HTTP/1.1 the host is remembered as such and
the waiters dial as HTTP/1.1 requests do. A connection that sent GOAWAY leaves ``h2_conns`` for
``h2_draining`` until it closes, finishing the streams it has. A GOAWAY that refused streams
after the server took N teaches the pool to give new connections to that key N streams each
(``h2_stream_caps``), until one answers N without a GOAWAY: then every connection to the key
takes streams again, for the wants waiting too. A connection that handed out its N streams takes
no more: wants dial rather than wait on it (strict or not), and it closes with its last stream
(else it would hold a host slot, idle, for nothing).

Idle HTTP/1.1 connections expire by ``expire(now)``, which the Transport's sweeper task calls
when the oldest is due: the LRU holds them in the order they became idle, so its head is the
next to expire. (An idle HTTP/2 connection times itself out, in its reader, and reports it with
``h2_idle_timed_out``.)

Lifetimes (``max_conn_lifetime``, ``max_requests_per_conn``). The Transport draws each
connection's end (its lifetime ±10 %) and sets ``expires_at`` before reporting the dial, so the
pool stays deterministic; the pool counts the requests it hands each connection out for
(``handed_out``; one given back unused is not counted). A connection past either is *retired*:

* HTTP/1.1: never handed out again. ``put_idle`` closes it (``MAX_REQUESTS``, ``MAX_LIFETIME``)
  instead of serving a want or keeping it; ``take`` closes an idle one past its deadline, as an
  idle timeout; the sweeper closes idle ones at their deadline. One in use past its deadline is
  left alone until its response ends.
* HTTP/2: it drains, as after a GOAWAY of our own: the pool sets ``expired`` (so
  ``has_capacity`` is False) and moves it from ``h2_conns`` to ``h2_draining``; its open streams
  finish and the release of the last closes it (one with no stream closes at once); wants
  waiting get a dial for a replacement at once, before the old one is gone. The request that
  takes its ``max_requests_per_conn``-th stream retires it; a deadline retires it in ``take``,
  in ``release_stream`` or by the sweeper, whichever meets it first (so a connection whose
  streams stay open still starts draining at its deadline).

Deadlines are kept in a second ordered structure, the heap ``lifetimes`` of (``expires_at``,
sequence, connection), pushed once per connection when its dial is reported (jitter makes
deadlines unordered, so the LRU's FIFO trick does not apply). ``expire`` pops what is due,
retires it, and returns the earlier of the next idle timeout and the next deadline; entries of
connections closed meanwhile are dropped when they reach the top (so a closed connection's
entry stays until its deadline: at most one entry per connection dialed in the last lifetime).
The Transport's sweeper sleeps until that time, and a dial whose deadline comes before it wakes
the sweeper.

A connection the pool decides to close leaves its idle list at once and is *closing* until it
reports that it closed (``h1_closed``, ``h2_closed``): only then is its host slot freed.

Invariants
----------
``check_invariants()`` verifies each of these from the state, raising ``PoolInvariantError``
(not ``assert``: they hold under ``python -O`` too):

* A want is served at most once (``Want.waiting`` flips once, with ``conn`` or ``error`` set);
  a connection that finds no waiting want goes to the idle list or is closed.
* An HTTP/1.1 connection is in exactly one place: a host's idle list (then ``idle_at`` is set
  and it is in the LRU), one request's hands (a delivered want, or a caller), or closing.
* The LRU holds exactly the idle HTTP/1.1 connections, ordered by ``idle_at``, oldest first
  (connections join at the end with the current time), and so is each host's idle list.
* ``_Host.conns`` counts the host's dials in flight and its open connections (closing ones
  included), and never exceeds ``max_conns_per_host``. It is incremented when a dial starts and
  decremented exactly once, when that dial fails or its connection reports its close; with
  ``max_conns_per_host`` a freed slot passes straight to the next want waiting for one.
* An HTTP/2 connection's ``reserved`` counts the streams handed out and not yet given back
  (each gives its slot back exactly once); it is idle (``idle_at`` set) exactly when none is.
  One that handed out its stream cap is closing once none is.
* No want waits while its host has an idle connection or an HTTP/2 connection with room, and a
  want with no dial of its own waits on something that will serve it or dial for it.
* No host without connections or wants is kept.
* A host's deques each hold at most ``2 * waiting + COMPACT_SLACK`` wants, and
  ``slot_waiters`` at most ``2 * slot_waiting + COMPACT_SLACK``: served wants are not kept.
* Lifetimes: an HTTP/2 connection in ``h2_conns`` is not ``expired``; one in ``h2_draining`` sent
  GOAWAY or is ``expired``, and an expired one with no stream reserved is closing. No idle
  HTTP/1.1 connection has carried ``max_requests_per_conn`` requests. Every idle connection and
  every HTTP/2 connection taking streams that has an ``expires_at`` has it in ``lifetimes``,
  which is a heap.
* ``max_conns``: ``Pool.conns`` is the sum of the hosts' counts and at most the limit; no want
  waits for a slot while one is free, nor (beyond the closes under way for it) while an
  idle connection could be closed for it.

Costs
-----
With W wants waiting for a host, I idle connections and H HTTP/2 connections to it
(``benchmarks/bench_pool_waiters.py`` measures the waiter-bound ones at W = 100 ... 10,000):

* ``take`` of an idle HTTP/1.1 connection, ``put_idle``, an LRU eviction, ``h1_closed``:
  O(1), plus O(1) per expired connection or finished want skipped on the way (each is skipped
  once). ``take`` allocates nothing: the idle time it measured is left in ``idle_time``.
* ``take`` of an HTTP/2 stream: O(H); ``release_stream``: O(1) plus the wants it serves (O(H)
  when a learnt stream cap is forgotten, or with ``strict_max_concurrent_streams`` when wants
  are left waiting).
* ``add_want``, ``cancel_want``, a delivery: O(1) (``add_want`` O(H) with
  ``strict_max_concurrent_streams``, where it looks for a connection that will give streams
  again; ``cancel_want`` plus the dial it may queue). Served and cancelled wants stay in the deques
  until met at a front (or all dropped at once when the host's last want is served): amortised
  O(1), as each is popped at most once per deque. A want served from one deque stays in the
  others, which a steady load never empties (a want waits in ``idle_waiters`` and
  ``dial_waiters`` under ``max_conns_per_host``, and is mostly served by a connection freed
  for ``idle_waiters``): so a deque past ``2 * waiting + COMPACT_SLACK`` entries is compacted
  to its waiting wants, amortised O(1) too, and what the deques hold stays proportional to the
  wants waiting.
* Dialing for wants whose dial did not serve them (an HTTP/2 connection full, closed or sent
  GOAWAY, a dial that brought HTTP/1.1): O(1) plus the wants it dials for, found in
  ``undialed`` (no scan of ``idle_waiters``). A failed HTTP/2 dial fails the wants waiting on
  it: O(1) each.
* ``expire``: O(1) per idle connection it closes, plus O(log C) per lifetime deadline it pops
  (C: connections dialed with a lifetime whose entries are still in the heap), each popped
  once. Recording a deadline at the dial: O(log C). The lifetime checks in ``take``,
  ``put_idle`` and ``release_stream``: O(1) (``take`` of a stream: still O(H), each connection
  past its deadline retired once on the way). ``host_stats``: O(hosts + H). ``close_idle`` and
  ``close``: O(connections + wants). ``check_invariants``: O(connections + wants + C), for
  tests.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import sys
from collections.abc import Callable
from typing import Any, Generic, NoReturn, Protocol, TypeVar, cast

from ._conn_common import CloseReason
from ._errors import PoolClosed

__all__ = [
    "Close",
    "Deliver",
    "Dial",
    "H1Conn",
    "H2Conn",
    "HostStats",
    "Pool",
    "PoolInvariantError",
    "PoolOptions",
    "Want",
]

# Hosts whose HTTP/2 stream cap (see Pool.h2_stream_caps) is remembered.
STREAM_CAPS_KEPT = 256
# Finished wants a deque may hold beyond twice the wants waiting before it is compacted.
COMPACT_SLACK = 32


class PoolInvariantError(RuntimeError):
    """The pool's state broke one of its invariants: a bug in asyncpool. Raised by the pool's
    own checks, which stay on under ``python -O`` (unlike ``assert``)."""


def _broken(invariant: str, state: str) -> NoReturn:
    raise PoolInvariantError(f"pool invariant broken: {invariant} ({state})")


class H1Conn(Protocol):
    """What the pool reads of an HTTP/1.1 connection; ``idle_at`` and ``handed_out`` are the
    pool's to write, ``expires_at`` its maker's (before it reports the dial)."""

    idle_at: float | None  # when it entered an idle list; None while not idle
    handed_out: int  # requests it was handed out for (max_requests_per_conn)
    expires_at: float | None  # the end of its lifetime (max_conn_lifetime); None: no end

    @property
    def key(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def close_why(self) -> CloseReason | None: ...


class H2Conn(Protocol):
    """What the pool reads of an HTTP/2 connection; the first five are the pool's to write,
    ``expires_at`` its maker's (before it reports the dial)."""

    idle_at: float | None  # when ``reserved`` last fell to 0; None while it is above
    reserved: int  # streams handed out and not given back
    handed_out: int  # streams ever handed out
    stream_cap: int | None  # the most it hands out in its life (None: no cap)
    # Set (once) when its lifetime or its requests ran out: it takes no new stream (it drains
    # and closes with this reason when the last one is given back).
    expired: CloseReason | None
    expires_at: float | None  # the end of its lifetime (max_conn_lifetime); None: no end

    @property
    def key(self) -> str: ...

    @property
    def has_capacity(self) -> bool:
        """Open, no GOAWAY, not ``expired``, ``reserved`` under the server's limit and
        ``handed_out`` under ``stream_cap``."""

    @property
    def goaway(self) -> bool: ...

    @property
    def refused_streams(self) -> bool:
        """The server refused a stream (a GOAWAY past it, REFUSED_STREAM)."""

    @property
    def streams_accepted(self) -> int: ...

    @property
    def active_streams(self) -> int: ...


H1T = TypeVar("H1T", bound=H1Conn)
H2T = TypeVar("H2T", bound=H2Conn)


class Want(Generic[H1T, H2T]):
    """A request waiting for a connection (Go's wantConn). Served at most once: ``waiting``
    turns False as ``conn`` (a connection, or a reserved stream on an HTTP/2 one) or ``error``
    is set. The Transport subclasses it to carry the request, its trace and its wake-up."""

    __slots__ = (
        "conn",
        "dialed",
        "error",
        "h2_capable",
        "key",
        "slot_queued",
        "stream",
        "waiting",
    )

    def __init__(self, key: str, h2_capable: bool) -> None:
        self.key = key
        # The request may speak HTTP/2 (https with http2, or prior knowledge): its dial may
        # bring HTTP/2, unless the host is known to answer HTTP/1.1.
        self.h2_capable = h2_capable
        self.waiting = True
        self.dialed = False  # a dial was started or queued for it (else it waits on another's)
        self.slot_queued = False  # it waits in Pool.slot_waiters for a slot under max_conns
        self.conn: H1T | H2T | None = None
        self.stream = False  # conn is an HTTP/2 connection, a stream on it reserved for us
        self.error: BaseException | None = None


W = TypeVar("W", bound=Want[Any, Any])


def _compact(waiters: collections.deque[W], keep: Callable[[W], bool]) -> None:
    """Drop the wants ``keep`` refuses from ``waiters``, keeping the order of the others."""
    kept = [want for want in waiters if keep(want)]
    waiters.clear()
    waiters.extend(kept)


@dataclasses.dataclass(frozen=True, slots=True)
class Deliver(Generic[W]):
    """Wake ``want``: its ``conn`` or ``error`` is set."""

    want: W


@dataclasses.dataclass(frozen=True, slots=True)
class Dial(Generic[W]):
    """Dial a connection for ``want``; report the outcome with ``dialed_h1``, ``dialed_h2`` or
    ``dial_failed``, giving this action back."""

    want: W
    may_be_h2: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Close(Generic[H1T, H2T]):
    """Close ``conn``; it reports back with ``h1_closed`` or ``h2_closed``."""

    conn: H1T | H2T
    why: CloseReason
    error: BaseException | None = None


Action = Deliver[W] | Dial[W] | Close[H1T, H2T]


@dataclasses.dataclass(frozen=True)
class PoolOptions:
    """The limits and protocol choices the decisions follow; 0 means "no limit" for the
    ``max_*`` options, as in Go."""

    max_idle_conns: int = 100
    max_idle_conns_per_host: int = sys.maxsize
    max_conns_per_host: int = 0
    max_conns: int = 0  # over all hosts (httpx's max_connections)
    idle_conn_timeout: float | None = 90.0
    disable_keep_alives: bool = False
    strict_max_concurrent_streams: bool = False
    # Requests a connection carries before it is retired (HTTP/1.1: closed when the last one
    # ends; HTTP/2: drains); None: no limit. Lifetimes come as each connection's expires_at.
    max_requests_per_conn: int | None = None


@dataclasses.dataclass(frozen=True)
class HostStats:
    idle: int
    in_use: int
    dialing: int
    waiting: int
    total: int  # dialing + in use + idle
    streams: int = 0  # HTTP/2 streams open over the host's connections


class _Host(Generic[H1T, H2T, W]):
    """Per-key state; every field is changed only by the Pool's decisions."""

    __slots__ = (
        "conns",
        "dial_waiters",
        "dialing",
        "h1_only",
        "h2_conns",
        "h2_dialing",
        "h2_draining",
        "idle",
        "idle_waiters",
        "key",
        "undialed",
        "waiting",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        # HTTP/2 connections taking new streams, in the order they were made (a GOAWAY removes
        # one); the value is unused.
        self.h2_conns: dict[H2T, None] = {}
        # HTTP/2 connections that sent GOAWAY and finish their streams until they close.
        self.h2_draining: set[H2T] = set()
        self.h2_dialing = 0  # dials in flight that may yield HTTP/2: others wait for them
        self.h1_only = False  # the server answered ALPN with http/1.1 once
        # Idle connections, least recently used first; the value is unused.
        self.idle: collections.OrderedDict[H1T, None] = collections.OrderedDict()
        self.idle_waiters: collections.deque[W] = collections.deque()
        self.dial_waiters: collections.deque[W] = collections.deque()
        # Wants with no dial of their own (they wait on an HTTP/2 dial in flight), in arrival
        # order: _dial_for_waiters finds them here instead of scanning idle_waiters.
        self.undialed: collections.deque[W] = collections.deque()
        self.conns = 0  # dials in flight + open connections (closing ones included)
        self.dialing = 0
        self.waiting = 0  # wants still waiting (the deques may also hold served/cancelled ones)


class Pool(Generic[H1T, H2T, W]):
    """The pool's state and decisions; see the module's theory of operation. Every method that
    takes ``now`` is a decision and may append to ``actions``, which the caller carries out
    (and clears) before the next decision."""

    def __init__(self, options: PoolOptions) -> None:
        self.options = options
        # What to do, in order; appended by the decisions, emptied by whoever carries them out.
        self.actions: list[Action[W, H1T, H2T]] = []
        self.hosts: dict[str, _Host[H1T, H2T, W]] = {}
        self.idle_lru: collections.OrderedDict[H1T, None] = collections.OrderedDict()
        self.open: set[H1T | H2T] = set()  # connections dialed, not yet reported closed
        self.closing: set[H1T | H2T] = set()  # those the pool asked to close (a Close action)
        self.closed = False  # close() was decided: nothing new starts
        # max_conns: the connections of all hosts (dials in flight + open, closing included),
        # the wants waiting for one of those slots in FIFO order (with served or cancelled ones
        # until met at the front; slot_waiting counts those still waiting), and the idle
        # connections closed to make room for them, until they report their close.
        self.conns = 0
        self.slot_waiters: collections.deque[W] = collections.deque()
        self.slot_waiting = 0
        self.room_closing: set[H1T | H2T] = set()
        # Go's closeIdle: close connections freed after close_idle, until the next take.
        self.close_idle_on_release = False
        # How long the connection the last successful take returned had been idle.
        self.idle_time = 0.0
        # Streams a new HTTP/2 connection to a key is given in its life, learnt from a GOAWAY
        # that refused streams after the server took this many (a server that closes
        # connections after a few requests, as nginx's keepalive_requests): the requests it
        # refused then spread over new connections instead of all moving to the next one, to be
        # refused again. Forgotten when a connection answers that many without a GOAWAY; kept
        # past the host's last connection (as that one's GOAWAY closes it), the oldest dropped
        # past STREAM_CAPS_KEPT.
        self.h2_stream_caps: dict[str, int] = {}
        # The lifetime deadlines of the connections dialed with one (expires_at), a heap of
        # (expires_at, sequence, connection, is HTTP/2). Entries are pushed once, at the dial,
        # and popped by expire() when due (those of connections closed meanwhile are skipped
        # then, or when met at the top).
        self.lifetimes: list[tuple[float, int, H1T | H2T, bool]] = []
        self._lifetime_seq = itertools.count()
        # Counters for stats().
        self.dials = 0
        self.failed_dials = 0
        self.idle_timeouts = 0
        self.evictions = 0
        self.server_closed_idle = 0
        self.lifetime_expirations = 0  # connections retired at max_conn_lifetime
        self.max_requests_expirations = 0  # ... after max_requests_per_conn requests

    # -- taking a connection ----------------------------------------------------------------

    def take(self, key: str, now: float) -> H1T | H2T | None:
        """A stream on one of the host's HTTP/2 connections, reserved, or else its most recently
        used live idle HTTP/1.1 connection; None when it has neither. Sets ``idle_time``."""
        self.close_idle_on_release = False  # someone wants a connection: keep freed ones again
        host = self.hosts.get(key)
        if host is None:
            return None
        while host.h2_conns:  # (an HTTP/1.1 host makes no iterator)
            for h2_conn in host.h2_conns:
                expires_at = h2_conn.expires_at
                if expires_at is not None and now >= expires_at:
                    # Its lifetime ended before the sweeper came by: it drains (or closes).
                    self._retire_h2(host, h2_conn, CloseReason.MAX_LIFETIME, now)
                    break  # h2_conns changed: look again
                if h2_conn.has_capacity:
                    self.idle_time = self._reserve(h2_conn, now)
                    return h2_conn
            else:
                break
        timeout = self.options.idle_conn_timeout
        idle, lru = host.idle, self.idle_lru
        while idle:
            conn, _ = idle.popitem(last=True)
            del lru[conn]
            idle_at = conn.idle_at
            if idle_at is None:
                _broken("an idle connection has idle_at", f"{conn!r} in an idle list without it")
            conn.idle_at = None
            if timeout is not None and now - idle_at >= timeout:
                # Older ones are staler still; each is dropped in turn as the loop goes on.
                self.idle_timeouts += 1
                self._close(conn, CloseReason.IDLE_TIMEOUT)
                continue
            if conn.expires_at is not None and now >= conn.expires_at:
                self.lifetime_expirations += 1
                self._close(conn, CloseReason.MAX_LIFETIME)
                continue
            self.idle_time = now - idle_at
            conn.handed_out += 1
            return conn
        return None

    def add_want(self, want: W, now: float) -> None:
        """Queue ``want`` (after a ``take`` that found nothing) and dial for it, or let it wait
        on the HTTP/2 dial in flight."""
        if self.closed:
            _broken("no want is added after close()", want.key)
        host = self.hosts.get(want.key)
        if host is None:
            host = self.hosts[want.key] = _Host(want.key)
        host.idle_waiters.append(want)
        host.waiting += 1
        if not self._queue_for_dial(host, want):
            host.undialed.append(want)

    def cancel_want(self, want: W, now: float) -> None:
        """``want``'s request stopped waiting (cancelled, or it failed before using what it got):
        withdraw it, or give back what it was served."""
        host = self.hosts.get(want.key)
        if want.waiting:
            if host is None:
                _broken("a waiting want's host is kept", want.key)
            self._serve(host, want, None, None)
            if want.dialed and host.waiting and not host.h2_dialing:
                # Wants with no dial of their own may have waited on its dial, queued for a
                # host slot: the next of them queues in its place.
                self._dial_for_waiters(host)
        else:
            self.give_back(want, now)

    def give_back(self, want: W, now: float) -> None:
        """What ``want`` was served went unused (its request failed before using it)."""
        conn, want.conn = want.conn, None
        if conn is None:
            return
        if want.stream:
            self.release_stream(cast(H2T, conn), now)
        else:
            self.put_unused(cast(H1T, conn), now)

    def put_unused(self, conn: H1T, now: float) -> None:
        """An HTTP/1.1 connection ``take`` or a want handed out carried no request: it is not
        counted (``max_requests_per_conn``), and goes back as after a request."""
        conn.handed_out -= 1
        self.put_idle(conn, now)

    # -- giving connections back ------------------------------------------------------------

    def put_idle(self, conn: H1T, now: float) -> CloseReason | None:
        """An HTTP/1.1 connection may carry another request (Go's tryPutIdleConn): to the first
        waiting want, else to the idle list. Returns None when one took it, else why it closes
        (a Close is appended unless it closed already)."""
        reason = self._try_put_idle(conn, now)
        if reason is not None and not conn.closed and conn not in self.closing:
            self._close(conn, reason)
        return reason

    def _try_put_idle(self, conn: H1T, now: float) -> CloseReason | None:
        if conn.closed:
            return conn.close_why
        if self.options.disable_keep_alives:
            return CloseReason.NOT_REUSABLE
        if self.closed:
            return CloseReason.POOL_CLOSED
        limit = self.options.max_requests_per_conn
        if limit is not None and conn.handed_out >= limit:
            self.max_requests_expirations += 1
            return CloseReason.MAX_REQUESTS
        if conn.expires_at is not None and now >= conn.expires_at:
            self.lifetime_expirations += 1
            return CloseReason.MAX_LIFETIME
        host = self.hosts[conn.key]
        while host.idle_waiters:
            want = host.idle_waiters.popleft()
            if want.waiting:
                conn.handed_out += 1
                self._serve(host, want, conn, None)
                return None
        if self.close_idle_on_release:
            return CloseReason.CLOSE_IDLE
        if self.slot_waiting > len(self.room_closing):
            self.room_closing.add(conn)  # max_conns: another host's want needs its slot
            self.evictions += 1
            return CloseReason.MAKE_ROOM
        if len(host.idle) >= self.options.max_idle_conns_per_host:
            return CloseReason.IDLE_LIST_FULL
        conn.idle_at = now
        host.idle[conn] = None
        lru = self.idle_lru
        lru[conn] = None
        max_idle = self.options.max_idle_conns
        if max_idle and len(lru) > max_idle:
            oldest, _ = lru.popitem(last=False)
            self.evictions += 1
            del self.hosts[oldest.key].idle[oldest]
            oldest.idle_at = None
            self._close(oldest, CloseReason.EVICTED)
        return None

    def release_stream(self, conn: H2T, now: float) -> None:
        """A stream of ``conn`` ended (or was never opened): its slot serves the next want."""
        conn.reserved -= 1
        if conn.reserved < 0:
            _broken("a stream gives its slot back once", f"{conn!r} reserved={conn.reserved}")
        host = self.hosts.get(conn.key)
        if conn.reserved == 0:
            conn.idle_at = now
        if host is None:
            return
        if conn in host.h2_conns:
            expires_at = conn.expires_at
            if expires_at is not None and now >= expires_at:
                self._retire_h2(host, conn, CloseReason.MAX_LIFETIME, now)
        if conn.expired is not None:
            if conn.reserved == 0 and conn in self.open and conn not in self.closing:
                self._close(conn, conn.expired)  # it drained: its last stream ended
            return
        if conn not in host.h2_conns:
            return
        cap = conn.stream_cap
        forget = cap is not None and conn.streams_accepted >= cap and not conn.goaway
        if forget:
            # It answered all it was given and announced no GOAWAY (which would have come with
            # the last stream it takes): the server takes more now. Forget the lesson: the
            # connections that spent their cap take streams again, for the wants waiting too
            # (in the order take() tries them).
            self.h2_stream_caps.pop(host.key, None)
            for other in host.h2_conns:
                other.stream_cap = None
            for other in host.h2_conns:
                self._hand_out_streams(host, other, now)
        elif (
            cap is not None
            and conn.handed_out >= cap
            and conn.reserved == 0
            and conn not in self.closing
        ):
            # It gives no stream again (its GOAWAY never came), yet holds a host slot: it
            # closes with its last stream, and the wants waiting dial.
            self._close(conn, CloseReason.NOT_REUSABLE)
        self._serve_h2_waiters(host, conn, now)
        if (
            conn.reserved == 0
            and self.slot_waiting > len(self.room_closing)
            and conn not in self.closing
        ):
            self._close_for_room(conn)  # max_conns: another host's want needs its slot

    def capacity_changed(self, conn: H2T, now: float) -> None:
        """SETTINGS or GOAWAY changed how many streams ``conn`` takes."""
        host = self.hosts.get(conn.key)
        if host is None or conn not in host.h2_conns:
            return
        if conn.goaway:
            del host.h2_conns[conn]
            host.h2_draining.add(conn)
            if conn.refused_streams:
                self._learn_stream_cap(host.key, conn.streams_accepted)
            if host.waiting and not host.h2_dialing:
                self._dial_for_waiters(host)
        else:
            self._serve_h2_waiters(host, conn, now)

    def h2_idle_timed_out(self, conn: H2T, now: float) -> None:
        """``conn`` had no stream for ``idle_conn_timeout`` (its reader keeps that timer)."""
        if conn.reserved == 0 and conn in self.open and conn not in self.closing:
            self.idle_timeouts += 1
            self._close(conn, CloseReason.IDLE_TIMEOUT)

    # -- dials --------------------------------------------------------------------------------

    def dial_failed(self, dial: Dial[W], error: BaseException, now: float) -> None:
        """The dial for ``dial.want`` failed with ``error``; an ``Exception`` fails its want
        (and, for a dial that may have brought HTTP/2, the wants waiting on it)."""
        host = self.hosts[dial.want.key]
        host.dialing -= 1
        self.failed_dials += 1
        if dial.may_be_h2:
            host.h2_dialing -= 1
        if isinstance(error, Exception):
            self._serve(host, dial.want, None, error)
            if dial.may_be_h2:  # those waiting on this dial share its failure
                while host.undialed:
                    self._serve(host, host.undialed.popleft(), None, error)
        self._free_host_slot(host)

    def dialed_h1(self, dial: Dial[W], conn: H1T, now: float) -> None:
        """The dial for ``dial.want`` brought an HTTP/1.1 connection (started, and now open)."""
        host = self._dial_done(dial, conn, False)
        if dial.may_be_h2:
            host.h1_only = True  # remembered: later requests dial as HTTP/1.1 does
        if self.closed:
            self._close(conn, CloseReason.POOL_CLOSED, _pool_closed())
        elif dial.want.waiting:
            conn.handed_out += 1
            self._serve(host, dial.want, conn, None)
        else:
            self.put_idle(conn, now)
        if dial.may_be_h2:
            self._dial_for_waiters(host)

    def dialed_h2(self, dial: Dial[W], conn: H2T, now: float) -> None:
        """The dial for ``dial.want`` brought an HTTP/2 connection, its handshake done."""
        host = self._dial_done(dial, conn, True)
        if self.closed:
            self._close(conn, CloseReason.POOL_CLOSED, _pool_closed())
            return
        host.h2_conns[conn] = None
        conn.stream_cap = self.h2_stream_caps.get(host.key)
        conn.idle_at = now
        want = dial.want
        if want.waiting and conn.has_capacity:  # its own want first, then the queue in order
            self._reserve(conn, now)
            self._serve(host, want, conn, None, stream=True)
        self._serve_h2_waiters(host, conn, now)

    def _dial_done(self, dial: Dial[W], conn: H1T | H2T, h2: bool) -> _Host[H1T, H2T, W]:
        host = self.hosts[dial.want.key]
        host.dialing -= 1
        if dial.may_be_h2:
            host.h2_dialing -= 1
        self.open.add(conn)
        if conn.expires_at is not None:
            heapq.heappush(self.lifetimes, (conn.expires_at, next(self._lifetime_seq), conn, h2))
        return host

    # -- closes -------------------------------------------------------------------------------

    def h1_closed(self, conn: H1T, now: float) -> None:
        """``conn`` closed (reported once, whoever closed it): its host slot is free."""
        host = self._closed(conn)
        if conn.idle_at is not None:  # closed while idle (a decided close left the list)
            del host.idle[conn]
            del self.idle_lru[conn]
            conn.idle_at = None
            if conn.close_why is CloseReason.SERVER_CLOSED:
                self.server_closed_idle += 1
        self._free_host_slot(host)

    def h2_closed(self, conn: H2T, now: float) -> None:
        """``conn`` closed (reported once): its host slot is free, and wants waiting on its
        streams need another connection."""
        host = self._closed(conn)
        host.h2_conns.pop(conn, None)
        host.h2_draining.discard(conn)
        self._free_host_slot(host)
        if host.waiting and not host.h2_dialing:
            self._dial_for_waiters(host)

    def _closed(self, conn: H1T | H2T) -> _Host[H1T, H2T, W]:
        if conn not in self.open:
            _broken("a connection reports its close once, after its dial", f"{conn!r}")
        self.open.remove(conn)
        self.closing.discard(conn)
        self.room_closing.discard(conn)
        return self.hosts[conn.key]

    def expire(self, now: float) -> float | None:
        """Close the idle HTTP/1.1 connections past ``idle_conn_timeout`` and retire those past
        their lifetime (an idle one closes, an HTTP/2 one in use drains, an HTTP/1.1 one in use
        is left to close when its response ends); return when the next of either is due (None:
        nothing is idle and no connection has a lifetime)."""
        next_lifetime = self._expire_lifetimes(now)
        timeout = self.options.idle_conn_timeout
        if timeout is None:
            return next_lifetime
        lru = self.idle_lru
        while lru:
            oldest = next(iter(lru))
            idle_at = oldest.idle_at
            if idle_at is None:
                _broken("an idle connection has idle_at", f"{oldest!r} in the LRU without it")
            if idle_at + timeout > now:
                due = idle_at + timeout
                return due if next_lifetime is None else min(due, next_lifetime)
            del lru[oldest]
            del self.hosts[oldest.key].idle[oldest]
            oldest.idle_at = None
            self.idle_timeouts += 1
            self._close(oldest, CloseReason.IDLE_TIMEOUT)
        return next_lifetime

    def _expire_lifetimes(self, now: float) -> float | None:
        """Pop the lifetimes due (and those of connections gone, met at the top) and retire
        their connections; the next deadline of an open connection, or None."""
        heap = self.lifetimes
        while heap:
            expires_at, _, conn, h2 = heap[0]
            if conn in self.open and conn not in self.closing:
                if expires_at > now:
                    return expires_at
                if h2:
                    h2_conn = cast(H2T, conn)
                    host = self.hosts[conn.key]
                    if h2_conn in host.h2_conns:
                        self._retire_h2(host, h2_conn, CloseReason.MAX_LIFETIME, now)
                else:
                    h1_conn = cast(H1T, conn)
                    if h1_conn.idle_at is not None:
                        del self.idle_lru[h1_conn]
                        del self.hosts[conn.key].idle[h1_conn]
                        h1_conn.idle_at = None
                        self.lifetime_expirations += 1
                        self._close(h1_conn, CloseReason.MAX_LIFETIME)
                    # (in use: put_idle closes it when its response ends)
            heapq.heappop(heap)
        return None

    def close_idle(self, now: float) -> None:
        """Close every idle connection, and those in use as they are freed, until the next
        ``take`` (Go's CloseIdleConnections)."""
        self.close_idle_on_release = True
        for conn in list(self.idle_lru):
            del self.hosts[conn.key].idle[conn]
            conn.idle_at = None
            self._close(conn, CloseReason.CLOSE_IDLE)
        self.idle_lru.clear()
        for host in self.hosts.values():
            for h2_conn in host.h2_conns:
                if h2_conn.reserved == 0:
                    self._close(h2_conn, CloseReason.CLOSE_IDLE)

    def close(self, now: float) -> None:
        """The pool closes: close every connection and fail every want; nothing new starts."""
        self.closed = True
        for idle in list(self.idle_lru):
            del self.hosts[idle.key].idle[idle]
            idle.idle_at = None
        self.idle_lru.clear()
        for conn in self.open:
            if conn not in self.closing:
                self._close(conn, CloseReason.POOL_CLOSED, _pool_closed())
        for host in list(self.hosts.values()):
            for want in (*host.idle_waiters, *host.dial_waiters):
                if want.waiting:
                    self._serve(host, want, None, _pool_closed(host.key))

    def _close(self, conn: H1T | H2T, why: CloseReason, error: BaseException | None = None) -> None:
        self.closing.add(conn)
        self.actions.append(Close(conn, why, error))

    # -- observing ------------------------------------------------------------------------------

    def host_stats(self) -> dict[str, HostStats]:
        """Each host's connections and wants: O(hosts + HTTP/2 connections).

        The one method also called from another thread (an OpenTelemetry reader's, while the
        loop changes the pool): it iterates copies of the containers, each made in one step
        under the GIL, never the live ones; a host's numbers read while the loop changes them
        may be off by that change, never by more."""
        stats = {}
        for key, host in list(self.hosts.items()):
            h2_conns = tuple(host.h2_conns)
            idle = len(host.idle) + sum(1 for c in h2_conns if c.reserved == 0)
            conns, dialing = host.conns, host.dialing
            stats[key] = HostStats(
                idle=idle,
                in_use=max(conns - dialing - idle, 0),
                dialing=dialing,
                waiting=host.waiting,
                total=conns,
                streams=sum(c.active_streams for c in (*h2_conns, *host.h2_draining)),
            )
        return stats

    def check_invariants(self) -> None:
        """Raise PoolInvariantError naming the first invariant of the module docstring that the
        state breaks. O(connections + wants): for tests and debugging."""
        options = self.options
        open_conns: collections.Counter[str] = collections.Counter(c.key for c in self.open)
        if not self.closing <= self.open:
            _broken("a closing connection is open", f"{self.closing - self.open}")
        idle: dict[H1T, str] = {}
        for key, host in self.hosts.items():
            state = (
                f"{key}: conns={host.conns} dialing={host.dialing} h2_dialing={host.h2_dialing} "
                f"open={open_conns[key]} idle={len(host.idle)} waiting={host.waiting}"
            )
            if host.key != key:
                _broken("a host is kept under its own key", f"{host.key!r} under {key!r}")
            if host.conns == 0 and host.waiting == 0:
                _broken("no empty host is kept", state)
            if not 0 <= host.h2_dialing <= host.dialing:
                _broken("0 <= HTTP/2 dials <= dials", state)
            if host.conns != host.dialing + open_conns[key]:
                _broken("_Host.conns counts the host's dials and open connections", state)
            if options.max_conns_per_host and host.conns > options.max_conns_per_host:
                _broken("a host has at most max_conns_per_host connections", state)
            if len(host.idle) > options.max_idle_conns_per_host:
                _broken("a host keeps at most max_idle_conns_per_host idle", state)
            if host.idle and host.waiting:
                _broken("no want waits while its host has an idle connection", state)
            held = max(map(len, (host.idle_waiters, host.dial_waiters, host.undialed)))
            if held > 2 * host.waiting + COMPACT_SLACK:
                _broken("a host's deques keep no more than 2 * waiting + slack", f"{state} {held=}")
            last = float("-inf")
            for conn in host.idle:
                if conn in idle:
                    _broken("an HTTP/1.1 connection is in one place", f"{conn!r} idle twice")
                idle[conn] = key
                if conn.key != key or conn not in self.open or conn not in self.idle_lru:
                    _broken(
                        "an idle connection is open, in its host's idle list and in the LRU",
                        f"{conn!r} in {key}'s idle list",
                    )
                if conn in self.closing:
                    _broken("an HTTP/1.1 connection is in one place", f"{conn!r} idle, closing")
                if conn.idle_at is None or conn.idle_at < last:
                    _broken("an idle list is ordered by idle_at", f"{conn!r} in {key}'s")
                last = conn.idle_at
                limit = options.max_requests_per_conn
                if limit is not None and conn.handed_out >= limit:
                    _broken("no connection that carried its last request is idle", f"{conn!r}")
            for h2_conn in host.h2_conns:
                self._check_h2_conn(host, h2_conn, state)
            for h2_conn in host.h2_draining:
                if (
                    h2_conn not in self.open
                    or not (h2_conn.goaway or h2_conn.expired is not None)
                    or h2_conn in host.h2_conns
                ):
                    _broken(
                        "a draining HTTP/2 connection is open, after its GOAWAY or expiry",
                        f"{h2_conn!r}",
                    )
                if (
                    h2_conn.expired is not None
                    and not h2_conn.reserved
                    and h2_conn not in self.closing
                ):
                    _broken("an expired HTTP/2 connection closes with its last stream", state)
            self._check_wants(host, state)
        if len(idle) != len(self.idle_lru):
            _broken(
                "the LRU holds exactly the idle connections",
                f"{len(self.idle_lru)} in the LRU, {len(idle)} in idle lists",
            )
        if options.max_idle_conns and len(self.idle_lru) > options.max_idle_conns:
            _broken("at most max_idle_conns are idle", f"{len(self.idle_lru)} idle")
        self._check_max_conns()
        self._check_lifetimes()
        last = float("-inf")
        for conn in self.idle_lru:
            if conn.idle_at is None or conn.idle_at < last:
                _broken("the LRU is ordered by idle_at", f"{conn!r} idle_at={conn.idle_at}")
            last = conn.idle_at

    def _check_lifetimes(self) -> None:
        in_heap = {id(conn): expires_at for expires_at, _, conn, _ in self.lifetimes}
        h2_conns = (conn for host in self.hosts.values() for conn in host.h2_conns)
        conns: list[H1T | H2T] = [*self.idle_lru, *h2_conns]
        for conn in conns:
            expires_at = conn.expires_at
            if expires_at is not None and in_heap.get(id(conn)) != expires_at:
                _broken(
                    "an idle connection or one taking streams has its lifetime in the heap",
                    f"{conn!r} expires_at={expires_at}",
                )
        heap = self.lifetimes
        if any(heap[(i - 1) // 2][:2] > heap[i][:2] for i in range(1, len(heap))):
            _broken("the lifetimes are a heap", f"{len(heap)} entries")

    def _check_max_conns(self) -> None:
        options = self.options
        state = (
            f"conns={self.conns} slot_waiting={self.slot_waiting} "
            f"room_closing={len(self.room_closing)} idle={len(self.idle_lru)}"
        )
        if self.conns != sum(host.conns for host in self.hosts.values()):
            _broken("Pool.conns counts every host's connections", state)
        if options.max_conns and self.conns > options.max_conns:
            _broken("there are at most max_conns connections", state)
        queued = [want for want in self.slot_waiters if want.slot_queued]
        if len(queued) != self.slot_waiting or len(set(map(id, queued))) != len(queued):
            _broken("Pool.slot_waiting counts the wants queued for a slot, each once", state)
        if any(not want.waiting or not want.dialed for want in queued):
            _broken("a want queued for a slot waits, for a dial of its own", state)
        if len(self.slot_waiters) > 2 * self.slot_waiting + COMPACT_SLACK:
            _broken("slot_waiters keeps no more than 2 * slot_waiting + slack", state)
        if self.slot_waiting and not self.closed and self.conns < options.max_conns:
            _broken("no want waits for a slot while one is free", state)
        if self.slot_waiting > len(self.room_closing) and (self.idle_lru or self._idle_h2()):
            _broken("no want waits for a slot while an idle connection could make room", state)
        if not self.room_closing <= self.closing:
            _broken("a connection closed to make room is closing", state)

    def _check_h2_conn(self, host: _Host[H1T, H2T, W], conn: H2T, state: str) -> None:
        if conn.key != host.key or conn not in self.open:
            _broken("a host's HTTP/2 connections are its own, open", f"{conn!r}")
        if conn.expired is not None:
            _broken("an expired HTTP/2 connection takes no new stream", f"{conn!r}")
        if not conn.active_streams <= conn.reserved <= conn.handed_out:
            _broken(
                "an HTTP/2 connection's open streams <= reserved <= handed out",
                f"{conn!r} streams={conn.active_streams} reserved={conn.reserved} "
                f"handed_out={conn.handed_out}",
            )
        if conn.stream_cap is not None and conn.handed_out > conn.stream_cap:
            _broken(
                "an HTTP/2 connection hands out at most its stream cap",
                f"{conn!r} handed_out={conn.handed_out} cap={conn.stream_cap}",
            )
        if (
            conn.stream_cap is not None
            and conn.handed_out >= conn.stream_cap
            and conn.reserved == 0
            and conn not in self.closing
        ):
            _broken(
                "an HTTP/2 connection that handed out its stream cap closes with its last stream",
                f"{conn!r} handed_out={conn.handed_out} cap={conn.stream_cap}",
            )
        if (conn.idle_at is None) != (conn.reserved > 0):
            _broken(
                "an HTTP/2 connection has idle_at when no stream is reserved on it",
                f"{conn!r} reserved={conn.reserved} idle_at={conn.idle_at}",
            )
        if host.waiting and conn.has_capacity:
            _broken("no want waits while an HTTP/2 connection has room", state)

    def _check_wants(self, host: _Host[H1T, H2T, W], state: str) -> None:
        waiting = [want for want in host.idle_waiters if want.waiting]
        if len(waiting) != host.waiting or len(set(map(id, waiting))) != len(waiting):
            _broken(
                "_Host.waiting counts the wants still waiting, each queued once",
                f"{state}, {len(waiting)} waiting in idle_waiters",
            )
        if not host.waiting and (host.idle_waiters or host.dial_waiters or host.undialed):
            _broken("a host with no want waiting keeps none queued", state)
        if any(not want.dialed for want in host.dial_waiters):
            _broken("a want waiting for a host slot has a dial of its own", state)
        undialed = {id(want) for want in host.undialed}
        for want in waiting:
            if want.conn is not None or want.error is not None:
                _broken("a want is served once", f"{state}, a waiting want holds a result")
            if want.dialed:
                continue
            if id(want) not in undialed:
                _broken("a waiting want with no dial of its own is in undialed", state)
            # It waits on the HTTP/2 dial in flight, on streams of the host's HTTP/2 connections
            # (they serve it, or dial for it, as they give them back), or on the dial of a want
            # queued for a host slot.
            if not (
                self.closed
                or host.h2_dialing
                or host.h2_conns
                or any(other.waiting for other in host.dial_waiters)
                or any(other.slot_queued and other.key == host.key for other in self.slot_waiters)
            ):
                _broken("a want with no dial of its own has a dial or stream to wait on", state)
        if any(want.dialed for want in host.undialed):
            _broken("undialed holds only wants with no dial of their own", state)

    # -- wants and dials ------------------------------------------------------------------------

    def _reserve(self, conn: H2T, now: float) -> float:
        conn.reserved += 1
        conn.handed_out += 1
        idle_at, conn.idle_at = conn.idle_at, None
        limit = self.options.max_requests_per_conn
        if limit is not None and conn.handed_out >= limit:
            # That was its last request: it drains. (The callers dial for the waiters left.)
            self._retire_h2(self.hosts[conn.key], conn, CloseReason.MAX_REQUESTS, now, dial=False)
        return 0.0 if idle_at is None else now - idle_at

    def _retire_h2(
        self,
        host: _Host[H1T, H2T, W],
        conn: H2T,
        why: CloseReason,
        now: float,
        *,
        dial: bool = True,
    ) -> None:
        """``conn`` (in ``h2_conns``) ran out of lifetime or requests: as after a GOAWAY of our
        own, it takes no new stream and finishes those it has (closing with the last), or
        closes now when it has none; the wants waiting get a dial for a replacement at once."""
        conn.expired = why
        del host.h2_conns[conn]
        host.h2_draining.add(conn)
        if why is CloseReason.MAX_LIFETIME:
            self.lifetime_expirations += 1
        else:
            self.max_requests_expirations += 1
        if conn.reserved == 0:
            self._close(conn, why)
        if dial and host.waiting and not host.h2_dialing:
            self._dial_for_waiters(host)

    def dial_awaited(self, want: Want[Any, Any]) -> bool:
        """Whether a request still waits for the dial made for ``want``: ``want`` itself, or
        (an HTTP/2 dial is shared) a want of its host waiting on the HTTP/2 dial in flight."""
        if want.waiting:
            return True
        host = self.hosts.get(want.key)
        return (
            host is not None
            and host.h2_dialing > 0
            and any(waiting.waiting for waiting in host.undialed)
        )

    def waits_on_h2_dial(self, want: Want[Any, Any]) -> bool:
        """``want`` has no dial of its own and waits on its host's HTTP/2 dial in flight."""
        host = self.hosts.get(want.key)
        return want.waiting and not want.dialed and host is not None and host.h2_dialing > 0

    def may_be_h2(self, want: Want[Any, Any]) -> bool:
        host = self.hosts.get(want.key)
        return want.h2_capable and not (host is not None and host.h1_only)

    def _queue_for_dial(self, host: _Host[H1T, H2T, W], want: W) -> bool:
        """Dial for ``want``, or queue it for a host slot; False when it is to wait on the
        HTTP/2 dial in flight (or, strict, on the host's HTTP/2 connections that will give
        streams) instead."""
        may_be_h2 = want.h2_capable and not host.h1_only
        if may_be_h2 and (
            host.h2_dialing
            or (self.options.strict_max_concurrent_streams and self._h2_streams_to_come(host))
        ):
            return False  # one HTTP/2 dial at a time: the waiters share what it brings
        want.dialed = True
        limit = self.options.max_conns_per_host
        if limit and host.conns >= limit:
            host.dial_waiters.append(want)
            return True
        if self.options.max_conns and self.conns >= self.options.max_conns:
            want.slot_queued = True
            self.slot_waiters.append(want)
            self.slot_waiting += 1
            self._make_room()
            return True
        host.conns += 1
        self.conns += 1
        self._start_dial(host, want)
        return True

    def _make_room(self) -> None:
        """max_conns: close idle connections (of other hosts: the want's own were taken
        first), one for each want waiting for a slot that no close under way will free, as
        httpcore does: HTTP/1.1 ones oldest first, then HTTP/2 ones without a stream, longest
        idle first (O(hosts + H) to find them, only when no HTTP/1.1 one is left)."""
        lru = self.idle_lru
        while lru and self.slot_waiting > len(self.room_closing):
            oldest, _ = lru.popitem(last=False)
            del self.hosts[oldest.key].idle[oldest]
            oldest.idle_at = None
            self._close_for_room(oldest)
        if self.slot_waiting > len(self.room_closing):
            idle_h2 = sorted(self._idle_h2(), key=lambda conn: cast(float, conn.idle_at))
            for conn in idle_h2[: self.slot_waiting - len(self.room_closing)]:
                self._close_for_room(conn)

    def _idle_h2(self) -> list[H2T]:
        """The HTTP/2 connections taking streams that have none open, and are not closing."""
        return [
            conn
            for host in self.hosts.values()
            for conn in host.h2_conns
            if conn.reserved == 0 and conn not in self.closing
        ]

    def _close_for_room(self, conn: H1T | H2T) -> None:
        self.evictions += 1
        self.room_closing.add(conn)
        self._close(conn, CloseReason.MAKE_ROOM)

    def _pass_slot(self) -> None:
        """max_conns: free slots go to the wants waiting for one, first come first served."""
        limit = self.options.max_conns_per_host
        waiters = self.slot_waiters
        while waiters and self.conns < self.options.max_conns:
            want = waiters.popleft()
            if not want.slot_queued:
                continue  # served (late binding) or cancelled while it waited
            want.slot_queued = False
            self.slot_waiting -= 1
            host = self.hosts[want.key]
            if limit and host.conns >= limit:
                host.dial_waiters.append(want)  # its host filled up meanwhile
                continue
            host.conns += 1
            self.conns += 1
            self._start_dial(host, want)

    def _start_dial(self, host: _Host[H1T, H2T, W], want: W) -> None:
        host.dialing += 1
        self.dials += 1
        may_be_h2 = want.h2_capable and not host.h1_only
        if may_be_h2:
            host.h2_dialing += 1
        self.actions.append(Dial(want, may_be_h2))

    def _dial_for_waiters(self, host: _Host[H1T, H2T, W]) -> None:
        """Wants with no dial of their own lost what they waited on (an HTTP/2 dial that brought
        HTTP/1.1, a full or departed connection): dial for them, oldest first. Each leaves
        ``undialed`` once (dialed, or found served or cancelled): amortised O(1) per want."""
        if self.closed:
            return
        undialed = host.undialed
        while undialed:
            want = undialed[0]
            if want.waiting:
                if not self._queue_for_dial(host, want):
                    return  # it still waits on the HTTP/2 dial in flight, and so do the rest
                if want.h2_capable and not host.h1_only:
                    undialed.popleft()
                    return  # one dial serves them all
            undialed.popleft()

    def _serve_h2_waiters(self, host: _Host[H1T, H2T, W], conn: H2T, now: float) -> None:
        """Hand free streams of ``conn`` to waiting wants, first come first served; dial for
        those left, unless strict and one of the host's connections will give streams."""
        self._hand_out_streams(host, conn, now)
        if (
            host.waiting
            and not host.h2_dialing
            and not (self.options.strict_max_concurrent_streams and self._h2_streams_to_come(host))
        ):
            # The connection is full (or, its requests spent, drains): open another.
            self._dial_for_waiters(host)

    def _hand_out_streams(self, host: _Host[H1T, H2T, W], conn: H2T, now: float) -> None:
        waiters = host.idle_waiters
        while waiters and conn.has_capacity:
            want = waiters.popleft()
            if want.waiting:
                self._reserve(conn, now)
                self._serve(host, want, conn, None, stream=True)

    @staticmethod
    def _h2_streams_to_come(host: _Host[H1T, H2T, W]) -> bool:
        """One of the host's HTTP/2 connections will hand out streams, now or as its streams
        end: one that handed out its stream cap gives none again (until the cap is forgotten,
        which needs a stream answered on a connection that holds one). O(H)."""
        return any(
            conn.stream_cap is None or conn.handed_out < conn.stream_cap for conn in host.h2_conns
        )

    def _serve(
        self,
        host: _Host[H1T, H2T, W],
        want: W,
        conn: H1T | H2T | None,
        error: BaseException | None,
        *,
        stream: bool = False,
    ) -> bool:
        """Serve ``want`` with a connection or an error (a cancelled want: neither), unless it
        is served already."""
        if not want.waiting:
            return False
        want.waiting = False
        want.conn = conn
        want.stream = stream
        want.error = error
        if conn is not None or error is not None:
            self.actions.append(Deliver(want))
        if want.slot_queued:
            want.slot_queued = False
            self.slot_waiting -= 1
            if self.slot_waiting == 0:
                self.slot_waiters.clear()  # only served or cancelled ones are left
            elif len(self.slot_waiters) > 2 * self.slot_waiting + COMPACT_SLACK:
                _compact(self.slot_waiters, lambda want: want.slot_queued)
        host.waiting -= 1
        if host.waiting == 0:
            # Every want left in the queues was served or cancelled: drop them in bulk.
            host.idle_waiters.clear()
            host.dial_waiters.clear()
            host.undialed.clear()
            if not host.conns:
                del self.hosts[host.key]
        else:
            most = 2 * host.waiting + COMPACT_SLACK  # (see Costs in the module docstring)
            for waiters in (host.idle_waiters, host.dial_waiters, host.undialed):
                if len(waiters) > most:
                    _compact(waiters, lambda want: want.waiting)
        return True

    def _free_host_slot(self, host: _Host[H1T, H2T, W]) -> None:
        """Go's decConnsPerHost: pass the slot to the next waiting want, or give it back."""
        if self.options.max_conns_per_host and not self.closed:
            while host.dial_waiters:
                want = host.dial_waiters.popleft()
                if want.waiting:
                    self._start_dial(host, want)
                    self._make_room()  # a close made for a slot waiter served the host's own
                    return
        host.conns -= 1
        if host.conns < 0:
            _broken("a host slot is given back once", f"{host.key} conns={host.conns}")
        self.conns -= 1
        if host.conns == 0 and host.waiting == 0:
            del self.hosts[host.key]
        if self.slot_waiting and not self.closed:
            self._pass_slot()
            self._make_room()

    def _learn_stream_cap(self, key: str, accepted: int) -> None:
        caps = self.h2_stream_caps
        caps.pop(key, None)
        if len(caps) >= STREAM_CAPS_KEPT:
            del caps[next(iter(caps))]  # the oldest lesson
        caps[key] = max(1, accepted)


def _pool_closed(host: str = "") -> PoolClosed:
    return PoolClosed("the Transport was closed", host=host)
