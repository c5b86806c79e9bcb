"""The HTTP protocol: each response leaves in one write, head with body, and the responses finished in one pass of
the event loop leave together, with each connection's bytes and their order unchanged.

The protocol runs in-process on transports that record their writes, and behind the real server on a raw socket.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from serve import in_flight
from serve.http_protocol import HttpToolsProtocol
from tests.conftest import FIRST, Server

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
               Awaitable[None]]


class RecordingTransport(asyncio.Transport):
    """What a connection's socket was asked to write, one entry per write (and, when given, into a shared log)."""

    def __init__(self, log: list[str] | None = None, name: str = "") -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self._log, self._name = log, name

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "a write after the close"
        self.writes.append(bytes(data))
        if self._log is not None:
            self._log.append(f"{self._name} written")

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: App, state: ServerState, log: list[str] | None = None, name: str = "",
            keep_alive: float = 5) -> tuple[HttpToolsProtocol, RecordingTransport]:
    """A connection of the server whose shared state is `state`, served by `app`."""
    config = Config(app=app, lifespan="off", ws="none", proxy_headers=False, timeout_keep_alive=keep_alive)
    protocol = HttpToolsProtocol(config, state, {})
    transport = RecordingTransport(log, name)
    protocol.connection_made(transport)
    return protocol, transport


async def passes(count: int = 20) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def exchange(app: App, *chunks: bytes, responses: int = 1) -> RecordingTransport:
    """Feed `chunks` to a connection served by `app`, one loop pass apart, until `responses` have completed."""
    state = ServerState()
    protocol, transport = connect(app, state)
    for chunk in chunks:
        protocol.data_received(chunk)
        await passes()
    for _ in range(200):
        if state.total_requests >= responses or transport.closed:
            break
        await asyncio.sleep(0)
    return transport


async def answer(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                 send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Reads the whole body, answers it back."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body) + 3).encode())]})
    await send({"type": "http.response.body", "body": b"re:" + body})


def post(body: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"POST /echo HTTP/1.1", b"host: x", b"content-length: %d" % len(body), *headers, b"", body])


def test_a_response_is_one_write_of_its_head_and_body() -> None:
    transport = asyncio.run(exchange(answer, post(b"hello")))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\nre:hello")


