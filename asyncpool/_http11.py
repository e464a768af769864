"""HTTP/1.1 client protocol: bytes in, events out, no I/O.

The connection layer talks to this small interface only, so that a faster parser can stand
behind it later. Events are plain values: a :class:`ResponseHead`, an :class:`Informational`
(1xx) head, a ``bytes`` chunk of body, or one of the sentinels ``END_OF_MESSAGE`` (the response
is complete), ``NEED_DATA`` (feed more bytes) and ``PAUSED`` (nothing more until the next cycle).
h11 does the parsing and enforces framing: Content-Length, chunked, read-until-close, HTTP/1.0
and ``Connection: close`` on either side.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import h11

from ._errors import LocalProtocolError, RemoteProtocolError, ResponseHeaderTooLarge

__all__ = [
    "END_OF_MESSAGE",
    "NEED_DATA",
    "PAUSED",
    "Event",
    "HTTP11Protocol",
    "Informational",
    "ResponseHead",
]


class Sentinel(enum.Enum):
    END_OF_MESSAGE = "END_OF_MESSAGE"
    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"


END_OF_MESSAGE = Sentinel.END_OF_MESSAGE
NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


class ResponseHead(NamedTuple):
    status_code: int
    reason_phrase: str
    http_version: str
    headers: list[tuple[str, str]]


class Informational(NamedTuple):
    status_code: int
    headers: list[tuple[str, str]]


Event = ResponseHead | Informational | bytes | Sentinel


def _decode_headers(headers: Any) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers.raw_items()
    ]


class HTTP11Protocol:
    """One client side of an HTTP/1.1 connection, over any number of request/response cycles."""

    __slots__ = ("_h11", "_host", "_max_header_bytes")

    def __init__(self, host: str, *, max_header_bytes: int) -> None:
        self._host = host
        self._max_header_bytes = max_header_bytes
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_bytes)

    # -- writing ----------------------------------------------------------------------------

    def request_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        try:
            data = self._h11.send(h11.Request(method=method, target=target, headers=headers))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc), host=self._host) from None
        assert data is not None
        return data

    def body_chunk(self, chunk: bytes) -> bytes:
        try:
            data = self._h11.send(h11.Data(data=chunk))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc), host=self._host, phase="write") from None
        assert data is not None
        return data

    def end_of_body(self) -> bytes:
        try:
            data = self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc), host=self._host, phase="write") from None
        assert data is not None
        return data

    @property
    def request_complete(self) -> bool:
        """Every byte of the current request has been produced (or never will be needed)."""
        return self._h11.our_state is not h11.SEND_BODY

    # -- reading ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means the server closed its side."""
        self._h11.receive_data(data)

    def next_event(self) -> Event:
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if str(exc) == "Receive buffer too long":
                raise ResponseHeaderTooLarge(
                    "response head exceeds max_response_header_bytes", host=self._host
                ) from None
            raise RemoteProtocolError(str(exc), host=self._host) from None
        kind = type(event)
        if kind is h11.Data:
            return bytes(event.data)  # type: ignore[union-attr]
        if kind is h11.Response:
            headers = self._checked_headers(event.headers)  # type: ignore[union-attr]
            return ResponseHead(
                event.status_code,  # type: ignore[union-attr]
                event.reason.decode("latin-1"),  # type: ignore[union-attr]
                "HTTP/" + event.http_version.decode("ascii"),  # type: ignore[union-attr]
                headers,
            )
        if kind is h11.EndOfMessage:
            return END_OF_MESSAGE
        if kind is h11.InformationalResponse:
            headers = self._checked_headers(event.headers)  # type: ignore[union-attr]
            return Informational(event.status_code, headers)  # type: ignore[union-attr]
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        # h11.ConnectionClosed: the server closed before sending a response head.
        raise RemoteProtocolError("server closed the connection before a response", host=self._host)

    @property
    def has_buffered_data(self) -> bool:
        """Bytes from the server not yet part of any response (unsolicited)."""
        return bool(self._h11.trailing_data[0])

    def _checked_headers(self, raw: Any) -> list[tuple[str, str]]:
        # h11 bounds a head still arriving; one that arrived whole is measured here.
        headers = _decode_headers(raw)
        if sum(len(name) + len(value) + 4 for name, value in headers) > self._max_header_bytes:
            raise ResponseHeaderTooLarge(
                "response head exceeds max_response_header_bytes", host=self._host
            )
        return headers

    def start_next_cycle(self) -> bool:
        """After a complete exchange: make the connection ready for another request. False when
        either side asked to close (``Connection: close``, HTTP/1.0, read-until-close)."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False
