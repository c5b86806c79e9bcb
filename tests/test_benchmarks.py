"""The benchmark suite cannot rot: its smallest configuration runs end to end and writes its results.

Only that it ran is asserted, never a speed: figures on a shared machine are the report's business.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from benchmarks import h2load, payloads, readme, report, servers, wrk
from benchmarks.payloads import Request
from benchmarks.plan import FULL, PEER_POINTS, PEERS, QUICK, TRANSPORT_TARGETS
from benchmarks.throughput import Endpoint, Point, run_rounds
from tests.conftest import ROOT


@pytest.mark.slow
def test_quick_run_of_ours_against_the_ceiling_and_peers_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--targets",
         "ceiling,ours,ours-default,kserve,kserve-grpc,litserve", "--sections", "http", "--seconds", "1",
         "--results", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    points = results["http"]["points"]
    assert {p["target"] for p in points} == {"ceiling", "ours", "ours-default", "kserve", "kserve-grpc", "litserve"}
    assert all(p["requests"] > 0 and p["non_2xx"] == 0 and p["server_cpu_us_per_request"] > 0 for p in points)
    assert results["http"]["answer_checks"]["ours/1"] == "200, predictions match"
    for peer in ("kserve", "litserve"):
        assert results["http"]["answer_checks"][f"{peer}/1000"] == "200, predictions match"
    assert results["http"]["answer_checks"]["kserve-grpc/1"] == "gRPC OK, predictions match"
    servers = results["http"]["servers"]
    assert all(s["processes"] >= 1 for s in servers.values())
    # LitServe 0.2.19 leaves its workers behind on SIGTERM: they are counted (and killed), the others leave none.
    assert {name: s["left_running_after_stop"] > 0 for name, s in servers.items()} == {
        "ours": False, "ours-default": False, "ceiling": False, "kserve": False, "litserve": True}
    assert results["environment"]["commit"] and results["environment"]["load_average_start"]
    text = (out / "results.md").read_text()
    assert "## Headline" in text and "LitServe 0.2.19" in text
    assert (out / "http.png").stat().st_size > 0 and (out / "peers.png").stat().st_size > 0


def test_a_process_a_server_leaves_running_after_its_stop_is_counted_and_killed(tmp_path: Path) -> None:
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(60)"]
    spec = servers.ServerSpec("leaves-a-child", lambda port, work: ["sh", "-c", f"{shlex.join(stubborn)} & wait"])
    server = servers.start(spec, tmp_path, pin=False)
    deadline = time.monotonic() + 10
    while not servers.descendants(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    server.stop()
    assert len(server.survivors) == 1
    while servers.alive(server.survivors[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not servers.alive(server.survivors[0])


def test_readme_performance_section_is_replaced_between_its_markers_only(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"# Title\n## Performance\n{readme.START}\nold\n{readme.END}\n## Next\n")
    assert readme.update("# Benchmarks\n\n| a |\n\n![http.png](http.png)\n", tmp_path / "results", page)
    text = page.read_text()
    assert "old" not in text and "](results/http.png)" in text and text.endswith(f"{readme.END}\n## Next\n")


def test_readme_without_markers_is_left_alone(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text("# Title\n## Performance\n")
    assert not readme.update("# Benchmarks\n", tmp_path, page)
    assert page.read_text() == "# Title\n## Performance\n"


def test_the_goal_points_get_more_rounds_and_each_round_runs_a_points_targets_back_to_back(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    order: list[str] = []

    def fake_run(url: str, *args: object) -> wrk.Run:
        order.append(url)
        return wrk.Run(requests=1, seconds=1.0, errors=0, non_2xx=0, p50_ms=1.0, p99_ms=1.0, mean_ms=1.0)

    monkeypatch.setattr(wrk, "run", fake_run)
    points = [Point(target, rows, 64) for rows in (1, 1000) for target in ("ceiling", "ours", "mlserver")]
    endpoints = {target: Endpoint(f"http://{target}", {rows: (tmp_path, Request(f"/{rows}", b"", {}))
                                                       for rows in (1, 1000)}) for target in ("ceiling", "ours",
                                                                                              "mlserver")}
    summaries = run_rounds(points, endpoints, replace(FULL, rounds=2, goal_rounds=4).rounds_for, 1)
    assert {(s.point.target, s.point.rows): len(s.runs) for s in summaries} == {
        ("ceiling", 1): 4, ("ours", 1): 4, ("mlserver", 1): 2, ("ceiling", 1000): 2, ("ours", 1000): 2,
        ("mlserver", 1000): 2}
    round_one = ["http://ceiling/1", "http://ours/1", "http://mlserver/1",
                 "http://ceiling/1000", "http://ours/1000", "http://mlserver/1000"]
    assert order == round_one * 2 + ["http://ceiling/1", "http://ours/1"] * 2


def test_the_default_configuration_and_the_json_log_are_measured_where_the_goals_are_judged() -> None:
    for plan in (FULL, QUICK):
        for target in ("ours-default", "ours-json-log"):
            point = Point(target, 1, max(plan.connections))
            assert point in plan.points() and plan.rounds_for(point) == plan.goal_rounds
        assert [p for p in plan.points() if p.target == "ours-json-log"] == [Point("ours-json-log", 1,
                                                                                  max(plan.connections))]


def test_the_default_configuration_and_every_peer_are_measured_at_the_peer_points_only() -> None:
    for plan in (FULL, QUICK):
        for target in ("ours-default", *PEERS):
            assert sorted((p.rows, p.connections) for p in plan.points() if p.target == target) == sorted(PEER_POINTS)


def test_the_default_and_json_log_goals_are_judged_on_the_per_round_ratios_to_the_ceiling() -> None:
    rounds = {"ceiling": [10_000, 8_000, 12_000], "ours": [9_000, 7_000, 10_800],
              "ours-default": [9_300, 7_000, 11_400], "ours-json-log": [8_000, 7_200, 10_200]}
    cpu_us = {"ceiling": [50, 60, 40], "ours": [55, 70, 44], "ours-default": [58, 60, 50],
              "ours-json-log": [60, 70, 48]}
    results = {"http": {"points": [{"target": target, "rows": 1, "connections": 64, "req_per_s": rps[0],
                                    "req_per_s_rounds": rps, "server_cpu_us_per_request_rounds": cpu_us[target]}
                                   for target, rps in rounds.items()]}}
    checks = {check["check"]: check for check in report.serving_checks(results)}
    default = checks["defaults (text access log) / ceiling, 1 record, c=64 (req/s)"]
    assert (default["value"], default["goal"], default["met"]) == (pytest.approx(0.93), ">= 0.9", True)
    json_log = checks["JSON access log / ceiling, 1 record, c=64 (req/s)"]
    assert (json_log["value"], json_log["goal"], json_log["met"]) == (pytest.approx(0.85), ">= 0.85", True)
    assert checks["defaults (text access log) / access log off, 1 record, c=64 (req/s)"]["met"] is None
    by_cpu = checks["defaults / ceiling by server CPU time per request, 1 record, c=64"]
    assert (by_cpu["value"], by_cpu["met"]) == (pytest.approx(50 / 58), None)  # of 50/58, 60/60 and 40/50


def test_each_run_records_the_servers_cpu_time_per_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(wrk, "run", lambda *args: wrk.Run(requests=2000, seconds=1.0, errors=0, non_2xx=0,
                                                           p50_ms=1.0, p99_ms=1.0, mean_ms=1.0))
    counters = iter([10.0, 10.1, 10.1, 10.3])  # CPU seconds before and after each of two runs
    endpoint = Endpoint("http://ours", {1: (tmp_path, Request("/1", b"", {}))}, lambda: next(counters))
    [summary] = run_rounds([Point("ours", 1, 64)], {"ours": endpoint}, lambda point: 2, 1)
    figures = summary.as_dict()
    assert figures["server_cpu_us_per_request_rounds"] == [pytest.approx(50.0), pytest.approx(100.0)]
    assert figures["server_cpu_us_per_request"] == pytest.approx(75.0)


H2LOAD_SUMMARY = """finished in 2.00s, 2562.50 req/s, 248.74KB/s
requests: 5133 total, 5141 started, 10 done, 7 succeeded, 3 failed, 1 errored, 0 timeout
status codes: 7 2xx, 0 3xx, 2 4xx, 0 5xx
"""


def test_an_h2load_run_reads_its_counts_from_the_summary_and_its_percentiles_from_the_log() -> None:
    log = "".join(f"1796184844428620\t200\t{us}\n" for us in [900, 100, 500, 300, 700, 200, 400, 600, 800, 1000])
    run = h2load.parse(H2LOAD_SUMMARY, log)
    assert (run.requests, run.seconds, run.rps) == (10, 2.0, 5.0)
    assert (run.non_2xx, run.errors) == (2, 1)  # "failed" holds the errored stream as well as the 4xx answers
    assert (run.p50_ms, run.p99_ms, run.mean_ms) == (0.5, 1.0, 0.55)


def test_an_h2load_run_shorter_than_a_second_is_timed_in_its_unit() -> None:
    run = h2load.parse(H2LOAD_SUMMARY.replace("2.00s", "500.25ms"), "1\t200\t100\n")
    assert run.seconds == pytest.approx(0.50025)


def in_a_process_of_its_own(code: str) -> Any:
    """What `code` prints as JSON, run where the bench's gRPC messages may load: they and tritonclient's (loaded by
    other tests, and used here to read and write the same wire format) register the same protobuf names
    (kserve/kserve#3099)."""
    completed = subprocess.run([sys.executable, "-c", f"import json\nfrom benchmarks import payloads\n{code}"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)


def test_a_grpc_body_is_one_uncompressed_length_prefixed_model_infer_request_with_raw_fp32_rows() -> None:
    body, headers = in_a_process_of_its_own(
        "request = payloads.grpc_request(3)\nprint(json.dumps([request.body.hex(), request.headers]))")
    body = bytes.fromhex(body)
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    message = pb.ModelInferRequest.FromString(payloads.unframe(body))
    assert (message.model_name, list(message.inputs[0].shape), message.inputs[0].datatype) == ("linear", [3, 13],
                                                                                              "FP32")
    assert np.array_equal(np.frombuffer(message.raw_input_contents[0], "<f4"), payloads.rows(3).astype("<f4").ravel())
    assert headers == {"content-type": "application/grpc", "te": "trailers"}
    with pytest.raises(ValueError, match="not one uncompressed gRPC message"):
        payloads.unframe(body + b"\0")


def test_a_grpc_answer_is_read_raw_in_the_datatype_it_declares_and_a_typed_one_is_refused() -> None:
    answer = pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(name="predict", datatype="FP64")],
                                   raw_output_contents=[np.array([1.5, 2.5], "<f8").tobytes()])
    typed = pb.ModelInferResponse(outputs=answer.outputs)
    read = in_a_process_of_its_own(f"""
def read(body):
    try:
        return payloads.grpc_answer(bytes.fromhex(body), {{}}, 2)
    except ValueError as error:
        return str(error)
print(json.dumps([read({answer.SerializeToString().hex()!r}), read({typed.SerializeToString().hex()!r})]))""")
    assert read[0] == [1.5, 2.5]
    assert "without raw_output_contents" in read[1]


