"""Transparent gzip/deflate decoding of a response body, as Go's Transport does it when it asked
for compression itself; brotli (``br``) and ``zstd`` too when a module for them is importable
(brotli or brotlicffi; compression.zstd, backports.zstd or zstandard), and stacked encodings
(``gzip, br``: decoded from the last applied), each a stream over the one before. The zstd
module is only looked for at import (zstandard's import is a few ms); it is imported with the
first zstd body, and should that import fail, such a body is left as it came (not decoded).

Bounded whatever the server sends: a chunk of the decoded body is at most
``DECODED_CHUNK_SIZE`` bytes however much one compressed read inflates to (a gzip bomb's
124 KiB read is 130 MB), and the work per compressed byte is bounded too, many tiny gzip
members included. ``BodyLimits`` caps what ``Response.aread()`` holds.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import zlib
from typing import Any

from ._errors import DecodingError, DecompressionBomb, ResponseTooLarge
from ._models import ResponseStream

__all__ = [
    "ACCEPT_ENCODING",
    "DECODABLE",
    "DECODED_CHUNK_SIZE",
    "DECOMPRESSION_RATIO_FLOOR",
    "BodyLimits",
    "CodecStream",
    "DecodedStream",
    "decoding_stream",
]


# The most a read of a decoded body gives (aiter_bytes' chunks): large enough that a chunk's
# fixed cost (an await, a channel hop: a few µs) stays small beside inflating it (~50 µs),
# small enough that a streaming caller holds little whatever the ratio (zlib's max_length).
DECODED_CHUNK_SIZE = 65536
# The largest window a zstd body may declare (RFC 9659, 3: the "zstd" content coding's limit).
ZSTD_MAX_WINDOW_LOG = 23
ZSTD_MAX_WINDOW = 1 << ZSTD_MAX_WINDOW_LOG
# Compressed bytes given to zlib per call. When a gzip member ends, zlib copies the rest of its
# input (``unused_data``): with small slices, many tiny members cost linear work, not
# quadratic in the size of a read.
_INPUT_SLICE = 4096
# aread() fails once the decoded body is over max_decompression_ratio times the compressed
# bytes read, and over this: a small body may compress very well.
DECOMPRESSION_RATIO_FLOOR = 10 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_NOT_ZERO = re.compile(rb"[^\0]")


class DecodedStream:
    """A ResponseStream that inflates another one."""

    __slots__ = (
        "_decoder",
        "_encoding",
        "_first",
        "_host",
        "_inner",
        "_pending",
        "_pos",
        "_started",
        "compressed",
    )

    def __init__(self, inner: ResponseStream, encoding: str, host: str) -> None:
        self._inner = inner
        self._encoding = encoding
        self._host = host
        # wbits 16+MAX: gzip container; MAX: zlib container. Some servers send raw deflate for
        # "deflate"; that is detected on the first chunk.
        wbits = _GZIP_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._decoder = zlib.decompressobj(wbits)
        self._first = encoding == "deflate"
        self._started = False  # a compressed byte arrived: a body without one is empty (Go)
        # A compressed chunk not wholly decoded yet (the last read's output was full), and
        # where in it decoding goes on; None: read the next one.
        self._pending: bytes | None = None
        self._pos = 0
        self.compressed = 0  # compressed bytes read so far

    @property
    def is_consumed(self) -> bool:
        return self._inner.is_consumed

    async def read_chunk(self) -> bytes:
        while True:
            chunk, pos = self._pending, self._pos
            if chunk is None:
                chunk, pos = await self._inner.read_chunk(), 0
                self.compressed += len(chunk)
                if self._first and len(chunk) == 1:
                    # zlib's 2-byte header tells it from raw deflate: a first read of one byte
                    # raises nothing, and the fallback is only tried on the first call.
                    more = await self._inner.read_chunk()
                    self.compressed += len(more)
                    chunk += more
            try:
                if not chunk:
                    if self._started and not self._decoder.eof:
                        raise zlib.error("the compressed body is truncated")
                    return b""
                self._started = True
                data = self._decompress(chunk, pos)
            except zlib.error as exc:
                await self._inner.aclose()
                raise DecodingError(
                    f"cannot decode the {self._encoding} body: {exc}", host=self._host
                ) from None
            if data:
                return data

    def _decompress(self, chunk: bytes, pos: int) -> bytes:
        """Up to DECODED_CHUNK_SIZE bytes decoded from ``chunk[pos:]``; where it stopped is
        kept for the next read."""
        parts: list[bytes] = []
        room = DECODED_CHUNK_SIZE
        view, end = memoryview(chunk), len(chunk)
        while room:
            decoder = self._decoder
            if decoder.eof:
                if self._encoding != "gzip":  # bytes after a deflate stream are ignored
                    pos = end
                    break
                # A gzip body may hold several members, one after the other; Go's reader (and
                # gzip.decompress) reads them all, ignoring zero padding after the last one.
                match = _NOT_ZERO.search(chunk, pos)
                if match is None:
                    pos = end
                    break
                pos = match.start()
                decoder = self._decoder = zlib.decompressobj(_GZIP_WBITS)
            piece = view[pos : pos + _INPUT_SLICE]
            try:
                data = decoder.decompress(piece, room)
            except zlib.error:
                if not self._first:
                    raise
                decoder = self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                data = decoder.decompress(piece, room)
            self._first = False
            # At a member's end zlib leaves the rest in both (unconsumed_tail is not cleared).
            rest = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
            pos += len(piece) - len(rest)
            if data:
                parts.append(data)
                room -= len(data)
            elif pos >= end:
                break  # all taken: the decoder needs the next chunk
        # Output full: zlib may hold more even when it took all the input.
        self._pending, self._pos = (chunk, pos) if pos < end or not room else (None, 0)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def abandon(self) -> None:
        self._inner.abandon()


class BodyLimits:
    """What ``Response.aread()`` may hold of one body, checked with the bytes read so far:
    ``max_body_bytes`` (any body), and for a body decoded here, ``max_ratio`` times the
    compressed bytes read (past DECOMPRESSION_RATIO_FLOOR)."""

    __slots__ = ("_decoded", "_encoding", "_host", "_max_body_bytes", "_max_ratio")

    def __init__(
        self,
        host: str,
        max_body_bytes: int | None,
        decoded: DecodedStream | CodecStream | None,
        max_ratio: float | None,
        encoding: str | None = None,
    ) -> None:
        self._host = host
        self._max_body_bytes = max_body_bytes
        self._decoded = decoded if max_ratio else None
        self._max_ratio = max_ratio or 0.0
        self._encoding = encoding or (decoded._encoding if decoded is not None else "")

    def __call__(self, total: int) -> None:
        if self._max_body_bytes is not None and total > self._max_body_bytes:
            raise ResponseTooLarge(
                f"the body read whole exceeds max_body_bytes={self._max_body_bytes}; "
                "stream it (aiter_bytes) to read more",
                host=self._host,
            )
        decoded = self._decoded
        if (
            decoded is not None
            and total > DECOMPRESSION_RATIO_FLOOR
            and total > self._max_ratio * decoded.compressed
        ):
            raise DecompressionBomb(
                f"the {self._encoding} body decodes to over max_decompression_ratio="
                f"{self._max_ratio:g} times its size ({total} bytes from {decoded.compressed}):"
                " a decompression bomb? Stream it (aiter_bytes), or raise the limit",
                host=self._host,
            )


# -- Brotli and zstd (optional), and stacked encodings ------------------------------------------


def _import_brotli() -> Any:
    for name in ("brotli", "brotlicffi"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # output_buffer_limit (brotli >= 1.1) bounds what one call decodes; older: not used.
        if hasattr(module.Decompressor, "can_accept_more_data"):
            return module
    return None


def _import_zstd() -> tuple[Any, bool]:
    """The zstd module, and whether it bounds its output (``decompress(data, max_length)``:
    Python 3.14's compression.zstd, backports.zstd) or not (zstandard)."""
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name), True
        except ImportError:
            pass
    try:
        return importlib.import_module("zstandard"), False
    except ImportError:
        return None, False


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # its package is missing, or a broken entry
        return False


