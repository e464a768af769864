"""The proxy the environment names for a URL, as Go's golang.org/x/net/http/httpproxy decides.

The tables are Go's own (``proxy_test.go``: ``proxyForURLTests``, ``UseProxyTests`` with its
``noProxy`` list, ``TestInvalidNoProxy``, ``TestAllNoProxy``, ``TestFromEnvironment*``) and
the cases of curl's NO_PROXY unit test (``tests/unit/unit1614.c``) on which Go and curl agree;
where they disagree the Go answer is the one tested, and said so.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import asyncpool
from asyncpool import EnvironmentProxies, Request, proxy_from_environment
from asyncpool._proxy_env import _reset_environment

DEFAULT_PORTS = {"http": 80, "https": 443}


def proxy_for_url(proxies: EnvironmentProxies, url: str) -> str | None:
    """As Go's ProxyFunc gets a URL: an http(s) URL through ``__call__`` with a Request."""
    scheme = url.split("://", 1)[0]
    if scheme in DEFAULT_PORTS:
        return proxies(Request("GET", url))
    parts = urlsplit(url)
    assert parts.hostname is not None
    return proxies.proxy_for(scheme, parts.hostname, parts.port or 0)


# -- Go: proxyForURLTests --------------------------------------------------------------------

# (environment, request URL, the proxy URL or None). Go's Config fields are given as the
# variables FromEnvironment reads them from; its CGI flag as REQUEST_METHOD.
GO_PROXY_FOR_URL: list[tuple[dict[str, str], str, str | None]] = [
    ({"HTTP_PROXY": "127.0.0.1:8080"}, "http://example.com", "http://127.0.0.1:8080"),
    (
        {"HTTP_PROXY": "cache.corp.example.com:1234"},
        "http://example.com",
        "http://cache.corp.example.com:1234",
    ),
    (
        {"HTTP_PROXY": "cache.corp.example.com"},
        "http://example.com",
        "http://cache.corp.example.com",
    ),
    ({"HTTP_PROXY": "localhost"}, "http://example.com", "http://localhost"),
    (
        {"HTTP_PROXY": "https://cache.corp.example.com"},
        "http://example.com",
        "https://cache.corp.example.com",
    ),
    ({"HTTP_PROXY": "http://127.0.0.1:8080"}, "http://example.com", "http://127.0.0.1:8080"),
    ({"HTTP_PROXY": "https://127.0.0.1:8080"}, "http://example.com", "https://127.0.0.1:8080"),
    ({"HTTP_PROXY": "socks5://127.0.0.1"}, "http://example.com", "socks5://127.0.0.1"),
    ({"HTTP_PROXY": "foo://host"}, "http://example.com", "foo://host"),  # unknown schemes kept
    # Don't use the https proxy for http; use it for https.
    (
        {"HTTP_PROXY": "http.proxy.tld", "HTTPS_PROXY": "secure.proxy.tld"},
        "http://insecure.tld/",
        "http://http.proxy.tld",
    ),
    (
        {"HTTP_PROXY": "http.proxy.tld", "HTTPS_PROXY": "secure.proxy.tld"},
        "https://secure.tld/",
        "http://secure.proxy.tld",
    ),
    (
        {"HTTP_PROXY": "http.proxy.tld", "HTTPS_PROXY": "https://secure.proxy.tld"},
        "https://secure.tld/",
        "https://secure.proxy.tld",
    ),
    ({"HTTP_PROXY": "http.proxy.tld"}, "https://secure.tld/", None),
    ({"HTTP_PROXY": "http.proxy.tld"}, "ftp://insecure.tld/", None),
    # Issue 16405: HTTP_PROXY may be attacker-controlled in a CGI program (Go: an error; here
    # the variable is ignored, as curl and Python's urllib do).
    ({"HTTP_PROXY": "http://10.1.2.3:8080", "REQUEST_METHOD": "GET"}, "http://example.com", None),
    # ... and the lower-case name too: where the environment ignores case (Windows) it is the
    # same variable.
    ({"http_proxy": "http://10.1.2.3:8080", "REQUEST_METHOD": "GET"}, "http://example.com", None),
    # The https proxy is still used in a CGI program.
    (
        {"HTTPS_PROXY": "https://secure.proxy.tld", "REQUEST_METHOD": "GET"},
        "https://secure.tld/",
        "https://secure.proxy.tld",
    ),
    ({}, "http://example.com", None),
    ({"NO_PROXY": "example.com", "HTTP_PROXY": "proxy"}, "http://example.com/", None),
    ({"NO_PROXY": ".example.com", "HTTP_PROXY": "proxy"}, "http://example.com/", "http://proxy"),
    ({"NO_PROXY": "ample.com", "HTTP_PROXY": "proxy"}, "http://example.com/", "http://proxy"),
    ({"NO_PROXY": "example.com", "HTTP_PROXY": "proxy"}, "http://foo.example.com/", None),
    ({"NO_PROXY": ".foo.com", "HTTP_PROXY": "proxy"}, "http://example.com/", "http://proxy"),
    ({"NO_PROXY": ".示例.com", "HTTP_PROXY": "proxy"}, "http://www.示例.com", None),
    ({"NO_PROXY": "xn--fsq092h.com", "HTTP_PROXY": "proxy"}, "http://www.示例.com", None),
    ({"NO_PROXY": "示例.com", "HTTP_PROXY": "proxy"}, "http://www.xn--fsq092h.com", None),
    (
        {"NO_PROXY": "example.com", "HTTP_PROXY": "proxy"},
        "http://[1000::%25.example.com]:123",
        "http://proxy",
    ),
]


