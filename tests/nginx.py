"""Launch a private nginx on 127.0.0.1 for integration tests and benchmarks.

    from tests.nginx import run_nginx, require_nginx

    require_nginx()                        # skip (or fail under ASYNCPOOL_REQUIRE_INTEGRATION=1)
    with run_nginx() as server:
        server.url("/small")               # http://127.0.0.1:PORT/small -> b"hello world!"
        server.url("/1mb.bin")             # 1 MiB static file, content == ONE_MIB_BODY

Everything nginx writes (config, pid, error log, temp dirs, the static files) lives in a fresh
temporary directory that is removed on exit. nginx runs in the foreground (`-g "daemon off;"`) as a
child process in its own session, with one worker, keep-alive without practical limits and no access
log. With `http2_tls=TLSFiles(cert, key)` a second server listens with TLS, offering h2 and
http/1.1 by ALPN, on `server.tls_port` (`server.tls_url(path)`). `server.reload()` is
`nginx -s reload` (SIGHUP to the master), for tests of a server that restarts its workers.

This module needs nothing but the standard library (pytest only inside `require_nginx`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeAlias

__all__ = [
    "ONE_MIB_BODY",
    "SMALL_BODY",
    "Nginx",
    "NginxError",
    "NginxServer",
    "TLSFiles",
    "free_port",
    "nginx_binary",
    "nginx_version",
    "require_nginx",
    "run_nginx",
    "tls_files_from_trustme",
]

StrPath: TypeAlias = "str | os.PathLike[str]"

SMALL_BODY = b"hello world!"  # served at /small (12 bytes)
ONE_MIB_BODY = bytes(range(256)) * 4096  # served at /1mb.bin (1 MiB, deterministic)

REQUIRE_ENV = "ASYNCPOOL_REQUIRE_INTEGRATION"
_FALLBACK_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class NginxError(RuntimeError):
    """nginx could not be started."""


class TLSFiles(NamedTuple):
    """PEM files for the TLS server: a certificate chain and its private key (may be one file)."""

    certfile: StrPath
    keyfile: StrPath


def nginx_binary() -> str | None:
    """The nginx executable: on PATH, else a usual sbin location (often not on a user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in _FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_version(binary: str | None = None) -> tuple[int, ...]:
    """nginx's version, e.g. (1, 22, 1); (0,) when it cannot be read."""
    binary = binary or nginx_binary()
    if binary is None:
        return (0,)
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return (0,)
    m = re.search(r"nginx/(\d+(?:\.\d+)*)", out.stderr + out.stdout)
    return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)


def require_nginx() -> str:
    """Return the nginx binary, or skip the test; fail instead when ASYNCPOOL_REQUIRE_INTEGRATION=1."""
    import pytest  # only needed by tests

    binary = nginx_binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"nginx not installed, and {REQUIRE_ENV}=1 requires integration tests")
        pytest.skip("nginx not installed")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close). Callers must retry on a race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tls_files_from_trustme(cert: Any, directory: StrPath) -> TLSFiles:
    """Write a `trustme.LeafCert` (chain + key) into `directory` as files nginx can read."""
    directory = Path(directory)
    certfile = directory / "server-chain.pem"
    keyfile = directory / "server-key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    keyfile.write_bytes(cert.private_key_pem.bytes())
    return TLSFiles(certfile, keyfile)


def _worker_connections() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(256, min(4096, soft - 64))


