"""The access log writer: whole lines as bytes, buffered on the event loop and written from it a few
milliseconds later by writes that never wait, so that a slow, full or closed stdout never holds up a request.

A `logging` record per request cost a third of the server's throughput; a writer thread cost less, but at full
load it took ~500 forced context switches a second from the event loop, against ~40 without it (the thread needs
the GIL back after each write, and the busy loop only yields it every switch interval). Here a request appends
its line to a list, and a few milliseconds after the first line of a batch the loop writes the list in chunks of
whole lines of at most PIPE_BUF bytes (atomic on a pipe shared by several workers, so lines never interleave).

Writes never wait for a reader. stdout's file description is shared with stderr and with the other workers, and
making it non-blocking would make their writes fail instead, so: a pipe or a socket is written with RWF_NOWAIT
(that one write does not wait); a terminal, or a pipe on a kernel without RWF_NOWAIT for pipes, through a
non-blocking description of its own; a regular file as it is (the page cache takes the write, nobody is waited
for). When stdout does not keep up, lines wait for the next try, at most `limit` bytes; whole lines beyond are
dropped, counted, and one warning goes to stderr. A closed stdout (EPIPE) drops every line from then on. A stop
waits a bounded time for stdout to take what is left.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import logging
import os
import select
import stat
import time
from collections.abc import Callable
from functools import lru_cache, partial

logger = logging.getLogger("serve")
# Long enough to batch a few dozen lines at full load, short enough that a reader sees a line at once.
FLUSH_DELAY = 0.005
# How long a stop waits for stdout to take the last lines before giving them up.
CLOSE_TIMEOUT = 2.0


@lru_cache(maxsize=2)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


# The last timestamp made, as (milliseconds, text): at full load a few dozen lines share each millisecond's.
_last: tuple[int, str] = (-1, "")


def timestamp(now: float) -> str:
    """`logging`'s default asctime (local time, milliseconds after a comma), formatted once per millisecond (the
    date and time once per second): 0.13 us a line instead of 0.43, a third of the text line's formatting."""
    global _last
    milliseconds = int(now * 1000)
    last = _last
    if last[0] != milliseconds:
        last = _last = (milliseconds, f"{_second(milliseconds // 1000)},{milliseconds % 1000:03d}")
    return last[1]


class AccessLog:
    def __init__(self, limit: int, on_drop: Callable[[int], None], fd: int = 1):
        self.limit = limit
        self._on_drop = on_drop  # told the total of dropped lines each time it grows
        self._fd = fd
        self._target = fd  # what the lines go to: stdout, or a non-blocking description of its own
        self._lines: list[bytes] = []  # written to the log, not yet to stdout, oldest first
        self._size = 0
        self._write: Callable[[bytes], int] | None = None  # how stdout is written, chosen at the first write
        self.dropped = 0
        self._broken = False
        self._warned = False
        self._timer: asyncio.TimerHandle | None = None
        atexit.register(self.close)

    def write(self, line: bytes) -> None:
        """Buffer one whole line (ending in a newline); called on the event loop, never blocks."""
        if self._broken or self._size + len(line) > self.limit:
            self._drop(1)
            return
        self._lines.append(line)
        self._size += len(line)
        if self._timer is None and not self._flush_later():
            self.flush()  # no loop in this thread (a test, atexit): write now; what stdout does not take waits

    def flush(self) -> None:
        """Write what stdout takes now; the rest waits for the next try."""
        self._timer = None
        if not self._lines:
            return
        try:
            self._write_chunks()
        except BlockingIOError:
            self._flush_later()
        except OSError:  # EPIPE, EBADF: nobody will read stdout again
            self._broken = True
            self._drop(len(self._lines))
            self._keep([])

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Write every waiting line, waiting up to `timeout` seconds for stdout to take them; whether it did.
        Lines it did not take are dropped and counted."""
        deadline = time.monotonic() + timeout
        while True:
            self._cancel_timer()
            self.flush()
            self._cancel_timer()
            if not self._lines:
                return not self._broken
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self._target], [], left)[1]:
                break
        logger.warning("access log: stdout took no more lines within %.0f s of the stop; %d lines not written",
                       timeout, len(self._lines))
        self._count(len(self._lines))
        self._keep([])
        return False

    def _flush_later(self) -> bool:
        """A flush FLUSH_DELAY from now on this thread's event loop; False when it has none."""
        try:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
        except RuntimeError:
            return False
        return True

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write_chunks(self) -> None:
        """Chunk by chunk until stdout is full (BlockingIOError), closed (OSError) or has every line."""
        write = self._write or self._choose_write()
        lines = self._lines
        chunks = _chunks(lines)
        for number, (start, chunk) in enumerate(chunks):
            try:
                written = write(chunk)
            except OSError:
                self._keep(lines[start:])
                raise
            if written < len(chunk):  # a socket can take part of a chunk: its tail goes first next time
                after = chunks[number + 1][0] if number + 1 < len(chunks) else len(lines)
                self._keep([chunk[written:], *lines[after:]])
                raise BlockingIOError
        self._keep([])

    def _keep(self, lines: list[bytes]) -> None:
        self._lines, self._size = lines, sum(map(len, lines))

    def _choose_write(self) -> Callable[[bytes], int]:
        regular_file = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._write = partial(os.write, self._fd) if regular_file else self._write_nowait
        return self._write

    def _write_nowait(self, data: bytes) -> int:
        try:
            return os.pwritev(self._fd, [data], -1, os.RWF_NOWAIT)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
        self._write = partial(os.write, self._reopened())  # a terminal, or a kernel older than pipes' RWF_NOWAIT
        return self._write(data)

    def _reopened(self) -> int:
        """A non-blocking description of stdout's file of our own; stdout itself when there is none to be had."""
        try:
            fd = os.open(f"/proc/self/fd/{self._fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            logger.warning("access log: stdout cannot be written without waiting; a stalled stdout stalls requests")
            return self._fd
        self._target = fd
        return fd

    def _drop(self, lines: int) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("access log: %s; dropping whole lines, counted in serve_access_log_dropped_lines_total",
                           "stdout is closed" if self._broken else
                           f"stdout is not keeping up with {self.limit:,} bytes waiting")
        self._count(lines)

    def _count(self, lines: int) -> None:
        self.dropped += lines
        self._on_drop(self.dropped)


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