@pytest.mark.parametrize(("environ", "url", "want"), GO_PROXY_FOR_URL)
def test_go_proxy_for_url(environ: dict[str, str], url: str, want: str | None) -> None:
    proxies = EnvironmentProxies.from_environ(environ)
    assert proxy_for_url(proxies, url) == want
    environ.clear()  # as Go's: changing the configuration afterwards changes nothing
    assert proxy_for_url(proxies, url) == want


# -- Go: UseProxyTests, TestAllNoProxy, TestInvalidNoProxy -----------------------------------

GO_NO_PROXY = (
    "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, 192.168.1.3:80, "
    "10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, [2001:db8::52:0:3]:80, "
    "2002:db8:a::45/64"
)

# (host, whether a request to host:80 goes through the proxy)
GO_USE_PROXY: list[tuple[str, bool]] = [
    # Never proxy localhost:
    ("localhost", False),
    ("127.0.0.1", False),
    ("127.0.0.2", False),
    ("[::1]", False),
    ("[::2]", True),  # not a loopback address
    ("192.168.1.1", False),  # matches exact IPv4
    ("192.168.1.2", True),  # ports do not match
    ("192.168.1.3", False),  # matches exact IPv4:port
    ("192.168.1.4", True),  # no match
    ("10.0.0.2", False),  # matches IPv4/CIDR
    ("[2001:db8::52:0:1]", False),  # matches exact IPv6
    ("[2001:db8::52:0:2]", True),  # no match
    ("[2001:db8::52:0:3]", False),  # matches exact [IPv6]:port
    ("[2002:db8:a::123]", False),  # matches IPv6/CIDR
    ("[fe80::424b:c8be:1643:a1b6]", True),  # no match
    ("barbaz.net", True),  # does not match as .barbaz.net
    ("www.barbaz.net", False),  # does match as .barbaz.net
    ("foobar.com", False),  # does match as foobar.com
    ("www.foobar.com", False),  # match because NO_PROXY includes "foobar.com"
    ("foofoobar.com", True),  # not match as a part of foobar.com
    ("baz.com", True),  # not match as a part of barbaz.com
    ("localhost.net", True),  # not match as suffix of address
    ("local.localhost", True),  # not match as prefix as address
    ("barbarbaz.net", True),  # not match, wrong domain
    ("wildcard.io", True),  # does not match as *.wildcard.io
    ("nested.wildcard.io", False),  # match as *.wildcard.io
    ("awildcard.io", True),  # not a match because of '*'
]


def uses_proxy(no_proxy: str, host: str, port: int = 80) -> bool:
    proxies = EnvironmentProxies(http_proxy="http://proxy.test:3128", no_proxy=no_proxy)
    return proxies.proxy_for("http", host, port) is not None


@pytest.mark.parametrize(("host", "proxied"), GO_USE_PROXY)
def test_go_use_proxy(host: str, proxied: bool) -> None:
    assert uses_proxy(GO_NO_PROXY, host) is proxied
    assert uses_proxy(GO_NO_PROXY, host.upper()) is proxied  # case-insensitive