def _zstd_installed() -> bool:
    return (
        (_installed("compression.zstd") and _installed("_zstd"))  # Python 3.14 built with zstd
        or _installed("backports.zstd")
        or _installed("zstandard")
    )


def _load_zstd() -> bool:
    """Import the zstd module (once); whether there is one."""
    global _zstd, _zstd_bounded, _zstd_loaded
    if not _zstd_loaded:
        _zstd, _zstd_bounded = _import_zstd()
        _zstd_loaded = True
    return _zstd is not None


_brotli = _import_brotli()
_zstd: Any = None
_zstd_bounded = False
_zstd_loaded = False
DECODABLE = (
    "gzip",
    "deflate",
    *(("br",) if _brotli else ()),
    *(("zstd",) if _zstd_installed() else ()),
)
ACCEPT_ENCODING = ", ".join(DECODABLE)
# zstandard's decompressobj takes no output limit: it is given this much compressed input per
# call. A zstd block is 3 bytes of header at least and decodes to 128 KiB at most, so one call
# gives at most ~2.7 MiB (the stream hands it out in DECODED_CHUNK_SIZE chunks).
_ZSTANDARD_SLICE = 64


class _BrotliDecoder:
    def __init__(self) -> None:
        self._decoder = _brotli.Decompressor()
        self.pending = False  # more output to come without input

    @property
    def eof(self) -> bool:
        return bool(self._decoder.is_finished())

    def decode(self, chunk: bytes) -> bytes:
        try:
            data = self._decoder.process(
                b"" if self.pending else chunk, output_buffer_limit=DECODED_CHUNK_SIZE
            )
        except _brotli.error as exc:
            raise _CodecError(str(exc) or "invalid brotli data") from None
        self.pending = not self._decoder.can_accept_more_data()
        return bytes(data)


