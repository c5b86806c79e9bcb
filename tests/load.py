"""A small HTTP/1.1 keep-alive load generator on asyncio streams that checks every answer.

Raw streams rather than httpx: the client shares two cores with the server, and httpx would spend
several times the server's CPU per request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# (status, lower-case headers, body) -> a description of what is wrong, or None.
Check = Callable[[int, dict[str, str], bytes], "str | None"]


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    body: bytes
    check: Check
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(self.body)}",
                 *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0
    first_socket_error: float = math.inf  # time.monotonic() of the first one

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def summary(self) -> str:
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        rate = self.total / max(self.seconds, 1e-9)
        return (f"{self.total} requests in {self.seconds:.0f} s ({rate:.0f}/s); "
                f"by kind {dict(self.requests)}; statuses {dict(sorted(self.statuses.items()))}; "
                f"5xx {server_errors}; socket errors {sum(self.socket_errors.values())}; "
                f"wrong answers {len(self.wrong)}")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ", 2)[1]), headers, body


async def connection(port: int, deadline: float, next_request: Callable[[], Request], tally: Tally,
                     stop: asyncio.Event) -> None:
    """One keep-alive connection sending requests back to back until the deadline or `stop`."""
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < deadline and not stop.is_set():
        request = next_request()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request.encode())
            status, headers, body = await asyncio.wait_for(read_response(reader), timeout=30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            tally.socket_errors[type(error).__name__] += 1
            tally.first_socket_error = min(tally.first_socket_error, time.monotonic())
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)  # a stopped server refuses at once: do not spin
            continue
        tally.requests[request.kind] += 1
        tally.statuses[status] += 1
        problem = request.check(status, headers, body)
        if problem and len(tally.wrong) < 20:
            tally.wrong.append(f"{request.kind}: {problem}")
        elif problem:
            tally.wrong.append("...")
        if headers.get("connection") == "close":
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def run(port: int, connections: int, seconds: float, next_request: Callable[[], Request],
              stop: asyncio.Event | None = None) -> Tally:
    """`connections` keep-alive connections for `seconds` (or until `stop` is set)."""
    tally = Tally()
    stop = stop or asyncio.Event()
    start = time.monotonic()
    await asyncio.gather(*(connection(port, start + seconds, next_request, tally, stop) for _ in range(connections)))
    tally.seconds = time.monotonic() - start
    return tally
