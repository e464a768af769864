"""Shared fixtures: every async test runs on asyncio and trio (mark modules with
``pytestmark = pytest.mark.anyio``); ``server``/``tls_server`` are in-process HTTP servers
from ``tests.servers``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import cast

import pytest

import asyncpool._transport
from asyncpool._h1.protocol import PARSERS
from tests.servers import TestServer, TLSFixture, make_tls, open_server

# Every Transport the tests make (and the programs they start) checks the pool's invariants
# after each of its decisions; `ASYNCPOOL_CHECK_INVARIANTS=0 pytest` runs without.
os.environ.setdefault(asyncpool._transport.CHECK_INVARIANTS_ENV, "1")

# The HTTP/1.1 suites run against both parser backends; the others use h11.
HTTP1_SUITES = {
    "test_h1_connection",
    "test_transport",
    "test_trace",
    "test_client",
    "test_wire_validation",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in HTTP1_SUITES:
        metafunc.parametrize("http1_parser", PARSERS, indirect=True)


@pytest.fixture(autouse=True)
def http1_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The parser a Transport made with the default ``http1_parser="auto"`` uses."""
    parser: str = getattr(request, "param", "h11")
    monkeypatch.setattr(asyncpool._transport, "default_parser", lambda: parser)
    return parser


@pytest.fixture(autouse=True)
def check_pool_at_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Transport a test leaves is checked before it closes (at rest, whatever the test
    did) and after (closing kept the invariants too)."""
    Transport = asyncpool._transport.Transport
    original = Transport.__aexit__

    async def checked_aexit(
        self: asyncpool._transport.Transport,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._check_invariants()
        finally:
            await original(self, exc_type, exc, tb)
        self._check_invariants()

    monkeypatch.setattr(Transport, "__aexit__", checked_aexit)


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFixture:
    """A throwaway CA with server and client SSL contexts (``tls.ca_file`` is its PEM)."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[TestServer]:
    """``default_handler`` over plain HTTP on 127.0.0.1."""
    async with open_server() as srv:
        yield srv


@pytest.fixture
async def tls_server(anyio_backend: str, tls: TLSFixture) -> AsyncIterator[TestServer]:
    """``default_handler`` over HTTPS on 127.0.0.1 (trust it with ``tls.client_context``)."""
    async with open_server(ssl_context=tls.server_context) as srv:
        yield srv
