"""pytest plugin: httpx's own tests with asyncpool's ``HTTPXTransport`` as ``httpx.AsyncClient``'s
default transport. Loaded by ``nox -s httpx_suite`` (``-p asyncpool_httpx_plugin``, this
directory on ``PYTHONPATH``); see benchmarks/HTTPX_SUITE.md.

* ``AsyncClient(...)`` without ``transport=`` gets ``HTTPXTransport(**options)``, the options
  mapped from the client's ``verify``, ``cert``, ``trust_env``, ``http1``, ``http2`` and
  ``limits`` (``transport_options``). Proxy mounts (``proxy=``, ``HTTP(S)_PROXY``) stay httpx's
  own ``AsyncHTTPTransport``: ``HTTPXTransport`` has no proxy support. ``httpx.Client`` (sync)
  is left alone.
* Every ``@pytest.mark.anyio`` test runs on asyncio and on trio (httpx's suite, left to itself,
  runs on anyio's default backend, asyncio, only).
* The known differences (``KNOWN_DIFFERENCES``) are marked ``xfail`` with the difference as the
  reason (strict where the failure is deterministic, so a fix shows as a failing XPASS until
  the entry is taken off); ``--asyncpool-no-xfail`` runs without the marks.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from asyncpool.httpx import HTTPXTransport

BACKENDS = ("asyncio", "trio")

# Test id (path relative to httpx's source tree, "::", name with parameters) -> (the difference,
# strict). Parameters include the backend ("test_x[trio]"); "test_x" alone matches every backend.
# strict: the test fails on every run until the difference is fixed (an XPASS then fails the
# run: take the entry off). Not strict: the outcome depends on scheduling, a pass proves nothing.
# benchmarks/HTTPX_SUITE.md explains each difference.
KNOWN_DIFFERENCES: dict[str, tuple[str, bool]] = {
    "tests/test_timeouts.py::test_pool_timeout": (
        "asyncpool differs from httpcore: (1) the pool timeout also runs while an uncontended "
        "request's dial is being started (httpcore: only while waiting for a connection at the "
        "limit), so pool=1e-4 fails the first request, and a deadline that fired is reported as "
        "the phase reached since (ConnectTimeout 'of None'); (2) a response whose body arrived "
        "with its head frees its connection before it is closed, so max_connections=1 does not "
        "block the second request. Not strict: a PoolTimeout of (1) can satisfy pytest.raises "
        "(the first request's, or the second's when 100 us pass before it takes the idle "
        "connection)",
        False,
    ),
}


def transport_options(
    *,
    verify: Any = True,
    cert: Any = None,
    trust_env: bool = True,
    http1: bool = True,
    http2: bool = False,
    limits: httpx.Limits = httpx.Limits(),  # noqa: B008 - immutable, as httpx's DEFAULT_LIMITS
) -> dict[str, Any]:
    """``HTTPXTransport``'s options for what ``AsyncClient`` would give ``AsyncHTTPTransport``.

    * ``verify``, ``cert``, ``trust_env`` (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``): the SSL context
      httpx itself builds (``httpx.create_ssl_context``), as ``tls_config``.
    * ``http2``: ``http2``; ``http1=False`` with ``http2=True``: ``http2_prior_knowledge`` (httpcore
      then speaks HTTP/2 only; the pool still offers http/1.1 in ALPN over TLS).
    * ``limits.max_connections``: ``max_conns_per_host`` (httpx's limit is over all hosts; the
      pool has only a per-host one). ``max_keepalive_connections``: ``max_idle_conns`` (over all
      hosts in both); 0 (keep none) becomes ``disable_keep_alives``, which also sends
      ``Connection: close``. ``keepalive_expiry``: ``idle_conn_timeout``.
    * Not mapped: ``AsyncHTTPTransport``'s ``retries``, ``local_address``, ``uds``,
      ``socket_options`` (``AsyncClient`` never passes them). The pool's own ``dial_timeout``
      and ``tls_handshake_timeout`` keep their defaults; httpx's timeouts come per request.
    """
    options: dict[str, Any] = {
        "tls_config": httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env),
        "http2": http2,
        "http2_prior_knowledge": http2 and not http1,
        "max_conns_per_host": limits.max_connections or 0,
        "idle_conn_timeout": limits.keepalive_expiry,
    }
    keepalive = limits.max_keepalive_connections
    if keepalive == 0:
        options["disable_keep_alives"] = True
    else:
        options["max_idle_conns"] = keepalive or 0  # None: no limit, the pool's 0
    return options


_original_init_transport = httpx.AsyncClient._init_transport


def _init_transport(
    self: httpx.AsyncClient,
    verify: Any = True,
    cert: Any = None,
    trust_env: bool = True,
    http1: bool = True,
    http2: bool = False,
    limits: httpx.Limits = httpx.Limits(),  # noqa: B008 - immutable, as httpx's DEFAULT_LIMITS
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncBaseTransport:
    if transport is not None:
        return transport
    return HTTPXTransport(
        **transport_options(
            verify=verify, cert=cert, trust_env=trust_env, http1=http1, http2=http2, limits=limits
        )
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--asyncpool-no-xfail",
        action="store_true",
        help="do not mark asyncpool's known differences from httpx as xfail",
    )


def pytest_configure(config: pytest.Config) -> None:
    httpx.AsyncClient._init_transport = _init_transport  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    httpx.AsyncClient._init_transport = _original_init_transport  # type: ignore[method-assign]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Overrides anyio's (asyncio only): every anyio test on both backends."""
    return str(request.param)


def pytest_report_header(config: pytest.Config) -> str:
    return (
        "asyncpool_httpx_plugin: httpx.AsyncClient's default transport is "
        f"asyncpool.httpx.HTTPXTransport; backends {', '.join(BACKENDS)}; "
        f"{len(KNOWN_DIFFERENCES)} known differences marked xfail"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--asyncpool-no-xfail"):
        return
    for item in items:
        test_id = item.nodeid
        known = KNOWN_DIFFERENCES.get(test_id) or KNOWN_DIFFERENCES.get(test_id.split("[")[0])
        if known is not None:
            reason, strict = known
            item.add_marker(pytest.mark.xfail(reason=reason, strict=strict))
