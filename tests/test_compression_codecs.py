"""Brotli and zstd bodies (when brotli / a zstd module is importable), stacked encodings, and
the decompression cap and bounded chunks for them."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import asyncpool
from asyncpool import Client, _compression
from asyncpool._compression import (
    ACCEPT_ENCODING,
    DECODABLE,
    DECODED_CHUNK_SIZE,
    DECOMPRESSION_RATIO_FLOOR,
)
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server

pytestmark = pytest.mark.anyio

brotli: Any = pytest.importorskip("brotli")
zstandard: Any = pytest.importorskip("zstandard")

TEXT = b"hello codecs " * 1000
BOMB = b"\0" * (DECOMPRESSION_RATIO_FLOOR + (4 << 20))
NOISE = random.Random(0).randbytes(1 << 20)


def encode(data: bytes, coding: str) -> bytes:
    if coding == "identity":
        return data
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "br":
        return bytes(brotli.compress(data, quality=5))
    return bytes(zstandard.ZstdCompressor(level=3).compress(data))


BOMBS = {coding: encode(BOMB, coding) for coding in ("br", "zstd")}


async def app(req: ServerRequest, conn: ServerConnection) -> None:
    query = req.query
    codings = [c.strip() for c in query.get("ce", "").split(",") if c.strip()]
    if req.path == "/bomb":
        body = BOMBS[codings[0]]
    elif req.path == "/noise":  # 1 MiB that does not compress: more than one read
        body = encode(NOISE, codings[0])
    elif req.path == "/frames":  # two zstd frames, one after the other
        body = encode(b"first frame, ", "zstd") + encode(b"second frame", "zstd")
    else:
        body = TEXT
        for coding in codings:  # applied in the order listed
            body = encode(body, coding)
    if req.path == "/truncated":
        body = body[: len(body) // 2]
    if req.path == "/garbage":
        body = b"this is not compressed at all" * 10
    await conn.respond(200, [("content-encoding", query["ce"])], body)


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[TestServer]:
    async with open_server(app) as srv:
        yield srv


@pytest.fixture(params=["compression.zstd", "zstandard"])
def zstd_module(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each zstd module the pool may import: the standard library's API (Python 3.14's
    compression.zstd, or its backport), whose output is bounded per call, and zstandard's."""
    if request.param == "zstandard":
        module, bounded = zstandard, False
    else:
        try:
            module = __import__("compression.zstd", fromlist=["zstd"])
        except ImportError:
            module = pytest.importorskip("backports.zstd")
        bounded = True
    monkeypatch.setattr(_compression, "_zstd", module)
    monkeypatch.setattr(_compression, "_zstd_bounded", bounded)
    monkeypatch.setattr(_compression, "_zstd_loaded", True)


async def test_the_codecs_are_advertised_when_decodable(server: TestServer) -> None:
    assert DECODABLE == ("gzip", "deflate", "br", "zstd")
    assert ACCEPT_ENCODING == "gzip, deflate, br, zstd"
    async with Client() as client:
        await client.get(f"{server.url}/?ce=br")
    assert server.requests[0].header("accept-encoding") == ACCEPT_ENCODING


@pytest.mark.parametrize(
    "encoding", ["br", "zstd", "gzip, gzip", "deflate, br", "zstd, gzip", "gzip, identity, br"]
)
@pytest.mark.usefixtures("zstd_module")
async def test_bodies_are_decoded_stacked_in_reverse(server: TestServer, encoding: str) -> None:
    async with Client() as client:
        response = await client.get(f"{server.url}/", params={"ce": encoding})
    assert response.content == TEXT
    assert response.uncompressed
    assert "content-encoding" not in response.headers


async def test_an_unknown_coding_in_a_stack_leaves_the_body_alone(server: TestServer) -> None:
    async with Client() as client:
        response = await client.get(f"{server.url}/", params={"ce": "gzip, compress"})
    assert not response.uncompressed
    assert response.headers["content-encoding"] == "gzip, compress"


