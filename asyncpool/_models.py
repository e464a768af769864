"""Plain data: URL, Headers, Request, Response. No I/O happens here except through a
response's body stream, which the connection layer supplies."""

from __future__ import annotations

import codecs
import functools
import json
import re
import urllib.parse
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Union, cast
from urllib.parse import SplitResult, quote, unquote, urlsplit

from ._errors import HTTPStatusError, InvalidURL, LocalProtocolError

if TYPE_CHECKING:
    from ._trace import ClientTrace
    from ._upgrade import UpgradeStream

__all__ = ["URL", "ConnWaitListener", "Headers", "Request", "Response", "ResponseStream"]

DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 9110 token; a method and a header name must be one (\Z: "$" also matches before a final LF).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Field values may hold any visible character, space and tab, never CR, LF or NUL.
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# What goes on the wire, by h11's rules (its _abnf), on every writer (h11, httptools, HTTP/2):
# a value is empty, or characters other than NUL and whitespace with runs of spaces and tabs
# between them (no whitespace at either end); a request-target is visible ASCII, not empty.
_FIELD_VALUE = re.compile(r"(?:[^\x00\t\n\v\f\r ]+(?:[ \t]+[^\x00\t\n\v\f\r ]+)*)?\Z")
_TARGET = re.compile(r"[\x21-\x7e]+\Z")
_BAD_HOST = re.compile(r"[\x00-\x20\x7f]")

HeaderInput = Union["Headers", Mapping[str, str | bytes], Iterable[tuple[str, str | bytes]], None]


