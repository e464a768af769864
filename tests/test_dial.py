"""Dialing: DNS, TCP, TLS with certificate checks and ALPN, and their timeouts, each failing
with an error that names the host and the phase."""

from __future__ import annotations

import gc
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.streams.tls import TLSStream

import asyncpool
from asyncpool import Request, Transport
from tests.servers import TestServer, TLSFixture, open_server

pytestmark = pytest.mark.anyio


async def test_tls_works_with_the_ca_in_tls_config(tls_server: TestServer, tls: TLSFixture) -> None:
    events: list[str] = []
    trace = asyncpool.ClientTrace(
        tls_handshake_start=lambda: events.append("start"),
        tls_handshake_done=lambda ssl_object, err: events.append(
            f"done:{ssl_object.selected_alpn_protocol()}:{err}"
        ),
    )
    async with Transport(tls_config=tls.client_context) as pool:
        for _ in range(2):
            response = await pool.round_trip(Request("GET", tls_server.url, trace=trace))
            assert await response.aread() == b"hello"
        assert pool.stats().dials == 1
    assert events == ["start", "done:http/1.1:None"]


async def test_a_self_signed_server_fails_verification_clearly(tls_server: TestServer) -> None:
    errors: list[BaseException | None] = []
    trace = asyncpool.ClientTrace(tls_handshake_done=lambda ssl_object, err: errors.append(err))
    async with Transport() as pool:
        with pytest.raises(asyncpool.TLSError, match="certificate verify failed") as info:
            await pool.round_trip(Request("GET", tls_server.url, trace=trace))
        assert info.value.phase == "tls"
        assert info.value.host == f"127.0.0.1:{tls_server.port}"
        assert pool.stats().total == 0
        assert pool.stats().failed_dials == 1
    assert errors == [info.value]


async def test_a_server_that_does_not_speak_tls(server: TestServer, tls: TLSFixture) -> None:
    async with Transport(tls_config=tls.client_context) as pool:
        with pytest.raises(asyncpool.TLSError, match="handshake failed"):
            await pool.round_trip(Request("GET", server.url.replace("http:", "https:")))


async def test_connection_refused_names_the_host_and_phase() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    events: list[str] = []
    trace = asyncpool.ClientTrace(
        connect_start=lambda network, addr: events.append(f"start:{network}"),
        connect_done=lambda network, addr, err: events.append(f"done:{type(err).__name__}"),
    )
    async with Transport() as pool:
        with pytest.raises(asyncpool.ConnectError, match="cannot connect") as info:
            await pool.round_trip(Request("GET", f"http://127.0.0.1:{port}/", trace=trace))
        assert (info.value.phase, info.value.host) == ("connect", f"127.0.0.1:{port}")
        assert pool.stats().total == 0
    assert events[0] == "start:tcp"
    assert events[1].startswith("done:") and events[1] != "done:NoneType"


async def test_a_name_is_resolved_and_each_address_tried(server: TestServer) -> None:
    events: list[object] = []
    trace = asyncpool.ClientTrace(
        dns_start=lambda info: events.append(("dns", info.host)),
        dns_done=lambda info: events.append(("resolved", info.err)),
        connect_done=lambda network, addr, err: events.append(("connected", addr[0], err is None)),
    )
    async with Transport() as pool:
        url = f"http://localhost:{server.port}/"
        response = await pool.round_trip(Request("GET", url, trace=trace))
        assert await response.aread() == b"hello"
    assert events[:2] == [("dns", "localhost"), ("resolved", None)]
    assert events[-1] == ("connected", "127.0.0.1", True)  # ::1 may have been refused first


async def test_a_host_name_that_is_not_valid_idna_is_refused_before_any_dial() -> None:
    """Its Host field would hold what Latin-1 cannot (the name is kept as given): refused as
    any such field is, before a dial (it failed to resolve before; with a custom dial, writers
    disagreed). No DNS query is sent."""
    errors: list[BaseException | None] = []
    trace = asyncpool.ClientTrace(dns_done=lambda info: errors.append(info.err))
    async with Transport() as pool:
        with pytest.raises(asyncpool.LocalProtocolError, match=r"'Host'.*Latin-1"):
            await pool.round_trip(Request("GET", "http://\u2603.test/", trace=trace))
        assert pool.stats().dials == pool.stats().failed_dials == 0
    assert errors == []


