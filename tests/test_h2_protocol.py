"""The h2 protocol layer: HPACK decoding by replay gives exactly what hpack's decoder gives, and
the lazily counted open streams keep h2's limit and forget closed streams."""

from __future__ import annotations

import tracemalloc

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
import hyperframe.frame as hf
import pytest
from hpack import Decoder, Encoder, HeaderTuple

from asyncpool._h2.protocol import (
    REPLAY_CACHE_BYTES,
    REPLAY_CACHE_SIZE,
    FastFrameBuffer,
    ReplayingDecoder,
    ReplayingEncoder,
    header_list_hard_limit,
    new_client_connection,
)

HEAD = [(b":status", b"200"), (b"server", b"nginx"), (b"content-type", b"text/plain")]
OTHER = [(b":status", b"404"), (b"server", b"nginx"), (b"x-trace", b"abc")]


def literal_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A block as nginx sends one: every field a literal with incremental indexing (a fresh
    encoder never refers to its dynamic table)."""
    return Encoder().encode(headers, huffman=True)


def blocks() -> list[bytes]:
    persistent = Encoder()  # later blocks refer to entries earlier ones added
    sequence = [literal_block(HEAD), literal_block(HEAD), persistent.encode(OTHER)]
    sequence += [persistent.encode(OTHER), literal_block(HEAD), persistent.encode(HEAD)]
    persistent.header_table_size = 256  # the next block starts with a size update
    sequence += [persistent.encode(OTHER), literal_block(OTHER), literal_block(HEAD)]
    return sequence


def test_replay_decodes_and_indexes_as_hpack_does() -> None:
    reference, replaying = Decoder(), ReplayingDecoder()
    for block in blocks() * 3:
        assert replaying.decode(block, raw=True) == reference.decode(block, raw=True)
        table, replayed_table = reference.header_table, replaying.header_table
        assert list(replayed_table.dynamic_entries) == list(table.dynamic_entries)
        assert replayed_table.maxsize == table.maxsize


def test_only_blocks_independent_of_the_dynamic_table_are_replayed() -> None:
    decoder = ReplayingDecoder()
    persistent = Encoder()
    adds = persistent.encode(OTHER)  # literals: adds OTHER's fields
    refers = persistent.encode(OTHER)  # indexed: reads the dynamic table
    for block in (adds, refers, literal_block(HEAD)):
        decoder.decode(block, raw=True)
    assert {key[0] for key in decoder._replays} == {adds, literal_block(HEAD)}


def test_a_replayed_result_is_a_fresh_list() -> None:
    decoder = ReplayingDecoder()
    first = decoder.decode(literal_block(HEAD), raw=True)
    assert isinstance(first, list)
    first.clear()
    again = decoder.decode(literal_block(HEAD), raw=True)
    assert again == [HeaderTuple(n, v) for n, v in HEAD]


def test_a_bad_block_fails_every_time() -> None:
    decoder = ReplayingDecoder()
    bad = b"\xff\xff\xff\xff\x7f"  # an index far past both tables
    for _ in range(2):
        with pytest.raises(hpack.HPACKDecodingError):
            decoder.decode(bad, raw=True)
    assert not decoder._replays


def test_the_cache_is_bounded() -> None:
    decoder = ReplayingDecoder()
    for n in range(REPLAY_CACHE_SIZE + 5):
        decoder.decode(literal_block([(b":status", b"200"), (b"x-n", str(n).encode())]))
    assert len(decoder._replays) <= REPLAY_CACHE_SIZE


def test_the_cache_is_bounded_in_bytes_too() -> None:
    # What a hostile server can make a connection keep: 64 distinct heads of 256 KiB each
    # (under the default 1 MiB limit), each a block that reads nothing from the dynamic table.
    # The cache kept them all (block and fields), about 48 MiB.
    sent = [
        Encoder().encode(
            [(b":status", b"200"), (b"x-big", b"%03d" % i + b"{" * (256 << 10))], huffman=False
        )
        for i in range(REPLAY_CACHE_SIZE)
    ]
    decoder = ReplayingDecoder()
    decoder.max_header_list_size = header_list_hard_limit(1 << 20)
    tracemalloc.start()
    try:
        for block in sent:
            decoder.decode(block, raw=True)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < REPLAY_CACHE_BYTES + (1 << 20), held  # the cache and at most one head
    for block in blocks():  # small heads are still remembered
        decoder.decode(block, raw=True)
    assert decoder._replays


def request_heads() -> list[list[tuple[bytes, bytes]]]:
    get = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/x")]
    other = [*get[:3], (b":path", b"/y"), (b"accept", b"*/*")]
    secret = [*get, hpack.NeverIndexedHeaderTuple(b"authorization", b"s3cret")]
    indexed_secret = [*get, (b"authorization", b"s3cret")]
    return [get, get, other, get, secret, secret, indexed_secret, indexed_secret, secret, get]


def test_encoding_by_replay_gives_the_bytes_hpack_gives() -> None:
    reference, replaying, decoder = Encoder(), ReplayingEncoder(), Decoder()
    for round_ in range(3):
        for head in request_heads():
            block = replaying.encode(head)
            assert block == reference.encode(head)
            assert decoder.decode(block, raw=True) == head
            assert list(replaying.header_table.dynamic_entries) == list(
                reference.header_table.dynamic_entries
            )
        # The peer's SETTINGS_HEADER_TABLE_SIZE shrinks the table (evicting), then restores it.
        size = 64 if round_ % 2 == 0 else 4096
        reference.header_table_size = replaying.header_table_size = size
    assert replaying._replays  # repeats were replayed


def test_a_table_change_is_never_replayed_over() -> None:
    replaying, reference = ReplayingEncoder(), Encoder()
    head = request_heads()[0]
    for encoder in (replaying, reference):
        encoder.encode(head)  # indexes the fields
        encoder.encode(head)  # refers to them: kept by the replaying one
        encoder.header_table_size = 0  # evicts them
        encoder.header_table_size = 4096
        encoder.header_table_size = 4096  # hpack's "resized" flag is False again
    assert replaying.encode(head) == reference.encode(head)
    assert replaying.encode(head) == reference.encode(head)


def test_the_encoders_cache_is_bounded() -> None:
    encoder = ReplayingEncoder()
    base = request_heads()[0]
    for i in range(5 * REPLAY_CACHE_SIZE):
        head = [*base, (b"x-n", str(i % (2 * REPLAY_CACHE_SIZE)).encode())]
        encoder.encode(head)
        encoder.encode(head)
        assert len(encoder._replays) <= REPLAY_CACHE_SIZE
    big = [*base, (b"x-big", b"v" * (REPLAY_CACHE_BYTES // 8))]
    encoder.encode(big)
    encoder.encode(big)
    assert encoder._replay_bytes <= REPLAY_CACHE_BYTES // 8


def test_the_client_connection_uses_it() -> None:
    conn = new_client_connection()
    assert isinstance(conn.decoder, ReplayingDecoder)
    assert isinstance(conn.encoder, ReplayingEncoder)
    assert isinstance(conn.incoming_buffer, FastFrameBuffer)
    assert not conn.config.validate_inbound_headers
    assert not conn.config.validate_outbound_headers


# -- request HEADERS framed here -------------------------------------------------------------


def reference_connection() -> h2.connection.H2Connection:
    """h2 as it is, configured as ours is: what ``send_request_headers`` must match."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    return conn


