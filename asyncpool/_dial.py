"""Dialing: DNS, TCP connect (or a Unix socket), TLS with ALPN. Produces a connected byte stream
or a typed error that names the host and the phase (dns, connect, tls).

What only a connection needs is imported by the first one, not by ``import asyncpool``: the
asyncio stream (with asyncio) on the first TCP connect, anyio's TLS stream on the first TLS
handshake, certifi (with importlib.resources) when the first default
SSL context is made."""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ._errors import ConnectError, ConnectTimeout, TLSError, TLSHandshakeTimeout
from ._sync import _running_backend
from ._trace import ClientTrace, DNSDoneInfo, DNSStartInfo

if TYPE_CHECKING:
    from anyio.streams.tls import TLSStream

__all__ = ["DialFunc", "Dialed", "default_ssl_context", "dial"]

# A replacement for DNS + TCP connect, as Go's DialContext: (host, port) -> stream.
DialFunc = Callable[[str, int], Awaitable["anyio.abc.ByteStream"]]


def default_ssl_context(alpn: list[str]) -> ssl.SSLContext:
    """Verification on, hostname checks on, certifi's CA bundle, ALPN as given."""
    import certifi  # here, once per Transport: it loads importlib.resources (5 % of the import)

    context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(alpn)
    return context


@dataclass
class Dialed:
    stream: anyio.abc.ByteStream
    alpn_protocol: str | None
    local_address: Any
    remote_address: Any


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int, host_port: str, trace: ClientTrace | None) -> list[str]:
    if _is_ip_literal(host):
        return [host]
    if trace and trace.dns_start:
        trace.dns_start(DNSStartInfo(host))
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: not a valid IDNA name
        if trace and trace.dns_done:
            trace.dns_done(DNSDoneInfo([], exc))
        raise ConnectError(f"cannot resolve {host!r}: {exc}", host=host_port, phase="dns") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if trace and trace.dns_done:
        trace.dns_done(DNSDoneInfo(addresses, None))
    return addresses


async def _connect_tcp(
    address: str, port: int, local_host: str | None = None
) -> anyio.abc.ByteStream:
    if _running_backend() == "trio":  # trio is optional: imported only when it runs
        from ._trio_stream import connect_tcp_trio

        return await connect_tcp_trio(address, port, local_host)
    from ._asyncio_stream import connect_tcp_asyncio  # once per connection: imports asyncio

    return await connect_tcp_asyncio(address, port, local_host)


async def _connect(
    host: str,
    port: int,
    host_port: str,
    trace: ClientTrace | None,
    local_host: str | None = None,
    deadline: float = math.inf,
) -> anyio.abc.ByteStream:
    """A TCP connection to the first of ``host``'s addresses that takes one; ``deadline``:
    the dial's (a cancellation past it is the timeout, for ``connect_done``)."""
    last_error: OSError | None = None
    for address in await _resolve(host, port, host_port, trace):
        if trace and trace.connect_start:
            trace.connect_start("tcp", (address, port))
        try:
            stream = await _connect_tcp(address, port, local_host)
        except OSError as exc:
            last_error = exc
            if trace and trace.connect_done:
                trace.connect_done("tcp", (address, port), exc)
            continue
        except BaseException:  # cancelled: dial_timeout, or the caller; the hooks stay paired
            if trace and trace.connect_done:
                trace.connect_done(
                    "tcp", (address, port), _connect_interrupted(host_port, deadline)
                )
            raise
        if trace and trace.connect_done:
            try:
                trace.connect_done("tcp", (address, port), None)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        return stream
    raise ConnectError(f"cannot connect: {last_error}", host=host_port) from last_error


async def _connect_unix(
    path: str, host_port: str, trace: ClientTrace | None
) -> anyio.abc.ByteStream:
    """A connection to the Unix socket ``path``; the hooks see ("unix", (path, 0))."""
    address = (path, 0)
    if trace and trace.connect_start:
        trace.connect_start("unix", address)
    try:
        stream = await anyio.connect_unix(path)
    except OSError as exc:
        if trace and trace.connect_done:
            trace.connect_done("unix", address, exc)
        raise ConnectError(
            f"cannot connect to the Unix socket {path!r}: {exc}", host=host_port
        ) from exc
    if trace and trace.connect_done:
        try:
            trace.connect_done("unix", address, None)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    return stream


