"""Integration tests against a real nginx (tests/nginx.py), on asyncio and trio.

Skipped when nginx is not installed, unless ASYNCPOOL_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

import asyncpool
from tests.nginx import ONE_MIB_BODY, SMALL_BODY, Nginx, require_nginx, run_nginx
from tests.servers import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# Compressible text, served gzip-encoded under /gz/.
TEXT_BODY = b"".join(
    b"line %05d: the quick brown fox jumps over the lazy dog\n" % i for i in range(4000)
)


def _quote(path: str) -> str:
    """A path as an nginx.conf string."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """One private nginx for the module, with a POST endpoint and a gzip location."""
    require_nginx()
    gz_dir = tmp_path_factory.mktemp("nginx-gz")
    (gz_dir / "text.txt").write_bytes(TEXT_BODY)
    (gz_dir / "1mb.bin").write_bytes(ONE_MIB_BODY)
    extra_config = f"""\
location = /post {{ return 200 "posted"; }}
location /gz/ {{
    alias {_quote(f"{gz_dir}/")};
    gzip on;
    gzip_types text/plain application/octet-stream;
    gzip_min_length 1;
}}
"""
    with run_nginx(extra_config=extra_config) as server:
        yield server


def host_stats(pool: asyncpool.Transport, nginx: Nginx) -> asyncpool.HostStats:
    return pool.stats().hosts[f"http://{nginx.host}:{nginx.port}"]


async def get(
    pool: asyncpool.Transport, url: str, trace: asyncpool.ClientTrace | None = None
) -> tuple[int, bytes]:
    response = await pool.round_trip(asyncpool.Request("GET", url, trace=trace))
    async with response:
        return response.status_code, await response.aread()


async def test_sequential_gets_reuse_one_connection(nginx: Nginx) -> None:
    async with asyncpool.Transport() as pool:
        for _ in range(100):
            assert await get(pool, nginx.url("/small")) == (200, SMALL_BODY)
        stats = pool.stats()
        assert stats.dials == 1
        assert stats.reused == 99
        assert (stats.idle, stats.in_use, stats.retries) == (1, 0, 0)


async def test_concurrent_gets_respect_max_conns_per_host(nginx: Nginx) -> None:
    results: list[tuple[int, bytes]] = []
    peak_total = 0

    def got_conn(info: asyncpool.GotConnInfo) -> None:
        nonlocal peak_total
        peak_total = max(peak_total, host_stats(pool, nginx).total)

    trace = asyncpool.ClientTrace(got_conn=got_conn)

    async def one() -> None:
        results.append(await get(pool, nginx.url("/small"), trace=trace))

    async with asyncpool.Transport(max_conns_per_host=8) as pool:
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
        assert results == [(200, SMALL_BODY)] * 200
        stats = pool.stats()
        assert 1 <= stats.dials <= 8
        assert stats.failed_dials == 0
        assert peak_total <= 8
        host = host_stats(pool, nginx)
        assert (host.in_use, host.waiting, host.dialing) == (0, 0, 0)
        assert host.idle == host.total == stats.dials


async def test_one_mib_download_streams_intact(nginx: Nginx) -> None:
    async with asyncpool.Transport() as pool:
        response = await pool.round_trip(asyncpool.Request("GET", nginx.url("/1mb.bin")))
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(ONE_MIB_BODY))
        assert response.uncompressed is False  # nginx does not gzip it outside /gz/
        chunks = [chunk async for chunk in response.aiter_bytes()]
        assert len(chunks) > 1
        assert all(chunks)
        assert b"".join(chunks) == ONE_MIB_BODY
        # Read to its end: the connection is back in the pool, and carries the next request.
        host = host_stats(pool, nginx)
        assert (host.idle, host.in_use) == (1, 0)
        assert await get(pool, nginx.url("/small")) == (200, SMALL_BODY)
        assert pool.stats().dials == 1


async def test_gzip_is_decoded_transparently(nginx: Nginx) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    async with asyncpool.Transport() as pool:
        for path, expected in (("/gz/text.txt", TEXT_BODY), ("/gz/1mb.bin", ONE_MIB_BODY)):
            request = asyncpool.Request("GET", nginx.url(path), trace=trace)
            response = await pool.round_trip(request)
            async with response:
                assert response.status_code == 200
                assert response.uncompressed is True
                assert "content-encoding" not in response.headers
                assert "content-length" not in response.headers
                assert b"".join([c async for c in response.aiter_bytes()]) == expected

        # Asking for gzip yourself: you get it as sent, undecoded (Go's behaviour).
        request = asyncpool.Request(
            "GET", nginx.url("/gz/text.txt"), headers={"Accept-Encoding": "gzip"}, trace=trace
        )
        async with await pool.round_trip(request) as response:
            assert response.uncompressed is False
            assert response.headers["content-encoding"] == "gzip"
            raw = await response.aread()
        assert len(raw) < len(TEXT_BODY) // 4
        assert gzip.decompress(raw) == TEXT_BODY

        assert [info.reused for info in infos] == [False, True, True]
        assert pool.stats().dials == 1

    async with asyncpool.Transport(disable_compression=True) as pool:
        response = await pool.round_trip(asyncpool.Request("GET", nginx.url("/gz/text.txt")))
        async with response:
            assert response.uncompressed is False
            assert "content-encoding" not in response.headers
            assert await response.aread() == TEXT_BODY


async def test_post_then_connection_is_reused(nginx: Nginx) -> None:
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    async with asyncpool.Transport() as pool:
        for content in (b"x" * 100_000, b"", b"name=value"):
            request = asyncpool.Request("POST", nginx.url("/post"), content=content, trace=trace)
            async with await pool.round_trip(request) as response:
                assert response.status_code == 200
                assert await response.aread() == b"posted"
        assert await get(pool, nginx.url("/small"), trace=trace) == (200, SMALL_BODY)
        assert [info.reused for info in infos] == [False, True, True, True]
        stats = pool.stats()
        assert (stats.dials, stats.retries) == (1, 0)


async def test_streamed_post_answered_early_keeps_connection(nginx: Nginx) -> None:
    """nginx answers `return 200` as soon as it has the head, then discards the body. The body
    here goes on only once the response has arrived, so the order is deterministic."""
    infos: list[asyncpool.GotConnInfo] = []
    trace = asyncpool.ClientTrace(got_conn=infos.append)
    answered = anyio.Event()

    async def chunked_body() -> AsyncIterator[bytes]:
        yield b"first chunk"
        await answered.wait()
        for i in range(10):
            yield b"%d" % i * 1000

    async with asyncpool.Transport() as pool:
        request = asyncpool.Request("POST", nginx.url("/post"), content=chunked_body(), trace=trace)
        response = await pool.round_trip(request)
        answered.set()
        async with response:
            assert response.status_code == 200
            assert await response.aread() == b"posted"
        await wait_until(lambda: pool.stats().idle == 1)  # once the writer is done
        assert await get(pool, nginx.url("/small"), trace=trace) == (200, SMALL_BODY)
        assert [info.reused for info in infos] == [False, True]
        assert pool.stats().dials == 1
