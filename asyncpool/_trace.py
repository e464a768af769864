"""Go's httptrace.ClientTrace, in snake_case.

A trace is a bag of optional plain callables. Attach one to a request (``Request(trace=...)``)
or to every request made inside a block (``with client_trace(trace):``); when both are present
both fire, the innermost first, as Go's ``WithClientTrace`` composes them. With no trace attached
the cost is one context-variable lookup per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["ClientTrace", "GotConnInfo", "client_trace", "current_trace"]


@dataclasses.dataclass(frozen=True)
class GotConnInfo:
    """What ``got_conn`` learns about the connection a request obtained."""

    reused: bool  # it carried a request before
    was_idle: bool  # it came from the idle list (not straight from another request or a dial)
    idle_time: float  # seconds it sat idle, when was_idle
    local_address: tuple[Any, ...] | None = None
    remote_address: tuple[Any, ...] | None = None
    protocol: str = "HTTP/1.1"


Hook = Callable[..., object] | None


@dataclasses.dataclass(frozen=True)
class ClientTrace:
    """Hooks fired during one request, from the task where the event happens."""

    get_conn: Hook = None  # (host_port)
    got_conn: Hook = None  # (GotConnInfo)
    put_idle_conn: Hook = None  # (err | None)
    got_first_response_byte: Hook = None  # ()
    got_100_continue: Hook = None  # ()
    got_1xx_response: Hook = None  # (code, headers)
    dns_start: Hook = None  # (host)
    dns_done: Hook = None  # (addresses, err)
    connect_start: Hook = None  # (network, addr)
    connect_done: Hook = None  # (network, addr, err)
    tls_handshake_start: Hook = None  # ()
    tls_handshake_done: Hook = None  # (ssl_object, err)
    wrote_header_field: Hook = None  # (key, values)
    wrote_headers: Hook = None  # ()
    wait_100_continue: Hook = None  # ()
    wrote_request: Hook = None  # (err | None)

    def compose(self, outer: ClientTrace | None) -> ClientTrace:
        """A trace firing this trace's hooks, then ``outer``'s."""
        if outer is None:
            return self
        merged: dict[str, Hook] = {}
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(outer, field.name)
            merged[field.name] = _both(mine, theirs) if mine and theirs else (mine or theirs)
        return ClientTrace(**merged)


def _both(first: Callable[..., object], second: Callable[..., object]) -> Callable[..., None]:
    def hook(*args: object) -> None:
        first(*args)
        second(*args)

    return hook


_current: ContextVar[ClientTrace | None] = ContextVar("asyncpool_client_trace", default=None)


def current_trace() -> ClientTrace | None:
    return _current.get()


@contextlib.contextmanager
def client_trace(trace: ClientTrace) -> Iterator[ClientTrace]:
    """Attach ``trace`` to every request made inside the block (composed with any outer one)."""
    effective = trace.compose(_current.get())
    token = _current.set(effective)
    try:
        yield effective
    finally:
        _current.reset(token)
