"""The Transport's background tasks, owned by the Transport and by no caller's task.

A Transport runs tasks of its own: each connection's reader and writer, HTTP/2 request-body
pumps, dials and the idle sweeper. They must not live in the scope of whichever task happened
to open the pool: a client opened in one task (a fixture, an application's startup) and closed
in another, or never entered with ``async with`` at all, would then break anyio's rule that a
task group is left by the task that entered it. ``TaskSet`` spawns them detached, on the
running loop itself:

* asyncio: ``loop.create_task``, with the tasks kept in a set (the loop holds tasks weakly);
* trio: ``trio.lowlevel.spawn_system_task``, in a copy of the spawner's context (as a nursery
  would give it).

Each task body runs inside an anyio ``CancelScope`` that ``TaskSet`` holds, and cancelling means
cancelling those scopes, on both backends: anyio's cancellation is level-triggered (a task that
awaits while it cleans up is cancelled again, as in a task group), it works in any task, and it
never mistakes a native ``Task.cancel()`` (asyncio's shutdown) for its own. A scope is made and
registered by ``start_soon`` itself, so a task spawned just before ``aclose`` is cancelled too,
before it runs a line.

A task's exception has nowhere to go: no ``async with`` waits for it, and on trio an exception
out of a system task crashes the whole run. So ``_run`` catches ``Exception``, logs it on the
``asyncpool`` logger, and keeps the first in ``failure`` (the Transport's invariant check reports
it: the connections' tasks handle their own errors, so one arriving here is a bug). Cancellation
and ``KeyboardInterrupt`` propagate as usual.

Invariant: ``aclose`` returns only when every task started here, including those started while
it waits, has ended.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._sync import _running_backend

if TYPE_CHECKING:
    import asyncio

__all__ = ["Spawner", "TaskSet"]

logger = logging.getLogger("asyncpool")  # _trace's; importing it here would make a cycle


class Spawner(Protocol):
    """What a connection starts its tasks with: a ``TaskSet`` (or an anyio task group)."""

    def start_soon(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: Any = None
    ) -> None: ...


class TaskSet:
    """Tasks owned by a Transport. Make it in a task of the loop they will run on."""

    __slots__ = ("_all_done", "_closed", "_scopes", "_spawn", "failure")

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._closed = False
        self._all_done: anyio.Event | None = None  # made by the first wait_closed that waits
        self.failure: BaseException | None = None  # the first exception a task let out
        if _running_backend() == "asyncio":
            self._spawn = _asyncio_spawner()
        else:
            self._spawn = _trio_spawner()

    def __len__(self) -> int:
        """The tasks started and not ended."""
        return len(self._scopes)

    @property
    def closed(self) -> bool:
        return self._closed

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any, name: Any = None) -> None:
        """Start ``func(*args)`` as a task of this set. After ``cancel_all`` it starts
        cancelled (a dial that ends while the pool closes still starts its connection's tasks,
        so that they close its socket)."""
        scope = anyio.CancelScope()
        if self._closed:
            scope.cancel()
        self._scopes.add(scope)
        label = str(name) if name is not None else f"asyncpool {getattr(func, '__name__', func)}"
        self._spawn(
            self._run, (scope, func, args, label), label, functools.partial(self._forget, scope)
        )

    async def _run(
        self,
        scope: anyio.CancelScope,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str,
    ) -> None:
        try:
            with scope:
                await func(*args)
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
            logger.error("asyncpool task %r failed", name, exc_info=exc)
        finally:
            self._forget(scope)

    def _forget(self, scope: anyio.CancelScope) -> None:
        """The task of ``scope`` ended: from ``_run``, or (asyncio) from the task's done
        callback, for a task cancelled natively before its first step never runs ``_run``
        (asyncio.run cancels every task left as it ends). Idempotent."""
        self._scopes.discard(scope)
        if not self._scopes and self._all_done is not None:
            self._all_done.set()

    def cancel_all(self) -> None:
        """Cancel every task, and those started from now on; synchronous, idempotent. Safe to
        call from a loop callback (the garbage collector's finalizer schedules it)."""
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()

    async def wait_closed(self) -> None:
        """Wait until every task has ended. Not shielded: the caller shields it."""
        while self._scopes:
            if self._all_done is None or self._all_done.is_set():
                self._all_done = anyio.Event()
            await self._all_done.wait()

    async def aclose(self) -> None:
        """Cancel every task and wait until all have ended, shielded from cancellation."""
        self.cancel_all()
        with anyio.CancelScope(shield=True):
            await self.wait_closed()


_Spawn = Callable[
    [Callable[..., Coroutine[Any, Any, None]], tuple[Any, ...], str, Callable[[], None]], None
]


def _asyncio_spawner() -> _Spawn:
    import asyncio  # once per TaskSet, on asyncio only: loaded already

    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()  # the loop itself holds its tasks weakly

    def spawn(
        fn: Callable[..., Coroutine[Any, Any, None]],
        args: tuple[Any, ...],
        name: str,
        done: Callable[[], None],
    ) -> None:
        task = loop.create_task(fn(*args), name=name)
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(lambda _: done())

    return spawn


def _trio_spawner() -> _Spawn:
    import trio

    def spawn(
        fn: Callable[..., Coroutine[Any, Any, None]],
        args: tuple[Any, ...],
        name: str,
        done: Callable[[], None],
    ) -> None:
        # (``done`` is ``_run``'s to call: trio cancels a task only where it runs, so every
        # system task runs ``_run``'s ``finally``.)
        trio.lowlevel.spawn_system_task(fn, *args, name=name, context=contextvars.copy_context())

    return spawn
