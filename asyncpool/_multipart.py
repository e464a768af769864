"""multipart/form-data request bodies (RFC 7578) for the Client's ``files=``, in httpx's shapes,
streamed: a file is read in chunks of ``CHUNK_SIZE`` as the body is sent, never whole. The
length is known (``Content-Length``) when every file's size is: bytes, and seekable files
(from their position to their end); otherwise the body goes chunked.

A file is ``fileobj | bytes | str`` or a tuple ``(filename, content[, content_type[,
headers]])``; ``data=`` fields come first, as text parts. Names and file names are quoted as
HTML5 and httpx do: ``"`` as ``%22``, a backslash doubled, control characters (CR, LF, ...)
percent-encoded."""

from __future__ import annotations

import inspect
import io
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

__all__ = ["CHUNK_SIZE", "FileTypes", "FilesInput", "MultipartStream"]

CHUNK_SIZE = 65536

FileContent = IO[bytes] | IO[str] | bytes | str
FileTypes = (
    FileContent
    | tuple[str | None, FileContent]
    | tuple[str | None, FileContent, str | None]
    | tuple[str | None, FileContent, str | None, Mapping[str, str]]
)
FilesInput = Mapping[str, FileTypes] | Sequence[tuple[str, FileTypes]]

_ESCAPES = {'"': "%22", "\\": "\\\\"}
_ESCAPES.update({chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B})
_TO_ESCAPE = re.compile("|".join(re.escape(c) for c in _ESCAPES))


def _param(name: str, value: str) -> str:
    return f'{name}="{_TO_ESCAPE.sub(lambda match: _ESCAPES[match.group(0)], value)}"'


class _Part:
    __slots__ = ("content", "head", "size", "start")

    def __init__(self, head: bytes, content: bytes | IO[bytes] | IO[str]) -> None:
        self.head = head
        self.content = content
        self.start: int | None = None  # where a seekable file's part begins
        if isinstance(content, bytes):
            self.size: int | None = len(content)
            return
        self.size = None
        read = getattr(content, "read", None)
        if not callable(read) or inspect.iscoroutinefunction(read):
            raise TypeError(
                f"a file in files= is bytes, str or a file object read without await, not "
                f"{content!r} (read an async file into bytes first)"
            )
        try:
            if content.seekable() and isinstance(content, (io.RawIOBase, io.BufferedIOBase)):
                self.start = content.tell()
                # (a file positioned past its end has nothing left to send)
                self.size = max(0, content.seek(0, os.SEEK_END) - self.start)
                content.seek(self.start)
        except (AttributeError, OSError, ValueError):
            self.size = None

    def chunks(self) -> Iterator[bytes]:
        content = self.content
        if isinstance(content, bytes):
            yield content
            return
        if self.start is not None:
            content.seek(self.start)  # the body may be iterated again
        while chunk := content.read(CHUNK_SIZE):
            yield chunk.encode() if isinstance(chunk, str) else chunk


class MultipartStream:
    """An async iterable of the body's bytes, iterable again while its files can be rewound
    (bytes, seekable files): then ``rewindable``, and a request with it may be sent again
    (a retry, a 307 or 308, an auth flow). ``content_type`` carries the boundary;
    ``content_length`` is None when a file's size is unknown."""

    def __init__(
        self,
        data: Mapping[str, Any] | None,
        files: FilesInput,
        boundary: str | None = None,
    ) -> None:
        self.boundary = boundary or os.urandom(16).hex()
        self._parts = [*self._data_parts(data or {}), *self._file_parts(files)]
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.rewindable = all(
            isinstance(part.content, bytes) or part.start is not None for part in self._parts
        )
        sizes = [part.size for part in self._parts]
        self.content_length: int | None = None
        if all(size is not None for size in sizes):
            framing = sum(len(part.head) + 2 for part in self._parts)  # CRLF after each
            self.content_length = framing + sum(s for s in sizes if s) + len(self._closing())

    def _head(self, disposition: str, headers: Mapping[str, str]) -> bytes:
        lines = [f"--{self.boundary}", f"Content-Disposition: form-data; {disposition}"]
        for name, value in headers.items():
            if any(c in f"{name}{value}" for c in "\r\n\0") or ":" in name:
                # A line break would start another header, or another part (header injection).
                raise ValueError(
                    f"a part's header field holds CR, LF or NUL (or its name a colon): "
                    f"{name!r}: {value!r}"
                )
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _closing(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def _data_parts(self, data: Mapping[str, Any]) -> Iterator[_Part]:
        for name, value in data.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                if not isinstance(item, (str, bytes, int, float)) or isinstance(item, bool):
                    raise TypeError(f"a data= field is str, bytes, int or float: {name}={item!r}")
                content = item if isinstance(item, bytes) else str(item).encode()
                yield _Part(self._head(_param("name", name), {}), content)

    def _file_parts(self, files: FilesInput) -> Iterator[_Part]:
        items: Iterable[tuple[str, FileTypes]] = (
            files.items() if isinstance(files, Mapping) else files
        )
        for name, value in items:
            headers: dict[str, str] = {}
            if isinstance(value, tuple):
                filename, content = value[0], value[1]
                content_type = value[2] if len(value) > 2 else None
                if len(value) > 3:
                    headers.update(value[3])
            else:
                filename, content, content_type = _filename(value), value, None
            if "content-type" not in {key.lower() for key in headers}:
                if content_type is None and filename is not None:
                    content_type = mimetypes.guess_type(filename)[0]
                headers["Content-Type"] = content_type or "application/octet-stream"
            disposition = _param("name", name)
            if filename is not None:
                disposition += "; " + _param("filename", filename)
            body = content.encode() if isinstance(content, str) else content
            yield _Part(self._head(disposition, headers), body)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = bytearray()
        for part in self._parts:
            pending += part.head
            for chunk in part.chunks():
                if len(pending) + len(chunk) <= CHUNK_SIZE:
                    pending += chunk
                    continue
                if pending:
                    yield bytes(pending)
                    pending.clear()
                if len(chunk) >= CHUNK_SIZE:
                    yield chunk
                else:
                    pending += chunk
            pending += b"\r\n"
        pending += self._closing()
        yield bytes(pending)


def _filename(content: FileContent) -> str | None:
    if isinstance(content, (bytes, str)):
        return "upload"
    name = getattr(content, "name", None)
    return os.path.basename(name) if isinstance(name, str) and name else "upload"
