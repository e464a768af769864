"""Hot-path synchronisation, native to the running event loop.

anyio's ``Event`` and memory object streams are portable, and a request on a warm connection
would pay for that portability several times over: each ``anyio.Event()`` looks up the running
backend, and a memory stream's ``receive`` checkpoints (a full trip through the event loop)
before it parks, then allocates a receiver record. A pooled connection hands every request to
its writer and every response head back to the caller, so those costs add up to a good share of
a small request. This module gives the connections the same operations built directly on the
running loop's own primitives, chosen once per object:

* ``Event``: a one-shot flag one task waits on (a bare future on asyncio, trio's Event on
  trio);
* ``WakeableEvent``: asyncio's Event, whose waiter a timer can also wake without setting it
  (the response head's deadline: ``_conn_common.HeadTimer``);
* ``SET_EVENT``: an Event set for good, to keep in place of one that has fired;
* ``Channel``: a single-consumer queue, unbounded (a connection's exchange queues) or bounded
  (a streamed body), with anyio's exception types, read as a memory object stream would be;
* ``clock()``: the running loop's clock, as ``anyio.current_time`` would return it.
* ``call_soon_factory()``: a thread-safe "run this on the loop, soon", for the garbage
  collector's finalizers.

Waits here are cancellable by anyio cancel scopes like any other await. asyncio is imported
only once its loop is known to run (it is loaded already then), not by ``import asyncpool``.
"""

from __future__ import annotations

import collections
import functools
import sys
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import anyio

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "SET_EVENT",
    "Channel",
    "Event",
    "WakeableEvent",
    "call_soon_factory",
    "clock",
    "event_factory",
]

T = TypeVar("T")


class Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[None]: ...


class WakeableEvent(Event, Protocol):
    """An Event whose waiter a timer can wake without setting it (asyncio's, here)."""

    @property
    def time(self) -> Callable[[], float]: ...
    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle: ...
    def wake(self) -> None: ...


class _Ready:
    """An awaitable that is done at once (an Event already set)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that ends at once


_READY = _Ready()


class _SetEvent:
    """An Event set for good, to keep in place of one that has fired: then the fired one can be
    freed at once, in the turn that set it."""

    __slots__ = ()

    def set(self) -> None:
        pass

    def is_set(self) -> bool:
        return True

    def wait(self) -> Awaitable[None]:
        return _READY


SET_EVENT: Event = _SetEvent()


class _AsyncioEvent:
    """asyncio.Event without its waiter list and loop-binding lock: a flag and one future."""

    __slots__ = ("_future", "_loop", "_set")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        if not self._set:
            self._set = True
            future, self._future = self._future, None
            if future is not None and not future.done():
                future.set_result(None)

    def is_set(self) -> bool:
        return self._set

    def wait(self) -> Awaitable[None]:
        # The future itself, not a coroutine around it: one object less per wait, and waits
        # are many while requests are in flight (the garbage collector walks them).
        if self._set:
            return _READY
        # One waiter at a time: a cancelled waiter cancels the future it awaits, so a second
        # waiter sharing it would be cancelled too. Every event here has a single waiter.
        future = self._future
        assert future is None or future.done(), "an asyncpool Event has one waiter at a time"
        future = self._future = self._loop.create_future()
        return future

    @property
    def time(self) -> Callable[[], float]:
        """The loop's clock, to call (``anyio.current_time`` would look the loop up: a system
        call)."""
        return self._loop.time

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """Run ``callback`` on the loop at ``when`` (the loop's clock)."""
        return self._loop.call_at(when, callback)

    def wake(self) -> None:
        """Wake the waiter without setting the event (a deadline's timer): it finds the event
        not set."""
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)


def _running_backend() -> str:
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_task():  # (first: trio may be a guest run
        return "trio"  # on an asyncio loop, which asyncio would report as running)
    if "asyncio" not in sys.modules:  # no asyncio loop can run: do not import it to ask
        return "trio"
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"


def event_factory() -> Callable[[], Event]:
    """A maker of Events native to the running loop; call once and keep it. On asyncio the
    events hold the loop: looking it up costs a ``getpid()`` system call on Python 3.11."""
    if _running_backend() == "asyncio":
        import asyncio

        return functools.partial(_AsyncioEvent, asyncio.get_running_loop())
    import trio

    return trio.Event