def _q(path: StrPath) -> str:
    """Quote a path for nginx.conf."""
    s = os.fspath(path)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Nginx:
    """A private nginx: use as a context manager (or `run_nginx(...)`), or `start()` / `stop()`.

    - `http2_tls`: also listen with TLS on `tls_port`, ALPN h2 + http/1.1 (`TLSFiles` or a tuple).
    - `extra_config`: raw directives inserted into every `server { }` block (e.g. more locations).
    - `cpu`: pin the worker to this CPU (`worker_cpu_affinity`), for benchmarks.
    """

    def __init__(
        self,
        *,
        http2_tls: TLSFiles | tuple[StrPath, StrPath] | None = None,
        extra_config: str = "",
        cpu: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise NginxError("nginx not installed")
        if (
            cpu is not None
            and hasattr(os, "sched_getaffinity")
            and cpu not in os.sched_getaffinity(0)
        ):
            raise ValueError(f"cpu {cpu} is not available to this process")
        self.http2_tls = TLSFiles(*http2_tls) if http2_tls is not None else None
        self.extra_config = extra_config
        self.cpu = cpu
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.tls_port: int | None = None
        self.root: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ addresses

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def tls_url(self, path: str = "/") -> str:
        if self.tls_port is None:
            raise RuntimeError("started without http2_tls")
        return f"https://{self.host}:{self.tls_port}{path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def error_log(self) -> str:
        """What nginx wrote to its error log and stderr so far."""
        if self.root is None:
            return ""
        parts = []
        for name in ("error.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.root / name).read_text(errors="replace"))
        return "".join(parts)

    # ------------------------------------------------------------------ config

    def _config(self, root: Path) -> str:
        assert self.binary is not None
        version = nginx_version(self.binary)
        lines = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # A root master would drop its worker to `nobody`, which cannot use our private dir.
            lines.append("user root;")
        lines += [
            "worker_processes 1;",
            f"pid {_q(root / 'nginx.pid')};",
            f"error_log {_q(root / 'error.log')} warn;",
        ]
        if self.cpu is not None:
            lines.append(f"worker_cpu_affinity {'1' + '0' * self.cpu};")
        lines += [
            f"events {{ worker_connections {_worker_connections()}; }}",
            "http {",
            "    access_log off;",
            "    default_type text/plain;",
            "    sendfile on;",
            "    tcp_nopush on;",
            "    tcp_nodelay on;",
            "    server_tokens off;",
            "    keepalive_requests 100000;",
            "    keepalive_timeout 65;",
        ]
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            lines.append(f"    {kind}_temp_path {_q(root / 'temp' / kind)};")

        body = SMALL_BODY.decode()
        locations = [
            f"        root {_q(root / 'www')};",
            f'        location = /small {{ return 200 "{body}"; }}',
            "        location = /1mb.bin { default_type application/octet-stream; }",
        ]
        if self.extra_config:
            locations += ["        " + line for line in self.extra_config.splitlines()]

        lines += ["    server {", f"        listen {self.host}:{self.port};", *locations, "    }"]
        if self.http2_tls is not None:
            if version >= (1, 25, 1):
                listen = [f"        listen {self.host}:{self.tls_port} ssl;", "        http2 on;"]
            else:
                listen = [f"        listen {self.host}:{self.tls_port} ssl http2;"]
            lines += [
                "    server {",
                *listen,
                f"        ssl_certificate {_q(self.http2_tls.certfile)};",
                f"        ssl_certificate_key {_q(self.http2_tls.keyfile)};",
                "        ssl_protocols TLSv1.2 TLSv1.3;",
                *locations,
                "    }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Nginx:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="asyncpool-nginx-")
        root = self.root = Path(self._tmp.name)
        (root / "www").mkdir()
        (root / "temp").mkdir()
        (root / "www" / "1mb.bin").write_bytes(ONE_MIB_BODY)
        try:
            last_error = ""
            for _attempt in range(8):
                self.port = free_port(self.host)
                self.tls_port = free_port(self.host) if self.http2_tls is not None else None
                if self._launch(root):
                    return self
                last_error = self.error_log()
                if "Address already in use" not in last_error:
                    break
            raise NginxError(f"nginx failed to start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, root: Path) -> bool:
        """Start nginx once; True when it listens, False when it exited (e.g. a port race)."""
        assert self.binary is not None
        conf = root / "nginx.conf"
        conf.write_text(self._config(root))
        for name in ("error.log", "stderr.log", "nginx.pid"):
            with contextlib.suppress(FileNotFoundError):
                (root / name).unlink()
        cmd = [self.binary, "-p", f"{root}/", "-c", str(conf), "-g", "daemon off;"]
        if nginx_version(self.binary) >= (1, 19, 5):
            cmd[1:1] = ["-e", str(root / "error.log")]  # before the config is read, too
        with open(root / "stderr.log", "wb") as err:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # its own process group: we can stop master + worker
            )
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            # The pid file is written after the listening sockets are bound, so a successful
            # connect then reaches our nginx and not whoever might have raced us for the port.
            if (root / "nginx.pid").exists() and all(self._accepts(p) for p in ports):
                return True
            time.sleep(0.02)
        log = self.error_log()
        self.stop()
        raise NginxError(f"nginx did not listen within {self.startup_timeout}s:\n{log}")

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def reload(self) -> None:
        """`nginx -s reload`: SIGHUP to the master, which re-reads the config, starts a new worker
        and shuts the old one down gracefully (its idle keep-alive connections closed at once,
        HTTP/2 connections sent GOAWAY, requests in flight finished). Returns at once."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("nginx is not running")
        self._proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # Master and worker share the process group that start_new_session made;
                # the master is not reaped yet, so the group id is still ours.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


NginxServer = Nginx


@contextlib.contextmanager
def run_nginx(
    *,
    http2_tls: TLSFiles | tuple[StrPath, StrPath] | None = None,
    extra_config: str = "",
    cpu: int | None = None,
) -> Iterator[Nginx]:
    """Run a private nginx for the duration of the block; see `Nginx`."""
    with Nginx(http2_tls=http2_tls, extra_config=extra_config, cpu=cpu) as server:
        yield server
