"""The sections of a run; each returns plain data for the results JSON."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks import baseline_model, inprocess, payloads, servers
from benchmarks.paths import ROOT
from benchmarks.plan import Plan
from benchmarks.targets import BASELINE_SERVERS, PIPELINE, SERVERS, TARGETS
from benchmarks.throughput import Endpoint, Point, load_average, run_rounds, write_body

WARM_UP_SECONDS = 1
EXPORT_TIMEOUT = 300


def inprocess_section(plan: Plan) -> list[dict[str, object]]:
    return inprocess.measure(plan.inprocess_sizes, plan.inprocess_block_seconds)


def export_section(work: Path) -> dict[str, Any]:
    """Wall time of `python -m export` into a scratch folder: train both models (5-fold CV), convert, prove
    parity, write the files."""
    with tempfile.TemporaryDirectory(dir=work) as out:
        start = time.monotonic()
        completed = subprocess.run([sys.executable, "-m", "export", "--out", out], cwd=ROOT, capture_output=True,
                                   text=True, timeout=EXPORT_TIMEOUT, check=False)
        seconds = time.monotonic() - start
    if completed.returncode != 0:
        raise RuntimeError(f"python -m export failed:\n{completed.stderr[-2000:]}")
    return {"seconds": seconds, "command": "python -m export --out <tmp>"}


def http_section(plan: Plan, work: Path, points: list[Point] | None = None, pin: bool = True) -> dict[str, Any]:
    """Start every server the points need, check every answer, warm up, run the interleaved rounds."""
    points = points if points is not None else plan.points()
    if any(TARGETS[p.target].server in BASELINE_SERVERS for p in points):
        baseline_model.save(work / PIPELINE)
    truth = payloads.expected(max(p.rows for p in points))
    loads: list[tuple[float, float, float]] = []
    with ExitStack() as stack:
        running = _start_servers(sorted({TARGETS[p.target].server for p in points}, key=list(SERVERS).index),
                                 work, pin, stack)
        at_ready = {name: server.rss_mib() for name, server in running.items()}
        endpoints, checks = _checked_endpoints(points, running, truth, work)
        # Each server warmed up once on each transport measured.
        warm_up = {(TARGETS[name].server, endpoint.transport): endpoint for name, endpoint in endpoints.items()}
        for endpoint in warm_up.values():
            endpoint.load(min(endpoint.bodies), 8, WARM_UP_SECONDS, pin)
        summaries = run_rounds(points, endpoints, plan.rounds_for, plan.seconds, lambda r: loads.append(load_average()),
                               pin)
        results = [summary.as_dict() for summary in summaries]
        served = {name: sum(r["requests"] for r in results if TARGETS[r["target"]].server == name) for name in running}
        processes = {name: {"cold_start_s": server.cold_start_s, "rss_mib_at_ready": at_ready[name],
                            "rss_mib": server.rss_mib(),
                            "requests_served": served[name], "processes": len(server.tree) + 1}
                     for name, server in running.items()}
    for name, server in running.items():  # stopped now, by the exit stack
        processes[name]["left_running_after_stop"] = len(server.survivors)
    return {"points": results, "servers": processes, "answer_checks": checks, "load_average_per_round": loads,
            "pinned": pin}


def _start_servers(names: list[str], work: Path, pin: bool, stack: ExitStack) -> dict[str, servers.Server]:
    """One at a time, so each cold start is timed on a machine not busy starting the others."""
    running = {}
    for name in names:
        server = servers.start(SERVERS[name], work, pin)
        stack.callback(server.stop)
        probe = next(t for t in TARGETS.values() if t.server == name).request(1)
        server.wait_until_answering(probe)
        running[name] = server
    return running


def _checked_endpoints(points: list[Point], running: dict[str, servers.Server], truth: Any,
                       work: Path) -> tuple[dict[str, Endpoint], dict[str, str]]:
    """Bodies for the load generators, each first sent once and its answer checked (over gRPC with a gRPC client,
    which reads the status in the trailers): a wrong or failing target stops the run."""
    endpoints: dict[str, Endpoint] = {}
    checks: dict[str, str] = {}
    for name in dict.fromkeys(p.target for p in points):
        target = TARGETS[name]
        server = running[target.server]
        grpc = target.transport == "grpc"
        bodies = {}
        for rows in sorted({p.rows for p in points if p.target == name}):
            request = target.request(rows)
            reply = servers.call(server.grpc_port, request) if grpc else servers.send(server.port, request)
            if reply.status != 200:
                raise RuntimeError(f"{name}, {rows} rows: {reply.status}: {reply.body[:300]!r}")
            predictions = target.answer(reply.body, reply.headers, rows)
            problem = payloads.check(predictions, rows, truth) if predictions else None
            if problem:
                raise RuntimeError(f"{name}, {rows} rows: wrong answer: {problem}")
            answered = "gRPC OK" if grpc else "200"
            checks[f"{name}/{rows}"] = f"{answered}, {'predictions match' if predictions else 'JSON (constant answer)'}"
            bodies[rows] = (write_body(work / "bodies", f"{name}-{rows}", request), request)
        url = server.grpc_url if grpc else server.url
        endpoints[name] = Endpoint(url, bodies, server.cpu_seconds, target.transport)
    return endpoints, checks


def workers_section(plan: Plan, work: Path) -> dict[str, Any]:
    """1 worker against 2, both unpinned (wrk unpinned too: it competes with the workers for the two cores)."""
    points = [Point("ours-1-worker", 1, max(plan.connections)), Point("ours-2-workers", 1, max(plan.connections))]
    return http_section(plan, work, points, pin=False)
