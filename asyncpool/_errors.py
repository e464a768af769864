"""The exception tree.

Every error asyncpool raises derives from :class:`HTTPError` and says *where* it happened: the
``host`` ("host:port") and the ``phase`` ("url", "request", "pool", "connect", "tls", "write",
"read", "protocol", ...). The message repeats both so that a log line alone is enough::

    HTTPError
    ├── InvalidURL                 the URL cannot be used (also a ValueError)
    ├── LocalProtocolError         the request we were asked to send is not valid HTTP
    ├── RemoteProtocolError        the server broke HTTP framing
    │   ├── ResponseHeaderTooLarge
    │   ├── ResponseTooLarge       aread() of a body passed max_body_bytes
    │   ├── StreamReset            the server reset an HTTP/2 stream
    │   ├── FloodError             an HTTP/2 server flooded the connection (control frames)
    │   └── DecodingError          a gzip/deflate body is corrupt
    │       └── DecompressionBomb  it decodes to over max_decompression_ratio times its size
    │                              (also a ResponseTooLarge)
    ├── HTTPStatusError            raise_for_status() on a 4xx/5xx response
    ├── RedirectError              a redirect cannot be followed (a body that cannot be replayed)
    │   └── TooManyRedirects
    ├── PoolClosed                 the Transport is closed (``aclose()``, ``async with``'s end)
    ├── NetworkError
    │   ├── ConnectError           DNS or TCP connect failed
    │   │   └── ProxyError         the proxy refused or broke the tunnel (CONNECT, SOCKS)
    │   ├── TLSError               the TLS handshake or certificate check failed
    │   ├── WriteError             writing the request failed
    │   └── ReadError              reading the response failed
    │       └── ServerDisconnected the server closed the connection before any response byte
    └── TimeoutError (also the built-in TimeoutError)
        ├── ConnectTimeout
        ├── TLSHandshakeTimeout
        ├── ResponseHeaderTimeout
        ├── PoolTimeout            no connection within pool_timeout
        └── RequestTimeout         the Client's overall timeout
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._conn_common import RetryHint  # the connection layer's; a type only

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "DecodingError",
    "DecompressionBomb",
    "FloodError",
    "HTTPError",
    "HTTPStatusError",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolClosed",
    "PoolTimeout",
    "ProxyError",
    "ReadError",
    "RedirectError",
    "RemoteProtocolError",
    "RequestTimeout",
    "ResponseHeaderTimeout",
    "ResponseHeaderTooLarge",
    "ResponseTooLarge",
    "ServerDisconnected",
    "StreamReset",
    "TLSError",
    "TLSHandshakeTimeout",
    "TimeoutError",
    "TooManyRedirects",
    "WriteError",
]


class HTTPError(Exception):
    """Base of every asyncpool error. ``host`` and ``phase`` say where it happened."""

    phase = "request"
    # Set by the connection layer on failures of a reused connection that Go would retry; a
    # ``str`` enum, equal to "nothing written", "no response" or "refused".
    retry_hint: RetryHint | None = None
    # Set with a hint when the request never began on the connection (it was unusable
    # already): not a byte of its body was read, so even a streamed body is sent again (Go's
    # errClientConnUnusable).
    request_unused = False

    def __init__(self, message: str, *, host: str = "", phase: str | None = None) -> None:
        self.host = host
        if phase is not None:
            self.phase = phase
        self.detail = message
        where = f"{self.phase} {host}" if host else self.phase
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # For copy and pickle: rebuilt from its message and attributes without running
        # __init__ again, which would lose the keywords and prefix the message twice.
        return (_rebuild, (type(self), self.args), self.__dict__)


def _rebuild(cls: type[HTTPError], args: tuple[Any, ...]) -> HTTPError:
    error = cls.__new__(cls)
    error.args = args  # set here: an OSError subclass (TimeoutError) leaves it to __init__
    return error


class InvalidURL(HTTPError, ValueError):
    phase = "url"


class LocalProtocolError(HTTPError):
    phase = "request"


class RemoteProtocolError(HTTPError):
    phase = "protocol"


class ResponseHeaderTooLarge(RemoteProtocolError):
    pass


class StreamReset(RemoteProtocolError):
    """The server reset an HTTP/2 stream; ``error_code`` says why."""

    error_code: int = 0


class FloodError(RemoteProtocolError):
    """An HTTP/2 server sent too many frames that move no response forward (PING, SETTINGS,
    WINDOW_UPDATE, empty DATA, ...), or did not read our replies to them: the connection was
    closed with GOAWAY(ENHANCE_YOUR_CALM). The message names the kind and the limit."""


class ResponseTooLarge(RemoteProtocolError):
    """``aread()`` stopped at a limit on what it holds of a body (``max_body_bytes``, or for a
    DecompressionBomb, ``max_decompression_ratio``); the connection is closed."""

    phase = "read"


class DecodingError(RemoteProtocolError):
    """A compressed body could not be decoded."""

    phase = "decode"


class DecompressionBomb(DecodingError, ResponseTooLarge):
    """``aread()`` of a body the transport decodes passed ``max_decompression_ratio`` times the
    compressed bytes read (past 10 MiB decoded)."""


class HTTPStatusError(HTTPError):
    """``raise_for_status()`` found a 4xx or 5xx response (``response`` holds it)."""

    phase = "status"

    def __init__(self, message: str, *, host: str = "", response: object = None) -> None:
        super().__init__(message, host=host)
        self.response = response


class RedirectError(HTTPError):
    """A redirect could not be followed."""

    phase = "redirect"


class TooManyRedirects(RedirectError):
    pass


class PoolClosed(HTTPError, RuntimeError):
    phase = "pool"


class NetworkError(HTTPError):
    pass


class ConnectError(NetworkError):
    phase = "connect"


class ProxyError(ConnectError):
    """A proxy refused the request's tunnel or broke it: a non-2xx answer to CONNECT, a SOCKS
    refusal, a proxy that closed or stalled during the negotiation. ``host`` is the proxy
    ("host:port"), ``target`` the origin it was asked for ("host:port"); for an HTTP proxy's
    answer, ``status_code`` and ``headers`` (a list of (name, value)) keep its response head."""

    phase = "proxy"

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        target: str = "",
        status_code: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message, host=host)
        self.target = target
        self.status_code = status_code
        self.headers = headers if headers is not None else []


class TLSError(NetworkError):
    phase = "tls"


class WriteError(NetworkError):
    phase = "write"


class ReadError(NetworkError):
    phase = "read"


class ServerDisconnected(ReadError):
    """The server closed the connection before sending any byte of the response."""


class TimeoutError(HTTPError, builtins.TimeoutError):
    phase = "timeout"


class ConnectTimeout(TimeoutError):
    phase = "connect"


class TLSHandshakeTimeout(TimeoutError):
    phase = "tls"


class ResponseHeaderTimeout(TimeoutError):
    phase = "read"


class ReadTimeout(TimeoutError):
    """The Transport's ``read_timeout`` passed with nothing from the server: no response head
    after the request was written, or no data in the middle of a response."""

    phase = "read"


class PoolTimeout(TimeoutError):
    """The Transport's ``pool_timeout`` passed while the request waited for a connection (none
    idle, and ``max_conns_per_host`` / ``max_conns`` left no room, or its dial was slow)."""

    phase = "pool"


class RequestTimeout(TimeoutError):
    """The Client's overall ``timeout`` for one request (redirects and body included)."""
