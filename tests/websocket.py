"""A minimal WebSocket (RFC 6455) echo server and a CONNECT tunnel, as handlers for
``tests.servers.open_server``, and the frame codec a test client needs.

No WebSocket library: the handshake is the ``Sec-WebSocket-Accept`` digest, and frames are
whole messages (FIN set, no extensions), which is all the tests and httpx-ws send. The server
echoes text and binary frames, answers a ping with a pong and a close with a close, then ends
the connection. After the switch the handlers own the socket: they reach the test server's
stream and the bytes its h11 parser already holds (``conn._stream``, ``conn.h11``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import anyio

from tests.servers import ServerConnection, ServerRequest

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
GREETING = b"server says hi"  # sent in the same write as the 101 head, by request
MAX_FRAME = 1 << 20  # the test server's bound on one frame


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def handshake_headers(key: str) -> list[tuple[str, str]]:
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final frame; clients mask theirs (RFC 6455 5.3)."""
    length = len(payload)
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _unmask(payload, key)


def _unmask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


class FrameReader:
    """Frames out of a byte stream, fed as it arrives."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> tuple[int, bytes] | None:
        data = self._buffer
        if len(data) < 2:
            return None
        opcode, masked, length = data[0] & 0x0F, data[1] & 0x80, data[1] & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 4:
                return None
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            if len(data) < 10:
                return None
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if length > MAX_FRAME:
            raise ValueError(f"frame of {length} bytes")
        key = b""
        if masked:
            key, offset = data[offset : offset + 4], offset + 4
        if len(data) < offset + length:
            return None
        payload = data[offset : offset + length]
        self._buffer = data[offset + length :]
        return opcode, _unmask(payload, key) if masked else payload


async def websocket_handler(req: ServerRequest, conn: ServerConnection) -> None:
    """Upgrade to WebSocket and echo; ``?greet=1`` sends a text frame right behind the 101."""
    key = req.header("sec-websocket-key")
    if req.header("upgrade") is None or (req.header("upgrade") or "").lower() != "websocket":
        await conn.respond(426, [("Upgrade", "websocket")], b"upgrade to websocket")
        return
    assert key is not None
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode("ascii")
    if req.query.get("greet"):
        head += encode_frame(TEXT, GREETING, mask=False)
    await conn.send_raw(head)
    await echo_frames(conn)


async def echo_frames(conn: ServerConnection) -> None:
    stream = conn._stream
    reader = FrameReader()
    pending = bytes(conn.h11.trailing_data[0])  # what came with the request, if anything
    while True:
        for opcode, payload in reader.feed(pending):
            if opcode in (TEXT, BINARY):
                await stream.send(encode_frame(opcode, payload, mask=False))
            elif opcode == PING:
                await stream.send(encode_frame(PONG, payload, mask=False))
            elif opcode == CLOSE:
                await stream.send(encode_frame(CLOSE, payload[:2], mask=False))
                return
        try:
            pending = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return


async def tunnel_handler(req: ServerRequest, conn: ServerConnection) -> None:
    """A proxy's answer to CONNECT, then an echo of the tunnel's bytes (a stand-in for the
    server behind it). ``?...`` is not seen: the target is an authority."""
    if req.method != "CONNECT":
        await conn.respond(405, body=b"CONNECT only")
        return
    if req.target.startswith("refuse"):
        await conn.respond(407, [("Proxy-Authenticate", "Basic")], b"who are you")
        return
    await conn.send_raw(b"HTTP/1.1 200 Connection established\r\n\r\ntunnel open\n")
    stream = conn._stream
    pending = bytes(conn.h11.trailing_data[0])
    while True:
        if pending:
            await stream.send(pending)
        try:
            pending = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return


async def unasked_101_handler(req: ServerRequest, conn: ServerConnection) -> None:
    """A 101 whatever the request asked."""
    await conn.send_raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nxyz")
    try:
        while await conn._stream.receive(65536):  # until the client hangs up
            pass
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return
