"""A Client for people, on top of the pool: redirects as Go's http.Client follows them,
cookies, an overall timeout, forms and JSON, and responses read in full by default."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json as jsonlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

import anyio

from ._auth import Auth, AuthTypes, to_auth
from ._errors import RedirectError, RequestTimeout, TooManyRedirects
from ._models import (
    CACHED_URL_MAX,
    URL,
    HeaderInput,
    Headers,
    Request,
    Response,
    forget_parsed_urls,
    validate_headers,
)
from ._proxy import environment_proxy
from ._retry import Retrier, Retry, RetryStats
from ._transport import Transport, TransportOptions
from ._version import __version__

if TYPE_CHECKING:
    from http.cookiejar import CookieJar

    from typing_extensions import Unpack

    from ._cookies import CookieRequest
    from ._multipart import FilesInput

# http.cookiejar (with urllib.request and email) and the multipart encoder are imported when
# first needed (``_cookies``, ``_multipart``): most programs never set a cookie nor post a file,
# and these imports were most of ``import asyncpool``'s time (issue 24).

__all__ = ["Client", "RequestOptions", "UseLastResponse"]

USER_AGENT = f"asyncpool/{__version__}"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# Fields sent only to the origin that was asked: dropped when a redirect leaves it.
_SENSITIVE = ("authorization", "www-authenticate", "cookie", "cookie2", "proxy-authorization")
_BODY_FIELDS = ("content-type", "content-length", "transfer-encoding", "content-encoding")
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # reserved characters, and % for escapes already made
# A server silent this long mid-response has stalled (the Transport's own default is off, as
# Go's; a Client is for people, who would rather have an error than wait for ever).
DEFAULT_READ_TIMEOUT = 30.0
# Likewise a connect that takes this long will not succeed, and a request should not queue for
# a connection for ever behind max_conns_per_host (the pool wait includes a dial: 10 s + TLS's
# 10 s fit in it).
DEFAULT_DIAL_TIMEOUT = 10.0
DEFAULT_POOL_TIMEOUT = 30.0

Params = Mapping[str, str | int | float] | None
CheckRedirect = Callable[[Request, list[Request]], object]


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of ``Client.request`` that the verbs (``get``, ``post``, ...)
    pass on."""

    params: Params
    headers: HeaderInput
    content: bytes | str | AsyncIterable[bytes] | None
    data: Mapping[str, Any] | None
    files: FilesInput | None
    json: Any
    timeout: float | None
    follow_redirects: bool | None
    auth: AuthTypes | None


class UseLastResponse(Exception):
    """Raise from ``check_redirect`` to get the redirect response itself, unfollowed."""


class _Unset:
    pass


UNSET: Any = _Unset()


