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
* ``Channel``: an unbounded single-consumer queue of items (a connection's exchange queues),
  with anyio's exception types so callers read as they would with a memory object stream;
* ``clock()``: the running loop's clock, as ``anyio.current_time`` would return it.

Waits here are cancellable by anyio cancel scopes like any other await.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import anyio

__all__ = ["Channel", "Event", "clock", "new_event"]

T = TypeVar("T")


class Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


class _AsyncioEvent:
    """asyncio.Event without its waiter list and loop-binding lock: a flag and one future."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        if not self._set:
            self._set = True
            future = self._future
            if future is not None and not future.done():
                future.set_result(None)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        # One waiter at a time: a cancelled waiter cancels the future it awaits, so a second
        # waiter sharing it would be cancelled too. Every event here has a single waiter.
        assert self._future is None, "an asyncpool Event has one waiter at a time"
        future = self._future = asyncio.get_running_loop().create_future()
        try:
            await future
        finally:
            self._future = None


def _running_backend() -> str:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"


def event_factory() -> Callable[[], Event]:
    """The Event class native to the running loop; call once and keep it."""
    if _running_backend() == "asyncio":
        return _AsyncioEvent
    import trio

    return trio.Event


def new_event() -> Event:
    """A native Event for the running loop (looks the loop up: prefer a kept factory)."""
    return event_factory()()


def clock() -> Callable[[], float]:
    """The running loop's clock function; call once and keep it."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        import trio

        return trio.current_time


class Channel(Generic[T]):
    """An unbounded queue with one consumer. ``send_nowait`` never blocks; ``receive`` parks on
    a native Event only when the queue is empty (no checkpoint first)."""

    __slots__ = ("_closed", "_items", "_new_event", "_waiter")

    def __init__(self, new_event: Callable[[], Event]) -> None:
        self._new_event = new_event
        self._items: collections.deque[T] = collections.deque()
        self._waiter: Event | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def send_nowait(self, item: T) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    def receive_nowait(self) -> T:
        """The next item; ``WouldBlock`` when empty, ``EndOfStream`` when empty and closed."""
        if self._items:
            return self._items.popleft()
        raise anyio.EndOfStream if self._closed else anyio.WouldBlock

    async def receive(self) -> T:
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            assert self._waiter is None, "a Channel has one consumer"
            waiter = self._waiter = self._new_event()
            try:
                await waiter.wait()
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        """No more items; the consumer still gets those queued, then ``EndOfStream``."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()
