"""What a user meets before the first request: the distribution's name and metadata, install
hints, and the developer bootstrap (dev.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
