"""The hostile-server catalogue (tests/hostile.py) through asyncpool, in process, on asyncio and
trio (and both HTTP/1.1 parsers), so that its servers and the runner's cell code
(benchmarks/hostile.py) run with the tests and cannot rot.

Every case is asserted: a typed error where a careful client fails (or an answer where either
is fine), no hang, and the next request on the same pool succeeds. `nox -s hostile` runs the
whole catalogue with memory bounds (benchmarks/HOSTILE.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import asyncpool
from asyncpool import Request, Transport
from asyncpool._h1.protocol import PARSERS
from benchmarks import hostile
from tests.hostile import CASES, CONTROL, serve

pytestmark = pytest.mark.anyio

H1 = [name for name, case in CASES.items() if case.protocol == "h1"]
H2 = [name for name, case in CASES.items() if case.protocol == "h2"]


async def _check(name: str, client: str) -> None:
    case = CASES[name]
    async with serve(case) as url, serve(CONTROL[case.protocol]) as control_url:
        with anyio.fail_after(30):
            cell = await hostile.run_cell(case, client, url, control_url)
    assert (cell.problems, cell.next) == ([], "ok"), cell
    if case.expect == "error":
        assert cell.typed and cell.error is not None, cell
    if case.expect == "ok":
        assert (cell.status, cell.size) == (200, case.size), cell


@pytest.mark.parametrize("http1_parser", PARSERS, indirect=True)
@pytest.mark.parametrize("name", H1)
async def test_asyncpool_survives_h1(name: str, anyio_backend: str, http1_parser: str) -> None:
    await _check(name, f"asyncpool/{anyio_backend}")


@pytest.mark.parametrize("name", H2)
async def test_asyncpool_survives_h2(name: str, anyio_backend: str) -> None:
    await _check(name, f"asyncpool/{anyio_backend}")


def test_judge_names_every_problem() -> None:
    case = CASES["cl_te"]
    wrong = hostile.Cell("cl_te", "asyncpool/asyncio", status=200, size=2, peak=65 << 20)
    wrong.kept, wrong.next = 2 << 20, "hang"
    assert hostile.judge(case, wrong) == [
        "wrong success",
        "peak > 64 MiB",
        "kept > 1 MiB",
        "next request failed",
    ]
    untyped = hostile.Cell("good", "httpx", error="KeyError", typed=False, next="ok")
    assert hostile.judge(CASES["good"], untyped) == ["untyped error", "failed"]
    assert hostile.judge(case, hostile.Cell("cl_te", "httpx", hang=True, next="ok")) == ["hang"]


def test_hostile_command_runs_its_workers() -> None:
    """`hostile.py --quick --json`: servers in a thread, a worker process per cell, the report;
    `--strict` passes on cases the pool handles."""
    clients = ["asyncpool/asyncio", "asyncpool/trio"]
    command = [sys.executable, str(Path(hostile.__file__)), "--quick", "--json", "--strict"]
    command += ["--cases", "good,cl_te,h2_push_promise", "--clients", ",".join(clients)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["asyncpool_problems"] == []
    cells = [hostile.Cell(**cell) for cell in report["cells"]]
    assert [(c.case, c.client) for c in cells] == [
        (name, client) for name in ("good", "cl_te", "h2_push_promise") for client in clients
    ]
    for cell in cells:
        assert cell.peak is not None and cell.kept is not None
        assert cell.next == "ok"
    text = hostile.table(cells)
    assert "cl_te [h1, expect error]" in text


@pytest.mark.parametrize("name", ["h2_window_overflow", "h2_push_promise", "h2_hpack_bomb"])
async def test_an_http2_protocol_error_fails_the_request_as_one(name: str) -> None:
    """The connection ends because the server broke the protocol: the request says that, not
    that the server hung up after maybe processing it."""
    async with serve(CASES[name]) as url, Transport(http2_prior_knowledge=True) as pool:
        with pytest.raises(asyncpool.RemoteProtocolError, match="protocol error"):
            await pool.round_trip(Request("GET", url))
