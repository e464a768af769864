"""The fault suite (benchmarks/faults.py) in small, so its code runs with the tests: its nginx
set-up, request loops, client adapters and report, on asyncio and trio against a private nginx.

It checks that the suite ran and counted consistently, not that asyncpool came through the faults
unharmed: `nox -s faults` reports that (benchmarks/FAULTS.md). Skipped when nginx is not
installed, unless ASYNCPOOL_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from benchmarks import faults
from tests.nginx import require_nginx

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# Three scenarios cut down to a handful of requests: the burst loop (with a short pause), and the
# steady loop over HTTP/1.1 and over HTTP/2 + TLS, each with one reload while it runs.
SMALL: dict[str, dict[str, Any]] = {
    "idle_close": {"requests": 8, "concurrency": 4, "pauses": (0.01,)},
    "keepalive_requests_h1": {"requests": 24, "concurrency": 4, "reload_every": 1.0},
    "reload_h2": {"requests": 24, "concurrency": 4},
}


@pytest.mark.parametrize("name", list(SMALL))
async def test_fault_suite_runs_and_counts(name: str, anyio_backend: str) -> None:
    require_nginx()
    scenario = dataclasses.replace(faults.SCENARIOS[name], **SMALL[name])
    clients = [
        client
        for client, kind in faults.CLIENTS.items()
        if kind.backend == anyio_backend and not (scenario.http2 and kind.http1_only)
    ]
    results: list[faults.Result] = []

    async def run(client: str) -> None:
        results.append(await faults.run_client(scenario, client, target))

    with faults.serve(scenario) as (server, target):
        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                for client in clients:
                    tg.start_soon(run, client)
                if scenario.reload_every:
                    await anyio.sleep(0.01)
                    server.reload()
        # nginx still answers after its reload.
        assert (await faults.run_client(scenario, clients[0], target)).sent == scenario.requests

    assert sorted(r.client for r in results) == sorted(clients)
    for r in results:
        assert (r.scenario, r.error) == (scenario.name, None)
        assert r.sent == scenario.requests
        assert r.ok + r.failed == r.sent
        assert sum(r.failures.values()) == sum(r.failed_methods.values()) == r.failed
        assert set(r.failed_methods) <= {"GET", "POST"}
        assert set(r.examples) == set(r.failures)
        assert sum(r.versions.values()) >= r.ok
        if faults.CLIENTS[r.client].ours:
            assert r.stats is not None
            assert r.retried == r.stats["retries"]
        else:
            assert (r.retried, r.stats) == (None, None)

    run_ = faults.ScenarioRun(scenario, results, reloads=1)
    text = faults.table([run_])
    for r in results:
        assert f"{scenario.name:<22}{r.client:<24}{r.sent:>7}" in text
    report = json.loads(json.dumps(faults.to_json([run_], 1.0)))
    assert [r["client"] for r in report["scenarios"][0]["results"]] == [r.client for r in results]
    assert report["asyncpool_failures"] == faults.asyncpool_failures([run_])
    assert len(report["asyncpool_failures"]) == sum(
        1 for r in results if faults.CLIENTS[r.client].ours and r.failed
    )


def test_fault_suite_command_runs_its_workers() -> None:
    """`faults.py --quick --json`: nginx, one worker process per client, the JSON report."""
    require_nginx()
    clients = ["round_trip/asyncio", "round_trip/trio"]
    command = [sys.executable, str(Path(faults.__file__)), "--quick", "--json"]
    command += ["--scenarios", "reload_h1", "--clients", ",".join(clients)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [scenario] = report["scenarios"]
    assert scenario["name"] == "reload_h1"
    assert [r["client"] for r in scenario["results"]] == clients
    for r in scenario["results"]:
        assert r["error"] is None
        assert r["sent"] == scenario["requests"]
        assert r["ok"] + r["failed"] == r["sent"]
        assert r["retried"] == r["stats"]["retries"]
