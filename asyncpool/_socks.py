"""The SOCKS handshake: turns a connected stream to a SOCKS proxy into a tunnel to the origin.

SOCKS5 (RFC 1928) with the "no authentication" and "username/password" (RFC 1929) methods,
and SOCKS4/SOCKS4a. The messages come from ``socksio`` (sans-I/O; the ``socks`` extra), the
framing is ours: every read asks for exactly the bytes the next message still lacks, so no
byte of the tunnel is taken, and a proxy cannot make us hold more than one reply (at most
262 bytes). Schemes, as curl and Go name them:

- ``socks5``: the client resolves the origin's name and sends the IP address;
- ``socks5h``: the name goes to the proxy, which resolves it;
- ``socks4a``: the name goes to the proxy; ``socks4``: the client resolves it (IPv4 only).

Timeouts are the caller's: it runs the handshake inside its dial deadline.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import NoReturn

import anyio
import anyio.abc

from ._errors import ConnectError, ProxyError
from ._models import _idna

__all__ = ["SOCKS_SCHEMES", "socks_handshake"]

SOCKS_SCHEMES = frozenset({"socks4", "socks4a", "socks5", "socks5h"})

_INSTALL_HINT = "SOCKS proxies need the socksio package: pip install 'asyncpool-http[socks]'"

# RFC 1928 section 6, the REP field of a reply.
_SOCKS5_REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused by destination host",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}

# The CD field of a SOCKS4 reply (0x5A is "request granted").
_SOCKS4_REPLIES = {
    0x5B: "request rejected or failed",
    0x5C: "request rejected: the proxy could not reach identd on the client",
    0x5D: "request rejected: identd did not confirm the user ID",
}


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Handshake:
    """One negotiation over ``stream``; every failure becomes a ProxyError naming both ends."""

    def __init__(self, stream: anyio.abc.ByteStream, proxy: str, target: str) -> None:
        self.stream = stream
        self.proxy = proxy
        self.target = target

    def fail(self, message: str) -> NoReturn:
        raise ProxyError(message, host=self.proxy, target=self.target)

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self.fail(f"sending to the SOCKS proxy failed during the handshake: {exc!r}")

    async def receive_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes: never more, so the tunnel's first bytes stay unread."""
        data = b""
        while len(data) < size:
            try:
                data += await self.stream.receive(size - len(data))
            except anyio.EndOfStream:
                self.fail("the SOCKS proxy closed the connection during the handshake")
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self.fail(f"reading from the SOCKS proxy failed during the handshake: {exc!r}")
        return data


async def _resolve(host: str, port: int, target: str, family: socket.AddressFamily) -> str:
    """The first address of ``host`` (an IP literal is its own)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    try:
        infos = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: not a valid IDNA name
        raise ConnectError(f"cannot resolve {host!r}: {exc}", host=target, phase="dns") from exc
    return str(infos[0][4][0])


def _encode_name(host: str, hs: _Handshake) -> bytes:
    try:
        name = host.encode("ascii")
    except UnicodeEncodeError:
        # IDNA 2008 (UTS 46), as the Host field, a CONNECT and DNS take it (Python's "idna"
        # codec is IDNA 2003: it maps "ß" to "ss", another domain).
        try:
            name = _idna(host).encode("ascii")
        except UnicodeEncodeError:
            hs.fail(f"cannot send the host name {host!r} to the proxy: not a name DNS can ask")
    if not 0 < len(name) <= 255:
        hs.fail(f"the host name is {len(name)} bytes long; SOCKS takes 1 to 255")
    return name


async def socks_handshake(
    stream: anyio.abc.ByteStream,
    *,
    scheme: str,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    proxy: str,
) -> None:
    """Ask the SOCKS proxy at the other end of ``stream`` for a tunnel to ``host:port``.

    ``scheme`` is "socks5", "socks5h", "socks4a" or "socks4" (see the module's docstring);
    ``username``/``password`` are sent with SOCKS5's username/password method (offered next
    to "no authentication"; SOCKS4 sends ``username`` as its user ID); ``proxy`` is the
    proxy's "host:port", for errors. On return ``stream`` carries the origin's bytes.

    Raises ProxyError (``host`` the proxy, ``target`` "host:port") when the proxy refuses, or
    closes or breaks the connection before the tunnel is up; ConnectError (phase "dns") when
    the client cannot resolve the origin's name itself (socks5, socks4); ImportError when
    socksio is not installed. On any error, cancellation included, ``stream`` is closed.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    hs = _Handshake(stream, proxy, _join_host_port(host, port))
    try:
        try:
            import socksio  # noqa: F401 - the extra's check; the steps import what they use
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        if scheme in ("socks5", "socks5h"):
            await _socks5(hs, scheme, host, port, username, password)
        elif scheme in ("socks4", "socks4a"):
            await _socks4(hs, scheme, host, port, username)
        else:
            raise ValueError(f"not a SOCKS scheme: {scheme!r} (one of {sorted(SOCKS_SCHEMES)})")
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


