"""Proxies: parsing a proxy URL, choosing each request's route, and dialing through a proxy.

Theory of operation
-------------------
``Transport(proxy=...)`` is a URL string or a function ``(Request) -> str | None`` (Go's
``Proxy``). For each request the Transport asks ``ProxyChooser.route`` which way it goes:

* no proxy: the request's own ``pool_key``, the usual direct dial (no allocation: ``None``);
* ``http://`` target through an HTTP(S) proxy: *forwarded*. The request goes in absolute form
  (``GET http://host/path``) on a connection to the proxy, with ``Proxy-Authorization``, and the
  pool key is the proxy alone (``"via http://proxy:3128"``), so every origin shares the
  connections to the proxy, as Go's ``connectMethodKey`` does;
* any other target (``https://`` through an HTTP(S) proxy, everything through SOCKS):
  *tunnelled*. The dial connects to the proxy (TLS to the proxy itself for ``https://``
  proxies, verified with the Transport's SSL context against the proxy's name), asks it for a
  tunnel (``CONNECT host:port`` or the SOCKS handshake), then does TLS with the origin's name and
  ALPN inside it (TLS in TLS through an ``https://`` proxy). The pool key is the request's key
  and the proxy: ``"https://origin via http://proxy:3128"``.

The pool itself never learns about proxies: it only sees keys. ``Transport.stats()`` names
hosts by these keys. Keys and every URL handed to hooks and errors carry the proxy's user name
but never its password.

An explicit proxy applies to every request, loopback included (Go's ``ProxyURL``); only the
environment's rules (``proxy_from_environment``) skip ``localhost`` and loopback addresses.

The CONNECT (or SOCKS) negotiation gets ``dial_timeout`` of its own; a proxy that stalls raises
``ConnectTimeout`` and one that refuses, closes or answers oddly raises ``ProxyError``, both
with ``host`` the proxy ("host:port"). Failures at the origin (its TLS handshake) name the
origin.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc

from ._dial import Dialed, DialFunc, _handshake, dial
from ._errors import ConnectTimeout, HTTPError, ProxyError, TLSHandshakeTimeout
from ._models import Request, _idna
from ._proxy_env import (
    EnvironmentProxies,
    hide_password,
    proxy_from_environment,
    redact_password,
)
from ._socks import socks_handshake
from ._trace import ClientTrace, ProxyConnectDoneInfo, ProxyConnectStartInfo

__all__ = [
    "OnProxyConnectResponse",
    "Proxy",
    "ProxyChooser",
    "ProxyConnectHeaders",
    "ProxyOption",
    "Route",
    "dial_through",
    "parse_proxy",
]

# Transport(proxy=...): a URL, or Go's Proxy function (None: this request goes direct).
ProxyOption = str | Callable[[Request], str | None] | None
# Transport(proxy_connect_headers=...): fields for every CONNECT, or a function of
# (proxy URL, "host:port") giving them (Go's ProxyConnectHeader, GetProxyConnectHeader).
ProxyConnectHeaders = Mapping[str, str] | Callable[[str, str], Mapping[str, str]] | None
# (proxy URL, "host:port", status code, header fields) of each answer to CONNECT, 2xx or not
# (Go's OnProxyConnectResponse): raising fails the dial with that exception.
OnProxyConnectResponse = Callable[[str, str, int, list[tuple[str, str]]], object]

HTTP_SCHEMES = ("http", "https")
SOCKS_SCHEMES = ("socks5", "socks5h", "socks4a", "socks4")
# As Go's canonicalAddr (and curl for socks4, which Go does not speak).
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "socks5": 1080,
    "socks5h": 1080,
    "socks4a": 1080,
    "socks4": 1080,
}
MAX_CONNECT_HEAD = 64 * 1024  # bytes of a CONNECT answer's head before giving up on the proxy


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL. ``url`` is its redacted form (no password): the one keys, hooks and
    errors show."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    url: str
    # What routes through it are pooled by: ``url``, and with a password a keyed digest of it
    # (this process's key), so that a tunnel opened with one password never serves a request
    # that gives another (Go keys by the whole URL), and the password itself is never shown.
    key: str

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_http(self) -> bool:
        return self.scheme in HTTP_SCHEMES

    @functools.cached_property
    def authorization(self) -> str | None:
        """``Proxy-Authorization`` for an HTTP proxy with credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


