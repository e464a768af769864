"""HTTP/2 client protocol: the ``h2`` state machine as the pool configures it. No I/O.

Four departures from h2's defaults, each for a reason a client pool has:

* **GOAWAY is survivable.** h2 treats a received GOAWAY as the end of the connection and
  refuses every later frame, even those of the streams the GOAWAY lets finish (nginx sends
  GOAWAY and their last frames in one write). Here receiving GOAWAY leaves the connection
  open; the pool opens no new stream on it.
* **Header blocks are not run through h2's checks.** h2 validates and normalises every field
  in and out through a chain of generators, a third of a small request's cost. The connection
  builds outgoing fields valid from an already validated ``Request`` and checks incoming heads
  itself (``HTTP2Connection._head_fields``). A request's HEADERS go through
  ``ClientConnection.send_request_headers``, which skips what h2 still does with its checks
  off (the generator chain, frame objects, logging): a tenth of an HTTP/2 request's CPU time.
* **HPACK decoding remembers.** Servers send the same response head again and again, and
  nginx, for one, sends every field as a literal *with incremental indexing*, so each head
  changes the dynamic table and cannot be looked up by its bytes alone. But a block that reads
  nothing from the dynamic table decodes to the same fields whatever the table holds, and
  changes the table by the same additions. ``ReplayingDecoder`` keeps, per block, its fields
  and those additions, and on a repeat replays the additions instead of decoding again (the
  pure-Python Huffman decoder was a sixth of a small request's cost).
* **HPACK encoding remembers too.** A request head sent again, once its fields are in the
  dynamic table, encodes to the same bytes as long as the table has not changed:
  ``ReplayingEncoder`` keeps such blocks by (table version, fields) and replays them (hpack's
  encoder was a seventh of an HTTP/2 request's CPU time at c=100).
* **Response frames are parsed for less.** ``FastFrameBuffer`` makes the DATA and HEADERS
  frames servers send (no padding, no priority, a whole header block) without hyperframe's
  generic constructors, and ``ClientConnection._receive_frame`` is h2's without the
  ``repr(frame)`` it builds for a log that is off; together a sixth of an HTTP/2 request's
  CPU time. Other frames take h2's way, errors included.
* **A head over our limit fails its stream, not the connection.** h2 has hpack refuse a header
  block over SETTINGS_MAX_HEADER_LIST_SIZE mid-decode, a connection error (HPACK's state is
  lost with the rest of the block). Here hpack decodes up to a hard bound well above the
  limit we advertise (``header_list_hard_limit``), which bounds the memory one block takes,
  and ``HTTP2Connection`` fails a stream whose head is over the limit itself; only a block
  over the hard bound still ends the connection.
* **Floods are counted.** Frames that move no response forward (PING, SETTINGS,
  WINDOW_UPDATE, PRIORITY, RST_STREAM, GOAWAY, ALTSVC, unknown types, HEADERS on streams we
  reset, empty DATA: counted by ``HTTP2Connection`` on open streams) count in
  ``idle_frames``, which the connection zeroes on progress (a response head, body bytes, an
  end, a body byte we send); past ``MAX_IDLE_FRAMES`` in a row, or past ``MAX_UNSENT_REPLIES``
  frames h2 queued in reply (PING and SETTINGS ACKs, RST_STREAMs) that the writer could not
  hand to the socket yet, ``FloodDetected`` ends the connection with
  GOAWAY(ENHANCE_YOUR_CALM), as nghttp2's flood checks do. Only those control frames' handlers
  are wrapped: DATA and HEADERS, the hot path, go straight to h2.
* **Open streams are counted lazily.** Before each new stream h2 counts the open ones by
  walking every stream it still holds, and only that walk forgets closed streams: at c=100 a
  sixteenth of an HTTP/2 request. ``ClientConnection`` walks only when the streams it holds
  could reach the server's limit, or twice the open ones at the last walk: the limit is still
  enforced exactly, closed streams are still forgotten, and the walk costs O(1) per stream
  amortised.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import h2.stream
from h2.connection import (
    AllowedStreamIDs,
    ConnectionInputs,
    ConnectionState,
    H2ConnectionStateMachine,
)
from h2.settings import ChangedSetting
from h2.stream import StreamInputs, StreamState
from h2.utilities import is_informational_response
from hpack import Decoder, Encoder, HeaderTuple
from hpack.table import HeaderTable
from hyperframe import frame as hf
from hyperframe.flags import Flags

__all__ = [
    "MAX_IDLE_FRAMES",
    "MAX_UNSENT_REPLIES",
    "ClientConnection",
    "FloodDetected",
    "ReplayingDecoder",
    "ReplayingEncoder",
    "new_client_connection",
]

REPLAY_CACHE_SIZE = 64  # distinct header blocks remembered per connection...
# ...and what they may hold together (blocks and decoded fields, in bytes): a server sending
# 64 distinct heads of a megabyte each must not make every connection keep 64 MiB. A typical
# head is a few hundred bytes, so 64 of them fit many times over.
REPLAY_CACHE_BYTES = 256 << 10
# Control frames in a row that move no response forward (Envoy allows 1 empty frame in a row,
# nghttp2 1,000 queued ACKs): generous for servers that PING or update windows while a long
# response idles (a PING every 10 s for 2.7 hours), and a flood costs at most that many frames.
MAX_IDLE_FRAMES = 1000
_FRAME_HEADER = struct.Struct(">HBBBL")  # RFC 9113 4.1: 24-bit length, type, flags, stream id
_HEADERS, _CONTINUATION = 0x1, 0x9
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20
# Frames h2 queued in reply (PING and SETTINGS ACKs, RST_STREAMs) that the writer has not
# handed to the socket: nghttp2's max_outbound_ack. Only a server that does not read what we
# send lets them pile up.
MAX_UNSENT_REPLIES = 1000


class FloodDetected(h2.exceptions.ProtocolError):
    """The server sent too many frames without progress, or does not read our replies to
    them: h2 answers it with GOAWAY(ENHANCE_YOUR_CALM)."""

    error_code = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(f"{kind}: over {limit}")
        self.kind = kind
        self.limit = limit


def header_list_hard_limit(limit: int) -> int:
    """The decoded size of a header block past which hpack gives up (a connection error):
    generous over our advertised ``limit``, so that a server that ignores it fails only
    its stream, and still a bound on what one block can make us hold."""
    return 4 * limit + (64 << 10)


class GoawayTolerantStateMachine(H2ConnectionStateMachine):
    """h2's connection state machine, where receiving GOAWAY keeps the connection open."""

    _transitions = {  # noqa: RUF012 - replaces h2's table, read-only
        **H2ConnectionStateMachine._transitions,
        (ConnectionState.CLIENT_OPEN, ConnectionInputs.RECV_GOAWAY): (
            None,
            ConnectionState.CLIENT_OPEN,
        ),
    }


