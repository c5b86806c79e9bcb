"""What the repository API asked for, models unloaded on purpose, shared by every worker.

A load or unload call reaches one worker. With several workers it writes the intent to a file in the
directory they share (the launcher makes it), replacing the file atomically; every worker looks at
that file on each tick of its watch (one stat) and reconciles when it changed, so all of them serve
the same within one interval.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path


class Intent:
    def __init__(self, path: Path | None = None):
        self._path = path
        self._unloaded: frozenset[str] = frozenset()
        self._seen: tuple[int, int] | None = None

    def unloaded(self) -> frozenset[str]:
        if self._path is not None:
            self._seen = self._stamp()
            try:
                self._unloaded = frozenset(json.loads(self._path.read_text())["unloaded"])
            except FileNotFoundError:
                self._unloaded = frozenset()
        return self._unloaded

    def set_loaded(self, name: str, loaded: bool) -> None:
        if self._path is None:
            self._unloaded = self._unloaded - {name} if loaded else self._unloaded | {name}
            return
        # Under a lock, so that two workers answering two calls at once do not lose one of them.
        with open(self._path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.unloaded()
            unloaded = current - {name} if loaded else current | {name}
            handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".intent.")
            with os.fdopen(handle, "w") as file:
                json.dump({"unloaded": sorted(unloaded)}, file)
            os.replace(temporary, self._path)  # a new inode even when nothing changed: the others reconcile

    def changed(self) -> bool:
        """Whether another worker wrote the file since this one last read it."""
        return self._path is not None and self._stamp() != self._seen

    def _stamp(self) -> tuple[int, int] | None:
        assert self._path is not None
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns
