"""The h2 protocol layer: HPACK decoding by replay gives exactly what hpack's decoder gives."""

from __future__ import annotations

import hpack
import pytest
from hpack import Decoder, Encoder, HeaderTuple

from asyncpool._http2 import REPLAY_CACHE_SIZE, ReplayingDecoder, new_client_connection

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


def test_the_client_connection_uses_it() -> None:
    conn = new_client_connection()
    assert isinstance(conn.decoder, ReplayingDecoder)
    assert not conn.config.validate_inbound_headers
    assert not conn.config.validate_outbound_headers