class _ZstdDecoder:
    """One zstd frame after another (RFC 8878 allows several), bounded per call."""

    def __init__(self) -> None:
        self._decoder = self._new()
        self._input, self._pos = b"", 0  # the compressed chunk being decoded
        self.eof = False  # the last frame ended, and no byte came after it

    @staticmethod
    def _new() -> Any:
        # RFC 9659: a zstd content coding's window is at most 8 MiB (zstandard's default
        # allows 128 MiB, that much memory per response a server may make us hold).
        if _zstd_bounded:  # compression.zstd's API (PEP 784), not zstandard's
            window_log_max = _zstd.DecompressionParameter.window_log_max
            return _zstd.ZstdDecompressor(options={window_log_max: ZSTD_MAX_WINDOW_LOG})
        return _zstd.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()

    @property
    def pending(self) -> bool:
        decoder = self._decoder
        if decoder.eof and decoder.unused_data:
            return True
        if _zstd_bounded and not decoder.eof and not decoder.needs_input:
            return True  # output held back by max_length
        return self._pos < len(self._input)

    def decode(self, chunk: bytes) -> bytes:
        if not self.pending:
            self._input, self._pos = chunk, 0
        try:
            return self._decode()
        except _zstd.ZstdError as exc:
            raise _CodecError(str(exc) or "invalid zstd data") from None

    def _decode(self) -> bytes:
        parts: list[bytes] = []
        room = DECODED_CHUNK_SIZE
        while room > 0:
            decoder = self._decoder
            if decoder.eof:  # a frame ended: another may follow
                rest = decoder.unused_data
                if rest:
                    self._input, self._pos = rest + self._input[self._pos :], 0
                if self._pos >= len(self._input):
                    break
                decoder = self._decoder = self._new()
            if _zstd_bounded:
                piece = b""
                if decoder.needs_input:
                    if self._pos >= len(self._input):
                        break
                    piece, self._pos = self._input[self._pos :], len(self._input)
                data = decoder.decompress(piece, room)
            else:
                if self._pos >= len(self._input):
                    break
                piece = self._input[self._pos : self._pos + _ZSTANDARD_SLICE]
                self._pos += len(piece)
                data = decoder.decompress(piece)
            self.eof = bool(decoder.eof)
            if data:
                parts.append(data)
                room -= len(data)
        return b"".join(parts)


class _CodecError(Exception):
    pass


class CodecStream:
    """A ResponseStream that decodes another with brotli or zstd; chunks of at most
    DECODED_CHUNK_SIZE bytes."""

    __slots__ = (
        "_decoder",
        "_encoding",
        "_ended",
        "_host",
        "_inner",
        "_out",
        "_started",
        "compressed",
    )

    def __init__(self, inner: ResponseStream, encoding: str, host: str) -> None:
        self._inner = inner
        self._encoding = encoding
        self._host = host
        self._decoder: _BrotliDecoder | _ZstdDecoder = (
            _BrotliDecoder() if encoding == "br" else _ZstdDecoder()
        )
        self._out = b""  # decoded, not handed out yet
        self._started = False
        self._ended = False  # the compressed body has ended
        self.compressed = 0

    @property
    def is_consumed(self) -> bool:
        return self._inner.is_consumed

    async def read_chunk(self) -> bytes:
        while True:
            if self._out:
                data, self._out = (
                    self._out[:DECODED_CHUNK_SIZE],
                    self._out[DECODED_CHUNK_SIZE:],
                )
                return data
            decoder = self._decoder
            try:
                if decoder.pending:
                    self._out = decoder.decode(b"")
                    continue
                if self._ended:
                    if self._started and not decoder.eof:
                        # A decoder may hold output it gives only when asked again.
                        self._out = decoder.decode(b"")
                        if self._out or decoder.eof:
                            continue
                        raise _CodecError("the compressed body is truncated")
                    return b""
                chunk = await self._inner.read_chunk()
                self.compressed += len(chunk)
                if not chunk:
                    self._ended = True
                    continue
                self._started = True
                self._out = decoder.decode(chunk)
            except _CodecError as exc:
                await self._inner.aclose()
                raise DecodingError(
                    f"cannot decode the {self._encoding} body: {exc}", host=self._host
                ) from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    def abandon(self) -> None:
        self._inner.abandon()


def decoding_stream(
    stream: ResponseStream, content_encoding: str, host: str
) -> tuple[ResponseStream, Any] | None:
    """The body decoded, for a Content-Encoding that names only codings decodable here (each
    in turn, the last applied first: ``gzip, br`` is decoded from br, then from gzip), and the
    stream that counts the compressed bytes; None: leave the body as it is."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings or any(c not in DECODABLE for c in codings) or len(codings) > 8:
        return None
    if "zstd" in codings and not _load_zstd():
        return None
    first: Any = None
    for coding in reversed(codings):
        if coding in ("gzip", "deflate"):
            stream = DecodedStream(stream, coding, host)
        else:
            stream = CodecStream(stream, coding, host)
        if first is None:
            first = stream
    return stream, first
