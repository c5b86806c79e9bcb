"""The HTTP/1.1 protocol uvicorn runs for us: its httptools protocol, each response written whole, and the
responses finished in one pass of the event loop written together.

uvicorn writes a response's head as soon as the app starts it, then its body: two send() calls, and on loopback
each runs the receiver's side of TCP too. Here a response's head waits for its body. And a write that wakes a
client sleeping in epoll costs the writer the wakeup (an inter-processor interrupt, dear in a VM: 13% of the
server's CPU in perf at 1,000 rows, c=8, spread between responses one request's work apart). So, as Redis writes
its replies before its event loop sleeps, a response waits while other requests are still running in this pass:
it goes at once when every request in flight has its response waiting (a lone request waits for nothing), else
at the start of the loop's next pass, before it polls. The bytes of each connection and their order are unchanged.

uvicorn also arms a timer at the end of every response, to close the connection if it stays idle for the
keep-alive timeout, and cancels it when the next request comes: 1.7 us of a request's ~35 at c=64 (uvloop's
call_later and cancel). Here a connection notes when it fell idle, and one timer per server closes those idle for
longer than the timeout, looking every quarter of it: an idle connection closes after 1 to 1.25 times the timeout.

Measured side by side (server pinned to one core, `wrk -t1` on the other, `python -m serve` as it starts): the
head with its body, one record at c=64 24.9k -> 27.6k req/s (40.0 -> 36.2 us of CPU a request), c=1 8.9k -> 10.1k;
then the responses of a pass together, a 1,000-row V2 binary request at c=8 9.7k -> 11.4k req/s (102 -> 88 us),
one record at c=64 27.3k -> 27.9k, c=1 9.6k -> 10.0k, p99 lower at all three (4 rounds x 4 s); then one timer per
server for keep-alive, one record at c=64 +4% (the median of 5 per-round ratios, 36.2 -> 35.5 us; with no timer at
all, the bound, 35.5 -> 33.8 us).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, NamedTuple

from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from serve import in_flight

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


class KeepAlive:
    """Closes a server's connections that have been idle for longer than the keep-alive timeout."""

    def __init__(self, connections: set[Any], timeout: float):
        self._connections = connections  # uvicorn's: every open connection of the server
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """Look every quarter of the timeout while the server has connections."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(max(self._timeout / 4, 0.05), self._close_idle)

    def _close_idle(self) -> None:
        self._timer = None
        idle_before = asyncio.get_running_loop().time() - self._timeout
        for connection in list(self._connections):
            if connection.idle_since is not None and connection.idle_since < idle_before:
                connection.timeout_keep_alive_handler()
        if self._connections:
            self.watch()


class Shared(NamedTuple):
    """What the connections of one server share."""

    writes: Pass
    keep_alive: KeepAlive


_SHARED: weakref.WeakKeyDictionary[ServerState, Shared] = weakref.WeakKeyDictionary()


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
        state = self.server_state
        shared = _SHARED.get(state)
        if shared is None:
            shared = _SHARED[state] = Shared(Pass(state.tasks), KeepAlive(state.connections, self.timeout_keep_alive))
            in_flight.count(state.tasks)
        self._shared = shared
        self.idle_since: float | None = None  # since a response ended, until the connection's next bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The flow control made above keeps the socket's own transport, to pause and resume reading.
        self._connection = self.transport = Connection(transport, self._shared.writes)
        self._shared.keep_alive.watch()

    def on_response_complete(self) -> None:
        """uvicorn's, but for the keep-alive timer: the connection is idle from now."""
        self._connection.end_of_response()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next request, already read, starts
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self.idle_since = self.loop.time()

    def _unset_keepalive_if_required(self) -> None:
        """Called by uvicorn when bytes arrive and when the connection is lost."""
        self.idle_since = None
