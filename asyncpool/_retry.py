"""The Client's retry policy: ``Retry`` (urllib3's semantics) and ``RetryBudget`` (Finagle's).

Theory of operation. A Client made with ``retry=Retry(...)`` sends each request (each hop of a
redirect chain) through ``Retrier.round_trip``, a loop around ``Transport.round_trip``:

- an error is retried when it is a connect error (``ConnectError``, ``ConnectTimeout``,
  ``TLSHandshakeTimeout``: nothing reached the server) whatever the method, or a read error
  (``ReadError``, ``WriteError``, ``ReadTimeout``, ``ResponseHeaderTimeout``) when the method is
  allowed (``allowed_methods``, or an ``Idempotency-Key`` header);
- a response is retried when its status is in ``status_forcelist`` and the method is allowed; it
  is closed (read first when small, so its connection is reused) and, when the retries run out,
  returned as it is (urllib3's ``raise_on_status=False``): the caller sees the server's answer;
- nothing is retried when the body is a stream that cannot be sent again.

Each retry needs a retry left (``total`` and the count of its kind), and a token of the
Client's ``RetryBudget``: every request sent through the Retrier deposits ``ratio`` of a token
into a sliding window, every retry withdraws one, and ``min_per_second * window`` more are
always allowed, so an always-failing backend sees at most ``1 + ratio`` times the load plus the
floor (Finagle's RetryBudget, gRPC's retry throttling). When any of them runs out, the last
error is raised (or the last response returned).

Before a retry the Retrier waits: ``Retry-After`` (seconds or an HTTP-date, capped at
``retry_after_max``) when the response has one and ``respect_retry_after``, else exponential
backoff with full jitter, ``uniform(0, min(backoff_max, backoff_factor * 2**n))`` for the
n-th retry (0 first). The Client's overall ``timeout`` covers the loop and its waits: a retry
whose wait would end past the caller's deadline (any cancel scope's) is not made, and the error
is raised (the response returned) at once instead of timing out in the wait. Each retry fires
the ``request_retried`` hook (``RetryInfo.reason`` "connect error", "read error" or "status
503", ...) and is counted in ``Client.retry_stats()`` once its wait is over; one whose wait is
cancelled gives its budget token back.

Only the round trip (up to the response head) is retried: an error while the caller reads the
body is the caller's. The Transport's own retry of requests that died unprocessed on a reused
connection happens inside each attempt (``Transport(retry_unprocessed=False)`` turns it off).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ._errors import (
    ConnectError,
    ConnectTimeout,
    HTTPError,
    HTTPStatusError,
    ReadError,
    ReadTimeout,
    ResponseHeaderTimeout,
    TLSHandshakeTimeout,
    WriteError,
)
from ._trace import RetryInfo

if TYPE_CHECKING:
    from ._models import Request, Response
    from ._transport import Transport

__all__ = ["Retry", "RetryBudget", "RetryStats", "parse_retry_after"]

CONNECT_ERRORS = (ConnectError, ConnectTimeout, TLSHandshakeTimeout)
READ_ERRORS = (ReadError, WriteError, ReadTimeout, ResponseHeaderTimeout)
_SLICES = 10  # the budget's window is kept as this many slices


@dataclasses.dataclass(frozen=True)
class RetryBudget:
    """How many retries a Client may add to its load: ``ratio`` of the requests sent in the
    last ``window`` seconds, plus ``min_per_second * window`` (for clients that send little).
    Shared by every request of the Client."""

    ratio: float = 0.1
    min_per_second: float = 10.0
    window: float = 10.0

    def __post_init__(self) -> None:
        if self.ratio < 0 or self.min_per_second < 0 or self.window <= 0:
            raise ValueError(f"invalid {self}: ratio and min_per_second >= 0, window > 0")


@dataclasses.dataclass(frozen=True)
class Retry:
    """A Client's retry policy (``Client(retry=Retry(...))``), after urllib3's ``Retry``.

    ``total`` retries at most per request; ``connect``, ``read`` and ``status`` cap each kind
    (None: only ``total``). ``budget`` None: no budget."""

    total: int = 3
    connect: int | None = None
    read: int | None = None
    status: int | None = None
    status_forcelist: frozenset[int] = frozenset({429, 502, 503, 504})
    allowed_methods: frozenset[str] = frozenset(
        {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    )
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    respect_retry_after: bool = True
    retry_after_max: float = 60.0
    budget: RetryBudget | None = dataclasses.field(default_factory=RetryBudget)

    def __post_init__(self) -> None:
        # Sets and lists given for the two sets: kept as frozensets (hashable, immutable).
        object.__setattr__(self, "status_forcelist", frozenset(self.status_forcelist))
        methods = frozenset(m.upper() for m in self.allowed_methods)
        object.__setattr__(self, "allowed_methods", methods)
        for name in ("total", "connect", "read", "status"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"Retry: {name} must be >= 0, not {value}")
        if self.backoff_factor < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("Retry: backoff_factor, backoff_max and retry_after_max must be >= 0")

    def method_allowed(self, request: Request) -> bool:
        """The method may be retried after the server may have seen it."""
        headers = request.headers
        return (
            request.method in self.allowed_methods
            or "idempotency-key" in headers
            or "x-idempotency-key" in headers
        )

    def backoff(self, retry: int, uniform: Callable[[float, float], float]) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first): full jitter."""
        if not self.backoff_factor:
            return 0.0
        ceiling = min(self.backoff_max, self.backoff_factor * 2.0 ** min(retry, 64))
        return uniform(0.0, ceiling)


