"""asyncpool: an HTTP/1.1 client transport for asyncio and trio whose pool follows Go's
net/http.Transport."""

from ._errors import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    HTTPError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolClosed,
    ReadError,
    RemoteProtocolError,
    ResponseHeaderTimeout,
    ResponseHeaderTooLarge,
    ServerDisconnected,
    TimeoutError,
    TLSError,
    TLSHandshakeTimeout,
    WriteError,
)
from ._models import URL, Headers, Request, Response
from ._trace import ClientTrace, GotConnInfo, client_trace
from ._transport import HostStats, Transport, TransportStats

__version__ = "0.1.0"

__all__ = [
    "URL",
    "ClientTrace",
    "ConnectError",
    "ConnectTimeout",
    "DecodingError",
    "GotConnInfo",
    "HTTPError",
    "Headers",
    "HostStats",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolClosed",
    "ReadError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ResponseHeaderTimeout",
    "ResponseHeaderTooLarge",
    "ServerDisconnected",
    "TLSError",
    "TLSHandshakeTimeout",
    "TimeoutError",
    "Transport",
    "TransportStats",
    "WriteError",
    "client_trace",
]
