"""Launch a private squid (an HTTP forward proxy) on 127.0.0.1 for integration tests and benchmarks.

    from tests.squid import run_squid, require_squid

    require_squid()                        # skip (or fail under ASYNCPOOL_REQUIRE_INTEGRATION=1)
    with run_squid() as proxy:
        proxy.url                          # "http://127.0.0.1:PORT"
    with run_squid(auth=("user", "pass")) as proxy:
        proxy.url                          # "http://user:pass@127.0.0.1:PORT"
        proxy.url_with("user", "wrong")    # other credentials, for a 407
        proxy.access_log()                 # what squid logged so far ("TCP_TUNNEL/200 ... CONNECT")

The generated squid.conf is minimal: one `http_port` on a free loopback port; absolute-form
requests to any origin and CONNECT to any port are allowed (squid's sample config limits CONNECT
to 443: here `SSL_ports` is 1-65535); nothing is cached (`cache deny all`, no cache_dir); no DNS
lookups are needed for loopback IP literals (`localhost` comes from /etc/hosts); no ICP/HTCP/SNMP,
no pinger; `shutdown_lifetime 0` so that SIGTERM stops it at once. With `auth=(user, password)`
every request needs Basic proxy credentials (`basic_ncsa_auth` on an htpasswd file with an
$apr1$ hash made here), otherwise a 407. Config, pid, logs and the password file live in a fresh
temporary directory that is removed on exit.

squid runs in the foreground (`-N`: one process, no kids) as a child in its own session. When
started as root it drops privileges to `cache_effective_user` (the `proxy` user Debian's package
makes, else `nobody`): the temporary directory is handed to that user. Start-up is waited for by
probing the port until squid itself answers (a `Server: squid` response head), never by sleeping
a fixed time; a lost race for the port is retried on another.

This module needs nothing but the standard library (pytest only inside `require_squid`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests.nginx import REQUIRE_ENV, free_port

__all__ = [
    "Squid",
    "SquidError",
    "apr1_hash",
    "require_squid",
    "run_squid",
    "squid_binary",
]

_FALLBACK_PATHS = ("/usr/sbin/squid", "/usr/local/sbin/squid", "/usr/local/squid/sbin/squid")
_HELPER_DIRS = ("/usr/lib/squid", "/usr/lib64/squid", "/usr/libexec/squid", "/usr/local/libexec")


class SquidError(RuntimeError):
    """squid could not be started."""


def squid_binary() -> str | None:
    """The squid executable: on PATH, else a usual sbin location."""
    found = shutil.which("squid")
    if found:
        return found
    for candidate in _FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ncsa_auth_helper() -> str | None:
    """squid's `basic_ncsa_auth` helper (htpasswd files)."""
    for directory in _HELPER_DIRS:
        candidate = os.path.join(directory, "basic_ncsa_auth")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_squid() -> str:
    """Return the squid binary, or skip the test; fail instead when ASYNCPOOL_REQUIRE_INTEGRATION=1."""
    import pytest  # only needed by tests

    binary = squid_binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"squid not installed, and {REQUIRE_ENV}=1 requires integration tests")
        pytest.skip("squid not installed (apt-get install squid)")
    return binary


# ---------------------------------------------------------------------- htpasswd

