"""Every ```python block of README.md is a whole program that runs as written.

Each block runs in a subprocess (``sys.executable``, warnings as errors), as a user would run it
after pasting it into a file, against examples/server.py (the server the README tells people to
start) on a free loopback port: the blocks read its URL from ``ASYNCPOOL_URL``. The "Testing
your code" block needs no server: it runs on asyncpool.testing's in-memory MockServer.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
URL_LINE = 'URL = os.environ.get("ASYNCPOOL_URL", "http://127.0.0.1:8080/")'


def python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


BLOCKS = python_blocks()


def block_id(code: str) -> str:
    """The block's first distinctive line, for test ids."""
    if "client.aclose()" in code:
        return "aclose"
    for marker in ("MockServer(", "HTTPXTransport(", "Client(", "ClientTrace(", "Transport("):
        if marker in code:
            return marker.rstrip("(")
    return "block"


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """examples/server.py on a free port, in a thread of its own."""
    spec = importlib.util.spec_from_file_location("readme_server", ROOT / "examples" / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.make_server(port=0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join(timeout=10)


def run_block(code: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "ASYNCPOOL_URL": url},
        check=False,
    )


def test_readme_has_its_examples() -> None:
    assert len(BLOCKS) >= 4
    assert any(block_id(code) == "MockServer" for code in BLOCKS)
    for code in BLOCKS:
        if block_id(code) != "MockServer":  # in memory: no URL
            assert URL_LINE in code, f"every example reads its URL from ASYNCPOOL_URL:\n{code}"
        assert re.search(r"^anyio\.run\(main\)", code, re.MULTILINE), code


# What each example prints, as the README says (regular expressions, one per line of output).
EXPECTED = {
    "Transport": [r"200 HTTP/1\.1 \d+", r"TransportStats\(.*"],
    "ClientTrace": [r"reused: False", r"\d+ bytes", r"reused: True", r"\d+ bytes"],
    "Client": [
        r"\{'method': 'POST', 'path': '/items', 'json': \{'name': 'pool'\}\}",
        r"\d+ bytes",
    ],
    "HTTPXTransport": [r"200 HTTP/1\.1", r"TransportStats\(.*"],
    "MockServer": [r"200 HTTP/1\.1 hello", r"200 HTTP/1\.1 hello", r"retries=1 connections=2"],
    "aclose": [r"\d 200 \d+"] * 3,  # the three requests, in any order
}


@pytest.mark.parametrize("code", BLOCKS, ids=[block_id(code) for code in BLOCKS])
def test_readme_block_runs(code: str, server_url: str) -> None:
    proc = run_block(code, server_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no warning, no ignored exception
    lines = proc.stdout.splitlines()
    expected = EXPECTED[block_id(code)]
    assert len(lines) == len(expected), proc.stdout
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (pattern, proc.stdout)


@pytest.mark.parametrize("code", [c for c in BLOCKS if "backend=" in c])
def test_readme_block_runs_on_trio(code: str, server_url: str) -> None:
    """The commented-out trio alternative works too."""
    run_line = re.compile(r"^anyio\.run\(main\).*$", re.MULTILINE)
    trio_line = re.compile(r'^# (anyio\.run\(main, backend="trio"\))$', re.MULTILINE)
    assert run_line.search(code) and trio_line.search(code), code
    proc = run_block(trio_line.sub(r"\1", run_line.sub("", code)), server_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert re.search(r"^200 HTTP/1\.1 (\d+|hello)$", proc.stdout, re.MULTILINE), proc.stdout