async def test_dial_timeout() -> None:
    async def never(host: str, port: int) -> anyio.abc.ByteStream:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async with Transport(dial=never, dial_timeout=0.01) as pool:
        with pytest.raises(asyncpool.ConnectTimeout, match="dial_timeout") as info:
            await pool.round_trip(Request("GET", "http://192.0.2.1/"))
        assert info.value.phase == "connect"
        assert pool.stats().total == 0


async def test_a_custom_dial_error_is_a_connect_error() -> None:
    async def refuse(host: str, port: int) -> anyio.abc.ByteStream:
        raise ConnectionRefusedError(f"no route to {host}")

    async with Transport(dial=refuse) as pool:
        with pytest.raises(asyncpool.ConnectError, match=r"no route to 192\.0\.2\.1"):
            await pool.round_trip(Request("GET", "http://192.0.2.1/"))


async def test_a_custom_dial_that_returns_none_is_not_reported_as_a_timeout() -> None:
    async def forgot_to_return(host: str, port: int) -> anyio.abc.ByteStream:
        await anyio.lowlevel.checkpoint()
        return None  # type: ignore[return-value]

    async with Transport(dial=forgot_to_return) as pool:
        with pytest.raises(TypeError, match="returned None"):
            await pool.round_trip(Request("GET", "http://192.0.2.1/"))
        assert pool.stats().total == 0


@pytest.mark.parametrize("error", [anyio.EndOfStream, anyio.BrokenResourceError])
async def test_a_custom_dial_whose_stream_broke_is_a_connect_error(error: type[Exception]) -> None:
    """A dial function that talks to a proxy or tunnel first sees anyio's stream errors when it
    hangs up; they are connect errors too, not anyio exceptions leaking out of round_trip."""

    async def tunnel(host: str, port: int) -> anyio.abc.ByteStream:
        raise error  # e.g. `await proxy.receive()` after the proxy closed

    async with Transport(dial=tunnel) as pool:
        with pytest.raises(asyncpool.ConnectError, match=error.__name__) as info:
            await pool.round_trip(Request("GET", "http://192.0.2.1/"))
        assert (info.value.phase, info.value.host) == ("connect", "192.0.2.1:80")
        assert pool.stats().failed_dials == 1


@pytest.fixture
async def silent_server(anyio_backend: str) -> AsyncIterator[int]:
    """Accepts TCP connections and never says a word (a TLS handshake stalls)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    accepted: list[anyio.abc.SocketStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        accepted.append(stream)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()
    for stream in accepted:
        await stream.aclose()
    await listener.aclose()


async def test_tls_handshake_timeout(silent_server: int, tls: TLSFixture) -> None:
    async with Transport(tls_config=tls.client_context, tls_handshake_timeout=0.05) as pool:
        with pytest.raises(asyncpool.TLSHandshakeTimeout, match="tls_handshake_timeout") as info:
            await pool.round_trip(Request("GET", f"https://127.0.0.1:{silent_server}/"))
        assert info.value.phase == "tls"
        assert pool.stats().total == 0


class EOFWatcher:
    """A TCP server that sends ``greeting`` to each client, then waits for the client to
    close: ``closed`` counts the clients that did."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.closed = 0
        self.changed = anyio.Event()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if self.greeting:
                await stream.send(self.greeting)
            try:
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        self.closed += 1
        self.changed.set()


@pytest.fixture
async def eof_watcher(anyio_backend: str) -> AsyncIterator[tuple[EOFWatcher, int]]:
    watcher = EOFWatcher()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, watcher.handle)
        yield watcher, listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


class HookFailed(Exception):
    pass


def fail(*args: object) -> None:
    raise HookFailed


@pytest.mark.parametrize("hook", ["tls_handshake_start", "tls_handshake_done"])
async def test_a_tls_hook_that_raises_closes_the_socket(
    eof_watcher: tuple[EOFWatcher, int], tls: TLSFixture, hook: str
) -> None:
    watcher, port = eof_watcher
    watcher.greeting = b"HTTP/1.1 400 Bad Request\r\n\r\n"  # not TLS: the handshake fails
    trace = asyncpool.ClientTrace(**{hook: fail})
    async with Transport(tls_config=tls.client_context) as pool:
        with pytest.raises(HookFailed):
            await pool.round_trip(Request("GET", f"https://127.0.0.1:{port}/", trace=trace))
        with anyio.fail_after(5):
            await watcher.changed.wait()  # the socket was left open before
        assert watcher.closed == 1


