"""The HTTP grid: every (target, rows, connections) point run in interleaved rounds, medians reported.

Within a round each point runs against every target back to back (ceiling, ours, ..., then the next
point), so slow drifts of the shared machine hit all targets alike and ratios stay meaningful.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from benchmarks import h2load, wrk
from benchmarks.payloads import Request


@dataclass(frozen=True)
class Point:
    target: str
    rows: int
    connections: int


def _unmeasured() -> float:
    return 0.0


@dataclass(frozen=True)
class Endpoint:
    """A target's server, its request bodies written to files for the load generator, and its CPU time so far."""
    url: str
    bodies: dict[int, tuple[Path, Request]]
    cpu_seconds: Callable[[], float] = _unmeasured
    transport: Literal["http", "grpc"] = "http"

    def load(self, rows: int, connections: int, seconds: int, pin: bool = True) -> wrk.Run:
        """One run of the load generator for the transport: wrk for HTTP/1.1, h2load for gRPC (HTTP/2)."""
        generator = h2load.run if self.transport == "grpc" else wrk.run
        body_file, request = self.bodies[rows]
        return generator(self.url + request.path, body_file, request.headers, connections, seconds, pin)


@dataclass(frozen=True)
class Summary:
    point: Point
    runs: list[wrk.Run]

    def median(self, figure: Callable[[wrk.Run], float]) -> float:
        return statistics.median(figure(run) for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        rps = self.median(lambda run: run.rps)
        return {
            "target": self.point.target, "rows": self.point.rows, "connections": self.point.connections,
            "rounds": len(self.runs), "req_per_s": rps, "rows_per_s": rps * self.point.rows,
            "p50_ms": self.median(lambda run: run.p50_ms), "p99_ms": self.median(lambda run: run.p99_ms),
            "requests": sum(run.requests for run in self.runs),
            "non_2xx": sum(run.non_2xx for run in self.runs), "socket_errors": sum(run.errors for run in self.runs),
            "req_per_s_rounds": [run.rps for run in self.runs],
            # Unlike req/s, not raised or lowered by the share of the core the shared machine leaves the server.
            "server_cpu_us_per_request": self.median(_cpu_us_per_request),
            "server_cpu_us_per_request_rounds": [_cpu_us_per_request(run) for run in self.runs],
            "p99_ms_rounds": [run.p99_ms for run in self.runs],
        }


def _cpu_us_per_request(run: wrk.Run) -> float:
    return run.server_cpu_s / run.requests * 1e6 if run.requests else 0.0


def write_body(directory: Path, name: str, request: Request) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.body"
    path.write_bytes(request.body)
    return path


def run_rounds(points: list[Point], endpoints: dict[str, Endpoint], rounds: Callable[[Point], int], seconds: int,
               on_round: Callable[[int], None] = lambda r: None, pin: bool = True) -> list[Summary]:
    """Grouped by (rows, connections) so each group's targets run back to back, round after round, until
    each point has its number of rounds."""
    runs: dict[Point, list[wrk.Run]] = {point: [] for point in points}
    order = sorted(points, key=lambda p: (p.rows, p.connections))
    for number in range(max(map(rounds, points))):
        on_round(number)
        for point in order:
            if number >= rounds(point):
                continue
            endpoint = endpoints[point.target]
            cpu_before = endpoint.cpu_seconds()
            run = endpoint.load(point.rows, point.connections, seconds, pin)
            runs[point].append(replace(run, server_cpu_s=endpoint.cpu_seconds() - cpu_before))
    return [Summary(point, runs[point]) for point in points]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