class _RecordingTable(HeaderTable):
    """A dynamic table that notes what a decode read from and added to it."""

    def __init__(self) -> None:
        super().__init__()
        self.read_dynamic = False
        self.added: list[tuple[bytes, bytes]] = []

    def get_by_index(self, index: int) -> tuple[bytes, bytes]:
        if index > HeaderTable.STATIC_TABLE_LENGTH:
            self.read_dynamic = True
        return super().get_by_index(index)

    def add(self, name: bytes, value: bytes) -> None:
        self.added.append((name, value))
        super().add(name, value)


class ReplayingDecoder(Decoder):
    """An HPACK decoder that decodes a header block it has seen before by replaying it (see
    the module docstring). Its results are those of ``hpack.Decoder``, errors included:
    only blocks that decoded cleanly are kept."""

    def __init__(self) -> None:
        super().__init__()
        self._table = self.header_table = _RecordingTable()
        self._replays: dict[
            tuple[bytes, bool, int], tuple[list[HeaderTuple], list[tuple[bytes, bytes]]]
        ] = {}
        self._replay_bytes = 0  # what the cache holds, as counted in decode()

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        table = self._table
        key = (bytes(data), raw, self.max_header_list_size)
        replay = self._replays.get(key)
        if replay is not None:
            headers, additions = replay
            for name, value in additions:
                HeaderTable.add(table, name, value)
            return list(headers)
        table.read_dynamic, table.added = False, []
        maxsize = table.maxsize
        headers = list(super().decode(data, raw))
        if not table.read_dynamic and table.maxsize == maxsize:  # no size update either
            # Bytes held: the block (the key) and its fields, twice at most (decoded, added).
            cost = len(key[0]) + 2 * sum(len(name) + len(value) for name, value in headers)
            if cost <= REPLAY_CACHE_BYTES // 8:  # a huge head is rare: not worth keeping
                if (
                    len(self._replays) >= REPLAY_CACHE_SIZE
                    or self._replay_bytes + cost > REPLAY_CACHE_BYTES
                ):
                    self._replays.clear()
                    self._replay_bytes = 0
                self._replays[key] = (list(headers), table.added)
                self._replay_bytes += cost
        table.added = []
        return headers