_APR1_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def apr1_hash(password: str, salt: str | None = None) -> str:
    """Apache's $apr1$ (MD5-crypt) password hash, as `htpasswd -m` / `openssl passwd -apr1` make
    it; squid's basic_ncsa_auth checks it."""
    if salt is None:
        salt = "".join(secrets.choice(_APR1_ALPHABET) for _ in range(8))
    salt = salt[:8]
    magic = b"$apr1$"
    pw, sb = password.encode(), salt.encode()
    alt = hashlib.md5(pw + sb + pw).digest()
    ctx = pw + magic + sb
    n = len(pw)
    while n > 0:
        ctx += alt[: min(16, n)]
        n -= 16
    n = len(pw)
    while n:
        ctx += b"\0" if n & 1 else pw[:1]
        n >>= 1
    final = hashlib.md5(ctx).digest()
    for i in range(1000):
        step = pw if i & 1 else final
        if i % 3:
            step += sb
        if i % 7:
            step += pw
        step += final if i & 1 else pw
        final = hashlib.md5(step).digest()

    def to64(value: int, count: int) -> str:
        out = ""
        for _ in range(count):
            out += _APR1_ALPHABET[value & 0x3F]
            value >>= 6
        return out

    f = final
    encoded = (
        to64((f[0] << 16) | (f[6] << 8) | f[12], 4)
        + to64((f[1] << 16) | (f[7] << 8) | f[13], 4)
        + to64((f[2] << 16) | (f[8] << 8) | f[14], 4)
        + to64((f[3] << 16) | (f[9] << 8) | f[15], 4)
        + to64((f[4] << 16) | (f[10] << 8) | f[5], 4)
        + to64(f[11], 2)
    )
    return f"$apr1${salt}${encoded}"


# ---------------------------------------------------------------------- the server


def _max_filedescriptors() -> int:
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    limit = hard if hard != resource.RLIM_INFINITY else 65536
    return max(1024, min(65536, limit))


