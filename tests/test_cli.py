"""The ``asyncpool`` command, run as a subprocess (``python -m asyncpool``) against servers on
loopback: ``get`` (with ``--trace``), ``bench`` with and without a URL, ``--json``, and every
error path printing one line, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.servers import ServerConnection, ServerRequest, TestServer, TLSFixture, open_server

pytestmark = pytest.mark.anyio


async def cli(backend: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the command; the test's servers keep serving meanwhile (same event loop)."""
    with anyio.fail_after(60):
        return await anyio.run_process(
            [sys.executable, "-m", "asyncpool", "--backend", backend, *args], check=False
        )


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("asyncpool: error: "), err
    return lines[0]


def summary(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr.decode()
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


# -- get --------------------------------------------------------------------------------------


async def test_get_prints_the_body_to_stdout_and_the_rest_to_stderr(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", server.url_for("/bytes?n=5"))
    assert proc.returncode == 0
    assert proc.stdout == b"xxxxx"
    err = proc.stderr.decode()
    assert "HTTP/1.1 200 OK" in err
    assert "content-length: 5" in err.lower()


async def test_get_prints_header_fields_as_they_came(anyio_backend: str) -> None:
    # Fields are text, not rich markup: "[/x]" is no closing tag, "[bold]" no style.
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        fields = [("x-path", "[/api/v1]"), ("x-tag", "[bold]v2"), ("link", "[/a]")]
        await conn.respond(200, fields, b"ok", reason="OK [/fine]")

    async with open_server(handler) as server:
        proc = await cli(anyio_backend, "get", server.url)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert proc.stdout == b"ok"
    assert "HTTP/1.1 200 OK [/fine]" in err
    assert "x-path: [/api/v1]" in err and "x-tag: [bold]v2" in err and "link: [/a]" in err


async def test_get_with_method_headers_data_and_output_file(
    server: TestServer, anyio_backend: str, tmp_path: Path
) -> None:
    out = tmp_path / "body"
    args = ["get", server.url_for("/echo"), "-d", "payload", "-H", "X-Test: 1", "-o", str(out)]
    proc = await cli(anyio_backend, *args)
    assert proc.returncode == 0 and proc.stdout == b""
    assert out.read_bytes() == b"payload"
    assert server.requests[0].method == "POST"
    assert server.requests[0].header("x-test") == "1"
    proc = await cli(anyio_backend, "get", "-X", "DELETE", server.url_for("/status/404"))
    assert proc.returncode == 1  # an HTTP error status is a failure for scripts


async def test_get_trace_prints_a_waterfall_and_the_connection(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", "--trace", server.url)
    assert proc.returncode == 0
    err = proc.stderr.decode()
    for phase in ("DNS Lookup", "TCP Connection", "TLS Handshake", "Server Processing"):
        assert phase in err
    assert "connection: new, HTTP/1.1, 127.0.0.1:" in err
    assert f"-> 127.0.0.1:{server.port}" in err


async def test_get_over_tls_with_a_ca_file_or_insecure(
    tls_server: TestServer, tls: TLSFixture, anyio_backend: str
) -> None:
    assert tls.ca_file is not None
    proc = await cli(anyio_backend, "get", "--cacert", str(tls.ca_file), tls_server.url)
    assert (proc.returncode, proc.stdout) == (0, b"hello")
    proc = await cli(anyio_backend, "get", "--insecure", "--trace", tls_server.url)
    assert (proc.returncode, proc.stdout) == (0, b"hello")


# -- bench ------------------------------------------------------------------------------------


async def test_bench_a_url_with_keep_alives(server: TestServer, anyio_backend: str) -> None:
    data = summary(await cli(anyio_backend, "bench", server.url, "-n", "200", "-c", "4", "--json"))
    assert data["requests"] == 200
    assert data["status_codes"] == {"200": 200}
    assert data["errors"] == {}
    assert data["dials"] <= 4
    assert data["reuse_ratio"] >= 0.98  # all but the first request of each worker
    assert data["latency_s"]["p50"] <= data["latency_s"]["p99"] <= data["latency_s"]["max"]


async def test_bench_without_keep_alives(server: TestServer, anyio_backend: str) -> None:
    args = ["bench", server.url, "-n", "50", "-c", "2", "--disable-keep-alives", "--json"]
    data = summary(await cli(anyio_backend, *args))
    assert (data["requests"], data["dials"], data["reuse_ratio"]) == (50, 50, 0.0)


async def test_bench_with_pool_limits(server: TestServer, anyio_backend: str) -> None:
    args = ["bench", server.url, "-n", "100", "-c", "10", "--max-conns-per-host", "2", "--json"]
    data = summary(await cli(anyio_backend, *args))
    assert data["requests"] == 100 and data["dials"] == 2


async def test_bench_without_a_url_starts_its_own_server(anyio_backend: str) -> None:
    data = summary(await cli(anyio_backend, "bench", "-n", "300", "-c", "8", "--json"))
    assert (data["requests"], data["errors"]) == (300, {})
    data = summary(await cli(anyio_backend, "bench", "--http2", "-n", "100", "--json"))
    assert (data["requests"], data["dials"]) == (100, 1)  # one HTTP/2 connection
    data = summary(await cli(anyio_backend, "bench", "-z", "0.2", "-c", "2", "--json"))
    assert data["requests"] > 0 and data["duration_s"] >= 0.2


async def test_bench_prints_a_summary_for_people(anyio_backend: str) -> None:
    proc = await cli(anyio_backend, "bench", "-n", "100")
    assert proc.returncode == 0
    err = proc.stderr.decode()
    assert "requests/s" in err and "latency histogram" in err
    assert "reuse ratio" in err and "200: 100" in err


# -- errors a person can act on ---------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_host(anyio_backend: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    for args in (["get", url], ["bench", url, "-n", "3"]):
        proc = await cli(anyio_backend, *args)
        line = proc.stderr.decode() if args[0] == "bench" else one_error_line(proc)
        assert proc.returncode == 1
        assert "Traceback" not in line
        if args[0] == "get":
            assert "connect 127.0.0.1:" in line and "cannot connect" in line
        else:
            assert "ConnectError: 3" in line


@pytest.mark.parametrize("url", ["example.org/no-scheme", "ftp://example.org/"])
async def test_a_bad_url(anyio_backend: str, url: str) -> None:
    for command in ("get", "bench"):
        proc = await cli(anyio_backend, command, url)
        assert proc.returncode == 2
        assert "url:" in one_error_line(proc)


async def test_a_bad_header_or_concurrency(anyio_backend: str) -> None:
    proc = await cli(anyio_backend, "get", "-H", "no-colon", "http://127.0.0.1:9/")
    assert proc.returncode == 2 and "Name: value" in one_error_line(proc)
    proc = await cli(anyio_backend, "bench", "-c", "0")
    assert proc.returncode == 2 and "-c must be at least 1" in one_error_line(proc)


async def test_a_tls_failure(tls_server: TestServer, anyio_backend: str) -> None:
    proc = await cli(anyio_backend, "get", tls_server.url)
    assert proc.returncode == 1
    assert "certificate verify failed" in one_error_line(proc)


async def test_an_output_file_that_cannot_be_written(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", "-o", "/nonexistent-dir/x", server.url)
    assert proc.returncode == 1
    assert "nonexistent-dir" in one_error_line(proc)