@pytest.mark.parametrize(("host", "proxied"), GO_USE_PROXY)
def test_go_all_no_proxy(host: str, proxied: bool) -> None:
    assert not uses_proxy("*", host)
    assert not uses_proxy(" * ", host)


def test_go_invalid_no_proxy() -> None:
    assert uses_proxy(":1", "example.com")


# -- curl: tests/unit/unit1614.c (Curl_check_noproxy) ----------------------------------------

# (host, NO_PROXY, whether the host goes through the proxy); loopback rows left out (never
# proxied here, whatever NO_PROXY says).
CURL_NO_PROXY: list[tuple[str, str, bool]] = [
    ("www.example.com", "localhost,.example.com,.example.de", False),
    ("www.example.com", "localhost,.example.com.,.example.de", True),  # curl: direct
    ("foobar", "barfoo", True),
    ("foobar", "foobar", False),
    ("192.168.0.1", "foobar", True),
    ("192.168.0.1", "192.168.0.0/16", False),
    ("192.168.0.1", "192.168.0.0/24", False),
    ("192.168.0.1", "192.168.0.0/32", True),
    ("192.168.0.1", "192.168.0.0", True),
    ("192.168.1.1", "192.168.0.0/24", True),
    ("192.168.1.1", "foo, bar, 192.168.0.0/24", True),
    ("192.168.1.1", "foo, bar, 192.168.0.0/16", False),
    ("bar", "foo, bar, ::1/64", False),
    ("BAr", "foo, bar, ::1/64", False),
    ("BAr", "foo,,,,,              bar, ::1/64", False),
    ("www.example.com", "foo, .example.com", False),
    ("www.example.com", "www2.example.com, .example.net", True),
    ("nonexample.com", ".example.com, .example.net", True),
    # Where Go and curl disagree, Go's answer: a leading dot is the subdomains only (curl:
    # the domain too), and a name without one covers its subdomains (curl 7.x: not).
    ("example.com", ".example.com, .example.net", True),
    ("example.com", "localhost,.example.com,.example.de", True),
    ("www.example.com", "localhost,example.com,.example.de", False),
    ("example.com", "localhost,example.com,.example.de", False),
]


@pytest.mark.parametrize(("host", "no_proxy", "proxied"), CURL_NO_PROXY)
def test_curl_no_proxy(host: str, no_proxy: str, proxied: bool) -> None:
    assert uses_proxy(no_proxy, host) is proxied


# -- more NO_PROXY rules ---------------------------------------------------------------------

MORE_NO_PROXY: list[tuple[str, str, int, bool]] = [
    # (NO_PROXY, host, port, proxied)
    ("example.com:8080", "example.com", 8080, False),
    ("example.com:8080", "sub.example.com", 8080, False),
    ("example.com:8080", "example.com", 80, True),
    ("*.example.com:443", "a.example.com", 443, False),
    ("*.example.com:443", "example.com", 443, True),
    ("EXAMPLE.COM", "Sub.Example.Com", 80, False),
    ("10.0.0.0/8", "10.200.3.4", 80, False),
    ("10.0.0.0/8", "11.0.0.1", 80, True),
    ("10.0.0.0/8", "10.example.com", 80, True),  # a block matches IP literals only
    ("10.1.2.3/8", "10.200.3.4", 80, False),  # host bits set: the block all the same
    ("10.0.0.0/8", "::ffff:10.1.2.3", 80, False),  # an IPv4-mapped IPv6 address is IPv4
    ("2001:db8::/32", "2001:db8:1::5", 80, False),
    ("2001:db8::/32", "[2001:db8:1::5]", 80, False),
    ("2001:db8::/32", "2001:db9::5", 80, True),
    ("2001:DB8::1", "2001:db8:0::1", 80, False),
    ("[2001:db8::1]", "2001:db8::1", 443, False),  # brackets without a port
    ("[2001:db8::1]:443", "2001:db8::1", 443, False),
    ("[2001:db8::1]:443", "2001:db8::1", 80, True),
    ("192.168.1.1", "192.168.1.10", 80, True),  # an address is not a prefix
    ("168.1.1", "192.168.1.1", 80, True),  # a name never matches an IP literal
    ("example.com:http", "example.com", 80, True),  # a port that is no number: no match
    ("example.com:", "example.com", 1234, False),  # an empty port: any port
    ("[2001:db8::1", "2001:db8::1", 80, True),  # malformed: skipped
    ("example.com/8", "example.com", 80, True),  # not a block, not a name
    ("", "example.com", 80, True),
    (" , ,", "example.com", 80, True),
    ("foo.com,*", "example.com", 80, False),  # "*" anywhere in the list
    # Loopback, whatever NO_PROXY says.
    ("", "localhost", 80, False),
    ("", "LOCALHOST", 80, False),
    ("", "127.255.0.1", 80, False),
    ("", "::1", 80, False),
    ("", "::ffff:127.0.0.1", 80, False),
    ("", "sub.localhost", 80, True),  # a name under localhost is not loopback (Go)
]


