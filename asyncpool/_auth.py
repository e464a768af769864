"""Authentication for the Client, as httpx shapes it: an ``Auth`` is a flow, a generator that
yields the requests to send and receives each response (``auth_flow``), so a scheme that needs
a challenge first (Digest) is a few lines. ``BasicAuth``, ``DigestAuth`` (RFC 7616: MD5 and
SHA-256, ``qop=auth``), and ``FunctionAuth`` for a plain callable taking the Request and
returning it.

The Client runs the flow for each hop of a redirect chain while the chain stays on the origin
asked; once a redirect leaves it, no credentials are sent for the rest of the chain (Go's rule,
and its fix for CVE-2024-45336)."""

from __future__ import annotations

import os
import re
import time
from base64 import b64encode
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import quote

from ._models import Request, Response

__all__ = ["Auth", "AuthTypes", "BasicAuth", "DigestAuth", "FunctionAuth", "to_auth"]


class Auth:
    """Override ``auth_flow``: yield a request to send it, and receive its response; the last
    response is the one the caller gets. ``requires_response_body``: responses are read in full
    before the flow sees them (else only their heads are there to look at)."""

    requires_response_body = False

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        yield request


AuthTypes = tuple[str, str] | Callable[[Request], Request] | Auth


class FunctionAuth(Auth):
    """A callable that takes the Request and returns the Request to send (the same one, changed,
    or a new one)."""

    def __init__(self, func: Callable[[Request], Request]) -> None:
        self._func = func

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        yield self._func(request)


class BasicAuth(Auth):
    """``Authorization: Basic`` with a user name and password (UTF-8)."""

    def __init__(self, username: str | bytes, password: str | bytes) -> None:
        self._header = _basic_header(username, password)

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _basic_header(username: str | bytes, password: str | bytes) -> str:
    user = username.encode() if isinstance(username, str) else username
    secret = password.encode() if isinstance(password, str) else password
    return "Basic " + b64encode(user + b":" + secret).decode("ascii")


def to_auth(auth: AuthTypes | None) -> Auth | None:
    """What ``auth=`` takes: a (user, password) tuple, a callable, an Auth, or None."""
    if auth is None or isinstance(auth, Auth):
        return auth
    if isinstance(auth, tuple):
        if len(auth) != 2:
            raise TypeError(f"auth= takes a (username, password) pair, not {len(auth)} items")
        return BasicAuth(*auth)
    if callable(auth):
        return FunctionAuth(auth)
    raise TypeError(f"auth= takes a (username, password) pair, a callable or an Auth: {auth!r}")


# -- Digest (RFC 7616) ----------------------------------------------------------------------------

# Each algorithm's hashlib constructor, by name: hashlib (and OpenSSL's digests) is imported
# when a challenge is first answered, not with asyncpool.
_ALGORITHMS: dict[str, str] = {
    "MD5": "md5",
    "MD5-SESS": "md5",
    "SHA": "sha1",
    "SHA-SESS": "sha1",
    "SHA-256": "sha256",
    "SHA-256-SESS": "sha256",
    "SHA-512": "sha512",
    "SHA-512-SESS": "sha512",
}
_DIGEST = re.compile(r"(?:^|,)\s*digest\s+", re.IGNORECASE)
_PARAM = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')