class _VersionedTable(HeaderTable):
    """A dynamic table that counts its changes (additions, evictions by a new size)."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class ReplayingEncoder(Encoder):
    """An HPACK encoder that encodes a header list again as it did last time, when that
    encoding changed nothing in the dynamic table and the table has not changed since: the
    same fields against the same table make the same bytes. A client sending the same head
    again (after its first time, which indexes its fields) encodes it by one lookup; any
    other head costs a lookup more than ``hpack.Encoder``. Bounded as ``ReplayingDecoder``."""

    def __init__(self) -> None:
        super().__init__()
        self._table = self.header_table = _VersionedTable()
        self._replays: dict[tuple[int, tuple[Any, ...]], bytes] = {}
        self._replay_bytes = 0

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self._table
        if table.resized or not huffman or type(headers) is not list:
            return super().encode(headers, huffman)
        # A never-indexed field must not share a key with the same field indexable.
        fields = tuple([h if type(h) is tuple else (h[0], h[1], h.indexable) for h in headers])
        version = table.version
        key = (version, fields)
        block = self._replays.get(key)
        if block is not None:
            return block
        block = super().encode(headers, huffman)
        if table.version == version:  # encoding changed nothing: it will go the same way
            cost = len(block) + sum(len(field[0]) + len(field[1]) for field in fields)
            if cost <= REPLAY_CACHE_BYTES // 8:
                if (
                    len(self._replays) >= REPLAY_CACHE_SIZE
                    or self._replay_bytes + cost > REPLAY_CACHE_BYTES
                ):
                    self._replays.clear()
                    self._replay_bytes = 0
                self._replays[key] = block
                self._replay_bytes += cost
        return block


# The flags hyperframe knows on DATA and HEADERS frames (only read, as hyperframe reads them).
_VALID_FLAGS: dict[int, set[str]] = {
    kind: {flag.name for flag in cls.defined_flags}
    for kind, cls in ((0x0, hf.DataFrame), (0x1, hf.HeadersFrame))
}


class FastFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, which makes a DATA frame, or a HEADERS frame with a whole header
    block, without padding or priority (what servers send) more cheaply: the same frame as
    hyperframe makes (type, stream id, flags, data, lengths), set directly instead of through
    hyperframe's generic constructors and parsers (a tenth of an HTTP/2 request's CPU time).
    Every other frame, and every frame while a header block is incomplete, goes through h2's
    own parsing, errors and checks included."""

    def __next__(self) -> hf.Frame:
        data = self._data
        if len(data) < 9:
            return super().__next__()
        high, low, kind, flags, stream_id = _FRAME_HEADER.unpack_from(data)
        length = (high << 8) + low
        # Refused from its header, with h2's error: h2 buffers the whole frame first (16 MiB
        # a connection, where we allow max_frame_size).
        if length > self.max_frame_size:
            self._validate_frame_length(length)
        stream_id &= 0x7FFFFFFF
        if (
            self._headers_buffer
            or kind > _HEADERS
            or flags & (_PADDED | _PRIORITY)
            or not stream_id
            or (kind == _HEADERS and not flags & _END_HEADERS)
        ):
            return super().__next__()  # h2's way, and its errors
        if len(data) < length + 9:
            raise StopIteration
        frame: hf.DataFrame | hf.HeadersFrame
        if kind == _HEADERS:
            frame = hf.HeadersFrame.__new__(hf.HeadersFrame)
            frame.depends_on, frame.stream_weight, frame.exclusive = 0, 0, False
            names = {"END_HEADERS", "END_STREAM"} if flags & _END_STREAM else {"END_HEADERS"}
        else:
            frame = hf.DataFrame.__new__(hf.DataFrame)
            names = {"END_STREAM"} if flags & _END_STREAM else set()
        frame_flags = Flags.__new__(Flags)
        frame_flags._valid_flags = _VALID_FLAGS[kind]
        frame_flags._flags = names
        frame.stream_id = stream_id
        frame.flags = frame_flags
        frame.body_len = length
        frame.pad_length = 0
        frame.data = bytes(data[9 : 9 + length])
        del data[: 9 + length]
        return frame


