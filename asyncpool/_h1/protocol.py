"""HTTP/1.1 client protocol: bytes in, events out, no I/O.

The connection layer talks to this small interface only, so that a faster parser can stand
behind it later. Events are plain values: a :class:`ResponseHead`, an :class:`Informational`
(1xx) head, a ``bytes`` chunk of body, or one of the sentinels ``END_OF_MESSAGE`` (the response
is complete), ``NEED_DATA`` (feed more bytes) and ``PAUSED`` (nothing more until the next cycle).
A server that switches protocols (``101`` to a request with ``Upgrade``, a 2xx to ``CONNECT``)
ends HTTP on the connection: its head is a ``ResponseHead``, then ``switched`` is true, nothing
but ``PAUSED`` follows, and ``switched_data()`` has the bytes that came after the head.
h11 does the parsing and enforces framing: Content-Length, chunked, read-until-close, HTTP/1.0
and ``Connection: close`` on either side.

One exception, for speed: a Content-Length body is counted here, not by h11, which would copy
every byte into its receive buffer and out again and run its state machine twice more per
response. Once h11 has parsed such a head, and the request is complete, the body's bytes are
passed on as they arrive and a fresh h11 connection takes the next cycle (with any bytes beyond
the body, which then count as unsolicited, as they would in h11). Keep-alive decisions are h11's
own, and so is the error a body cut short raises.

And one more for such responses: a server sends the same head again and again (nginx's changes
with its Date, once a second), and h11's parse of a head is most of a request's cost on this
backend. What h11 made of a head that began a read (its fields, length, keep-alive), in the state
it was in, is kept: the same bytes in the same state later skip h11 (see ``_known_head``). A
request without a body that h11 has written before, from an idle state, is not given to h11 at
first either: its bytes and the state it leaves h11 in are kept (``_SENT_REQUESTS``), and h11
is told of it only when it must read the response (``_send_unsent``). With a known head it
never is: h11 stays idle for the next cycle, as it is after one.
"""

from __future__ import annotations

import collections
import enum
import re
from typing import Any, NamedTuple, NoReturn, cast

import h11

from .._errors import HTTPError, LocalProtocolError, RemoteProtocolError, ResponseHeaderTooLarge
from . import PARSERS, default_parser  # re-exported: defined in the package, which needs no h11

__all__ = [
    "END_OF_MESSAGE",
    "NEED_DATA",
    "PARSERS",
    "PAUSED",
    "Event",
    "HTTP1Protocol",
    "HTTP11Protocol",
    "HttptoolsProtocol",
    "Informational",
    "ResponseHead",
    "default_parser",
    "make_protocol",
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
    headers: list[str]  # flat, as Headers keeps them: name, value, name, value, ...


class Informational(NamedTuple):
    status_code: int
    headers: list[str]


Event = ResponseHead | Informational | bytes | Sentinel


# Bytes read while a head is awaited, from which on h11 is given the head alone (see ``feed``).
HOLD_AFTER_HEAD_MIN = 16384
_REQUEST_SENT = (h11.DONE, h11.MUST_CLOSE)
_UNASKED_101 = "101 Switching Protocols to a request without an Upgrade field"
_NO_BODY_STATUS = frozenset({204, 304})


# A client sends the same requests, and the same header fields, again and again: h11 validates
# and normalises each once. Kept are its request events (immutable, so shared by every
# connection) and its header lists; bounded in number and, as a server can send a client to
# fresh, huge URLs, by size: a larger request head is checked each time, never kept.
_CHECKED_REQUESTS: dict[tuple[str, str, tuple[tuple[str, str], ...]], h11.Request] = {}
_CHECKED_HEADERS: dict[tuple[tuple[str, str], ...], Any] = {}
_CHECKED_MAX = 512
_CHECKED_HEAD_MAX = 4096  # characters of target and fields a kept request may have
_END_OF_MESSAGE = h11.EndOfMessage()


class _KnownHead(NamedTuple):
    """What h11 made of a response head with a Content-Length body (see ``_known_head``)."""

    status_code: int
    reason_phrase: str
    http_version: str
    headers: list[str]  # copied for each response: a response's Headers may be changed
    content_length: int
    size: int  # as h11 counts it, for max_header_bytes
    keep_alive: bool  # h11's decision: our side DONE (not MUST_CLOSE) after the head


# Keyed by (method, h11's state of our side, the head's bytes up to its blank line); bounded as
# the request caches above. A head ends where h11's receive buffer ends it (an empty line, CRLF
# or bare LF); that the two agree is checked before a head is kept.
_KNOWN_HEADS: dict[tuple[str, Any, bytes], _KnownHead] = {}
# A bodiless request as h11 writes it from an idle state: its bytes, and h11's state of our side
# after it and its end (DONE, or MUST_CLOSE); _NOT_KEPT for a request with a body or a switch
# proposal (not tried again). Keyed as _CHECKED_REQUESTS, bounded likewise.
_SENT_REQUESTS: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[bytes, Any]] = {}
_NOT_KEPT: tuple[bytes, Any] = (b"", None)
# The httptools backend's known heads: keyed by (method, the head's bytes up to its CRLF CRLF),
# what llhttp and the checks here made of it (keep-alive: its version and Connection field).
_KNOWN_LLHTTP_HEADS: dict[tuple[str, bytes], _KnownHead] = {}
_BLANK_LINE = re.compile(b"\n\r?\n")


# The 1xx heads of a response and its final head share max_header_bytes, as in Go (1.24 on;
# before, it allowed 5 of them): a server sending 1xx heads for ever is cut off, not waited on.
# A 1xx head counts as on the wire; the final head's fields count as h11 counts them (and
# the head still arriving, in bytes, is held to the limit alone: see the backends).
INTERIM = "the total of the interim (1xx) responses"
HEAD_AFTER_INTERIM = "response head with the interim (1xx) responses before it"