async def _socks5(
    hs: _Handshake,
    scheme: str,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
) -> None:
    import socksio

    method = socksio.SOCKS5AuthMethod
    credentials: tuple[bytes, bytes] | None = None
    if username is not None:
        user, secret = username.encode(), (password or "").encode()
        # RFC 1929: a name of 1 to 255 bytes; a password of up to 255 (Go allows it empty).
        if not 0 < len(user) <= 255 or len(secret) > 255:
            hs.fail("SOCKS5 takes a user name of 1 to 255 bytes and a password of 255 at most")
        credentials = (user, secret)
    if scheme == "socks5":
        address = await _resolve(host, port, hs.target, socket.AF_UNSPEC)
        command = socksio.SOCKS5CommandRequest.from_address(
            socksio.SOCKS5Command.CONNECT, (address, port)
        )
    else:
        command = socksio.SOCKS5CommandRequest.from_address(
            socksio.SOCKS5Command.CONNECT, (host, port)
        )
        if command.atype == socksio.SOCKS5AType.DOMAIN_NAME:
            command = command._replace(addr=_encode_name(host, hs))

    offered = [method.NO_AUTH_REQUIRED]
    if credentials is not None:
        offered.append(method.USERNAME_PASSWORD)
    await hs.send(socksio.SOCKS5AuthMethodsRequest(offered).dumps())
    answer = await hs.receive_exactly(2)
    if answer[0] != 5:
        hs.fail(f"not a SOCKS5 proxy: it answered {answer!r} to the greeting")
    if answer[1:2] not in offered:
        names = " or ".join(m.name.lower().replace("_", " ") for m in offered)
        hs.fail(
            "the SOCKS5 proxy accepted none of the authentication methods offered "
            f"({names}; it answered {answer[1]:#04x})"
        )
    if answer[1:2] == method.USERNAME_PASSWORD:
        assert credentials is not None
        await hs.send(socksio.SOCKS5UsernamePasswordRequest(*credentials).dumps())
        status = await hs.receive_exactly(2)
        # Only the status byte counts: some proxies answer version 5 here, not 1 (as Go).
        if status[1] != 0:
            hs.fail(
                f"the SOCKS5 proxy rejected the user name and password (status {status[1]:#04x})"
            )

    await hs.send(command.dumps())
    head = await hs.receive_exactly(4)  # VER REP RSV ATYP, then the bound address and port
    if head[0] != 5:
        hs.fail(f"not a SOCKS5 reply: {head!r}")
    if head[1] != 0:
        meaning = _SOCKS5_REPLIES.get(head[1], "unknown reply code")
        hs.fail(f"the SOCKS5 proxy refused the connection: {meaning} ({head[1]:#04x})")
    # The address the proxy bound for us: read (the tunnel starts after it), not used.
    if head[3] == 1:
        await hs.receive_exactly(4 + 2)
    elif head[3] == 4:
        await hs.receive_exactly(16 + 2)
    elif head[3] == 3:
        length = await hs.receive_exactly(1)
        await hs.receive_exactly(length[0] + 2)
    else:
        hs.fail(f"malformed SOCKS5 reply: unknown address type {head[3]:#04x}")


async def _socks4(
    hs: _Handshake,
    scheme: str,
    host: str,
    port: int,
    username: str | None,
) -> None:
    import socksio

    user_id = (username or "").encode()
    if b"\x00" in user_id:
        hs.fail("a SOCKS4 user ID cannot hold a NUL byte")
    # Built here, not with socksio's SOCKS4Request: that refuses an empty user ID, which is
    # what a proxy URL without credentials means.
    request = b"\x04" + socksio.SOCKS4Command.CONNECT + port.to_bytes(2, "big")
    if scheme == "socks4a" and not _is_ipv4(host):
        # 0.0.0.x (x nonzero): "the name follows the user ID"; an IPv6 literal goes as a name.
        name = _encode_name(host, hs)
        request += b"\x00\x00\x00\x01" + user_id + b"\x00" + name + b"\x00"
    else:
        address = await _resolve(host, port, hs.target, socket.AF_INET)
        if not _is_ipv4(address):
            hs.fail(f"SOCKS4 can only reach IPv4 addresses, not {address}; use socks4a or socks5")
        request += socket.inet_aton(address) + user_id + b"\x00"

    await hs.send(request)
    reply = await hs.receive_exactly(8)  # VN CD DSTPORT DSTIP
    if reply[0] != 0:
        hs.fail(f"not a SOCKS4 reply: {reply!r}")
    if reply[1] != 0x5A:
        meaning = _SOCKS4_REPLIES.get(reply[1], "unknown reply code")
        hs.fail(f"the SOCKS4 proxy refused the connection: {meaning} ({reply[1]:#04x})")


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False
