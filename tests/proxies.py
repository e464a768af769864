"""In-process HTTP proxy for the tests (anyio + h11): forwards absolute-form requests and opens
CONNECT tunnels, and misbehaves on purpose when told::

    async with open_proxy() as proxy:                 # http://127.0.0.1:<port>
        ... Transport(proxy=proxy.url) ...
        assert proxy.requests[0].target == "http://127.0.0.1:1234/"

``mode`` scripts the answer to CONNECT: ``"ok"`` (200, then a tunnel), ``"502"`` (Bad Gateway),
``"close"`` (200, then the connection is closed), ``"stall"`` (never answers; the proxy sets
``connect_received`` first, so a test can act while the client waits), ``"early-bytes"``
(200 and bytes the client did not ask for). ``auth="user:password"`` makes every request
without that ``Proxy-Authorization`` get ``407`` with ``Proxy-Authenticate``. ``ssl_context``
makes it an https:// proxy (TLS to the proxy itself).
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
from anyio.streams.tls import TLSStream


@dataclass
class ProxiedRequest:
    method: str
    target: str  # as the proxy received it: absolute form, or "host:port" for CONNECT
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class TestProxy:
    __test__ = False

    def __init__(self, port: int, *, mode: str, auth: str | None, tls: bool) -> None:
        self.port = port
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.mode = mode
        self.auth = None if auth is None else "Basic " + base64.b64encode(auth.encode()).decode()
        self.requests: list[ProxiedRequest] = []
        self.connections_accepted = 0
        self.open_connections = 0
        self.connect_received = anyio.Event()
        self._changed = anyio.Event()
        # Names the proxy resolves itself (as a real proxy's DNS would), so a test can use an
        # origin name that no resolver knows and that no proxy rule takes for loopback.
        self.hosts: dict[str, str] = {}

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: object, *, timeout: float = 5.0) -> None:
        assert callable(predicate)
        with anyio.fail_after(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def _serve(
        self, stream: anyio.abc.ByteStream, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.connections_accepted += 1
        self.open_connections += 1
        self._notify()
        try:
            if ssl_context is not None:
                stream = await TLSStream.wrap(
                    stream, server_side=True, ssl_context=ssl_context, standard_compatible=False
                )
            await self._serve_requests(stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
            self.open_connections -= 1
            self._notify()

    async def _serve_requests(self, stream: anyio.abc.ByteStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = await _next(conn, stream)
            if not isinstance(event, h11.Request):
                return
            request = ProxiedRequest(
                event.method.decode(),
                event.target.decode(),
                [(k.decode(), v.decode()) for k, v in event.headers],
            )
            self.requests.append(request)
            self._notify()
            if self.auth is not None and request.header("proxy-authorization") != self.auth:
                await stream.send(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 4\r\nConnection: close\r\n\r\nauth"
                )
                return
            if request.method == "CONNECT":
                await self._tunnel(stream, request, conn.trailing_data[0])
                return
            if not await self._forward(conn, stream, request):
                return
            conn.start_next_cycle()

    async def _tunnel(
        self, stream: anyio.abc.ByteStream, request: ProxiedRequest, early: bytes
    ) -> None:
        self.connect_received.set()
        if self.mode == "stall":  # never answers, and notices when the client gives up
            with suppress(anyio.EndOfStream):
                while True:
                    await stream.receive()
        if self.mode == "502":
            await stream.send(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        if self.mode == "close":
            await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return
        if self.mode == "early-bytes":
            await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\nsurprise")
            return
        host, _, port = request.target.rpartition(":")
        host = host.strip("[]")
        upstream = await anyio.connect_tcp(self.hosts.get(host, host), int(port))
        await stream.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if early:
            await upstream.send(early)
        async with upstream, anyio.create_task_group() as tg:

            async def pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
                with suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    async for chunk in source:
                        await sink.send(chunk)
                tg.cancel_scope.cancel()  # one side ended: the tunnel ends

            tg.start_soon(pump, stream, upstream)
            tg.start_soon(pump, upstream, stream)

    async def _forward(
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, request: ProxiedRequest
    ) -> bool:
        """Send an absolute-form request on to its origin (a new connection each time) and its
        response back; whether the client's connection stays open."""
        body = b""
        while True:
            event = await _next(conn, stream)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False
        url = urlsplit(request.target)
        assert url.hostname is not None and url.port is not None, request.target
        origin = h11.Connection(h11.CLIENT)
        fields = [
            (k, v)
            for k, v in request.headers
            if k.lower() not in ("proxy-authorization", "content-length", "transfer-encoding")
        ]
        fields.append(("Content-Length", str(len(body))))
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        assert url.hostname is not None
        async with await anyio.connect_tcp(
            self.hosts.get(url.hostname, url.hostname), url.port
        ) as upstream:
            await upstream.send(origin.send(h11.Request(method=request.method, target=path, headers=fields)) or b"")  # fmt: skip
            await upstream.send(origin.send(h11.Data(data=body)) or b"")
            await upstream.send(origin.send(h11.EndOfMessage()) or b"")
            response = await _next(origin, upstream)
            assert isinstance(response, h11.Response)
            data = b""
            while not isinstance(event := await _next(origin, upstream), h11.EndOfMessage):
                assert isinstance(event, h11.Data)
                data += event.data
        headers = [
            (k, v)
            for k, v in response.headers
            if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        headers.append((b"Content-Length", str(len(data)).encode()))
        out = conn.send(h11.Response(status_code=response.status_code, headers=headers)) or b""
        out += conn.send(h11.Data(data=data)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send(out)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _next(conn: h11.Connection, stream: anyio.abc.ByteStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)


@asynccontextmanager
async def open_proxy(
    *, mode: str = "ok", auth: str | None = None, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[TestProxy]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    proxy = TestProxy(port, mode=mode, auth=auth, tls=ssl_context is not None)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await proxy._serve(stream, ssl_context)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