async def _handshake(
    stream: anyio.abc.ByteStream,
    server_name: str,
    host_port: str,
    context: ssl.SSLContext,
    alpn_protocols: list[str] | None,
    trace: ClientTrace | None,
    deadline: float = math.inf,
) -> TLSStream:
    """``stream`` wrapped in TLS, or a TLSError; ``deadline``: the handshake's (a
    cancellation past it is the timeout, for ``tls_handshake_done``)."""
    if server_name.endswith("."):  # a fully qualified name: named and checked without its dot
        server_name = server_name.rstrip(".")  # (as Go, curl and urllib3 do)
    if trace and trace.tls_handshake_start:
        try:
            trace.tls_handshake_start()
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    # Only on a context asyncpool made (None: the caller's, used as given). It may be shared by
    # Transports that offer different protocols: set this pool's again; wrap() copies them into
    # the new TLS connection before its first await.
    if alpn_protocols is not None:
        context.set_alpn_protocols(alpn_protocols)
    from anyio.streams.tls import TLSAttribute, TLSStream  # once per TLS connection

    try:
        tls = await TLSStream.wrap(
            stream, hostname=server_name, ssl_context=context, standard_compatible=False
        )
    except ssl.SSLCertVerificationError as exc:
        error = TLSError(f"certificate verify failed: {exc.verify_message}", host=host_port)
    except (ssl.SSLError, OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        error = TLSError(f"handshake failed: {exc!r}", host=host_port)
    except ValueError as exc:  # a name ssl refuses to send (".example", "")
        error = TLSError(f"invalid TLS server name {server_name!r}: {exc}", host=host_port)
    except BaseException:  # cancelled (a timeout, the pool closing): the socket goes too
        try:
            if trace and trace.tls_handshake_done:
                trace.tls_handshake_done(None, _handshake_interrupted(host_port, deadline))
        finally:
            await anyio.aclose_forcefully(stream)
        raise
    else:
        if trace and trace.tls_handshake_done:
            try:
                trace.tls_handshake_done(tls.extra(TLSAttribute.ssl_object), None)
            except BaseException:
                await anyio.aclose_forcefully(tls)
                raise
        return tls
    try:
        if trace and trace.tls_handshake_done:
            trace.tls_handshake_done(None, error)
    finally:
        await anyio.aclose_forcefully(stream)
    raise error from error.__context__


def _connect_interrupted(host_port: str, deadline: float) -> OSError:
    """What ``connect_done`` gets for a connect cancelled before its end, as Go's hook gets
    the context's error: past the dial's ``deadline`` a timeout, else a cancellation (the
    pool closing)."""
    if anyio.current_time() >= deadline:
        return ConnectTimeout("no connection within dial_timeout", host=host_port)
    return ConnectionAbortedError("the dial was cancelled")


def _handshake_interrupted(host_port: str, deadline: float) -> TLSError:
    """What ``tls_handshake_done`` gets for a handshake cancelled before its end."""
    if anyio.current_time() >= deadline:
        return TLSError("no TLS handshake within tls_handshake_timeout", host=host_port)
    return TLSError("the TLS handshake was cancelled", host=host_port)


async def dial(
    scheme: str,
    host: str,
    port: int,
    host_port: str,
    *,
    server_name: str,
    dial_timeout: float | None,
    tls_handshake_timeout: float | None,
    ssl_context: ssl.SSLContext | None,
    alpn_protocols: list[str] | None,
    dial_func: DialFunc | None,
    trace: ClientTrace | None,
    uds: str | None = None,
    local_address: str | None = None,
) -> Dialed:
    """A connected (and for https, TLS-wrapped) stream to ``host:port``: by ``dial_func`` if
    given, else to the Unix socket ``uds`` if given (whatever the host; TLS still names it),
    else by DNS and TCP, from the IP ``local_address`` if given."""
    stream: anyio.abc.ByteStream | None = None
    with anyio.move_on_after(dial_timeout) as dial_scope:
        if dial_func is not None:
            try:
                stream = await dial_func(host, port)
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                raise ConnectError(f"cannot connect: {exc!r}", host=host_port) from exc
        elif uds is not None:
            stream = await _connect_unix(uds, host_port, trace)
        else:
            stream = await _connect(
                host, port, host_port, trace, local_address, dial_scope.deadline
            )
    if stream is None and not dial_scope.cancelled_caught:
        raise TypeError(f"the dial function {dial_func!r} returned None, not a byte stream")
    if stream is None:
        raise ConnectTimeout(f"no connection within dial_timeout={dial_timeout}s", host=host_port)

    alpn: str | None = None
    if scheme == "https":
        assert ssl_context is not None
        tls: TLSStream | None = None
        with anyio.move_on_after(tls_handshake_timeout) as tls_scope:
            tls = await _handshake(
                stream, server_name, host_port, ssl_context, alpn_protocols, trace,
                tls_scope.deadline,
            )  # fmt: skip
        if tls is None:
            await anyio.aclose_forcefully(stream)
            raise TLSHandshakeTimeout(
                f"no TLS handshake within tls_handshake_timeout={tls_handshake_timeout}s",
                host=host_port,
            )
        from anyio.streams.tls import TLSAttribute  # loaded by _handshake: a dict lookup

        alpn = tls.extra(TLSAttribute.alpn_protocol, None)
        stream = tls
    return Dialed(
        stream=stream,
        alpn_protocol=alpn,
        local_address=stream.extra(anyio.abc.SocketAttribute.local_address, None),
        remote_address=stream.extra(anyio.abc.SocketAttribute.remote_address, None),
    )
