"""Transparent gzip/deflate decoding of a response body, as Go's Transport does it when it asked
for compression itself.

Bounded whatever the server sends: a chunk of the decoded body is at most
``DECODED_CHUNK_SIZE`` bytes however much one compressed read inflates to (a gzip bomb's
124 KiB read is 130 MB), and the work per compressed byte is bounded too, many tiny gzip
members included. ``BodyLimits`` caps what ``Response.aread()`` holds.
"""

from __future__ import annotations

import re
import zlib

from ._errors import DecodingError, DecompressionBomb, ResponseTooLarge
from ._models import ResponseStream

__all__ = [
    "DECODABLE",
    "DECODED_CHUNK_SIZE",
    "DECOMPRESSION_RATIO_FLOOR",
    "BodyLimits",
    "DecodedStream",
]

DECODABLE = ("gzip", "deflate")

# The most a read of a decoded body gives (aiter_bytes' chunks): large enough that a chunk's
# fixed cost (an await, a channel hop: a few µs) stays small beside inflating it (~50 µs),
# small enough that a streaming caller holds little whatever the ratio (zlib's max_length).
DECODED_CHUNK_SIZE = 65536
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

    __slots__ = ("_decoded", "_host", "_max_body_bytes", "_max_ratio")

    def __init__(
        self,
        host: str,
        max_body_bytes: int | None,
        decoded: DecodedStream | None,
        max_ratio: float | None,
    ) -> None:
        self._host = host
        self._max_body_bytes = max_body_bytes
        self._decoded = decoded if max_ratio else None
        self._max_ratio = max_ratio or 0.0

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
                f"the {decoded._encoding} body decodes to over max_decompression_ratio="
                f"{self._max_ratio:g} times its size ({total} bytes from {decoded.compressed}):"
                " a decompression bomb? Stream it (aiter_bytes), or raise the limit",
                host=self._host,
            )