async def test_a_zstd_module_that_fails_to_import_leaves_the_body_alone(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The zstd module is imported with the first zstd body; if that fails (a broken install),
    # the body is handed over as it came, as for a coding not decodable here.
    monkeypatch.setattr(_compression, "_import_zstd", lambda: (None, False))
    monkeypatch.setattr(_compression, "_zstd_loaded", False)
    monkeypatch.setattr(_compression, "_zstd", None)
    async with Client() as client:
        response = await client.get(f"{server.url}/?ce=zstd")
    assert not response.uncompressed
    assert response.content == encode(TEXT, "zstd")


def test_zstd_is_imported_with_the_first_zstd_body_only() -> None:
    code = "import sys, asyncpool; print('zstandard' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.usefixtures("zstd_module")
async def test_zstd_frames_one_after_the_other(server: TestServer) -> None:
    async with Client() as client:
        response = await client.get(f"{server.url}/frames?ce=zstd")
    assert response.content == b"first frame, second frame"


@pytest.mark.parametrize("coding", ["br", "zstd"])
@pytest.mark.parametrize("path", ["/truncated", "/garbage"])
@pytest.mark.usefixtures("zstd_module")
async def test_a_bad_body_is_a_decoding_error(server: TestServer, coding: str, path: str) -> None:
    async with Client() as client:
        with pytest.raises(asyncpool.DecodingError, match=f"cannot decode the {coding} body"):
            await client.get(f"{server.url}{path}?ce={coding}")


@pytest.mark.parametrize("coding", ["br", "zstd"])
@pytest.mark.usefixtures("zstd_module")
async def test_a_bomb_is_refused_by_aread_and_streams_in_bounded_chunks(
    server: TestServer, coding: str
) -> None:
    async with Client() as client:
        with pytest.raises(asyncpool.DecompressionBomb, match="max_decompression_ratio=100"):
            await client.get(f"{server.url}/bomb?ce={coding}")
        async with client.stream("GET", f"{server.url}/bomb?ce={coding}") as response:
            sizes = [len(chunk) async for chunk in response.aiter_bytes()]
        assert sum(sizes) == len(BOMB)
        assert max(sizes) <= DECODED_CHUNK_SIZE


@pytest.mark.parametrize("window_log", [23, 27])
@pytest.mark.usefixtures("zstd_module")
async def test_a_zstd_window_over_rfc_9659s_8_mib_is_refused(window_log: int) -> None:
    """RFC 9659 caps the zstd content coding's window at 8 MiB; zstandard's default took 128
    MiB, that much memory a server could make each response hold however it is streamed."""
    params = zstandard.ZstdCompressionParameters(
        window_log=window_log, compression_level=1, write_content_size=False
    )
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = compressor.compress(b"\0" * (1 << 20)) + compressor.flush()

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        await conn.respond(200, [("content-encoding", "zstd")], body)

    async with open_server(handler) as server, Client() as client:
        if window_log <= 23:
            assert (await client.get(server.url)).content == b"\0" * (1 << 20)
        else:
            with pytest.raises(asyncpool.DecodingError):
                await client.get(server.url)


async def test_a_decoder_that_cannot_start_gives_its_connection_back(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Transport makes the decoder after the connection handed the response over: a
    # decoder that raised there (zstandard's keywords given to compression.zstd did) left
    # the response, and its connection, held for as long as the error was.
    def broken() -> None:
        raise TypeError("no such keyword")

    monkeypatch.setattr(_compression._ZstdDecoder, "_new", staticmethod(broken))
    async with Client(max_conns_per_host=1, trust_env=False) as client:
        with pytest.raises(TypeError, match="no such keyword") as raised:
            await client.get(f"{server.url}/noise?ce=zstd")  # still arriving: not given back yet
        assert client.transport.stats().in_use == 0  # with the error still held (raised)
        with anyio.fail_after(5):
            assert (await client.get(f"{server.url}/?ce=gzip")).content == TEXT
        del raised


async def test_a_raw_deflate_body_whose_first_read_is_one_byte_is_decoded() -> None:
    """zlib's 2-byte header tells "deflate" from raw deflate (which some servers send); a first
    read of one byte raised nothing, and the raw fallback, tried on the first call only, never
    came (the same body in one read decoded)."""
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = deflate.compress(TEXT) + deflate.flush()
    first_read = anyio.Event()

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\n"
        await conn.send_raw(head + b"content-length: %d\r\n\r\n" % len(raw) + raw[:1])
        await first_read.wait()
        await conn.send_raw(raw[1:])

    trace = asyncpool.ClientTrace(got_first_response_byte=first_read.set)
    async with open_server(handler) as server, Client() as client:
        response = await client.send(asyncpool.Request("GET", server.url, trace=trace))
        assert await response.aread() == TEXT
