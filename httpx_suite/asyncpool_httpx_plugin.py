"""pytest plugin: httpx's own tests with asyncpool's ``HTTPXTransport`` as ``httpx.AsyncClient``'s
default transport. Loaded by ``nox -s httpx_suite`` (``-p asyncpool_httpx_plugin``, this
directory on ``PYTHONPATH``); see benchmarks/HTTPX_SUITE.md.

* ``AsyncClient(...)`` without ``transport=`` gets ``HTTPXTransport(verify=..., cert=...,
  trust_env=..., http1=..., http2=..., limits=...)``: the arguments ``AsyncClient`` gives
  ``AsyncHTTPTransport``, passed straight through. Proxy mounts (``proxy=``, ``HTTP(S)_PROXY``) stay httpx's
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
        "deliberate: a response whose body arrived whole with its head frees its connection "
        "before the response is closed (the pool's complete-body fast path), so under "
        "max_connections=1 the second request reuses it and succeeds instead of PoolTimeout "
        "(httpcore holds the connection until the response is closed). Not strict: when "
        "uvicorn's body comes in a later read than the head, the body streams, the connection "
        "stays in use and the test passes",
        False,
    ),
}


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
    # httpx's own arguments, with httpx's meaning: the swap is the class name.
    return HTTPXTransport(
        verify=verify, cert=cert, trust_env=trust_env, http1=http1, http2=http2, limits=limits
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