def test_a_head_request_gets_its_head_when_the_response_ends_without_a_body() -> None:
    async def headers_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})  # uvicorn writes none of it for a HEAD

    transport = asyncio.run(exchange(headers_only, b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n")
    assert not transport.closed


def test_100_continue_goes_at_once_so_the_client_sends_its_body() -> None:
    head, body = post(b"hello", b"expect: 100-continue").split(b"\r\n\r\n")
    transport = asyncio.run(exchange(answer, head + b"\r\n\r\n", body))
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b"re:hello")


def test_a_streamed_response_sends_each_later_chunk_as_it_comes() -> None:
    async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    transport = asyncio.run(exchange(stream, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"3\r\none\r\n")
    assert transport.writes[1:] == [b"3\r\ntwo\r\n", b"5\r\nthree\r\n", b"0\r\n\r\n"]


def test_a_response_that_fails_after_its_head_still_sends_the_head_before_closing() -> None:
    async def fails(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        raise RuntimeError("the app broke after starting its response")

    transport = asyncio.run(exchange(fails, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert transport.closed
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


def test_pipelined_requests_are_answered_in_order_a_write_each() -> None:
    transport = asyncio.run(exchange(answer, post(b"first") + post(b"second"), responses=2))
    assert [write.rsplit(b"\r\n\r\n", 1)[1] for write in transport.writes] == [b"re:first", b"re:second"]


def test_an_unparsable_request_gets_its_400_before_the_close() -> None:
    transport = asyncio.run(exchange(answer, b"NOT HTTP AT ALL\r\n\r\n"))
    assert transport.closed and len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 400 ")


def test_the_responses_finished_in_one_pass_leave_together_once_the_last_is_done() -> None:
    log: list[str] = []

    async def logged_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        log.append(f"{body.decode()} answers")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": body})

    async def three_at_once() -> list[RecordingTransport]:
        state = ServerState()
        connections = [connect(logged_answer, state, log, name) for name in ("c1", "c2", "c3")]
        for (protocol, _), name in zip(connections, ("c1", "c2", "c3")):
            protocol.data_received(post(name.encode()))
        await passes()
        return [transport for _, transport in connections]

    transports = asyncio.run(three_at_once())
    assert log == ["c1 answers", "c2 answers", "c3 answers", "c1 written", "c2 written", "c3 written"]
    assert [transport.writes[0].rsplit(b"\r\n\r\n", 1)[1] for transport in transports] == [b"c1", b"c2", b"c3"]
    assert all(len(transport.writes) == 1 for transport in transports)


def test_requests_read_in_one_pass_are_in_flight_before_they_start() -> None:
    others_seen: list[bool] = []

    async def noting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        others_seen.append(in_flight.others())
        await answer(scope, receive, send)

    async def alone_then_two_at_once() -> None:
        state = ServerState()
        connect(noting, state)[0].data_received(post(b"alone"))
        await passes()
        pair = [connect(noting, state)[0] for _ in range(2)]
        for protocol in pair:
            protocol.data_received(post(b"together"))
        await passes()

    asyncio.run(alone_then_two_at_once())
    assert others_seen == [False, True, True]


def answered_beside_one_waiting_for_its_body() -> tuple[ServerState, HttpToolsProtocol, RecordingTransport]:
    """Two connections of one server: one whose request waits for the rest of its body, then one with a whole
    request, just handed over (the connection and its transport are returned)."""
    state = ServerState()
    (answered, transport), (waiting, _) = connect(answer, state), connect(answer, state)
    waiting.data_received(post(b"the whole body")[:-4])
    answered.data_received(post(b"hello"))
    return state, answered, transport


def test_a_response_does_not_wait_for_a_request_still_sending_its_body() -> None:
    async def one_waiting() -> None:
        state, _, transport = answered_beside_one_waiting_for_its_body()
        await passes()
        assert len(transport.writes) == 1 and transport.writes[0].endswith(b"re:hello")
        assert len(state.tasks) == 1  # the other, still waiting

    asyncio.run(one_waiting())


def test_a_waiting_response_is_dropped_when_its_client_goes_before_it_is_written() -> None:
    async def gone() -> None:
        state, connection, transport = answered_beside_one_waiting_for_its_body()
        await asyncio.sleep(0)  # its request has been answered: the response waits for the next pass
        assert state.total_requests == 1 and transport.writes == []
        transport.closed = True
        connection.connection_lost(None)
        await passes()  # no write after the close (the transport would fail the test)
        assert transport.writes == []

    asyncio.run(gone())


def test_a_connection_idle_for_the_keep_alive_timeout_is_closed_and_one_busy_is_not() -> None:
    async def idle_and_busy() -> None:
        state = ServerState()
        (idle, idle_transport), (busy, busy_transport) = (connect(answer, state, keep_alive=0.4) for _ in range(2))
        idle.data_received(post(b"one"))
        busy.data_received(post(b"one"))
        await asyncio.sleep(0.3)
        assert not idle_transport.closed and not busy_transport.closed
        busy.data_received(post(b"two")[:-1])  # its next request is on its way: not idle any more
        await asyncio.sleep(0.3)  # 0.6 s after the first responses; the server looks every 0.1 s
        assert idle_transport.closed and not busy_transport.closed
        busy.data_received(b"o")
        await asyncio.sleep(0.2)
        assert not busy_transport.closed and busy_transport.writes[-1].endswith(b"re:two")
        await asyncio.sleep(0.4)
        assert busy_transport.closed and len(busy_transport.writes) == 2

    asyncio.run(idle_and_busy())


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """`count` whole responses (a Content-Length each, or none for a 100 Continue), as the bytes arrive."""
    data, responses = b"", []
    while len(responses) < count:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(responses)} response(s)"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), b"0"))
            if len(rest) < length:
                break
            responses.append(head + b"\r\n\r\n" + rest[:length])
            data = rest[length:]
    return responses


@pytest.mark.parametrize("expect", [False, True])
def test_the_real_server_answers_pipelined_and_100_continue_requests_whole_and_in_order(server: Server,
                                                                                        expect: bool) -> None:
    body = orjson.dumps(FIRST)
    request = b"\r\n".join([b"POST /models/linear/predict HTTP/1.1", b"host: x", b"content-type: application/json",
                            b"content-length: %d" % len(body), *([b"expect: 100-continue"] if expect else []), b"",
                            body])
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n" + request)
        data = read_responses(sock, 3 + 2 * expect)
    # A 100 Continue, when asked for, comes when the endpoint first asks for the body (here already sent), before
    # its answer.
    continues = [n for n, response in enumerate(data) if response.startswith(b"HTTP/1.1 100 Continue")]
    assert continues == ([0, 3] if expect else [])
    data = [response for n, response in enumerate(data) if n not in continues]
    predictions = [orjson.loads(response.split(b"\r\n\r\n", 1)[1]) for response in data]
    assert [response.split(b"\r\n", 1)[0] for response in data] == [b"HTTP/1.1 200 OK"] * 3
    assert predictions[1] == {"status": "live"}
    assert predictions[0]["prediction"] == predictions[2]["prediction"]
