"""The Client's auth=: Basic from a pair, a callable, a generator flow, Digest (RFC 7616), and
credentials dropped once a redirect leaves the origin."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Generator
from urllib.parse import unquote

import pytest

from asyncpool import Auth, Client, DigestAuth, LocalProtocolError, Request, Response
from asyncpool._auth import _parse_challenge
from tests.servers import ServerConnection, ServerRequest, TestServer, open_server

pytestmark = pytest.mark.anyio

REALM, NONCE, OPAQUE = "pool@example", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "5ccc069c403ebaf9"


def _expected_digest(fields: dict[str, str], method: str, algorithm: str, user: str) -> str:
    def h(data: str) -> str:
        name = "sha256" if algorithm.startswith("SHA-256") else "md5"
        return hashlib.new(name, data.encode()).hexdigest()

    ha1 = h(f"{user}:{REALM}:s3cret")
    ha2 = h(f"{method}:{fields['uri']}")
    return h(f"{ha1}:{NONCE}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")


async def app(req: ServerRequest, conn: ServerConnection) -> None:
    path, query = req.path, req.query
    if path == "/inspect":
        body = await conn.read_body()
        echo = {"target": req.target, "headers": dict(req.headers), "body": body.decode()}
        await conn.respond(200, [("content-type", "application/json")], json.dumps(echo).encode())
    elif path.startswith("/digest"):
        algorithm, user = query.get("algorithm", "MD5"), query.get("user", "alice")
        authorization = req.header("authorization") or ""
        if authorization.startswith("Digest "):
            fields = _parse_challenge(authorization[7:])
            encoded = fields.get("username*", "").removeprefix("UTF-8''")
            good = (
                fields.get("response") == _expected_digest(fields, req.method, algorithm, user)
                and fields.get("uri") == req.target
                and fields.get("opaque") == OPAQUE
                and (fields.get("username") or unquote(encoded)) == user
            )
            if good:
                await conn.respond(200, [("x-nc", fields["nc"])], b"welcome")
                return
        challenge = (
            f'Digest realm="{REALM}", qop="auth,auth-int", algorithm={algorithm}, '
            f'nonce="{NONCE}", opaque="{OPAQUE}"'
        )
        if "others" in query:  # one field, several challenges (RFC 9110 11.6.1)
            challenge = f'Basic realm="first", {challenge}, Bearer realm="last"'

        await conn.respond(401, [("www-authenticate", challenge)], b"who are you?")
    elif path == "/redirect":
        await conn.respond(302, [("location", query["to"])], b"")
    else:
        await conn.respond(404, [], b"")


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[TestServer]:
    async with open_server(app) as srv:
        yield srv


def answered(server: TestServer) -> list[bool]:
    """Which of the server's requests carried credentials, in order."""
    return [request.header("authorization") is not None for request in server.requests]


async def _sent_authorization(client: Client, url: str, **kwargs: object) -> str | None:
    response = await client.get(url, **kwargs)
    value: str | None = response.json()["headers"].get("authorization")
    return value


async def test_basic_auth_from_a_pair_on_the_client_and_per_request(server: TestServer) -> None:
    url = f"{server.url}/inspect"
    async with Client(auth=("alice", "s3cret")) as client:
        assert await _sent_authorization(client, url) == "Basic YWxpY2U6czNjcmV0"
        assert await _sent_authorization(client, url, auth=("bob", "pw")) == "Basic Ym9iOnB3"
        assert await _sent_authorization(client, url, auth=None) is None
        # A field of one's own wins over nothing, but auth= sets the field (httpx's order).
        response = await client.get(url, headers={"Authorization": "Bearer t"}, auth=None)
        assert response.json()["headers"]["authorization"] == "Bearer t"
    async with Client() as client:
        # auth= wins over the URL's userinfo (sent only when no Authorization is set).
        userinfo = f"http://carol:x@127.0.0.1:{server.port}/inspect"
        assert await _sent_authorization(client, userinfo, auth=("bob", "pw")) == "Basic Ym9iOnB3"


async def test_a_callable_changes_the_request(server: TestServer) -> None:
    def bearer(request: Request) -> Request:
        request.headers["Authorization"] = "Bearer abc"
        return request

    async with Client(auth=bearer) as client:
        assert await _sent_authorization(client, f"{server.url}/inspect") == "Bearer abc"
        # The request given is left as it was: the flow works on a copy.
        request = client.build_request("GET", f"{server.url}/inspect")
        async with await client.send(request) as response:
            await response.aread()
        assert "authorization" not in request.headers
        assert response.request.headers["authorization"] == "Bearer abc"


async def test_a_header_with_a_line_break_from_an_auth_flow_is_refused(server: TestServer) -> None:
    def evil(request: Request) -> Request:
        request.headers["Authorization"] = "Bearer a\r\nX-Injected: 1"
        return request

    async with Client(auth=evil) as client:
        with pytest.raises(LocalProtocolError):
            await client.get(f"{server.url}/inspect")


class TokenRefresh(Auth):
    """A flow: a stale token, then a fresh one after the 401 (what a refresh looks like)."""

    requires_response_body = True

    def __init__(self) -> None:
        self.seen: list[tuple[int, bytes]] = []

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        request.headers["Authorization"] = "Bearer stale"
        response = yield request
        self.seen.append((response.status_code, response.content))
        if response.status_code == 404:
            request.headers["Authorization"] = "Bearer fresh"
            request.headers["X-Path"] = "retried"
            yield request


