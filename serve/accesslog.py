"""The access log writer: whole lines as bytes, buffered on the event loop and written to stdout by a
thread of its own, so that a slow, full or closed stdout never holds up a request.

A `logging` record per request cost a third of the server's throughput. Here a request appends its line
to a list; a few milliseconds after the first line of a batch the list goes to the writer thread, which
writes it in chunks of whole lines of at most PIPE_BUF bytes (atomic on a pipe shared by several workers,
so lines never interleave). The thread writes with ordinary blocking writes: stdout's file description
is shared with stderr and with the other workers, and making it non-blocking would make their writes
fail instead. When stdout does not keep up, at most `limit` bytes wait; whole lines beyond are dropped,
counted, and one warning goes to stderr. A closed stdout (EPIPE) drops every line from then on.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from functools import lru_cache

logger = logging.getLogger("serve")
# Long enough to batch a few dozen lines at full load, short enough that a reader sees a line at once.
FLUSH_DELAY = 0.005
# How long a stop waits for stdout to take the last lines before giving them up.
CLOSE_TIMEOUT = 2.0


@lru_cache(maxsize=2)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


def timestamp(now: float) -> str:
    """`logging`'s default asctime (local time, milliseconds after a comma), formatted once per second."""
    milliseconds = int(now * 1000)
    return f"{_second(milliseconds // 1000)},{milliseconds % 1000:03d}"


class AccessLog:
    def __init__(self, limit: int, on_drop: Callable[[int], None], fd: int = 1):
        self.limit = limit
        self._on_drop = on_drop  # told the total of dropped lines each time it grows
        self._fd = fd
        self._lines: list[bytes] = []
        self._size = 0
        # Bytes handed to the thread (written by the loop only) and bytes it has written (by the thread only):
        # the difference is what waits, read without a lock since each counter has a single writer.
        self._handed = 0
        self._written = 0
        self._dropped = 0
        self._lost = 0  # lines the thread could not write (a closed stdout), counted by the thread only
        self._broken = False
        self._warned = False
        self._chunks: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def dropped(self) -> int:
        return self._dropped + self._lost

    def write(self, line: bytes) -> None:
        """Buffer one whole line (ending in a newline); called on the event loop, never blocks."""
        if self._broken or self._size + self._handed - self._written + len(line) > self.limit:
            self._drop()
            return
        self._lines.append(line)
        self._size += len(line)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
            except RuntimeError:  # no loop in this thread: nothing would ever flush, so hand it over now
                self.flush()

    def flush(self) -> None:
        """Hand the buffered lines to the writer thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)
        lines, self._lines = self._lines, []
        self._handed += self._size
        self._size = 0
        self._chunks.put(lines)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Flush, then wait up to `timeout` seconds for stdout to take every line; whether it did."""
        self.flush()
        thread = self._thread
        if thread is None:
            return True
        self._chunks.put(None)
        thread.join(timeout)
        atexit.unregister(self.close)
        if not thread.is_alive():
            self._thread = None  # a line written after this starts a new one
            return True
        # Still blocked: it stays the only writer (lines written later queue behind the stop and wait).
        logger.warning("access log: stdout took no more lines within %.0f s of the stop; %d bytes not written",
                       timeout, self._handed - self._written)
        return False

    def _drop(self) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("access log: %s; dropping whole lines, counted in serve_access_log_dropped_lines_total",
                           "stdout is closed" if self._broken else
                           f"stdout is not keeping up with {self.limit:,} bytes waiting")
        self._dropped += 1
        self._on_drop(self.dropped)

    def _run(self) -> None:
        while (lines := self._chunks.get()) is not None:
            if self._broken:
                self._lost += len(lines)
                continue
            for start, chunk in _chunks(lines):
                try:
                    _write_all(self._fd, chunk)
                except OSError:  # EPIPE, EBADF: nobody will read stdout again
                    self._broken = True
                    self._lost += len(lines) - start
                    break
                self._written += len(chunk)


def _chunks(lines: list[bytes]) -> list[tuple[int, bytes]]:
    """The lines joined into chunks of at most PIPE_BUF bytes (a longer line alone), each with the index of its
    first line."""
    chunks: list[tuple[int, bytes]] = []
    first, size = 0, 0
    for index, line in enumerate(lines):
        if size and size + len(line) > select.PIPE_BUF:
            chunks.append((first, b"".join(lines[first:index])))
            first, size = index, 0
        size += len(line)
    chunks.append((first, b"".join(lines[first:])))
    return chunks


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