class URL:
    """An absolute http(s) URL, split once into the parts the pool needs. Read-only: requests
    to the same URL string share one URL object (see ``Request``), so do not assign to it."""

    __slots__ = ("host", "host_header", "origin", "port", "scheme", "target", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        split = _split_url_cached if len(url) <= CACHED_URL_MAX else _split_url
        (self.scheme, self.host, self.port, self.target, self.host_header, self.origin) = split(url)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"URL({self.url!r})"


# One URL object per URL string for requests: one allocation less per request, and one object
# less for the garbage collector to walk while the request is in flight. Only URLs of a usual
# length are kept: a server can make a client follow redirects to fresh, huge URLs, and a cache
# of those would outlive every request and Client (1,024 entries of at most 2 KiB here).
CACHED_URL_MAX = 2048
_ONE_READER = "another task is reading this response's body"
SLURP_LIMIT = 2048  # bytes of a response nobody reads taken to keep its connection (Go's 2 KiB)
_shared_url = functools.lru_cache(maxsize=1024)(URL)


def _split_url(url: str) -> tuple[str, str, int, str, str, str]:
    """(scheme, host, port, target, host_header, origin); cached for usual URLs, as a client
    sends many requests to few URLs (an invalid URL raises, and is not cached)."""
    try:
        parts = urlsplit(url) if len(url) <= CACHED_URL_MAX else _urlsplit_uncached(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"cannot parse {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURL(f"{url!r} has no scheme; use http:// or https://")
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(f"unsupported scheme {scheme!r} in {url!r}; use http or https")
    host = parts.hostname
    if not host:
        raise InvalidURL(f"{url!r} has no host")
    if _BAD_HOST.search(host):  # else sent in the Host field and, to a proxy, the request line
        raise InvalidURL(f"{url!r}: its host {host!r} holds whitespace or control characters")
    zone = ""
    if parts.netloc.rpartition("@")[2].startswith("["):
        if ":" not in host:
            raise InvalidURL(f"{url!r}: IPvFuture addresses are not supported")
        # RFC 6874: an IPv6 zone, as "%25" and the zone; dialled with it (as getaddrinfo takes
        # it: "fe80::1%eth0"), never sent (Go's removeZone).
        host, percent, zone = host.partition("%")
        if percent and (not zone.startswith("25") or len(zone) == 2):
            raise InvalidURL(f"{url!r}: an IPv6 zone is written %25 and its name (RFC 6874)")
        zone = unquote(zone[2:])
    if port is None:
        port = DEFAULT_PORTS[scheme]
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if not target.isascii():  # UTF-8, percent-encoded, as Go a path and the Client a Location
        target = _NON_ASCII.sub(lambda match: quote(match.group()), target)
    if not _TARGET.match(target):  # as h11 sends it (see check_target)
        raise InvalidURL(f"{url!r} holds whitespace or control characters in its path")
    # Host as the Host header carries it: the port only when not the default.
    host_header = f"[{host}]" if ":" in host else host
    if not host.isascii():  # as Go: the name as DNS is asked it (IDNA, as anyio resolves it)
        host_header = _idna(host)
    origin = host_header if not zone else f"[{host}%25{quote(zone, safe='')}]"
    if port != DEFAULT_PORTS[scheme]:
        host_header = f"{host_header}:{port}"
        origin = f"{origin}:{port}"
    if zone:
        host = f"{host}%{zone}"
    return scheme, host, port, target, host_header, f"{scheme}://{origin}"


_split_url_cached = functools.lru_cache(maxsize=1024)(_split_url)


def _urlsplit_uncached(url: str) -> SplitResult:
    """urlsplit, past the standard library's own cache of the URLs it split (an lru_cache
    from Python 3.11, a dict of 20 before)."""
    uncached = getattr(urlsplit, "__wrapped__", None)
    if uncached is not None:
        return cast(SplitResult, uncached(url))
    parts = urlsplit(url)  # pragma: no cover - Python 3.10
    forget_parsed_urls(url)  # pragma: no cover
    return parts  # pragma: no cover


def forget_parsed_urls(*urls: str) -> None:
    """After urllib handled a huge URL (urljoin, a cookie jar's request), drop what its own
    cache of split URLs keeps of it; URLs of a usual length stay cached."""
    for url in urls:  # no generator: every Client request passes here
        if len(url) > CACHED_URL_MAX:
            urllib.parse.clear_cache()  # type: ignore[attr-defined]
            return


def _idna(host: str) -> str:
    import idna  # imported for the rare non-ASCII name only: its tables are large

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        # Not a name DNS can be asked. Kept, as given: a Latin-1 one fails to resolve (a
        # ConnectError); any other cannot be a Host field, and the Transport refuses it.
        return host


def _str_value(value: object) -> str:
    """A field value as Headers keeps it: ``bytes`` are sent as given (kept decoded as
    Latin-1, which every writer encodes back byte for byte)."""
    if isinstance(value, (bytes, bytearray, memoryview)):  # (str() of these is their repr)
        return bytes(value).decode("latin-1")
    return str(value)


class Headers:
    """Case-insensitive, ordered, multi-valued HTTP header fields.

    Values are ``str``, sent as Latin-1 (a character Latin-1 cannot hold is refused before
    the request is sent), or ``bytes``, sent as given and read back as their Latin-1 ``str``.

    ``headers["a"]`` joins repeated fields with ", "; ``get_list`` keeps them apart. Names keep
    the case they were given in; lookups ignore it.
    """

    # Names and values alternate in one flat list: a response's fields cost the garbage
    # collector one object, not one tuple each (and responses pile up when many are in flight).
    __slots__ = ("_fields", "_names")
    _fields: list[str]
    # The names lowercased and joined by "\n", made at the first lookup and kept until the
    # fields change (None: not made): a response is asked for a few fields it rarely has (by
    # the Transport, then the Client), and a miss is told by one ``in``.
    _names: str | None

    def __init__(self, headers: HeaderInput = None) -> None:
        fields: list[str] = []
        if isinstance(headers, Headers):
            fields = list(headers._fields)
        elif headers is not None:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in pairs:
                fields += (str(name), _str_value(value))
        self._fields = fields
        self._names = None

    def __copy__(self) -> Headers:
        """A copy of its own fields (``copy.copy``): a change to one is not seen by the other."""
        copy = Headers.__new__(Headers)
        copy._fields, copy._names = self._fields.copy(), self._names
        return copy

    @classmethod
    def _trusted(cls, fields: list[str]) -> Headers:
        """Headers over a flat list (name, value, name, value, ...) of str made by a parser: no
        copy, no conversion."""
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._names = None
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        # Most lookups miss (the transport and the Client ask every response for fields it
        # rarely has): told in C, as the name is not even part of the names joined. Else one
        # pass, no list unless the name repeats.
        lower = name.lower()
        names = self._names
        if names is None:
            names = self._names = "\n".join(self._fields[::2]).lower()
        if lower not in names:
            return default
        fields = iter(self._fields)
        for field_name, value in zip(fields, fields):  # noqa: B905 - pairs of one list
            if field_name.lower() == lower:
                more = [v for n, v in zip(fields, fields) if n.lower() == lower]  # noqa: B905
                return ", ".join([value, *more]) if more else value
        return default

    def get_list(self, name: str) -> list[str]:
        lower = name.lower()
        fields = self._fields
        return [fields[i + 1] for i in range(0, len(fields), 2) if fields[i].lower() == lower]

    def add(self, name: str, value: str | bytes) -> None:
        self._fields += (name, _str_value(value))
        self._names = None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str | bytes) -> None:
        """Replace every field called ``name`` with one."""
        del self[name]
        self._fields += (name, _str_value(value))
        self._names = None

    def __delitem__(self, name: str) -> None:
        lower = name.lower()
        fields: list[str] = []
        for field_name, value in self._pairs():
            if field_name.lower() != lower:
                fields += (field_name, value)
        self._fields = fields
        self._names = None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name.lower() in map(str.lower, self._fields[::2])

    def _has(self, lower: str) -> bool:
        """``lower in self`` for a lowercase name, in C (a miss, as ``get``'s, is quicker)."""
        names = self._names
        if names is None:
            names = self._names = "\n".join(self._fields[::2]).lower()
        return lower in names and lower in map(str.lower, self._fields[::2])

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._fields) // 2

    def _pairs(self) -> Iterator[tuple[str, str]]:
        fields = iter(self._fields)
        return zip(fields, fields)  # noqa: B905 - pairs of one list

    def items(self) -> list[tuple[str, str]]:
        """Every field as (name, value), in order, repeats included."""
        return list(self._pairs())

    def keys(self) -> list[str]:
        return list(dict.fromkeys(name.lower() for name in self._fields[::2]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k.lower(), v) for k, v in self._pairs()] == [
            (k.lower(), v) for k, v in other._pairs()
        ]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


