"""Launch a private SOCKS5 server (microsocks) on 127.0.0.1 for integration tests and benchmarks.

    from tests.socks5 import run_socks5, require_socks5

    require_socks5()                       # skip (or fail under ASYNCPOOL_REQUIRE_INTEGRATION=1)
    with run_socks5() as proxy:
        proxy.url()                        # "socks5://127.0.0.1:PORT"
        proxy.url("socks5h")               # "socks5h://127.0.0.1:PORT": the proxy resolves names
    with run_socks5(auth=("user", "pass")) as proxy:
        proxy.url()                        # "socks5://user:pass@127.0.0.1:PORT"

microsocks (`apt-get install microsocks`) is one small process: `-i 127.0.0.1 -p PORT`, and with
`auth` `-u USER -P PASSWORD` (RFC 1929 username/password, required of every connection). Its `-1`
auth-once mode (an address that authenticated once may connect without credentials afterwards) is
never used: every connection must authenticate. It resolves domain names (ATYP 3, what socks5h
sends) with the system resolver and connects to the first address.

Start-up is waited for by probing the port with a SOCKS5 greeting until microsocks answers with
the method it selects (0x00 without auth, 0x02 with), never by sleeping; a lost race for the
port (microsocks exits when it cannot bind) is retried on another. SIGTERM stops it.

This module needs nothing but the standard library (pytest only inside `require_socks5`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from tests.nginx import REQUIRE_ENV, free_port

__all__ = [
    "Socks5",
    "Socks5Error",
    "microsocks_binary",
    "require_socks5",
    "run_socks5",
]

_FALLBACK_PATHS = ("/usr/bin/microsocks", "/usr/local/bin/microsocks", "/usr/sbin/microsocks")


class Socks5Error(RuntimeError):
    """microsocks could not be started."""


def microsocks_binary() -> str | None:
    found = shutil.which("microsocks")
    if found:
        return found
    for candidate in _FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_socks5() -> str:
    """Return the microsocks binary, or skip the test; fail instead when
    ASYNCPOOL_REQUIRE_INTEGRATION=1."""
    import pytest  # only needed by tests

    binary = microsocks_binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"microsocks not installed, and {REQUIRE_ENV}=1 requires integration tests")
        pytest.skip("microsocks not installed (apt-get install microsocks)")
    return binary


class Socks5:
    """A private microsocks: use as a context manager (or `run_socks5(...)`), or `start()` /
    `stop()`. `auth=(user, password)` requires RFC 1929 credentials on every connection."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = binary or microsocks_binary()
        if self.binary is None:
            raise Socks5Error("microsocks not installed")
        self.auth = auth
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ addresses

    def url(self, scheme: str = "socks5") -> str:
        """The proxy URL (`socks5` or `socks5h`), with the credentials when `auth` is set."""
        if self.auth is None:
            return f"{scheme}://{self.host}:{self.port}"
        return self.url_with(*self.auth, scheme=scheme)

    def url_with(self, user: str, password: str, *, scheme: str = "socks5") -> str:
        return (
            f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def error_log(self) -> str:
        """What microsocks wrote to stdout/stderr so far."""
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            return self._log.read_text(errors="replace")
        return ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Socks5:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="asyncpool-socks5-")
        self._log = Path(self._tmp.name) / "microsocks.log"
        try:
            last_error = ""
            for _attempt in range(8):
                self.port = free_port(self.host)
                if self._launch():
                    return self
                last_error = self.error_log()
            raise Socks5Error(f"microsocks failed to start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        """Start microsocks once; True when it answers, False when it exited (a port race)."""
        assert self.binary is not None and self._log is not None
        cmd = [self.binary, "-i", self.host, "-p", str(self.port)]
        if self.auth is not None:
            cmd += ["-u", self.auth[0], "-P", self.auth[1]]  # never -1 (auth once per address)
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if self._answers():
                return True
            time.sleep(0.02)
        log_text = self.error_log()
        self.stop()
        raise Socks5Error(f"microsocks did not answer within {self.startup_timeout}s:\n{log_text}")

    def _answers(self) -> bool:
        """A SOCKS5 greeting offering "no auth" and "username/password": microsocks picks the one
        it is configured for."""
        want = b"\x05\x02" if self.auth is not None else b"\x05\x00"
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(b"\x05\x02\x00\x02")
                reply = b""
                while len(reply) < 2:
                    chunk = sock.recv(2 - len(reply))
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return reply == want

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()
        self._log = None

    def __enter__(self) -> Socks5:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def run_socks5(*, auth: tuple[str, str] | None = None) -> Iterator[Socks5]:
    """Run a private microsocks for the duration of the block; see `Socks5`."""
    with Socks5(auth=auth) as proxy:
        yield proxy
