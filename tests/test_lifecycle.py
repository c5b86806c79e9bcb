"""Model lifecycle on a real server: versions come, are replaced and go while it is busy; nothing is
dropped, every answer is the prediction of the version it names, and bad files never displace good ones."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import tritonclient.http
import uvloop
from tritonclient.utils import InferenceServerException

from tests import load
from tests.conftest import FIRST, Server, running_server
from tests.load import Request
from tests.test_predict import reference
from tests.versions import MODELS, put, remove, store_copy, variant, without_metadata

BASE = {model: float(reference(model, [FIRST])[0]) for model in MODELS}
# Version 2 is added with one shift and replaced with the other: an answer naming it must carry one of them.
ADDED, REPLACED = 10.0, 20.0
CYCLES = 100
JSON = (("Content-Type", "application/json"),)


def answer(body: bytes, v2: bool) -> tuple[str, float]:
    """(version, prediction) of a record or V2 answer."""
    document = json.loads(body)
    if v2:
        return document["model_version"], document["outputs"][0]["data"][0]
    return document["version"], document["prediction"]


def named_version_check(model: str, v2: bool, seen: dict[str, set[str]]) -> load.Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        version, got = answer(body, v2)
        allowed = [BASE[model]] if version == "1" else [BASE[model] + ADDED, BASE[model] + REPLACED]
        if not any(abs(got - want) <= 1e-4 for want in allowed):
            return f"{model} version {version} answered {got}, expected one of {allowed}"
        seen[model].add(version)
        return None
    return check


def mixed_requests(seen: dict[str, set[str]]) -> Callable[[], Request]:
    """Both models, the record route and V2, unversioned and versioned; readiness in between."""
    v2_body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 13],
                                      "data": list(FIRST.values())}]}).encode()
    record = json.dumps(FIRST).encode()
    requests = [Request("ready", "GET", "/health/ready", b"", lambda status, h, b: None if status == 200 else
                        f"not ready: {status} {b[:200]!r}")]
    for model in MODELS:
        record_check, v2_check = named_version_check(model, False, seen), named_version_check(model, True, seen)
        requests += [
            Request(f"{model} record", "POST", f"/models/{model}/predict", record, record_check, JSON),
            Request(f"{model} v2", "POST", f"/v2/models/{model}/infer", v2_body, v2_check, JSON),
            Request(f"{model} v1 record", "POST", f"/models/{model}/versions/1/predict", record, record_check, JSON),
        ]
    return itertools.cycle(requests).__next__


def repository(server: Server, call: str, model: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/repository/models/{model}/{call}", timeout=30)


def index(server: Server) -> dict[tuple[str, str], tuple[str, str]]:
    entries = httpx.post(server.url + "/v2/repository/index").json()
    return {(e["name"], e["version"]): (e["state"], e["reason"]) for e in entries}


def predicted(server: Server, model: str) -> tuple[str, float]:
    return answer(httpx.post(f"{server.url}/models/{model}/predict", json=FIRST).content, v2=False)


@pytest.mark.slow
def test_a_hundred_cycles_of_adding_replacing_and_removing_a_version_under_load_drop_nothing(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    contents = {(m, shift): variant(m, 2, shift) for m in MODELS for shift in (ADDED, REPLACED)}
    seen: dict[str, set[str]] = {model: set() for model in MODELS}
    with running_server(tmp_path, "--model-dir", str(store), "--access-log", "off") as server:
        port = int(server.url.rsplit(":", 1)[1])
        rss_before = load.resident_bytes(server.process.pid)

        async def scenario() -> tuple[load.Tally, list[str], float]:
            stop = asyncio.Event()
            traffic = asyncio.ensure_future(load.run(port, 64, 300, mixed_requests(seen), stop))
            problems: list[str] = []
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                for _ in range(CYCLES):
                    for step in (ADDED, REPLACED, None):
                        for model in MODELS:
                            if step is None:
                                remove(store, model, 2)
                            else:
                                put(store, model, 2, contents[(model, step)])
                            response = await client.post(f"/v2/repository/models/{model}/load")
                            if response.status_code != 200:
                                problems.append(f"load {model} after {step}: {response.text}")
            cycling = time.monotonic() - started
            stop.set()
            return await traffic, problems, cycling

        tally, problems, cycling = uvloop.run(scenario())
        rss_after = load.resident_bytes(server.process.pid)
        log = server.log()
    print(f"\nlifecycle: {CYCLES} cycles x 2 models in {cycling:.1f} s under load; {tally.summary()}; "
          f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MB")
    assert not problems, problems
    assert set(tally.statuses) == {200} and not tally.socket_errors and not tally.wrong, (
        tally.summary(), tally.wrong)
    assert all(seen[model] == {"1", "2"} for model in MODELS), seen  # swaps happened under load
    assert "Traceback" not in log


@pytest.mark.slow
def test_bad_files_are_refused_while_the_previous_version_answers_and_the_watch_goes_on(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    with running_server(tmp_path, "--model-dir", str(store), "--watch", "0.2") as server:
        golden_off = variant("mlp", 2, shift=1.0, golden_shift=0.0)
        for bad, reason in [(b"\x08 corrupt", "not a loadable ONNX model"), (without_metadata("mlp"), "metadata lacks"),
                            (golden_off, "does not reproduce its golden predictions")]:
            put(store, "mlp", 2, bad)
            wait_for(lambda: reason in index(server).get(("mlp", "2"), ("", ""))[1], what=reason)  # noqa: B023
            state, why = index(server)[("mlp", "2")]
            assert state == "UNAVAILABLE" and why.startswith("mlp/2/model.onnx: ")
            assert predicted(server, "mlp") == ("1", pytest.approx(BASE["mlp"], abs=1e-4))
            assert httpx.get(server.url + "/health/ready").status_code == 200
        put(store, "mlp", 2, variant("mlp", 2, shift=ADDED))
        wait_for(lambda: predicted(server, "mlp")[0] == "2", what="the good version 2")
        assert predicted(server, "mlp")[1] == pytest.approx(BASE["mlp"] + ADDED, abs=1e-4)
        log = server.log()
    assert log.count("refused mlp version 2") == 3 and "Traceback" not in log


@pytest.mark.slow
def test_with_watch_1_a_new_version_serves_within_2_s_of_its_file_appearing(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    content = variant("linear", 2, shift=ADDED)
    with running_server(tmp_path, "--model-dir", str(store), "--watch", "1") as server:
        put(store, "linear", 2, content)
        appeared = time.monotonic()
        wait_for(lambda: predicted(server, "linear")[0] == "2", what="version 2", timeout=5)
        took = time.monotonic() - appeared
        metrics = httpx.get(server.url + "/metrics").text
        remove(store, "linear", 2)
        wait_for(lambda: predicted(server, "linear")[0] == "1", what="back to version 1", timeout=5)
        log = server.log()
    print(f"\nwatch 1 s: version 2 served {took:.2f} s after its file appeared")
    assert took <= 2.0
    assert 'model="linear",version="2",status="200"' in metrics
    assert "model=linear version=2" in log and "unloaded model linear version 2" in log


@pytest.mark.slow
def test_unloaded_versions_give_their_memory_back(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    with running_server(tmp_path, "--model-dir", str(store), "--access-log", "off") as server:
        alone = load.resident_bytes(server.process.pid)
        for version in range(2, 32):
            put(store, "mlp", version, variant("mlp", version, shift=float(version)))
        assert repository(server, "load", "mlp").status_code == 200
        loaded = load.resident_bytes(server.process.pid)
        for version in range(2, 32):
            remove(store, "mlp", version)
        assert repository(server, "load", "mlp").status_code == 200
        unloaded = load.resident_bytes(server.process.pid)
    print(f"\nRSS: {alone / 2**20:.1f} MB, {loaded / 2**20:.1f} MB with 30 more versions, "
          f"{unloaded / 2**20:.1f} MB once they are unloaded")
    assert unloaded - alone <= (loaded - alone) / 2


@pytest.mark.slow
def test_sighup_reconciles_the_store(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    with running_server(tmp_path, "--model-dir", str(store)) as server:
        put(store, "mlp", 5, variant("mlp", 5, shift=ADDED))
        assert predicted(server, "mlp")[0] == "1"  # no watch: nothing changes by itself
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: predicted(server, "mlp")[0] == "5", what="version 5 after SIGHUP")


@pytest.mark.slow
def test_with_two_workers_a_load_or_unload_through_the_api_reaches_both_within_the_interval(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    with running_server(tmp_path, "--model-dir", str(store), "--workers", "2") as server:
        put(store, "linear", 2, variant("linear", 2, shift=ADDED))
        assert repository(server, "load", "linear").status_code == 200
        loaded = stale_for(lambda: fresh_connection(server, "linear").json()["version"] == "2")
        assert repository(server, "unload", "mlp").status_code == 200
        unloaded = stale_for(lambda: fresh_connection(server, "mlp").status_code == 404)
        indexes = {json.dumps(sorted(index(server).items())) for _ in range(20)}
    print(f"\ntwo workers: the last stale answer came {loaded:.2f} s after the load, {unloaded:.2f} s after the unload")
    assert loaded <= 1.5 and unloaded <= 1.5  # the shared intent is looked at every second
    assert len(indexes) == 1  # every worker answers the same index


def fresh_connection(server: Server, model: str) -> httpx.Response:
    with httpx.Client() as client:  # a new connection lands on either worker
        return client.post(f"{server.url}/models/{model}/predict", json=FIRST)


def stale_for(current: Callable[[], bool], timeout: float = 10) -> float:
    """Seconds from now to the last answer that was not `current`, once 40 in a row were (each new
    connection lands on either worker, so a worker left behind would show with odds of 1 in 10^12)."""
    start = last_stale = time.monotonic()
    in_a_row = 0
    while in_a_row < 40:
        assert time.monotonic() - start < timeout, "the workers did not converge"
        if current():
            in_a_row += 1
        else:
            in_a_row, last_stale = 0, time.monotonic()
    return last_stale - start


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_the_versions_of_a_model_are_listed_with_their_states(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    put(store, "linear", 2, variant("linear", 2, shift=ADDED))
    put(store, "linear", 3, b"corrupt")
    with running_server(tmp_path, "--model-dir", str(store)) as server:
        listed = {m["name"]: m for m in httpx.get(server.url + "/models").json()["models"]}
        linear = httpx.get(server.url + "/models/linear").json()
        one = httpx.get(server.url + "/models/linear/versions/1").json()
        v2 = httpx.get(server.url + "/v2/models/linear").json()
        versioned = httpx.post(server.url + "/models/linear/versions/1/predict", json=FIRST).json()
        missing = httpx.post(server.url + "/models/linear/versions/3/predict", json=FIRST)
    states = [(v["version"], v["state"]) for v in listed["linear"]["versions"]]
    assert states == [("1", "READY"), ("2", "READY"), ("3", "UNAVAILABLE")]
    assert listed["linear"]["version"] == "2" and linear["version"] == "2" and one["version"] == "1"
    assert linear["versions"] == listed["linear"]["versions"] and v2["versions"] == ["1", "2"]
    assert versioned["version"] == "1" and versioned["prediction"] == pytest.approx(BASE["linear"], abs=1e-4)
    assert missing.status_code == 404 and "has no ready version '3'; ready: 1, 2" in missing.json()["error"]


def test_the_repository_api_refuses_what_it_cannot_do(server: Server) -> None:
    unknown = repository(server, "load", "nope")
    assert unknown.status_code == 404 and "no model 'nope' in the model store" in unknown.json()["error"]
    with_config = httpx.post(server.url + "/v2/repository/models/linear/load",
                             json={"parameters": {"config": "{}"}})
    assert with_config.status_code == 400 and "are not supported" in with_config.json()["error"]
    malformed = httpx.post(server.url + "/v2/repository/index", content=b"{")
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    assert sorted(index(server)) == [("linear", "1"), ("mlp", "1")]


@pytest.mark.slow
def test_tritonclient_repository_calls_work_unchanged(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        triton = tritonclient.http.InferenceServerClient(server.url.removeprefix("http://"))
        assert {(e["name"], e["state"]) for e in triton.get_model_repository_index()} == {
            ("linear", "READY"), ("mlp", "READY")}
        triton.unload_model("mlp")
        assert not triton.is_model_ready("mlp") and triton.is_model_ready("linear")
        (entry,) = [e for e in triton.get_model_repository_index() if e["name"] == "mlp"]
        assert entry["state"] == "UNAVAILABLE" and "unloaded" in entry["reason"]
        assert httpx.get(server.url + "/health/ready").status_code == 200  # what is meant to serve, serves
        triton.load_model("mlp")
        assert triton.is_model_ready("mlp") and triton.get_model_metadata("mlp")["versions"] == ["1"]
        with pytest.raises(InferenceServerException, match="no model 'nope' in the model store"):
            triton.load_model("nope")