def test_a_grpc_endpoint_is_loaded_with_h2load_and_an_http_one_with_wrk(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    used: list[tuple[str, str]] = []
    for module in (wrk, h2load):
        monkeypatch.setattr(module, "run", lambda url, *args, name=module.__name__: used.append((name, url)) or wrk.Run(
            requests=1, seconds=1.0, errors=0, non_2xx=0, p50_ms=1.0, p99_ms=1.0, mean_ms=1.0))
    bodies = {1: (tmp_path, Request("/infer", b"", {}))}
    endpoints = {"rest": Endpoint("http://rest", bodies), "grpc": Endpoint("http://grpc", bodies, transport="grpc")}
    run_rounds([Point("rest", 1, 1), Point("grpc", 1, 1)], endpoints, lambda point: 1, 1)
    assert used == [("benchmarks.wrk", "http://rest/infer"), ("benchmarks.h2load", "http://grpc/infer")]


def test_the_other_transports_are_measured_at_the_peer_points_and_the_quick_run_has_a_grpc_peer() -> None:
    assert {(p.rows, p.connections) for p in FULL.points() if p.target in TRANSPORT_TARGETS} == set(PEER_POINTS)
    assert all(Point(t, rows, connections) in FULL.points() for t in TRANSPORT_TARGETS
               for rows, connections in PEER_POINTS)
    assert any(p.target in ("kserve-grpc", "mlserver-grpc") for p in QUICK.points())


def test_the_peer_goals_take_the_fastest_transport_on_each_side_and_name_both() -> None:
    rps = {"ours-default": [9_000, 8_000], "ours-grpc": [4_000, 3_000], "kserve": [500, 400],
           "kserve-grpc": [1_000, 800], "mlserver-grpc": [600, 500], "ceiling": [12_000, 8_800]}
    p99 = {"ours-default": 2.0, "ours-grpc": 1.0, "kserve": 4.0, "kserve-grpc": 5.0, "mlserver-grpc": 8.0,
           "ceiling": 3.0}
    results = {"http": {"points": [{"target": target, "rows": 1, "connections": c, "req_per_s": max(rounds),
                                    "req_per_s_rounds": rounds, "p99_ms": p99[target]}
                                   for target, rounds in rps.items() for c in (1, 64)]}}
    checks = {check["check"].rsplit(": ", 1)[0]: check for check in report.peer_checks(results)}
    speed = checks["defaults / fastest peer, 1 row, c=64 (req/s)"]
    assert speed["check"].endswith(": ours-default / kserve-grpc") and speed["value"] == pytest.approx(9.5)
    assert speed["met"] is False
    p99_check = checks["defaults p99 / fastest peer's p99, 1 row, c=1"]
    assert p99_check["check"].endswith(": ours-grpc / kserve") and p99_check["value"] == pytest.approx(0.25)
    assert checks["defaults / fastest peer, 1,000 rows, c=8 (rows/s)"]["value"] is None
    # The stack's own bound beside the goals, against the same peer: the ceiling, never judged.
    bound = checks["bound: ceiling / fastest peer, 1 row, c=64 (req/s)"]
    assert bound["check"].endswith(": ceiling / kserve-grpc") and bound["value"] == pytest.approx(11.5)
    assert bound["met"] is None
    assert checks["bound: ceiling p99 / fastest peer's p99, 1 row, c=1"]["value"] == pytest.approx(0.75)
