"""The examples run as written (README.md's code: tests/test_readme.py).

Each runs in a subprocess (``sys.executable``, warnings as errors), as a user would run it.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
REUSE = ROOT / "examples" / "reuse.py"
README = ROOT / "README.md"

URL_LINE = re.compile(r'^URL = "http://127\.0\.0\.1:8080/".*$', re.MULTILINE)


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=45,
        cwd=ROOT,
        check=False,
    )


def load_reuse() -> ModuleType:
    """examples/reuse.py as a module (for its embedded server)."""
    name = "asyncpool_examples_reuse"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REUSE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ examples/reuse.py


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_reuse_demo(backend: str) -> None:
    proc = run_python(str(REUSE), "--backend", backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no warning, no ignored exception
    out = proc.stdout
    assert f"on {backend}" in out

    m = re.search(r"^sequential: (\d+) requests, (\d+) connections?$", out, re.MULTILINE)
    assert m is not None, out
    assert (int(m[1]), int(m[2])) == (20, 1), m[0]

    m = re.search(
        r"^concurrent: (\d+) requests, (\d+) connections, (\d+) dials, max_conns_per_host=(\d+)$",
        out,
        re.MULTILINE,
    )
    assert m is not None, out
    requests, connections, dials, limit = map(int, m.groups())
    assert (requests, limit) == (100, 4)
    assert 1 <= connections <= 4, m[0]
    assert dials <= 4, m[0]

    # The final table: one origin, nothing left in use or waiting, at most 4 connections.
    m = re.search(
        r"^  http://127\.0\.0\.1:\d+ +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$",
        out.split("(c) pool.stats() at the end", 1)[1],
        re.MULTILINE,
    )
    assert m is not None, out
    idle, in_use, dialing, waiting, total = map(int, m.groups())
    assert (in_use, dialing, waiting) == (0, 0, 0)
    assert idle == total <= 4
    assert re.search(r"^done: 120 requests over [1-4] connections? in ", out, re.MULTILINE), out


def test_reuse_demo_rejects_unknown_backend() -> None:
    proc = run_python(str(REUSE), "--backend", "curio")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


# ------------------------------------------------------------------ examples/httpx_transport.py


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_httpx_transport_example(backend: str) -> None:
    proc = run_python(str(ROOT / "examples" / "httpx_transport.py"), "--backend", backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert f"on {backend}" in out
    assert "  http11.response_closed.complete" in out  # the trace extension's events
    m = re.search(r"^requests: (\d+), dials: (\d+), reused: (\d+)$", out, re.MULTILINE)
    assert m is not None, out
    requests, dials, reused = map(int, m.groups())
    assert requests == 31, m[0]
    assert 1 <= dials <= 4, m[0]  # max_conns_per_host=4
    assert reused == requests - dials, m[0]
    assert "httpx.ReadTimeout: " in out
    assert "TransportStats(" in out


# ------------------------------------------------------------------ examples/client.py


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_client_example(backend: str) -> None:
    proc = run_python(str(ROOT / "examples" / "client.py"), "--backend", backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert "GET / -> 200" in proc.stdout
    m = re.search(r"^client: 22 requests, (\d+) dials", proc.stdout, re.MULTILINE)
    assert m is not None and 1 <= int(m[1]) <= 4, proc.stdout


# ------------------------------------------------------------------ examples/otel_metrics.py


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_otel_metrics_example(backend: str) -> None:
    proc = run_python(str(ROOT / "examples" / "otel_metrics.py"), "--backend", backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert "http.client.request.duration (s)" in out
    assert re.search(r"^  count=50 .*http\.request\.method=GET", out, re.MULTILINE), out
    assert "http.client.open_connections ({connection})" in out
    assert "asyncpool.pool.wait.duration (s)" in out
