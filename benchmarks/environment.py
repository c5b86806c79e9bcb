"""The context every result needs: machine, load, versions, commit, date."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.paths import BENCH_PYTHON, ROOT
from benchmarks.targets import PEER_PYTHONS

MAIN_PACKAGES = ("numpy", "onnxruntime", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "scikit-learn",
                 "torch", "onnx", "skl2onnx")
BENCH_PACKAGES = ("mlserver", "mlserver-sklearn", "fastapi", "pydantic", "pandas", "scikit-learn", "starlette",
                  "uvicorn", "uvloop", "numpy")


def describe() -> dict[str, Any]:
    changed = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).splitlines()
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "wrk": _output(["wrk", "--version"]).split("Copyright")[0].strip(),
        "h2load": _output(["h2load", "--version"]),
        "commit": _output(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        # The working tree is what ran: name the files it changes and fingerprint the diff.
        "uncommitted_changes": bool(changed),
        "changed_files": changed,
        "diff_sha256": hashlib.sha256(_output(["git", "-C", str(ROOT), "diff", "HEAD"]).encode()).hexdigest(),
        "packages": {name: _version(name) for name in MAIN_PACKAGES},
        "bench_packages": _bench_versions(),
        "venv_mib": _venv_sizes(),
        "runtime_mib": _runtime_mib(),
        "load_average_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _bench_versions() -> dict[str, str] | None:
    if not BENCH_PYTHON.exists():
        return None
    script = ("import json, importlib.metadata as m; "
              f"print(json.dumps({{n: m.version(n) for n in {list(BENCH_PACKAGES)!r}}}))")
    return dict(json.loads(_output([str(BENCH_PYTHON), "-c", script]) or "{}"))


def _venv_sizes() -> dict[str, float]:
    """Installed size of each peer's venv (and ours, for comparison), MiB on disk."""
    venvs = {ROOT / ".venv", *(python.parent.parent for python in PEER_PYTHONS.values())}
    return {venv.name: int(_output(["du", "-skH", str(venv)]).split()[0]) / 1024 for venv in sorted(venvs)
            if venv.exists()}


def _runtime_mib() -> float:
    """On disk, what `requirements.txt` installs (our runtime, as the image ships it), from this venv's install
    records: the venv itself also holds the export, test and lint tools."""
    pinned = [line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line]
    paths = {Path(str(file.locate())) for name in pinned for file in metadata.distribution(name).files or []}
    return sum(path.stat().st_blocks * 512 for path in paths if path.is_file()) / 2**20


def _output(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return (completed.stdout or completed.stderr).strip()