@pytest.mark.parametrize(("no_proxy", "host", "port", "proxied"), MORE_NO_PROXY)
def test_no_proxy_rules(no_proxy: str, host: str, port: int, proxied: bool) -> None:
    assert uses_proxy(no_proxy, host, port) is proxied


def test_the_port_of_a_url_without_one_is_its_schemes() -> None:
    proxies = EnvironmentProxies.from_environ(
        {"ALL_PROXY": "http://proxy.test", "NO_PROXY": "a.test:443, b.test:80"}
    )
    assert proxies(Request("GET", "https://a.test/")) is None
    assert proxies(Request("GET", "http://a.test/")) == "http://proxy.test"
    assert proxies(Request("GET", "http://b.test/")) is None
    assert proxies(Request("GET", "http://b.test:8080/")) == "http://proxy.test"


def test_no_proxy_as_parsed() -> None:
    proxies = EnvironmentProxies(
        no_proxy=" Foo.COM, .bar.net, *.baz.io:443, 10.0.0.1/8, [2001:db8::1]:80, 2001:db8::2, "
        "示例.com, :1, x:y"
    )
    assert proxies.no_proxy == (
        "10.0.0.0/8,[2001:db8::1]:80,2001:db8::2,foo.com,.bar.net,.baz.io:443,xn--fsq092h.com"
    )
    assert EnvironmentProxies(no_proxy="a.test, *").no_proxy == "*"


# -- the variables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTP_PROXY": "httpproxy", "HTTPS_PROXY": "httpsproxy", "NO_PROXY": "noproxy"},
        {"http_proxy": "httpproxy", "https_proxy": "httpsproxy", "no_proxy": "noproxy"},
    ],
    ids=["upper", "lower"],
)
def test_go_from_environment(environ: dict[str, str]) -> None:
    proxies = EnvironmentProxies.from_environ(environ)
    assert (proxies.http_proxy, proxies.https_proxy, proxies.no_proxy) == (
        "http://httpproxy",
        "http://httpsproxy",
        "noproxy",
    )


def test_upper_case_first_and_empty_is_unset() -> None:
    proxies = EnvironmentProxies.from_environ(
        {
            "HTTP_PROXY": "upper.test",
            "http_proxy": "lower.test",
            "HTTPS_PROXY": "",
            "https_proxy": "lower.test:8443",
            "NO_PROXY": "",
            "no_proxy": "direct.test",
        }
    )
    assert proxies.http_proxy == "http://upper.test"
    assert proxies.https_proxy == "http://lower.test:8443"
    assert proxies.proxy_for("https", "direct.test", 443) is None


def test_all_proxy_is_the_fallback_of_both() -> None:
    environ = {"all_proxy": "socks5h://socks.test:1080", "HTTPS_PROXY": "https://tls.test"}
    proxies = EnvironmentProxies.from_environ(environ)
    assert proxies.http_proxy == "socks5h://socks.test:1080"
    assert proxies.https_proxy == "https://tls.test"
    environ["ALL_PROXY"] = "http://upper.test"
    assert EnvironmentProxies.from_environ(environ).http_proxy == "http://upper.test"


def test_no_proxy_applies_to_all_proxy() -> None:
    proxies = EnvironmentProxies.from_environ(
        {"ALL_PROXY": "socks5://socks.test", "NO_PROXY": "internal.test"}
    )
    assert proxies.proxy_for("http", "a.internal.test", 80) is None
    assert proxies.proxy_for("https", "example.com", 443) == "socks5://socks.test"


