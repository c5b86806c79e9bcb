"""One bounded h2load run (HTTP/2 cleartext, as gRPC travels) against 127.0.0.1, pinned to the load generator's
core, parsed into the same Run as wrk's.

h2load prints no percentiles: they come from its per-request log. A gRPC error arrives in trailers with HTTP
200, which h2load counts as a success: the caller checks every answer with a real gRPC client first.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks.cpus import LOADGEN_CPU, pinned
from benchmarks.wrk import Run

# "requests: 5125 total, 5133 started, 5125 done, 5125 succeeded, 0 failed, 0 errored, 0 timeout"
REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (?P<done>\d+) done, (?P<succeeded>\d+) succeeded, "
                      r"(?P<failed>\d+) failed, (?P<errored>\d+) errored, (?P<timeout>\d+) timeout")
FINISHED = re.compile(r"finished in (?P<value>[\d.]+)(?P<unit>s|ms|us)\b")
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def run(url: str, body_file: Path, headers: dict[str, str], connections: int, seconds: int,
        pin: bool = True) -> Run:
    """One stream per connection (-m1), so `connections` is the concurrency, as with wrk."""
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "requests.tsv"
        command = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds}", f"--log-file={log}",
                   "-d", str(body_file), *[f"-H{name}: {value}" for name, value in headers.items()], url]
        completed = subprocess.run(pinned(command, LOADGEN_CPU) if pin else command, capture_output=True, text=True,
                                   timeout=seconds + 30, check=False)
        if completed.returncode != 0 or not REQUESTS.search(completed.stdout):
            output = completed.stderr.strip() or completed.stdout
            raise RuntimeError(f"h2load failed ({completed.returncode}): {output}")
        return parse(completed.stdout, log.read_text())


def parse(stdout: str, log: str) -> Run:
    """h2load's summary and its log (start µs since epoch, status, µs to the end of the response; one a line)."""
    counts = REQUESTS.search(stdout)
    finished = FINISHED.search(stdout)
    if counts is None or finished is None:
        raise ValueError(f"not h2load's summary: {stdout[-500:]!r}")
    errored, timeout = int(counts["errored"]), int(counts["timeout"])
    latencies_us = sorted(int(line.split("\t")[2]) for line in log.splitlines() if line)
    mean_ms = sum(latencies_us) / len(latencies_us) / 1000 if latencies_us else 0.0
    return Run(
        requests=int(counts["done"]), seconds=float(finished["value"]) * UNITS[finished["unit"]],
        # h2load's "failed" counts streams answered with a status outside 2xx and streams that broke off (errored).
        errors=errored + timeout, non_2xx=int(counts["failed"]) - errored,
        p50_ms=percentile(latencies_us, 50) / 1000, p99_ms=percentile(latencies_us, 99) / 1000, mean_ms=mean_ms,
    )


def percentile(ordered: list[int], p: float) -> float:
    """Nearest rank, as wrk's histogram reports it; 0 for no values."""
    return float(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]) if ordered else 0.0
