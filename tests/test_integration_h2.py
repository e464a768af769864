"""HTTP/2 integration tests against a real nginx over TLS with ALPN h2 (tests/nginx.py), on
asyncio and trio.

Skipped when nginx is not installed, unless ASYNCPOOL_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import gc
import hashlib
import random
import ssl
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import trustme

import asyncpool
from tests.nginx import (
    SMALL_BODY,
    Nginx,
    nginx_version,
    require_nginx,
    run_nginx,
    tls_files_from_trustme,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BIG_SIZE = 16 << 20  # 16 MiB
# Deterministic, incompressible content: served at /big/16mb.bin, and uploaded.
BIG_BODY = random.Random(20261121).randbytes(BIG_SIZE)
BIG_SHA256 = hashlib.sha256(BIG_BODY).hexdigest()
GOAWAY_AFTER = 50  # requests per connection on the `nginx_goaway` server


def _quote_dir(path: Path) -> str:
    """A directory as an nginx.conf string, with its trailing slash (for `alias`)."""
    s = f"{path}/"
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA, *, http2: bool = True) -> ssl.SSLContext:
    """A fresh client context trusting `ca`, offering h2 (if `http2`) and http/1.1 by ALPN
    (the Transport uses a tls_config as given)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Path:
    directory = tmp_path_factory.mktemp("nginx-h2-tls")
    tls_files_from_trustme(ca.issue_cert("127.0.0.1"), directory)
    return directory


@pytest.fixture(scope="module")
def dav_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where nginx stores what is PUT under /dav/."""
    return tmp_path_factory.mktemp("nginx-h2-dav")


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, tls_dir: Path, dav_dir: Path
) -> Iterator[Nginx]:
    """One private nginx with TLS + h2 for the module: a 16 MiB file under /big/, and /dav/
    taking PUT uploads of up to 32 MiB (GET returns them)."""
    require_nginx()
    big_dir = tmp_path_factory.mktemp("nginx-h2-big")
    (big_dir / "16mb.bin").write_bytes(BIG_BODY)
    dav_dir.chmod(0o777)  # nginx's worker writes here, whichever user it runs as
    extra_config = f"""\
