"""The pool's decisions (``asyncpool._pool.Pool``) in the runs that broke them: regressions,
as plain steps through the ``Harness`` of ``tests.pool_fakes``."""

from __future__ import annotations

from asyncpool._conn_common import CloseReason
from asyncpool._pool import PoolOptions
from tests.pool_fakes import FakeH2, Harness

# -- regressions ---------------------------------------------------------------------------------


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
