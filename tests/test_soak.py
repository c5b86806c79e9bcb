"""Soak: 64 keep-alive connections of mixed valid and invalid traffic for SOAK_SECONDS (60 in
`make test`, 600 in `make soak`), and meanwhile 8 gRPC callers (tritonclient.grpc.aio, same event loop)
of valid and invalid ModelInfer: no 5xx or gRPC error beyond the expected INVALID_ARGUMENT, no socket
error, every valid answer correct, and resident memory after warm-up grows by at most 20 MB."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
import uvloop
from tritonclient.utils import InferenceServerException

from tests import load
from tests.conftest import running_server
from tests.traffic import EXPECTED, MODELS, Mix, X, close

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CONNECTIONS = 64
GRPC_CALLERS = 8
# The HTTP-like status a gRPC answer is tallied under: anything but these two is a server error.
GRPC_STATUSES = {"StatusCode.OK": 200, "StatusCode.INVALID_ARGUMENT": 400}
WARM_UP = min(10.0, SECONDS / 4)
MAX_GROWTH = 20 * 1024 * 1024


async def grpc_calls(address: str, seconds: float, tally: load.Tally, seed: int) -> None:
    """ModelInfer back to back for `seconds`: 80% valid batches of 1-64 rows checked against onnxruntime,
    20% with a 12-column shape that must be refused with INVALID_ARGUMENT."""
    rng = np.random.default_rng(seed)
    deadline = time.monotonic() + seconds
    async with triton_aio.InferenceServerClient(address) as client:
        while time.monotonic() < deadline:
            model, rows = str(rng.choice(MODELS)), rng.integers(0, len(X), int(rng.integers(1, 65)))
            valid = rng.random() < 0.8
            x = X[rows] if valid else X[rows, :12]
            tensor = triton_aio.InferInput("features", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            kind = "grpc" if valid else "grpc: invalid shape"
            try:
                result = await client.infer(model, [tensor])
                status, problem = 200, None if valid and close(result.as_numpy("MEDV").reshape(-1),
                                                               EXPECTED[model][rows]) else "wrong answer"
            except InferenceServerException as error:
                status = GRPC_STATUSES.get(str(error.status()), 500)
                problem = None if not valid and status == 400 else f"{error.status()}: {error.message()}"
            tally.requests[kind] += 1
            tally.statuses[status] += 1
            if problem and len(tally.wrong) < 20:
                tally.wrong.append(f"{kind}: {problem}")


async def soak(port: int, pid: int, grpc_address: str) -> tuple[load.Tally, list[tuple[float, int]]]:
    """The load, and the server's resident memory sampled every second meanwhile."""
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        start = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - start, load.resident_bytes(pid)))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample())
    grpc_tally = load.Tally()
    callers = [asyncio.create_task(grpc_calls(grpc_address, SECONDS, grpc_tally, seed)) for seed in range(GRPC_CALLERS)]
    tally = await load.run(port, CONNECTIONS, SECONDS, Mix(seed=1))
    await asyncio.gather(*callers)
    tally.requests.update(grpc_tally.requests)
    tally.statuses.update(grpc_tally.statuses)
    tally.wrong += grpc_tally.wrong
    stop.set()
    await sampler
    samples.append((tally.seconds, load.resident_bytes(pid)))
    return tally, samples


@pytest.mark.slow
def test_mixed_traffic_on_64_connections_gets_correct_answers_without_errors_or_memory_growth(tmp_path: Path) -> None:
    with running_server(tmp_path, "--access-log", "off") as server:
        port, pid = int(server.url.rsplit(":", 1)[1]), server.process.pid
        tally, samples = uvloop.run(soak(port, pid, server.grpc_address))
        log = server.log()
    after_warm_up = next(rss for t, rss in samples if t >= WARM_UP)
    growth = samples[-1][1] - after_warm_up
    peak = max(rss for _, rss in samples)
    print(f"\nsoak: {tally.summary()}; RSS {after_warm_up / 2**20:.1f} MB after {WARM_UP:.0f} s warm-up, "
          f"{samples[-1][1] / 2**20:.1f} MB at the end (growth {growth / 2**20:+.1f} MB, peak {peak / 2**20:.1f} MB)")
    assert not [status for status in tally.statuses if status >= 500], tally.summary()
    assert not tally.socket_errors, tally.summary()
    assert not tally.wrong, "\n".join(tally.wrong)
    assert {"single", "batch", "v2 binary", "grpc", "grpc: invalid shape"} <= set(tally.requests)
    assert tally.total > CONNECTIONS * SECONDS
    assert growth <= MAX_GROWTH
    assert "Traceback" not in log and "ERROR" not in log
