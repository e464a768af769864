"""The ``asyncpool`` command, run as a subprocess (``python -m asyncpool``) against servers on
loopback: ``get`` (curl's options and exit codes, ``--trace``), ``bench`` (results on stdout,
``--json``, progress on a terminal, Ctrl-C), and every error path printing one line, never a
traceback. Nothing here waits a guessed time: the tests wait for output or server state."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from asyncpool._cli import _parser
from tests.h2server import make_h2_server_context, open_h2_server
from tests.servers import (
    ServerConnection,
    ServerRequest,
    TestServer,
    TLSFixture,
    open_server,
    open_unix_server,
)

pytestmark = pytest.mark.anyio

ASYNCPOOL = [sys.executable, "-m", "asyncpool"]
LIMIT = 60  # seconds any one run of the command may take, at most


def command(args: tuple[str, ...], backend: str | None = None) -> list[str]:
    # A global option after the subcommand, where people type it.
    return [*ASYNCPOOL, *args, *(["--backend", backend] if backend else [])]


async def cli(
    backend: str | None, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the command; the test's servers keep serving meanwhile (same event loop)."""
    with anyio.fail_after(LIMIT):
        return await anyio.run_process(
            command(args, backend), input=stdin, check=False, env={**os.environ, **(env or {})}
        )