class DigestAuth(Auth):
    """HTTP Digest authentication (RFC 7616, and RFC 2069 without ``qop``): the request goes
    once without credentials; a ``401`` with a Digest challenge is answered once. The
    challenge is remembered for its origin, so later requests there through the same
    DigestAuth answer it at once (with a fresh nonce count); another origin gets nothing
    until it challenges (the last ``MAX_ORIGINS`` origins are remembered)."""

    MAX_ORIGINS = 64

    def __init__(self, username: str | bytes, password: str | bytes) -> None:
        self._username = username.encode() if isinstance(username, str) else username
        self._password = password.encode() if isinstance(password, str) else password
        # Per origin, in the order last challenged: the challenge and its next nonce count.
        self._challenges: dict[str, _Challenge] = {}

    def auth_flow(self, request: Request) -> Generator[Request, Response, None]:
        origin = request.url.origin
        known = self._challenges.get(origin)
        if known is not None:
            request.headers["Authorization"] = self._authorization(request, known)
        response = yield request
        if response.status_code != 401:
            return
        challenge = None
        for value in response.headers.get_list("www-authenticate"):
            # A field may hold several challenges (RFC 9110 11.6.1): "Basic ..., Digest ...".
            start = _DIGEST.search(value)
            if start is not None:
                challenge = _parse_challenge(value[start.end() :])
                break
        if challenge is None or "nonce" not in challenge or "realm" not in challenge:
            return  # not a Digest challenge we can answer: the 401 is the answer
        if challenge.get("algorithm", "MD5").upper() not in _ALGORITHMS:
            return
        qop = challenge.get("qop")
        if qop is not None and "auth" not in [item.strip().lower() for item in qop.split(",")]:
            return  # auth-int only (a hash of the body): not offered by this client
        self._challenges.pop(origin, None)
        known = self._challenges[origin] = _Challenge(challenge)
        while len(self._challenges) > self.MAX_ORIGINS:
            del self._challenges[next(iter(self._challenges))]
        request.headers["Authorization"] = self._authorization(request, known)
        yield request

    def _authorization(self, request: Request, known: _Challenge) -> str:
        import hashlib

        challenge = known.params
        algorithm = challenge.get("algorithm", "MD5").upper()
        hash_function: Callable[[bytes], Any] = getattr(hashlib, _ALGORITHMS[algorithm])

        def digest(data: bytes) -> bytes:
            return str(hash_function(data).hexdigest()).encode()

        realm, nonce = challenge["realm"].encode(), challenge["nonce"].encode()
        nonce_count = f"{known.nonce_count:08x}".encode()
        known.nonce_count += 1
        cnonce = _cnonce(nonce_count, nonce)
        a1 = b":".join((self._username, realm, self._password))
        ha1 = digest(a1)
        if algorithm.endswith("-SESS"):
            ha1 = digest(b":".join((ha1, nonce, cnonce)))
        path = request.target.encode()
        ha2 = digest(b":".join((request.method.encode(), path)))
        qop = _qop(challenge.get("qop"))
        if qop is None:  # RFC 2069
            response = digest(b":".join((ha1, nonce, ha2)))
        else:
            response = digest(b":".join((ha1, nonce, nonce_count, cnonce, qop, ha2)))
        username = self._username.decode(errors="replace")
        fields = [("username", username, True)]
        if not username.isascii():  # RFC 7616 3.4.4: username* in RFC 8187's encoding
            fields = [("username*", "UTF-8''" + quote(self._username, safe=""), False)]
        fields += [
            ("realm", challenge["realm"], True),
            ("nonce", challenge["nonce"], True),
            ("uri", request.target, True),
            ("response", response.decode(), True),
            ("algorithm", challenge.get("algorithm", "MD5"), False),
        ]
        if "opaque" in challenge:
            fields.append(("opaque", challenge["opaque"], True))
        if qop is not None:
            fields += [
                ("qop", "auth", False),
                ("nc", nonce_count.decode(), False),
                ("cnonce", cnonce.decode(), True),
            ]
        return "Digest " + ", ".join(
            f'{name}="{_quoted(value)}"' if quoted else f"{name}={value}"
            for name, value, quoted in fields
        )


class _Challenge:
    """A challenge an origin gave, and the nonce count its next answer sends."""

    __slots__ = ("nonce_count", "params")

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params
        self.nonce_count = 1


def _qop(qop: str | None) -> bytes | None:
    return None if qop is None else b"auth"  # auth_flow answers no challenge without "auth"


def _cnonce(nonce_count: bytes, nonce: bytes) -> bytes:
    import hashlib

    seed = nonce_count + nonce + time.ctime().encode() + os.urandom(8)
    return hashlib.sha1(seed).hexdigest()[:16].encode()


_TOKEN_RUN = re.compile(r"[!#$%&\'*+\-.^_`|~0-9A-Za-z]+")


def _parse_challenge(text: str) -> dict[str, str]:
    """The ``name=value`` parameters of a challenge, skipping what is not one. In linear time:
    a position where no parameter starts is passed with the whole run of token characters
    there (searching again from each of them was quadratic: a server's 1 MiB field of them
    held the event loop for hours)."""
    params: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        match = _PARAM.match(text, pos)
        if match is None:
            if params:  # a token that starts no parameter: the next challenge's scheme
                break
            run = _TOKEN_RUN.match(text, pos)
            pos = run.end() if run is not None else pos + 1
            continue
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        pos = max(match.end(), pos + 1)
    return params


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