@dataclasses.dataclass
class RetryStats:
    """A Client's retries since it was made (``Client.retry_stats()``)."""

    requests: int = 0  # requests sent through the policy (each hop of a redirect chain)
    retries: int = 0  # retries made, of every kind
    connect_retries: int = 0
    read_retries: int = 0
    status_retries: int = 0
    budget_exhausted: int = 0  # retries the budget refused (the request then failed)
    exhausted: int = 0  # requests that ran out of retries (total or their kind's count)
    past_deadline: int = 0  # retries not made: their wait would end past the deadline


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds a Retry-After field asks to wait (delta-seconds or an HTTP-date, compared with
    ``now``, a POSIX time), never negative; None when it is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value) if value.isascii() else None  # (not "²", a digit to isdigit)
    import email.utils  # here: email is ~20 ms of `import asyncpool`, and an HTTP-date is rare

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # (OverflowError: year 10**20)
        return None
    if when.tzinfo is None:  # asctime's form, or "-0000": GMT, as every HTTP-date
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


class _Budget:
    """The RetryBudget's state: deposits and withdrawals per slice of the window."""

    def __init__(self, config: RetryBudget, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._slice = config.window / _SLICES
        # [slice number, requests, retries], oldest first; at most _SLICES + 1 entries.
        self._slices: collections.deque[list[int]] = collections.deque()

    def _current(self) -> list[int]:
        number = int(self.clock() // self._slice)
        slices = self._slices
        while slices and slices[0][0] <= number - _SLICES:
            slices.popleft()
        if not slices or slices[-1][0] != number:
            slices.append([number, 0, 0])
        return slices[-1]

    def deposit(self) -> None:
        self._current()[1] += 1

    def try_withdraw(self) -> list[int] | None:
        """A token: the slice it was taken from (to ``refund`` it), or None."""
        current = self._current()
        requests = sum(s[1] for s in self._slices)
        retries = sum(s[2] for s in self._slices)
        config = self.config
        if retries + 1 > config.ratio * requests + config.min_per_second * config.window:
            return None
        current[2] += 1
        return current

    @staticmethod
    def refund(token: list[int]) -> None:
        """Give back a token whose retry was not made (its slice may have left the window)."""
        token[2] -= 1


class Retrier:
    """A Client's policy at work: the loop, the budget and the counters. ``clock``, ``sleep``,
    ``uniform`` and ``now`` (wall time, for HTTP-dates) may be replaced, as tests do."""

    def __init__(self, policy: Retry) -> None:
        self.policy = policy
        self.stats = RetryStats()
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = anyio.sleep
        self.uniform: Callable[[float, float], float] = random.uniform
        self.now: Callable[[], float] = time.time
        self._budget = (
            _Budget(policy.budget, lambda: self.clock()) if policy.budget is not None else None
        )

    async def round_trip(self, transport: Transport, request: Request) -> Response:
        policy, stats = self.policy, self.stats
        stats.requests += 1
        if self._budget is not None:
            self._budget.deposit()
        used = {"connect": 0, "read": 0, "status": 0}
        attempt = 0
        while True:
            response: Response | None = None
            try:
                response = await transport.round_trip(request)
            except HTTPError as exc:
                kind = self._error_kind(exc, request)
                if kind is None:
                    raise
                delay = policy.backoff(attempt, self.uniform)
                token = self._grant(kind, used, attempt, delay)
                if token is None:
                    raise
                error: BaseException = exc
            else:
                if not self._status_retryable(response, request):
                    return response
                kind = "status"
                asked = self._retry_after(response)
                delay = policy.backoff(attempt, self.uniform) if asked is None else asked
                token = self._grant(kind, used, attempt, delay)
                if token is None:
                    return response
                error = HTTPStatusError(
                    f"{response.status_code} for {request.method} {request.url}",
                    host=request.url.host_header,
                    response=response,
                )
                await response._close_unread()
            attempt += 1
            trace = transport._trace_for(request)
            if trace and trace.request_retried:
                reason = f"status {response.status_code}" if response else f"{kind} error"
                trace.request_retried(RetryInfo(reason, error, attempt, delay))
            if delay > 0:
                try:
                    await self.sleep(delay)
                except BaseException:
                    if token:
                        _Budget.refund(token)
                    raise
            used[kind] += 1
            stats.retries += 1
            setattr(stats, f"{kind}_retries", getattr(stats, f"{kind}_retries") + 1)

    def _error_kind(self, exc: HTTPError, request: Request) -> str | None:
        if not request.body_is_rewindable:
            return None
        if isinstance(exc, CONNECT_ERRORS):
            return "connect"
        if isinstance(exc, READ_ERRORS) and self.policy.method_allowed(request):
            return "read"
        return None

    def _status_retryable(self, response: Response, request: Request) -> bool:
        return (
            response.status_code in self.policy.status_forcelist
            and request.body_is_rewindable
            and self.policy.method_allowed(request)
        )

    def _grant(
        self, kind: str, used: dict[str, int], attempt: int, delay: float
    ) -> list[int] | None:
        """May the retry be made: a retry left of ``total`` and of the kind's count, a wait
        that ends before the deadline, and the budget's token. None: no; else the token
        (empty without a budget)."""
        limit: int | None = getattr(self.policy, kind)
        if attempt >= self.policy.total or (limit is not None and used[kind] >= limit):
            self.stats.exhausted += 1
            return None
        if delay > 0 and anyio.current_time() + delay >= anyio.current_effective_deadline():
            self.stats.past_deadline += 1
            return None
        if self._budget is None:
            return []
        token = self._budget.try_withdraw()
        if token is None:
            self.stats.budget_exhausted += 1
        return token

    def _retry_after(self, response: Response) -> float | None:
        if not self.policy.respect_retry_after:
            return None
        value = response.headers.get("retry-after")
        if value is None:
            return None
        seconds = parse_retry_after(value, self.now())
        return None if seconds is None else min(seconds, self.policy.retry_after_max)