async def cli_with_stdout_closed(backend: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the command with its stdout a pipe whose reader is already gone (EPIPE)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        with anyio.fail_after(LIMIT):
            return await anyio.run_process(command(args, backend), stdout=writer, check=False)
    finally:
        os.close(writer)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command when no server is needed (once, not once per backend)."""
    return subprocess.run(
        [*ASYNCPOOL, *args],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[Any]) -> str:
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("asyncpool: error: "), err
    return lines[0]


def last_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The error of a command that printed a response head (on stderr, as curl -i) first."""
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    prefix, _, message = err.splitlines()[-1].partition("asyncpool: error: ")
    assert prefix == "", err
    return message


def results(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr.decode()
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


class Terminal:
    """A pseudo-terminal for the command's stderr, so that it sees a TTY (rich's live display).

    ``wait_for(pattern)`` reads what the command wrote until the pattern shows up;
    ``read_to_end()`` drains it until the command exits, so its writes never block."""

    def __init__(self) -> None:
        self.fd, self.child_fd = os.openpty()
        fcntl.ioctl(self.child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.env = {"TERM": "xterm-256color", "COLUMNS": "100"}
        self.text = ""

    async def spawn(self, args: list[str]) -> Process:
        process = await anyio.open_process(
            args, stderr=self.child_fd, env={**os.environ, **self.env}
        )
        os.close(self.child_fd)  # the command holds the only one: its exit is our end of file
        return process

    def _read(self) -> str:
        try:
            return os.read(self.fd, 65536).decode(errors="replace")
        except OSError:  # EIO: the command closed the terminal
            return ""

    async def _read_more(self) -> bool:
        chunk = await anyio.to_thread.run_sync(self._read, abandon_on_cancel=True)
        self.text += chunk
        return bool(chunk)

    async def wait_for(self, pattern: str) -> re.Match[str]:
        with anyio.fail_after(LIMIT):
            while (match := re.search(pattern, self.text)) is None:
                assert await self._read_more(), f"{pattern!r} never came: {self.text!r}"
        return match

    async def read_to_end(self) -> None:
        with anyio.fail_after(LIMIT):
            while await self._read_more():
                pass

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    try:
        yield term
    finally:
        term.close()


async def read_all(process: Process) -> bytes:
    assert process.stdout is not None
    chunks = []
    with anyio.fail_after(LIMIT):
        async for chunk in process.stdout:
            chunks.append(chunk)
    return b"".join(chunks)


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
    assert (server.requests[0].header("user-agent") or "").startswith("asyncpool/")


async def test_get_prints_header_fields_as_they_came(anyio_backend: str) -> None:
    # Fields are text, not rich markup: "[/x]" is no closing tag, "[bold]" no style; a long
    # one stays on one line.
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        fields = [("x-path", "[/api/v1]"), ("x-tag", "[bold]v2"), ("link", "[/a]" + "b" * 200)]
        await conn.respond(200, fields, b"ok", reason="OK [/fine]")

    async with open_server(handler) as server:
        proc = await cli(anyio_backend, "get", server.url)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert proc.stdout == b"ok"
    assert "HTTP/1.1 200 OK [/fine]" in err
    assert "x-path: [/api/v1]" in err and "x-tag: [bold]v2" in err
    assert "link: [/a]" + "b" * 200 in err.splitlines()


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
    assert proc.returncode == 0  # as curl: a response came; -f makes it a failure
    assert server.requests[1].method == "DELETE"


async def test_get_fail_exits_22_on_an_http_error_status(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", "-f", server.url_for("/nothing-here"))
    assert (proc.returncode, proc.stdout) == (22, b"")  # as curl -f: no body
    last = proc.stderr.decode().splitlines()[-1]  # after the status line and header fields
    assert last == f"asyncpool: error: HTTP 404 Not Found from {server.url}/nothing-here"
    proc = await cli(anyio_backend, "get", "-f", server.url)
    assert (proc.returncode, proc.stdout) == (0, b"hello")


async def test_get_reads_the_body_from_a_file_or_stdin(
    server: TestServer, anyio_backend: str, tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"a": 1}\n')
    proc = await cli(anyio_backend, "get", "-d", f"@{body}", server.url_for("/echo"))
    assert (proc.returncode, proc.stdout) == (0, b'{"a": 1}\n')  # as is, newline included
    proc = await cli(anyio_backend, "get", "-d", "@-", server.url_for("/echo"), stdin=b"piped")
    assert (proc.returncode, proc.stdout) == (0, b"piped")
    assert [r.method for r in server.requests] == ["POST", "POST"]


async def test_get_follows_redirects_with_location(anyio_backend: str) -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path in ("/old", "/loop"):
            await conn.respond(302, [("location", "/new" if req.path == "/old" else "/loop")])
        else:
            await conn.respond(200, [], b"moved here")

    async with open_server(handler) as server:
        proc = await cli(anyio_backend, "get", server.url_for("/old"))
        assert (proc.returncode, proc.stdout) == (0, b"")  # as curl: not followed by default
        assert "302 Found" in proc.stderr.decode()
        proc = await cli(anyio_backend, "get", "-L", server.url_for("/old"))
        assert (proc.returncode, proc.stdout) == (0, b"moved here")
        proc = await cli(anyio_backend, "get", "-L", server.url_for("/loop"))
        assert proc.returncode == 47  # curl's "too many redirects"
        assert "stopped after 10 redirects" in proc.stderr.decode().splitlines()[-1]


async def test_get_trace_prints_a_waterfall_in_80_columns(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", "--trace", server.url)
    assert proc.returncode == 0
    err = proc.stderr.decode()
    for phase in ("DNS Lookup", "TCP Connection", "TLS Handshake", "Server Processing", "Total"):
        assert phase in err
    assert "connection: new, HTTP/1.1, 127.0.0.1:" in err
    assert f"-> 127.0.0.1:{server.port}" in err
    assert max(len(line) for line in err.splitlines()) <= 80, err


async def test_get_over_tls_with_a_ca_file_or_insecure(
    tls_server: TestServer, tls: TLSFixture, anyio_backend: str
) -> None:
    assert tls.ca_file is not None
    proc = await cli(anyio_backend, "get", "--cacert", str(tls.ca_file), tls_server.url)
    assert (proc.returncode, proc.stdout) == (0, b"hello")
    proc = await cli(anyio_backend, "get", "--insecure", "--trace", tls_server.url)
    assert (proc.returncode, proc.stdout) == (0, b"hello")


async def test_get_offers_http2_by_alpn_as_the_library(tls: TLSFixture, anyio_backend: str) -> None:
    assert tls.ca_file is not None
    context = make_h2_server_context(tls, alpn=("h2", "http/1.1"))
    async with open_h2_server(ssl_context=context) as server:
        proc = await cli(anyio_backend, "get", "--cacert", str(tls.ca_file), server.url)
    assert (proc.returncode, proc.stdout) == (0, b"hello"), proc.stderr
    assert "HTTP/2 200" in proc.stderr.decode()


async def test_get_http1_1_does_not_offer_http2(tls: TLSFixture, anyio_backend: str) -> None:
    # An HTTP/1.1 server that would pick h2 if it were offered.
    assert tls.ca_file is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    async with open_server(ssl_context=context) as server:
        proc = await cli(
            anyio_backend, "get", "--http1.1", "--cacert", str(tls.ca_file), server.url
        )
    assert (proc.returncode, proc.stdout) == (0, b"hello"), proc.stderr
    assert "HTTP/1.1 200" in proc.stderr.decode()


async def test_get_http2_with_prior_knowledge_whatever_the_schemes_case(anyio_backend: str) -> None:
    async with open_h2_server() as server:  # cleartext HTTP/2 only
        url = server.url.replace("http://", "HTTP://")
        proc = await cli(anyio_backend, "get", "--http2", url)
    assert (proc.returncode, proc.stdout) == (0, b"hello"), proc.stderr
    assert "HTTP/2 200" in proc.stderr.decode()


async def test_get_through_a_proxy(tls: TLSFixture, anyio_backend: str) -> None:
    from tests.proxies import open_proxy

    async with open_proxy() as proxy, open_server() as server:
        proc = await cli(anyio_backend, "get", "-x", proxy.url, server.url_for("/"))
    assert (proc.returncode, proc.stdout) == (0, b"hello"), proc.stderr
    assert [r.target for r in proxy.requests] == [server.url_for("/")]


async def test_get_over_a_unix_socket(anyio_backend: str, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with open_unix_server(path) as server:
        proc = await cli(anyio_backend, "get", "--unix-socket", str(path), "http://uds.test/")
    assert (proc.returncode, proc.stdout) == (0, b"hello"), proc.stderr
    assert server.requests[0].header("host") == "uds.test"
    proc = await cli(
        anyio_backend, "get", "--unix-socket", str(path), "-x", "http://p:1", "http://a/"
    )
    assert proc.returncode == 2 and b"exclude each other" in proc.stderr


async def test_get_proxy_refusing_the_tunnel_exits_56(anyio_backend: str) -> None:
    from tests.proxies import open_proxy

    async with open_proxy(mode="502") as proxy:
        proc = await cli(anyio_backend, "get", "--proxy", proxy.url, "https://origin.test/")
    assert proc.returncode == 56, proc.stderr
    assert "answered 502 to CONNECT origin.test:443" in proc.stderr.decode()


async def test_get_empty_proxy_goes_direct_and_a_bad_one_is_a_usage_error(
    anyio_backend: str,
) -> None:
    async with open_server() as server:
        dead = "http://127.0.0.1:9"  # nothing listens on discard
        env = {"HTTP_PROXY": dead, "http_proxy": dead}
        proc = await cli(anyio_backend, "get", "-x", "", server.url_for("/"), env=env)
    assert (proc.returncode, proc.stdout) == (0, b"hello"), proc.stderr
    proc = await cli(anyio_backend, "get", "-x", "ftp://p.test", "http://origin.test/")
    assert proc.returncode == 2
    assert "unsupported proxy scheme" in proc.stderr.decode()


async def silent(req: ServerRequest, conn: ServerConnection) -> None:
    await anyio.sleep_forever()  # a server that never answers


async def interrupt(process: Process, server: TestServer, requests: int) -> tuple[str, str]:
    """Ctrl-C once the server has received that many requests; stdout and stderr."""
    assert process.stdout is not None and process.stderr is not None
    with anyio.fail_after(LIMIT):
        await server.wait_until(lambda s: len(s.requests) >= requests, timeout=LIMIT)
        process.send_signal(signal.SIGINT)
        out = b"".join([chunk async for chunk in process.stdout]).decode()
        err = b"".join([chunk async for chunk in process.stderr]).decode()
    return out, err


async def test_get_ctrl_c_exits_130_quietly(anyio_backend: str) -> None:
    async with (
        open_server(silent) as server,
        await anyio.open_process(command(("get", server.url), anyio_backend)) as proc,
    ):
        out, err = await interrupt(proc, server, 1)
        assert await proc.wait() == 130
    assert (out, err) == ("", "")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["-m", "0.5"], "timed out after 0.5 s (-m)"),
        (["--timeout", "500ms"], "timed out after 0.5 s (-m)"),
        (["--read-timeout", "0.5"], "read_timeout"),
    ],
)
async def test_get_gives_up_on_a_silent_server(
    anyio_backend: str, option: list[str], message: str
) -> None:
    async with open_server(silent) as server:
        proc = await cli(anyio_backend, "get", *option, server.url)
    assert proc.returncode == 28  # curl's "operation timed out"
    assert message in one_error_line(proc)


async def test_get_exits_quietly_when_stdout_closes_early(
    server: TestServer, anyio_backend: str
) -> None:
    # As `asyncpool get URL | head -c 10`, with head gone before the body comes.
    proc = await cli_with_stdout_closed(anyio_backend, "get", server.url_for("/bytes?n=100000"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr.decode() and "Broken pipe" not in proc.stderr.decode()
    assert b"HTTP/1.1 200 OK" in proc.stderr


# -- bench ------------------------------------------------------------------------------------


async def test_bench_json_has_stable_keys(server: TestServer, anyio_backend: str) -> None:
    data = results(await cli(anyio_backend, "bench", server.url, "-n", "200", "-c", "4", "--json"))
    assert list(data) == [
        "url", "concurrency", "backend", "requests", "responses", "failed", "duration", "rps",
        "latency", "bytes", "status_codes", "protocols", "errors", "dials",
        "requests_per_connection", "reuse", "interrupted",
    ]  # fmt: skip
    assert (data["url"], data["concurrency"], data["backend"]) == (server.url, 4, anyio_backend)
    assert (data["requests"], data["responses"], data["failed"]) == (200, 200, 0)
    assert data["status_codes"] == {"200": 200} and data["errors"] == {}
    assert data["protocols"] == {"HTTP/1.1": 200}
    assert data["bytes"] == 200 * len(b"hello")
    assert data["dials"] <= 4
    assert data["reuse"] >= 0.98  # all but the first request of each worker
    latency = data["latency"]
    assert list(latency) == ["min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max"]
    assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p95"]
    assert latency["p95"] <= latency["p99"] <= latency["p99.9"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert data["interrupted"] is False


async def test_bench_without_keep_alives(server: TestServer, anyio_backend: str) -> None:
    args = ["bench", server.url, "-n", "50", "-c", "2", "--disable-keep-alives", "--json"]
    data = results(await cli(anyio_backend, *args))
    assert (data["requests"], data["dials"], data["reuse"]) == (50, 50, 0.0)


async def test_bench_with_pool_limits(server: TestServer, anyio_backend: str) -> None:
    args = ["bench", server.url, "-n", "100", "-c", "10", "--max-conns-per-host", "2", "--json"]
    data = results(await cli(anyio_backend, *args))
    assert data["requests"] == 100 and data["dials"] == 2


async def test_bench_without_a_url_starts_its_own_server(anyio_backend: str) -> None:
    data = results(await cli(anyio_backend, "bench", "-n", "300", "-c", "8", "--json"))
    assert (data["requests"], data["errors"]) == (300, {})
    assert data["url"].startswith("http://127.0.0.1:")


async def test_bench_http2_reuse_counts_streams_on_one_connection(anyio_backend: str) -> None:
    args = ["bench", "--http2", "-n", "200", "-c", "20", "--json"]
    data = results(await cli(anyio_backend, *args))
    assert data["protocols"] == {"HTTP/2": 200}
    assert (data["dials"], data["requests_per_connection"]) == (1, 200)
    assert data["reuse"] == 0.995  # 199 of 200 requests did not open a connection


@pytest.mark.parametrize("duration", ["300ms", "0.3", "0.005m"])
async def test_bench_duration_takes_units(anyio_backend: str, duration: str) -> None:
    data = results(await cli(anyio_backend, "bench", "-z", duration, "-c", "2", "--json"))
    assert data["requests"] > 0 and data["errors"] == {}


async def test_bench_prints_a_summary_for_people_on_stdout(anyio_backend: str) -> None:
    proc = await cli(anyio_backend, "bench", "-n", "100", "-c", "5")
    assert proc.returncode == 0
    assert proc.stderr == b""  # not a terminal: no progress noise
    out = proc.stdout.decode()
    assert re.search(r"asyncpool bench http://127\.0\.0\.1:\d+/ \(embedded server\)", out)
    assert f"100 requests, concurrency 5, HTTP/1.1, {anyio_backend}" in out
    for label in (
        "Success rate:  100.00%", "Slowest:", "Fastest:", "Average:", "Requests/sec:",
        "Total data:    2.05 KiB", "Size/request:  21 B", "p95", "p99.9",
        "Response time histogram:", "[200] 100 responses", "5 opened, 20.0 requests per connection",
    ):  # fmt: skip
        assert label in out, out
    assert max(len(line) for line in out.splitlines()) <= 80, out


async def test_bench_shows_progress_rate_and_eta_on_a_terminal(
    server: TestServer, anyio_backend: str
) -> None:
    with terminal() as term:
        process = await term.spawn(command(("bench", server.url, "-z", "1s"), anyio_backend))
        async with process:
            await term.wait_for(r"[1-9][\d,]* requests +[\d,]+ req/s +ETA \d+:\d\d")
            await term.read_to_end()
            out = await read_all(process)
            assert await process.wait() == 0
    assert b"Requests/sec:" in out


async def test_bench_ctrl_c_prints_the_results_so_far(
    server: TestServer, anyio_backend: str
) -> None:
    args = ("bench", server.url, "-n", "100000000", "-c", "2")
    with terminal() as term:
        process = await term.spawn(command(args, anyio_backend))
        async with process:
            # The live display shows the total, the rate and an ETA once requests are measured.
            await term.wait_for(r"[1-9][\d,]*/100,000,000 requests +[\d,]+ req/s +ETA \d+:\d\d")
            process.send_signal(signal.SIGINT)
            await term.read_to_end()
            out = (await read_all(process)).decode()
            assert await process.wait() == 130
    assert "Traceback" not in term.text
    match = re.search(r"([\d,]+) requests, concurrency 2, HTTP/1.1, \w+, interrupted after", out)
    assert match is not None, out
    assert int(match[1].replace(",", "")) > 0
    assert "Requests/sec:" in out and "[200]" in out


async def test_bench_ctrl_c_before_any_response(anyio_backend: str) -> None:
    async with (
        open_server(silent) as server,
        await anyio.open_process(command(("bench", "-c", "2", server.url), anyio_backend)) as proc,
    ):
        out, err = await interrupt(proc, server, 2)
        assert await proc.wait() == 130
    assert out == ""
    assert err == "asyncpool: error: interrupted before any response\n"


async def test_bench_timeout_gives_up_on_a_request(anyio_backend: str) -> None:
    async with open_server(silent) as server:
        proc = await cli(anyio_backend, "bench", server.url, "-n", "4", "-c", "2", "-t", "100ms")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "all 4 requests failed (RequestTimeout: 4); no response in 0.1 s" in line


async def test_bench_counts_failed_requests_by_type(anyio_backend: str) -> None:
    answered = 0

    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        nonlocal answered
        answered += 1
        if answered % 3 == 0:
            await conn.close()  # no response: a fresh connection's request is not retried
        else:
            await conn.respond(200, [], b"ok")

    args = ["-n", "30", "-c", "1", "--disable-keep-alives"]
    async with open_server(handler) as server:
        proc = await cli(anyio_backend, "bench", server.url, *args)
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert "Success rate:  66.67%" in out and "[200] 20 responses" in out
    # Closed on receipt: the pool may see it as it writes the request or as it reads.
    counted = re.findall(r"\[(\d+)\] (ServerDisconnected|WriteError): ", out)
    assert sum(int(n) for n, _ in counted) == 10, out
    line = one_error_line(proc)
    assert "10 of 30 requests failed (" in line
    assert all(f"{name}: {n}" in line for n, name in counted)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_bench_against_a_refused_port_is_one_line(anyio_backend: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    proc = await cli(anyio_backend, "bench", url, "-n", "20")
    assert (proc.returncode, proc.stdout) == (1, b"")
    line = one_error_line(proc)
    assert "all 20 requests failed (ConnectError: 20); connect 127.0.0.1:" in line
    assert "cannot connect" in line


async def test_bench_exits_quietly_when_stdout_closes_early(
    server: TestServer, anyio_backend: str
) -> None:
    # As `asyncpool bench URL | head -1`, with head gone before the results come.
    proc = await cli_with_stdout_closed(anyio_backend, "bench", server.url, "-n", "50")
    assert (proc.returncode, proc.stderr) == (1, b"")


# -- arguments and global options -------------------------------------------------------------


async def test_global_options_go_before_or_after_the_subcommand(
    server: TestServer, anyio_backend: str
) -> None:
    for args in (
        ["--backend", anyio_backend, "bench", server.url],
        ["bench", "--backend", anyio_backend, server.url],
        ["bench", server.url, "--backend", anyio_backend],
    ):
        proc = await cli(None, *args, "-n", "5", "--json")
        assert results(proc)["backend"] == anyio_backend


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "-n", "-5"],
        ["bench", "-n", "0"],
        ["bench", "-n", "many"],
        ["bench", "-z", "-1"],
        ["bench", "-z", "0s"],
        ["bench", "-z", "3x"],
        ["bench", "-c", "0"],
        ["bench", "--max-conns-per-host", "-1"],
        ["bench", "-n", "5", "-z", "1s"],
        ["bench", "--backend", "curio"],
        ["get", "-m", "soon", "http://127.0.0.1:9/"],
        ["get"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"(see: asyncpool {args[0]} --help)" in one_error_line(proc)


def test_backend_trio_without_trio_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "trio").mkdir()
    (tmp_path / "trio" / "__init__.py").write_text("raise ImportError('No module named trio')\n")
    proc = run_cli(
        "get", "http://127.0.0.1:9/", "--backend", "trio", env={"PYTHONPATH": str(tmp_path)}
    )
    assert proc.returncode == 2
    assert 'pip install "asyncpool-http[trio]"' in one_error_line(proc)


def test_every_option_has_help_with_its_default() -> None:
    parser = _parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in subcommands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"
    env = {"COLUMNS": "200"}  # one option a line
    bench = run_cli("bench", "--help", env=env).stdout
    assert "requests in flight at once (workers) (default: 50)" in bench
    assert "method (default: GET)" in bench and "(default: 2000, unless -z)" in bench
    get = run_cli("get", "--help", env=env).stdout
    assert "url " in get and "the URL to request" in get
    assert "(default: 10s, as Client)" in get and "(default: 30s, as Client)" in get
    for text in (bench, get):
        examples = text.index("examples:")
        assert text.index("exit codes") > examples
        assert text.rstrip().splitlines()[-1].startswith("  130  interrupted (Ctrl-C)")
    assert "  28   timed out" in get and "  7    could not connect" in get
    assert "examples:" in run_cli("--help").stdout


# -- errors a person can act on ---------------------------------------------------------------


async def test_get_an_unreachable_host(anyio_backend: str) -> None:
    proc = await cli(anyio_backend, "get", f"http://127.0.0.1:{closed_port()}/")
    assert proc.returncode == 7  # curl's "failed to connect"
    line = one_error_line(proc)
    assert "connect 127.0.0.1:" in line and "cannot connect" in line


@pytest.mark.parametrize("url", ["example.org/no-scheme", "ftp://example.org/"])
async def test_a_bad_url(anyio_backend: str, url: str) -> None:
    for subcommand in ("get", "bench"):
        proc = await cli(anyio_backend, subcommand, url)
        assert proc.returncode == 2
        assert "url:" in one_error_line(proc)


def test_a_bad_header() -> None:
    proc = run_cli("get", "-H", "no-colon", "http://127.0.0.1:9/")
    assert proc.returncode == 2 and "Name: value" in one_error_line(proc)


@pytest.mark.parametrize(
    ("option", "message"),
    [(["-H", "Bad Name: x"], "invalid header name 'Bad Name'"), (["-X", "GE T"], "'GE T'")],
)
@pytest.mark.parametrize("subcommand", ["get", "bench"])
def test_a_header_or_method_a_request_cannot_carry_is_refused_up_front(
    subcommand: str, option: list[str], message: str
) -> None:
    # bench tried it once per request, failing without a pause (Ctrl-C went unseen) until -z.
    until = ["-z", "60s"] if subcommand == "bench" else []
    proc = run_cli(subcommand, *option, *until, f"http://127.0.0.1:{closed_port()}/")
    assert proc.returncode == 2 and message in one_error_line(proc)


async def test_a_failed_certificate_check_gives_a_hint(
    tls_server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", tls_server.url)
    assert proc.returncode == 35  # curl's TLS error
    line = one_error_line(proc)
    assert "certificate verify failed" in line
    assert "--cacert FILE" in line and "--insecure" in line
    proc = await cli(anyio_backend, "bench", tls_server.url, "-n", "3")
    assert proc.returncode == 1 and "--insecure" in one_error_line(proc)


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_file_that_cannot_be_read_is_named(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    for subcommand in ("get", "bench"):
        proc = run_cli(subcommand, "--cacert", str(path), "https://127.0.0.1:9/")
        assert proc.returncode == 2
        assert f"--cacert {path}: cannot load it" in one_error_line(proc)


def test_a_body_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    proc = run_cli("get", "-d", f"@{tmp_path / 'nosuch.json'}", "http://127.0.0.1:9/")
    assert proc.returncode == 2
    assert "nosuch.json: cannot read it: No such file" in one_error_line(proc)


async def test_an_output_that_fails_mid_write_is_one_line(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", "-o", "/dev/full", server.url)
    assert proc.returncode == 23
    assert last_error_line(proc) == "-o /dev/full: cannot write: No space left on device"
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        with anyio.fail_after(LIMIT):
            proc = await anyio.run_process(
                command(("get", server.url), anyio_backend), stdout=full, check=False
            )
    finally:
        os.close(full)
    assert proc.returncode == 23
    assert last_error_line(proc) == "stdout: cannot write: No space left on device"


async def test_a_failed_request_leaves_the_output_file_as_it_was(
    server: TestServer, anyio_backend: str, tmp_path: Path
) -> None:
    kept, fresh = tmp_path / "kept", tmp_path / "fresh"
    kept.write_bytes(b"the last download")
    for path in (kept, fresh):
        proc = await cli(
            anyio_backend, "get", "-o", str(path), f"http://127.0.0.1:{closed_port()}/"
        )
        assert proc.returncode == 7
        proc = await cli(anyio_backend, "get", "-f", "-o", str(path), server.url_for("/nothing"))
        assert proc.returncode == 22
    assert kept.read_bytes() == b"the last download" and not fresh.exists()
    proc = await cli(anyio_backend, "get", "-o", str(kept), server.url)
    assert (proc.returncode, kept.read_bytes()) == (0, b"hello")  # replaced, not appended to
    proc = await cli(anyio_backend, "get", "-o", "/dev/null", server.url)
    assert proc.returncode == 0


async def test_get_trace_after_a_redirect_shows_the_last_request(anyio_backend: str) -> None:
    async def handler(req: ServerRequest, conn: ServerConnection) -> None:
        if req.path == "/old":
            await conn.respond(302, [("location", "/new")])
        else:
            await conn.respond(200, [], b"moved here")

    async with open_server(handler) as server:
        proc = await cli(anyio_backend, "get", "-L", "--trace", server.url_for("/old"))
    assert (proc.returncode, proc.stdout) == (0, b"moved here")
    err = proc.stderr.decode()
    assert "connection: reused" in err and "(the last of 2 requests" in err
    connect = re.search(r"TCP Connection +(\S+)", err)
    assert connect is not None and connect.group(1) == "-", err


async def test_an_output_file_that_cannot_be_written(
    server: TestServer, anyio_backend: str
) -> None:
    proc = await cli(anyio_backend, "get", "-o", "/nonexistent-dir/x", server.url)
    assert proc.returncode == 23  # curl's write error
    assert "-o /nonexistent-dir/x: No such file" in one_error_line(proc)
