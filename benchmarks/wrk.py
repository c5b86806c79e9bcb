"""One bounded wrk run against 127.0.0.1, pinned to the load generator's core, parsed into a Run."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cpus import LOADGEN_CPU, pinned

SCRIPT = Path(__file__).with_name("post.lua")
# Long enough for the slowest baseline's batch of 1,000 under 64 connections; wrk counts later answers as timeouts.
TIMEOUT = "10s"


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    errors: int  # socket errors and timeouts
    non_2xx: int  # wrk counts answers with status >= 400
    p50_ms: float
    p99_ms: float
    mean_ms: float
    # CPU time the server used during the run (every process and thread of it), when the caller measured it.
    server_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run(url: str, body_file: Path, headers: dict[str, str], connections: int, seconds: int,
        pin: bool = True) -> Run:
    """`seconds` is whole: wrk's shortest duration is 1 s."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={TIMEOUT}", "-s", str(SCRIPT), url,
               "--", str(body_file)]
    for name, value in headers.items():
        command += [name, value]
    completed = subprocess.run(pinned(command, LOADGEN_CPU) if pin else command, capture_output=True, text=True,
                               timeout=seconds + 30, check=False)
    line = next((line for line in completed.stdout.splitlines() if line.startswith("BENCH ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}")
    figures = json.loads(line[len("BENCH "):])
    errors = figures["errors"]
    latency = figures["latency_us"]
    return Run(
        requests=figures["requests"], seconds=figures["duration_us"] / 1e6,
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"], non_2xx=errors["status"],
        p50_ms=latency["p50"] / 1000, p99_ms=latency["p99"] / 1000, mean_ms=latency["mean"] / 1000,
    )
