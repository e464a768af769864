#!/usr/bin/env python3
"""Run a nox session of this project on any Python 3.10+, with nothing installed first.

    python3 dev.py demo              # = nox -s demo
    python3 dev.py tests             # = nox -s tests
    python3 dev.py tests -- -k reuse # arguments after the session go to nox (after -- to pytest)
    python3 dev.py --list            # arguments starting with "-" go to nox as they are

Standard library only. nox is installed into a virtual environment of the project's own,
``.venv-dev/`` (ignored by git), with that environment's pip, so it works where
``pip install nox`` is refused: a Debian/Ubuntu system Python (PEP 668,
"externally-managed-environment"), as well as on pyenv, a venv or CI. The environment is made
again when the Python that runs this script or the nox requirement changes. nox then makes its
own environments in ``.nox/``, as ``nox -s ...`` does for those who have nox already.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv-dev"
NOX = "nox>=2025.2.9"  # nox.project.dependency_groups (PEP 735)
STAMP_NAME = "asyncpool-dev.json"


def nox_args(argv: Sequence[str]) -> list[str]:
    """``dev.py SESSION ARGS...`` is ``nox -s SESSION ARGS...``; anything else goes to nox."""
    if argv and not argv[0].startswith("-"):
        return ["-s", argv[0], *argv[1:]]
    return list(argv)


def venv_python(env: Path) -> Path:
    if sys.platform == "win32":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def wanted_stamp() -> dict[str, str]:
    """What the environment was made from: when any of it changes, it is made again."""
    return {
        "python": os.path.realpath(sys.executable),
        "version": sys.version,
        "requirement": NOX,
    }


def is_current(env: Path) -> bool:
    try:
        stamp = json.loads((env / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(stamp == wanted_stamp() and venv_python(env).exists())


def make_env(env: Path) -> None:
    print(f"dev.py: making {env.name}/ with {sys.executable} and installing {NOX}", flush=True)
    if env.exists():
        shutil.rmtree(env)
    try:
        venv.EnvBuilder(with_pip=True).create(env)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(env, ignore_errors=True)
        sys.exit(
            f"dev.py: cannot make a virtual environment with pip ({exc}). On Debian/Ubuntu: "
            f"apt-get install python3-venv"
        )
    python = str(venv_python(env))
    env_vars = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([python, "-m", "pip", "install", "--quiet", NOX], check=True, env=env_vars)
    (env / STAMP_NAME).write_text(json.dumps(wanted_stamp()), encoding="utf-8")


def main(argv: Sequence[str]) -> int:
    if not is_current(VENV):
        try:
            make_env(VENV)
        except subprocess.CalledProcessError as exc:
            print(f"dev.py: installing nox failed ({exc})", file=sys.stderr)
            return 1
    command = [str(venv_python(VENV)), "-m", "nox", *nox_args(argv)]
    # nox reuses the sessions' environments in .nox/ (reuse_venv in noxfile.py); this makes it
    # remake one that another Python made.
    os.environ.setdefault("NOX_ENABLE_STALENESS_CHECK", "1")
    os.chdir(ROOT)
    if sys.platform == "win32":  # no exec that replaces the process there
        return subprocess.run(command, check=False).returncode
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
