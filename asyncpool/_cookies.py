"""The Client's cookie policy: http.cookiejar's, made safe for a client that sends what it
stores (issue 25).

- A cookie whose name, value, domain or path is not printable ASCII (a non-ASCII byte, which
  arrives as latin-1 text, or a control character) is dropped, as aiohttp does: sent back it
  would fail every request to its domain, and any subdomain could plant it there.
- A ``Domain`` attribute on a cookie from an IP address must be that address (RFC 6265 §5.1.3:
  an IP address domain-matches only itself); ``Domain=0.0.1`` from 127.0.0.1 is refused.
- A ``Domain`` that is a public suffix (``co.uk``, ``github.io``) is refused, unless it is the
  request's host itself, when the cookie is for that host only (RFC 6265 §5.3 step 5), when
  a Public Suffix List is installed: ``publicsuffixlist`` or else ``publicsuffix2``. Without
  either, http.cookiejar's own heuristics (``.co.uk``-style two-letter second-level domains)
  are all there is.
- A cookie set already expired deletes the stored one only where the response could have
  set it: http.cookiejar deletes it before its policy is asked, so any site could delete
  any other's cookies (``store_cookies`` asks the policy first, for a plain jar).
- An attribute that cannot be used is ignored, not the whole cookie (RFC 6265 §5.2, as Go):
  an empty ``Domain``, a ``Max-Age`` that is no integer, a ``Path`` not starting with ``/``.
- The jar sees a request's host as DNS is asked it (IDNA), without the URL's userinfo.

``cookie_header`` builds the ``Cookie`` field and skips any stored cookie it could not send
(a jar of one's own, with its own policy, or cookies set on the jar directly).

The Client imports this module (and with it http.cookiejar, urllib.request and email) only
when it first has a cookie to store or send: ``new_jar``, ``add_cookie`` and ``store_cookies``
are its way in, ``CookieRequest`` and ``CookieResponse`` adapt its requests and responses to
the urllib shapes the jar speaks.
"""

from __future__ import annotations

import contextlib
import email.message
import http.cookiejar
import ipaddress
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy

from ._models import Headers, Request

__all__ = [
    "CookiePolicy",
    "CookieRequest",
    "CookieResponse",
    "cookie_header",
    "is_plain_jar",
    "is_public_suffix",
    "new_jar",
    "store_cookies",
]

# RFC 6265's cookie-name is a token; a cookie-value is printable ASCII (as browsers take it:
# cookie-octets plus the space, DQUOTE, comma and backslash they let through).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def _load_public_suffix_check() -> Callable[[str], bool] | None:
    try:
        from publicsuffixlist import PublicSuffixList  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        psl = PublicSuffixList()
        return lambda domain: bool(psl.is_public(domain))
    try:
        import publicsuffix2  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return lambda domain: bool(publicsuffix2.get_tld(domain, wildcard=True) == domain)


_public_suffix_check: Callable[[str], bool] | None = None
_loaded = False


def is_public_suffix(domain: str) -> bool | None:
    """Whether ``domain`` is a public suffix; None when no Public Suffix List is installed."""
    global _public_suffix_check, _loaded
    if not _loaded:
        _public_suffix_check, _loaded = _load_public_suffix_check(), True
    if _public_suffix_check is None:
        return None
    return _public_suffix_check(domain.strip(".").lower())


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def sendable(cookie: Cookie) -> bool:
    """Whether the cookie can go into a ``Cookie`` field (printable ASCII throughout)."""
    value = cookie.value if cookie.value is not None else ""
    return bool(
        _TOKEN.fullmatch(cookie.name)
        and _PRINTABLE.fullmatch(value)
        and _PRINTABLE.fullmatch(cookie.domain)
        and _PRINTABLE.fullmatch(cookie.path)
    )