@pytest.mark.parametrize("end_stream", [True, False])
def test_request_headers_are_the_bytes_h2_sends(end_stream: bool) -> None:
    ours, reference = new_client_connection(), reference_connection()
    ours.initiate_connection()
    assert ours.data_to_send() == reference.data_to_send()
    big = (b"x-big", b"v" * 40_000)  # over 16 KiB: HEADERS and CONTINUATION frames
    secret = hpack.NeverIndexedHeaderTuple(b"authorization", b"secret")
    for extra in ([], [big], [secret, big], []):
        head = [*REQUEST_HEAD, *extra]
        stream_id = reference.get_next_available_stream_id()
        assert ours.get_next_available_stream_id() == stream_id
        ours.send_request_headers(stream_id, head, end_stream=end_stream)
        reference.send_headers(stream_id, head, end_stream=end_stream)
        assert ours.data_to_send() == reference.data_to_send()
        theirs = reference.streams[stream_id]
        assert ours.streams[stream_id].state_machine.state == theirs.state_machine.state
        assert ours.streams[stream_id].request_method == b"GET"
    assert ours.highest_outbound_stream_id == reference.highest_outbound_stream_id


def test_a_server_reads_request_headers_split_over_frames() -> None:
    pair = Pair(max_concurrent_streams=10)
    big = [(b"x-big-%d" % i, b"v" * 5000) for i in range(8)]
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_request_headers(stream_id, [*REQUEST_HEAD, *big], end_stream=False)
    received = pair.server.receive_data(pair.client.data_to_send())
    request = next(e for e in received if isinstance(e, h2.events.RequestReceived))
    assert request.headers == [*REQUEST_HEAD, *big]
    assert request.stream_ended is None  # the body is still to come
    pair.client.send_data(stream_id, b"body", end_stream=True)
    received = pair.server.receive_data(pair.client.data_to_send())
    assert [type(e) for e in received] == [h2.events.DataReceived, h2.events.StreamEnded]


