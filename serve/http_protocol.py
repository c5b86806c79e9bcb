"""The HTTP/1.1 protocol uvicorn runs for us: its httptools protocol, each response written whole, and the
responses finished in one pass of the event loop written together.

uvicorn writes a response's head as soon as the app starts it, then its body: two send() calls, and on loopback
each runs the receiver's side of TCP too. Here a response's head waits for its body. And a write that wakes a
client sleeping in epoll costs the writer the wakeup (an inter-processor interrupt, dear in a VM: 13% of the
server's CPU in perf at 1,000 rows, c=8, spread between responses one request's work apart). So, as Redis writes
its replies before its event loop sleeps, a response waits while other requests are still running in this pass:
it goes at once when every request in flight has its response waiting (a lone request waits for nothing), else
at the start of the loop's next pass, before it polls. The bytes of each connection and their order are unchanged.

Measured side by side (server pinned to one core, `wrk -t1` on the other, `python -m serve` as it starts): the
head with its body, one record at c=64 24.9k -> 27.6k req/s (40.0 -> 36.2 us of CPU a request), c=1 8.9k -> 10.1k;
then the responses of a pass together, a 1,000-row V2 binary request at c=8 9.7k -> 11.4k req/s (102 -> 88 us),
one record at c=64 27.3k -> 27.9k, c=1 9.6k -> 10.0k, p99 lower at all three (4 rounds x 4 s).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

_STATUS_LINE_START = b"HTTP/1.1 "
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # sent before the body is read: it must not wait for a body


class Pass:
    """The connections of one server with writes waiting, written together."""

    def __init__(self, in_flight: set[asyncio.Task[None]]):
        self._in_flight = in_flight  # uvicorn's: a request's task, until a pass after it ends
        self._waiting: list[Connection] = []
        self._flush_scheduled = False

    def wait(self, connection: Connection) -> None:
        self._waiting.append(connection)
        if len(self._waiting) >= len(self._in_flight):  # nobody else is about to answer
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_pass)

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for connection in waiting:
            connection.flush()

    def _next_pass(self) -> None:
        self._flush_scheduled = False
        self.flush()


_PASSES: weakref.WeakKeyDictionary[ServerState, Pass] = weakref.WeakKeyDictionary()


class Connection(asyncio.Transport):
    """A connection's transport, as its requests write to it: a response's head (a write starting with a status
    line) waits for the next write (its body), the close or the end of the response (a HEAD request's has no
    body); what is written then waits for the server's `Pass`."""

    __slots__ = ("_head", "_pass", "_transport", "_waiting")

    def __init__(self, transport: asyncio.Transport, server_pass: Pass):
        super().__init__()
        self._transport = transport
        self._pass = server_pass
        self._head: bytes | None = None
        self._waiting: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            data = self._head + data
            self._head = None
        elif type(data) is bytes and data.startswith(_STATUS_LINE_START) and data != _CONTINUE:  # uvicorn's heads
            self._head = data
            return
        self._wait(bytes(data))

    def end_of_response(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._wait(head)

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        if waiting and not self._transport.is_closing():  # the client has gone: nobody to write to
            self._transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def close(self) -> None:
        self.end_of_response()
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _wait(self, data: bytes) -> None:
        self._waiting.append(data)
        if len(self._waiting) == 1:
            self._pass.wait(self)


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's, with its requests writing through a `Connection`. (No WebSocket upgrades: the server runs with
    `ws="none"`, so no other protocol takes the connection over.)"""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        server_pass = _PASSES.get(self.server_state)
        if server_pass is None:
            server_pass = _PASSES[self.server_state] = Pass(self.server_state.tasks)
        self._pass = server_pass

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The flow control made above keeps the socket's own transport, to pause and resume reading.
        self._connection = self.transport = Connection(transport, self._pass)

    def on_response_complete(self) -> None:
        self._connection.end_of_response()
        super().on_response_complete()
