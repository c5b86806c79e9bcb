"""Hostile bodies against the real server: each a quick, small 4xx that reveals no internals, after
which the server answers as before; bodies far over the limit refused before they are read; and
with a token set, every prediction route refuses requests without it."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests import load
from tests.conftest import FIRST, ROOT, Server, running_server
from tests.traffic import EXPECTED, X

PREDICT = "/models/linear/predict"
INFER = "/v2/models/linear/infer"
FIRST_JSON = json.dumps(FIRST)
ROW = json.dumps(X[0].tolist())
MAX_ERROR_BYTES = 2048


def v2_tensor(**fields: object) -> bytes:
    return json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 13],
                                   "data": X[0].tolist(), **fields}]}).encode()


def keys(n: int) -> str:
    return "{" + ",".join(f'"k{i}":1' for i in range(n)) + "}"


HOSTILE = {  # name: (path, body, status)
    "1e400": (PREDICT, FIRST_JSON.replace("296.0", "1e400").encode(), 422),
    "a 400-digit integer": (PREDICT, FIRST_JSON.replace("296.0", "9" * 400).encode(), 422),
    "a 5000-digit integer": (PREDICT, ("[" + "9" * 5000 + "," + ROW[1:]).encode(), 400),
    "1e400 in a V2 tensor": (INFER, v2_tensor().replace(b"[0.00632", b"[1e400"), 400),
    "arrays nested 100,000 deep": (PREDICT, b"[" * 100_000 + b"]" * 100_000, 400),
    "objects nested 100,000 deep": (PREDICT, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    "nesting inside instances": (PREDICT, b'{"instances":' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
    "nesting in a V2 request": (INFER, b'{"inputs":' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
    "a record of 100,000 keys": (PREDICT, keys(100_000).encode(), 422),
    "100,000 keys beside instances": (PREDICT, (keys(100_000)[:-1] + ',"instances":[' + ROW + "]}").encode(), 422),
    "100,000 V2 inputs": (INFER, json.dumps({"inputs": [{"name": f"k{i}"} for i in range(100_000)]}).encode(), 400),
    "a 3 MB key": (PREDICT, json.dumps({"x" * 3_000_000: 1}).encode(), 422),
    "a duplicate key": (PREDICT, (FIRST_JSON[:-1] + ', "CRIM": 5}').encode(), 422),
    "a duplicate key in a batch": (PREDICT, ('{"instances": [' + FIRST_JSON[:-1] + ', "RM": 5}]}').encode(), 422),
    "instances given twice": (PREDICT, ('{"instances": [' + ROW + '], "instances": [' + ROW + "]}").encode(), 422),
    "a duplicate key in V2": (INFER, v2_tensor()[:-3] + b', "datatype": "FP64"}]}', 400),
    "invalid UTF-8": (PREDICT, b'{"CRIM": "\xff\xfe"}', 400),
    "UTF-8 of a surrogate": (PREDICT, b'{"\xed\xa0\x80": 1}', 400),
    "an escaped lone surrogate": (PREDICT, b'{"\\ud800": 1}', 400),
    "a lone surrogate beside NaN": (PREDICT, b'{"\\udfff": NaN}', 400),
    "a lone surrogate as V2 id": (INFER, v2_tensor(id="x")[:-2].replace(b'"x"', b'"\\ud800"') + b"]}", 400),
    "a V2 datatype that is a list": (INFER, v2_tensor(datatype=["FP32"]), 400),
    "a V2 shape whose product wraps int64": (INFER, v2_tensor(shape=[5675921253449092805, 13], data=[1.0]), 400),
    "a V2 shape of a million dimensions": (INFER, v2_tensor(shape=[1] * 1_000_000), 400),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_body_gets_a_quick_small_4xx_and_the_server_carries_on(server: Server, name: str) -> None:
    path, body, status = HOSTILE[name]
    start = time.perf_counter()
    response = httpx.post(server.url + path, content=body, headers={"Content-Type": "application/json"}, timeout=10)
    seconds = time.perf_counter() - start
    assert response.status_code == status, response.text[:300]
    assert seconds < 1.0 and len(response.content) <= MAX_ERROR_BYTES
    assert isinstance(response.json()["error"], str)
    assert_no_internals(response.text)
    assert httpx.post(server.url + PREDICT, json=FIRST).json()["prediction"] == pytest.approx(
        float(EXPECTED["linear"][0]), abs=1e-5)


def assert_no_internals(text: str) -> None:
    """No stack trace, source file or path of this machine in what a client sees."""
    for leak in ("Traceback", 'File "', ".py", str(ROOT), "/work/", "/usr/", "site-packages"):
        assert leak not in text, f"{leak!r} in {text[:300]!r}"


def test_no_hostile_body_left_a_trace_in_the_log(server: Server) -> None:
    for path, body, _ in HOSTILE.values():
        httpx.post(server.url + path, content=body, timeout=10)
    assert "Traceback" not in server.log() and "ERROR" not in server.log()


def stream_until_answered(port: int, head: bytes, frame: bytes, most: int) -> tuple[bytes, int]:
    """Send `head`, then `frame` over and over until the server answers or `most` bytes have gone;
    (the answer's first bytes, body bytes sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent, answer, deadline = 0, b"", time.monotonic() + 10
        while sent < most and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                answer += sock.recv(65536)
                if b"\r\n\r\n" in answer:
                    break
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(frame)
        return answer, sent


@pytest.mark.parametrize("framing", ["Content-Length: 1073741824", "Transfer-Encoding: chunked"])
def test_a_body_far_over_the_limit_is_refused_without_being_read(server: Server, framing: str) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    chunk = b" " * 65536
    frame = chunk if framing.startswith("Content-Length") else b"10000\r\n" + chunk + b"\r\n"
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    before = load.resident_bytes(server.process.pid)
    answer, sent = stream_until_answered(port, head.encode(), frame, most=256 * 2**20)
    growth = load.resident_bytes(server.process.pid) - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # The limit is 4 MiB; what is sent beyond it sits in socket buffers, not in the server.
    assert sent < 32 * 2**20 and growth < 16 * 2**20, (sent, growth)


# Authentication: every POST operation the document lists is a prediction route.

TOKEN = "s3cret-t0ken"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("auth"), env={"SERVE_AUTH_TOKEN": TOKEN}) as running:
        yield running


