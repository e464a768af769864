"""What a user meets before the first request: the distribution's name and metadata, install
hints, and the developer bootstrap (dev.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def test_httpx_adapter_without_httpx_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None  # as if httpx were not installed\n"
        "try:\n"
        "    import asyncpool.httpx\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc, sep=': ')\n"
        "import asyncpool  # the package itself never needs httpx\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        'ImportError: asyncpool.httpx needs httpx: pip install "asyncpool-http[httpx]"'
    )


def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncpool_dev_bootstrap", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_py_passes_the_session_and_the_rest_to_nox() -> None:
    dev = load_dev()
    assert dev.nox_args(["tests"]) == ["-s", "tests"]
    assert dev.nox_args(["tests", "--", "-k", "reuse"]) == ["-s", "tests", "--", "-k", "reuse"]
    assert dev.nox_args(["--list"]) == ["--list"]
    assert dev.nox_args([]) == []


def test_dev_py_remakes_its_venv_when_the_python_changes(tmp_path: Path) -> None:
    dev = load_dev()
    env = tmp_path / ".venv-dev"
    assert not dev.is_current(env)  # nothing there yet
    python = dev.venv_python(env)
    python.parent.mkdir(parents=True)
    python.touch()
    stamp = env / dev.STAMP_NAME
    stamp.write_text(json.dumps(dev.wanted_stamp()), encoding="utf-8")
    assert dev.is_current(env)
    stamp.write_text(json.dumps({**dev.wanted_stamp(), "python": "/usr/bin/python3.0"}))
    assert not dev.is_current(env)  # made by another interpreter
    stamp.write_text("not json")
    assert not dev.is_current(env)


def test_readme_set_up_commands_are_dev_py() -> None:
    """The two set-up commands work on any Python (no bare pip install, see dev.py); .ci/run
    greps README for the test command it runs."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\npython3 dev.py demo " in readme
    assert "\npython3 dev.py tests " in readme
    assert "\npython3 dev.py tests\n" in ci
    assert "PIP_BREAK_SYSTEM_PACKAGES" not in ci