class Client:
    """A client over a Transport: its own (made from ``transport_options``) or one passed in,
    which the Client then neither enters nor closes. Use it with or without ``async with``:
    its own Transport starts on the first request, and ``await client.aclose()`` (from any
    task) or leaving the block closes it. Its own Transport uses ``proxy=`` when given, else,
    with ``trust_env`` (the default), the environment's proxies (``proxy_from_environment``)."""

    def __init__(
        self,
        *,
        transport: Transport | None = None,
        base_url: str | None = None,
        headers: HeaderInput = None,
        params: Params = None,
        cookies: CookieJar | Mapping[str, str] | None = None,
        auth: AuthTypes | None = None,
        follow_redirects: bool = True,
        max_redirects: int = 10,
        check_redirect: CheckRedirect | None = None,
        timeout: float | None = None,
        trust_env: bool = True,
        retry: Retry | None = None,
        **transport_options: Unpack[TransportOptions],
    ) -> None:
        if transport is not None and transport_options:
            raise TypeError(
                f"pass Transport options to the Transport you give, not the Client: "
                f"{sorted(transport_options)}"
            )
        self._owns_transport = transport is None
        if transport is None:
            transport_options.setdefault("read_timeout", DEFAULT_READ_TIMEOUT)
            transport_options.setdefault("dial_timeout", DEFAULT_DIAL_TIMEOUT)
            transport_options.setdefault("pool_timeout", DEFAULT_POOL_TIMEOUT)
            if trust_env and "proxy" not in transport_options and "uds" not in transport_options:
                # HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, read once (proxy=None: none);
                # not for a Unix socket, which is reached directly (as curl's --unix-socket).
                transport_options["proxy"] = environment_proxy()
            transport = Transport(**transport_options)
        self.transport = transport
        self.base_url = URL(base_url) if base_url is not None else None
        self.headers = _merged(Headers([("User-Agent", USER_AGENT)]), headers)
        self.params = dict(params or {})
        # The jar: None until a cookie is first given, set or asked for (``cookies``).
        self._jar: CookieJar | None = None
        self._plain_jar = False
        self._auth: Auth | None = None
        self._retry: Retry | None = None
        self._retrier: Retrier | None = None
        # No auth flow, cookie jar or retry policy (kept by the setters): a request without
        # userinfo is then sent as it is (``_plain``).
        self._bare = True
        if isinstance(cookies, Mapping):
            if cookies:
                from ._cookies import new_jar

                self.cookies = new_jar(cookies)
        elif cookies is not None:
            self.cookies = cookies
        self.auth = auth
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.check_redirect = check_redirect
        self.timeout = timeout
        self.retry = retry

    @property
    def cookies(self) -> CookieJar:
        """The cookie jar (an ``http.cookiejar.CookieJar``), made on first use; assignable."""
        if self._jar is None:
            from ._cookies import new_jar

            self.cookies = jar = new_jar()
            return jar
        return self._jar

    @cookies.setter
    def cookies(self, jar: CookieJar) -> None:
        from ._cookies import is_plain_jar

        self._jar = jar
        self._plain_jar = is_plain_jar(jar)
        self._bare = False  # (a jar is never taken away)

    @property
    def auth(self) -> Auth | None:
        """The credentials of every request (None: none); assignable as ``auth=`` is given: a
        (user, password) pair, a function of the request, or an ``Auth``."""
        return self._auth

    @auth.setter
    def auth(self, auth: AuthTypes | None) -> None:
        self._auth = to_auth(auth)
        self._note_bare()

    @property
    def retry(self) -> Retry | None:
        """The retry policy (None: none beyond the Transport's own; see ``Retry``);
        assignable, with stats of its own from then on."""
        return self._retry

    @retry.setter
    def retry(self, retry: Retry | None) -> None:
        self._retry = retry
        self._retrier = Retrier(retry) if retry is not None else None
        self._note_bare()

    def _note_bare(self) -> None:
        self._bare = self._auth is None and self._jar is None and self._retry is None

    async def __aenter__(self) -> Client:
        if self._owns_transport:
            await self.transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_transport:
            await self.transport.__aexit__(exc_type, exc, tb)

    def retry_stats(self) -> RetryStats:
        """The retries of the ``retry=`` policy so far (all zero without one); a copy."""
        if self._retrier is None:
            return RetryStats()
        return dataclasses.replace(self._retrier.stats)

    async def aclose(self) -> None:
        """Close the Client's own Transport (one passed in is left open); idempotent."""
        if self._owns_transport:
            await self.transport.aclose()

    # -- the verbs ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params = None,
        headers: HeaderInput = None,
        content: bytes | str | AsyncIterable[bytes] | None = None,
        data: Mapping[str, Any] | None = None,
        files: FilesInput | None = None,
        json: Any = None,
        timeout: float | None = UNSET,
        follow_redirects: bool | None = None,
        auth: AuthTypes | None = UNSET,
    ) -> Response:
        """Send a request and read its response in full (``.content``, ``.text``, ``.json()``).
        ``auth``: this request's credentials instead of the Client's (None: none)."""
        if (
            headers is None
            and content is None
            and data is None
            and files is None
            and json is None
            and not params
            and not self.params
            and self.base_url is None
        ):  # most requests: ``_build_request``'s first case, without the call
            request = Request(method, url, headers=self.headers)
        else:
            request = self._build_request(method, url, params, headers, content, data, files, json)
        limit = self.timeout if timeout is UNSET else timeout
        if limit is None:  # no cancel scope to enter and leave (nor a coroutine more to await)
            if auth is UNSET and self._bare and "@" not in request.url.url:  # (``_plain``)
                # Most requests: the first hop without _send's coroutine; _send takes over
                # for a redirect or a cookie to store.
                response = await self.transport.round_trip(request)
                if response.status_code in REDIRECT_CODES or response.headers._has("set-cookie"):
                    response = await self._send(request, follow_redirects, auth, response)
            else:
                response = await self._send(request, follow_redirects, auth)
            try:
                await response.aread()
            finally:
                # (``_needs_close``, without the call) once read: only a switch of protocols'
                if not response._closed or response._upgraded is not None:
                    await response.aclose()
            return response
        with anyio.move_on_after(limit):
            response = await self._send(request, follow_redirects, auth)
            try:
                await response.aread()
            finally:
                if response._needs_close:
                    await response.aclose()
            return response
        raise _timed_out(request, limit) from None

    # The verbs: ``request`` without the keywords' dict when none is given (a call through
    # ``**{}`` costs a request about as much as a call more).

    async def get(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("GET", url, **kwargs) if kwargs else await self.request("GET", url)
        )

    async def head(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("HEAD", url, **kwargs) if kwargs else await self.request("HEAD", url)
        )

    async def options(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("OPTIONS", url, **kwargs)
            if kwargs
            else await self.request("OPTIONS", url)
        )

    async def delete(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("DELETE", url, **kwargs)
            if kwargs
            else await self.request("DELETE", url)
        )

    async def post(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("POST", url, **kwargs) if kwargs else await self.request("POST", url)
        )

    async def put(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("PUT", url, **kwargs) if kwargs else await self.request("PUT", url)
        )

    async def patch(self, url: str, **kwargs: Unpack[RequestOptions]) -> Response:
        return (
            await self.request("PATCH", url, **kwargs)
            if kwargs
            else await self.request("PATCH", url)
        )

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        timeout: float | None = UNSET,
        follow_redirects: bool | None = None,
        auth: AuthTypes | None = UNSET,
        **kwargs: Any,
    ) -> AsyncIterator[Response]:
        """``async with client.stream(...) as response:`` a response whose body is read as it
        arrives; the overall timeout covers the whole block."""
        request = self.build_request(method, url, **kwargs)
        limit = self.timeout if timeout is UNSET else timeout
        with anyio.move_on_after(limit) as scope:
            response = await self.send(request, follow_redirects=follow_redirects, auth=auth)
            async with response:
                yield response
        if scope.cancelled_caught:
            raise _timed_out(request, limit)

    # -- building and sending -----------------------------------------------------------------

    def build_request(
        self,
        method: str,
        url: str,
        *,
        params: Params = None,
        headers: HeaderInput = None,
        content: bytes | str | AsyncIterable[bytes] | None = None,
        data: Mapping[str, Any] | None = None,
        files: FilesInput | None = None,
        json: Any = None,
    ) -> Request:
        """The Request ``request()`` would send: base URL, params and default headers applied.
        ``files`` (with ``data`` fields) makes a multipart/form-data body, streamed."""
        return self._build_request(method, url, params, headers, content, data, files, json)

    def _build_request(
        self,
        method: str,
        url: str,
        params: Params,
        headers: HeaderInput,
        content: bytes | str | AsyncIterable[bytes] | None,
        data: Mapping[str, Any] | None,
        files: FilesInput | None,
        json: Any,
    ) -> Request:
        # ``build_request`` with positional arguments: ``request`` passes them faster.
        if params or self.params or self.base_url is not None:
            url = self._url(url, params)
        if content is None and data is None and files is None and json is None:
            # Most requests: no body, so the fields are the Client's (Request copies them).
            merged = self.headers if headers is None else _merged(Headers(self.headers), headers)
            return Request(method, url, headers=merged)
        if sum(x is not None for x in (content, data if files is None else files, json)) > 1:
            raise TypeError("give at most one of content, data (or files) and json")
        merged = _merged(Headers(self.headers), headers)
        body: bytes | AsyncIterable[bytes] | None
        if files is not None:
            from ._multipart import MultipartStream

            body = multipart = MultipartStream(data, files, _boundary(merged))
            _default(merged, "Content-Type", multipart.content_type)
            if multipart.content_length is not None and "transfer-encoding" not in merged:
                _default(merged, "Content-Length", str(multipart.content_length))
        elif data is not None:
            body = urlencode(data, doseq=True).encode()
            _default(merged, "Content-Type", "application/x-www-form-urlencoded")
        elif json is not None:
            body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
            _default(merged, "Content-Type", "application/json")
        elif isinstance(content, str):
            body = content.encode()
            _default(merged, "Content-Type", "text/plain; charset=utf-8")
        else:
            body = content
        return Request(method, url, headers=merged, content=body)

    def _url(self, url: str, params: Params) -> str:
        if self.base_url is not None and not urlsplit(url).scheme:
            # Relative to the base's path taken as a directory (its query is not carried: the
            # "/" went after it, and urljoin then dropped the path).
            base = urlsplit(self.base_url.url)
            path = base.path if base.path.endswith("/") else base.path + "/"
            url = urljoin(urlunsplit((base.scheme, base.netloc, path, "", "")), url.lstrip("/"))
        if not params and not self.params:
            return url
        query = {**self.params, **(params or {})}
        if not query:
            return url
        parts = urlsplit(url)
        extra = urlencode({k: str(v) for k, v in query.items()})
        return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))

    async def send(
        self,
        request: Request,
        *,
        follow_redirects: bool | None = None,
        auth: AuthTypes | None = UNSET,
    ) -> Response:
        """Send ``request``, following redirects as Go's Client does; the body is not read.
        The auth flow (``auth``, else the Client's) runs for each hop while the redirects stay
        on the request's origin; none runs after one leaves it."""
        return await self._send(request, follow_redirects, auth)

    def _plain(self, request: Request) -> bool:
        """No auth flow, no cookie to send, no userinfo, no retry policy (most requests): the
        Transport's response is the hop's as it is, unless it sets a cookie."""
        return self._bare and "@" not in request.url.url

    async def _send(
        self,
        request: Request,
        follow_redirects: bool | None,
        auth: AuthTypes | None,
        first: Response | None = None,
    ) -> Response:
        """The response at the end of ``request``'s redirects (``first``: its own response,
        when the caller got it already, a plain one)."""
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        flow = self._auth if auth is UNSET else to_auth(auth)
        origin = request.url.origin
        via: list[Request] = []
        history: list[Response] | None = None  # made at the first redirect
        while True:
            if request.url.origin != origin:
                flow = None  # credentials stay dropped, even on a way back (CVE-2024-45336)
            if flow is None:
                if first is not None or self._plain(request):
                    if first is None:
                        response = await self.transport.round_trip(request)
                    else:
                        response, first = first, None
                    if response.headers._has("set-cookie"):
                        self._store_cookies(request, None, response.headers)
                else:
                    response = await self._send_one(request)
            else:
                response = await self._send_authenticated(request, flow)
            if (
                not follow
                or response.status_code not in REDIRECT_CODES
                or not (location := response.headers.get("location"))
            ):
                if len(request.url.url) > CACHED_URL_MAX:
                    forget_parsed_urls(request.url.url)  # the cookie jar's
                if history:
                    response.history = history
                return response
            try:
                following = self._redirect(request, response, location, via)
            except UseLastResponse:
                if history:
                    response.history = history
                return response
            except BaseException:
                await response.aclose()
                raise
            await response._close_unread()
            if history is None:
                history = []
            history.append(response)
            forget_parsed_urls(request.url.url, location)  # urljoin and the cookie jar's
            via.append(request)
            request = following

    async def _send_authenticated(self, request: Request, auth: Auth) -> Response:
        """One hop, through the auth flow: the requests it yields are sent and their
        responses sent back to it; the last response is the hop's."""
        flow = auth.auth_flow(_copy(request))
        try:
            sending = next(flow)
            sent = 0
            while True:
                if sent and not sending.body_is_rewindable:
                    raise RuntimeError(
                        f"the auth flow asks to send {sending.method} {sending.url} again, but "
                        "its body was a stream that cannot be replayed (pass bytes to allow it)"
                    )
                validate_headers(sending.headers, sending.url.host_header)
                response = await self._send_one(sending)
                sent += 1
                try:
                    if auth.requires_response_body:
                        await response.aread()
                    sending = flow.send(response)
                except StopIteration:
                    return response
                except BaseException:
                    await response.aclose()
                    raise
                await response._close_unread()
        finally:
            flow.close()

    async def _send_one(self, request: Request) -> Response:
        jar = self._jar
        cookie_request: CookieRequest | None = None
        added = []
        # http.cookiejar's own methods do nothing for an empty jar: skipped (most Clients never
        # hold a cookie). Another jar's may: always asked.
        if jar is not None and (not self._plain_jar or jar._cookies):  # type: ignore[attr-defined]
            from ._cookies import CookieRequest, cookie_header

            cookie_request = CookieRequest(request)
            cookie = cookie_header(jar, cookie_request)  # skipping any it cannot send
            if cookie and "cookie" not in request.headers:
                added.append(("Cookie", cookie))
        if "@" in request.url.url:  # Go's Client: the URL's userinfo is Basic auth
            auth = _basic_auth(request.url)
            if auth is not None and "authorization" not in request.headers:
                added.append(("Authorization", auth))
        sent = request
        if added:
            sent = Request(
                request.method,
                request.url,
                headers=[*request.headers.items(), *added],
                content=request.content,
                trace=request.trace,
                sni_hostname=request.sni_hostname,
                target=request.target,
            )
        if self._retrier is None:
            response = await self.transport.round_trip(sent)
        else:
            response = await self._retrier.round_trip(self.transport, sent)
        # Likewise storing: only a response that sets a cookie (or another jar) needs the jar.
        headers = response.headers
        if headers._has("set-cookie") or (
            jar is not None and (not self._plain_jar or _sets_cookie2(headers, jar))
        ):
            self._store_cookies(request, cookie_request, headers)
        return response

    def _store_cookies(
        self, request: Request, cookie_request: CookieRequest | None, headers: Headers
    ) -> None:
        from ._cookies import CookieRequest, store_cookies

        if cookie_request is None:
            cookie_request = CookieRequest(request)
        store_cookies(self.cookies, headers, cookie_request)

    def _redirect(
        self, request: Request, response: Response, location: str, via: list[Request]
    ) -> Request:
        """The request that follows ``response`` (Go's redirectBehavior)."""
        if len(via) + 1 > self.max_redirects:
            raise TooManyRedirects(
                f"stopped after {self.max_redirects} redirects (last: {response.status_code} "
                f"to {location})",
                host=request.url.host_header,
            )
        url = URL(urljoin(request.url.url, _escaped(location)))
        status, method = response.status_code, request.method
        headers = Headers(request.headers)
        content = request.content
        if status in (301, 302, 303):
            if method != "HEAD":
                method = "GET"
            content = None
            for name in _BODY_FIELDS:
                del headers[name]
        elif not request.body_is_rewindable:
            raise RedirectError(
                f"{status} to {url} asks to send the body again, but it was a stream that "
                "cannot be replayed (pass bytes to allow it)",
                host=request.url.host_header,
            )
        if url.origin != request.url.origin:
            for name in _SENSITIVE:
                del headers[name]
        if _is_absolute(location):  # a Host of one's own names the server of a relative one
            del headers["host"]
        explicit = (via[0] if via else request).headers.get("referer")
        referer = _referer(request.url.url, url.url, explicit)
        del headers["referer"]
        if referer:
            headers["Referer"] = referer
        following = Request(method, url, headers=headers, content=content, trace=request.trace)
        if self.check_redirect is not None:
            self.check_redirect(following, [*via, request])
        return following