def head_size(http_version: bytes | str, reason: bytes | str, field_bytes: int) -> int:
    """A 1xx head's size on the wire: "HTTP/" version SP code SP reason CRLF, fields, CRLF."""
    return 14 + len(http_version) + len(reason) + field_bytes


def too_large(what: str, limit: int, host: str) -> ResponseHeaderTooLarge:
    return ResponseHeaderTooLarge(f"{what} exceeds max_response_header_bytes={limit}", host=host)


def decode_fields(raw: list[bytes]) -> list[str]:
    """A head's names and values, flat, from Latin-1: one join, decode and split for the whole
    head instead of a decode per name and per value (a response's fields are decoded on every
    request). NUL separates them: both parsers refuse it in a field (h11's grammar, llhttp's
    strict mode), and a head that had one anyway would be decoded field by field."""
    if not raw:
        return []
    fields = b"\0".join(raw).decode("latin-1").split("\0")
    if len(fields) != len(raw):
        fields = [piece.decode("latin-1") for piece in raw]
    return fields


class HTTP11Protocol:
    """One client side of an HTTP/1.1 connection, over any number of request/response cycles."""

    __slots__ = (
        "_body_left",
        "_body_length",
        "_body_ready",
        "_direct_done",
        "_direct_keep_alive",
        "_h11",
        "_h11_fed",
        "_head_key",
        "_held",
        "_held_from",
        "_host",
        "_informational_size",
        "_max_header_bytes",
        "_method",
        "_peer_closed",
        "_ready_head",
        "_unsent",
        "_unsent_ended",
        "_unsent_state",
    )

    def __init__(self, host: str, *, max_header_bytes: int) -> None:
        self._host = host
        self._max_header_bytes = max_header_bytes
        self._h11 = self._new_h11()
        # A request written without h11, not told to h11 yet (see the top): h11 is idle and,
        # once told, would be in _unsent_state (after the request's end, once _unsent_ended).
        self._unsent: h11.Request | None = None
        self._unsent_ended = False
        self._unsent_state: Any = None
        # The server closed its side: h11 ends a read-until-close body there and would let
        # the next cycle start, on a connection that is gone.
        self._peer_closed = False
        self._method = "GET"
        # A direct body (see the top): bytes still owed, None while h11 reads the body.
        self._body_left: int | None = None
        self._body_length = 0
        self._body_ready: list[bytes] = []  # arrived, not yet handed out
        self._direct_done = False  # the direct body ended; the cycle is over outside h11
        self._direct_keep_alive = False
        # Bytes after a head that h11 has not seen yet (see ``feed``): from ``_held_from`` on, at
        # least one.
        self._held: bytes | None = None
        self._held_from = 0
        self._informational_size = 0  # of this cycle's 1xx heads (see ``head_size``)
        # h11 has been given bytes since it was made or started its cycle: then a head is not
        # known (``_known_head``), h11 reads it.
        self._h11_fed = False
        # The key of the head h11 is reading, to keep what it makes of it, and the bytes h11
        # was given after the head (see ``_read_body_directly``).
        self._head_key: tuple[tuple[str, Any, bytes], int] | None = None
        self._ready_head: ResponseHead | None = None  # a known head, given by next_event

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header_bytes)

    # -- writing ----------------------------------------------------------------------------

    def request_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        self._method = method
        self._informational_size = 0
        try:
            fields = tuple(headers)
            key = (method, target, fields)
            request = _CHECKED_REQUESTS.get(key)
            if request is None:
                checked = _CHECKED_HEADERS.get(fields)
                if checked is None:  # values go out as Latin-1, as on every writer (h11: ASCII)
                    checked = [(name, value.encode("latin-1")) for name, value in headers]
                request = h11.Request(method=method, target=target, headers=checked)
                size = sum(len(name) + len(value) for name, value in fields)
                if size + len(target) <= _CHECKED_HEAD_MAX:
                    if len(_CHECKED_REQUESTS) >= _CHECKED_MAX:
                        _CHECKED_REQUESTS.clear()
                    _CHECKED_REQUESTS[key] = request
                    if fields not in _CHECKED_HEADERS:
                        if len(_CHECKED_HEADERS) >= _CHECKED_MAX:
                            _CHECKED_HEADERS.clear()
                        _CHECKED_HEADERS[fields] = request.headers
            idle = (
                not self._h11_fed
                and self._h11.our_state is h11.IDLE
                and self._h11.their_state is h11.IDLE
            )
            sent = _SENT_REQUESTS.get(key) if idle else _NOT_KEPT
            if sent is not None and sent[1] is not None:
                self._unsent, self._unsent_ended = request, False
                data, self._unsent_state = sent
                return data
            data = self._h11.send(request)
            if sent is None and key in _CHECKED_REQUESTS:
                self._learn_request(key, request, data)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc), host=self._host) from None
        except UnicodeEncodeError as exc:  # the Transport refuses it before (check_wire_fields)
            raise LocalProtocolError(f"not Latin-1: {exc.object!r}", host=self._host) from None
        assert data is not None
        return data

    @staticmethod
    def _learn_request(
        key: tuple[str, str, tuple[tuple[str, str], ...]], request: h11.Request, data: bytes
    ) -> None:
        """Keep a request h11 wrote from an idle state, if it has no body: its bytes and the
        state h11 ends in, as a fresh h11 shows them."""
        probe = h11.Connection(h11.CLIENT)
        probe.send(request)
        sent = _NOT_KEPT
        try:
            # Not with chunked framing (an end of its own) nor a switch proposal.
            if probe.send(_END_OF_MESSAGE) == b"" and probe.our_state in _REQUEST_SENT:
                sent = (data, probe.our_state)
        except h11.LocalProtocolError:
            pass  # a declared body
        if len(_SENT_REQUESTS) >= _CHECKED_MAX:
            _SENT_REQUESTS.clear()
        _SENT_REQUESTS[key] = sent

    def _send_unsent(self) -> None:
        """Tell h11 of the request written without it (see the top); the bytes are out."""
        request, self._unsent = self._unsent, None
        assert request is not None
        self._h11.send(request)
        if self._unsent_ended:
            self._h11.send(_END_OF_MESSAGE)

    def body_chunk(self, chunk: bytes) -> bytes:
        if self._unsent is not None:
            self._send_unsent()
        try:
            data = self._h11.send(h11.Data(data=chunk))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc), host=self._host, phase="write") from None
        assert data is not None
        return data

    def end_of_body(self) -> bytes:
        if self._unsent is not None and not self._unsent_ended:
            self._unsent_ended = True
            return b""
        if self._unsent is not None:
            self._send_unsent()
        try:
            data = self._h11.send(_END_OF_MESSAGE)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc), host=self._host, phase="write") from None
        assert data is not None
        return data

    @property
    def request_complete(self) -> bool:
        """Every byte of the current request has been produced (or never will be needed)."""
        if self._unsent is not None:
            return self._unsent_ended
        return self._h11.our_state is not h11.SEND_BODY

    # -- reading ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means the server closed its side."""
        left = self._body_left
        if not data:
            self._peer_closed = True
        if left is None:
            head_end = 0
            if self._unsent is not None:
                if data and self._unsent_ended and self._known_head(data, self._unsent_state) < 0:
                    return
                self._send_unsent()
            if not self._h11_fed and data:
                self._h11_fed = True
                head_end = self._known_head(data, self._h11.our_state)
                if head_end < 0:
                    return
            if len(data) >= HOLD_AFTER_HEAD_MIN and self._h11.their_state is h11.SEND_RESPONSE:
                # A head, likely with a large body behind it: h11 gets the head alone for now,
                # so that a direct body is not copied into its buffer and out again. Never an
                # empty rest: h11 would take it for the server closing.
                end = data.find(b"\r\n\r\n") + 4
                if 3 < end < len(data):
                    if self._head_key is not None:
                        self._head_key = (self._head_key[0], end - head_end)
                    self._h11.receive_data(data[:end])
                    self._held, self._held_from = data, end
                    return
            self._h11.receive_data(data)
        elif not data:
            raise RemoteProtocolError(
                "peer closed connection without sending complete message body (received "
                f"{self._body_length - left} bytes, expected {self._body_length})",
                host=self._host,
            )
        elif len(data) <= left:
            self._body_ready.append(data)
            self._body_left = left - len(data)
        else:  # the body's end (or it had ended), and bytes nobody asked for
            if left:
                self._body_ready.append(data[:left])
                self._body_left = 0
            self._h11_fed = True
            self._h11.receive_data(data[left:])

    def _known_head(self, data: bytes, our_state: Any) -> int:
        """For the first bytes h11 would get in a cycle, with our side in ``our_state``: when
        they begin with a head h11 has read before in that state, take it as h11 did (the
        head's event is ready, the body is counted directly, an idle h11 takes the next cycle)
        and return -1. Else the head's end, where there is one (0 if not), its key noted for
        ``_read_body_directly`` to keep what h11 makes of it. With a request h11 was not told
        of, it is idle: its server side would be waiting for the response."""
        if (
            our_state not in _REQUEST_SENT
            or (self._unsent is None and self._h11.their_state is not h11.SEND_RESPONSE)
            or not data.startswith(b"HTTP/")
        ):
            return 0
        match = _BLANK_LINE.search(data, 0, _CHECKED_HEAD_MAX)
        if match is None:
            return 0
        end = match.end()
        key = (self._method, our_state, data if end == len(data) else data[:end])
        known = _KNOWN_HEADS.get(key)
        if known is None or known.size > self._max_header_bytes:
            self._head_key = (key, len(data) - end)
            return end
        self._ready_head = ResponseHead(
            known.status_code, known.reason_phrase, known.http_version, list(known.headers)
        )
        self._direct_keep_alive = known.keep_alive
        if self._unsent is not None:
            self._unsent = None  # h11 never saw this cycle: idle for the next, as it is now
        else:
            self._h11 = self._new_h11()
        self._h11_fed = False
        self._body_left = self._body_length = known.content_length
        if end < len(data):
            self.feed(data[end:])
        return -1

    def _release_held(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            # h11 copies it into its buffer anyway: a view spares a copy of the slice.
            self._h11.receive_data(cast(bytes, memoryview(held)[self._held_from :]))

    def _next_h11_event(self) -> Any:
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if "_SWITCH_UPGRADE event without a pending proposal" in str(exc):
                raise RemoteProtocolError(_UNASKED_101, host=self._host) from None
            if str(exc) == "Receive buffer too long":
                # Mid-body, h11 buffers only a chunk header or the trailer section.
                in_body = self._h11.their_state is h11.SEND_BODY
                what = "a chunk header or the trailer section" if in_body else "response head"
                raise too_large(what, self._max_header_bytes, self._host) from None
            raise RemoteProtocolError(str(exc), host=self._host) from None

    def next_event(self) -> Event:
        if self._ready_head is not None:
            head, self._ready_head = self._ready_head, None
            return head
        if self._unsent is not None:
            self._send_unsent()
        if self._body_left is not None:
            return self._next_direct_event()
        if self._direct_done:
            return PAUSED
        event = self._next_h11_event()
        if type(event) is h11.Response:
            return self._response_head(event)
        # Held bytes follow a complete head: h11 always had an event to give from it.
        self._release_held()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            if event.headers:  # trailers that arrived whole, given to nobody: measured as a head
                size = sum(len(name) + len(value) + 4 for name, value in event.headers)
                if size > self._max_header_bytes:
                    raise too_large("trailer section", self._max_header_bytes, self._host)
            return END_OF_MESSAGE
        if isinstance(event, h11.InformationalResponse):
            self._head_key = None  # the head noted in feed was this one
            if event.status_code == 101:  # h11 lets it through to an Upgrade request only
                return self._head(event, self._checked_headers(event.headers)[0])
            headers, _, size = self._checked_headers(event.headers, INTERIM)
            self._informational_size += head_size(event.http_version, event.reason, size)
            if self._informational_size > self._max_header_bytes:
                raise too_large(INTERIM, self._max_header_bytes, self._host)
            return Informational(event.status_code, headers)
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        # h11.ConnectionClosed: the server closed before sending a response head.
        raise RemoteProtocolError("server closed the connection before a response", host=self._host)

    def _response_head(self, event: h11.Response) -> ResponseHead:
        headers, content_length, size = self._checked_headers(event.headers)
        noted, self._head_key = self._head_key, None
        head = self._head(event, headers)
        if (
            content_length > 0
            and self._h11.our_state in _REQUEST_SENT
            and self._method != "HEAD"
            and event.status_code not in _NO_BODY_STATUS
        ):
            self._read_body_directly(content_length, noted, head, size)
        else:
            self._release_held()
        return head

    @staticmethod
    def _head(event: h11.Response | h11.InformationalResponse, headers: list[str]) -> ResponseHead:
        return ResponseHead(
            event.status_code,
            event.reason.decode("latin-1"),
            "HTTP/" + event.http_version.decode("ascii"),
            headers,
        )

    @property
    def switched(self) -> bool:
        """The server switched protocols: what follows the head is not HTTP."""
        return self._unsent is None and self._h11.their_state is h11.SWITCHED_PROTOCOL

    def switched_data(self) -> bytes:
        """Once ``switched``: the bytes received after the head (the new protocol's first)."""
        return bytes(self._h11.trailing_data[0])

    @property
    def has_buffered_data(self) -> bool:
        """Bytes from the server not yet part of any response (unsolicited)."""
        return bool(self._h11.trailing_data[0])  # (none while a request is unsent: not fed)

    def _checked_headers(self, raw: Any, what: str = "") -> tuple[list[str], int, int]:
        """The head's fields decoded (flat), the body's Content-Length (-1: none, or chunked),
        and their size as h11 counts it."""
        flat: list[bytes] = []
        content_length = -1
        chunked = False
        for name, value in raw.raw_items():
            flat += (name, value)
            if len(name) == 14:
                if name.lower() == b"content-length":
                    content_length = int(value)  # h11 checked it, and merged repeats
            elif len(name) == 17 and name.lower() == b"transfer-encoding":
                chunked = True
        size = sum(map(len, flat)) + 2 * len(flat)  # 4 a field, as h11 counts
        headers = decode_fields(flat)
        # h11 bounds a head still arriving; one that arrived whole is measured here, with the
        # 1xx heads before it.
        if size + self._informational_size > self._max_header_bytes:
            if not what:
                what = HEAD_AFTER_INTERIM if self._informational_size else "response head"
            raise too_large(what, self._max_header_bytes, self._host)
        if chunked and content_length >= 0:
            # h11 lets Transfer-Encoding win; RFC 9112 (6.3) says this ought to be an error,
            # and llhttp (the other backend) makes it one.
            raise RemoteProtocolError(
                "Content-Length and Transfer-Encoding in one response", host=self._host
            )
        return headers, -1 if chunked else content_length, size

    def _read_body_directly(
        self,
        length: int,
        noted: tuple[tuple[str, Any, bytes], int] | None = None,
        head: ResponseHead | None = None,
        size: int = 0,
    ) -> None:
        # h11 has decided on keep-alive by now: our side is DONE, or MUST_CLOSE if either side
        # said close. What it already holds is the body's beginning; the fresh h11 gets what
        # follows the body.
        self._direct_keep_alive = self._h11.our_state is h11.DONE
        buffered, _ = self._h11.trailing_data
        # Kept when h11 read the noted head and nothing else: it left what followed it.
        if noted is not None and head is not None and len(buffered) == noted[1]:
            key = noted[0]
            if len(_KNOWN_HEADS) >= _CHECKED_MAX:
                _KNOWN_HEADS.clear()
            _KNOWN_HEADS[key] = _KnownHead(
                head.status_code,
                head.reason_phrase,
                head.http_version,
                list(head.headers),
                length,
                size,
                self._direct_keep_alive,
            )
        held, self._held = self._held, None
        self._h11 = self._new_h11()
        self._h11_fed = False
        self._body_left = self._body_length = length
        if buffered:
            self.feed(buffered)
        if held is not None:
            self.feed(held[self._held_from :])

    def _next_direct_event(self) -> Event:
        if self._body_ready:
            return self._body_ready.pop(0)
        if self._body_left:
            return NEED_DATA
        self._body_left = None
        self._direct_done = True
        return END_OF_MESSAGE

    def start_next_cycle(self) -> bool:
        """After a complete exchange: make the connection ready for another request. False when
        either side asked to close (``Connection: close``, HTTP/1.0, read-until-close)."""
        if self._unsent is not None:
            self._send_unsent()
        if self._direct_done:
            self._direct_done = False
            return self._direct_keep_alive  # the fresh h11 is idle already
        if self._peer_closed:
            return False
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._h11_fed = self.has_buffered_data
            self._head_key = None
            return True
        return False


# -- the httptools (llhttp) backend -------------------------------------------------------------


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp at the end of a body-less head."""


# h11's reason-phrase (its _abnf): spaces, tabs and any byte but NUL and other whitespace.
_NOT_IN_REASON = re.compile(r"[\x00\n\v\f\r]")
_NOTED_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# Bytes llhttp may take without a callback before it is fed at line ends or in batches.
_HOLD_AFTER = 16384
_BODY_FRAMING = ("content-length", "transfer-encoding")


class HttptoolsProtocol:
    """The same interface on httptools' llhttp parser, several times faster than h11.

    llhttp parses; framing it cannot know is done here: a HEAD, 204 or 304 response ends with
    its head (the parser is stopped there and replaced), and a body without a length ends at
    EOF. Requests are written here too, with h11's checks on the body's declared framing.

    h11 is the reference, and the two disagree at the edges of the grammar. Where llhttp takes
    what h11 refuses (a status under 100, a Transfer-Encoding other than one ``chunked``, a
    blank line before the status line), the checks below refuse it too. Where llhttp refuses
    a head h11 takes (a bare LF for CRLF, obs-fold, a repeated identical Content-Length,
    control characters in a value, HTTP/1.2), the head's bytes are kept until it is complete
    and replayed into the h11 backend, which parses this connection from then on: rare, and
    then exactly the reference's behaviour. Differences are left where llhttp is stricter or
    more lenient inside a body, past the point where h11 could take over; none frames a body
    otherwise. A blank line right after a body, in the same read, is skipped by llhttp, which
    does not say where it stopped (h11 calls it unsolicited and does not reuse the connection;
    the response is the same). Trailer fields (given to nobody) that h11 takes and llhttp
    refuses (obs-fold, a bare LF, a control character, a Content-Length) end the body with a
    RemoteProtocolError, as do chunk extensions written with spaces around ``;`` or ``=``, or
    empty (``5;``; RFC 9112 allows the spaces). Number lengths: h11 refuses a Content-Length
    or chunk size of over 20 digits that llhttp reads (``0000…05``), and reads a chunk size
    over 64 bits that llhttp refuses (a body nobody could send).

    Bounds (h11 has them by design): the trailer section is held to ``max_header_bytes`` (its
    fields are counted, not kept, and a run of bytes llhttp takes without a callback, such as
    one endless field, is counted as it arrives). httptools joins the pieces of a field that
    is still arriving as bytes on every feed: once llhttp has taken ``_HOLD_AFTER`` bytes
    without finishing anything, it is fed at line ends or in ``_HOLD_AFTER`` batches only, so
    a field dripping in costs linear work, not quadratic.

    Known heads, as on the h11 backend: a response whose head (up to its CRLF CRLF, with a
    Content-Length body) begins its cycle's first read, and was read that way before for the
    same method, is taken as it was then; its body is counted here and llhttp, never fed, is
    ready for the next cycle (``_known_head``).
    """

    __slots__ = (
        "_body_left",
        "_chunked",
        "_connection_close",
        "_delegate",
        "_direct_left",
        "_error",
        "_events",
        "_framed",
        "_head_bytes",
        "_head_done",
        "_head_key",
        "_head_pieces",
        "_header_bytes",
        "_headers",
        "_held_back",
        "_host",
        "_informational",
        "_informational_size",
        "_informationals",
        "_keep_alive",
        "_last_request",
        "_max_header_bytes",
        "_message_done",
        "_method",
        "_parser",
        "_progress",
        "_reason",
        "_request_close",
        "_request_fields",
        "_sending_body",
        "_stalled",
        "_started",
        "_switched",
        "_switched_data",
        "_target",
        "_transfer_encodings",
        "_unsolicited",
        "_until_eof",
        "_upgrade_asked",
    )

    def __init__(self, host: str, *, max_header_bytes: int) -> None:
        self._host = host
        self._max_header_bytes = max_header_bytes
        self._parser = self._new_parser()
        self._events: collections.deque[Event] = collections.deque()
        self._method = "GET"
        self._target = "/"  # the request's, with its fields, for a delegate (below)
        self._request_fields: list[tuple[str, str]] = []
        self._request_close = False
        self._upgrade_asked = False  # the request had an Upgrade field (h11's switch proposal)
        self._sending_body = False
        self._body_left: int | None = None  # bytes still owed under Content-Length
        self._chunked = False
        self._unsolicited = False  # bytes came after a complete response
        # The h11 backend, once llhttp refused a head that h11 takes: it parses from then on.
        self._delegate: HTTP11Protocol | None = None
        # An error in bytes already fed: next_event raises it once the events before it are out.
        self._error: HTTPError | None = None
        self._head_pieces: list[bytes] = []  # this cycle's bytes until its head is complete
        self._transfer_encodings: list[bytes] = []  # of the head being parsed
        # The head being parsed, flat (name, value, ...), undecoded (see ``decode_fields``).
        self._headers: list[bytes] = []
        self._reason: list[str] = []  # its reason phrase, in the pieces llhttp gave
        self._held_back = bytearray()  # bytes not fed to llhttp yet (see the class docstring)
        self._progress = False  # a callback other than on_status ran in the current feed
        self._switched = False  # the server switched protocols: HTTP is over (see ``_switch``)
        self._switched_data = b""
        # A known head's body (see ``_known_head``): bytes still owed, None while llhttp reads.
        self._direct_left: int | None = None
        self._head_key: tuple[tuple[str, bytes], int] | None = None  # the head to learn
        # The last request head made: its fields, method and target, bytes, and what the fields
        # said (body length, chunked, close, upgrade), for the same request again.
        self._last_request: (
            tuple[list[tuple[str, str]], str, str, bytes, int | None, bool, bool, bool] | None
        ) = None
        self._reset_message()

    def _new_parser(self) -> Any:
        import httptools

        parser = httptools.HttpResponseParser(self)
        parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)  # as h11
        return parser

    def _reset_message(self) -> None:
        self._direct_left = self._head_key = None
        self._reason.clear()
        self._held_back.clear()
        self._stalled = 0  # bytes received since llhttp last finished something (a bound)
        self._head_bytes = 0  # bytes fed while the head was incomplete
        self._head_pieces.clear()
        # Size of the parsed header fields, as h11 counts them: of the head, then of the
        # trailers.
        self._header_bytes = 0
        self._framed = False  # Content-Length or Transfer-Encoding seen
        self._connection_close = False  # a Connection field with the token close
        self._head_done = False
        self._message_done = False
        self._started = False
        self._informational = False
        self._informationals = 0  # 1xx heads of this cycle so far
        self._informational_size = 0  # their size (see ``head_size``)
        self._until_eof = False
        self._keep_alive = True

    # -- writing ----------------------------------------------------------------------------

    def request_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        self._method = method
        self._target, self._request_fields = target, headers
        last = self._last_request
        # The transport shares one list of fields among the bodiless requests alike (and never
        # changes it): the same list, method and target make the same head as last time.
        if last is not None and last[0] is headers and last[1] == method and last[2] == target:
            _, _, _, head, body_left, chunked, close, upgrade = last
            self._body_left, self._chunked = body_left, chunked
            self._request_close, self._upgrade_asked = close, upgrade
        else:
            head = self._new_request_head(method, target, headers)
            self._last_request = (
                headers,
                method,
                target,
                head,
                self._body_left,
                self._chunked,
                self._request_close,
                self._upgrade_asked,
            )
        self._sending_body = True
        if self._delegate is not None:
            self._prime_delegate(self._delegate)
        return head

    def _new_request_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        self._request_close = self._upgrade_asked = False
        self._body_left, self._chunked = None, False
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                self._body_left = self._checked_length(value)
            elif lower == "transfer-encoding":
                # As h11: one Transfer-Encoding field, and chunked the only coding.
                if self._chunked or value.strip().lower() != "chunked":
                    message = "Only one Transfer-Encoding: chunked is supported"
                    raise LocalProtocolError(message, host=self._host)
                self._chunked = True
            elif lower == "connection" and "close" in value.lower():
                self._request_close = True
            elif lower == "upgrade":
                self._upgrade_asked = True
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        try:
            return "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:  # the Transport refuses it before (check_wire_fields)
            raise LocalProtocolError(f"not Latin-1: {exc.object!r}", host=self._host) from None

    def _checked_length(self, value: str) -> int:
        """A request's Content-Length as h11 takes it: digits, repeated (in a list or in
        fields) only with the same value."""
        lengths = {length.strip() for length in value.split(",")}
        length = lengths.pop() if len(lengths) == 1 else ""
        if not (length.isascii() and length.isdigit()):
            raise LocalProtocolError("bad Content-Length", host=self._host)
        if self._body_left is not None and self._body_left != int(length):
            raise LocalProtocolError("conflicting Content-Length headers", host=self._host)
        return int(length)

    def _prime_delegate(self, delegate: HTTP11Protocol) -> None:
        """Put the request into the delegate's h11, so that it expects the response. The body
        is written here, never by the delegate: it gets the head without body framing."""
        fields = [f for f in self._request_fields if f[0].lower() not in _BODY_FRAMING]
        delegate.request_head(self._method, self._target, fields)
        delegate.end_of_body()

    def body_chunk(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""  # an empty chunk would read as the end of a chunked body
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk)
        if self._body_left is None or len(chunk) > self._body_left:
            raise LocalProtocolError(
                "Too much data for declared Content-Length", host=self._host, phase="write"
            )
        self._body_left -= len(chunk)
        return chunk

    def end_of_body(self) -> bytes:
        self._sending_body = False
        if self._chunked:
            return b"0\r\n\r\n"
        if self._body_left:
            raise LocalProtocolError(
                "Too little data for declared Content-Length", host=self._host, phase="write"
            )
        return b""

    @property
    def request_complete(self) -> bool:
        return not self._sending_body

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._progress = True
        if self._message_done:  # bytes after a complete response: unsolicited
            self._unsolicited = True
            raise _StopParsing
        self._started = True

    def on_status(self, status: bytes) -> None:
        self._reason.append(status.decode("latin-1"))  # joined once: a reason may drip in

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        self._header_bytes += len(name) + len(value) + 4
        value = value.rstrip(b" \t")  # llhttp strips the leading whitespace only, h11 both
        lower = name.lower()
        if lower in _NOTED_FIELDS:
            value = self._note_field(lower, value)
        if self._head_done:  # a trailer field: given to nobody (nor by h11), so not kept
            if self._header_bytes > self._max_header_bytes:
                raise too_large("trailer section", self._max_header_bytes, self._host)
            return
        self._headers += (name, value)

    def _note_field(self, lower_name: bytes, value: bytes) -> bytes:
        """What framing and keep-alive need of a Content-Length, Transfer-Encoding or
        Connection field; returns the value as h11 gives it."""
        if lower_name == b"connection":
            tokens = value.lower()
            if b"close" in tokens and b"close" in [t.strip() for t in tokens.split(b",")]:
                self._connection_close = True
            return value
        self._framed = True
        if lower_name == b"transfer-encoding":
            value = value.lower()
            self._transfer_encodings.append(value)
        return value

    def on_headers_complete(self) -> None:
        self._progress = True
        parser = self._parser
        status = parser.get_status_code()
        limit = self._max_header_bytes
        if self._header_bytes + self._informational_size > limit:
            if 100 <= status < 200 and status != 101:
                what = INTERIM
            else:
                what = HEAD_AFTER_INTERIM if self._informational_size else "response head"
            raise too_large(what, limit, self._host)
        headers = decode_fields(self._headers)
        if status < 100 or self._transfer_encodings:
            self._check_as_h11(status)
        if _NOT_IN_REASON.search("".join(self._reason)):  # llhttp takes NUL, VT and FF there
            raise RemoteProtocolError("illegal reason phrase", host=self._host)
        if status == 101 or (self._method == "CONNECT" and 200 <= status < 300):
            self._switch(status, headers)
        if 100 <= status < 200:
            version, reason = parser.get_http_version(), "".join(self._reason)
            self._informational_size += head_size(version, reason, self._header_bytes)
            if self._informational_size > limit:
                raise too_large(INTERIM, limit, self._host)
            self._events.append(Informational(status, headers))
            self._headers = []
            self._reason.clear()
            self._header_bytes, self._framed = 0, False
            self._connection_close = False
            self._informational = True
            self._informationals += 1
            return
        self._head_done = True
        version = "HTTP/" + parser.get_http_version()
        # h11's rule (llhttp's would also refuse a HEAD response without a length, which it
        # takes to end at EOF): alive from HTTP/1.1 on, unless a Connection field says close.
        # A body that does end at EOF is seen to in start_next_cycle.
        self._keep_alive = version >= "HTTP/1.1" and not self._connection_close
        reason = "".join(self._reason)
        self._events.append(ResponseHead(status, reason, version, headers))
        self._headers = []
        size, self._header_bytes = self._header_bytes, 0  # from now on, of the trailer fields
        if self._method == "HEAD" or status in _NO_BODY_STATUS:
            # The response ends with its head: anything after it in this read was never asked
            # for (llhttp would skip a blank line there).
            self._complete()
            self._unsolicited = self._head_bytes > self._end_of_heads(self._informationals + 1)
            if self._method == "HEAD":
                raise _StopParsing  # llhttp would wait for a body a HEAD response never has
            return
        self._until_eof = not self._framed
        if self._head_key is not None and self._framed:
            self._learn_head(ResponseHead(status, reason, version, headers), size)

    def _switch(self, status: int, headers: list[str]) -> NoReturn:
        """A 101 to an Upgrade request or a 2xx to CONNECT: HTTP ends with this head. llhttp is
        stopped here, whatever it makes of the rest (a CONNECT answer's bytes for a body)."""
        if status == 101 and not self._upgrade_asked:
            raise RemoteProtocolError(_UNASKED_101, host=self._host)
        version = "HTTP/" + self._parser.get_http_version()
        self._events.append(ResponseHead(status, "".join(self._reason), version, headers))
        self._headers = []
        self._head_done = self._message_done = self._switched = True
        self._keep_alive = False
        # Every byte of this cycle was fed (a head cannot complete in held-back bytes).
        end = self._end_of_heads(self._informationals + 1)
        self._switched_data = b"".join(self._head_pieces)[end:]
        raise _StopParsing

    @property
    def switched(self) -> bool:
        """The server switched protocols: what follows the head is not HTTP."""
        if self._delegate is not None:
            return self._delegate.switched
        return self._switched

    def switched_data(self) -> bytes:
        """Once ``switched``: the bytes received after the head (the new protocol's first)."""
        if self._delegate is not None:
            return self._delegate.switched_data()
        return self._switched_data

    def _check_as_h11(self, status: int) -> None:
        """Refuse what llhttp takes and h11 does not."""
        if status < 100:
            raise RemoteProtocolError(f"invalid status code {status}", host=self._host)
        encodings = self._transfer_encodings[:]
        self._transfer_encodings.clear()
        if len(encodings) > 1:
            raise RemoteProtocolError("multiple Transfer-Encoding headers", host=self._host)
        if encodings and encodings[0] != b"chunked":
            raise RemoteProtocolError(
                "Only Transfer-Encoding: chunked is supported", host=self._host
            )

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._events.append(bytes(body))

    def on_chunk_header(self) -> None:
        self._progress = True

    def on_chunk_complete(self) -> None:
        self._progress = True

    def on_message_complete(self) -> None:
        self._progress = True
        if self._informational:  # a 1xx ends here; the response proper follows
            self._informational = False
        elif not self._message_done:
            if self._transfer_encodings:  # in the trailers, which h11 checks as a head
                self._check_as_h11(200)
            self._complete()

    def _complete(self) -> None:
        self._message_done = True
        self._events.append(END_OF_MESSAGE)

    # -- reading ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        # As with h11, an error comes out of next_event after the events before it: a head
        # and a body's beginning are the caller's even when the bytes after them are wrong.
        if self._error is not None:
            return
        try:
            if self._delegate is not None:
                self._delegate.feed(data)
                self._drain_delegate(0)
                return
            if not data:
                if self._held_back:  # the server is done: llhttp gets what is left
                    self._feed_parser(bytes(self._held_back))
                self._on_eof()
                return
            if self._message_done:  # llhttp would skip a blank line here; h11 does not
                self._unsolicited = True
                return
            if self._direct_left is not None:
                self._direct_body(data)
                return
            if not self._head_done:
                if not self._head_bytes and self._known_head(data):
                    return
                if not self._head_bytes and data[0] in b"\r\n":
                    # llhttp skips blank lines before a status line; h11 does not.
                    raise RemoteProtocolError("no response line received", host=self._host)
                self._head_bytes += len(data)
                self._head_pieces.append(data)
            self._stalled += len(data)
            held = self._held_back
            if self._stalled > _HOLD_AFTER:
                # A field (or line) that long is still arriving: see the class docstring.
                held += data
                if len(held) < _HOLD_AFTER and b"\n" not in data:
                    self._check_limits()
                    return
                data = bytes(held)
                held.clear()
            self._feed_parser(data)
            self._check_limits()
        except HTTPError as exc:
            self._error = exc

    def _known_head(self, data: bytes) -> bool:
        """For the first bytes of a response: when they begin with a head llhttp has read
        before for the same method, with a Content-Length body, take it as it was taken (its
        event, its keep-alive) and count the body here; llhttp, never fed, is ready for the
        next cycle. Else note the head, for ``on_headers_complete`` to keep."""
        if self._sending_body or not data.startswith(b"HTTP/"):
            return False
        end = data.find(b"\r\n\r\n", 0, _CHECKED_HEAD_MAX) + 4
        if end < 4:
            return False
        key = (self._method, data if end == len(data) else data[:end])
        known = _KNOWN_LLHTTP_HEADS.get(key)
        if known is None or known.size > self._max_header_bytes:
            self._head_key = (key, end)
            return False
        self._started = self._head_done = True
        self._keep_alive = known.keep_alive
        self._events.append(
            ResponseHead(
                known.status_code, known.reason_phrase, known.http_version, list(known.headers)
            )
        )
        self._direct_left = known.content_length
        if end < len(data):
            self._direct_body(data[end:])
        return True

    def _direct_body(self, data: bytes) -> None:
        left = self._direct_left
        assert left is not None
        if len(data) < left:
            self._events.append(data)
            self._direct_left = left - len(data)
            return
        self._events.append(data if len(data) == left else data[:left])
        self._direct_left = None
        self._complete()
        if len(data) > left:
            self._unsolicited = True  # as llhttp's path: bytes after a complete response

    def _learn_head(self, head: ResponseHead, size: int) -> None:
        """Keep a final head with a Content-Length body that was the first bytes of its cycle
        (see ``_known_head``); ``size`` is its fields' as h11 counts them."""
        noted, self._head_key = self._head_key, None
        if noted is None or self._informationals:
            return
        headers = head.headers
        names = [name.lower() for name in headers[::2]]
        if "transfer-encoding" in names or names.count("content-length") != 1:
            return
        length = headers[2 * names.index("content-length") + 1]
        key, end = noted
        if not (length.isascii() and length.isdigit() and int(length) > 0):
            return
        if self._end_of_heads(1) != end:
            return
        if len(_KNOWN_LLHTTP_HEADS) >= _CHECKED_MAX:
            _KNOWN_LLHTTP_HEADS.clear()
        _KNOWN_LLHTTP_HEADS[key] = _KnownHead(
            head.status_code,
            head.reason_phrase,
            head.http_version,
            list(headers),
            int(length),
            size,
            self._keep_alive,
        )

    def _feed_parser(self, data: bytes) -> None:
        self._progress = False
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # llhttp's own, or one raised from a callback
            self._parser_stopped(exc, data)
        if self._progress:
            # Bytes after the last callback are not counted: the bounds are loose by a read.
            self._stalled = 0

    def _check_limits(self) -> None:
        if self._message_done:
            return
        if not self._head_done:
            # As h11: a head still arriving is held to the limit alone. The 1xx heads before it
            # are counted as parsed (at most the limit, or they failed): nothing is rescanned,
            # and the bytes kept for this cycle stay under twice the limit and a read.
            if self._head_bytes - self._informational_size > self._max_header_bytes:
                raise too_large("response head", self._max_header_bytes, self._host)
        elif self._stalled > self._max_header_bytes:
            # Only chunked framing takes bytes without a callback: a chunk header (its
            # extensions) or a trailer field, as long as h11 would hold it.
            raise too_large(
                "a chunk header or the trailer section", self._max_header_bytes, self._host
            )

    def _parser_stopped(self, exc: Exception, data: bytes) -> None:
        import httptools

        if isinstance(exc, httptools.HttpParserCallbackError):
            cause = exc.__context__
            if isinstance(cause, HTTPError):
                raise cause from None
            if not isinstance(cause, _StopParsing):  # pragma: no cover - a bug in a callback
                raise exc
            # Stopped after a HEAD response's head, at bytes after a complete response, or at
            # a switch of protocols: the next response (if any) needs a fresh parser.
            self._parser = self._new_parser()
        elif isinstance(exc, httptools.HttpParserUpgrade):  # pragma: no cover
            # A 101 stops llhttp at its head (``_switch``), before llhttp's own upgrade exit.
            raise RemoteProtocolError("unexpected protocol upgrade", host=self._host) from None
        elif not isinstance(exc, httptools.HttpParserError):  # pragma: no cover - a bug
            raise exc
        elif self._message_done:
            # llhttp refuses any byte after a `Connection: close` response; as h11, the
            # response stands and the bytes are unsolicited.
            self._unsolicited = True
            self._parser = self._new_parser()
        elif not self._head_done:
            self._delegate_to_h11()  # h11 may take it; if not, its error is the answer
        else:
            raise RemoteProtocolError(f"invalid response: {exc}", host=self._host) from None

    def _end_of_heads(self, count: int) -> int:
        """Where the first ``count`` heads of this cycle end in its bytes (llhttp does not say
        where a head ended when it was stopped from a callback). Once per body-less response:
        the bytes are bounded (see ``_check_limits``)."""
        data, end = b"".join(self._head_pieces), 0
        for _ in range(count):  # each head ends with an empty line
            end = data.find(b"\r\n\r\n", end) + 4
        return end

    def _delegate_to_h11(self) -> None:
        """Parse this connection with the h11 backend from now on, starting with the bytes of
        this cycle. 1xx heads llhttp already gave out are not given again."""
        delegate = self._delegate = HTTP11Protocol(
            self._host, max_header_bytes=self._max_header_bytes
        )
        self._prime_delegate(delegate)
        for piece in self._head_pieces:
            delegate.feed(piece)
        self._drain_delegate(self._informationals)

    def _drain_delegate(self, skip_informational: int) -> None:
        """Move the delegate's events into ours (its error, raised, waits behind them)."""
        assert self._delegate is not None
        while True:
            event = self._delegate.next_event()
            if event is NEED_DATA:
                return
            if event is PAUSED:
                self._message_done = True
                return
            if type(event) is Informational and skip_informational:
                skip_informational -= 1
                continue
            if event is END_OF_MESSAGE:
                self._message_done = True
            self._events.append(event)

    def _on_eof(self) -> None:
        if self._message_done:
            return
        if self._until_eof:
            self._keep_alive = False
            self._complete()
        elif not self._started:
            raise RemoteProtocolError(
                "server closed the connection before a response", host=self._host
            )
        else:
            raise RemoteProtocolError(
                "peer closed connection without sending complete message body", host=self._host
            )

    def next_event(self) -> Event:
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise self._error
        return PAUSED if self._message_done else NEED_DATA

    @property
    def has_buffered_data(self) -> bool:
        if self._delegate is not None:
            return self._delegate.has_buffered_data or bool(self._events)
        return self._unsolicited or bool(self._events)

    def start_next_cycle(self) -> bool:
        reusable = (
            self._message_done
            and (self._delegate.start_next_cycle() if self._delegate else self._keep_alive)
            and not self._until_eof
            and not self._request_close
            and not self._sending_body
        )
        self._reset_message()
        return reusable


HTTP1Protocol = HTTP11Protocol | HttptoolsProtocol


def make_protocol(parser: str, host: str, *, max_header_bytes: int) -> HTTP1Protocol:
    if parser == "httptools":
        return HttptoolsProtocol(host, max_header_bytes=max_header_bytes)
    return HTTP11Protocol(host, max_header_bytes=max_header_bytes)
