"""Faults: slow and vanishing clients, model files changed on disk, SIGTERM under load, overload."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvloop

from tests import load
from tests.conftest import FIRST, MODEL_DIR, Server, model_file, running_server
from tests.traffic import EXPECTED, RECORDS, Mix

BODY = json.dumps(FIRST).encode()
LINEAR_FIRST = float(EXPECTED["linear"][0])


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def held_request(port: int, sent: int, path: str = "/models/linear/predict",
                       body: bytes = BODY) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A prediction whose headers and first `sent` body bytes are on the wire; the rest is withheld."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    writer.write(head + body[:sent])
    await writer.drain()
    return reader, writer


async def release(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: int) -> float:
    """Send the withheld rest of a held request; its prediction."""
    writer.write(BODY[sent:])
    status, _, body = await asyncio.wait_for(load.read_response(reader), timeout=20)
    writer.close()
    assert status == 200, body
    return float(json.loads(body)["prediction"])


async def timed_predictions(url: str, count: int) -> list[float]:
    """Seconds each of `count` ordinary predictions took, one after another."""
    seconds = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = await client.post("/models/linear/predict", content=BODY)
            seconds.append(time.perf_counter() - start)
            assert response.json()["prediction"] == pytest.approx(LINEAR_FIRST, abs=1e-5)
    return seconds


def test_slow_clients_do_not_hold_up_anyone_else(server: Server) -> None:
    port = port_of(server)

    async def scenario() -> tuple[list[float], list[float]]:
        # Slowloris: headers that never end, one byte at a time; and bodies stalled half-way.
        loris = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
        for _, writer in loris:
            writer.write(b"POST /models/linear/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        stalled = [await held_request(port, sent=len(BODY) // 2) for _ in range(30)]
        trickle = asyncio.gather(*(drip(w) for _, w in loris))
        seconds = await timed_predictions(server.url, 50)
        answers = [await release(r, w, len(BODY) // 2) for r, w in stalled]
        trickle.cancel()
        await asyncio.gather(trickle, return_exceptions=True)
        for _, writer in loris:
            writer.close()
        return seconds, answers

    async def drip(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(b"a")
            await asyncio.sleep(0.1)

    seconds, answers = uvloop.run(scenario())
    assert max(seconds) < 1.0, f"slowest ordinary request took {max(seconds):.2f} s"
    assert answers == pytest.approx([LINEAR_FIRST] * 30, abs=1e-5)


def test_clients_that_vanish_mid_request_do_not_disturb_the_others(server: Server) -> None:
    port = port_of(server)
    batch = json.dumps({"instances": RECORDS}).encode()

    async def vanish(kind: str) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        body = batch if kind == "batch" else BODY
        head = (f"POST /models/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        # Gone half-way through the body; or right after the whole request, while it waits in the
        # coalescer or runs; or reset (no FIN) after a large batch.
        writer.write(head + (body[:len(body) // 2] if kind == "half body" else body))
        await writer.drain()
        if kind == "batch":
            writer.transport.abort()
        else:
            writer.close()

    async def scenario() -> tuple[load.Tally, int]:
        stop = asyncio.Event()
        traffic = asyncio.ensure_future(load.run(port, 16, 8, Mix(seed=2), stop))
        gone = 0
        while not traffic.done():
            await asyncio.gather(*(vanish(kind) for kind in ("half body", "whole request", "batch") * 5))
            gone += 15
            await asyncio.sleep(0.02)
        return await traffic, gone

    tally, gone = uvloop.run(scenario())
    print(f"\nvanishing clients: {gone} disconnects beside {tally.summary()}")
    assert gone >= 150 and tally.total > 1000
    assert not tally.wrong and not tally.socket_errors and max(tally.statuses) < 500, tally.summary()
    assert httpx.get(server.url + "/health/ready").status_code == 200
    assert "Traceback" not in server.log()


def test_without_watch_a_model_file_deleted_or_overwritten_on_disk_changes_nothing_served(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODEL_DIR, models, ignore=shutil.ignore_patterns("*.md", "*.png"))
    batch = {"instances": RECORDS[:50]}
    with running_server(tmp_path, "--model-dir", str(models)) as server:
        def snapshot() -> list[object]:
            return [httpx.get(server.url + "/models").json(), httpx.get(server.url + "/v2/models/mlp").json(),
                    *(httpx.post(f"{server.url}/models/{m}/predict", json=batch).json() for m in ("linear", "mlp"))]

        before = snapshot()
        (models / "linear" / "1" / "model.onnx").unlink()
        (models / "mlp" / "1" / "model.onnx").write_bytes(b"not a model any more")
        (models / "extra" / "1").mkdir(parents=True)
        (models / "extra" / "1" / "model.onnx").write_bytes(model_file("linear").read_bytes())
        assert snapshot() == before
        assert httpx.get(server.url + "/health/ready").status_code == 200
    np.testing.assert_allclose(before[3]["predictions"], EXPECTED["mlp"][:50], atol=1e-5)  # type: ignore[index]


def test_sigterm_under_load_lets_requests_in_flight_finish_then_exits_0_within_the_grace(tmp_path: Path) -> None:
    grace = 10
    with running_server(tmp_path, env={"SERVE_GRACEFUL_TIMEOUT": str(grace)}) as server:
        port = port_of(server)

        async def scenario() -> tuple[load.Tally, list[float], float, float]:
            stop = asyncio.Event()
            traffic = asyncio.ensure_future(load.run(port, 32, 60, Mix(seed=3), stop))
            await asyncio.sleep(2)
            in_flight = [await held_request(port, sent=10) for _ in range(16)]
            await asyncio.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(1)  # shutting down, yet still waiting for the held requests' bodies
            answers = [await release(r, w, 10) for r, w in in_flight]
            while server.process.poll() is None and time.monotonic() - signalled < grace + 5:
                await asyncio.sleep(0.05)
            stop.set()
            return await traffic, answers, signalled, time.monotonic() - signalled

        tally, answers, signalled, seconds = uvloop.run(scenario())
    print(f"\nSIGTERM under load: exit {server.process.returncode} after {seconds:.1f} s; {tally.summary()}")
    assert answers == pytest.approx([LINEAR_FIRST] * 16, abs=1e-5)
    assert server.process.returncode == 0 and seconds < grace
    # Every answer given was right; only connections after the signal failed (refused: the server is gone).
    assert not tally.wrong and max(tally.statuses) < 500 and tally.total > 100, tally.summary()
    assert tally.first_socket_error > signalled


def test_overload_beyond_max_concurrency_is_refused_at_once_with_503_and_retry_after(tmp_path: Path) -> None:
    limit = 8
    with running_server(tmp_path, "--max-concurrency", str(limit)) as server:
        port = port_of(server)

        async def burst(count: int) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=10,
                                         limits=httpx.Limits(max_connections=count)) as client:
                return list(await asyncio.gather(*(client.post("/models/linear/predict", content=BODY)
                                                   for _ in range(count))))

        async def scenario() -> tuple[list[httpx.Response], float, list[float], load.Tally]:
            held = [await held_request(port, sent=10) for _ in range(limit)]
            await asyncio.sleep(0.2)
            start = time.perf_counter()
            refused = await burst(100)
            seconds = time.perf_counter() - start
            answers = [await release(r, w, 10) for r, w in held]
            # Then 64 connections of mixed traffic: every answer is its right answer or a 503.
            mix = Mix(seed=4)
            tally = await load.run(port, 64, 5, lambda: overloadable(mix()))
            return refused, seconds, answers, tally

        refused, seconds, answers, tally = uvloop.run(scenario())
        assert httpx.post(server.url + "/models/linear/predict", content=BODY).status_code == 200
    print(f"\noverload: 100 refused in {seconds:.2f} s; then {tally.summary()}")
    assert {r.status_code for r in refused} == {503} and seconds < 5
    assert all(r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"] for r in refused)
    assert answers == pytest.approx([LINEAR_FIRST] * limit, abs=1e-5)
    assert not tally.wrong and not tally.socket_errors and set(tally.statuses) - {503} and 503 in tally.statuses


def test_a_body_that_stalls_gets_408_after_the_body_timeout_and_frees_its_slot(tmp_path: Path) -> None:
    v2_body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 13],
                                      "data": list(FIRST.values())}]}).encode()
    with running_server(tmp_path, "--body-timeout", "1", "--max-concurrency", "2") as server:
        port = port_of(server)

        async def scenario() -> tuple[int, list[tuple[int, dict[str, str], bytes]], float, bytes]:
            start = time.perf_counter()
            held = [await held_request(port, sent=10),
                    await held_request(port, sent=0, path="/v2/models/linear/infer", body=v2_body)]
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.url) as client:
                while_held = (await client.post("/models/linear/predict", content=BODY)).status_code
            answers = [await asyncio.wait_for(load.read_response(reader), timeout=10) for reader, _ in held]
            seconds = time.perf_counter() - start
            after = await asyncio.wait_for(held[0][0].read(), timeout=5)  # the server has closed the connection
            return while_held, answers, seconds, after

        while_held, answers, seconds, after = uvloop.run(scenario())
        assert httpx.post(server.url + "/models/linear/predict", content=BODY).status_code == 200
        log = server.log()
    assert while_held == 503  # both slots held by the stalled bodies
    assert [status for status, _, _ in answers] == [408, 408] and 1 <= seconds < 5
    for _, headers, body in answers:
        assert json.loads(body) == {"error": "the request body did not arrive within 1 s"}
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert after == b"" and "Traceback" not in log


def overloadable(request: load.Request) -> load.Request:
    """The same request, for which a 503 JSON with Retry-After is also a right answer."""
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status == 503:
            return None if headers.get("retry-after") == "1" and "error" in json.loads(body) else f"bad 503: {body!r}"
        return request.check(status, headers, body)
    return replace(request, check=check)