async def test_a_generator_flow_sees_the_response_and_sends_again(server: TestServer) -> None:
    auth = TokenRefresh()
    async with Client(auth=auth) as client:
        response = await client.get(f"{server.url}/nothing-here")
        assert response.status_code == 404  # the flow's second response is the one returned
        assert response.request.headers["authorization"] == "Bearer fresh"
        assert auth.seen == [(404, b"")]
        assert client.transport.stats().dials == 1  # the first response was read, not dropped


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess"])
async def test_digest_auth(server: TestServer, algorithm: str) -> None:
    auth = DigestAuth("alice", "s3cret")
    url = f"{server.url}/digest/a?algorithm={algorithm}"
    async with Client(auth=auth) as client:
        if algorithm.endswith("-sess"):
            # The server above checks the non-session form: the answer is refused, once.
            response = await client.get(url)
            assert response.status_code == 401
            return
        response = await client.get(url)
        assert (response.status_code, response.content) == (200, b"welcome")
        assert response.headers["x-nc"] == "00000001"
        # The challenge is remembered: the next request answers it at once, nc counting up.
        response = await client.get(url)
        assert (response.status_code, response.headers["x-nc"]) == (200, "00000002")
        assert len(server.requests) == 3
        assert client.transport.stats().dials == 1


async def test_a_digest_challenge_is_answered_only_on_its_origin(server: TestServer) -> None:
    """One DigestAuth, two origins: the challenge of the first is not answered at once on the
    second, which would hand it the user name and a response to crack offline."""
    async with open_server(app) as other, Client(auth=DigestAuth("alice", "s3cret")) as client:
        assert (await client.get(f"{server.url}/digest/a")).status_code == 200
        response = await client.get(f"{other.url}/inspect")
        assert response.json()["headers"].get("authorization") is None
        # Each origin keeps its own challenge and count.
        assert (await client.get(f"{other.url}/digest/a")).headers["x-nc"] == "00000001"
        assert (await client.get(f"{server.url}/digest/a")).headers["x-nc"] == "00000002"
        assert (await client.get(f"{other.url}/digest/a")).headers["x-nc"] == "00000002"
        assert answered(other) == [False, False, True, True]


async def test_digest_remembers_the_last_challenged_origins_only(server: TestServer) -> None:
    auth = DigestAuth("alice", "s3cret")
    auth.MAX_ORIGINS = 1
    async with open_server(app) as other, Client(auth=auth) as client:
        assert (await client.get(f"{server.url}/digest/a")).status_code == 200
        assert (await client.get(f"{other.url}/digest/a")).status_code == 200
        # The first origin's challenge was forgotten: asked without credentials again.
        assert (await client.get(f"{server.url}/digest/a")).headers["x-nc"] == "00000001"
        assert answered(server) == [False, True, False, True]


async def test_digest_among_other_challenges_of_one_field(server: TestServer) -> None:
    async with Client(auth=DigestAuth("alice", "s3cret")) as client:
        response = await client.get(f"{server.url}/digest/a?others=1")
        assert (response.status_code, response.content) == (200, b"welcome")


async def test_digest_user_name_outside_latin_1_is_sent_as_username_star(
    server: TestServer,
) -> None:
    user = "用户"
    async with Client(auth=DigestAuth(user, "s3cret")) as client:
        response = await client.get(f"{server.url}/digest/a?user={user}")
        assert (response.status_code, response.content) == (200, b"welcome")
    sent = server.requests[-1].header("authorization") or ""
    assert "username*=UTF-8''%E7%94%A8%E6%88%B7," in sent and "username=" not in sent


async def test_digest_without_a_challenge_returns_the_401(server: TestServer) -> None:
    async with Client(auth=DigestAuth("alice", "wrong")) as client:
        response = await client.get(f"{server.url}/digest/a")
        assert response.status_code == 401
        assert len(server.requests) == 2  # answered once, then the 401 is the answer


async def test_a_streamed_body_is_not_sent_twice_by_a_flow(server: TestServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    async with Client(auth=DigestAuth("alice", "s3cret")) as client:
        with pytest.raises(RuntimeError, match="cannot be replayed"):
            await client.post(f"{server.url}/digest/a", content=body())


async def test_credentials_are_dropped_once_a_redirect_leaves_the_origin(
    server: TestServer,
) -> None:
    async with open_server(app) as other:
        back = f"{server.url}/inspect"
        away_and_back = f"{other.url}/redirect?to={back}"
        async with Client(auth=("alice", "s3cret")) as client:
            # Same origin: the flow runs for each hop.
            sent = await _sent_authorization(client, f"{server.url}/redirect?to=/inspect")
            assert sent == "Basic YWxpY2U6czNjcmV0"
            # To another origin: nothing, neither there nor on the way back.
            response = await client.get(f"{server.url}/redirect?to={away_and_back}")
            assert response.json()["headers"].get("authorization") is None
            assert other.requests[0].header("authorization") is None


def test_a_huge_challenge_of_no_parameter_is_parsed_in_linear_time() -> None:
    """A Digest challenge of one long token and no ``=``: searching for a parameter from each
    of its characters was quadratic (1 MiB held the event loop for about two hours; here the
    per-test timeout fails it); it is passed in one step."""
    assert _parse_challenge("a" * (1 << 20)) == {}
    assert _parse_challenge("a" * 1000 + ' realm="r", nonce=n') == {"realm": "r", "nonce": "n"}
