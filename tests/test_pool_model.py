"""A model-based test of the pool's decisions (``asyncpool._pool.Pool``), with hypothesis.

``PoolMachine`` drives a pool through the ``Harness`` of ``tests.pool_fakes`` with random
sequences of what happens to a Transport: requests (alone, or in bursts) to two keys, one
HTTP/1.1 only and one that may speak HTTP/2; dials that bring HTTP/1.1, HTTP/2 (with various
stream limits) or fail; requests cancelled while they wait or just as they are served;
responses that end; servers that close connections (idle or in use), refuse streams, send
GOAWAY (refusing streams or not) or change their stream limit; the clock, the idle sweeper and
HTTP/2 idle timers; ``close_idle`` and ``close``. Each run draws its options (limits, timeouts,
strict streams, when the pool closes, a stream cap learnt before it starts). The tasks the pool
wakes run at once and do what the Transport does with what they are served: use it (opening a
stream on an HTTP/2 connection), or give it back and try again when it went away first.

The harness checks ``Pool.check_invariants()`` after every decision. The model checks after
every step what those cannot see, as it knows which request holds what:

* A want is served at most once; each is waiting, served (a connection or an error) or
  cancelled while waiting, never two of these; a cancelled want is never served.
* A want is served an open connection (not closed, not closing), an HTTP/1.1 one no longer
  idle, a stream only if its request may speak HTTP/2.
* An HTTP/1.1 connection serves one request at a time, and is never idle while one holds it.
* An HTTP/2 connection's ``reserved`` is the number of requests holding a stream on it (open or
  about to be), ``active_streams`` those open; a stream is reserved within the server's limit.
* A key never has more than ``max_conns_per_host`` connections (dials in flight, open ones).
* The pool's open connections are exactly those dialed and not closed; every dial the pool
  asked for is in flight, done or failed; the sweeper leaves no idle connection past
  ``idle_conn_timeout`` and says when the next one expires.
* ``take`` hands out a stream on the host's first HTTP/2 connection with room, else its most
  recently used live idle connection; after ``close``, nothing.

At the end (teardown) nothing is lost: once every request has ended and every dial is done,
every want was served or cancelled (none waits forever); after ``close`` the pool keeps no host
and no connection open, closing or idle, and every stream was given back.

The runs are derandomized (the same sequences every time, so CI reproduces a failure);
``ASYNCPOOL_MODEL_EXAMPLES=5000`` runs more of them. The regression tests at the end replay, as
plain steps, the bugs found while building the model.
"""

from __future__ import annotations

import collections
import os
import sys

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from asyncpool._conn_common import CloseReason
from asyncpool._errors import PoolClosed
from asyncpool._pool import Dial, PoolOptions
from tests.pool_fakes import FakeH1, FakeH2, FakeWant, Harness

# Keys and whether their requests may speak HTTP/2 (https with http2, as the Transport decides
# per scheme: a key's requests all agree).
KEY_H1, KEY_H2 = "http://plain", "https://a"
KEYS = {KEY_H1: False, KEY_H2: True}

Conn = FakeH1 | FakeH2

MAX_REQUESTS = 8  # requests in flight at once (retries and teardown may go past it)


class Cancelled(BaseException):
    """A dial task cancelled as the Transport closes (not an Exception: it fails no want)."""


class ModelHarness(Harness):
    """The decisions the model needs beyond ``Harness``'s, carried out the same way."""

    def give_back(self, want: FakeWant) -> None:
        self.pool.give_back(want, self.now)
        self.carry_out()

    def conn_closes(self, conn: Conn, why: CloseReason) -> None:
        self._close(conn, why)
        self.carry_out()

    def capacity_changed(self, conn: FakeH2) -> None:
        self.pool.capacity_changed(conn, self.now)
        self.carry_out()

    def h2_idle_timed_out(self, conn: FakeH2) -> None:
        self.pool.h2_idle_timed_out(conn, self.now)
        self.carry_out()

    def close_idle(self) -> None:
        self.pool.close_idle(self.now)
        self.carry_out()

    def close(self) -> None:
        self.pool.close(self.now)
        self.carry_out()


