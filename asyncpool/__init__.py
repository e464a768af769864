"""asyncpool: an HTTP/1.1 and HTTP/2 client transport for asyncio and trio whose pool follows Go's
net/http.Transport.

``import asyncpool`` leaves what only connections need to the first dial (h11 and asyncio; h2 on
the first HTTP/2 connection; anyio's TLS stream and certifi on the first TLS one: see the imports
of ``_transport`` and ``_dial``), and ``UpgradeStream`` to its first use: its base class,
``anyio.abc.ByteStream``, loads typing_extensions (20M of the 369M instructions the import took)."""

from typing import TYPE_CHECKING

from ._auth import Auth, BasicAuth, DigestAuth, FunctionAuth
from ._client import Client, RequestOptions, UseLastResponse
from ._conn_common import CloseReason
from ._errors import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    DecompressionBomb,
    FloodError,
    HTTPError,
    HTTPStatusError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolClosed,
    PoolTimeout,
    ProxyError,
    ReadError,
    ReadTimeout,
    RedirectError,
    RemoteProtocolError,
    RequestTimeout,
    ResponseHeaderTimeout,
    ResponseHeaderTooLarge,
    ResponseTooLarge,
    ServerDisconnected,
    StreamReset,
    TimeoutError,
    TLSError,
    TLSHandshakeTimeout,
    TooManyRedirects,
    WriteError,
)
from ._models import URL, ConnWaitListener, Headers, Request, Response
from ._proxy_env import EnvironmentProxies, proxy_from_environment
from ._retry import Retry, RetryBudget, RetryStats
from ._trace import (
    ClientTrace,
    ConnClosedInfo,
    DNSDoneInfo,
    DNSStartInfo,
    GotConnInfo,
    ProxyConnectDoneInfo,
    ProxyConnectStartInfo,
    RequestDoneInfo,
    RequestStartInfo,
    RetryInfo,
    Timings,
    WroteRequestInfo,
    client_trace,
)
from ._transport import HostStats, Transport, TransportOptions, TransportStats
from ._version import __version__

if TYPE_CHECKING:
    from ._upgrade import UpgradeStream
else:

    def __getattr__(name: str) -> object:
        if name == "UpgradeStream":
            from ._upgrade import UpgradeStream

            globals()[name] = UpgradeStream
            return UpgradeStream
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), "UpgradeStream"})


__all__ = [
    "URL",
    "Auth",
    "BasicAuth",
    "Client",
    "ClientTrace",
    "CloseReason",
    "ConnClosedInfo",
    "ConnWaitListener",
    "ConnectError",
    "ConnectTimeout",
    "DNSDoneInfo",
    "DNSStartInfo",
    "DecodingError",
    "DecompressionBomb",
    "DigestAuth",
    "EnvironmentProxies",
    "FloodError",
    "FunctionAuth",
    "GotConnInfo",
    "HTTPError",
    "HTTPStatusError",
    "Headers",
    "HostStats",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolClosed",
    "PoolTimeout",
    "ProxyConnectDoneInfo",
    "ProxyConnectStartInfo",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RedirectError",
    "RemoteProtocolError",
    "Request",
    "RequestDoneInfo",
    "RequestOptions",
    "RequestStartInfo",
    "RequestTimeout",
    "Response",
    "ResponseHeaderTimeout",
    "ResponseHeaderTooLarge",
    "ResponseTooLarge",
    "Retry",
    "RetryBudget",
    "RetryInfo",
    "RetryStats",
    "ServerDisconnected",
    "StreamReset",
    "TLSError",
    "TLSHandshakeTimeout",
    "TimeoutError",
    "Timings",
    "TooManyRedirects",
    "Transport",
    "TransportOptions",
    "TransportStats",
    "UpgradeStream",
    "UseLastResponse",
    "WriteError",
    "WroteRequestInfo",
    "__version__",
    "client_trace",
    "proxy_from_environment",
]
