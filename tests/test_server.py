"""The real process: uvicorn on a free 127.0.0.1 port, start-up failures, workers, signals, auth, logs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from tests.conftest import FEATURES, FIRST, ROOT, ROWS, Server, free_port, model_file, running_server
from tests.test_predict import reference


def test_the_real_server_answers_like_the_model(server: Server) -> None:
    body = httpx.post(server.url + "/models/mlp/predict", json=FIRST).json()
    assert body["prediction"] == pytest.approx(float(reference("mlp", [FIRST])[0]), abs=1e-6)


def test_startup_logs_each_model_and_the_url(server: Server) -> None:
    log = server.log()
    assert re.search(r"model linear version 1", log) and re.search(r"model mlp version 1", log)
    assert server.url in log


def test_many_concurrent_requests_get_their_own_answers(server: Server) -> None:
    records = [{k: row[k] for k in FEATURES} for row in ROWS]
    expected = reference("mlp", records)

    async def run() -> list[float]:
        # Idle connections expire before uvicorn closes them (5 s): at httpx's default, also 5 s, a request on a
        # connection the server is closing that moment fails with ReadError when a loaded machine stalls the test.
        limits = httpx.Limits(max_connections=64, keepalive_expiry=2)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            async def one(i: int) -> float:
                record = records[i % len(records)]
                if i % 3 == 0:
                    body = (await http.post("/models/mlp/predict", json={"instances": [record, record]})).json()
                    assert body["predictions"][0] == body["predictions"][1]
                    return float(body["predictions"][0])
                return float((await http.post("/models/mlp/predict", json=record)).json()["prediction"])
            return await asyncio.gather(*(one(i) for i in range(1500)))

    answers = asyncio.run(asyncio.wait_for(run(), timeout=60))
    np.testing.assert_allclose(answers, [expected[i % len(records)] for i in range(1500)], atol=1e-6)


def test_a_chunked_body_over_the_limit_is_413(server: Server) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b" " * (1024 * 1024)
    response = httpx.post(server.url + "/models/mlp/predict", content=chunks(),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]


def raw_request(port: int, body: bytes, split: int) -> tuple[socket.socket, bytes]:
    """A POST whose headers and first `split` body bytes are sent; returns the socket and the rest."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST /models/linear/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:split])
    return sock, body[split:]


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            if len(rest) >= length:
                return data
    return data


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        sock, rest = raw_request(port, json.dumps(FIRST).encode(), split=20)
        time.sleep(0.2)  # the server has the request's head and part of its body
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(rest)
        response = read_response(sock)
        sock.close()
        assert response.startswith(b"HTTP/1.1 200") and b'"prediction"' in response
        assert server.process.wait(timeout=20) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/health/live", timeout=1)


def start_and_fail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serve", "--port", str(free_port()), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def without_metadata(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.save(model, str(target))


def with_features(source: Path, target: Path, edit: Callable[[list[dict[str, Any]]], object]) -> None:
    """The model with its 'features' metadata changed by `edit`."""
    model = onnx.load(str(source))
    entry = next(p for p in model.metadata_props if p.key == "features")
    features = json.loads(entry.value)
    edit(features)
    entry.value = json.dumps(features)
    onnx.save(model, str(target))


