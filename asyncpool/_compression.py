"""Transparent gzip/deflate decoding of a response body, as Go's Transport does it when it asked
for compression itself."""

from __future__ import annotations

import zlib

from ._errors import DecodingError
from ._models import ResponseStream

__all__ = ["DECODABLE", "DecodedStream"]

DECODABLE = ("gzip", "deflate")


class DecodedStream:
    """A ResponseStream that inflates another one."""

    __slots__ = ("_decoder", "_encoding", "_first", "_host", "_inner", "_raw_deflate", "_started")

    def __init__(self, inner: ResponseStream, encoding: str, host: str) -> None:
        self._inner = inner
        self._encoding = encoding
        self._host = host
        # wbits 16+MAX: gzip container; MAX: zlib container. Some servers send raw deflate for
        # "deflate"; that is detected on the first chunk.
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._decoder = zlib.decompressobj(wbits)
        self._first = encoding == "deflate"
        self._started = False  # a compressed byte arrived: a body without one is empty (Go)

    @property
    def is_consumed(self) -> bool:
        return self._inner.is_consumed

    async def read_chunk(self) -> bytes:
        while True:
            chunk = await self._inner.read_chunk()
            try:
                if not chunk:
                    if self._started and not self._decoder.eof:
                        raise zlib.error("the compressed body is truncated")
                    return b""
                self._started = True
                data = self._decompress(chunk)
            except zlib.error as exc:
                await self._inner.aclose()
                raise DecodingError(
                    f"cannot decode the {self._encoding} body: {exc}", host=self._host
                ) from None
            if data:
                return data

    def _decompress(self, chunk: bytes) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._decoder.decompress(chunk)
            except zlib.error:
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        data = self._decoder.decompress(chunk)
        if self._encoding == "gzip":
            # A gzip body may hold several members, one after the other; Go's reader (and
            # gzip.decompress) reads them all, ignoring zero padding after the last one.
            while self._decoder.eof and (rest := self._decoder.unused_data.lstrip(b"\0")):
                self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data += self._decoder.decompress(rest)
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()

    def abandon(self) -> None:
        self._inner.abandon()