def frames_for_closed_streams(case: str) -> bytes:
    """What a server sends after stream 1 ended (its response) and we reset stream 3."""
    block = Encoder().encode([(b":status", b"200")])
    stream_id = 1 if "ended" in case else 3
    if case.startswith("data"):
        frame: hf.Frame = hf.DataFrame(stream_id, data=b"late", flags=["END_STREAM"])
    else:
        frame = hf.HeadersFrame(stream_id, data=block, flags=["END_HEADERS"])
    return frame.serialize()


@pytest.mark.parametrize(
    "case", ["data-on-reset", "data-on-ended", "headers-on-reset", "headers-on-ended"]
)
@pytest.mark.parametrize("forgotten", [False, True])
def test_frames_on_closed_streams_are_handled_as_h2_does(case: str, forgotten: bool) -> None:
    """``ClientConnection._receive_frame`` replaces h2's: the same answers (RST_STREAM, or
    a connection error), whether the stream is still held or forgotten (StreamIDTooLow)."""
    results = []
    for conn in (new_client_connection(), reference_connection()):
        conn.initiate_connection()
        conn.receive_data(hf.SettingsFrame(0).serialize())
        for stream_id in (1, 3):
            conn.send_headers(stream_id, REQUEST_HEAD, end_stream=True)
        response = Encoder().encode([(b":status", b"204")])
        conn.receive_data(
            hf.HeadersFrame(1, response, flags=["END_HEADERS", "END_STREAM"]).serialize()
        )
        conn.reset_stream(3)
        if forgotten:
            assert conn._open_streams(1) == 0  # h2's walk lets closed streams go
            assert not conn.streams
        conn.data_to_send()
        try:
            events = conn.receive_data(frames_for_closed_streams(case))
        except h2.exceptions.ProtocolError as exc:
            results.append((type(exc), conn.data_to_send()))
        else:
            results.append(([type(event) for event in events], conn.data_to_send()))
    assert results[0] == results[1]
    outcome, sent = results[0]
    if case == "headers-on-ended":  # a connection error: GOAWAY
        assert outcome is h2.exceptions.StreamClosedError
        assert sent[3] == 0x7
    else:  # a stream error: RST_STREAM(STREAM_CLOSED), no event
        assert outcome == []
        assert (sent[3], sent[9:]) == (0x3, b"\x00\x00\x00\x05")


HEADS = {
    "final": ([(b":status", b"200"), (b"server", b"x")], ["END_HEADERS"]),
    "final-ended": ([(b":status", b"204")], ["END_HEADERS", "END_STREAM"]),
    "1xx": ([(b":status", b"103"), (b"link", b"</a>")], ["END_HEADERS"]),
    "1xx-ended": ([(b":status", b"100")], ["END_HEADERS", "END_STREAM"]),
    "trailers": ([(b"grpc-status", b"0")], ["END_HEADERS"]),
    "trailers-ended": ([(b"grpc-status", b"0")], ["END_HEADERS", "END_STREAM"]),
}