_COMMON_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# RFC 9110, 9.2.1: a client does not ask the server to act by sending one of these.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def validate_method(method: str) -> None:
    if method not in _COMMON_METHODS and not _TOKEN.match(method):
        raise LocalProtocolError(f"invalid method {method!r}: must be an HTTP token")


# Field lists found valid: a client builds its requests from the same few again and again
# (a Client's defaults), and a set lookup is a quarter of checking one field. Bounded as the
# URL cache: in number, and by size, as a server can make a client send fresh, huge cookies.
# Values are kept too (an Authorization, a Cookie), as _h1.protocol's caches of checked
# requests keep them, for the life of the process.
_VALID_FIELDS: set[tuple[str, ...]] = set()
_VALID_FIELDS_MAX = 512
_VALID_FIELDS_CHARS = 4096


def validate_headers(headers: Headers, host: str) -> None:
    fields = headers._fields
    key = tuple(fields)
    if key in _VALID_FIELDS:
        return
    for name, value in headers._pairs():
        if not _TOKEN.match(name):
            raise LocalProtocolError(f"invalid header name {name!r}", host=host)
        if _FORBIDDEN_IN_VALUE.search(value):
            raise LocalProtocolError(
                f"header {name!r} holds CR, LF or NUL (header injection refused)", host=host
            )
    if sum(map(len, fields)) <= _VALID_FIELDS_CHARS:
        if len(_VALID_FIELDS) >= _VALID_FIELDS_MAX:
            _VALID_FIELDS.clear()
        _VALID_FIELDS.add(key)


def check_target(target: str, host: str) -> None:
    """A request-target as h11 takes it: visible ASCII, not empty."""
    if not _TARGET.match(target):
        raise LocalProtocolError(
            f"invalid request target {target!r}: whitespace, control or non-ASCII characters",
            host=host,
        )


def check_wire_fields(fields: list[tuple[str, str]], host: str) -> None:
    """The header fields of a request as every writer sends them, by h11's rules: names are
    tokens; values are Latin-1, without NUL, CR, LF, VT or FF, and without whitespace at
    either end; at most one Host. Raises LocalProtocolError naming the field."""
    hosts = 0
    for name, value in fields:
        if not _TOKEN.match(name):
            raise LocalProtocolError(f"invalid header name {name!r}", host=host)
        if not _FIELD_VALUE.match(value):
            raise LocalProtocolError(
                f"invalid value for header {name!r}: {value!r} (control characters, or "
                "whitespace at either end)",
                host=host,
            )
        if not value.isascii():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise LocalProtocolError(
                    f"header {name!r} holds characters Latin-1 cannot encode: {value!r} "
                    "(give its value as bytes, encoded as the server expects)",
                    host=host,
                ) from None
        if len(name) == 4 and name.lower() == "host":
            hosts += 1
    if hosts > 1:
        raise LocalProtocolError("more than one Host header", host=host)