class UncheckedLengthStream(h2.stream.H2Stream):
    """h2's stream without its Content-Length checks: h2 fails the whole connection when one
    response's DATA disagrees with its content-length, where RFC 9113 (8.1.1) makes it an
    error of that stream. ``HTTP2Connection`` checks response lengths itself.

    And a 1xx head on a stream we reset is what any HEADERS there is (RFC 9113, 5.1): h2's
    state machine knows no 1xx on a closed stream and ended the whole connection.

    A head is received as h2 receives it, without the steps the connection's configuration
    makes void (validation flags for checks that are off, an empty header pipeline)."""

    def receive_headers(
        self, headers: Iterable[Any], end_stream: bool, header_encoding: bool | str | None
    ) -> tuple[list[hf.Frame], list[Any]]:
        if self.state_machine.state is StreamState.CLOSED:
            self.state_machine.process_input(StreamInputs.RECV_HEADERS)  # StreamClosedError
        # h2's (4.x), less the steps this module's configuration makes void: validation flags
        # for checks that are off, a header pipeline with nothing to do, Content-Length.
        headers = list(headers)
        if is_informational_response(headers):
            if end_stream:
                raise h2.exceptions.ProtocolError(
                    "Cannot set END_STREAM on informational responses"
                )
            events = self.state_machine.process_input(StreamInputs.RECV_INFORMATIONAL_HEADERS)
        else:
            events = self.state_machine.process_input(StreamInputs.RECV_HEADERS)
        head: Any = events[0]  # the head's event: ResponseReceived, TrailersReceived, ...
        if end_stream:
            ended = self.state_machine.process_input(StreamInputs.RECV_END_STREAM)
            head.stream_ended = ended[0]
            events += ended
        if isinstance(head, h2.events.TrailersReceived) and not end_stream:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set")
        head.headers = headers
        return [], events

    def _initialize_content_length(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        pass

    def _track_content_length(self, length: int, end_stream: bool) -> None:
        pass


class ClientConnection(h2.connection.H2Connection):
    """h2's connection with the open-stream count of the module docstring:
    ``open_outbound_streams`` is exact after a walk, and between walks the number of streams
    held, an upper bound still under the server's limit (h2 only compares it with that limit)."""

    _walk_at = 16  # streams held (open or closed) that call for the next walk
    header_list_hard_limit = h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_frames = 0  # frames in a row without progress (zeroed by the connection)
        self.unsent_replies = 0  # reply frames queued, not yet handed to the socket
        self._pings_out = 0  # our PINGs not yet answered: their ACKs are no flood
        table = self._frame_dispatch_table
        for frame_type, kind in (
            (hf.PingFrame, "PING frames"),
            (hf.SettingsFrame, "SETTINGS frames"),
            (hf.WindowUpdateFrame, "WINDOW_UPDATE frames"),
            (hf.PriorityFrame, "PRIORITY frames"),
            (hf.RstStreamFrame, "RST_STREAM frames"),
            (hf.GoAwayFrame, "GOAWAY frames"),
            (hf.AltSvcFrame, "ALTSVC frames"),
            (hf.ExtensionFrame, "frames of unknown types"),
        ):
            table[frame_type] = self._counted(table[frame_type], kind)

    def _counted(
        self, handler: Callable[[Any], tuple[list[hf.Frame], list[Any]]], kind: str
    ) -> Callable[[Any], tuple[list[hf.Frame], list[Any]]]:
        def receive(frame: Any) -> tuple[list[hf.Frame], list[Any]]:
            if frame.type == hf.PingFrame.type and self._pings_out and "ACK" in frame.flags:
                self._pings_out -= 1  # the answer to ours
            else:
                self.no_progress(kind)
            frames, events = handler(frame)
            if frames:
                self.queued_replies(len(frames))
            return frames, events

        return receive

    def _receive_goaway_frame(self, frame: hf.GoAwayFrame) -> tuple[list[hf.Frame], list[Any]]:
        """h2's, but what was queued to send stays queued: h2 drops it, where the streams the
        GOAWAY accepts go on (``GoawayTolerantStateMachine``) and need their WINDOW_UPDATEs,
        RST_STREAMs and HEADERS sent (a download stalled for ever on a closed window)."""
        pending = self._data_to_send
        frames, events = super()._receive_goaway_frame(frame)
        pending += self._data_to_send
        self._data_to_send = pending
        return frames, events

    def no_progress(self, kind: str) -> None:
        """A frame that moved no response forward came in."""
        self.idle_frames += 1
        if self.idle_frames > MAX_IDLE_FRAMES:
            raise FloodDetected(f"{kind} without progress", MAX_IDLE_FRAMES)

    def queued_replies(self, count: int) -> None:
        self.unsent_replies += count
        if self.unsent_replies > MAX_UNSENT_REPLIES:
            raise FloodDetected(
                "replies (PING or SETTINGS ACKs, RST_STREAMs) the server does not read",
                MAX_UNSENT_REPLIES,
            )

    def ping(self, opaque_data: bytes | str) -> None:
        super().ping(opaque_data)
        self._pings_out += 1

    def send_request_headers(
        self, stream_id: int, fields: Sequence[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """``send_headers`` for a new stream of ours, as h2 does it with this module's
        configuration, without the work that configuration makes void: no normalisation or
        validation pass (not even the generator chain that would skip them), no frame objects
        (the frames are serialised here), no logging. Same state transitions, same order:
        the stream's state changes before HPACK's, which encoding changes for good."""
        if stream_id in self.streams:  # pragma: no cover - the caller opens new streams only
            self.send_headers(stream_id, fields, end_stream=end_stream)
            return
        max_open = self.remote_settings.max_concurrent_streams
        held = self.open_outbound_streams
        if held + 1 > max_open:
            raise h2.exceptions.TooManyStreamsError(
                f"Max outbound streams is {max_open}, {held} open"
            )
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
        stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
        block = self.encoder.encode(fields)
        flags = _END_HEADERS
        if end_stream:
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= _END_STREAM
        stream.request_method = fields[0][1]  # what h2 keeps (for HEAD responses' lengths)
        self._data_to_send += header_frames(stream_id, block, flags, self.max_outbound_frame_size)

    def _receive_frame(self, frame: hf.Frame) -> list[Any]:
        # h2's own (4.x), less its trace log, whose argument, repr(frame), it builds even with
        # logging off: a twentieth of an HTTP/2 request's CPU time at c=100.
        events: list[Any]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            # Closed by RST_STREAM: a stream error (answered by RST_STREAM); else a
            # connection error.
            if not self._stream_is_closed_by_reset(e.stream_id):
                raise
            reset = hf.RstStreamFrame(e.stream_id)
            reset.error_code = e.error_code
            self._prepare_for_sending([reset])
            events = e._events
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                reset = hf.RstStreamFrame(e.stream_id)
                reset.error_code = h2.errors.ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([reset])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _handle_data_on_closed_stream(
        self, events: list[Any], exc: h2.exceptions.StreamClosedError, frame: hf.DataFrame
    ) -> tuple[list[hf.Frame], list[Any]]:
        # h2 gives the window back at once and answers RST_STREAM, so nothing else bounds
        # these. Body bytes still in flight when we reset a stream are no flood: a fast
        # download has hundreds of frames in flight; empty frames cost the server nothing.
        if not frame.data:
            self.no_progress("empty DATA frames")
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        self.queued_replies(len(frames))
        return frames, events

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:
        # Called when a frame came for a closed stream: h2 answers RST_STREAM when we reset it.
        closed_by_reset = super()._stream_is_closed_by_reset(stream_id)
        if closed_by_reset:  # HEADERS (1xx, say) on a stream we reset
            self.no_progress("HEADERS frames on reset streams")
            self.queued_replies(1)
        return closed_by_reset

    def _local_settings_acked(self) -> dict[h2.settings.SettingCodes | int, ChangedSetting]:
        changes = super()._local_settings_acked()
        # h2 has just set the decoder's bound to our advertised limit: keep the hard one.
        self.decoder.max_header_list_size = self.header_list_hard_limit
        return changes

    def _begin_new_stream(
        self, stream_id: int, allowed_ids: h2.connection.AllowedStreamIDs
    ) -> h2.stream.H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = UncheckedLengthStream
        return stream

    @property
    def open_outbound_streams(self) -> int:
        held = len(self.streams)
        if held < self._walk_at and held < self.remote_settings.max_concurrent_streams:
            # Every stream held may be open: at most ``held`` are, so one more fits.
            return held
        return self.count_open_streams()

    def count_open_streams(self) -> int:
        """The exact count of open streams (the walk)."""
        count = super().open_outbound_streams
        self._walk_at = 2 * count + 16
        return count


def header_frames(stream_id: int, block: bytes, flags: int, max_frame_size: int) -> bytes:
    """A header block as one HEADERS frame and as many CONTINUATION frames as
    ``max_frame_size`` calls for: END_STREAM (in ``flags``) goes on the first frame,
    END_HEADERS on the last, as RFC 9113 (6.2, 6.10) has them."""
    pack = _FRAME_HEADER.pack
    if len(block) <= max_frame_size:
        return pack(len(block) >> 8, len(block) & 0xFF, _HEADERS, flags, stream_id) + block
    frames = []
    first_flags = flags & ~_END_HEADERS
    for start in range(0, len(block), max_frame_size):
        piece = block[start : start + max_frame_size]
        last = start + max_frame_size >= len(block)
        kind, piece_flags = (_HEADERS, first_flags) if start == 0 else (_CONTINUATION, 0)
        if last:
            piece_flags |= _END_HEADERS
        frames.append(pack(len(piece) >> 8, len(piece) & 0xFF, kind, piece_flags, stream_id))
        frames.append(piece)
    return b"".join(frames)


def new_client_connection(max_header_list_size: int = 1 << 20) -> ClientConnection:
    """A client-side h2 connection configured as the module docstring says, for heads of up
    to ``max_header_list_size`` (checked by the caller)."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    conn = ClientConnection(config=config)
    conn.state_machine = GoawayTolerantStateMachine()
    conn.decoder = ReplayingDecoder()
    conn.encoder = ReplayingEncoder()
    conn.incoming_buffer = FastFrameBuffer(server=False)
    conn.header_list_hard_limit = header_list_hard_limit(max_header_list_size)
    conn.decoder.max_header_list_size = conn.header_list_hard_limit
    return conn
