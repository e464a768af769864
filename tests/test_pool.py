"""The pool's rules, as a specification of ``asyncpool._pool.Pool``: idle timeouts, the LRU,
wait order, socket late binding, HTTP/2 sharing and stream caps, closing, the invariant checker
and the stats. Plain synchronous tests on ``tests.pool_fakes.Harness``, a fake clock included:
no sockets, no event loop, no sleeps."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncpool._pool
from asyncpool import CloseReason, PoolClosed
from asyncpool._pool import Close, HostStats, PoolInvariantError, PoolOptions, Want, _Host
from tests.pool_fakes import FakeH1, FakeH2, FakeWant, Harness

A = "http://a.test"
B = "http://b.test"
C = "http://c.test"
S = "https://s.test"  # the HTTP/2 host: its wants are h2-capable

IDLE = CloseReason.IDLE_TIMEOUT


# -- helpers ----------------------------------------------------------------------------------


def h1_in_hand(h: Harness, key: str = A) -> tuple[FakeH1, FakeWant]:
    """A fresh HTTP/1.1 connection to ``key``, held by the request that dialed it."""
    want = h.want(key)
    conn = h.finish_dial(h.dials[-1])
    assert isinstance(conn, FakeH1) and want.conn is conn
    return conn, want


def h1_idle(h: Harness, key: str = A) -> FakeH1:
    """A fresh HTTP/1.1 connection to ``key``, idle since now."""
    conn, _ = h1_in_hand(h, key)
    h.release(conn)
    assert conn.idle_at == h.now
    return conn


def h2_in_use(h: Harness, key: str = S, max_streams: int = 100) -> tuple[FakeH2, FakeWant]:
    """A fresh HTTP/2 connection to ``key``, one stream reserved for the want that dialed it."""
    want = h.want(key, h2=True)
    conn = h.finish_dial(h.dials[-1], h2=max_streams)
    assert isinstance(conn, FakeH2) and want.conn is conn and want.stream
    return conn, want


def wants(h: Harness, n: int, key: str = S, *, h2: bool = True) -> list[FakeWant]:
    return [h.want(key, h2=h2) for _ in range(n)]


def put_idle(h: Harness, conn: FakeH1) -> CloseReason | None:
    """``Harness.release`` for HTTP/1.1, returning what the pool decided."""
    reason = h.pool.put_idle(conn, h.now)
    h.carry_out()
    return reason


def learn_stream_cap(h: Harness, accepted: int, key: str = S) -> None:
    """A server refuses streams after ``accepted`` on a connection: GOAWAY, REFUSED_STREAM."""
    conn, _ = h2_in_use(h, key)
    conn.streams_accepted = accepted
    h.goaway(conn, refused=True)
    h.release(conn)
    h.server_close(conn)
    assert h.pool.h2_stream_caps[key] == max(1, accepted)


# -- idle timeout -----------------------------------------------------------------------------


def test_a_connection_idle_for_less_than_the_timeout_is_reused() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    conn = h1_idle(h)
    h.advance(89.5)
    assert h.take(A) is conn
    assert h.pool.idle_time == 89.5
    assert conn.idle_at is None
    assert (h.closed, h.pool.idle_timeouts, list(h.idle())) == ([], 0, [])


@pytest.mark.parametrize("idle_for", [90, 90.5, 10_000])
def test_a_connection_idle_for_the_timeout_or_longer_is_closed_not_reused(idle_for: float) -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    conn = h1_idle(h)
    h.advance(idle_for)  # the sweeper has not run yet: take itself must refuse it
    assert h.take(A) is None
    assert h.closed == [(conn, IDLE)]
    assert h.pool.idle_timeouts == 1
    want = h.want(A)  # so the request dials
    assert [d.want for d in h.dials] == [want]
    assert h.finish_dial() is not conn


def test_take_closes_every_expired_connection_it_meets_newest_first() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    (c1, _), (c2, _) = h1_in_hand(h), h1_in_hand(h)
    h.release(c1)
    h.advance(10)
    h.release(c2)
    h.advance(100)  # both expired: the newest is met first, then the older
    assert h.take(A) is None
    assert h.closed == [(c2, IDLE), (c1, IDLE)]
    assert A not in h.pool.hosts


def test_take_stops_at_the_first_live_connection_leaving_older_ones_to_expire() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    (c1, _), (c2, _) = h1_in_hand(h), h1_in_hand(h)
    h.release(c1)
    h.advance(10)
    h.release(c2)
    h.advance(85)  # c1 expired (95 s), c2 not (85 s)
    assert h.take(A) is c2
    assert h.closed == []
    assert h.expire() is None  # the sweeper closes c1; nothing else is idle
    assert h.closed == [(c1, IDLE)]


def test_expire_closes_exactly_the_expired_connections_oldest_first() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    (a1, _), (b1, _), (a2, _) = h1_in_hand(h, A), h1_in_hand(h, B), h1_in_hand(h, A)
    h.release(a1)  # idle at 0
    h.advance(10)
    h.release(b1)  # idle at 10
    h.advance(10)
    h.release(a2)  # idle at 20
    h.now = 50
    assert h.expire() == 90  # nothing due: the oldest expires at 0 + 90
    assert h.closed == []
    h.now = 100  # a1 idle 100 s, b1 exactly 90 s (expired), a2 80 s
    assert h.expire() == 110  # a2 is next, at 20 + 90
    assert h.closed == [(a1, IDLE), (b1, IDLE)]
    assert (list(h.idle()), h.pool.idle_timeouts) == ([a2], 2)
    assert set(h.pool.hosts) == {A}  # b's last connection went: the host is forgotten
    h.now = 110
    assert h.expire() is None  # the last one went: nothing left to wait for
    assert h.closed[-1] == (a2, IDLE)


def test_expire_returns_none_while_nothing_is_idle() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    assert h.expire() is None
    conn, _ = h1_in_hand(h)  # in use: not the sweeper's business
    h.advance(1000)
    assert h.expire() is None
    assert h.closed == []
    h.release(conn)
    assert h.expire() == 1090


def test_without_an_idle_timeout_nothing_expires() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=None))
    conn = h1_idle(h)
    h.advance(1e9)
    assert h.expire() is None
    assert h.take(A) is conn
    assert h.pool.idle_time == 1e9


def test_the_idle_timeout_counts_from_the_last_use() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    conn = h1_idle(h)
    for _ in range(5):  # busy well past several timeouts, never idle for one
        h.advance(60)
        assert h.take(A) is conn
        h.release(conn)
    assert h.now == 300 and conn.idle_at == 300
    h.advance(89)
    assert h.expire() == 390  # from the last release, not the first
    assert h.take(A) is conn
    assert h.closed == []


# -- the LRU ----------------------------------------------------------------------------------


def test_the_lru_orders_connections_by_when_they_became_idle() -> None:
    h = Harness()
    (a1, _), (b1, _), (a2, _) = h1_in_hand(h, A), h1_in_hand(h, B), h1_in_hand(h, A)
    for conn in (a2, b1, a1):
        h.release(conn)
        h.advance(1)
    assert list(h.idle()) == [a2, b1, a1]
    assert [c.idle_at for c in h.idle()] == [0, 1, 2]
    # Using one and freeing it again moves it to the end, with its new time.
    assert h.take(B) is b1
    h.release(b1)
    assert list(h.idle()) == [a2, a1, b1]
    assert b1.idle_at == 3


def test_take_gives_the_most_recently_used_connection_of_the_host() -> None:
    h = Harness()
    (c1, _), (c2, _), (c3, _) = h1_in_hand(h), h1_in_hand(h), h1_in_hand(h)
    for conn in (c2, c1, c3):
        h.release(conn)
        h.advance(1)
    assert [h.take(A), h.take(A), h.take(A), h.take(A)] == [c3, c1, c2, None]
    assert h.closed == []


def test_take_measures_how_long_the_connection_was_idle() -> None:
    h = Harness()
    conn = h1_idle(h)
    h.advance(7.5)
    assert h.take(A) is conn
    assert h.pool.idle_time == 7.5


def test_max_idle_conns_evicts_the_least_recently_used_across_hosts() -> None:
    h = Harness(PoolOptions(max_idle_conns=2))
    (a, _), (b, _), (c, _) = h1_in_hand(h, A), h1_in_hand(h, B), h1_in_hand(h, C)
    h.release(a)
    h.advance(1)
    h.release(b)
    h.advance(1)
    h.release(c)  # a third idle one: a, the oldest, goes
    assert h.closed == [(a, CloseReason.EVICTED)]
    assert (list(h.idle()), h.pool.evictions) == ([b, c], 1)
    assert set(h.pool.hosts) == {B, C}
    # Using b makes c the oldest: the next one to go.
    assert h.take(B) is b
    h.advance(1)
    h.release(b)
    d = h1_idle(h, A)
    assert h.closed[1:] == [(c, CloseReason.EVICTED)]
    assert (list(h.idle()), h.pool.evictions) == ([b, d], 2)


def test_max_idle_conns_0_means_no_limit() -> None:
    h = Harness(PoolOptions(max_idle_conns=0))
    conns = [h1_in_hand(h, f"http://{i}.test")[0] for i in range(101)]  # past the default 100
    for conn in conns:
        h.release(conn)
    assert list(h.idle()) == conns
    assert (h.closed, h.pool.evictions) == ([], 0)


def test_max_idle_conns_per_host_closes_the_extra_connection() -> None:
    h = Harness(PoolOptions(max_idle_conns_per_host=1))
    (c1, _), (c2, _), (b1, _) = h1_in_hand(h), h1_in_hand(h), h1_in_hand(h, B)
    assert put_idle(h, c1) is None
    assert put_idle(h, c2) is CloseReason.IDLE_LIST_FULL
    assert put_idle(h, b1) is None  # the limit is per host
    assert h.closed == [(c2, CloseReason.IDLE_LIST_FULL)]
    assert (list(h.idle()), h.pool.evictions) == ([c1, b1], 0)


def test_with_keep_alives_disabled_a_freed_connection_is_closed_even_for_a_waiting_want() -> None:
    h = Harness(PoolOptions(disable_keep_alives=True, max_conns_per_host=1))
    conn, _ = h1_in_hand(h)
    waiting = h.want(A)
    assert put_idle(h, conn) is CloseReason.NOT_REUSABLE
    assert h.closed == [(conn, CloseReason.NOT_REUSABLE)]
    assert waiting.waiting and [d.want for d in h.dials] == [waiting]  # it has the slot


# -- wait order -------------------------------------------------------------------------------


def test_wants_beyond_max_conns_per_host_wait_and_freed_connections_serve_them_in_order() -> None:
    h = Harness(PoolOptions(max_conns_per_host=2))
    w1, w2, w3, w4, w5 = wants(h, 5, A, h2=False)
    assert [d.want for d in h.dials] == [w1, w2]  # the rest wait for a slot
    assert h.pool.host_stats()[A] == HostStats(idle=0, in_use=0, dialing=2, waiting=5, total=2)
    c1 = h.finish_dial()
    c2 = h.finish_dial()
    assert (w1.conn, w2.conn) == (c1, c2)
    h.release(c2)
    h.release(c1)
    h.release(c2)
    assert (w3.conn, w4.conn, w5.conn) == (c2, c1, c2)
    assert h.delivered == [w1, w2, w3, w4, w5]
    assert h.pool.dials == 2


@pytest.mark.parametrize(
    "options", [PoolOptions(max_conns_per_host=2), PoolOptions(max_conns=2)], ids=["host", "all"]
)
def test_wants_served_from_one_queue_are_not_kept_in_the_others(options: PoolOptions) -> None:
    """Beyond a connection limit a want waits in two queues (idle_waiters, and dial_waiters or
    slot_waiters) and is served from the first by a freed connection. Under a steady load the
    second never emptied: it kept every request ever made, and what each held."""
    h = Harness(options)
    conns = [h1_in_hand(h)[0], h1_in_hand(h)[0]]
    wants(h, 3, A, h2=False)
    for i in range(2000):
        wants(h, 1, A, h2=False)
        h.release(conns[i % 2])  # a request ends: its connection serves the oldest want
    host = h.pool.hosts[A]
    assert (host.waiting, len(h.delivered)) == (3, 2002)
    held = [len(host.idle_waiters), len(host.dial_waiters), len(h.pool.slot_waiters)]
    assert max(held) <= 2 * 3 + 32, held  # (COMPACT_SLACK: 32)


def test_a_cancelled_want_is_skipped() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    conn, _ = h1_in_hand(h)
    w2, w3 = wants(h, 2, A, h2=False)
    h.cancel(w2)
    assert h.pool.host_stats()[A].waiting == 1
    h.release(conn)
    assert (w2.waiting, w2.conn, w3.conn) == (False, None, conn)
    assert h.delivered[-1] is w3 and w2 not in h.delivered


def test_a_closed_connection_passes_its_host_slot_to_the_next_want_in_order() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    conn, _ = h1_in_hand(h)
    w2, w3, w4 = wants(h, 3, A, h2=False)
    h.cancel(w2)
    assert h.dials == []
    h.server_close(conn)
    assert [d.want for d in h.dials] == [w3]  # w2 is skipped
    assert h.pool.hosts[A].conns == 1  # the slot passed, it was not given back and taken again
    error = OSError("unreachable")
    h.fail_dial(error=error)  # a failed dial frees the slot too: it goes to w4
    assert (w3.error, [d.want for d in h.dials]) == (error, [w4])
    assert h.finish_dial() is w4.conn


def test_a_failed_dial_fails_its_want_with_the_error_and_frees_the_slot() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    want = h.want(A)
    error = ConnectionRefusedError("refused")
    h.fail_dial(error=error)
    assert (want.waiting, want.conn, want.error) == (False, None, error)
    assert h.delivered == [want]
    assert (h.pool.dials, h.pool.failed_dials, h.pool.hosts) == (1, 1, {})
    assert h.take(A) is None
    again = h.want(A)
    assert [d.want for d in h.dials] == [again]  # the slot is free


def test_socket_late_binding_a_freed_connection_serves_a_want_whose_dial_is_in_flight() -> None:
    h = Harness()
    c1, _ = h1_in_hand(h)
    w2 = h.want(A)
    (d2,) = h.dials
    h.release(c1)  # before w2's dial completes
    assert w2.conn is c1
    c2 = h.finish_dial(d2)  # not wasted: it goes idle
    assert isinstance(c2, FakeH1)
    assert (list(h.idle()), h.closed, h.pool.dials) == ([c2], [], 2)


def test_a_dial_that_lost_its_want_serves_the_next_want_in_order() -> None:
    h = Harness()
    c1, _ = h1_in_hand(h)
    w2, w3 = wants(h, 2, A, h2=False)
    d2, d3 = h.dials
    h.release(c1)  # serves w2, the oldest
    c2 = h.finish_dial(d2)  # w2's dial brings a connection: w3 gets it before its own dial
    c3 = h.finish_dial(d3)
    assert (w2.conn, w3.conn) == (c1, c2)
    assert list(h.idle()) == [c3]
    assert h.delivered[-2:] == [w2, w3]


def test_a_dial_for_a_cancelled_want_brings_an_idle_connection() -> None:
    h = Harness()
    want = h.want(A)
    h.cancel(want)
    assert h.pool.host_stats()[A] == HostStats(idle=0, in_use=0, dialing=1, waiting=0, total=1)
    conn = h.finish_dial()
    assert (list(h.idle()), h.delivered) == ([conn], [])


def test_a_served_want_whose_request_gives_up_gives_the_connection_to_the_next() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    conn, _ = h1_in_hand(h)
    w2, w3 = wants(h, 2, A, h2=False)
    h.release(conn)
    assert w2.conn is conn  # woken, but cancelled before it used the connection
    h.cancel(w2)
    assert (w2.conn, w3.conn) == (None, conn)
    h.cancel(w3)  # the same, with nobody waiting: the connection goes idle
    assert list(h.idle()) == [conn]
    h.cancel(w3)  # given back already: nothing more happens
    assert list(h.idle()) == [conn]


def test_a_served_http2_want_whose_request_gives_up_gives_its_stream_to_the_next() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    conn, _ = h2_in_use(h, max_streams=1)
    w2, w3 = wants(h, 2)
    h.release(conn)
    assert (w2.conn, w2.stream) == (conn, True)
    h.cancel(w2)  # woken, but cancelled before it opened its stream
    assert (w2.conn, w3.conn, conn.reserved, conn.handed_out) == (None, conn, 1, 3)


def test_a_want_failed_by_its_dial_and_then_cancelled_gives_back_nothing() -> None:
    h = Harness()
    want = h.want(A)
    h.fail_dial()
    h.cancel(want)
    assert (h.pool.hosts, h.closed) == ({}, [])


def test_a_dial_ended_by_a_cancellation_fails_no_want_and_frees_its_slot() -> None:
    # A BaseException (the dial task cancelled) is not the request's error: its request is
    # being cancelled too, and withdrawing its want then drops the host.
    h = Harness(PoolOptions(max_conns_per_host=1))
    want = h.want(A)
    h.fail_dial(error=asyncio.CancelledError())
    assert (want.waiting, want.error, h.delivered) == (True, None, [])
    assert h.pool.host_stats()[A] == HostStats(idle=0, in_use=0, dialing=0, waiting=1, total=0)
    h.cancel(want)
    assert h.pool.hosts == {}


# -- HTTP/2 dials -----------------------------------------------------------------------------


def test_wants_wait_for_an_http2_capable_dial_in_flight_instead_of_dialing() -> None:
    h = Harness()
    w1, _, _ = wants(h, 3)
    assert [(d.want, d.may_be_h2) for d in h.dials] == [(w1, True)]
    assert h.pool.host_stats()[S] == HostStats(idle=0, in_use=0, dialing=1, waiting=3, total=1)


def test_an_http2_dial_serves_its_waiters_and_dials_one_more_connection_for_the_rest() -> None:
    h = Harness()
    w1, w2, w3, w4 = wants(h, 4)
    c1 = h.finish_dial(h2=2)
    assert (w1.conn, w2.conn, w1.stream, w2.stream) == (c1, c1, True, True)
    assert [d.want for d in h.dials] == [w3]  # one dial for w3 and w4, not two
    assert (w3.waiting, w4.waiting) == (True, True)
    c2 = h.finish_dial(h2=2)
    assert (w3.conn, w4.conn) == (c2, c2)
    assert h.delivered == [w1, w2, w3, w4]
    assert isinstance(c1, FakeH2) and isinstance(c2, FakeH2)
    assert (c1.reserved, c2.reserved, c1.handed_out) == (2, 2, 2)


def test_an_http2_dial_whose_want_took_a_freed_stream_serves_the_next_waiter() -> None:
    h = Harness()
    c1, _ = h2_in_use(h, max_streams=1)
    w2, w3, w4 = wants(h, 3)  # c1 is full: w2 dials, w3 and w4 wait on that dial
    (d2,) = h.dials
    assert d2.want is w2
    h.release(c1)  # late binding: w2 takes the stream c1 frees
    assert w2.conn is c1
    c2 = h.finish_dial(d2, h2=1)
    assert w3.conn is c2  # d2 serves the next waiter; w4 needs one more
    assert [d.want for d in h.dials] == [w4]


def test_with_strict_max_concurrent_streams_wants_wait_for_a_stream_instead_of_dialing() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    w1, w2, w3, w4 = wants(h, 4)
    c1 = h.finish_dial(h2=2)
    assert (w1.conn, w2.conn, h.dials) == (c1, c1, [])
    assert (w3.waiting, w4.waiting) == (True, True)
    h.release(c1)
    assert (w3.conn, w4.waiting) == (c1, True)
    h.release(c1)
    assert w4.conn is c1
    assert h.pool.dials == 1


def test_a_dial_that_brings_http11_makes_the_host_h1_only_and_its_waiters_dial() -> None:
    h = Harness()
    w1, w2, w3 = wants(h, 3)
    c1 = h.finish_dial()  # ALPN said http/1.1
    assert isinstance(c1, FakeH1) and w1.conn is c1 and not w1.stream
    assert h.pool.hosts[S].h1_only
    assert [(d.want, d.may_be_h2) for d in h.dials] == [(w2, False), (w3, False)]
    w4 = h.want(S, h2=True)  # dials at once, as HTTP/1.1 requests do
    assert h.dials[-1].want is w4 and not h.pool.may_be_h2(w4)
    h.release(c1)
    assert w2.conn is c1  # and late binding works as for HTTP/1.1


def test_an_http11_answer_to_an_http2_dial_whose_want_left_serves_the_next_waiter() -> None:
    h = Harness()
    w1, w2, w3 = wants(h, 3)
    h.cancel(w1)
    c1 = h.finish_dial()
    assert w2.conn is c1
    assert [d.want for d in h.dials] == [w3]  # w2 needs no dial any more


def test_a_failed_http2_dial_fails_the_wants_waiting_on_it() -> None:
    h = Harness()
    w1, w2, w3 = wants(h, 3)
    h.cancel(w2)
    error = OSError("TLS handshake failed")
    h.fail_dial(error=error)
    assert [w.error for w in (w1, w2, w3)] == [error, None, error]
    assert h.delivered == [w1, w3]
    assert (h.pool.hosts, h.pool.failed_dials) == ({}, 1)


def test_http2_wants_queued_for_a_host_slot_share_what_its_dial_brings() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    c1, _ = h2_in_use(h, max_streams=1)
    w2, w3 = wants(h, 2)  # c1 is full and the host has no slot: both queue for one
    assert h.dials == []
    h.goaway(c1)
    h.release(c1)
    h.server_close(c1)  # the slot frees: w2 dials, w3 waits on that HTTP/2 dial
    assert [d.want for d in h.dials] == [w2]
    c2 = h.finish_dial(h2=10)
    assert (w2.conn, w3.conn) == (c2, c2)


# -- HTTP/2 connections -------------------------------------------------------------------------


def test_take_reserves_a_stream_on_an_http2_connection_with_room() -> None:
    h = Harness()
    conn, _ = h2_in_use(h, max_streams=2)
    assert h.take(S) is conn
    assert (conn.reserved, conn.handed_out, h.pool.idle_time) == (2, 2, 0.0)
    assert h.take(S) is None  # full


def test_release_stream_serves_the_next_want() -> None:
    h = Harness()
    conn, _ = h2_in_use(h, max_streams=1)
    w2, w3 = wants(h, 2)  # w2 dials; w3 waits on that dial
    h.release(conn)
    assert (w2.conn, w2.stream, conn.reserved) == (conn, True, 1)
    h.release(conn)
    assert w3.conn is conn
    c2 = h.finish_dial(h2=1)  # w2's dial: nobody left to serve, the connection waits idle
    assert isinstance(c2, FakeH2) and (c2.reserved, c2.idle_at) == (0, h.now)
    assert h.pool.host_stats()[S] == HostStats(idle=1, in_use=1, dialing=0, waiting=0, total=2)


def test_an_http2_connection_is_idle_exactly_when_no_stream_is_reserved() -> None:
    h = Harness()
    want = h.want(S, h2=True)
    h.cancel(want)
    h.advance(5)
    conn = h.finish_dial(h2=10)
    assert isinstance(conn, FakeH2) and (conn.reserved, conn.idle_at) == (0, 5)
    h.advance(2)
    assert h.take(S) is conn and h.take(S) is conn
    assert (conn.idle_at, h.pool.idle_time) == (None, 0.0)  # the second found it in use
    h.advance(1)
    h.release(conn)
    assert (conn.reserved, conn.idle_at) == (1, None)
    h.advance(1)
    h.release(conn)
    assert (conn.reserved, conn.idle_at) == (0, 9)
    h.advance(3)
    assert h.take(S) is conn and h.pool.idle_time == 3


def test_h2_idle_timed_out_closes_only_an_idle_connection() -> None:
    h = Harness()
    conn, _ = h2_in_use(h)
    h.pool.h2_idle_timed_out(conn, h.now)  # a stream is reserved: it is in use
    h.carry_out()
    assert h.closed == []
    h.release(conn)
    h.pool.h2_idle_timed_out(conn, h.now)
    h.carry_out()
    assert h.closed == [(conn, IDLE)]
    assert (h.pool.idle_timeouts, h.pool.hosts) == (1, {})
    h.pool.h2_idle_timed_out(conn, h.now)  # closed already: nothing more
    assert (h.pool.actions, h.pool.idle_timeouts) == ([], 1)


def test_an_http2_connection_closing_while_wants_wait_on_its_streams_dials_for_them() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    c1, _ = h2_in_use(h, max_streams=1)
    w2, w3 = wants(h, 2)
    assert h.dials == []
    h.server_close(c1)
    assert [(d.want, d.may_be_h2) for d in h.dials] == [(w2, True)]  # one dial for both
    c2 = h.finish_dial(h2=10)
    assert (w2.conn, w3.conn) == (c2, c2)


def test_a_stream_released_after_its_connection_closed_changes_nothing_else() -> None:
    h = Harness()
    conn, _ = h2_in_use(h)
    h.server_close(conn)
    assert h.pool.hosts == {}
    h.release(conn)
    assert (conn.reserved, conn.idle_at, h.pool.actions) == (0, h.now, [])


def test_goaway_takes_the_connection_off_new_streams_and_dials_for_the_waiters() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    c1, _ = h2_in_use(h, max_streams=1)
    w2, w3 = wants(h, 2)
    h.goaway(c1)
    assert S in h.pool.hosts and c1 not in h.pool.hosts[S].h2_conns
    assert [d.want for d in h.dials] == [w2]
    h.release(c1)  # its stream ends: it serves nobody any more
    assert (w2.waiting, w3.waiting, c1.idle_at) == (True, True, h.now)
    c2 = h.finish_dial(h2=10)
    assert (w2.conn, w3.conn) == (c2, c2)
    h.goaway(c1)  # a second GOAWAY is no news
    assert h.take(S) is c2


def test_goaway_while_an_http2_dial_is_in_flight_leaves_the_waiters_to_it() -> None:
    h = Harness()
    c1, _ = h2_in_use(h, max_streams=1)
    w2, w3 = wants(h, 2)
    h.goaway(c1)
    assert [d.want for d in h.dials] == [w2]  # no second dial
    c2 = h.finish_dial(h2=10)
    assert (w2.conn, w3.conn) == (c2, c2)


def test_strict_waiters_of_a_departing_connection_wait_for_the_hosts_other_one() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    c1, _ = h2_in_use(h, max_streams=1)
    h.goaway(c1)  # c1 takes no new stream; it stays open while its stream runs
    c2, _ = h2_in_use(h, max_streams=1)
    (w3,) = wants(h, 1)
    h.release(c1)
    h.server_close(c1)  # gone, with a want waiting: c2's streams will serve it, no dial
    assert (h.dials, w3.waiting) == ([], True)
    h.release(c2)
    assert w3.conn is c2


def test_more_streams_allowed_by_settings_serve_the_waiters() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    conn, _ = h2_in_use(h, max_streams=1)
    w2, w3, w4 = wants(h, 3)
    conn.max_streams = 3
    h.pool.capacity_changed(conn, h.now)
    h.carry_out()
    assert (w2.conn, w3.conn, w4.waiting) == (conn, conn, True)
    assert conn.reserved == 3


# -- HTTP/2 stream caps learnt from GOAWAY ------------------------------------------------------


def test_a_goaway_without_refused_streams_teaches_nothing() -> None:
    h = Harness()
    conn, _ = h2_in_use(h)
    conn.streams_accepted = 3
    h.goaway(conn)
    assert h.pool.h2_stream_caps == {}


def test_a_goaway_that_refused_streams_caps_the_streams_of_new_connections() -> None:
    h = Harness()
    c1, _ = h2_in_use(h)
    h.take(S)
    h.take(S)
    c1.streams_accepted = 2
    h.goaway(c1, refused=True)  # the server took 2, refused the rest
    assert h.pool.h2_stream_caps == {S: 2}
    assert c1.stream_cap is None  # the lesson is for new connections
    w4, w5, w6 = wants(h, 3)
    assert [d.want for d in h.dials] == [w4]
    c2 = h.finish_dial(h2=100)
    assert isinstance(c2, FakeH2) and c2.stream_cap == 2
    assert (w4.conn, w5.conn) == (c2, c2)
    assert [d.want for d in h.dials] == [w6]  # c2 takes 2 in its life: w6 needs another
    for _ in range(2):
        h.release(c2)
    assert (c2.reserved, c2.has_capacity, w6.waiting) == (0, False, True)


def test_a_goaway_after_no_accepted_stream_still_allows_one() -> None:
    h = Harness()
    learn_stream_cap(h, accepted=0)
    assert h.pool.h2_stream_caps == {S: 1}


def test_a_learnt_stream_cap_is_forgotten_when_a_connection_answers_that_many() -> None:
    h = Harness()
    learn_stream_cap(h, accepted=2)
    c1, _ = h2_in_use(h)
    h.take(S)
    assert (c1.stream_cap, c1.has_capacity) == (2, False)
    c1.streams_accepted = 2  # it answered both and sent no GOAWAY: the server takes more now
    h.release(c1)
    assert (h.pool.h2_stream_caps, c1.stream_cap, c1.has_capacity) == ({}, None, True)


def test_a_goaway_that_came_with_the_last_capped_stream_keeps_the_lesson() -> None:
    h = Harness()
    learn_stream_cap(h, accepted=1)
    c1, _ = h2_in_use(h)
    c1.streams_accepted = 1
    c1.goaway = True  # read with the stream's end; its report is decided after the release
    h.release(c1)
    assert (h.pool.h2_stream_caps, c1.stream_cap) == ({S: 1}, 1)
    h.goaway(c1)
    assert h.pool.h2_stream_caps == {S: 1}


def test_forgetting_a_stream_cap_lets_every_connection_of_the_host_serve_the_waiters() -> None:
    # Regression: only the connection that answered its cap served waiters, while another,
    # uncapped by the same lesson, kept room with wants waiting (which then waited on a dial,
    # and failed with it if it failed).
    h = Harness()
    learn_stream_cap(h, accepted=2)
    b, _ = h2_in_use(h, max_streams=2)
    h.take(S)  # b is full: 2 streams, its cap
    c, _ = h2_in_use(h)
    h.take(S)  # c has handed out its cap of 2; it could take 100
    w5, w6 = wants(h, 2)  # w5 dials, w6 waits on that dial
    (dial,) = h.dials
    b.streams_accepted = 2
    h.release(b)  # b answered 2 without GOAWAY: caps forgotten, b takes w5, c takes w6
    assert (b.stream_cap, c.stream_cap) == (None, None)
    assert (w5.conn, w6.conn) == (b, c)
    error = OSError("refused")
    h.fail_dial(dial, error)
    assert (w5.error, w6.error) == (None, None)


def test_the_stream_caps_of_only_so_many_hosts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncpool._pool, "STREAM_CAPS_KEPT", 2)
    h = Harness()
    s1, s2, s3 = (f"https://s{i}.test" for i in (1, 2, 3))
    learn_stream_cap(h, 1, s1)
    learn_stream_cap(h, 2, s2)
    learn_stream_cap(h, 3, s1)  # learnt again: now the newest lesson
    learn_stream_cap(h, 4, s3)  # s2's, the oldest, is dropped
    assert h.pool.h2_stream_caps == {s1: 3, s3: 4}


# -- close_idle and close -----------------------------------------------------------------------


def test_close_idle_closes_idle_connections_now_and_in_use_ones_when_released() -> None:
    h = Harness()
    (a1, _), (a2, _) = h1_in_hand(h), h1_in_hand(h)
    h.release(a1)
    s_idle, _ = h2_in_use(h)
    h.release(s_idle)
    s_busy, _ = h2_in_use(h, "https://t.test")
    h.pool.close_idle(h.now)
    h.carry_out()
    assert h.closed == [(a1, CloseReason.CLOSE_IDLE), (s_idle, CloseReason.CLOSE_IDLE)]
    assert put_idle(h, a2) is CloseReason.CLOSE_IDLE
    h.release(s_busy)  # an HTTP/2 connection in use is left to its idle timeout
    assert h.closed[2:] == [(a2, CloseReason.CLOSE_IDLE)]
    assert list(h.idle()) == []


def test_after_close_idle_the_next_take_keeps_freed_connections_again() -> None:
    h = Harness()
    conn, _ = h1_in_hand(h)
    h.pool.close_idle(h.now)
    assert h.take(A) is None  # a request asks for a connection: the pool keeps them again
    assert put_idle(h, conn) is None
    assert list(h.idle()) == [conn]


def test_after_close_idle_a_freed_connection_still_serves_a_waiting_want() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    conn, _ = h1_in_hand(h)
    waiting = h.want(A)
    h.pool.close_idle(h.now)
    assert put_idle(h, conn) is None
    assert waiting.conn is conn


def test_close_closes_every_connection_and_fails_every_waiting_want() -> None:
    h = Harness(PoolOptions(max_conns_per_host=2))
    (busy1, _), (busy2, _) = h1_in_hand(h), h1_in_hand(h)
    queued = h.want(A)  # no slot left
    idle = h1_idle(h, B)
    s, _ = h2_in_use(h, max_streams=1)
    s_dialing, s_waiting = wants(h, 2)
    h.pool.close(h.now)
    h.carry_out()
    pool_closed = CloseReason.POOL_CLOSED
    assert sorted(h.closed, key=lambda closed: closed[0].id) == [
        (busy1, pool_closed),
        (busy2, pool_closed),
        (idle, pool_closed),
        (s, pool_closed),
    ]
    for want in (queued, s_dialing, s_waiting):
        assert isinstance(want.error, PoolClosed) and want.error.host in (A, S)
    assert h.delivered[-3:] == [queued, s_dialing, s_waiting]
    assert h.pool.host_stats() == {S: HostStats(idle=0, in_use=0, dialing=1, waiting=0, total=1)}
    # The dial in flight ends, and its connection is closed at once: nothing new starts.
    late = h.finish_dial(h2=10)
    assert (h.closed[-1], h.dials, h.pool.hosts) == ((late, pool_closed), [], {})


def test_after_close_a_dial_bringing_http11_closes_its_connection_and_dials_no_more() -> None:
    h = Harness()
    wants(h, 3)
    h.pool.close(h.now)
    h.carry_out()
    late = h.finish_dial()
    assert (h.closed, h.dials, h.pool.hosts) == ([(late, CloseReason.POOL_CLOSED)], [], {})


def test_after_close_a_failed_dial_frees_its_slot_and_starts_no_other() -> None:
    h = Harness(PoolOptions(max_conns_per_host=1))
    h.want(A)
    h.want(A)  # queued for the slot; failed by close
    h.pool.close(h.now)
    h.carry_out()
    h.fail_dial(error=OSError("refused"))
    assert (h.dials, h.pool.hosts) == ([], {})


def test_a_dial_cancelled_as_the_pool_closes_frees_its_slot() -> None:
    h = Harness()
    want = h.want(A)
    h.pool.close(h.now)
    h.carry_out()
    h.fail_dial(error=asyncio.CancelledError())  # not an Exception: it fails nothing itself
    assert isinstance(want.error, PoolClosed)
    assert (h.pool.hosts, h.pool.failed_dials) == ({}, 1)


def test_a_connection_freed_after_close_is_closed_not_kept() -> None:
    # Between close() and its Close actions being carried out (the Transport runs them in
    # order), a freed connection must not join the idle list.
    h = Harness()
    conn, _ = h1_in_hand(h)
    h.pool.close(h.now)
    assert h.pool.put_idle(conn, h.now) is CloseReason.POOL_CLOSED
    (action,) = h.pool.actions  # the one close() asked for: no second one
    assert isinstance(action, Close) and action.conn is conn
    h.carry_out()
    assert h.closed == [(conn, CloseReason.POOL_CLOSED)]


def test_a_connection_freed_after_it_closed_reports_why() -> None:
    h = Harness()
    conn, _ = h1_in_hand(h)
    h.server_close(conn)  # while in use: not counted as an idle one the server closed
    assert put_idle(h, conn) is CloseReason.SERVER_CLOSED
    assert (h.closed, h.pool.server_closed_idle) == ([(conn, CloseReason.SERVER_CLOSED)], 0)


def test_the_server_closing_an_idle_connection_takes_it_out_of_the_pool() -> None:
    h = Harness()
    conn = h1_idle(h)
    h.server_close(conn)
    assert (list(h.idle()), h.pool.hosts, h.pool.server_closed_idle) == ([], {}, 1)
    assert h.take(A) is None


def test_an_idle_connection_failing_otherwise_leaves_the_pool_uncounted() -> None:
    h = Harness()
    conn = h1_idle(h)
    conn.closed, conn.close_why = True, CloseReason.ERROR  # garbage from the server, say
    h.pool.h1_closed(conn, h.now)
    h.carry_out()
    assert (list(h.idle()), h.pool.hosts, h.pool.server_closed_idle) == ([], {}, 0)


def test_close_does_not_close_again_what_is_closing() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90))
    busy, _ = h1_in_hand(h)
    expired = h1_idle(h, B)
    h.advance(100)
    h.pool.expire(h.now)  # its Close is not carried out yet when close() decides
    h.pool.close(h.now)
    closes = [(a.conn, a.why) for a in h.pool.actions if isinstance(a, Close)]
    assert closes == [(expired, IDLE), (busy, CloseReason.POOL_CLOSED)]
    h.carry_out()


def test_no_want_is_added_after_close() -> None:
    h = Harness()
    h.pool.close(h.now)
    with pytest.raises(PoolInvariantError, match="no want is added after close"):
        h.want(A)


# -- the invariant checker ----------------------------------------------------------------------


@dataclasses.dataclass
class Busy:
    """A harness with a bit of everything: A has two idle connections, C one, B one in use and
    a want whose dial is in flight; S a full HTTP/2 connection, a want dialing and one waiting
    on that dial."""

    h: Harness
    a1: FakeH1
    a2: FakeH1
    c1: FakeH1
    b1: FakeH1
    b_want: FakeWant
    s1: FakeH2
    s_dialing: FakeWant
    s_waiting: FakeWant

    @classmethod
    def make(cls) -> Busy:
        h = Harness()
        (a1, _), (a2, _) = h1_in_hand(h, A), h1_in_hand(h, A)
        c1, _ = h1_in_hand(h, C)
        for conn in (a1, a2, c1):
            h.release(conn)
            h.advance(1)
        b1, _ = h1_in_hand(h, B)
        b_want = h.want(B)
        s1, _ = h2_in_use(h, max_streams=1)
        s_dialing, s_waiting = wants(h, 2)
        h.pool.check_invariants()
        return cls(h, a1, a2, c1, b1, b_want, s1, s_dialing, s_waiting)


def _limit(**changes: int) -> Callable[[Busy], None]:
    def corrupt(b: Busy) -> None:
        b.h.pool.options = dataclasses.replace(b.h.pool.options, **changes)

    return corrupt


def _served_want_queued(b: Busy) -> None:
    served: FakeWant = Want(A, False)
    served.waiting = False
    b.h.pool.hosts[A].idle_waiters.append(served)


def _orphan_undialed_want(b: Busy) -> None:
    host = b.h.pool.hosts[S]
    host.h2_dialing = 0
    host.h2_conns.clear()


CORRUPTIONS: dict[str, tuple[Callable[[Busy], None], str]] = {
    "closing-not-open": (
        lambda b: b.h.pool.closing.add(FakeH1(A)),
        "a closing connection is open",
    ),
    "host-under-another-key": (
        lambda b: b.h.pool.hosts.__setitem__("http://x.test", b.h.pool.hosts.pop(A)),
        "a host is kept under its own key",
    ),
    "empty-host": (
        lambda b: b.h.pool.hosts.__setitem__("http://x.test", _Host("http://x.test")),
        "no empty host is kept",
    ),
    "h2-dials-above-dials": (
        lambda b: setattr(b.h.pool.hosts[S], "h2_dialing", 2),
        "0 <= HTTP/2 dials <= dials",
    ),
    "ghost-conn": (
        lambda b: setattr(b.h.pool.hosts[A], "conns", 3),
        "_Host.conns counts the host's dials and open connections",
    ),
    "over-max-conns-per-host": (
        _limit(max_conns_per_host=1),
        "a host has at most max_conns_per_host connections",
    ),
    "over-max-idle-per-host": (
        _limit(max_idle_conns_per_host=1),
        "a host keeps at most max_idle_conns_per_host idle",
    ),
    "waiting-beside-idle": (
        lambda b: setattr(b.h.pool.hosts[A], "waiting", 1),
        "no want waits while its host has an idle connection",
    ),
    "idle-in-two-lists": (
        lambda b: b.h.pool.hosts[C].idle.__setitem__(b.a1, None),
        "an HTTP/1.1 connection is in one place",
    ),
    "dropped-from-the-lru": (
        lambda b: b.h.pool.idle_lru.pop(b.a1),
        "an idle connection is open, in its host's idle list and in the LRU",
    ),
    "idle-and-closing": (
        lambda b: b.h.pool.closing.add(b.a1),
        "an HTTP/1.1 connection is in one place",
    ),
    "idle-list-out-of-order": (
        lambda b: setattr(b.a1, "idle_at", 5.0),
        "an idle list is ordered by idle_at",
    ),
    "idle-without-idle-at": (
        lambda b: setattr(b.a2, "idle_at", None),
        "an idle list is ordered by idle_at",
    ),
    "in-use-conn-in-the-lru": (
        lambda b: b.h.pool.idle_lru.__setitem__(b.b1, None),
        "the LRU holds exactly the idle connections",
    ),
    "over-max-idle-conns": (_limit(max_idle_conns=2), "at most max_idle_conns are idle"),
    "lru-out-of-order": (
        lambda b: b.h.pool.idle_lru.move_to_end(b.a1),
        "the LRU is ordered by idle_at",
    ),
    "foreign-h2-conn": (
        lambda b: b.h.pool.hosts[S].h2_conns.__setitem__(FakeH2(S), None),
        "a host's HTTP/2 connections are its own, open",
    ),
    "draining-without-goaway": (
        lambda b: b.h.pool.hosts[S].h2_draining.add(b.s1),
        "a draining HTTP/2 connection is open, after its GOAWAY or expiry",
    ),
    "more-streams-than-reserved": (
        lambda b: setattr(b.s1, "active_streams", 2),
        "an HTTP/2 connection's open streams <= reserved <= handed out",
    ),
    "over-stream-cap": (
        lambda b: setattr(b.s1, "stream_cap", 0),
        "an HTTP/2 connection hands out at most its stream cap",
    ),
    "h2-idle-while-reserved": (
        lambda b: setattr(b.s1, "idle_at", 0.0),
        "an HTTP/2 connection has idle_at when no stream is reserved on it",
    ),
    "waiting-beside-h2-room": (
        lambda b: setattr(b.s1, "max_streams", 2),
        "no want waits while an HTTP/2 connection has room",
    ),
    "ghost-want": (
        lambda b: setattr(b.h.pool.hosts[S], "waiting", 3),
        "_Host.waiting counts the wants still waiting, each queued once",
    ),
    "want-queued-twice": (
        lambda b: b.h.pool.hosts[S].idle_waiters.append(b.s_dialing),
        "_Host.waiting counts the wants still waiting, each queued once",
    ),
    "served-want-kept": (_served_want_queued, "a host with no want waiting keeps none queued"),
    "undialed-want-queued-for-a-slot": (
        lambda b: b.h.pool.hosts[B].dial_waiters.append(Want(B, False)),
        "a want waiting for a host slot has a dial of its own",
    ),
    "waiting-want-with-a-result": (
        lambda b: setattr(b.b_want, "conn", b.b1),
        "a want is served once",
    ),
    "undialed-want-not-in-undialed": (
        lambda b: setattr(b.b_want, "dialed", False),
        "a waiting want with no dial of its own is in undialed",
    ),
    "undialed-want-with-nothing-to-wait-on": (
        _orphan_undialed_want,
        "a want with no dial of its own has a dial or stream to wait on",
    ),
    "dialed-want-in-undialed": (
        lambda b: b.h.pool.hosts[S].undialed.append(b.s_dialing),
        "undialed holds only wants with no dial of their own",
    ),
}


@pytest.mark.parametrize(("corrupt", "invariant"), CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_the_invariant_checker_names_what_a_corrupted_pool_breaks(
    corrupt: Callable[[Busy], None], invariant: str
) -> None:
    busy = Busy.make()
    corrupt(busy)
    with pytest.raises(PoolInvariantError, match=f"^pool invariant broken: {invariant} \\("):
        busy.h.pool.check_invariants()


def test_an_idle_connection_without_idle_at_breaks_take_and_expire() -> None:
    h = Harness()
    conn = h1_idle(h)
    conn.idle_at = None
    with pytest.raises(PoolInvariantError, match="an idle connection has idle_at"):
        h.pool.expire(h.now)
    with pytest.raises(PoolInvariantError, match="an idle connection has idle_at"):
        h.pool.take(A, h.now)


def test_a_connection_reporting_its_close_twice_breaks_the_pool() -> None:
    h = Harness()
    conn = h1_idle(h)
    h.server_close(conn)
    with pytest.raises(PoolInvariantError, match="a connection reports its close once"):
        h.pool.h1_closed(conn, h.now)


def test_a_stream_given_back_twice_breaks_the_pool() -> None:
    h = Harness()
    conn, _ = h2_in_use(h)
    h.release(conn)
    with pytest.raises(PoolInvariantError, match="a stream gives its slot back once"):
        h.pool.release_stream(conn, h.now)


def test_a_waiting_want_of_a_forgotten_host_breaks_the_pool() -> None:
    h = Harness()
    want = h.want(A)
    del h.pool.hosts[A]
    with pytest.raises(PoolInvariantError, match="a waiting want's host is kept"):
        h.pool.cancel_want(want, h.now)


def test_a_host_slot_given_back_twice_raises() -> None:
    h = Harness()
    h.want(A)
    host = h.pool.hosts[A]
    h.pool._free_host_slot(host)
    with pytest.raises(PoolInvariantError, match=r"a host slot is given back once \(.* conns=-1\)"):
        h.pool._free_host_slot(host)


def test_a_host_slot_given_back_twice_raises_even_under_python_O() -> None:
    # The checks are raises, not asserts: `python -O` must not strip them.
    code = """if True:
        assert False  # stripped by -O: proves the flag is in effect
        from asyncpool._pool import Pool, PoolInvariantError, PoolOptions, Want
        pool = Pool(PoolOptions())
        pool.add_want(Want("http://a.test", False), 0.0)
        host = pool.hosts["http://a.test"]
        pool._free_host_slot(host)
        try:
            pool._free_host_slot(host)
        except PoolInvariantError as exc:
            print(exc)
        """
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-O", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "a host slot is given back once" in result.stdout


# -- stats ------------------------------------------------------------------------------------


def test_host_stats_count_each_connection_and_want_once() -> None:
    h = Harness(PoolOptions(max_conns_per_host=2))
    h1_in_hand(h, A)
    h.want(A)  # dialing, with the second slot
    h.want(A)  # waiting for a slot
    h1_idle(h, B)
    h.want(C)
    h.fail_dial(h.dials[-1])
    s1, _ = h2_in_use(h, max_streams=2)
    h.take(S)
    s1.active_streams = 2  # both streams opened
    s2, _ = h2_in_use(h, max_streams=1)
    h.release(s2)
    assert h.pool.host_stats() == {
        A: HostStats(idle=0, in_use=1, dialing=1, waiting=2, total=2),
        B: HostStats(idle=1, in_use=0, dialing=0, waiting=0, total=1),
        S: HostStats(idle=1, in_use=1, dialing=0, waiting=0, total=2, streams=2),
    }
    assert (h.pool.dials, h.pool.failed_dials) == (6, 1)


def test_host_stats_count_the_streams_of_a_connection_draining_after_goaway() -> None:
    h = Harness()
    conn, _ = h2_in_use(h, max_streams=2)
    conn.active_streams = 1
    h.goaway(conn)  # it takes no new stream, but finishes the one it has
    assert h.pool.host_stats()[S] == HostStats(
        idle=0, in_use=1, dialing=0, waiting=0, total=1, streams=1
    )
    h.release(conn)
    h.server_close(conn)
    assert h.pool.host_stats() == {}


# -- max_conns: a limit over all hosts (httpx's max_connections) --------------------------------


def test_max_conns_counts_every_hosts_connections_and_wants_wait_fifo_across_hosts() -> None:
    h = Harness(PoolOptions(max_conns=2))
    a1, wa = h1_in_hand(h, A)
    wb = h.want(B)
    wc1, wa2, wc2 = h.want(C), h.want(A), h.want(C)
    assert [d.want for d in h.dials] == [wb]  # the second slot; the rest wait for one
    assert (h.pool.conns, h.pool.slot_waiting) == (2, 3)
    h.fail_dial(error=OSError("refused"))  # b's slot is freed: the first in line gets it
    assert wb.error is not None
    assert [d.want for d in h.dials] == [wc1]
    h.server_close(a1)
    assert [d.want for d in h.dials] == [wc1, wa2]
    c1 = h.finish_dial(h.dials[0])
    assert wc1.conn is c1 and wc2.waiting  # one connection per want: c2 still waits
    h.release(c1)  # c's own want takes it (late binding), before any other host's
    assert wc2.conn is c1 and h.pool.slot_waiting == 0
    assert wa.conn is a1 and h.pool.conns == 2


def test_max_conns_closes_an_idle_connection_of_another_host_to_make_room() -> None:
    h = Harness(PoolOptions(max_conns=2))
    a1 = h1_idle(h, A)
    b1 = h1_idle(h, B)
    h.advance(1)
    want = h.want(C)
    assert h.closed == [(a1, CloseReason.MAKE_ROOM)]  # the least recently used
    assert [d.want for d in h.dials] == [want]  # its close freed the slot at once
    assert list(h.idle()) == [b1] and h.pool.evictions == 1


def test_max_conns_a_connection_freed_while_another_host_waits_is_closed_for_it() -> None:
    h = Harness(PoolOptions(max_conns=1))
    a1, _ = h1_in_hand(h, A)
    want = h.want(B)
    assert h.dials == [] and h.pool.slot_waiting == 1
    assert put_idle(h, a1) is CloseReason.MAKE_ROOM
    assert [d.want for d in h.dials] == [want]
    assert h.finish_dial() is want.conn


def test_max_conns_a_freed_connection_serves_its_own_hosts_want_first() -> None:
    h = Harness(PoolOptions(max_conns=1))
    a1, _ = h1_in_hand(h, A)
    wb = h.want(B)
    wa = h.want(A)
    h.release(a1)
    assert wa.conn is a1 and wb.waiting  # kept: a's want took it, b waits on
    h.release(a1)
    assert [d.want for d in h.dials] == [wb] and (a1, CloseReason.MAKE_ROOM) in h.closed


def test_max_conns_a_cancelled_want_gives_up_its_place_and_no_room_is_made_for_it() -> None:
    h = Harness(PoolOptions(max_conns=1))
    a1, _ = h1_in_hand(h, A)
    wb, wc = h.want(B), h.want(C)
    h.cancel(wb)
    assert h.pool.slot_waiting == 1
    h.server_close(a1)
    assert [d.want for d in h.dials] == [wc]
    h.cancel(wc)  # its dial goes on: it brings an idle connection
    h.finish_dial()
    assert len(list(h.idle())) == 1 and h.pool.slot_waiters == collections.deque()


def test_max_conns_with_max_conns_per_host_a_waiter_whose_host_filled_waits_for_its_host() -> None:
    h = Harness(PoolOptions(max_conns=2, max_conns_per_host=1))
    a1, _ = h1_in_hand(h, A)
    b1, _ = h1_in_hand(h, B)
    wa = h.want(A)  # its host is full: it waits for a's slot, not for any slot
    wc = h.want(C)
    assert wa in h.pool.hosts[A].dial_waiters and h.pool.slot_waiting == 1
    h.server_close(a1)  # a's slot goes to a's want; c still waits
    assert [d.want for d in h.dials] == [wa] and wc.waiting
    h.server_close(b1)
    assert [d.want for d in h.dials] == [wa, wc]


def test_max_conns_closes_an_idle_http2_connection_of_another_host_to_make_room() -> None:
    """As httpcore does, whatever the protocol (httpx's max_connections with http2=True): the
    want waited until the idle HTTP/2 connection timed out, or for ever without a timeout."""
    h = Harness(PoolOptions(max_conns=2))
    s1, _ = h2_in_use(h)
    h.release(s1)  # its stream ended: idle
    h.advance(1)
    b1 = h1_idle(h, B)
    h.advance(1)
    wc, wd = h.want(C), h.want(A)
    assert h.closed == [(b1, CloseReason.MAKE_ROOM), (s1, CloseReason.MAKE_ROOM)]
    assert [d.want for d in h.dials] == [wc, wd] and h.pool.evictions == 2


def test_max_conns_an_http2_connection_whose_last_stream_ends_is_closed_for_a_waiter() -> None:
    h = Harness(PoolOptions(max_conns=1))
    s1, _ = h2_in_use(h)
    want = h.want(B)
    assert h.dials == [] and h.pool.slot_waiting == 1
    h.release(s1)
    assert h.closed == [(s1, CloseReason.MAKE_ROOM)]
    assert [d.want for d in h.dials] == [want]


def test_max_conns_close_fails_the_wants_waiting_for_a_slot() -> None:
    h = Harness(PoolOptions(max_conns=1))
    h1_in_hand(h, A)
    want = h.want(B)
    h.pool.close(h.now)
    h.carry_out()
    assert isinstance(want.error, PoolClosed) and h.pool.slot_waiting == 0
    assert h.dials == []


@pytest.mark.parametrize(
    ("corrupt", "invariant"),
    [
        (lambda p: setattr(p, "conns", p.conns + 1), "Pool.conns counts every host"),
        (lambda p: setattr(p, "slot_waiting", 0), "Pool.slot_waiting counts"),
    ],
)
def test_the_invariant_checker_names_a_broken_max_conns_rule(
    corrupt: Callable[[Any], None], invariant: str
) -> None:
    h = Harness(PoolOptions(max_conns=1))
    h1_in_hand(h, A)
    h.want(B)
    corrupt(h.pool)
    with pytest.raises(PoolInvariantError, match=invariant):
        h.pool.check_invariants()


# -- connection lifetimes and max_requests_per_conn -------------------------------------------

LIFETIME = CloseReason.MAX_LIFETIME
MAX_REQUESTS = CloseReason.MAX_REQUESTS


def h1_with_deadline(h: Harness, expires_at: float, key: str = A) -> tuple[FakeH1, FakeWant]:
    want = h.want(key)
    conn = h.finish_dial(h.dials[-1], expires_at=expires_at)
    assert isinstance(conn, FakeH1) and want.conn is conn
    return conn, want


def h2_with_deadline(
    h: Harness, expires_at: float | None, key: str = S, max_streams: int = 100
) -> tuple[FakeH2, FakeWant]:
    want = h.want(key, h2=True)
    conn = h.finish_dial(h.dials[-1], h2=max_streams, expires_at=expires_at)
    assert isinstance(conn, FakeH2) and want.conn is conn and want.stream
    return conn, want


def test_an_http11_connection_is_reused_before_its_deadline_and_not_after() -> None:
    h = Harness()
    conn, _ = h1_with_deadline(h, expires_at=10.0)
    h.release(conn)
    h.advance(9.9)
    assert h.take(A) is conn
    h.release(conn)
    h.advance(0.1)  # now == the deadline
    assert h.take(A) is None
    assert h.closed == [(conn, LIFETIME)]
    assert h.pool.lifetime_expirations == 1


def test_an_http11_connection_past_its_deadline_closes_when_its_response_ends() -> None:
    h = Harness()
    conn, _ = h1_with_deadline(h, expires_at=10.0)
    waiting = h.want(A)  # would take it, were it reusable
    h.advance(10.0)
    assert put_idle(h, conn) is LIFETIME
    assert h.closed == [(conn, LIFETIME)] and waiting.waiting  # its own dial serves it
    assert len(h.dials) == 1


def test_the_sweeper_closes_an_idle_connection_at_its_deadline_and_wakes_for_it() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=90.0))
    conn, _ = h1_with_deadline(h, expires_at=10.0)
    h.release(conn)
    assert h.expire() == 10.0  # the lifetime, before the idle timeout at 90
    h.advance(9.0)
    assert h.expire() == 10.0 and not h.closed
    h.advance(1.0)
    assert h.expire() is None
    assert h.closed == [(conn, LIFETIME)] and not list(h.idle())


def test_the_sweepers_next_wakeup_is_the_earliest_of_idle_timeouts_and_lifetimes() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=5.0))
    early, _ = h1_with_deadline(h, expires_at=30.0)
    late, _ = h1_with_deadline(h, expires_at=20.0)
    h.release(early)
    assert h.expire() == 5.0  # the idle timeout first
    h.take(A)  # in use again: no idle timeout pending
    assert h.expire() == 20.0  # the earliest lifetime (late's, though dialed second)
    h.advance(20.0)
    assert h.expire() == 30.0  # late is in use: left to close when freed
    assert not h.closed
    assert put_idle(h, late) is LIFETIME


def test_without_idle_timeout_lifetimes_still_expire() -> None:
    h = Harness(PoolOptions(idle_conn_timeout=None))
    conn, _ = h1_with_deadline(h, expires_at=3.0)
    h.release(conn)
    assert h.expire() == 3.0
    h.advance(3.0)
    assert h.expire() is None and h.closed == [(conn, LIFETIME)]


def test_a_closed_connections_lifetime_is_dropped_from_the_sweepers_schedule() -> None:
    h = Harness()
    conn, _ = h1_with_deadline(h, expires_at=3.0)
    h.server_close(conn)
    assert h.expire() is None and h.pool.lifetimes == []


def test_max_requests_per_conn_closes_an_http11_connection_after_that_many() -> None:
    h = Harness(PoolOptions(max_requests_per_conn=2))
    conn, _ = h1_in_hand(h)  # request 1
    h.release(conn)
    assert h.take(A) is conn  # request 2
    waiting = h.want(A)
    assert put_idle(h, conn) is MAX_REQUESTS
    assert h.closed == [(conn, MAX_REQUESTS)] and waiting.waiting
    assert h.pool.max_requests_expirations == 1
    fresh = h.finish_dial()
    assert waiting.conn is fresh


def test_max_requests_per_conn_counts_a_connection_handed_to_a_waiting_want() -> None:
    h = Harness(PoolOptions(max_requests_per_conn=2, max_conns_per_host=1))
    conn, _ = h1_in_hand(h)  # request 1
    second = h.want(A)
    h.release(conn)
    assert second.conn is conn  # request 2
    third = h.want(A)
    h.release(conn)
    assert h.closed == [(conn, MAX_REQUESTS)] and third.waiting
    h.finish_dial()  # the freed host slot dialed for it
    assert third.conn is not None and third.conn is not conn


def test_a_connection_given_back_unused_does_not_count_as_a_request() -> None:
    h = Harness(PoolOptions(max_requests_per_conn=1))
    want = h.want(A)
    conn = h.finish_dial()
    assert want.conn is conn
    h.pool.give_back(want, h.now)
    h.carry_out()
    assert list(h.idle()) == [conn] and not h.closed


def test_an_http2_connection_drains_after_max_requests_per_conn() -> None:
    h = Harness(PoolOptions(max_requests_per_conn=2))
    conn, _ = h2_in_use(h)  # stream 1
    assert h.take(S) is conn  # stream 2: its last
    assert conn.expired is MAX_REQUESTS and not conn.has_capacity
    assert conn not in h.pool.hosts[S].h2_conns and conn in h.pool.hosts[S].h2_draining
    waiting = h.want(S, h2=True)
    assert len(h.dials) == 1  # a replacement, the old one still open
    h.release(conn)
    assert not conn.closed  # a stream still open
    h.release(conn)
    assert h.closed == [(conn, MAX_REQUESTS)]
    fresh = h.finish_dial(h2=100)
    assert waiting.conn is fresh and fresh is not conn


def test_an_http2_connection_in_use_drains_at_its_deadline() -> None:
    h = Harness()
    conn, _ = h2_with_deadline(h, expires_at=10.0)
    conn.active_streams = 1
    assert h.expire() == 10.0
    h.advance(10.0)
    assert h.expire() is None  # the sweeper retires it, though no stream was released
    assert conn.expired is LIFETIME and not conn.closed and not conn.has_capacity
    assert conn in h.pool.hosts[S].h2_draining
    assert h.pool.lifetime_expirations == 1
    assert h.take(S) is None  # no new stream
    h.release(conn)  # its open stream finished: now it closes
    assert h.closed == [(conn, LIFETIME)]


def test_an_expired_http2_connection_dials_a_replacement_for_waiters_before_it_closes() -> None:
    h = Harness(PoolOptions(strict_max_concurrent_streams=True))
    conn, _ = h2_with_deadline(h, expires_at=10.0, max_streams=1)
    waiting = h.want(S, h2=True)  # strict: waits for the one stream, no dial
    assert waiting.waiting and not h.dials
    h.advance(10.0)
    h.expire()
    assert len(h.dials) == 1 and not conn.closed  # the replacement is dialed first
    fresh = h.finish_dial(h2=1)
    assert waiting.conn is fresh
    h.release(conn)
    assert h.closed == [(conn, LIFETIME)]


def test_an_http2_connection_past_its_deadline_hands_out_no_stream_even_before_the_sweeper() -> (
    None
):
    h = Harness()
    conn, _ = h2_with_deadline(h, expires_at=10.0)
    h.release(conn)
    h.advance(10.0)
    assert h.take(S) is None
    assert h.closed == [(conn, LIFETIME)]  # idle: closed at once


def test_an_http2_stream_released_past_the_deadline_serves_no_waiter() -> None:
    h = Harness()
    conn, _ = h2_with_deadline(h, expires_at=10.0, max_streams=1)
    waiting = h.want(S, h2=True)
    h.advance(10.0)
    h.release(conn)  # the sweeper has not run: the release retires it
    assert h.closed == [(conn, LIFETIME)] and waiting.waiting and len(h.dials) == 1


def test_an_idle_http2_connection_closes_at_once_at_its_deadline() -> None:
    h = Harness()
    conn, _ = h2_with_deadline(h, expires_at=10.0)
    h.release(conn)
    h.advance(10.0)
    assert h.expire() is None
    assert h.closed == [(conn, LIFETIME)]


def test_a_server_goaway_on_an_expired_draining_connection_changes_nothing() -> None:
    h = Harness()
    conn, _ = h2_with_deadline(h, expires_at=10.0)
    h.advance(10.0)
    h.expire()
    h.goaway(conn)
    h.release(conn)
    assert h.closed == [(conn, LIFETIME)]


def test_the_invariant_checker_names_an_expired_connection_taking_streams() -> None:
    h = Harness()
    conn, _ = h2_with_deadline(h, expires_at=10.0)
    conn.expired = LIFETIME
    with pytest.raises(PoolInvariantError, match="an expired HTTP/2 connection takes no new"):
        h.pool.check_invariants()


def test_the_invariant_checker_names_a_lifetime_missing_from_the_heap() -> None:
    h = Harness()
    conn, _ = h1_with_deadline(h, expires_at=10.0)
    h.release(conn)
    h.pool.lifetimes.clear()
    with pytest.raises(PoolInvariantError, match="has its lifetime in the heap"):
        h.pool.check_invariants()


def test_transport_draws_each_lifetime_within_ten_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncpool._transport as transport_module
    from asyncpool import Transport

    transport = Transport(max_conn_lifetime=100.0)
    for draw, expected in ((0.0, 90.0), (1.0 - 1e-12, 110.0), (0.5, 100.0)):
        monkeypatch.setattr(transport_module, "random", lambda draw=draw: draw)
        assert transport._conn_deadline(1000.0) == pytest.approx(1000.0 + expected)
    monkeypatch.undo()
    deadlines = [transport._conn_deadline(0.0) for _ in range(1000)]
    assert all(90.0 <= d <= 110.0 for d in deadlines)
    assert len(set(deadlines)) > 1  # jittered, not one value


@pytest.mark.parametrize("option", ["max_conn_lifetime", "max_requests_per_conn"])
@pytest.mark.parametrize("value", [0, -1])
def test_lifetime_options_must_be_positive(option: str, value: int) -> None:
    from asyncpool import Transport

    with pytest.raises(ValueError, match=option):
        Transport(**{option: value})


def test_strict_waiters_of_a_connection_spent_by_max_requests_get_a_replacement() -> None:
    h = Harness(PoolOptions(max_requests_per_conn=2, strict_max_concurrent_streams=True))
    conn, _ = h2_in_use(h, max_streams=1)  # stream 1
    waiting = h.want(S, h2=True)  # strict: waits for the stream
    assert not h.dials
    h.release(conn)  # its stream 2 goes to the waiter: its last
    assert waiting.conn is conn and conn.expired is MAX_REQUESTS
    later = h.want(S, h2=True)
    assert len(h.dials) == 1  # nothing left to wait on: a replacement is dialed
    h.release(conn)
    assert h.closed == [(conn, MAX_REQUESTS)]
    assert h.finish_dial(h2=1) is later.conn