class ConnWaitListener(Protocol):
    """Told synchronously, by the pool's decisions, where a request stands on its way to a
    connection (``Request.wait_listener``): what the httpx adapter's pool and connect timeouts
    follow. Each call may come more than once; later stages come after earlier ones, except
    that a retried request starts again."""

    def conn_waiting(self) -> None:
        """No connection at once: it waits for one to be freed, or for a slot to dial in."""

    def conn_dialing(self) -> None:
        """A dial that may serve it is under way: its own, or the HTTP/2 dial it shares."""

    def conn_assigned(self) -> None:
        """It was handed a connection (or an HTTP/2 stream)."""


class Request:
    """One HTTP request. ``content`` is bytes (replayable) or an async iterable of bytes (sent
    chunked, and not replayable). Validated here, before any byte can be sent."""

    __slots__ = (
        "_headers",
        "connect_timeout",
        "content",
        "method",
        "sni_hostname",
        "target",
        "trace",
        "url",
        "wait_listener",
    )

    def __init__(
        self,
        method: str,
        url: str | URL,
        *,
        headers: HeaderInput = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        trace: ClientTrace | None = None,
        sni_hostname: str | None = None,
        target: str | None = None,
        connect_timeout: float | None = None,
        wait_listener: ConnWaitListener | None = None,
    ) -> None:
        if isinstance(url, URL):
            self.url = url
        else:
            self.url = _shared_url(url) if len(url) <= CACHED_URL_MAX else URL(url)
        if method not in _COMMON_METHODS:  # (validate_method, without the call)
            validate_method(method)
        self.method = method
        if headers is None:  # most requests: nothing to copy or check, nor to make yet
            self._headers: Headers | None = None
        elif type(headers) is Headers and tuple(headers._fields) in _VALID_FIELDS:
            # A Client's defaults, most often: copied (``__copy__``) and checked without a call.
            self._headers = copy = Headers.__new__(Headers)
            copy._fields = headers._fields.copy()
            copy._names = headers._names
        else:
            self._headers = Headers(headers)
            validate_headers(self._headers, self.url.host_header)
        if content is not None and not isinstance(content, (bytes, AsyncIterable)):
            raise TypeError(f"content must be bytes or an async iterable of bytes, not {content!r}")
        self.content = content
        self.trace = trace
        # TLS server name to send instead of the URL's host (connections are not shared
        # across names), and a request-target to send instead of the URL's path and query.
        self.sni_hostname = sni_hostname
        if target is not None:
            check_target(target, self.url.host)
        self.target = self.url.target if target is None else target
        # A dial started for this request gives DNS + TCP, then the TLS handshake, then the
        # HTTP/2 preface this long each, instead of the Transport's dial_timeout and
        # tls_handshake_timeout (None: those; math.inf: no limit). httpx's connect timeout.
        self.connect_timeout = connect_timeout
        self.wait_listener = wait_listener

    @property
    def headers(self) -> Headers:
        """The header fields (made on first use for a request given none: two objects less a
        request in flight, as most are sent without a look at them)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers._trusted([])
        return headers

    @headers.setter
    def headers(self, headers: Headers) -> None:
        self._headers = headers

    @property
    def pool_key(self) -> str:
        """Requests with the same key may share connections."""
        if self.sni_hostname is None:
            return self.url.origin
        return f"{self.url.origin}|sni={self.sni_hostname}"

    @property
    def is_replayable(self) -> bool:
        """Go's isReplayable: the method is idempotent (or an idempotency key says so) and the
        body can be sent again."""
        if not self.body_is_rewindable:
            return False
        if self.method in SAFE_METHODS:
            return True
        return "idempotency-key" in self.headers or "x-idempotency-key" in self.headers

    @property
    def body_is_rewindable(self) -> bool:
        """The body can be sent again: bytes, or an async iterable that says it iterates
        from its start each time (a true ``rewindable``, as the Client's multipart bodies of
        bytes and seekable files)."""
        content = self.content
        return not isinstance(content, AsyncIterable) or getattr(content, "rewindable", False)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url.url}>"


class ResponseStream(Protocol):
    """What a connection gives a response to read its body from."""

    @property
    def is_consumed(self) -> bool:
        """Read to its end (the connection no longer depends on the reader)."""
        ...

    async def read_chunk(self) -> bytes:
        """The next non-empty chunk of the body, or ``b""`` at its end."""
        ...

    async def aclose(self) -> None: ...

    def abandon(self) -> None:
        """Give the body up without awaiting (used when a response is garbage collected)."""
        ...


class _BodyIterator:
    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        response = self._response
        if response._closed:
            raise StopAsyncIteration
        response._start_read()
        try:
            chunk = await response._stream.read_chunk()
        except BaseException:
            # A failed or cancelled read leaves the body unusable: give the connection up now.
            response._discard()
            raise
        finally:
            response._reading = False
        if not chunk:
            # Read to the end: the connection has already gone back to the pool.
            response._closed = True
            raise StopAsyncIteration
        return chunk


class Response:
    """A response head with a body still to read (``aread``, ``aiter_bytes``) and to close."""

    __slots__ = (
        "__weakref__",
        "_call_soon",
        "_check_read",
        "_closed",
        "_content",
        "_network_stream",
        "_reading",
        "_stream",
        "_streamed",
        "_upgraded",
        "headers",
        "history",
        "http_version",
        "reason_phrase",
        "request",
        "status_code",
        "stream_id",
        "uncompressed",
    )

    def __init__(
        self,
        status_code: int,
        *,
        reason_phrase: str = "",
        http_version: str = "HTTP/1.1",
        headers: Headers | None = None,
        request: Request,
        stream: ResponseStream,
        stream_id: int | None = None,
        network_stream: Any = None,
        upgraded: UpgradeStream | None = None,
    ) -> None:
        self.status_code = status_code
        self._upgraded = upgraded  # the connection, after a switch of protocols
        self.stream_id = stream_id  # the HTTP/2 stream that carried it
        self._network_stream = network_stream
        self.reason_phrase = reason_phrase
        self.http_version = http_version
        self.headers = headers if headers is not None else Headers()
        self.request = request
        self.uncompressed = False  # True when the transport decoded gzip (Go's Uncompressed)
        # The Client's redirects that led here, oldest first, each closed.
        self.history: list[Response] = []
        self._stream = stream
        self._content: bytes | None = None
        self._closed = False
        self._streamed = False  # aiter_bytes has begun: aread would miss what it handed out
        self._reading = False  # a read of the body is under way (one reader at a time)
        # Set by the transport: called by aread with the bytes read so far, raises past a limit.
        self._check_read: Callable[[int], None] | None = None
        # Set by the transport: runs a function on the event loop, soon (thread-safe).
        self._call_soon: Callable[[Callable[[], object]], None] | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body has not been read; call `await response.aread()` first")
        return self._content

    async def aread(self) -> bytes:
        """The whole body (read once, then kept). Past the transport's ``max_body_bytes`` or
        ``max_decompression_ratio``, ResponseTooLarge (the connection is closed)."""
        if self._content is None:
            if self._closed:
                raise RuntimeError("the response is closed; its body can no longer be read")
            if self._streamed:
                raise RuntimeError("aiter_bytes has read part of the body; aread cannot")
            chunks = []
            stream, check, total = self._stream, self._check_read, 0
            if self._reading:  # (_start_read, without the call: once a request)
                raise RuntimeError(_ONE_READER)
            self._reading = True
            try:
                while chunk := await stream.read_chunk():
                    chunks.append(chunk)
                    if check is not None:
                        total += len(chunk)
                        check(total)
            except BaseException:
                self._discard()  # as _BodyIterator: a failed read gives the connection up
                raise
            finally:
                self._reading = False
            self._closed = True  # read to the end: the connection is back in the pool
            self._content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._content

    async def _close_unread(self) -> None:
        """Close a response nobody reads (a redirect's, a retried one), reading it first when
        it is short or of unknown length, up to ``SLURP_LIMIT`` bytes, so that its connection
        is reused (as Go's Client does)."""
        length = self.headers.get("content-length")
        if length is None or (length.isdigit() and int(length) <= SLURP_LIMIT):
            read = 0
            try:
                async for chunk in self.aiter_bytes():
                    read += len(chunk)
                    if read > SLURP_LIMIT:
                        break
            except Exception:  # (HTTPError, or read already): it is closed below all the same
                pass
        await self.aclose()

    def _start_read(self) -> None:
        """The body has one reader at a time: a second one, in another task, would wait on
        the connection's channel in the first one's place and leave it waiting for ever."""
        if self._reading:
            raise RuntimeError(_ONE_READER)
        self._reading = True

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive, with back-pressure on the connection."""
        if self._closed:
            raise RuntimeError("the response is closed; its body can no longer be read")
        self._streamed = True
        return _BodyIterator(self)

    @property
    def _needs_close(self) -> bool:
        """Whether ``aclose`` has anything to do (a body read in full has none, unless the
        protocols were switched)."""
        return not self._closed or self._upgraded is not None

    async def aclose(self) -> None:
        """Close the body; after a switch of protocols, the connection too unless
        ``upgrade_stream()`` took it."""
        if not self._closed:
            self._closed = True
            await self._stream.aclose()
        upgraded = self._upgraded
        if upgraded is not None and not upgraded.taken:
            await upgraded.aclose()

    def upgrade_stream(self) -> UpgradeStream:
        """The connection itself, for the protocol the server switched to: after ``101
        Switching Protocols`` to a request with an ``Upgrade`` field, or a 2xx to ``CONNECT``
        (a tunnel), over HTTP/1.1. The caller owns it from then on and closes it; the pool
        has let it go (its host slot is free). Bytes the server sent right after the head
        are read first. The body of such a response is empty. Without a switch,
        RuntimeError; the same stream on every call."""
        upgraded = self._upgraded
        if upgraded is None:
            raise RuntimeError(
                f"{self.status_code} {self.reason_phrase} is no switch of protocols: "
                "upgrade_stream() needs a 101 to a request with an Upgrade field, or a 2xx "
                "to CONNECT, over HTTP/1.1"
            )
        if not upgraded.taken:
            if upgraded.closed:
                raise RuntimeError("the response was closed, and its connection with it")
            upgraded._take()
        return upgraded

    @property
    def is_closed(self) -> bool:
        return self._closed

    def extra(self, attribute: Any, default: Any = None) -> Any:
        """An anyio typed attribute of the connection that carried the response, such as
        ``anyio.abc.SocketAttribute.remote_address`` or ``TLSAttribute.ssl_object``."""
        if self._network_stream is None:
            return default
        return self._network_stream.extra(attribute, default)

    @property
    def encoding(self) -> str:
        """The charset of the Content-Type header when Python has a text encoding of that
        name, else utf-8."""
        content_type = self.headers.get("content-type", "") or ""
        for param in content_type.split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip("\"' ")
                try:
                    known = codecs.lookup(charset)
                except LookupError:
                    break
                if not getattr(known, "_is_text_encoding", True):  # base64, zlib: bytes only
                    break
                return charset
        return "utf-8"

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding, errors="replace")
        except UnicodeError:  # a codec that takes no errors="replace" (idna, say)
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def raise_for_status(self) -> Response:
        """Raise HTTPStatusError for a 4xx or 5xx response; return the response otherwise."""
        if self.status_code >= 400:
            kind = "client error" if self.status_code < 500 else "server error"
            raise HTTPStatusError(
                f"{self.status_code} {self.reason_phrase} ({kind}) for "
                f"{self.request.method} {self.request.url}",
                host=self.request.url.host_header,
                response=self,
            )
        return self

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _discard(self) -> None:
        """Close without awaiting: for responses nobody will read."""
        self._closed = True
        self._stream.abandon()

    def _set_stream(self, stream: ResponseStream) -> None:
        self._stream = stream

    def __del__(self) -> None:
        upgraded = self._upgraded
        if upgraded is not None and not upgraded.taken:
            # Never taken: its connection's reader task closes it (asked to from the loop).
            if self._call_soon is not None:
                self._call_soon(upgraded._abandon)
            else:
                upgraded._abandon()
        if self._closed:
            return
        unread = not self._stream.is_consumed  # the pool would wait for ever for this body
        # The collector may run inside any allocation, even inside the pool's own code: giving
        # the connection up is pool work, so it runs on the event loop, after. Asked for before
        # the warning, which raises under -W error.
        if self._call_soon is not None:
            self._call_soon(self._stream.abandon)
        else:
            self._stream.abandon()
        if unread:
            warnings.warn(
                f"unclosed response {self!r}: read it to the end or close it "
                "(`async with response:` or `await response.aclose()`)",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    def __repr__(self) -> str:
        return f"<Response [{self.status_code} {self.reason_phrase}] {self.request.url.url}>"