location /big/ {{
    alias {_quote_dir(big_dir)};
    default_type application/octet-stream;
}}
location /dav/ {{
    alias {_quote_dir(dav_dir)};
    default_type application/octet-stream;
    dav_methods PUT;
    dav_access user:rw group:rw all:rw;
    client_max_body_size 32m;
    client_body_buffer_size 1m;
}}
"""
    files = (tls_dir / "server-chain.pem", tls_dir / "server-key.pem")
    with run_nginx(http2_tls=files, extra_config=extra_config) as server:
        yield server


@pytest.fixture(scope="module")
def nginx_goaway(tls_dir: Path) -> Iterator[Nginx]:
    """An nginx that sends GOAWAY on each connection after GOAWAY_AFTER requests."""
    binary = require_nginx()
    # From 1.19.7 keepalive_requests also limits HTTP/2 connections (http2_max_requests is
    # obsolete there).
    directive = (
        "keepalive_requests" if nginx_version(binary) >= (1, 19, 7) else "http2_max_requests"
    )
    files = (tls_dir / "server-chain.pem", tls_dir / "server-key.pem")
    with run_nginx(http2_tls=files, extra_config=f"{directive} {GOAWAY_AFTER};") as server:
        yield server


def host_stats(pool: asyncpool.Transport, nginx: Nginx) -> asyncpool.HostStats:
    return pool.stats().hosts[f"https://{nginx.host}:{nginx.tls_port}"]


async def get(
    pool: asyncpool.Transport, url: str, trace: asyncpool.ClientTrace | None = None
) -> tuple[str, int, bytes]:
    response = await pool.round_trip(asyncpool.Request("GET", url, trace=trace))
    async with response:
        return response.http_version, response.status_code, await response.aread()


async def test_concurrent_gets_share_one_connection(nginx: Nginx, ca: trustme.CA) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    results: list[tuple[str, int, bytes]] = []
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        results.append(await get(pool, nginx.tls_url("/small"), trace))
        in_flight -= 1

    async with asyncpool.Transport(tls_config=client_context(ca)) as pool:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(one)
        assert peak == 100
        assert results == [("HTTP/2", 200, SMALL_BODY)] * 100
        stats = pool.stats()
        assert stats.dials == 1
        assert (stats.failed_dials, stats.retries) == (0, 0)
        assert len(infos) == 100
        assert {info.protocol for info in infos} == {"HTTP/2"}
        assert len({info.local_address for info in infos}) == 1
        assert len({info.remote_address for info in infos}) == 1
        host = host_stats(pool, nginx)
        assert (host.total, host.idle, host.in_use, host.streams) == (1, 1, 0, 0)
        assert (host.dialing, host.waiting) == (0, 0)


async def test_16mib_download_streams_intact(nginx: Nginx, ca: trustme.CA) -> None:
    async with asyncpool.Transport(tls_config=client_context(ca)) as pool:
        with anyio.fail_after(30):
            response = await pool.round_trip(
                asyncpool.Request("GET", nginx.tls_url("/big/16mb.bin"))
            )
            async with response:
                assert response.http_version == "HTTP/2"
                assert response.status_code == 200
                assert response.headers["content-length"] == str(BIG_SIZE)
                digest = hashlib.sha256()
                size = chunks = 0
                async for chunk in response.aiter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
                    chunks += 1
            assert size == BIG_SIZE
            assert digest.hexdigest() == BIG_SHA256
            assert chunks > 1
            # The stream is over: the connection carries the next request.
            assert host_stats(pool, nginx).streams == 0
            assert await get(pool, nginx.tls_url("/small")) == ("HTTP/2", 200, SMALL_BODY)
        assert pool.stats().dials == 1


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """`data` in uneven pieces (1 byte up to 1 MiB), yielding to the event loop in between."""
    rng = random.Random(7)
    offset = 0
    while offset < len(data):
        size = rng.choice((1, 1000, 16_384, 65_536, 100_003, 1 << 20))
        yield data[offset : offset + size]
        offset += size
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("body", ["bytes", "stream"])
async def test_16mib_upload_arrives_intact(
    nginx: Nginx, ca: trustme.CA, dav_dir: Path, anyio_backend: str, body: str
) -> None:
    name = f"upload-{anyio_backend}-{body}.bin"
    url = nginx.tls_url(f"/dav/{name}")
    content = BIG_BODY if body == "bytes" else _chunks(BIG_BODY)
    async with asyncpool.Transport(tls_config=client_context(ca)) as pool:
        with anyio.fail_after(30):
            response = await pool.round_trip(asyncpool.Request("PUT", url, content=content))
            async with response:
                assert response.http_version == "HTTP/2"
                assert response.status_code in (201, 204), await response.aread()
                await response.aread()
            # What nginx stored...
            stored = (dav_dir / name).read_bytes()
            assert len(stored) == BIG_SIZE
            assert hashlib.sha256(stored).hexdigest() == BIG_SHA256
            # ... and what it serves back.
            version, status, echoed = await get(pool, url)
            assert (version, status, len(echoed)) == ("HTTP/2", 200, BIG_SIZE)
            assert hashlib.sha256(echoed).hexdigest() == BIG_SHA256
        assert pool.stats().dials == 1


async def test_goaway_after_max_requests_fails_no_request(
    nginx_goaway: Nginx, ca: trustme.CA
) -> None:
    """nginx ends each connection with GOAWAY after GOAWAY_AFTER requests; streams it did not
    take are retried on a new connection, and none of 300 requests (20 at a time) fails."""
    total, concurrency = 300, 20
    infos: list[asyncpool.GotConnInfo] = []
    retried: list[asyncpool.RetryInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append, request_retried=retried.append)
    results: list[tuple[str, int, bytes]] = []
    errors: list[str] = []  # as text: a live exception would keep its connection's state alive
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                results.append(await get(pool, nginx_goaway.tls_url("/small"), trace))
            except asyncpool.HTTPError as exc:
                errors.append(repr(exc))

    # A failed stream must not leave anything unclosed behind it. Its ResourceWarning would
    # surface when the garbage is collected, perhaps in another test or at the session's end:
    # record them here, and collect before the block ends.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with asyncpool.Transport(tls_config=client_context(ca)) as pool:
            with anyio.fail_after(45):
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrency):
                        tg.start_soon(worker)
            stats = pool.stats()
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]

    assert errors == []
    assert results == [("HTTP/2", 200, SMALL_BODY)] * total
    # 300 requests at most 50 per connection: at least 6 connections.
    assert stats.dials >= total // GOAWAY_AFTER
    assert stats.failed_dials == 0
    assert stats.retries == len(retried)
    assert {info.reason for info in retried} == {"refused"}  # not processed: free retries
    assert len(infos) == total + stats.retries
    assert {info.protocol for info in infos} == {"HTTP/2"}
    assert len({info.local_address for info in infos}) > 1
    assert leaks == []
