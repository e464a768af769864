"""Fake connections and a harness that carries out ``asyncpool._pool.Pool``'s actions as the
Transport does, without sockets, tasks or a clock: for testing the pool's decisions directly.

The harness keeps the time itself (``now``, moved by ``advance``), records what the pool asked
for (``dials`` in flight, ``delivered`` wants, ``closed`` connections), and reports back the
way connections do: a Close action closes the fake, which reports ``h1_closed``/``h2_closed``
after the decision, as the Transport's report queue does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from asyncpool._conn_common import CloseReason
from asyncpool._pool import Close, Deliver, Dial, Pool, PoolOptions, Want

_ids = itertools.count(1)


class FakeH1:
    """An HTTP/1.1 connection as the pool sees it."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.id = next(_ids)
        self.idle_at: float | None = None
        self.handed_out = 0
        self.expires_at: float | None = None
        self.closed = False
        self.close_why: CloseReason | None = None

    def __repr__(self) -> str:
        return f"<FakeH1 #{self.id} {self.key}{' closed' if self.closed else ''}>"


class FakeH2:
    """An HTTP/2 connection as the pool sees it; ``max_streams`` is the server's limit."""

    def __init__(self, key: str, max_streams: int = 100) -> None:
        self.key = key
        self.id = next(_ids)
        self.idle_at: float | None = None
        self.reserved = 0
        self.handed_out = 0
        self.stream_cap: int | None = None
        self.expired: CloseReason | None = None
        self.expires_at: float | None = None
        self.max_streams = max_streams
        self.closed = False
        self.close_why: CloseReason | None = None
        self.goaway = False
        self.refused_streams = False
        self.streams_accepted = 0
        self.active_streams = 0

    @property
    def has_capacity(self) -> bool:
        if self.closed or self.goaway or self.expired or self.reserved >= self.max_streams:
            return False
        return self.stream_cap is None or self.handed_out < self.stream_cap

    def __repr__(self) -> str:
        return f"<FakeH2 #{self.id} {self.key} reserved={self.reserved}>"


FakeWant = Want[FakeH1, FakeH2]
FakePool = Pool[FakeH1, FakeH2, FakeWant]


class Harness:
    """A Pool with fake connections, carried out synchronously. Every method is one decision
    (plus the reports its actions cause), and leaves the pool at rest."""

    def __init__(self, options: PoolOptions | None = None, *, now: float = 0.0) -> None:
        self.pool: FakePool = Pool(options or PoolOptions())
        self.now = now
        self.dials: list[Dial[FakeWant]] = []  # in flight, oldest first
        self.delivered: list[FakeWant] = []  # in the order the pool woke them
        self.closed: list[tuple[FakeH1 | FakeH2, CloseReason]] = []

    # -- the clock -----------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def expire(self) -> float | None:
        """The sweeper's step: close what expired; when the next expiry is."""
        next_expiry = self.pool.expire(self.now)
        self.carry_out()
        return next_expiry

    # -- requests ------------------------------------------------------------------------------

    def take(self, key: str) -> FakeH1 | FakeH2 | None:
        conn = self.pool.take(key, self.now)
        self.carry_out()
        return conn

    def want(self, key: str, *, h2: bool = False) -> FakeWant:
        want: FakeWant = Want(key, h2)
        self.pool.add_want(want, self.now)
        self.carry_out()
        return want

    def get(self, key: str, *, h2: bool = False) -> FakeH1 | FakeH2 | FakeWant:
        """As ``Transport._take``, then ``_get_conn`` before it waits: a connection, or a want."""
        return self.take(key) or self.want(key, h2=h2)

    def cancel(self, want: FakeWant) -> None:
        self.pool.cancel_want(want, self.now)
        self.carry_out()

    # -- connections -----------------------------------------------------------------------------

    def finish_dial(
        self,
        dial: Dial[FakeWant] | None = None,
        *,
        h2: int | None = None,
        expires_at: float | None = None,
    ) -> FakeH1 | FakeH2:
        """The oldest dial in flight (or ``dial``) succeeds: HTTP/1.1, or with ``h2`` HTTP/2
        with that many concurrent streams; ``expires_at`` is the end of its lifetime (as the
        Transport sets it from max_conn_lifetime, jittered)."""
        dial = dial or self.dials[0]
        self.dials.remove(dial)
        conn: FakeH1 | FakeH2
        if h2 is not None:
            conn = FakeH2(dial.want.key, h2)
            conn.expires_at = expires_at
            self.pool.dialed_h2(dial, conn, self.now)
        else:
            conn = FakeH1(dial.want.key)
            conn.expires_at = expires_at
            self.pool.dialed_h1(dial, conn, self.now)
        self.carry_out()
        return conn

    def fail_dial(
        self, dial: Dial[FakeWant] | None = None, error: BaseException | None = None
    ) -> None:
        dial = dial or self.dials[0]
        self.dials.remove(dial)
        self.pool.dial_failed(dial, error or OSError("connection refused"), self.now)
        self.carry_out()

    def release(self, conn: FakeH1 | FakeH2) -> None:
        """A request on ``conn`` ended: the connection (HTTP/1.1) or its stream (HTTP/2) is
        free again."""
        if isinstance(conn, FakeH2):
            conn.active_streams = max(0, conn.active_streams - 1)
            self.pool.release_stream(conn, self.now)
        else:
            self.pool.put_idle(conn, self.now)
        self.carry_out()

    def server_close(self, conn: FakeH1 | FakeH2) -> None:
        """The server closed ``conn`` (or it failed): it reports its close."""
        self._close(conn, CloseReason.SERVER_CLOSED)
        self.carry_out()

    def goaway(self, conn: FakeH2, *, refused: bool = False) -> None:
        conn.goaway = True
        conn.refused_streams = refused
        self.pool.capacity_changed(conn, self.now)
        self.carry_out()

    # -- carrying out ----------------------------------------------------------------------------

    def carry_out(self) -> None:
        pool = self.pool
        while pool.actions:
            action = pool.actions.pop(0)
            if isinstance(action, Deliver):
                self.delivered.append(action.want)
            elif isinstance(action, Dial):
                self.dials.append(action)
            else:
                assert isinstance(action, Close)
                self._close(action.conn, action.why)
        pool.check_invariants()

    def _close(self, conn: FakeH1 | FakeH2, why: CloseReason) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.close_why = why
        self.closed.append((conn, why))
        # A connection reports its close at once; the pool decides it after the decision that
        # closed it (the Transport's report queue), i.e. here, in turn.
        if isinstance(conn, FakeH2):
            self.pool.h2_closed(conn, self.now)
        else:
            self.pool.h1_closed(conn, self.now)

    def idle(self) -> Iterator[FakeH1]:
        return iter(self.pool.idle_lru)