def _referer(last: str, new: str, explicit: str | None) -> str | None:
    """Go's refererForURL: the URL redirected from, without its userinfo and fragment (or the
    Referer the first request had), and none from https to http (RFC 9110 10.1.3)."""
    previous = urlsplit(last)
    if previous.scheme.lower() == "https" and urlsplit(new).scheme.lower() == "http":
        return None
    if explicit:
        return explicit
    netloc = previous.netloc.rpartition("@")[2]
    return urlunsplit(previous._replace(netloc=netloc, fragment=""))


def _is_absolute(location: str) -> bool:
    parts = urlsplit(location)
    return bool(parts.scheme or parts.netloc)


def _timed_out(request: Request, limit: float | None) -> RequestTimeout:
    return RequestTimeout(
        f"{request.method} {request.url} did not complete within timeout={limit}s",
        host=request.url.host_header,
    )


def _merged(headers: Headers, given: HeaderInput) -> Headers:
    """``headers`` with the fields of ``given`` replacing those of the same name; a name
    given more than once keeps all its values."""
    fields = Headers(given)
    for name in fields:
        del headers[name]
    for name, value in fields.items():
        headers.add(name, value)
    return headers


def _escaped(location: str) -> str:
    """A Location as sent, with what a URL cannot hold as it is (a space, raw UTF-8 bytes)
    percent-encoded, as Go's url.Parse and RequestURI do; escapes already there are kept."""
    try:
        raw = location.encode("latin-1")  # the bytes the server sent
    except UnicodeEncodeError:
        raw = location.encode()
    return quote(raw, safe=_URL_SAFE)