def test_httpoxy_ignores_both_names_of_the_http_proxy_in_cgi() -> None:
    """Where the environment ignores case (Windows), ``http_proxy`` is the attacker's
    ``HTTP_PROXY`` too: both are ignored, as by Python's urllib."""
    cgi = {"REQUEST_METHOD": "POST", "HTTP_PROXY": "evil.test"}
    assert EnvironmentProxies.from_environ(cgi).http_proxy is None
    assert EnvironmentProxies.from_environ({**cgi, "http_proxy": "evil.test"}).http_proxy is None
    assert EnvironmentProxies.from_environ({**cgi, "ALL_PROXY": "all.test"}).http_proxy == (
        "http://all.test"
    )
    assert EnvironmentProxies.from_environ({**cgi, "REQUEST_METHOD": ""}).http_proxy == (
        "http://evil.test"
    )


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("proxy.test:3128", "http://proxy.test:3128"),
        ("user:pass@proxy.test:3128", "http://user:pass@proxy.test:3128"),
        ("[::1]:3128", "http://[::1]:3128"),
        ("  http://proxy.test:3128/  ", "http://proxy.test:3128/"),
        ("socks5://proxy.test", "socks5://proxy.test"),
        ("socks5h://user@proxy.test:1080", "socks5h://user@proxy.test:1080"),
        ("HTTPS://Proxy.Test", "HTTPS://Proxy.Test"),  # as given
    ],
)
def test_proxy_values(value: str, want: str) -> None:
    assert EnvironmentProxies.from_environ({"HTTPS_PROXY": value}).https_proxy == want


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("HTTPS_PROXY", "http://proxy.test:port", "Port could not be cast"),
        ("https_proxy", "http://", "no host"),
        ("HTTP_PROXY", "://proxy.test", "no scheme"),
        ("http_proxy", "proxy test:3128", "whitespace"),
        ("ALL_PROXY", "http://[::1:3128", "Invalid IPv6 URL"),
        ("all_proxy", "proxy.test:99999", "out of range"),
    ],
)
def test_an_invalid_value_names_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}=.* is not a proxy URL") as info:
        EnvironmentProxies.from_environ({variable: value})
    assert problem in str(info.value)


def test_the_constructor_checks_its_values_too() -> None:
    with pytest.raises(ValueError, match=r"^https_proxy='http://' is not a proxy URL"):
        EnvironmentProxies(https_proxy="http://")
    assert EnvironmentProxies(http_proxy="", https_proxy=None).http_proxy is None
    assert repr(EnvironmentProxies(http_proxy="p.test", no_proxy="A.test")) == (
        "EnvironmentProxies(http_proxy='http://p.test', https_proxy=None, no_proxy='a.test')"
    )


def test_from_environ_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "env.test:8080")
    assert EnvironmentProxies.from_environ().http_proxy == "http://env.test:8080"


# -- proxy_from_environment ------------------------------------------------------------------


@pytest.fixture
def fresh_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
    ):
        monkeypatch.delenv(name, raising=False)
    _reset_environment()
    yield monkeypatch
    _reset_environment()


def test_proxy_from_environment_reads_the_environment_once(
    fresh_environment: pytest.MonkeyPatch,
) -> None:
    fresh_environment.setenv("HTTPS_PROXY", "https://first.test")
    fresh_environment.setenv("NO_PROXY", "direct.test")
    request = Request("GET", "https://example.com/")
    assert proxy_from_environment(request) == "https://first.test"
    assert proxy_from_environment(Request("GET", "https://direct.test/")) is None
    assert proxy_from_environment(Request("GET", "https://127.0.0.1/")) is None
    fresh_environment.setenv("HTTPS_PROXY", "https://second.test")
    assert proxy_from_environment(request) == "https://first.test"  # as Go's sync.Once
    _reset_environment()
    assert proxy_from_environment(request) == "https://second.test"


def test_proxy_from_environment_raises_for_an_invalid_value(
    fresh_environment: pytest.MonkeyPatch,
) -> None:
    fresh_environment.setenv("HTTP_PROXY", "http://proxy.test:nope")
    for _ in range(2):  # not cached: each call says it
        with pytest.raises(ValueError, match=r"^HTTP_PROXY="):
            proxy_from_environment(Request("GET", "http://example.com/"))


def test_exported() -> None:
    assert {"EnvironmentProxies", "proxy_from_environment"} <= set(asyncpool.__all__)
    assert asyncpool.proxy_from_environment is proxy_from_environment
