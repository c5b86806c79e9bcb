"""Soak: 64 keep-alive connections of mixed valid and invalid traffic for SOAK_SECONDS (60 in
`make test`, 600 in `make soak`): no 5xx, no socket error, every valid answer correct, and resident
memory after warm-up grows by at most 20 MB."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import uvloop

from tests import load
from tests.conftest import running_server
from tests.traffic import Mix

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CONNECTIONS = 64
WARM_UP = min(10.0, SECONDS / 4)
MAX_GROWTH = 20 * 1024 * 1024


async def soak(port: int, pid: int) -> tuple[load.Tally, list[tuple[float, int]]]:
    """The load, and the server's resident memory sampled every second meanwhile."""
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        start = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - start, load.resident_bytes(pid)))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample())
    tally = await load.run(port, CONNECTIONS, SECONDS, Mix(seed=1))
    stop.set()
    await sampler
    samples.append((tally.seconds, load.resident_bytes(pid)))
    return tally, samples


@pytest.mark.slow
def test_mixed_traffic_on_64_connections_gets_correct_answers_without_errors_or_memory_growth(tmp_path: Path) -> None:
    with running_server(tmp_path, "--access-log", "off") as server:
        port, pid = int(server.url.rsplit(":", 1)[1]), server.process.pid
        tally, samples = uvloop.run(soak(port, pid))
        log = server.log()
    after_warm_up = next(rss for t, rss in samples if t >= WARM_UP)
    growth = samples[-1][1] - after_warm_up
    peak = max(rss for _, rss in samples)
    print(f"\nsoak: {tally.summary()}; RSS {after_warm_up / 2**20:.1f} MB after {WARM_UP:.0f} s warm-up, "
          f"{samples[-1][1] / 2**20:.1f} MB at the end (growth {growth / 2**20:+.1f} MB, peak {peak / 2**20:.1f} MB)")
    assert not [status for status in tally.statuses if status >= 500], tally.summary()
    assert not tally.socket_errors, tally.summary()
    assert not tally.wrong, "\n".join(tally.wrong)
    assert {"single", "batch", "v2 binary"} <= set(tally.requests) and tally.total > CONNECTIONS * SECONDS
    assert growth <= MAX_GROWTH
    assert "Traceback" not in log and "ERROR" not in log
