"""Check an installed asyncpool-http wheel, from the venv it was installed into (not the source
tree): run by ``nox -s package`` as ``python .ci/check_dist.py SDIST``."""

from __future__ import annotations

import sys
import sysconfig
import tarfile
from importlib import metadata
from pathlib import Path

EXTRAS = {"trio", "httpx", "speedups", "cli", "socks", "otel", "brotli", "zstd"}


def main(sdist: str) -> None:
    import asyncpool

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(asyncpool.__file__).resolve()
    assert site in where.parents, f"asyncpool imported from {where}, not the installed wheel"
    assert (where.parent / "py.typed").exists(), "py.typed is missing"

    meta = metadata.metadata("asyncpool-http")
    assert meta["Name"] == "asyncpool-http", meta["Name"]
    assert meta["Version"] == asyncpool.__version__, (meta["Version"], asyncpool.__version__)
    assert meta["License-Expression"] == "MIT", meta["License-Expression"]
    assert meta.get_all("License-File") == ["LICENSE"], meta.get_all("License-File")
    extras = set(meta.get_all("Provides-Extra") or [])
    assert extras == EXTRAS, f"extras {sorted(extras)}, expected {sorted(EXTRAS)} (no dev)"
    requires = " ".join(meta.get_all("Requires-Dist") or [])
    for tool in ("pytest", "ruff", "mypy", "nox", "aiohttp"):
        assert tool not in requires, f"{tool} in the wheel's Requires-Dist: {requires}"
    files = {str(f) for f in metadata.files("asyncpool-http") or []}
    assert any(f.endswith("licenses/LICENSE") for f in files), "LICENSE not in the wheel"
    assert "asyncpool/py.typed" in files

    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "ARCHITECTURE.md", "pyproject.toml"):
        assert needed in names, f"{needed} missing from the sdist {sdist}"

    print(f"ok: asyncpool-http {meta['Version']} (MIT), extras {sorted(extras)}, from {where}")


if __name__ == "__main__":
    main(sys.argv[1])