@pytest.mark.parametrize(
    "sequence",
    [
        ["final-ended"],
        ["1xx", "1xx", "final", "trailers-ended"],
        ["1xx-ended"],
        ["final", "trailers"],
        ["final", "final-ended"],
    ],
)
def test_heads_are_received_as_h2_receives_them(sequence: list[str]) -> None:
    """``UncheckedLengthStream.receive_headers`` replaces h2's: the same events, the same
    errors."""
    results = []
    for conn in (new_client_connection(), reference_connection()):
        encoder, seen = Encoder(), []
        conn.initiate_connection()
        conn.receive_data(hf.SettingsFrame(0).serialize())
        conn.send_headers(1, REQUEST_HEAD, end_stream=True)
        try:
            for name in sequence:
                fields, flags = HEADS[name]
                frame = hf.HeadersFrame(1, encoder.encode(fields), flags=flags)
                for event in conn.receive_data(frame.serialize()):
                    ended = getattr(event, "stream_ended", None)
                    headers = getattr(event, "headers", None)
                    seen.append((type(event), headers, type(ended)))
        except h2.exceptions.ProtocolError as exc:
            seen.append((type(exc), str(exc), None))
        results.append(seen)
    assert results[0] == results[1]
    assert results[0][-1][0] in (h2.events.StreamEnded, h2.exceptions.ProtocolError)


# -- frames parsed here ----------------------------------------------------------------------


def server_frames() -> list[hf.Frame]:
    block = Encoder().encode([(b":status", b"200")])
    return [
        hf.SettingsFrame(0),
        hf.HeadersFrame(1, block, flags=["END_HEADERS"]),
        hf.DataFrame(1, b"hello"),
        hf.DataFrame(1, b"", flags=["END_STREAM"]),
        hf.HeadersFrame(3, block, flags=["END_HEADERS", "END_STREAM"]),
        hf.DataFrame(5, b"padded", flags=["PADDED"], pad_length=7),
        hf.HeadersFrame(7, block, flags=["END_HEADERS", "PRIORITY"], depends_on=1),
        hf.HeadersFrame(9, block[:1]),  # a header block over two frames
        hf.ContinuationFrame(9, block[1:], flags=["END_HEADERS"]),
        hf.DataFrame(9, b"x" * 16384, flags=["END_STREAM"]),
        hf.PingFrame(0, b"12345678"),
        hf.WindowUpdateFrame(0, window_increment=10),
        hf.RstStreamFrame(5, error_code=8),
    ]


def described(frame: hf.Frame) -> tuple[object, ...]:
    fields = (type(frame), frame.stream_id, set(frame.flags), frame.body_len)
    if isinstance(frame, (hf.DataFrame, hf.HeadersFrame)):
        fields += (frame.data, frame.pad_length)
    if isinstance(frame, hf.DataFrame):
        fields += (frame.flow_controlled_length,)
    if isinstance(frame, hf.HeadersFrame):
        fields += (frame.depends_on, frame.stream_weight, frame.exclusive)
    return fields


@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
def test_frames_parse_as_h2_parses_them(piece: int) -> None:
    wire = b"".join(frame.serialize() for frame in server_frames())
    wire = wire.replace(b"\x00\x00\x05\x00\x00", b"\x00\x00\x05\x00\x02", 1)  # an unknown flag
    parsed = []
    for buffer in (FastFrameBuffer(), h2.frame_buffer.FrameBuffer()):
        buffer.max_frame_size = 16384
        frames = []
        for start in range(0, len(wire), piece):  # bytes as they come, frames as they complete
            buffer.add_data(wire[start : start + piece])
            frames += [described(frame) for frame in buffer]
        parsed.append(frames)
    assert parsed[0] == parsed[1]
    assert len(parsed[0]) == len(server_frames()) - 1  # CONTINUATION joins its HEADERS


@pytest.mark.parametrize(
    "frame",
    [
        hf.DataFrame(1, b"x" * 16385),  # over max_frame_size
        hf.HeadersFrame(1, b"x" * 16385, flags=["END_HEADERS"]),
    ],
)
def test_bad_frames_fail_as_in_h2(frame: hf.Frame) -> None:
    errors = []
    for buffer in (FastFrameBuffer(), h2.frame_buffer.FrameBuffer()):
        buffer.max_frame_size = 16384
        buffer.add_data(frame.serialize())
        with pytest.raises(h2.exceptions.ProtocolError) as caught:
            next(buffer)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


def test_an_overlong_frame_is_refused_from_its_header() -> None:
    """h2 buffers a frame whole before it checks its length: a server announcing 16 MiB
    frames made every connection hold up to 16 MiB. Refused at once, with h2's error."""
    header = hf.DataFrame(1, b"x" * (2**24 - 1)).serialize()[:9]
    buffer = FastFrameBuffer()
    buffer.max_frame_size = 16384
    buffer.add_data(header + b"x" * 1000)
    with pytest.raises(h2.exceptions.FrameTooLargeError, match="length 16777215, max 16384"):
        next(buffer)