def _basic_auth(url: URL) -> str | None:
    """The Authorization field for the user:password@ of ``url``, if it has one."""
    if "@" not in url.url:
        return None
    parts = urlsplit(url.url)
    if parts.username is None:
        return None
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(credentials.encode()).decode("ascii")


def _boundary(headers: Headers) -> str | None:
    """The boundary a Content-Type of one's own names, to be used (httpx does the same)."""
    content_type = headers.get("content-type") or ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"')
    return None


def _copy(request: Request) -> Request:
    """``request`` with headers of its own, for an auth flow to change."""
    return Request(
        request.method,
        request.url,
        headers=request.headers,
        content=request.content,
        trace=request.trace,
        sni_hostname=request.sni_hostname,
        target=request.target,
        connect_timeout=request.connect_timeout,
        wait_listener=request.wait_listener,
    )


def _default(headers: Headers, name: str, value: str) -> None:
    if name not in headers:
        headers[name] = value


def _sets_cookie2(headers: Headers, jar: CookieJar) -> bool:
    """Whether the fields hold a Set-Cookie2 (RFC 2965, obsolete) and the jar's policy reads
    it (the Client's own does not)."""
    if not getattr(getattr(jar, "_policy", None), "rfc2965", True):
        return False
    return bool(headers.get_list("set-cookie2"))
