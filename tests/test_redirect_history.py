"""The Client's redirects: response.history (the redirect responses, closed, in order) and the
Referer field as Go's Client sets it (refererForURL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from asyncpool import Client, Request, UseLastResponse
from tests.servers import ServerConnection, ServerRequest, TestServer, TLSFixture, open_server

pytestmark = pytest.mark.anyio


async def app(req: ServerRequest, conn: ServerConnection) -> None:
    path, query = req.path, req.query
    if path.startswith("/redirect/"):
        code = int(path.rsplit("/", 1)[1])
        await conn.respond(code, [("location", query.get("to", "/inspect"))], b"moved")
    elif path == "/chain":  # /chain?n=3: 3 redirects, then /inspect
        n = int(query["n"])
        location = f"/chain?n={n - 1}" if n > 1 else "/inspect"
        await conn.respond(302, [("location", location)], b"")
    elif path == "/inspect":
        echo = {"target": req.target, "headers": dict(req.headers)}
        await conn.respond(200, [("content-type", "application/json")], json.dumps(echo).encode())
    else:
        await conn.respond(404, [], b"")


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[TestServer]:
    async with open_server(app) as srv:
        yield srv


async def test_history_holds_the_redirects_in_order_closed(server: TestServer) -> None:
    async with Client() as client:
        response = await client.get(f"{server.url}/chain?n=3")
        assert response.status_code == 200
        assert [r.request.url.target for r in response.history] == [
            "/chain?n=3",
            "/chain?n=2",
            "/chain?n=1",
        ]
        assert [r.status_code for r in response.history] == [302, 302, 302]
        assert all(r.is_closed for r in response.history)
        assert response.history[0].history == []
        # Without redirects, or not following them: no history.
        assert (await client.get(f"{server.url}/inspect")).history == []
        unfollowed = await client.get(f"{server.url}/chain?n=2", follow_redirects=False)
        assert (unfollowed.status_code, unfollowed.history) == (302, [])
        assert client.transport.stats().dials == 1  # small redirect bodies were read: reused


async def test_use_last_response_keeps_the_history_before_it(server: TestServer) -> None:
    def stop_at_the_second(request: Request, via: list[Request]) -> None:
        if len(via) == 2:
            raise UseLastResponse

    async with Client(check_redirect=stop_at_the_second) as client:
        response = await client.get(f"{server.url}/chain?n=5")
        # via holds the requests so far: 2 of them at the second redirect, returned as it is.
        assert (response.status_code, response.request.url.target) == (302, "/chain?n=4")
        assert [r.request.url.target for r in response.history] == ["/chain?n=5"]


async def test_referer_is_the_previous_url_without_userinfo_or_fragment(
    server: TestServer,
) -> None:
    async with Client() as client:
        start = f"http://u:p@127.0.0.1:{server.port}/redirect/302?to=/redirect/307#part"
        response = await client.get(start)
        sent = response.json()["headers"]
        # The last hop's Referer is the hop before it (without the fragment a URL may carry).
        assert sent["referer"] == f"http://127.0.0.1:{server.port}/redirect/307"
        assert server.requests[1].header("referer") == (
            f"http://127.0.0.1:{server.port}/redirect/302?to=/redirect/307"
        )
        assert server.requests[0].header("referer") is None
        # One's own Referer is kept through the chain (Go: the explicit one wins).
        response = await client.get(
            f"{server.url}/chain?n=2", headers={"Referer": "https://origin.example/"}
        )
        assert response.json()["headers"]["referer"] == "https://origin.example/"


async def test_no_referer_from_https_to_http(server: TestServer, tls: TLSFixture) -> None:
    async with open_server(app, ssl_context=tls.server_context) as secure:
        to_http = f"{server.url}/inspect"
        async with Client(tls_config=tls.client_context) as client:
            response = await client.get(f"{secure.url}/redirect/302?to={to_http}")
            assert "referer" not in response.json()["headers"]
            # https to https: sent.
            response = await client.get(f"{secure.url}/redirect/302?to=/inspect")
            assert response.json()["headers"]["referer"].startswith("https://")
