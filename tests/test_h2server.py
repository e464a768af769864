"""Self-tests of the in-process HTTP/2 test server, with a raw h2 client over anyio sockets."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import anyio
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from tests.h2server import H2TestServer, make_h2_server_context, open_h2_server
from tests.servers import TLSFixture

pytestmark = pytest.mark.anyio


class RawH2Client:
    """Minimal h2 client over one anyio stream: it keeps what arrived per stream."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.headers: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.events: list[h2.events.Event] = []
        self.eof = False
        self.unparsed = b""  # what arrived once h2 gave up (it rejects frames after GOAWAY)

    async def request(self, path: str, method: str = "GET", body: bytes = b"") -> int:
        stream_id = self.h2.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "t")]
        self.h2.send_headers(stream_id, fields, end_stream=not body)
        while body:  # within the server's flow-control windows
            size = min(len(body), self.h2.local_flow_control_window(stream_id), 16384)
            if size == 0:
                await self.flush()
                await self.pump(lambda: self.h2.local_flow_control_window(stream_id) > 0)
                continue
            self.h2.send_data(stream_id, body[:size], end_stream=size == len(body))
            body = body[size:]
        await self.flush()
        return stream_id

    async def response(self, stream_id: int) -> tuple[int, bytes]:
        await self.pump(lambda: stream_id in self.ended)
        return int(self.headers[stream_id][":status"]), bytes(self.bodies.get(stream_id, b""))

    async def flush(self) -> None:
        await self.stream.send(self.h2.data_to_send())

    async def pump(self, until: Callable[[], bool]) -> None:
        """Read and handle events until ``until()`` holds (or the server closes)."""
        with anyio.fail_after(5):
            while not until() and not self.eof:
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    self.eof = True
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.unparsed += data
                    continue
                for event in events:
                    self._handle(event)
                if data_to_send := self.h2.data_to_send():
                    await self.stream.send(data_to_send)

    def _handle(self, event: h2.events.Event) -> None:
        self.events.append(event)
        if isinstance(event, h2.events.ResponseReceived):
            self.headers[event.stream_id] = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = event.error_code

    def first(self, kind: type[h2.events.Event]) -> h2.events.Event | None:
        return next((e for e in self.events if isinstance(e, kind)), None)


async def connect(server: H2TestServer, ssl_context: ssl.SSLContext | None = None) -> RawH2Client:
    if ssl_context is None:
        client = RawH2Client(await anyio.connect_tcp(server.host, server.port))
    else:
        stream = await anyio.connect_tcp(
            server.host, server.port, ssl_context=ssl_context, tls_standard_compatible=False
        )
        client = RawH2Client(stream)
    await client.flush()
    return client


async def test_get_root_over_h2c(anyio_backend: str) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:
            assert await client.response(await client.request("/")) == (200, b"hello")
        req = server.requests[0]
        assert (req.method, req.path, req.scheme, req.authority) == ("GET", "/", "http", "t")
        assert server.url == f"http://127.0.0.1:{server.port}"
        await server.wait_until(lambda s: s.open_connections == 0)
    assert server.connections_accepted == 1 and not server.handler_errors


async def test_get_root_over_tls_with_alpn_h2(anyio_backend: str, tls: TLSFixture) -> None:
    context = ssl.create_default_context()
    tls.ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    async with open_h2_server(ssl_context=make_h2_server_context(tls)) as server:
        assert server.url_for("x") == f"https://127.0.0.1:{server.port}/x"
        client = await connect(server, context)
        async with client.stream:
            assert client.stream.extra(TLSAttribute.alpn_protocol) == "h2"
            assert await client.response(await client.request("/")) == (200, b"hello")
        assert server.connections[0].alpn_protocol == "h2"


async def test_concurrent_streams_on_one_connection(anyio_backend: str) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:
            first, second = await client.request("/wait"), await client.request("/wait")
            await server.wait_until(lambda s: s.active_streams == 2)
            server.release.set()
            assert await client.response(first) == (200, b"released")
            assert await client.response(second) == (200, b"released")
            await server.wait_until(lambda s: s.active_streams == 0)
        assert server.max_active_streams_seen == 2
        assert {req.connection_id for req in server.requests} == {0}


