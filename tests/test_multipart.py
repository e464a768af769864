"""The Client's files=: multipart/form-data bodies in httpx's shapes, streamed from files in
chunks, with a Content-Length when every size is known (else chunked)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncpool import Client
from asyncpool._multipart import CHUNK_SIZE, MultipartStream
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server

pytestmark = pytest.mark.anyio


def parse(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The parts of a multipart/form-data body: their heads (lowercased names) and content."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, content = chunk[2:-2].partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append({"head": {k.lower(): v for k, v in fields.items()}, "content": content})
    return parts


async def app(req: ServerRequest, conn: ServerConnection) -> None:
    body = await conn.read_body()
    content_type = req.header("content-type") or ""
    parts = [
        {**part, "content": part["content"].decode("latin-1")} for part in parse(content_type, body)
    ]
    echo = {
        "content-length": req.header("content-length"),
        "transfer-encoding": req.header("transfer-encoding"),
        "size": len(body),
        "parts": parts,
    }
    await conn.respond(200, [("content-type", "application/json")], json.dumps(echo).encode())


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[TestServer]:
    async with open_server(app) as srv:
        yield srv


class CountingReader(io.BytesIO):
    """A seekable file that records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(-1 if size is None else size)
        return super().read(size)


class Pipe:
    """A file object that cannot seek: its size is unknown."""

    name = "/tmp/piped.bin"

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)

    def seekable(self) -> bool:
        return False


async def test_fields_and_files_of_every_shape(server: TestServer, tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    async with Client() as client:
        with path.open("rb") as report:
            response = await client.post(
                server.url,
                data={"title": "Q3", "tags": ["x", "y"], "n": 3},
                files={
                    "report": report,  # name from the file, type guessed from it
                    "raw": b"\x00\x01",
                    "named": ("notes.txt", "text content"),
                    "typed": ("img.bin", b"PNG", "image/png"),
                    "extra": ("e.json", b"{}", None, {"X-Part": "1"}),
                    "nameless": (None, b"plain field"),
                },
            )
    echo = response.json()
    assert echo["transfer-encoding"] is None
    assert int(echo["content-length"]) == echo["size"]
    parts = [
        (p["head"]["content-disposition"], p["head"].get("content-type")) for p in echo["parts"]
    ]
    assert parts == [
        ('form-data; name="title"', None),
        ('form-data; name="tags"', None),
        ('form-data; name="tags"', None),
        ('form-data; name="n"', None),
        ('form-data; name="report"; filename="report.csv"', "text/csv"),
        ('form-data; name="raw"; filename="upload"', "application/octet-stream"),
        ('form-data; name="named"; filename="notes.txt"', "text/plain"),
        ('form-data; name="typed"; filename="img.bin"', "image/png"),
        ('form-data; name="extra"; filename="e.json"', "application/json"),
        ('form-data; name="nameless"', "application/octet-stream"),
    ]
    assert [p["content"] for p in echo["parts"]] == [
        "Q3",
        "x",
        "y",
        "3",
        "a,b\n1,2\n",
        "\x00\x01",
        "text content",
        "PNG",
        "{}",
        "plain field",
    ]
    assert echo["parts"][8]["head"]["x-part"] == "1"


async def test_a_large_file_is_read_in_chunks_with_its_length(server: TestServer) -> None:
    data = bytes(range(256)) * (5 * CHUNK_SIZE // 256 + 7)
    upload = CountingReader(data)
    upload.read(10)  # a file is sent from where it stands
    upload.reads.clear()
    async with Client() as client:
        echo = (await client.post(server.url, files={"big": ("big.bin", upload)})).json()
    assert echo["parts"][0]["content"].encode("latin-1") == data[10:]
    assert int(echo["content-length"]) == echo["size"]
    assert upload.reads and max(upload.reads) == CHUNK_SIZE  # never read whole
    assert len(upload.reads) > 5


async def test_a_file_of_unknown_size_goes_chunked(server: TestServer) -> None:
    async with Client() as client:
        echo = (await client.post(server.url, files={"p": Pipe(b"piped" * 1000)})).json()
    assert echo["content-length"] is None
    assert echo["transfer-encoding"] == "chunked"
    assert echo["parts"][0]["head"]["content-disposition"] == (
        'form-data; name="p"; filename="piped.bin"'
    )
    assert echo["parts"][0]["content"] == "piped" * 1000


async def test_names_are_escaped_and_the_boundary_is_random_or_ones_own(
    server: TestServer,
) -> None:
    async with Client() as client:
        files = {'a"b\r\nX-Evil: 1': ('f"\\.txt', b"x")}
        echo = (await client.post(server.url, files=files)).json()
        head = echo["parts"][0]["head"]
        assert head["content-disposition"] == (
            'form-data; name="a%22b%0D%0AX-Evil: 1"; filename="f%22\\\\.txt"'
        )
        assert "x-evil" not in head
        one = client.build_request("POST", server.url, files={"a": b"1"})
        two = client.build_request("POST", server.url, files={"a": b"1"})
        assert one.headers["content-type"] != two.headers["content-type"]
        mine = "multipart/form-data; boundary=my-boundary"
        echo = (
            await client.post(server.url, files={"a": b"1"}, headers={"Content-Type": mine})
        ).json()
        assert echo["parts"][0]["content"] == "1"


async def test_the_stream_can_be_read_again_and_bad_input_is_refused() -> None:
    stream = MultipartStream({"a": "1"}, {"f": io.BytesIO(b"data")}, "B")
    first = b"".join([chunk async for chunk in stream])
    assert first == b"".join([chunk async for chunk in stream])
    assert len(first) == stream.content_length
    with pytest.raises(TypeError, match="data= field"):
        MultipartStream({"a": {"nested": 1}}, {})
    with pytest.raises(TypeError, match="at most one"):
        Client().build_request("POST", "http://x/", files={"a": b""}, json={})


@pytest.mark.parametrize(
    "file",
    [
        ("a.txt", b"x", "text/plain\r\n\r\n--injected"),
        ("a.txt", b"x", "text/plain", {"X-Extra": "1\r\nContent-Disposition: form-data"}),
        ("a.txt", b"x", "text/plain", {"X-Bad:Name": "1"}),
    ],
)
def test_a_part_header_with_a_line_break_is_refused(file: Any) -> None:
    """A file's content type and extra part headers go into the part's head as given: a CR or
    LF in them started another header or another part (form field injection)."""
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        MultipartStream({}, {"upload": file})


async def test_an_async_file_or_iterable_is_refused_up_front() -> None:
    # Accepted before, they failed mid-request (an AttributeError, a coroutine never awaited).
    class AsyncFile:
        async def read(self, size: int = -1) -> bytes:
            return b""  # pragma: no cover - never called

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"  # pragma: no cover - never iterated

    for content in (AsyncFile(), chunks()):
        with pytest.raises(TypeError, match="read without await"):
            MultipartStream({}, {"f": content})  # type: ignore[dict-item]


async def test_a_file_read_past_its_end_has_nothing_left_to_send() -> None:
    file = io.BytesIO(b"data")
    file.seek(10)
    stream = MultipartStream({}, {"f": file}, "B")
    body = b"".join([chunk async for chunk in stream])
    assert len(body) == stream.content_length  # it counted -6 bytes for the file before


def test_only_bytes_and_seekable_files_make_a_rewindable_body() -> None:
    assert MultipartStream({"a": "1"}, {"f": b"x", "g": io.BytesIO(b"y")}).rewindable
    assert not MultipartStream({}, {"p": Pipe(b"z")}).rewindable
