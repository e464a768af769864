"""Nox sessions for asyncpool (without nox: ``python3 dev.py SESSION``, see dev.py).

    nox -s demo     # asyncpool bench against an embedded local server, and examples/reuse.py
    nox -s tests    # lint, types, then the whole test suite with coverage
    nox -s lint     # ruff + mypy only
    nox -s bench    # HTTP/1.1 and HTTP/2 benchmarks against a local nginx (see benchmarks/README.md)
    nox -s faults   # the fault suite: idle closes, keepalive_requests, reloads of a local nginx
    nox -s hostile  # the hostile-server suite: floods, bombs and broken framing on loopback
    nox -s package  # build the sdist and wheel, install the wheel in a fresh venv and check it

Every session runs on the interpreter nox itself runs on, in a venv (created with the standard
library's venv module) that is reused across runs.
"""

from __future__ import annotations

import sys
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
