"""Which proxy a request goes through, as the environment says: Go's
``golang.org/x/net/http/httpproxy`` (``Config`` and its ``ProxyFunc``) and net/http's
``ProxyFromEnvironment``, plus curl's ``ALL_PROXY`` fallback.

Variables (the upper-case name first, then the lower-case one; an empty value is unset):

* ``HTTPS_PROXY`` / ``https_proxy``: the proxy of ``https`` URLs;
* ``HTTP_PROXY`` / ``http_proxy``: the proxy of ``http`` URLs. Both are ignored when
  ``REQUEST_METHOD`` is set: in a CGI program a request's ``Proxy:`` header arrives as
  ``HTTP_PROXY`` ("httpoxy"), and where the environment ignores case (Windows) it is
  ``http_proxy`` too (Python's urllib ignores the upper-case one only; Go refuses the proxy);
* ``ALL_PROXY`` / ``all_proxy``: curl's fallback for both;
* ``NO_PROXY`` / ``no_proxy``: the hosts reached directly (see ``EnvironmentProxies``).

A proxy value is a URL kept as given (``http://``, ``https://``, ``socks5://``, ``socks5h://``,
any scheme), or a bare ``host[:port]`` (with ``user:password@`` if need be), which means
``http://host[:port]``. A value that is neither is a ``ValueError`` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from ._models import Request, _idna

__all__ = ["EnvironmentProxies", "hide_password", "proxy_from_environment", "redact_password"]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _getenv(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, value) of the first of ``names`` set to a non-empty value, as Go's getEnvAny."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _proxy_url(value: str, variable: str) -> str:
    """The proxy URL of a variable's value: a URL as given, ``host[:port]`` as ``http://``."""
    url = value.strip()
    if "://" not in url:
        url = f"http://{url}"
    problem = None
    if any(c.isspace() or not c.isprintable() for c in url):
        problem = "it holds whitespace or control characters"
    else:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError as exc:
            problem = hide_password(str(exc), url)  # (the message may quote it)
        else:
            if not parts.scheme:
                problem = "it has no scheme"
            elif not parts.hostname:
                problem = "it has no host"
    if problem is not None:
        raise ValueError(
            f"{variable}={redact_password(value)!r} is not a proxy URL ({problem}); "
            "give scheme://host:port or host:port"
        )
    return url


def _userinfo_span(url: str) -> tuple[int, int]:
    """Where ``url``'s userinfo is, however malformed the rest: after ``://``, up to the last
    ``@`` (a password with an unescaped ``/`` or ``#`` ends a parser's host early); an empty
    span without one."""
    at = url.rfind("@")
    if at == -1:
        return 0, 0
    scheme_end = url.find("://")
    return (0 if scheme_end == -1 else scheme_end + 3), at


def redact_password(url: str) -> str:
    """``url`` without the password of its userinfo."""
    start, end = _userinfo_span(url)
    if start == end:
        return url
    return url[:start] + url[start:end].split(":", 1)[0] + url[end:]


def hide_password(text: str, url: str) -> str:
    """``text`` (a parser's message about ``url``) without the password of ``url``: whole, or
    cut at the ``/``, ``?`` or ``#`` where a parser ends the host early."""
    start, end = _userinfo_span(url)
    password = url[start:end].partition(":")[2]
    secrets = {password, *(password.split(separator, 1)[0] for separator in "/?#")} - {""}
    for secret in sorted(secrets, key=len, reverse=True):  # the longest first
        text = text.replace(secret, "****")
    return text


