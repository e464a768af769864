"""ClientTrace's hooks are typed as the package calls them: a type checker accepts right hooks
(the README's lambdas among them) and rejects wrong ones.

A snippet is written to a file and checked by mypy --strict and, when installed (it is in the
dev dependency group), basedpyright in strict mode; each checker must report an error on exactly
the lines marked ``# wrong``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """\
from __future__ import annotations

import ssl

import asyncpool
from asyncpool import CloseReason, GotConnInfo, Headers


def on_1xx(code: int, headers: Headers) -> None:
    print(code, headers.get("link"))


def on_idle(reason: CloseReason | None) -> None:
    print("pooled" if reason is None else reason.value)


def on_tls(ssl_object: ssl.SSLObject | None, err: BaseException | None) -> None:
    print(ssl_object, err)


def on_conn(info: GotConnInfo) -> bool:  # what a hook returns is ignored
    return info.reused


def on_idle_str(reason: str) -> None:  # put_idle_conn gets None when the connection was pooled
    print(reason)


right = asyncpool.ClientTrace(
    got_conn=lambda info: print("reused:", info.reused, info.idle_time + 1.0),
    get_conn=lambda host_port: print(host_port.upper()),
    put_idle_conn=on_idle,
    got_1xx_response=on_1xx,
    tls_handshake_done=on_tls,
    connect_start=lambda network, addr: print(network, addr[0], addr[1] + 1),
    connect_done=lambda network, addr, err: print(network, addr, err),
    dns_done=lambda info: print(info.addrs, info.err),
    wrote_header_field=lambda name, values: print(name, ", ".join(values)),
    wait_for_conn_done=lambda queued, err: print(queued * 1000, err),
    request_retried=lambda info: print(info.attempt, info.reason, info.delay),
    conn_closed=lambda info: print(info.reason.value, info.requests),
    got_first_response_byte=lambda: None,
    proxy_connect_start=lambda info: print(info.proxy, info.target.upper()),
    proxy_connect_done=lambda info: print(info.status_code, info.headers[0][0], info.err),
)
also_right = asyncpool.ClientTrace(got_conn=on_conn).compose(asyncpool.Timings().trace)

wrong_arity = asyncpool.ClientTrace(got_conn=lambda: None)  # wrong
wrong_type = asyncpool.ClientTrace(put_idle_conn=on_idle_str)  # wrong
too_many = asyncpool.ClientTrace(connect_start=lambda network, addr, err: None)  # wrong
"""

WRONG = {n for n, line in enumerate(SNIPPET.splitlines(), 1) if line.endswith("# wrong")}


def write_snippet(tmp_path: Path) -> Path:
    path = tmp_path / "hooks.py"
    path.write_text(SNIPPET, encoding="utf-8")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)


def test_mypy_rejects_exactly_the_wrong_hooks(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    path = write_snippet(tmp_path)
    proc = run(sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path))
    # By file name: mypy's cache (shared with the lint session's) may name an earlier copy.
    errors = re.findall(rf"{re.escape(path.name)}:(\d+): error: (.*)$", proc.stdout, re.MULTILINE)
    assert {int(line) for line, _ in errors} == WRONG, proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert any(
        message.startswith('Argument "got_conn" to "ClientTrace" has incompatible type')
        for _, message in errors
    ), proc.stdout


def test_pyright_strict_rejects_exactly_the_wrong_hooks(tmp_path: Path) -> None:
    binary = shutil.which("basedpyright", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("basedpyright is not installed (it is in the dev dependency group)")
    path = write_snippet(tmp_path)
    config = {"typeCheckingMode": "strict", "reportUnusedCallResult": False}
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config), encoding="utf-8")
    proc = subprocess.run(
        [binary, "--outputjson", "--pythonpath", sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    report = json.loads(proc.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    lines = {d["range"]["start"]["line"] + 1 for d in errors}  # 0-based in the report
    assert lines == WRONG, json.dumps(errors, indent=1)


# -- options: a misspelled or mistyped option is a type error -------------------------------------

OPTIONS_SNIPPET = """\
from __future__ import annotations

import httpx

import asyncpool
from asyncpool.httpx import HTTPXTransport

right = HTTPXTransport(verify=False, limits=httpx.Limits(max_connections=5), retries=2)
also_right = HTTPXTransport(max_conns_per_host=4, idle_conn_timeout=None, http2=False)
client = asyncpool.Client(max_conns=10, read_timeout=5.0, http2=False)
transport = asyncpool.Transport(max_conns=10)

misspelled = HTTPXTransport(max_con_per_host=4)  # wrong
mistyped = HTTPXTransport(max_conns_per_host="4")  # wrong
client_misspelled = asyncpool.Client(max_conn=10)  # wrong
client_mistyped = asyncpool.Client(read_timeout="5")  # wrong
transport_misspelled = asyncpool.Transport(max_conn=10)  # wrong


async def verbs() -> None:
    await client.get("http://a/", timeout=5.0, follow_redirects=False)
    await client.post("http://a/", json={"a": 1}, headers={"X-A": "1"})
    await client.get("http://a/", timout=5.0)  # wrong
    await client.put("http://a/", follow_redirects="no")  # wrong
"""

OPTIONS_WRONG = {
    n for n, line in enumerate(OPTIONS_SNIPPET.splitlines(), 1) if line.endswith("# wrong")
}


def test_mypy_rejects_misspelled_and_mistyped_options(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    path = tmp_path / "options.py"
    path.write_text(OPTIONS_SNIPPET, encoding="utf-8")
    proc = run(sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path))
    errors = re.findall(rf"{re.escape(path.name)}:(\d+): error: (.*)$", proc.stdout, re.MULTILINE)
    assert {int(line) for line, _ in errors} == OPTIONS_WRONG, proc.stdout + proc.stderr