def test_a_frame_on_stream_zero_fails_as_in_h2() -> None:
    errors = []
    wire = hf.DataFrame(1, b"x").serialize()
    wire = wire[:5] + b"\x00\x00\x00\x00" + wire[9:]  # DATA on stream 0
    for buffer in (FastFrameBuffer(), h2.frame_buffer.FrameBuffer()):
        buffer.max_frame_size = 16384
        buffer.add_data(wire)
        with pytest.raises(h2.exceptions.ProtocolError) as caught:
            next(buffer)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


# -- counting open streams ------------------------------------------------------------------

REQUEST_HEAD = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"a"),
    (b":path", b"/"),
]


class Pair:
    """A client connection of ours and an h2 server in memory, bytes passed by hand."""

    def __init__(self, max_concurrent_streams: int) -> None:
        self.requests: list[int] = []  # stream ids the server received
        self.client = new_client_connection()
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.client.initiate_connection()
        self.server.initiate_connection()
        settings = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams}
        self.server.update_settings(settings)
        self.exchange()

    def exchange(self) -> None:
        while True:
            to_server, to_client = self.client.data_to_send(), self.server.data_to_send()
            if not (to_server or to_client):
                return
            for event in self.server.receive_data(to_server):
                if isinstance(event, h2.events.RequestReceived):
                    self.requests.append(event.stream_id)
            self.client.receive_data(to_client)

    def open(self) -> int:
        stream_id: int = self.client.get_next_available_stream_id()
        self.client.send_request_headers(stream_id, REQUEST_HEAD, end_stream=True)
        return stream_id

    def answer(self, stream_id: int) -> None:
        self.server.send_headers(stream_id, [(b":status", b"204")], end_stream=True)
        self.exchange()


def test_the_servers_stream_limit_is_kept_exactly() -> None:
    pair = Pair(max_concurrent_streams=3)
    first = [pair.open() for _ in range(3)]
    pair.exchange()
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        pair.open()
    pair.answer(first[0])
    pair.open()  # a stream closed: one more fits, and no more
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        pair.open()


@pytest.mark.parametrize("max_concurrent_streams", [8, 2**31 - 1])
def test_closed_streams_are_forgotten(max_concurrent_streams: int) -> None:
    pair = Pair(max_concurrent_streams)
    for _ in range(500):
        busy = [pair.open() for _ in range(4)]
        pair.exchange()
        for stream_id in busy:
            pair.answer(stream_id)
        # Closed streams are let go at the next walk, whatever the limit: a few dozen at most.
        assert len(pair.client.streams) <= 2 * 4 + 16 + 4
    assert len(pair.requests) == 2000


def test_what_was_queued_to_send_survives_a_received_goaway() -> None:
    """h2 empties its send buffer when a GOAWAY arrives; the streams the GOAWAY accepts go on
    here, and a download among them stalled for ever without the WINDOW_UPDATE queued for it
    (likewise a new stream's HEADERS, a RST_STREAM)."""
    pair = Pair(max_concurrent_streams=10)
    download = pair.open()
    pair.exchange()
    pair.server.send_headers(download, [(b":status", b"200")])
    for _ in range(3):
        pair.server.send_data(download, b"x" * 16000)
    pair.exchange()
    pair.client.acknowledge_received_data(48000, download)  # the caller read it
    queued = pair.open()  # HEADERS not yet written either
    pair.server.close_connection(last_stream_id=2**31 - 1)  # graceful: every stream may finish
    pair.client.receive_data(pair.server.data_to_send())
    frames = list(hf_frames(pair.client.data_to_send()))
    assert [(type(f).__name__, f.stream_id) for f in frames] == [
        ("WindowUpdateFrame", 0),
        ("WindowUpdateFrame", download),
        ("HeadersFrame", queued),
    ]


def hf_frames(data: bytes) -> list[hf.Frame]:
    buffer = h2.frame_buffer.FrameBuffer()  # (no preamble to expect)
    buffer.max_frame_size = 16384
    buffer.add_data(data)
    return list(buffer)
