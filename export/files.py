"""Write the export's files so that a reader never sees a half-written one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from export.errors import ExportError


def write_versions(store: Path, versions: dict[tuple[str, int], dict[str, bytes]]) -> None:
    """Create each `store/<name>/<version>/`, refusing one that exists, and write its files into it."""
    for (name, version), files in versions.items():
        directory = store / name / str(version)
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir()  # fails if another export took this version meanwhile
        except FileExistsError:
            raise ExportError(f"{directory} exists: a version is never overwritten") from None
        except OSError as error:
            raise ExportError(f"cannot write to {store}: {error}") from error
        try:
            _write_all(directory, files)
        except ExportError:
            shutil.rmtree(directory, ignore_errors=True)
            raise


def _write_all(directory: Path, files: dict[str, bytes]) -> None:
    """Stage every file as a temporary file in `directory`, then rename each onto its name (atomic),
    in the order given."""
    staged: list[tuple[str, Path]] = []
    try:
        for name, content in files.items():
            handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            staged.append((temporary, directory / name))
            os.fchmod(handle, 0o644)  # mkstemp's 0600 would make committed models unreadable to others
            with os.fdopen(handle, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
        for temporary, target in staged:
            os.replace(temporary, target)
    except OSError as error:
        raise ExportError(f"cannot write to {directory}: {error}") from error
    finally:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
