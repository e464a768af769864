"""The connection a response handed over: after ``101 Switching Protocols`` or a 2xx to CONNECT.

An HTTP/1.1 server that switches protocols (``101`` to a request with an ``Upgrade`` field, a
WebSocket handshake say) or opens a tunnel (a 2xx to ``CONNECT``) ends HTTP on the connection:
what follows the head is the new protocol's. The connection leaves the pool there (its host slot
is freed; ``conn_closed`` reports ``CloseReason.UPGRADED``) and ``Response.upgrade_stream()``
gives its byte stream to the caller, who owns it from then on.

Until the caller takes it, the connection's reader task keeps it: a response closed (or
collected) without taking it, or the Transport closing first, closes it. Taken, the reader task
ends and nothing of the pool touches the socket again; closing the Transport leaves it open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from ._errors import ReadError, WriteError
from ._sync import Event

__all__ = ["UpgradeStream"]

_DEFAULT_READ = 65536


class UpgradeStream(anyio.abc.ByteStream):
    """The raw connection of a response that switched protocols (HTTP/1.1 only).

    Two interfaces over one stream: an ``anyio.abc.ByteStream`` (``receive``, ``send``,
    ``send_eof``, ``aclose``, ``extra``, with anyio's exceptions), and httpcore's network stream
    (``read`` returning ``b""`` at the end, ``write``, ``get_extra_info``, raising asyncpool's
    ``ReadError`` and ``WriteError``). The bytes the server sent right after the head come
    first. The pool's timeouts do not apply: bound reads with a cancel scope.
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, leading: bytes, host_port: str, settled: Event
    ) -> None:
        self._stream = stream
        self._leading = memoryview(leading)  # received with the head, not read yet
        self._host_port = host_port
        self._settled = settled  # set once taken or given up: the reader task waits for it
        self._taken = False
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "taken" if self._taken else "held by the pool"
        return f"<UpgradeStream {self._host_port} {state}>"

    # -- ownership (the response and the connection) ----------------------------------------

    @property
    def taken(self) -> bool:
        """``Response.upgrade_stream()`` handed it to the caller."""
        return self._taken

    @property
    def closed(self) -> bool:
        return self._closed

    def _take(self) -> None:
        """The caller owns the stream: the connection's reader task lets go of it."""
        self._taken = True
        self._settled.set()

    def _abandon(self) -> None:
        """Nobody will take it (the response was closed or collected first): the reader task
        closes it. Synchronous, for ``Response.__del__``."""
        if not self._taken:
            self._closed = True
        self._settled.set()

    # -- anyio.abc.ByteStream ---------------------------------------------------------------

    async def receive(self, max_bytes: int = _DEFAULT_READ) -> bytes:
        if self._leading:
            from anyio.lowlevel import checkpoint  # rare: bytes that came with the 101 head

            await checkpoint()
            if self._closed:
                raise anyio.ClosedResourceError
            leading = self._leading  # a view: read in small pieces, it is not copied again
            if leading:
                self._leading = leading[max_bytes:]
                return bytes(leading[:max_bytes])
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._closed = True
        self._leading = memoryview(b"")
        self._settled.set()
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes

    # -- httpcore's network stream ----------------------------------------------------------

    async def read(self, max_bytes: int = _DEFAULT_READ) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the server closed its side."""
        try:
            return await self.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ReadError(f"reading failed: {exc!r}", host=self._host_port) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise WriteError(f"writing failed: {exc!r}", host=self._host_port) from exc

    def get_extra_info(self, name: str) -> Any:
        """httpcore's names: ``"client_addr"``, ``"server_addr"``, ``"ssl_object"``,
        ``"socket"``; None for any other."""
        if name == "client_addr":
            return self.extra(anyio.abc.SocketAttribute.local_address, None)
        if name == "server_addr":
            return self.extra(anyio.abc.SocketAttribute.remote_address, None)
        if name == "ssl_object":
            from anyio.streams.tls import TLSAttribute  # not at import: only TLS needs it

            return self.extra(TLSAttribute.ssl_object, None)
        if name == "socket":
            return self.extra(anyio.abc.SocketAttribute.raw_socket, None)
        return None