async def test_the_done_hooks_of_a_timed_out_phase_fire(
    silent_server: int, tls: TLSFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Go's ConnectDone and TLSHandshakeDone fire with the error when a phase times out;
    their start hooks fired alone here, and a span or waterfall kept them open."""
    events: list[tuple[str, object]] = []
    trace = asyncpool.ClientTrace(
        connect_done=lambda network, address, error: events.append(("connect", error)),
        tls_handshake_done=lambda ssl_object, error: events.append(("tls", error)),
    )
    async with Transport(tls_config=tls.client_context, tls_handshake_timeout=0.05) as pool:
        with pytest.raises(asyncpool.TLSHandshakeTimeout):
            url = f"https://127.0.0.1:{silent_server}/"
            await pool.round_trip(Request("GET", url, trace=trace))
    assert [kind for kind, _ in events] == ["connect", "tls"]
    error = events[1][1]
    assert isinstance(error, asyncpool.TLSError) and "tls_handshake_timeout" in str(error)

    async def stalled_connect(*args: object) -> anyio.abc.ByteStream:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    monkeypatch.setattr("asyncpool._dial._connect_tcp", stalled_connect)
    events.clear()
    async with Transport(dial_timeout=0.05) as pool:
        with pytest.raises(asyncpool.ConnectTimeout):
            await pool.round_trip(Request("GET", "http://127.0.0.1:9/", trace=trace))
    async with Transport() as pool:
        with anyio.move_on_after(0):  # the caller gives up; its dial goes on in the pool
            await pool.round_trip(Request("GET", "http://127.0.0.1:9/", trace=trace))
        assert pool.stats().dialing == 1
    # ... until the pool closes: cancelled, not timed out
    assert isinstance(events[0][1], asyncpool.ConnectTimeout)
    assert isinstance(events[1][1], ConnectionAbortedError)


async def test_a_fully_qualified_name_is_checked_without_its_dot(
    tls_server: TestServer, tls: TLSFixture
) -> None:
    async def to_the_server(host: str, port: int) -> anyio.abc.ByteStream:
        return await anyio.connect_tcp("127.0.0.1", tls_server.port)

    async with Transport(tls_config=tls.client_context, dial=to_the_server) as pool:
        response = await pool.round_trip(Request("GET", "https://localhost./"))
        assert await response.aread() == b"hello"  # the certificate names "localhost"


async def test_a_server_name_ssl_refuses_is_a_tls_error(tls_server: TestServer) -> None:
    async def to_the_server(host: str, port: int) -> anyio.abc.ByteStream:
        return await anyio.connect_tcp("127.0.0.1", tls_server.port)

    async with Transport(dial=to_the_server) as pool:
        with pytest.raises(asyncpool.TLSError, match=r"invalid TLS server name '\.localhost'"):
            await pool.round_trip(Request("GET", "https://.localhost/"))


async def test_sni_hostname_overrides_the_tls_server_name(
    tls_server: TestServer, tls: TLSFixture
) -> None:
    names: list[str | None] = []
    tls.server_context.sni_callback = lambda ssl_object, name, context: names.append(name)
    try:
        async with Transport(tls_config=tls.client_context) as pool:
            for sni in (None, "localhost"):
                response = await pool.round_trip(Request("GET", tls_server.url, sni_hostname=sni))
                assert await response.aread() == b"hello"
            hosts = set(pool.stats().hosts)
    finally:
        tls.server_context.sni_callback = None
    assert names == [None, "localhost"]  # no SNI for an IP address; the override is sent
    assert hosts == {tls_server.origin, f"{tls_server.origin}|sni=localhost"}


async def test_a_request_target_override(server: TestServer) -> None:
    async with Transport() as pool:
        response = await pool.round_trip(Request("GET", server.url, target="/bytes?n=3"))
        assert await response.aread() == b"xxx"
    with pytest.raises(asyncpool.LocalProtocolError, match="invalid request target"):
        Request("GET", server.url, target="/a b")


async def test_closing_the_pool_mid_handshake_leaks_no_socket(
    silent_server: int, tls: TLSFixture
) -> None:
    async with Transport(tls_config=tls.client_context) as pool:
        with anyio.move_on_after(0.05):
            await pool.round_trip(Request("GET", f"https://127.0.0.1:{silent_server}/"))
        assert pool.stats().dialing == 1  # the dial goes on in the pool's task group
    gc.collect()  # an unclosed socket would warn here (an error under -W error)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_http2_preface_never_answered_is_a_timeout_error(
    scheme: str, tls: TLSFixture, anyio_backend: str
) -> None:
    """The server accepts (and for https picks h2 by ALPN) but never sends its SETTINGS: the
    wait is bounded by tls_handshake_timeout and fails with an asyncpool error, not anyio's
    bare TimeoutError."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server_context.set_alpn_protocols(["h2"])
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list[anyio.abc.ByteStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        if scheme == "https":
            accepted.append(
                await TLSStream.wrap(stream, server_side=True, ssl_context=server_context)
            )
        accepted.append(stream)
        await anyio.sleep_forever()

    expected = asyncpool.TLSHandshakeTimeout if scheme == "https" else asyncpool.ConnectTimeout
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        async with Transport(
            tls_config=tls.client_context,
            http2_prior_knowledge=scheme == "http",
            tls_handshake_timeout=0.05,
        ) as pool:
            with anyio.fail_after(5), pytest.raises(expected, match="SETTINGS") as info:
                await pool.round_trip(Request("GET", f"{scheme}://127.0.0.1:{port}/"))
            assert info.value.host == f"127.0.0.1:{port}"
            assert pool.stats().total == 0
        tg.cancel_scope.cancel()
    for stream in accepted:
        await anyio.aclose_forcefully(stream)
    await listener.aclose()


async def test_an_ipv6_literal_is_named_with_brackets_in_errors_and_get_conn() -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    names: list[str] = []
    trace = asyncpool.ClientTrace(get_conn=names.append)
    async with Transport() as pool:
        with pytest.raises(asyncpool.ConnectError) as info:
            await pool.round_trip(Request("GET", f"http://[::1]:{port}/", trace=trace))
    assert info.value.host == f"[::1]:{port}"  # as Go's net.JoinHostPort, not "::1:port"
    assert names == [f"[::1]:{port}"]


async def test_a_connection_reset_before_the_http2_preface_is_a_network_error(
    anyio_backend: str,
) -> None:
    """The server resets the connection before the client sent its HTTP/2 preface: sending it
    fails with an asyncpool error, not a raw anyio/OS exception."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    reset = anyio.Event()

    async def reset_at_once(stream: anyio.abc.SocketStream) -> None:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # an RST, not a FIN
        reset.set()

    async def dial_after_reset(host: str, port: int) -> anyio.abc.ByteStream:
        stream = await anyio.connect_tcp(host, port)
        await reset.wait()
        return stream

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, reset_at_once)
        async with Transport(http2_prior_knowledge=True, dial=dial_after_reset) as pool:
            with anyio.fail_after(5), pytest.raises(asyncpool.NetworkError) as info:
                await pool.round_trip(Request("GET", f"http://127.0.0.1:{port}/"))
            assert info.value.host == f"127.0.0.1:{port}"
            assert pool.stats().total == 0
        tg.cancel_scope.cancel()
    await listener.aclose()


async def test_a_tls_config_shared_by_transports_is_used_as_given(
    anyio_backend: str, tls: TLSFixture
) -> None:
    """A Transport uses the context it is given as given: one made later with the same context
    (http2 on) must not make an earlier one offer h2 (with no ALPN set on the context, both
    speak HTTP/1.1, here to a server that would take h2)."""
    shared = ssl.create_default_context()
    tls.ca.configure_trust(shared)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server_context.set_alpn_protocols(["h2", "http/1.1"])  # picks h2 when offered
    http1_only = Transport(tls_config=shared, http2=False)
    Transport(tls_config=shared)  # another Transport on the same context, http2 on
    async with open_server(ssl_context=server_context) as server, http1_only as pool:
        with anyio.fail_after(5):
            response = await pool.round_trip(Request("GET", server.url))
            assert (response.http_version, await response.aread()) == ("HTTP/1.1", b"hello")