class PoolMachine(RuleBasedStateMachine):
    """The pool, the requests using it and the servers behind it (see the module docstring).
    Rules are what happens; invariants, what must hold after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.harness = ModelHarness()  # replaced by the options drawn in set_up
        self.wants: list[FakeWant] = []  # every want, in the order added
        self.waiting: list[FakeWant] = []
        self.cancelled: set[int] = set()  # ids of wants cancelled while waiting
        self.doomed: set[int] = set()  # ids of waiting wants whose cancellation comes late
        self.exchanges: list[Conn] = []  # what each request in its exchange holds
        self.conns: list[Conn] = []  # every connection dialed
        self.opened: collections.Counter[FakeH2] = collections.Counter()  # streams ever opened
        self.reserved_before: dict[FakeH2, int] = {}  # at the last step: which grew
        self.seen_delivered = 0
        self.dials_done = 0
        self.dials_failed = 0
        self.close_after: int | None = None

    @property
    def pool_closed(self) -> bool:
        return self.harness.pool.closed

    def open_conns(self) -> list[Conn]:
        return [conn for conn in self.conns if not conn.closed]

    def open_h2(self) -> list[FakeH2]:
        return [conn for conn in self.conns if isinstance(conn, FakeH2) and not conn.closed]

    def holders(self, conn: Conn) -> int:
        """Requests holding ``conn`` (a stream on it for HTTP/2)."""
        return sum(1 for held in self.exchanges if held is conn)

    # -- the pool's options ---------------------------------------------------------------------

    @initialize(
        max_conns_per_host=st.sampled_from([0, 1, 2]),
        max_idle_conns=st.sampled_from([0, 1, 3]),
        max_idle_conns_per_host=st.sampled_from([1, 2, sys.maxsize]),
        idle_conn_timeout=st.sampled_from([None, 10.0, 60.0]),
        disable_keep_alives=st.sampled_from([False, False, False, True]),
        strict_max_concurrent_streams=st.booleans(),
        close_after=st.sampled_from([None, None, None, 10, 30]),
        stream_cap=st.sampled_from([None, None, 1, 1, 2]),
    )
    def set_up(
        self,
        max_conns_per_host: int,
        max_idle_conns: int,
        max_idle_conns_per_host: int,
        idle_conn_timeout: float | None,
        disable_keep_alives: bool,
        strict_max_concurrent_streams: bool,
        close_after: int | None,
        stream_cap: int | None,
    ) -> None:
        self.close_after = close_after  # wants, then the pool may close (None: at teardown)
        self.harness = ModelHarness(
            PoolOptions(
                max_idle_conns=max_idle_conns,
                max_idle_conns_per_host=max_idle_conns_per_host,
                max_conns_per_host=max_conns_per_host,
                idle_conn_timeout=idle_conn_timeout,
                disable_keep_alives=disable_keep_alives,
                strict_max_concurrent_streams=strict_max_concurrent_streams,
            ),
            now=1000.0,
        )
        if stream_cap is not None:
            # The runs that start where a GOAWAY taught the pool that the server of KEY_H2
            # refuses streams past stream_cap on a connection (the path there is long).
            self.harness.pool.h2_stream_caps[KEY_H2] = stream_cap

    # -- requests ---------------------------------------------------------------------------------

    def requests(self) -> int:
        return len(self.waiting) + len(self.exchanges)

    # A few callers at a time: the pool's queues stay short and its connections see reuse.
    @precondition(lambda self: self.requests() < MAX_REQUESTS)
    @rule(key=st.sampled_from([KEY_H1, KEY_H2, KEY_H2]))  # HTTP/2 has more to get wrong
    def a_request_arrives(self, key: str) -> None:
        self.request(key)
        self.sync()

    @precondition(lambda self: self.requests() < MAX_REQUESTS)
    @rule(count=st.integers(2, 4))
    def requests_to_the_http2_host_arrive_together(self, count: int) -> None:
        """A burst (a page's resources, retries after a GOAWAY): the HTTP/2 connections fill
        and requests wait, for more connections or for streams."""
        for _ in range(count):
            self.request(KEY_H2)
        self.sync()

    def request(self, key: str) -> None:
        """As ``Transport._take``, then ``_get_conn``: a connection, else a want (none after close)."""
        h = self.harness
        expected = self.expected_take(key)
        conn = h.take(key)
        assert conn is expected, f"take({key}) hands out {expected!r}, not {conn!r}"
        assert conn is None or not self.pool_closed, "a closed pool hands out no connection"
        if conn is not None:
            self.check_served(conn, h2_capable=KEYS[key])
            self.start_exchange(conn)
        elif not self.pool_closed:
            want = h.want(key, h2=KEYS[key])
            self.wants.append(want)
            self.waiting.append(want)

    def expected_take(self, key: str) -> Conn | None:
        """The spec of ``take``: the first HTTP/2 connection with room, else the most recently
        used live idle connection (stale ones on the way are closed)."""
        host = self.harness.pool.hosts.get(key)
        if host is None:
            return None
        for h2 in host.h2_conns:
            if h2.has_capacity:
                return h2
        timeout = self.harness.pool.options.idle_conn_timeout
        for idle in reversed(host.idle):
            assert idle.idle_at is not None
            if timeout is None or self.harness.now - idle.idle_at < timeout:
                return idle
        return None

    def start_exchange(self, conn: Conn) -> None:
        if isinstance(conn, FakeH2):
            conn.active_streams += 1
            self.opened[conn] += 1
        self.exchanges.append(conn)

    def cancellable(self) -> list[FakeWant]:
        return [want for want in self.waiting if id(want) not in self.doomed]

    @precondition(lambda self: self.cancellable())
    @rule(data=st.data())
    def a_waiting_request_is_cancelled(self, data: st.DataObject) -> None:
        want = data.draw(st.sampled_from(self.cancellable()))
        self.harness.cancel(want)
        self.waiting.remove(want)
        self.cancelled.add(id(want))
        self.sync()

    @precondition(lambda self: self.cancellable())
    @rule(data=st.data())
    def a_request_is_cancelled_as_it_is_served(self, data: st.DataObject) -> None:
        """Its task is cancelled while it waits, but the pool serves its want before the task
        runs ``cancel_want``, which then gives back what it was served."""
        self.doomed.add(id(data.draw(st.sampled_from(self.cancellable()))))

    def wake(self, want: FakeWant) -> None:
        """The task the pool woke runs: it uses what it was served, as the Transport does."""
        if id(want) in self.doomed:
            self.harness.cancel(want)
            assert want.conn is None, "a want cancelled once served gives its connection back"
            return
        conn = want.conn
        if conn is None:
            return  # served an error: the request fails with it
        # A connection that went away (or an HTTP/2 one now at the server's lowered limit)
        # before the request used it fails the attempt, and the request tries again.
        if isinstance(conn, FakeH2):
            if conn.closed or conn.goaway or conn.active_streams >= conn.max_streams:
                self.harness.give_back(want)  # round_trip releases the unopened stream
                self.request(want.key)
                return
        elif conn.closed:
            self.request(want.key)
            return
        self.start_exchange(conn)

    @precondition(lambda self: self.exchanges)
    @rule(data=st.data(), answered=st.sampled_from([True, True, False]))
    def a_response_ends(self, data: st.DataObject, answered: bool) -> None:
        """The exchange ends (``answered``: with a response, else the stream was reset) and its
        connection, or stream, is free."""
        conn = data.draw(st.sampled_from(self.exchanges))
        self.end_exchange(conn, answered=answered)
        self.sync()

    def end_exchange(self, conn: Conn, *, answered: bool = True) -> None:
        self.exchanges.remove(conn)
        h = self.harness
        if isinstance(conn, FakeH2):
            if answered and not conn.closed:
                conn.streams_accepted += 1  # its head came before its end
            h.release(conn)  # streams end, and give their slot back, after their conn closes too
            if conn.goaway and not conn.closed and conn.active_streams == 0:
                h.conn_closes(conn, CloseReason.NOT_REUSABLE)  # the last stream after GOAWAY
        elif not conn.closed:  # a closed one failed its request: nothing is freed
            h.release(conn)

    # -- dials ------------------------------------------------------------------------------------

    def dials_for(self, *, h2_capable: bool) -> list[Dial[FakeWant]]:
        return [dial for dial in self.harness.dials if dial.want.h2_capable == h2_capable]

    @precondition(lambda self: self.dials_for(h2_capable=False))
    @rule(data=st.data())
    def a_dial_brings_http1(self, data: st.DataObject) -> None:
        self.finish_dial(data.draw(st.sampled_from(self.dials_for(h2_capable=False))), None)

    @precondition(lambda self: self.dials_for(h2_capable=True))
    @rule(data=st.data())
    def alpn_picks_http1(self, data: st.DataObject) -> None:
        """A dial that may bring HTTP/2 brings HTTP/1.1: the host is known to answer it."""
        self.finish_dial(data.draw(st.sampled_from(self.dials_for(h2_capable=True))), None)

    @precondition(lambda self: self.dials_for(h2_capable=True))
    @rule(data=st.data(), max_streams=st.sampled_from([1, 2, 2, 3, 100]))
    def a_dial_brings_http2(self, data: st.DataObject, max_streams: int) -> None:
        """ALPN picked h2 (even for a dial that expected HTTP/1.1, from a host known to answer
        it: the Transport offers h2 to every https dial)."""
        dials = self.dials_for(h2_capable=True)
        self.finish_dial(data.draw(st.sampled_from(dials)), max_streams)

    def finish_dial(self, dial: Dial[FakeWant], max_streams: int | None) -> None:
        conn = self.harness.finish_dial(dial, h2=max_streams)
        self.conns.append(conn)
        self.dials_done += 1
        self.sync()

    @precondition(lambda self: self.harness.dials)
    @rule(data=st.data())
    def a_dial_fails(self, data: st.DataObject) -> None:
        dial = data.draw(st.sampled_from(self.harness.dials))
        error: BaseException = OSError("connection refused")
        if self.pool_closed and data.draw(st.booleans(), label="cancelled"):
            error = Cancelled()  # the Transport closed: its dial tasks are cancelled
        self.harness.fail_dial(dial, error)
        self.dials_done += 1
        self.dials_failed += 1
        self.sync()

    # -- servers ------------------------------------------------------------------------------------

    def idle_conns(self) -> list[Conn]:
        idle: list[Conn] = list(self.harness.pool.idle_lru)
        return idle + [conn for conn in self.open_h2() if conn.reserved == 0]

    def conns_in_use(self) -> list[Conn]:
        return [conn for conn in self.open_conns() if self.holders(conn)]

    @precondition(lambda self: self.idle_conns())
    @rule(data=st.data())
    def the_server_closes_an_idle_connection(self, data: st.DataObject) -> None:
        self.harness.server_close(data.draw(st.sampled_from(self.idle_conns())))
        self.sync()

    @precondition(lambda self: self.conns_in_use())
    @rule(data=st.data())
    def the_server_closes_a_connection_in_use(self, data: st.DataObject) -> None:
        """Its requests fail; they end (and HTTP/2 streams give their slots back) later."""
        self.harness.server_close(data.draw(st.sampled_from(self.conns_in_use())))
        self.sync()

    def goaway_candidates(self) -> list[FakeH2]:
        return [conn for conn in self.open_h2() if not conn.goaway]

    def streams_in_use(self) -> list[FakeH2]:
        return [conn for conn in self.exchanges if isinstance(conn, FakeH2) and not conn.closed]

    @precondition(lambda self: self.streams_in_use())
    @rule(data=st.data())
    def the_server_refuses_a_stream(self, data: st.DataObject) -> None:
        """RST_STREAM(REFUSED_STREAM): the request was not processed, and tries again."""
        conn = data.draw(st.sampled_from(self.streams_in_use()))
        conn.refused_streams = True
        self.end_exchange(conn, answered=False)
        self.request(conn.key)
        self.sync()

    @precondition(lambda self: self.goaway_candidates())
    @rule(data=st.data(), refuse=st.booleans())
    def the_server_sends_goaway(self, data: st.DataObject, refuse: bool) -> None:
        """As ``HTTP2Connection._goaway``: streams past the last one the server accepts fail
        (each gives its slot back, the last closing the connection), then the pool hears of
        the GOAWAY, and a connection left with no stream closes. The refused requests retry."""
        conn = data.draw(st.sampled_from(self.goaway_candidates()))
        h = self.harness
        refused = 0
        if refuse and conn.active_streams:
            refused = data.draw(st.integers(1, conn.active_streams), label="refused")
        conn.goaway = True
        # Stream ids go up in the order streams opened: the refused ones are the last opened.
        conn.streams_accepted = max(conn.streams_accepted, self.opened[conn] - refused)
        for _ in range(refused):
            conn.refused_streams = True
            self.end_exchange(conn, answered=False)
        h.capacity_changed(conn)
        if not conn.closed and conn.active_streams == 0:
            h.conn_closes(conn, CloseReason.SERVER_CLOSED)
        for _ in range(refused):
            self.request(conn.key)
        self.sync()

    @precondition(lambda self: self.open_h2())
    @rule(data=st.data(), max_streams=st.sampled_from([1, 2, 3, 100]))
    def the_server_changes_its_stream_limit(self, data: st.DataObject, max_streams: int) -> None:
        """SETTINGS_MAX_CONCURRENT_STREAMS: raised, or lowered below the streams reserved."""
        conn = data.draw(st.sampled_from(self.open_h2()))
        conn.max_streams = max_streams
        self.harness.capacity_changed(conn)
        self.sync()

    # -- time ---------------------------------------------------------------------------------------

    @precondition(lambda self: self.idle_conns())  # only idle connections see the clock
    @rule(seconds=st.sampled_from([1.0, 9.0, 10.0, 30.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        """The clock moves; the sweeper may run late (a request may meet a stale connection)."""
        self.harness.advance(seconds)

    @precondition(lambda self: self.harness.pool.idle_lru)  # it sleeps while none is idle
    @rule()
    def the_sweeper_runs(self) -> None:
        """It closes the idle HTTP/1.1 connections that expired and says when to run next (it
        wakes then, or as a connection goes idle)."""
        h = self.harness
        next_expiry = h.expire()
        timeout = h.pool.options.idle_conn_timeout
        lru = h.pool.idle_lru
        if timeout is None or not lru:
            assert next_expiry is None, f"expire() with nothing to expire says {next_expiry}"
        else:
            oldest = next(iter(lru))
            assert oldest.idle_at is not None
            assert next_expiry == oldest.idle_at + timeout, "expire() says when the next expires"
            assert next_expiry > h.now, "expire() leaves no idle connection past its timeout"
        self.sync()

    def h2_timer_candidates(self) -> list[FakeH2]:
        """HTTP/2 connections whose reader's idle timer may fire: idle past the timeout, or (a
        timer that fired as a stream was reserved) in use."""
        timeout = self.harness.pool.options.idle_conn_timeout
        if timeout is None:
            return []
        now = self.harness.now
        return [
            conn for conn in self.open_h2() if conn.idle_at is None or now - conn.idle_at >= timeout
        ]

    @precondition(lambda self: self.h2_timer_candidates())
    @rule(data=st.data())
    def an_http2_connection_times_out_idle(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.h2_timer_candidates()))
        in_use = conn.reserved > 0
        self.harness.h2_idle_timed_out(conn)
        assert conn.closed != in_use, "an HTTP/2 connection times out only with no stream"
        self.sync()

    # -- the pool's controls ------------------------------------------------------------------------

    @precondition(lambda self: self.idle_conns())
    @rule()
    def the_user_closes_idle_connections(self) -> None:
        self.harness.close_idle()
        assert not self.harness.pool.idle_lru, "close_idle() leaves no idle connection"
        self.sync()

    @precondition(
        lambda self: (
            not self.pool_closed
            and self.close_after is not None
            and len(self.wants) >= self.close_after
        )
    )
    @rule()
    def the_pool_closes(self) -> None:
        """In the runs that close before teardown, requests, dials and connections outlive the
        pool."""
        self.harness.close()
        self.sync()
        assert not self.waiting, "close() fails every want waiting"
        assert not self.harness.pool.idle_lru, "close() leaves no idle connection"

    # -- what the model sees happen -------------------------------------------------------------------

    def sync(self) -> None:
        """Take in the wants the pool served since the last look, then wake their tasks (which
        may serve more, or retry)."""
        delivered = self.harness.delivered
        while self.seen_delivered < len(delivered):
            woken = delivered[self.seen_delivered :]
            self.seen_delivered = len(delivered)
            for want in woken:
                self.check_delivered(want)
            for want in woken:
                self.wake(want)

    def check_delivered(self, want: FakeWant) -> None:
        assert id(want) not in self.cancelled, "a want cancelled while waiting is not served"
        assert any(want is waiting for waiting in self.waiting), (
            f"a want is served once, while waiting ({want.key})"
        )
        self.waiting.remove(want)
        assert not want.waiting, "a served want no longer waits"
        if want.error is not None:
            assert want.conn is None, "a want is served a connection or an error"
            return
        assert want.conn is not None, "a served want has a connection or an error"
        assert want.stream == isinstance(want.conn, FakeH2), "a stream is on HTTP/2"
        self.check_served(want.conn, h2_capable=want.h2_capable)

    def check_served(self, conn: Conn, *, h2_capable: bool) -> None:
        pool = self.harness.pool
        assert not conn.closed and conn in pool.open and conn not in pool.closing, (
            f"a request is served an open connection, not {conn!r}"
        )
        if isinstance(conn, FakeH2):
            assert h2_capable, "only a request that may speak HTTP/2 is served a stream"
        else:
            assert conn.idle_at is None and conn not in pool.idle_lru, (
                "a connection served is no longer idle"
            )

    @invariant()
    def every_want_is_waiting_served_or_cancelled(self) -> None:
        served = collections.Counter(map(id, self.harness.delivered))
        for want in self.wants:
            waiting = any(want is other for other in self.waiting)
            cancelled = id(want) in self.cancelled
            states = [waiting, cancelled, served[id(want)] == 1]
            assert served[id(want)] <= 1, "no want is served twice"
            assert states.count(True) == 1, f"a want is waiting, served or cancelled: {states}"
            assert want.waiting == waiting, "a want waits exactly while the model says so"

    @invariant()
    def an_http1_connection_serves_one_request_at_a_time(self) -> None:
        pool = self.harness.pool
        for conn in self.conns:
            if isinstance(conn, FakeH1) and self.holders(conn):
                assert self.holders(conn) == 1, f"{conn!r} is held by {self.holders(conn)}"
                assert conn.idle_at is None and conn not in pool.idle_lru, (
                    f"{conn!r} is idle while a request holds it"
                )

    @invariant()
    def an_http2_connection_reserves_a_stream_per_request(self) -> None:
        for conn in self.conns:
            if not isinstance(conn, FakeH2):
                continue
            in_exchange = sum(1 for held in self.exchanges if held is conn)
            assert conn.reserved == self.holders(conn), (
                f"{conn!r} reserves a stream for each of the {self.holders(conn)} holding it"
            )
            assert conn.active_streams == in_exchange, f"{conn!r} has a stream per exchange"
            if conn.reserved > self.reserved_before.get(conn, 0):
                assert conn.reserved <= conn.max_streams, (
                    f"{conn!r} reserves streams within the server's {conn.max_streams}"
                )
            self.reserved_before[conn] = conn.reserved

    @invariant()
    def a_host_has_at_most_max_conns_per_host(self) -> None:
        limit = self.harness.pool.options.max_conns_per_host
        if not limit:
            return
        count = collections.Counter(dial.want.key for dial in self.harness.dials)
        count.update(conn.key for conn in self.open_conns())
        for key, conns in count.items():
            assert conns <= limit, f"{key} has {conns} connections, the limit is {limit}"

    @invariant()
    def the_pool_knows_every_connection_and_dial(self) -> None:
        pool, h = self.harness.pool, self.harness
        assert pool.open == set(self.open_conns()), "the pool's open connections are those open"
        assert pool.dials == len(h.dials) + self.dials_done, "every dial is in flight or done"
        assert pool.failed_dials == self.dials_failed, "the pool counts the failed dials"
        for key, host in pool.hosts.items():
            in_flight = sum(1 for dial in h.dials if dial.want.key == key)
            assert host.dialing == in_flight, f"{key} counts its dials in flight"

    def check_model(self) -> None:
        """The invariants above, where hypothesis does not run them (teardown)."""
        self.every_want_is_waiting_served_or_cancelled()
        self.an_http1_connection_serves_one_request_at_a_time()
        self.an_http2_connection_reserves_a_stream_per_request()
        self.a_host_has_at_most_max_conns_per_host()
        self.the_pool_knows_every_connection_and_dial()

    # -- the end ------------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Every request ends, every dial is done; then the pool closes. Nothing is lost."""
        h = self.harness
        for _ in range(1000):
            if self.exchanges:
                self.end_exchange(self.exchanges[0])
            elif h.dials:
                dial = h.dials[0]
                self.finish_dial(dial, 2 if dial.want.h2_capable else None)
            else:
                break
            self.sync()
            self.check_model()
        else:
            raise AssertionError("the requests and dials settle")
        assert not self.waiting, f"no want waits forever: {[w.key for w in self.waiting]}"
        h.close()
        self.sync()
        pool = h.pool
        assert not pool.hosts, f"a closed pool keeps no host: {list(pool.hosts)}"
        assert not pool.open and not pool.closing, "a closed pool has no connection open"
        assert not pool.idle_lru, "a closed pool has no idle connection"
        assert all(conn.closed for conn in self.conns), "every connection is closed"
        for conn in self.conns:
            if isinstance(conn, FakeH2):
                assert conn.reserved == conn.active_streams == 0, f"{conn!r} gave its streams back"
        assert pool.dials == self.dials_done, "every dial is done"
        for want in self.wants:
            assert not want.waiting, "no want waits after close"
            if want.error is not None:
                assert isinstance(want.error, (OSError, PoolClosed)), f"{want.error!r}"