class CookiePolicy(DefaultCookiePolicy):
    """http.cookiejar's ``DefaultCookiePolicy`` that also refuses cookies a client could not
    send, ``Domain`` attributes naming other IP addresses, and public-suffix domains."""

    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        if not sendable(cookie):
            return False
        return super().set_ok(cookie, request)

    def set_ok_domain(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        if cookie.domain_specified:
            host = (urllib.parse.urlsplit(request.full_url).hostname or "").lower()
            domain = cookie.domain.lstrip(".").lower()
            ip = _ip(host)
            if ip is not None and _ip(domain) != ip:
                return False  # an IP address domain-matches only itself (RFC 6265 §5.1.3)
            if ip is None and is_public_suffix(domain):
                if domain != host:
                    return False
                # The public suffix's own host: a cookie for that host only (§5.3 step 5),
                # not for every name under the suffix.
                cookie.domain, cookie.domain_specified = host, False
                cookie.domain_initial_dot = False
        return super().set_ok_domain(cookie, request)

    def return_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return sendable(cookie) and super().return_ok(cookie, request)

    def return_ok_domain(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        if not cookie.domain_specified and cookie.domain:
            # Set without a Domain attribute: for its host only (RFC 6265 §5.3 step 6), as Go's
            # jar; the default policy sent it to every subdomain too. (A cookie of no domain
            # at all is one the Client was given: for any host.)
            hosts = http.cookiejar.eff_request_host(request)  # type: ignore[attr-defined]
            request_host, effective_host = hosts
            if cookie.domain.lower() not in (request_host, effective_host):
                return False
        return super().return_ok_domain(cookie, request)


def cookie_header(jar: CookieJar, request: urllib.request.Request) -> str | None:
    """The ``Cookie`` field ``jar`` has for ``request``, without any cookie it cannot send."""
    jar.add_cookie_header(request)
    header = request.get_header("Cookie")
    if header is None or _PRINTABLE.fullmatch(header):
        return header
    # Some stored cookie would fail the request: send the others (a jar of the sendable ones,
    # under the same policy, makes the field as the jar would have).
    request.remove_header("Cookie")
    clean = CookieJar(jar._policy)  # type: ignore[attr-defined]
    for cookie in jar:
        if sendable(cookie):
            clean.set_cookie(cookie)
    clean.add_cookie_header(request)
    header = request.get_header("Cookie")
    return header if header is None or _PRINTABLE.fullmatch(header) else None


# -- the Client's way in: the jar speaks urllib ---------------------------------------------------


class CookieRequest(urllib.request.Request):
    """A Request as the jar reads it: URL (its host in IDNA, with no userinfo: the jar would
    take ``user:password@host`` for the host), method and header fields."""

    def __init__(self, request: Request) -> None:
        url = request.url
        super().__init__(f"{url.scheme}://{url.host_header}{url.target}", method=request.method)
        for name, value in request.headers.items():
            self.add_unredirected_header(name, value)


class CookieResponse:
    """A response's fields as the jar reads them (``info()``, an email Message)."""

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def info(self) -> email.message.Message:
        message = email.message.Message()
        for name, value in self._headers.items():
            if name.lower() == "set-cookie":
                value = _UNUSABLE_ATTRIBUTE.sub("", value)
            message[name] = value
        return message


# Attributes http.cookiejar would drop the whole cookie for (an empty Domain, a Max-Age that
# is no integer) or keep as they are (a relative Path, which no request path matches): RFC
# 6265 §5.2 ignores them, and keeps the cookie.
_UNUSABLE_ATTRIBUTE = re.compile(
    r";\s*(?:domain\s*=\s*(?=;|$)|max-age\s*=(?!\s*-?\d+\s*(?:;|$))[^;]*|path\s*=(?!\s*/)[^;]*)",
    re.IGNORECASE,
)


def new_jar(cookies: Mapping[str, str] | None = None) -> CookieJar:
    """A jar under the Client's policy, holding ``cookies`` (each for any host, path /)."""
    jar = CookieJar(CookiePolicy())
    for name, value in (cookies or {}).items():
        jar.set_cookie(_session_cookie(name, value))
    return jar


def store_cookies(jar: CookieJar, headers: Headers, request: CookieRequest) -> None:
    """Store what the response fields ``headers`` to ``request`` set, as the jar's policy
    lets, deletions too (see the module docstring; a jar of one's own does as it does)."""
    response = CookieResponse(headers)
    if not is_plain_jar(jar):
        jar.extract_cookies(response, request)  # type: ignore[arg-type]
        return
    policy: http.cookiejar.CookiePolicy = jar._policy  # type: ignore[attr-defined]
    scratch = _DeletionsNoted(policy)
    cookies = scratch.make_cookies(response, request)  # type: ignore[arg-type]
    for domain, path, name in scratch.deletions:
        probe = _session_cookie(name, "", domain=domain, path=path)
        if policy.set_ok(probe, request):
            with contextlib.suppress(KeyError):
                jar.clear(domain, path, name)
    for cookie in cookies:
        if policy.set_ok(cookie, request):
            jar.set_cookie(cookie)


class _DeletionsNoted(CookieJar):
    """A jar to make a response's cookies with: the deletions the response asks for (a
    cookie set already expired) are noted, for the policy to allow, not made."""

    def __init__(self, policy: http.cookiejar.CookiePolicy) -> None:
        super().__init__(policy)
        self.deletions: list[tuple[str, str, str]] = []

    def clear(
        self, domain: str | None = None, path: str | None = None, name: str | None = None
    ) -> None:
        assert domain is not None and path is not None and name is not None
        self.deletions.append((domain, path, name))


_JAR_METHODS = ("add_cookie_header", "extract_cookies", "make_cookies", "_cookies_for_request")


def is_plain_jar(jar: CookieJar) -> bool:
    """Whether ``jar`` sends and stores cookies with http.cookiejar's own methods, which do
    nothing when it holds no cookie and a response sets none: then the Client skips them."""
    cls = type(jar)
    return isinstance(jar, CookieJar) and all(
        getattr(cls, name) is getattr(CookieJar, name) for name in _JAR_METHODS
    )


def _session_cookie(name: str, value: str, *, domain: str = "", path: str = "/") -> Cookie:
    return Cookie(
        version=0,
        name=name,
        value=value,
        port=None,
        port_specified=False,
        domain=domain,
        domain_specified=domain.startswith("."),  # as http.cookiejar makes a Domain's
        domain_initial_dot=domain.startswith("."),
        path=path,
        path_specified=True,
        secure=False,
        expires=None,
        discard=True,
        comment=None,
        comment_url=None,
        rest={},
    )