def _unprivileged_user() -> tuple[str, int, int] | None:
    """The user a root squid drops to: (name, uid, gid); None when not root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in ("proxy", "squid", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, entry.pw_uid, entry.pw_gid
    raise SquidError("running as root, and no 'proxy', 'squid' or 'nobody' user to drop to")


class Squid:
    """A private squid: use as a context manager (or `run_squid(...)`), or `start()` / `stop()`.

    - `auth`: (user, password) for Basic proxy authentication; None for an open proxy.
    - `access_log`: log every request to `access.log` in the temporary directory (the default:
      tests read it to see that a request really went through squid); off for benchmarks.
    - `extra_config`: raw squid.conf lines, appended before the `http_access` rules.
    """

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        access_log: bool = True,
        extra_config: str = "",
        binary: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.binary = binary or squid_binary()
        if self.binary is None:
            raise SquidError("squid not installed")
        self.auth = auth
        self.log_access = access_log
        self.extra_config = extra_config
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self._log_start = 0  # access_log() shows what came after (forget_log)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """The proxy URL, with the credentials when `auth` is set."""
        if self.auth is None:
            return f"http://{self.host}:{self.port}"
        return self.url_with(*self.auth)

    @property
    def bare_url(self) -> str:
        """The proxy URL without credentials."""
        return f"http://{self.host}:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        from urllib.parse import quote

        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def access_log(self) -> str:
        """What squid logged so far, one line per transaction (squid's native format: time,
        elapsed, client, code/status, bytes, method, URL, user, hierarchy/peer, type)."""
        if self.root is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.root / "access.log").read_text(errors="replace")[self._log_start :]
        return ""

    def forget_log(self) -> None:
        """Make ``access_log()`` start from now: a squid shared by several tests."""
        self._log_start = 0
        self._log_start = len(self.access_log())

    def error_log(self) -> str:
        """squid's cache.log and stderr so far."""
        if self.root is None:
            return ""
        parts = []
        for name in ("cache.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.root / name).read_text(errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------------ config

    def _config(self, root: Path, user: str | None) -> str:
        lines = [
            f"http_port {self.host}:{self.port}",
            f"pid_filename {root / 'squid.pid'}",
            f"cache_log {root / 'cache.log'}",
            (f"access_log stdio:{root / 'access.log'}" if self.log_access else "access_log none"),
            "cache_store_log none",
            f"coredump_dir {root}",
            "netdb_filename none",
            "logfile_rotate 0",
            "visible_hostname asyncpool-test-squid",
            "shutdown_lifetime 0 seconds",
            f"max_filedescriptors {_max_filedescriptors()}",
            "pinger_enable off",
            "icp_port 0",
            "htcp_port 0",
            "snmp_port 0",
            # No caching at all: every request goes to the origin.
            "cache deny all",
            "cache_mem 0 MB",
            "memory_cache_shared off",
            # Keep-alive with clients and origins (the defaults, stated).
            "client_persistent_connections on",
            "server_persistent_connections on",
            # No DNS for loopback: IP literals need none, `localhost` is in /etc/hosts.
            "hosts_file /etc/hosts",
            "acl SSL_ports port 1-65535",
            "acl Safe_ports port 1-65535",
            "acl CONNECT method CONNECT",
            "http_access deny !Safe_ports",
            "http_access deny CONNECT !SSL_ports",
        ]
        if user is not None:
            lines.append(f"cache_effective_user {user}")
        if self.extra_config:
            lines += self.extra_config.splitlines()
        if self.auth is not None:
            helper = ncsa_auth_helper()
            if helper is None:
                raise SquidError("squid's basic_ncsa_auth helper not found")
            lines += [
                f"auth_param basic program {helper} {root / 'passwd'}",
                "auth_param basic children 4 startup=1 idle=1",
                "auth_param basic realm asyncpool-test",
                "auth_param basic credentialsttl 1 hour",
                "acl authenticated proxy_auth REQUIRED",
                "http_access allow authenticated",
                "http_access deny all",
            ]
        else:
            lines.append("http_access allow all")
        return "\n".join(line for line in lines if line) + "\n"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Squid:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="asyncpool-squid-")
        root = self.root = Path(self._tmp.name)
        try:
            drop = _unprivileged_user()
            if self.auth is not None:
                user, password = self.auth
                if ":" in user:
                    raise ValueError("a Basic user name cannot contain ':'")
                (root / "passwd").write_text(f"{user}:{apr1_hash(password)}\n")
            if drop is not None:
                # squid (and its auth helper) run as `drop` after binding the port: they must
                # write the logs and pid file, and read the password file.
                _, uid, gid = drop
                os.chown(root, uid, gid)
                for path in root.iterdir():
                    os.chown(path, uid, gid)
            last_error = ""
            for _attempt in range(8):
                self.port = free_port(self.host)
                if self._launch(root, drop[0] if drop else None):
                    return self
                last_error = self.error_log()
                if "Address already in use" not in last_error:
                    break
            raise SquidError(f"squid failed to start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, root: Path, user: str | None) -> bool:
        """Start squid once; True when it answers, False when it exited (e.g. a port race)."""
        assert self.binary is not None
        conf = root / "squid.conf"
        conf.write_text(self._config(root, user))
        for name in ("cache.log", "stderr.log", "squid.pid"):
            with contextlib.suppress(FileNotFoundError):
                (root / name).unlink()
        # -N: no daemon, no kid processes; -d 1: startup errors go to stderr too.
        cmd = [self.binary, "-N", "-d", "1", "-f", str(conf)]
        with open(root / "stderr.log", "wb") as err:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # its own process group: squid + its auth helpers
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if self._answers():
                return True
            time.sleep(0.02)
        log = self.error_log()
        self.stop()
        raise SquidError(f"squid did not answer within {self.startup_timeout}s:\n{log}")

    def _answers(self) -> bool:
        """A request squid must refuse (no absolute URL) gets squid's own error page: then the
        port is ours, and squid is past its start-up."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    head += chunk
        except OSError:
            return False
        return head.startswith(b"HTTP/1.") and b"\nserver: squid" in head.lower()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: shutdown, at once with shutdown_lifetime 0
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # squid and its auth helpers share the process group start_new_session made;
                # squid is not reaped yet, so the group id is still ours.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()

    def __enter__(self) -> Squid:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def run_squid(
    *,
    auth: tuple[str, str] | None = None,
    access_log: bool = True,
    extra_config: str = "",
) -> Iterator[Squid]:
    """Run a private squid for the duration of the block; see `Squid`."""
    with Squid(auth=auth, access_log=access_log, extra_config=extra_config) as proxy:
        yield proxy
