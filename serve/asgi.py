"""Small raw-ASGI helpers for the hot routes: header lookup, bounded body reading, JSON answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from serve.errors import ServeError

JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a (lower-case) header, without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def check_json_content_type(scope: Scope) -> None:
    """415 unless the body is declared JSON; a missing Content-Type is accepted (curl -d, tritonclient)."""
    content_type = header(scope, b"content-type")
    if content_type is None:
        return
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if media_type != b"application/json" and not media_type.endswith(b"+json"):
        raise ServeError(415, f"unsupported Content-Type {media_type.decode('latin-1')!r}: send application/json")


class BodyReader:
    """Reads request bodies: 413 beyond `limit` bytes, 408 when one takes more than `timeout` seconds.

    Without a deadline a client that trickles its body holds its request (and a `--max-concurrency`
    slot) for as long as it likes. A timer per request would cost 2.5 us (uvloop's call_later) to 7 us
    (asyncio.timeout); instead a request reading its body sits in a dict, and a watchdog waking a few
    times per timeout cancels the overdue ones, which `read` turns into the 408.
    """

    def __init__(self, limit: int, timeout: float):
        self.limit = limit
        self.timeout = timeout
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._overdue: set[asyncio.Task[Any]] = set()

    async def read(self, scope: Scope, receive: Receive) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed the limit."""
        task = asyncio.current_task()
        assert task is not None
        self._reading[task] = time.monotonic()
        try:
            declared = header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise ServeError(413, f"body of {int(declared)} bytes is over the limit of {self.limit}",
                                 limit=self.limit)
            message: Message = await receive()
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                return body
            chunks = [body]
            size = len(body)
            while message.get("more_body", False):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ServeError(400, "client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limit:
                    raise ServeError(413, f"body is over the limit of {self.limit} bytes", limit=self.limit)
                chunks.append(chunk)
            return b"".join(chunks)
        except asyncio.CancelledError:
            if task not in self._overdue:  # cancelled by someone else: the server stopping, say
                raise
            task.uncancel()
            # The rest of a stalled body is not worth waiting for: the connection closes after the answer.
            raise ServeError(408, f"the request body did not arrive within {self.timeout:g} s",
                             headers={"Connection": "close"}) from None
        finally:
            del self._reading[task]
            self._overdue.discard(task)

    async def watch(self) -> None:
        """For the server's lifetime: cancel the reads that have outlived the timeout."""
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            started_before = time.monotonic() - self.timeout
            for task, started in list(self._reading.items()):
                if started < started_before and task not in self._overdue:
                    self._overdue.add(task)
                    task.cancel()


async def send_json(send: Send, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
    """The answer, JSON unless `headers` give another Content-Type (a V2 binary answer's)."""
    length = (b"content-length", str(len(body)).encode())
    if not headers:
        raw = [JSON_CONTENT_TYPE, length]
    else:
        raw = [length, *((key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items())]
        if all(key != b"content-type" for key, _ in raw):
            raw.insert(0, JSON_CONTENT_TYPE)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
