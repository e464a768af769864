"""In-process SOCKS5 and SOCKS4/4a proxy (anyio, loopback) that can misbehave on purpose.

It runs in the test's own event loop and records what each client asked for, so a test
can tell a name sent to the proxy (socks5h, socks4a) from an address the client resolved
(socks5, socks4)::

    async with open_socks_server(upstream=(server.host, server.port)) as proxy:
        stream = await anyio.connect_tcp(proxy.host, proxy.port)
        await socks_handshake(stream, scheme="socks5h", host="origin.test", ...)
        assert proxy.requests[0].address == "origin.test"

Every tunnel goes to ``upstream`` when it is given (whatever was asked: names like
"origin.test" need no DNS), else to the address asked for (a name is resolved here). A
failed connect answers "connection refused" (SOCKS5 0x05, SOCKS4 0x5B), as a real proxy.

Misbehaviour, by the fields of ``SocksScript``:

- ``auth``: "none" accepts only no-authentication; "password" accepts only username and
  password, checked against ``credentials``; "refuse" answers 0xFF (no acceptable method);
  a bytes value is sent as it is in answer to the greeting.
- ``reply``: the reply code (SOCKS5 0 or SOCKS4 0x5A for success); ``bound``: the address
  type of a success reply's bound address ("ipv4", "ipv6", "domain").
- ``close_at``: close the connection instead of answering, at "greeting", "auth" (after the
  credentials) or "request"; "reply" sends half of a success reply, then closes.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

AType = Literal["ipv4", "ipv6", "domain"]
_CONNECTION_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    OSError,
)


@dataclass
class SocksScript:
    auth: Literal["none", "password", "refuse"] | bytes = "none"
    credentials: tuple[str, str] = ("user", "secret")
    reply: int | None = None  # None: success (0 for SOCKS5, 0x5A for SOCKS4)
    bound: AType = "ipv4"
    close_at: Literal["greeting", "auth", "request", "reply"] | None = None


@dataclass
class SocksRequest:
    """What one client asked for."""

    version: int  # 4 or 5
    atype: AType
    address: str
    port: int
    methods: list[int] = field(default_factory=list)  # SOCKS5: the methods offered
    username: str | None = None  # SOCKS5: the credentials sent; SOCKS4: the user ID
    password: str | None = None


class SocksServer:
    __test__ = False

    def __init__(
        self, host: str, port: int, script: SocksScript, upstream: tuple[str, int] | None
    ) -> None:
        self.host = host
        self.port = port
        self.proxy = f"{host}:{port}"  # as socks_handshake's ``proxy`` argument
        self.script = script
        self.upstream = upstream
        self.requests: list[SocksRequest] = []  # one per CONNECT request read
        self.greetings: list[list[int]] = []  # SOCKS5: the methods each client offered
        self.credentials: list[tuple[str, str]] = []  # SOCKS5: what each client sent
        self.tunnels = 0  # tunnels opened (a success reply sent)

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        reader = BufferedByteReceiveStream(client)
        async with client:
            try:
                version = (await reader.receive_exactly(1))[0]
                if version == 5:
                    await self._socks5(client, reader)
                elif version == 4:
                    await self._socks4(client, reader)
            except _CONNECTION_ERRORS:
                pass

    async def _socks5(
        self, client: anyio.abc.SocketStream, reader: BufferedByteReceiveStream
    ) -> None:
        script = self.script
        count = (await reader.receive_exactly(1))[0]
        methods = list(await reader.receive_exactly(count))
        self.greetings.append(methods)
        if script.close_at == "greeting":
            return
        if isinstance(script.auth, bytes):
            await client.send(script.auth)
            if script.auth[1:2] != b"\x02":
                return  # whatever the client does next, this proxy is done
        elif script.auth == "refuse":
            await client.send(b"\x05\xff")
            return
        else:
            wanted = 0 if script.auth == "none" else 2
            if wanted not in methods:
                await client.send(b"\x05\xff")
                return
            await client.send(bytes([5, wanted]))
        username = password = None
        if script.auth == "password" or isinstance(script.auth, bytes):
            await reader.receive_exactly(1)  # the subnegotiation's version, 1
            username = (await reader.receive_exactly((await reader.receive_exactly(1))[0])).decode()
            password = (await reader.receive_exactly((await reader.receive_exactly(1))[0])).decode()
            self.credentials.append((username, password))
            if script.close_at == "auth":
                return
            if (username, password) != script.credentials:
                await client.send(b"\x01\x01")
                return
            await client.send(b"\x01\x00")

        head = await reader.receive_exactly(4)  # VER CMD RSV ATYP
        atype: AType
        if head[3] == 1:
            atype, address = (
                "ipv4",
                socket.inet_ntop(socket.AF_INET, await reader.receive_exactly(4)),
            )
        elif head[3] == 4:
            raw = await reader.receive_exactly(16)
            atype, address = "ipv6", socket.inet_ntop(socket.AF_INET6, raw)
        else:
            length = (await reader.receive_exactly(1))[0]
            atype, address = "domain", (await reader.receive_exactly(length)).decode()
        port = int.from_bytes(await reader.receive_exactly(2), "big")
        self.requests.append(SocksRequest(5, atype, address, port, methods, username, password))
        if script.close_at == "request":
            return
        upstream = None
        code = 0 if script.close_at == "reply" else script.reply
        if code is None:
            upstream = await self._connect(address, port)
            code = 0 if upstream is not None else 5
        bound = {
            "ipv4": b"\x01\x7f\x00\x00\x01",
            "ipv6": b"\x04" + socket.inet_pton(socket.AF_INET6, "::1"),
            "domain": b"\x03\x09localhost",
        }[script.bound]
        reply = bytes([5, code, 0]) + bound + b"\x1f\x90"
        await self._answer(client, reader, reply, code == 0, upstream)

    async def _socks4(
        self, client: anyio.abc.SocketStream, reader: BufferedByteReceiveStream
    ) -> None:
        script = self.script
        head = await reader.receive_exactly(7)  # CD DSTPORT DSTIP (the VN was read)
        port = int.from_bytes(head[1:3], "big")
        user_id = await reader.receive_until(b"\x00", 256)
        atype: AType
        if head[3:6] == b"\x00\x00\x00" and head[6] != 0:  # SOCKS4a: a name follows
            atype, address = "domain", (await reader.receive_until(b"\x00", 256)).decode()
        else:
            atype, address = "ipv4", socket.inet_ntop(socket.AF_INET, head[3:7])
        self.requests.append(SocksRequest(4, atype, address, port, username=user_id.decode()))
        if script.close_at == "request":
            return
        upstream = None
        code = 0x5A if script.close_at == "reply" else script.reply
        if code is None:
            upstream = await self._connect(address, port)
            code = 0x5A if upstream is not None else 0x5B
        reply = bytes([0, code]) + b"\x1f\x90\x7f\x00\x00\x01"
        await self._answer(client, reader, reply, code == 0x5A, upstream)

    async def _connect(self, address: str, port: int) -> anyio.abc.SocketStream | None:
        host, port = self.upstream or (address, port)
        try:
            return await anyio.connect_tcp(host, port)
        except OSError:
            return None

    async def _answer(
        self,
        client: anyio.abc.SocketStream,
        reader: BufferedByteReceiveStream,
        reply: bytes,
        success: bool,
        upstream: anyio.abc.SocketStream | None,
    ) -> None:
        if self.script.close_at == "reply":  # half of a success reply
            await client.send(reply[: len(reply) // 2])
            return
        await client.send(reply)
        if not success or upstream is None:
            return
        self.tunnels += 1
        async with upstream, anyio.create_task_group() as tg:

            async def pump(
                source: anyio.abc.ByteReceiveStream, sink: anyio.abc.ByteSendStream
            ) -> None:
                try:
                    while True:
                        await sink.send(await source.receive())
                except _CONNECTION_ERRORS:
                    pass
                tg.cancel_scope.cancel()  # one side is done: so is the tunnel

            tg.start_soon(pump, reader, upstream)
            tg.start_soon(pump, upstream, client)


@asynccontextmanager
async def open_socks_server(
    script: SocksScript | None = None, *, upstream: tuple[str, int] | None = None
) -> AsyncIterator[SocksServer]:
    """A SOCKS proxy on 127.0.0.1 (a free port), serving until the block ends."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        server = SocksServer("127.0.0.1", port, script or SocksScript(), upstream)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, server._serve)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
