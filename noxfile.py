"""Nox sessions for asyncpool.

    nox -s demo     # the pool at work against an embedded local server
    nox -s tests    # lint, types, then the whole test suite with coverage
    nox -s lint     # ruff + mypy only
    nox -s bench    # HTTP/1.1 and HTTP/2 benchmarks against a local nginx (see benchmarks/README.md)

Every session runs on the interpreter nox itself runs on, in a venv (created with the standard
library's venv module) that is reused across runs.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True


def _lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")  # strict, on the package: see [tool.mypy] in pyproject.toml


@nox.session
def tests(session: nox.Session) -> None:
    """Lint, type-check, then run the test suite with branch coverage (>= 90%)."""
    session.install("-e", ".[dev]")
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
    session.install("-e", ".[dev]")
    _lint(session)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: the pool at work against an embedded local server."""
    session.install("-e", ".")
    session.run("python", "examples/reuse.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """HTTP/1.1, then HTTP/2, throughput against a local nginx; options after `--` go to both."""
    session.install("-e", ".[dev]", "aiosonic")
    session.run("python", "benchmarks/bench_http1.py", *session.posargs)
    session.run("python", "benchmarks/bench_h2.py", *session.posargs)