TestPoolModel = PoolMachine.TestCase
TestPoolModel.settings = settings(
    max_examples=int(os.environ.get("ASYNCPOOL_MODEL_EXAMPLES", "300")),
    stateful_step_count=100,
    deadline=None,
    derandomize=True,  # the same runs every time (CI reproduces any failure)
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- regressions: the bugs the model found, as plain steps --------------------------------------


def dial_h2(h: Harness, max_streams: int) -> FakeH2:
    """The oldest dial in flight brings HTTP/2, the server taking ``max_streams`` at once."""
    conn = h.finish_dial(h2=max_streams)
    assert isinstance(conn, FakeH2)
    return conn


def test_forgetting_a_stream_cap_lets_every_connection_serve_the_waiting_wants() -> None:
    """A connection that answers the streams of a learnt cap without GOAWAY makes the pool
    forget the cap for all the host's connections: those that had spent it take streams
    again, and serve the wants waiting, not only the connection whose stream ended."""
    h = Harness(PoolOptions())
    key = "https://a"
    h.pool.h2_stream_caps[key] = 1  # a GOAWAY refused streams after the first, once
    first = h.want(key, h2=True)
    small = dial_h2(h, 1)  # one stream at a time
    assert first.conn is small
    second = h.want(key, h2=True)
    large = dial_h2(h, 100)
    assert second.conn is large and not large.has_capacity  # its cap of 1 is spent
    third, fourth = h.want(key, h2=True), h.want(key, h2=True)  # wait on a third dial
    small.streams_accepted = 1  # answered its stream, no GOAWAY: the server takes more now
    h.release(small)
    assert h.pool.h2_stream_caps == {}
    assert third.conn is small  # the connection whose stream ended serves the first waiting
    assert fourth.conn is large  # and the one whose cap was forgotten, the next


def test_strict_streams_do_not_wait_on_a_connection_that_spent_its_stream_cap() -> None:
    """With strict_max_concurrent_streams, wants wait for a stream on the host's HTTP/2
    connection, but not on one that handed out its learnt stream cap: it gives no stream again
    (and the one it carries may last: a long poll), so they dial."""
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    key = "https://a"
    h.pool.h2_stream_caps[key] = 1  # a GOAWAY refused streams after the first, once
    first = h.want(key, h2=True)
    spent = dial_h2(h, 100)
    assert first.conn is spent and not spent.has_capacity
    second = h.want(key, h2=True)
    assert len(h.dials) == 1  # while the first stream goes on
    fresh = dial_h2(h, 100)
    assert second.conn is fresh


def test_a_connection_that_spent_its_stream_cap_closes_with_its_last_stream() -> None:
    """A connection that handed out its learnt stream cap and saw no GOAWAY (its stream ended
    unanswered, so the cap is not forgotten) gives no stream again: it closes with its last
    stream, and the host slot it held serves the want waiting for one (with no idle timeout,
    that want used to wait forever)."""
    h = Harness(PoolOptions(max_conns_per_host=1, idle_conn_timeout=None))
    key = "https://a"
    h.pool.h2_stream_caps[key] = 1
    first = h.want(key, h2=True)
    spent = dial_h2(h, 100)
    assert first.conn is spent
    second = h.want(key, h2=True)
    assert not h.dials  # it waits for the host's one slot
    h.release(spent)  # reset: the server answered nothing on it
    assert spent.closed and (spent, CloseReason.NOT_REUSABLE) in h.closed
    fresh = dial_h2(h, 100)
    assert second.conn is fresh


def test_a_want_cancelled_in_the_queue_for_a_host_slot_leaves_its_place_to_the_next() -> None:
    """Wants that wait on the dial of a want queued for a host slot (one HTTP/2 dial serves
    them all) are not left waiting on nothing when that want is cancelled: the next one
    queues in its place, and dials when the slot frees."""
    h = Harness(PoolOptions(max_conns_per_host=1, strict_max_concurrent_streams=True))
    key = "https://a"
    first, second, third = (h.want(key, h2=True) for _ in range(3))  # wait on the first dial
    conn = dial_h2(h, 1)
    assert first.conn is conn  # strict: the others wait for a stream on it
    h.goaway(conn)  # its stream goes on; second queues for the host's slot, third waits on it
    assert [second.dialed, third.dialed] == [True, False] and not h.dials
    h.cancel(second)
    assert third.dialed  # queued for the slot in second's place
    h.release(conn)
    h.server_close(conn)  # its last stream after the GOAWAY ended: it closes, the slot frees
    fresh = dial_h2(h, 1)
    assert third.conn is fresh