@pytest.mark.parametrize("case, expected", [
    ("missing folder", "does not exist"),
    ("empty folder", "holds no <name>/<version>/model.onnx"),
    ("corrupt file", "not a loadable ONNX model"),
    ("no metadata", "metadata lacks"),
    ("features without aliases", "entries need name, description, unit, aliases"),
    ("an alias that is another feature's name", "rm would name more than one feature"),
    ("folder not named as the model", "its metadata says model 'linear' version '1', its folder price/1"),
    ("version folder not a number", "version folder 'v1' is not a positive integer"),
])
def test_a_bad_model_store_fails_startup_with_a_clear_message(tmp_path: Path, case: str, expected: str) -> None:
    folder = tmp_path / "models"
    if case != "missing folder":
        folder.mkdir()
    target = folder / "linear" / "1" / "model.onnx"
    if case not in ("missing folder", "empty folder"):
        target.parent.mkdir(parents=True)
    if case == "corrupt file":
        target.write_bytes(model_file("linear").read_bytes()[:200])
    elif case == "no metadata":
        without_metadata(model_file("linear"), target)
    elif case == "features without aliases":
        with_features(model_file("linear"), target, lambda fs: [f.pop("aliases") for f in fs])
    elif case == "an alias that is another feature's name":
        with_features(model_file("linear"), target, lambda fs: fs[0].update(aliases=["Rm"]))
    elif case == "folder not named as the model":
        target.parent.parent.rename(folder / "price")
        (folder / "price" / "1" / "model.onnx").write_bytes(model_file("linear").read_bytes())
    elif case == "version folder not a number":
        target.parent.rename(folder / "linear" / "v1")
        (folder / "linear" / "v1" / "model.onnx").write_bytes(model_file("linear").read_bytes())
    result = start_and_fail("--model-dir", str(folder))
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name, value", [("SERVE_ACCESS_LOG", "yaml"), ("SERVE_BODY_TIMEOUT", "0"),
                                         ("SERVE_BODY_TIMEOUT", "nan"), ("SERVE_MAX_BATCH", "many"),
                                         ("SERVE_GRPC_PORT", "70000"), ("SERVE_GRPC_PORT", "-1"),
                                         ("SERVE_DRIFT_WINDOW", "0")])
def test_an_invalid_setting_fails_startup_with_a_clear_message(name: str, value: str) -> None:
    result = subprocess.run([sys.executable, "-m", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={name: value, "PATH": ""})
    assert result.returncode != 0 and name in result.stderr and "Traceback" not in result.stderr


def test_metrics_are_exact_across_two_workers(tmp_path: Path) -> None:
    with running_server(tmp_path, "--workers", "2") as server:
        for _ in range(100):  # a new connection each time, so both workers take a share
            assert httpx.post(server.url + "/models/linear/predict", json=FIRST).status_code == 200
        series = 'serve_requests_total{route="/models/{model}/predict",model="linear",version="1",status="200"} '
        scrapes = {httpx.get(server.url + "/metrics").text.split(series)[1].split()[0] for _ in range(10)}
        assert scrapes == {"100"}
        pids = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
        assert len(pids) == 2


def test_auth_guards_prediction_routes_only(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"SERVE_AUTH_TOKEN": "s3cret"}) as server:
        url = server.url + "/models/linear/predict"
        missing = httpx.post(url, json=FIRST)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "token" in missing.json()["error"]
        assert httpx.post(url, json=FIRST, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.post(url, json=FIRST, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(url, json=FIRST, headers={"Authorization": "bearer s3cret"}).status_code == 200
        assert httpx.post(url, json=FIRST, headers={"Authorization": "Basic s3cret"}).status_code == 401
        for open_route in ("/health/live", "/health/ready", "/metrics"):
            assert httpx.get(server.url + open_route).status_code == 200


def test_the_json_access_log_carries_the_request_id(tmp_path: Path) -> None:
    with running_server(tmp_path, "--access-log", "json") as server:
        response = httpx.post(server.url + "/models/linear/predict", json=FIRST, headers={"X-Request-ID": "trace-42"})
        assert response.headers["x-request-id"] == "trace-42"
        deadline = time.monotonic() + 5
        while "trace-42" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in server.log().splitlines() if "trace-42" in line)
        entry = json.loads(line)
        assert (entry["request_id"], entry["status"], entry["path"]) == ("trace-42", 200, "/models/linear/predict")


def test_overload_beyond_the_concurrency_limit_is_503_with_retry_after(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-concurrency", "1") as server:
        port = int(server.url.rsplit(":", 1)[1])
        sock, rest = raw_request(port, json.dumps(FIRST).encode(), split=10)  # holds the only slot
        time.sleep(0.2)
        busy = httpx.post(server.url + "/models/linear/predict", json=FIRST)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "overloaded" in busy.json()["error"]
        sock.sendall(rest)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.close()
        assert httpx.post(server.url + "/models/linear/predict", json=FIRST).status_code == 200
