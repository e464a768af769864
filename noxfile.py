"""Nox sessions for asyncpool (without nox: ``python3 dev.py SESSION``, see dev.py).

    nox -s demo     # asyncpool bench against an embedded local server, and examples/reuse.py
    nox -s tests    # lint, types, then the whole test suite with coverage
    nox -s lint     # ruff + mypy only
    nox -s bench    # HTTP/1.1 and HTTP/2 benchmarks against a local nginx (see benchmarks/README.md)
    nox -s faults   # the fault suite: idle closes, keepalive_requests, reloads of a local nginx
    nox -s hostile  # the hostile-server suite: floods, bombs and broken framing on loopback
    nox -s package  # build the sdist and wheel, install the wheel in a fresh venv and check it
    nox -s httpx_suite  # httpx's own async client tests with HTTPXTransport as the transport

Every session runs on the interpreter nox itself runs on, in a venv (created with the standard
library's venv module) that is reused across runs.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
# The PEP 735 group of pyproject.toml: tools and test dependencies, not in the wheel's metadata.
DEV = nox.project.dependency_groups(nox.project.load_toml(ROOT / "pyproject.toml"), "dev")


def _install_dev(session: nox.Session, *more: str) -> None:
    session.install("-e", ".", *DEV, *more)


def _lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")  # strict, on the package: see [tool.mypy] in pyproject.toml


@nox.session
def tests(session: nox.Session) -> None:
    """Lint, type-check, then run the test suite with branch coverage (>= 90%)."""
    _install_dev(session)
    _lint(session)
    session.run(
        "pytest",
        "--cov=asyncpool",
        "--cov-branch",
        "--cov-report=term-missing",
        "--cov-fail-under=90",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy --strict on the package."""
    _install_dev(session)
    _lint(session)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: `asyncpool bench` load-tests an embedded loopback server (HTTP/1.1, then
    HTTP/2), and examples/reuse.py shows reuse through ClientTrace. Arguments go to bench."""
    session.install("-e", ".[cli]")
    session.run("asyncpool", "bench", "-n", "5000", "-c", "50", *session.posargs)
    session.run("asyncpool", "bench", "--http2", "-n", "5000", "-c", "50", *session.posargs)
    session.run("python", "examples/reuse.py")


@nox.session
def bench(session: nox.Session) -> None:
    """The whole benchmark suite against a local nginx: one table of req/s, ratios and targets.

    Options after `--` go to benchmarks/run_all.py, e.g. `nox -s bench -- --quick`.
    """
    _install_dev(session, "aiosonic", "httpx[http2]")  # httptools (speedups) is in the group
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """The fault suite (benchmarks/FAULTS.md): asyncpool on asyncio and trio, httpx and aiohttp
    against a local nginx that closes idle connections, ends connections after 5 requests and
    reloads under load; one table of requests sent, failed (by type) and retried. About 1.5 minutes.

    Options after `--` go to benchmarks/faults.py, e.g. `nox -s faults -- --strict` (exit 1 when
    asyncpool failed a request), `-- --json`, `-- --quick`, `-- --scenarios idle_close`.
    """
    _install_dev(session)
    session.run("python", "benchmarks/faults.py", *session.posargs)


@nox.session
def hostile(session: nox.Session) -> None:
    """The hostile-server suite (benchmarks/HOSTILE.md): asyncpool on asyncio and trio, httpx
    and aiohttp against scripted servers that flood, bomb and break framing; one table of
    outcome, peak and kept memory, time and whether the next request succeeded. Under 2 minutes.

    Options after `--` go to benchmarks/hostile.py, e.g. `nox -s hostile -- --strict` (exit 1
    when an asyncpool cell had a problem), `-- --json`, `-- --quick`, `-- --cases gzip_bomb`.
    """
    _install_dev(session)
    session.run("python", "benchmarks/hostile.py", *session.posargs)


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel (into .nox/package/tmp/dist), install the wheel in a fresh
    venv (not editable, no dev tools) and check what a user gets: the import, `asyncpool
    --help`, the metadata (.ci/check_dist.py)."""
    session.install("build")
    dist = Path(session.create_tmp()) / "dist"
    if dist.exists():
        for old in dist.iterdir():
            old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    clean = Path(session.create_tmp()) / "clean-venv"
    session.run("python", "-m", "venv", "--clear", str(clean))
    bin_dir = clean / ("Scripts" if sys.platform == "win32" else "bin")
    python = str(bin_dir / "python")
    session.run(python, "-m", "pip", "install", "--quiet", str(wheel), external=True)
    session.run(str(bin_dir / "asyncpool"), "--help", external=True, silent=True)
    session.run(python, str(ROOT / ".ci" / "check_dist.py"), str(sdist), external=True)


# httpx's test suite (benchmarks/HTTPX_SUITE.md): this release's sdist, its tests/ and pytest
# configuration extracted to .httpx-suite/ (ignored by git) once.
HTTPX_VERSION = "0.29.0"
HTTPX_SUITE_DIR = ROOT / ".httpx-suite"
# httpx's tests that send over a socket with an AsyncClient on its default transport; the
# others give AsyncClient a MockTransport or an ASGITransport.
HTTPX_SUITE_TESTS = ("tests/client/test_async_client.py", "tests/test_timeouts.py")


def _httpx_tests(session: nox.Session) -> Path:
    """httpx's source tree (tests/ and pyproject.toml only, not the package: the tests import
    the httpx installed in the session), downloaded from the package index with pip."""
    source = HTTPX_SUITE_DIR / f"httpx-{HTTPX_VERSION}"
    done = source / ".extracted"
    if done.exists():
        return source
    download = HTTPX_SUITE_DIR / "download"
    session.run(
        "python", "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        "--dest", str(download), f"httpx=={HTTPX_VERSION}",
    )  # fmt: skip
    (sdist,) = download.glob(f"httpx-{HTTPX_VERSION}.tar.gz")
    if source.exists():
        shutil.rmtree(source)
    prefix = f"httpx-{HTTPX_VERSION}/"
    with tarfile.open(sdist) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
        ]
        if hasattr(tarfile, "data_filter"):  # 3.12, and 3.10.12 / 3.11.4 on
            tar.extractall(HTTPX_SUITE_DIR, members=members, filter="data")
        else:  # a pinned release from the index
            tar.extractall(HTTPX_SUITE_DIR, members=members)
    done.touch()
    return source


@nox.session
def httpx_suite(session: nox.Session) -> None:
    """httpx's own tests with asyncpool's HTTPXTransport as AsyncClient's default transport
    (httpx_suite/asyncpool_httpx_plugin.py), on asyncio and trio; known differences are
    xfail with their reason. About 10 s once installed (the first run installs and downloads).

    Arguments after `--` go to pytest, run in httpx's source tree: `-- -k timeout`, `-- -x`,
    `-- tests/test_asgi.py` (instead of the default files), `-- --asyncpool-no-xfail`.
    """
    session.install(
        "-e", ".", f"httpx[http2]=={HTTPX_VERSION}",
        "pytest", "pytest-timeout", "trio", "trustme", "uvicorn",
    )  # fmt: skip
    source = _httpx_tests(session)
    session.chdir(source)
    session.run(
        "pytest",
        "-c", "pyproject.toml", "--rootdir", ".",
        "-p", "asyncpool_httpx_plugin",
        "-o", f"testpaths={' '.join(HTTPX_SUITE_TESTS)}",
        "-o", "timeout=60",
        *session.posargs,
        env={"PYTHONPATH": str(ROOT / "httpx_suite"), "ASYNCPOOL_CHECK_INVARIANTS": "1"},
    )  # fmt: skip