def _ip(host: str) -> _IPAddress | None:
    """``host`` as an IP address (an IPv4-mapped IPv6 address as IPv4, as Go's net.IP), or
    None for a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _split_entry(entry: str) -> tuple[str, str] | None:
    """A NO_PROXY entry as (host, port), port "" when it names none; None when malformed.

    ``host:port``, ``[v6]:port``, ``[v6]``, and an IPv6 address without brackets (its colons
    are not a port, as Go's SplitHostPort refuses "too many colons")."""
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            return None
        rest = entry[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        return entry[1:end], rest[1:]
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, port
    return entry, ""


class EnvironmentProxies:
    """Proxy settings as Go's ``httpproxy.Config``, and its ``ProxyFunc`` as ``__call__``: give
    it to ``Transport(proxy=...)``, or ask ``proxy_for(scheme, host, port)``.

    ``no_proxy`` is a comma-separated list (spaces around entries ignored, case-insensitive)
    of the hosts reached directly, with Go's rules:

    * ``*`` alone: no proxy for any host;
    * ``example.com``: that name and its subdomains (``sub.example.com``), not
      ``notexample.com``; ``.example.com`` and ``*.example.com``: the subdomains only;
    * ``192.168.1.1``, ``2001:db8::1`` (with or without brackets): that IP address, when the URL
      names it as an IP literal (no name is resolved);
    * ``10.0.0.0/8``, ``2001:db8::/32``: the IP literals of that block;
    * ``host:port``, ``192.168.1.1:80``, ``[2001:db8::1]:443``: that host on that port only
      (the URL's port, or its scheme's default);
    * malformed entries are skipped.

    Loopback never goes through a proxy, whatever the settings (Go's ``useProxy``):
    ``localhost``, ``127.0.0.0/8``, ``::1``. Names and entries are compared in their IDNA
    (ASCII) form. An IP-literal host is matched by IP and CIDR entries only.
    """

    __slots__ = ("_domains", "_ips", "_match_all", "_networks", "http_proxy", "https_proxy")

    http_proxy: str | None
    https_proxy: str | None

    def __init__(
        self,
        *,
        http_proxy: str | None = None,
        https_proxy: str | None = None,
        no_proxy: str = "",
    ) -> None:
        """The proxy of ``http`` and of ``https`` URLs (None: none), and the NO_PROXY list."""
        self.http_proxy = None if not http_proxy else _proxy_url(http_proxy, "http_proxy")
        self.https_proxy = None if not https_proxy else _proxy_url(https_proxy, "https_proxy")
        self._match_all = False
        self._networks: list[_IPNetwork] = []
        self._ips: list[tuple[_IPAddress, int | None]] = []
        # (".example.com", port or None, whether "example.com" itself matches too)
        self._domains: list[tuple[str, int | None, bool]] = []
        self._parse_no_proxy(no_proxy)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> EnvironmentProxies:
        """The settings of ``environ`` (see the module docstring for the variables). Raises
        ``ValueError`` naming the variable whose value is not a proxy URL."""
        http_names = () if environ.get("REQUEST_METHOD") else ("HTTP_PROXY", "http_proxy")
        all_proxy = _getenv(environ, "ALL_PROXY", "all_proxy")
        proxies: list[str | None] = []
        for names in (http_names, ("HTTPS_PROXY", "https_proxy")):
            found = _getenv(environ, *names) or all_proxy
            proxies.append(None if found is None else _proxy_url(found[1], found[0]))
        no_proxy = _getenv(environ, "NO_PROXY", "no_proxy")
        return cls(
            http_proxy=proxies[0],
            https_proxy=proxies[1],
            no_proxy="" if no_proxy is None else no_proxy[1],
        )

    def __repr__(self) -> str:
        http_proxy, https_proxy = (
            None if url is None else redact_password(url)
            for url in (self.http_proxy, self.https_proxy)
        )
        return (
            f"EnvironmentProxies(http_proxy={http_proxy!r}, "
            f"https_proxy={https_proxy!r}, no_proxy={self.no_proxy!r})"
        )

    @property
    def no_proxy(self) -> str:
        """The NO_PROXY list as parsed (normalised: lower case, IDNA, malformed entries out)."""
        if self._match_all:
            return "*"
        entries = [str(network) for network in self._networks]
        for ip, port in self._ips:
            host = f"[{ip}]" if ip.version == 6 and port is not None else str(ip)
            entries.append(host if port is None else f"{host}:{port}")
        for suffix, port, match_host in self._domains:
            host = suffix[1:] if match_host else suffix
            entries.append(host if port is None else f"{host}:{port}")
        return ",".join(entries)

    def __call__(self, request: Request) -> str | None:
        """The proxy URL for ``request`` (by its URL's scheme, host and port), or None."""
        url = request.url
        return self.proxy_for(url.scheme, url.host, url.port)

    def proxy_for(self, scheme: str, host: str, port: int) -> str | None:
        """The proxy URL for a request to ``scheme://host:port``, or None: go direct (another
        scheme than http / https, no proxy set for it, or the host in NO_PROXY or loopback)."""
        scheme = scheme.lower()
        if scheme == "https":
            proxy = self.https_proxy
        elif scheme == "http":
            proxy = self.http_proxy
        else:
            return None
        if proxy is None or not self._use_proxy(host, port):
            return None
        return proxy

    def _use_proxy(self, host: str, port: int) -> bool:
        host = host.strip().lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host == "localhost":
            return False
        ip = _ip(host)
        if ip is not None and ip.is_loopback:
            return False
        if self._match_all:
            return False
        if ip is not None:
            if any(ip in network for network in self._networks):
                return False
            return not any(
                ip == entry and (entry_port is None or entry_port == port)
                for entry, entry_port in self._ips
            )
        if not host.isascii():
            host = _idna(host)
        return not any(
            (host.endswith(suffix) or (match_host and host == suffix[1:]))
            and (entry_port is None or entry_port == port)
            for suffix, entry_port, match_host in self._domains
        )

    def _parse_no_proxy(self, no_proxy: str) -> None:
        for raw in no_proxy.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self._match_all = True
                return
            if "/" in entry:  # IPv4/CIDR, IPv6/CIDR
                try:
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    pass  # not a block: taken as a name below (and matches nothing)
                else:
                    continue
            split = _split_entry(entry)
            if split is None:
                continue
            host, port_text = split
            if port_text and not (port_text.isascii() and port_text.isdigit()):
                continue  # no port can match it
            port = int(port_text) if port_text else None
            ip = _ip(host)
            if ip is not None:
                self._ips.append((ip, port))
                continue
            if host.startswith("*."):
                host = host[1:]
            match_host = not host.startswith(".")
            name = host.lstrip(".")
            if not name:
                continue
            if not name.isascii():
                name = _idna(name)
            self._domains.append((f".{name}", port, match_host))


_environment: EnvironmentProxies | None = None
_environment_lock = threading.Lock()


def proxy_from_environment(request: Request) -> str | None:
    """Go's ``http.ProxyFromEnvironment``: the proxy URL for ``request`` as the environment
    variables say (see ``EnvironmentProxies``), or None to connect directly.

    The environment is read once per process, on the first call, and kept (as Go's): later
    changes to ``os.environ`` are not seen. A Transport given this function snapshots the
    environment when it is constructed instead (``EnvironmentProxies.from_environ()``). A
    variable whose value is not a proxy URL makes each call raise ``ValueError``."""
    global _environment
    proxies = _environment
    if proxies is None:
        with _environment_lock:
            if _environment is None:
                _environment = EnvironmentProxies.from_environ()
            proxies = _environment
    return proxies(request)


def _reset_environment() -> None:
    """Forget what ``proxy_from_environment`` read (for tests, as Go's ResetProxyEnv)."""
    global _environment
    with _environment_lock:
        _environment = None