@functools.lru_cache(maxsize=64)
def parse_proxy(url: str) -> Proxy:
    """``http://``, ``https://``, ``socks5://``, ``socks5h://``, ``socks4a://``, ``socks4://``,
    with optional ``user:password@``; a bare ``host:port`` is an HTTP proxy. Raises
    ``ValueError``."""
    if "://" not in url:
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        detail = hide_password(str(exc), url)  # (the message may quote it)
        raise ValueError(f"invalid proxy URL {redact_password(url)!r}: {detail}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"unsupported proxy scheme {scheme!r} in {redact_password(url)!r}: use http, https, "
            "socks5, socks5h, socks4a or socks4"
        )
    if not parts.hostname:
        raise ValueError(f"proxy URL {redact_password(url)!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"proxy URL {redact_password(url)!r} must be scheme://host:port only")
    host = parts.hostname
    port = DEFAULT_PORTS[scheme] if port is None else port
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    shown_host = f"[{host}]" if ":" in host else host
    user = f"{parts.username}@" if parts.username else ""
    shown = f"{scheme}://{user}{shown_host}:{port}"
    key = shown
    if password is not None:
        import hashlib  # here: a proxy with a password is rare, and hashlib is slow to import
        import hmac

        digest = hmac.new(_CREDENTIALS_KEY, password.encode(), hashlib.sha256).hexdigest()
        key = f"{shown} (credentials {digest[:16]})"
    return Proxy(scheme, host, port, username, password, shown, key)


_CREDENTIALS_KEY = os.urandom(16)  # for Proxy.key: its digests mean nothing outside the process


@dataclass(frozen=True)
class Route:
    """How a request reaches its origin through ``proxy``: forwarded (absolute form on a
    connection to the proxy) or tunnelled, and the pool key it shares connections under."""

    proxy: Proxy
    key: str
    forward: bool


class ProxyChooser:
    """The Transport's ``proxy`` option, resolved: which proxy (if any) each request uses."""

    __slots__ = ("_fixed", "_func")

    def __init__(self, proxy: ProxyOption) -> None:
        self._fixed: Proxy | None = None
        self._func: Callable[[Request], str | None] | None = None
        if isinstance(proxy, str):
            self._fixed = parse_proxy(proxy)  # a bad URL fails the Transport's construction
        elif proxy is not None:
            self._func = _snapshot_environment(proxy)

    def route(self, request: Request) -> Route | None:
        if self._fixed is not None:
            proxy = self._fixed
        elif self._func is not None:
            chosen = self._func(request)
            if not chosen:
                return None
            try:
                proxy = parse_proxy(chosen)
            except ValueError as exc:
                raise ProxyError(str(exc), host=request.url.host_header) from None
        else:
            return None
        return _route(proxy, request.pool_key, request.url.scheme == "http")


@functools.lru_cache(maxsize=256)
def _route(proxy: Proxy, pool_key: str, http_target: bool) -> Route:
    """The route to an origin through ``proxy``: made once, not per request."""
    if proxy.is_http and http_target:
        return Route(proxy, f"via {proxy.key}", forward=True)
    return Route(proxy, f"{pool_key} via {proxy.key}", forward=False)


def _snapshot_environment(
    func: Callable[[Request], str | None],
) -> Callable[[Request], str | None]:
    """``proxy_from_environment`` reads the environment once per process; a Transport given it
    reads it when the Transport is made (as Go caches it per Transport), so that a Transport
    made after the environment changed sees the change."""
    if func is proxy_from_environment:
        return EnvironmentProxies.from_environ()
    return func


def environment_proxy() -> Callable[[Request], str | None]:
    """The proxy function of ``Client(trust_env=True)`` and the CLI."""
    return proxy_from_environment


# -- dialing through a proxy ---------------------------------------------------------------


async def dial_through(
    route: Route,
    scheme: str,
    host: str,
    port: int,
    host_port: str,
    *,
    server_name: str,
    dial_timeout: float | None,
    tls_handshake_timeout: float | None,
    ssl_context: Callable[[], ssl.SSLContext],
    alpn_protocols: list[str] | None,
    dial_func: DialFunc | None,
    trace: ClientTrace | None,
    connect_headers: ProxyConnectHeaders,
    on_connect_response: OnProxyConnectResponse | None,
    local_address: str | None = None,
) -> Dialed:
    """A stream to the proxy (forwarded route), or a tunnel through it to ``host:port``, with
    TLS to the origin inside for https. ``connect_start``/``connect_done`` (and, for an https
    proxy, the TLS hooks) fire for the proxy; ``proxy_connect_*`` around the negotiation."""
    proxy = route.proxy
    to_proxy = await dial(
        "https" if proxy.scheme == "https" else "http",
        proxy.host,
        proxy.port,
        proxy.host_port,
        server_name=proxy.host,
        dial_timeout=dial_timeout,
        tls_handshake_timeout=tls_handshake_timeout,
        ssl_context=ssl_context() if proxy.scheme == "https" else None,
        # A proxy speaks HTTP/1.1 to us (CONNECT, absolute form); the caller's context (None)
        # offers what its owner set.
        alpn_protocols=None if alpn_protocols is None else ["http/1.1"],
        dial_func=dial_func,
        trace=trace,
        local_address=local_address,
    )
    if to_proxy.alpn_protocol not in (None, "http/1.1"):
        # The caller's tls_config offered it: asyncpool speaks only HTTP/1.1 to a proxy.
        await anyio.aclose_forcefully(to_proxy.stream)
        raise ProxyError(
            f"the proxy {proxy.url} chose {to_proxy.alpn_protocol!r} by ALPN (offered by "
            "tls_config); asyncpool speaks HTTP/1.1 to proxies",
            host=proxy.host_port,
        )
    if route.forward:
        return to_proxy
    stream = to_proxy.stream
    name = host if host.isascii() else _idna(host)  # as the Host field of a forwarded request
    target = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    try:
        await _negotiate(
            stream, proxy, target, host, port, dial_timeout, trace, connect_headers,
            on_connect_response,
        )  # fmt: skip
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise
    alpn: str | None = None
    if scheme == "https":
        from anyio.streams.tls import TLSAttribute, TLSStream

        tls: TLSStream | None = None
        with anyio.move_on_after(tls_handshake_timeout) as tls_scope:
            tls = await _handshake(
                stream, server_name, host_port, ssl_context(), alpn_protocols, trace,
                tls_scope.deadline,
            )  # fmt: skip
        if tls is None:
            await anyio.aclose_forcefully(stream)
            raise TLSHandshakeTimeout(
                f"no TLS handshake through the proxy {proxy.url} within "
                f"tls_handshake_timeout={tls_handshake_timeout}s",
                host=host_port,
            )
        alpn = tls.extra(TLSAttribute.alpn_protocol, None)
        stream = tls
    return Dialed(stream, alpn, to_proxy.local_address, to_proxy.remote_address)


async def _negotiate(
    stream: anyio.abc.ByteStream,
    proxy: Proxy,
    target: str,
    host: str,
    port: int,
    timeout: float | None,
    trace: ClientTrace | None,
    connect_headers: ProxyConnectHeaders,
    on_connect_response: OnProxyConnectResponse | None,
) -> None:
    if trace and trace.proxy_connect_start:
        trace.proxy_connect_start(ProxyConnectStartInfo(proxy.url, target))
    status: int | None = None
    headers: list[tuple[str, str]] = []
    error: BaseException | None = None
    try:
        with anyio.move_on_after(timeout) as scope:
            if proxy.is_http:
                status, headers = await _connect(stream, proxy, target, connect_headers)
                if on_connect_response is not None:
                    on_connect_response(proxy.url, target, status, headers)
                if not 200 <= status < 300:
                    raise ProxyError(
                        f"the proxy {proxy.url} answered {status} to CONNECT {target}",
                        host=proxy.host_port,
                        target=target,
                        status_code=status,
                        headers=headers,
                    )
            else:
                await _socks(stream, proxy, host, port)
        if scope.cancelled_caught:
            raise ConnectTimeout(
                f"the proxy {proxy.url} did not open a tunnel to {target} within "
                f"dial_timeout={timeout}s",
                host=proxy.host_port,
                phase="proxy",
            )
    except BaseException as exc:  # a cancellation too: the tunnel did not open
        error = exc
        raise
    finally:
        if trace and trace.proxy_connect_done:
            trace.proxy_connect_done(
                ProxyConnectDoneInfo(proxy.url, target, status, headers, error)
            )


async def _connect(
    stream: anyio.abc.ByteStream,
    proxy: Proxy,
    target: str,
    connect_headers: ProxyConnectHeaders,
) -> tuple[int, list[tuple[str, str]]]:
    """Send ``CONNECT target`` and read the answer's head: (status, fields)."""
    fields = [("Host", target)]
    if proxy.authorization is not None:
        fields.append(("Proxy-Authorization", proxy.authorization))
    extra = connect_headers(proxy.url, target) if callable(connect_headers) else connect_headers
    if extra:
        fields.extend(extra.items())
    import h11  # once per tunnel; loaded already when the HTTP/1.1 parser is h11

    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_CONNECT_HEAD)
    try:
        data = conn.send(h11.Request(method="CONNECT", target=target, headers=fields))
    except (h11.LocalProtocolError, UnicodeError) as exc:  # (a name IDNA refused stays Unicode)
        raise ProxyError(
            f"cannot send CONNECT {target}: {exc}", host=proxy.host_port, target=target
        ) from None
    assert data is not None
    try:
        await stream.send(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive())
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            raise ProxyError(
                f"the proxy {proxy.url} closed the connection before answering CONNECT {target}",
                host=proxy.host_port,
                target=target,
            )
    except anyio.EndOfStream:
        conn.receive_data(b"")
        raise ProxyError(
            f"the proxy {proxy.url} closed the connection before answering CONNECT {target}",
            host=proxy.host_port,
            target=target,
        ) from None
    except (OSError, anyio.BrokenResourceError) as exc:
        raise ProxyError(
            f"the connection to the proxy {proxy.url} broke during CONNECT {target}: {exc!r}",
            host=proxy.host_port,
            target=target,
        ) from exc
    except h11.RemoteProtocolError as exc:
        raise ProxyError(
            f"the proxy {proxy.url} answered CONNECT {target} with invalid HTTP: {exc}",
            host=proxy.host_port,
            target=target,
        ) from None
    status = event.status_code
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
    if 200 <= status < 300:
        # The tunnel's first bytes are ours (the TLS ClientHello): a proxy that sends more
        # after its answer is not a tunnel we can use.
        extra_bytes, _ = conn.trailing_data
        if extra_bytes:
            raise ProxyError(
                f"the proxy {proxy.url} sent {len(extra_bytes)} bytes after its {status} "
                f"answer to CONNECT {target}, before the tunnel was used",
                host=proxy.host_port,
                target=target,
                status_code=status,
                headers=headers,
            )
    return status, headers


async def _socks(stream: anyio.abc.ByteStream, proxy: Proxy, host: str, port: int) -> None:
    try:
        await socks_handshake(
            stream,
            scheme=proxy.scheme,
            host=host,
            port=port,
            username=proxy.username,
            password=proxy.password,
            proxy=proxy.host_port,
        )
    except HTTPError:  # its ProxyError (a TimeoutError is an OSError too: not rewrapped)
        raise
    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        raise ProxyError(
            f"the SOCKS proxy {proxy.url} broke the connection: {exc!r}",
            host=proxy.host_port,
            target=f"{host}:{port}",
        ) from exc