def prediction_routes(server: Server) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, a valid body, headers) for every POST operation in the server's own document."""
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    routes = []
    for template, operations in paths.items():
        if "post" not in operations:
            continue
        path = template.replace("{model}", "linear").replace("{version}", "1")
        if path.startswith("/v2/repository/"):  # below: they change what is served
            continue
        if "/v2/" in path:
            head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 13],
                                           "parameters": {"binary_data_size": 52}}]}).encode()
            routes.append((path, head + X[0].tobytes(), {"Inference-Header-Content-Length": str(len(head))}))
        routes.append((path, json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 13],
                                                      "data": X[0].tolist()}]} if "/v2/" in path else FIRST).encode(),
                       {"Content-Type": "application/json"}))
    return routes


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong", f"Bearer {TOKEN}x",
                                           f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, f"Bearer  {TOKEN}",
                                           f"Bearer {TOKEN.upper()}"])
def test_every_prediction_route_refuses_a_missing_or_wrong_token(guarded: Server, authorization: str | None) -> None:
    routes = prediction_routes(guarded)
    assert len(routes) >= 5  # two models' predict routes, V2 infer plain and versioned, JSON and binary
    for path, body, headers in routes:
        given = {**headers, **({"Authorization": authorization} if authorization is not None else {})}
        response = httpx.post(guarded.url + path, content=body, headers=given)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer" and "token" in response.json()["error"]


def test_every_prediction_route_answers_with_the_right_token(guarded: Server) -> None:
    for path, body, headers in prediction_routes(guarded):
        response = httpx.post(guarded.url + path, content=body, headers={**headers, "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, (path, response.text)


REPOSITORY = ["/v2/repository/index", "/v2/repository/models/linear/load", "/v2/repository/models/linear/unload"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_every_repository_call_refuses_a_missing_or_wrong_token(guarded: Server, authorization: str | None) -> None:
    for path in REPOSITORY:
        response = httpx.post(guarded.url + path, headers={"Authorization": authorization} if authorization else {})
        assert response.status_code == 401 and "token" in response.json()["error"], (path, response.text)
    still = httpx.post(guarded.url + PREDICT, json=FIRST, headers={"Authorization": f"Bearer {TOKEN}"})
    assert still.status_code == 200


def test_repository_index_and_load_answer_with_the_right_token(guarded: Server) -> None:
    for path in REPOSITORY[:2]:
        response = httpx.post(guarded.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, (path, response.text)


def test_the_log_of_a_guarded_server_never_holds_the_token(guarded: Server) -> None:
    httpx.post(guarded.url + PREDICT, json=FIRST, headers={"Authorization": f"Bearer {TOKEN}"})
    assert TOKEN not in guarded.log() and not re.search(r"Bearer \S", guarded.log())


def test_model_files_are_not_named_to_clients(server: Server) -> None:
    for path in ("/models", "/models/linear", "/v2/models/linear", "/openapi.json", "/"):
        assert_no_internals(httpx.get(server.url + path).text)


def test_an_unknown_path_does_not_echo_a_huge_path(server: Server) -> None:
    response = httpx.get(server.url + "/" + "a" * 5000)
    assert response.status_code == 404 and len(response.content) <= MAX_ERROR_BYTES