async def test_settings_are_advertised_and_upload_respects_tiny_window(anyio_backend: str) -> None:
    async with open_h2_server(
        max_concurrent_streams=1, initial_window_size=10, max_frame_size=32768
    ) as server:
        client = await connect(server)
        async with client.stream:
            await client.pump(lambda: client.first(h2.events.RemoteSettingsChanged) is not None)
            settings = client.h2.remote_settings
            assert settings.max_concurrent_streams == 1
            assert settings[SettingCodes.INITIAL_WINDOW_SIZE] == 10
            assert settings.max_frame_size == 32768
            body = bytes(range(256)) * 20  # 5120 bytes through a 10-byte stream window
            status, echoed = await client.response(await client.request("/echo", "POST", body))
        assert (status, echoed, client.headers[1]["x-body-length"]) == (200, body, "5120")
        assert server.requests[0].body == body


async def test_stream_over_the_limit_is_refused(anyio_backend: str) -> None:
    async with open_h2_server(max_concurrent_streams=1) as server:
        client = await connect(server)
        async with client.stream:
            first, second = await client.request("/wait"), await client.request("/wait")
            await client.pump(lambda: second in client.resets)
            assert client.resets[second] == ErrorCodes.REFUSED_STREAM
            server.release.set()
            assert await client.response(first) == (200, b"released")
        assert [req.stream_id for req in server.refused_requests] == [second]
        assert server.max_active_streams_seen == 1 and not server.protocol_errors


async def test_large_download_respects_flow_control(anyio_backend: str) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:  # h2 itself fails if the server overruns a window
            status, body = await client.response(await client.request("/bytes?n=1048576"))
            assert (status, len(body)) == (200, 1048576)
            status, body = await client.response(await client.request("/stream?chunks=4&size=5"))
            assert (status, body) == (200, b"x" * 20)


async def test_goaway_lets_accepted_streams_finish_then_closes(anyio_backend: str) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:
            assert await client.response(await client.request("/")) == (200, b"hello")
            waiting = await client.request("/wait")
            await server.wait_until(lambda s: s.active_streams == 1)
            await server.goaway()
            await client.pump(lambda: client.first(h2.events.ConnectionTerminated) is not None)
            goaway = client.first(h2.events.ConnectionTerminated)
            assert isinstance(goaway, h2.events.ConnectionTerminated)
            assert (goaway.last_stream_id, goaway.error_code) == (3, ErrorCodes.NO_ERROR)
            assert server.open_connections == 1  # stream 3 is still running
            server.release.set()
            await client.pump(lambda: False)  # until the server closes
            assert client.eof and waiting == 3 and b"released" in client.unparsed
        await server.wait_until(lambda s: s.open_connections == 0)
        assert not server.protocol_errors and not server.handler_errors


@pytest.mark.parametrize(
    ("path", "code"),
    [("/reset", ErrorCodes.INTERNAL_ERROR), ("/refuse", ErrorCodes.REFUSED_STREAM)],
)
async def test_server_resets_stream(anyio_backend: str, path: str, code: ErrorCodes) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:
            stream_id = await client.request(path)
            await client.pump(lambda: stream_id in client.resets)
            assert client.resets[stream_id] == code


async def test_client_reset_is_recorded_and_cancels_the_handler(anyio_backend: str) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:
            stream_id = await client.request("/wait")
            await server.wait_until(lambda s: s.active_streams == 1)
            client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
            await client.flush()
            await server.wait_until(lambda s: s.resets_received == [(1, ErrorCodes.CANCEL)])
            assert server.active_streams == 0 and not server.handler_errors


async def test_silence_withholds_ping_acks(anyio_backend: str) -> None:
    async with open_h2_server() as server:
        client = await connect(server)
        async with client.stream:
            await client.pump(lambda: client.first(h2.events.SettingsAcknowledged) is not None)
            server.silence()
            client.h2.ping(b"12345678")
            await client.flush()
            await server.wait_until(lambda s: s.connections[0].held_bytes > 0)
            assert server.pings_received == 0
            server.unsilence()
            await client.pump(lambda: client.first(h2.events.PingAckReceived) is not None)
            assert server.pings_received == 1