def call_soon_factory() -> Callable[[Callable[[], object]], None]:
    """A function that runs a callback on the running loop, soon, from any thread or from the
    garbage collector; once the loop is gone it drops the callback. Call once and keep it."""
    schedule: Callable[[Callable[[], object]], object]
    if _running_backend() == "asyncio":
        import asyncio

        schedule = asyncio.get_running_loop().call_soon_threadsafe
    else:
        import trio

        schedule = trio.lowlevel.current_trio_token().run_sync_soon

    def call_soon(callback: Callable[[], object]) -> None:
        try:
            schedule(callback)
        except RuntimeError:  # the loop closed (trio: RunFinishedError): nothing left to free
            pass

    return call_soon


def clock() -> Callable[[], float]:
    """The running loop's clock function; call once and keep it."""
    if _running_backend() == "asyncio":
        import asyncio

        return asyncio.get_running_loop().time
    import trio

    return trio.current_time


class Channel(Generic[T]):
    """A queue with one consumer, unbounded unless ``max_items`` is given. ``receive`` parks on
    a native Event only when the queue is empty, with no checkpoint first; a bounded channel's
    ``send`` parks likewise while it is full. The exceptions are anyio's, as for a memory
    object stream: ``send*`` after ``close`` raise ClosedResourceError, after
    ``close_receiver`` BrokenResourceError; ``receive*`` after ``close_receiver`` raise
    ClosedResourceError, and after ``close`` EndOfStream once the queue is drained."""

    __slots__ = (
        "_closed",
        "_items",
        "_max_items",
        "_new_event",
        "_receiver_closed",
        "_space_waiter",
        "_waiter",
    )

    def __init__(self, new_event: Callable[[], Event], max_items: int | None = None) -> None:
        self._new_event = new_event
        self._max_items = max_items
        self._items: collections.deque[T] = collections.deque()
        self._waiter: Event | None = None  # the consumer, waiting for an item
        self._space_waiter: Event | None = None  # a producer, waiting for room
        self._closed = False
        self._receiver_closed = False

    def __len__(self) -> int:
        return len(self._items)

    def peek_last(self) -> T:
        """The item sent last and not received yet (IndexError when there is none)."""
        return self._items[-1]

    def replace_last(self, item: T) -> None:
        """Put ``item`` in the place of the item sent last, not received yet."""
        self._items[-1] = item

    def send_nowait(self, item: T) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._receiver_closed:
            raise anyio.BrokenResourceError
        if self._max_items is not None and len(self._items) >= self._max_items:
            raise anyio.WouldBlock
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def send(self, item: T) -> None:
        while self._max_items is not None and len(self._items) >= self._max_items:
            if self._closed or self._receiver_closed:
                break  # send_nowait raises the right error
            space = self._space_waiter = self._new_event()
            try:
                await space.wait()
            finally:
                self._space_waiter = None
        self.send_nowait(item)

    def receive_nowait(self) -> T:
        """The next item; ``WouldBlock`` when empty, ``EndOfStream`` when empty and closed."""
        if self._items:
            item = self._items.popleft()
            space = self._space_waiter
            if space is not None:
                self._space_waiter = None
                space.set()
            return item
        if self._receiver_closed:
            raise anyio.ClosedResourceError
        raise anyio.EndOfStream if self._closed else anyio.WouldBlock

    async def receive(self) -> T:
        while not (self._items or self._closed or self._receiver_closed):
            await self.wait_receivable()
        return self.receive_nowait()

    def wait_receivable(self) -> Awaitable[None]:
        """Wait until ``receive_nowait`` has more to say than ``WouldBlock``. For a consumer
        parked between items (a connection's writer): on asyncio this awaits a bare future, no
        coroutine, one object less per item for the garbage collector."""
        if self._items or self._closed or self._receiver_closed:
            return _READY
        # A waiter still here was left by a cancelled wait of the one consumer: replace it.
        waiter = self._waiter = self._new_event()
        return waiter.wait()

    def close(self) -> None:
        """No more items; the consumer still gets those queued, then ``EndOfStream``."""
        self._closed = True
        self._wake_all()

    def close_receiver(self) -> None:
        """The consumer is gone: what is queued is dropped and producers fail."""
        self._receiver_closed = True
        self._items.clear()
        self._wake_all()

    def _wake_all(self) -> None:
        for waiter in (self._waiter, self._space_waiter):
            if waiter is not None:
                waiter.set()
        self._waiter = self._space_waiter = None
