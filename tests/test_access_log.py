"""The access log: the same lines as before, every one written by a graceful stop, and a stdout that is full or
closed costs dropped lines (whole, counted, one warning), never a stalled request or a crash."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import re
import signal
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serve.accesslog import AccessLog, timestamp
from tests.conftest import FIRST, Server, running_server

TEXT_LINE = re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO serve\.access: 127\.0\.0\.1:\d+ '
                       r'"POST /models/linear/predict" 200 \d+\.\d\dms request_id=(n-\d+) model=linear version=1')
DROPPED = re.compile(r"^serve_access_log_dropped_lines_total (\d+)$", re.M)


def predict(http: httpx.Client, n: int) -> None:
    response = http.post("/models/linear/predict", json=FIRST, headers={"X-Request-ID": f"n-{n}"})
    assert response.status_code == 200


def stop(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0


def request_ids(lines: Iterator[str] | list[str]) -> list[str]:
    """The ids of the predictions' text lines; every line must be a whole one."""
    ids = []
    for line in lines:
        if "/models/linear/predict" in line:
            match = TEXT_LINE.fullmatch(line)
            assert match, line
            ids.append(match.group(1))
    return ids


def test_the_timestamp_is_loggings_asctime_for_every_millisecond_even_when_several_lines_share_one() -> None:
    start = 1_790_000_000.9985  # crosses a millisecond, a second and a minute boundary
    times = [start + step / 10_000 for step in range(40)] + [start, start + 3_600.25, start]
    for now in times:
        record = logging.LogRecord("serve.access", logging.INFO, __file__, 0, "", None, None)
        record.created, record.msecs = now, int((now - int(now)) * 1000)  # as LogRecord computes them
        assert timestamp(now) == logging.Formatter().formatTime(record), now


def test_a_graceful_stop_writes_every_text_line_in_order_and_grpc_calls_too(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        with httpx.Client(base_url=server.url) as http:
            for n in range(500):
                predict(http, n)
        with grpc.insecure_channel(server.grpc_address) as channel:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(),
                                                                 metadata=(("x-request-id", "rpc-1"),))
        stop(server)
        lines = server.log().splitlines()
    assert request_ids(lines) == [f"n-{n}" for n in range(500)]
    assert any('"GRPC /inference.GRPCInferenceService/ServerLive" 200' in line and line.endswith("request_id=rpc-1")
               for line in lines)


def test_a_graceful_stop_writes_every_json_line_in_order(tmp_path: Path) -> None:
    with running_server(tmp_path, "--access-log", "json") as server:
        with httpx.Client(base_url=server.url) as http:
            for n in range(300):
                predict(http, n)
        stop(server)
        entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    predictions = [e for e in entries if e["path"] == "/models/linear/predict"]
    assert [e["request_id"] for e in predictions] == [f"n-{n}" for n in range(300)]
    assert {(e["status"], e["model"], e["version"], e["method"]) for e in predictions} == {(200, "linear", "1", "POST")}
    keys = ("client", "duration_ms", "method", "model", "path", "request_id", "status", "time", "version")
    assert {tuple(sorted(e)) for e in predictions} == {keys}
    assert all(0 < e["duration_ms"] < 1000 and round(e["duration_ms"], 3) == e["duration_ms"] for e in predictions)


def test_two_workers_on_one_stdout_write_whole_lines_and_a_stop_loses_none(tmp_path: Path) -> None:
    with running_server(tmp_path, "--workers", "2") as server:
        for n in range(400):  # a new connection each time, so both workers take a share
            with httpx.Client(base_url=server.url) as http:
                predict(http, n)
        stop(server)
        log = server.log()
    assert sorted(request_ids(log.splitlines())) == sorted(f"n-{n}" for n in range(400))
    assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == 2


def test_a_stdout_nobody_reads_drops_whole_lines_and_never_stalls_a_request(tmp_path: Path) -> None:
    requests = 3000
    with running_server(tmp_path, "--access-log-buffer", "65536", stdout=subprocess.PIPE) as server:
        assert server.process.stdout is not None
        with httpx.Client(base_url=server.url, timeout=5) as http:
            slowest = 0.0
            for n in range(requests):
                start = time.monotonic()
                predict(http, n)
                slowest = max(slowest, time.monotonic() - start)
            dropped = int(DROPPED.findall(http.get("/metrics").text)[0])
        stop(server)  # within the 2 s it waits for stdout, not the 15 s of a hung stop
        written = request_ids(server.process.stdout.read().splitlines())
        warnings = server.log().count("access log: stdout is not keeping up")
    assert slowest < 1.0
    # The pipe (64 KiB) and the buffer (64 KiB) hold about a thousand lines: the rest are dropped.
    assert dropped > requests // 2 and len(written) + dropped <= requests
    assert written == sorted(written, key=lambda id_: int(id_[2:])) and written[0] == "n-0"
    assert warnings == 1


def test_a_closed_stdout_drops_every_line_and_the_server_keeps_answering(tmp_path: Path) -> None:
    with running_server(tmp_path, stdout=subprocess.PIPE) as server:
        assert server.process.stdout is not None
        server.process.stdout.close()
        with httpx.Client(base_url=server.url) as http:
            for n in range(200):
                predict(http, n)
                time.sleep(0.001)
            dropped = int(DROPPED.findall(http.get("/metrics").text)[0])
        stop(server)
        log = server.log()
    assert dropped >= 150  # a line written after the last scrape may not be counted in it yet
    assert log.count("access log: stdout is closed") == 1 and "Traceback" not in log


@pytest.fixture()
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def fill(fd: int) -> int:
    """Fill a pipe, as a stdout nobody reads ends up; the bytes it holds."""
    os.set_blocking(fd, False)
    junk = 0
    try:
        while True:
            junk += os.write(fd, b"-" * 4096)
    except BlockingIOError:
        os.set_blocking(fd, True)
    return junk


def read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += os.read(fd, 1 << 16)
    return data


def test_lines_past_the_bound_are_dropped_whole_and_counted_and_those_that_waited_follow_in_order(
        pipe: tuple[int, int]) -> None:
    read, write = pipe
    junk = fill(write)
    totals: list[int] = []
    log = AccessLog(10_000, totals.append, fd=write)
    lines = [b"%04d %s\n" % (n, b"x" * 94) for n in range(2000)]
    for line in lines:
        log.write(line)
    assert totals == list(range(1, 1901))  # 100 lines of 100 bytes wait; the rest are dropped one by one
    assert read_exactly(read, junk) == b"-" * junk
    assert log.close(timeout=5)  # once read, the pipe takes the lines that waited, whole and in order
    assert read_exactly(read, 100 * 100) == b"".join(lines[:100]) and totals[-1] == 1900


def test_a_stop_gives_up_on_a_stdout_that_takes_nothing_and_counts_the_lines(pipe: tuple[int, int]) -> None:
    _, write = pipe
    fill(write)
    totals: list[int] = []
    log = AccessLog(1 << 20, totals.append, fd=write)
    for n in range(10):
        log.write(b"%d\n" % n)
    start = time.monotonic()
    assert not log.close(timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 2 and totals == [10]


@pytest.mark.parametrize("kind", ["pipe", "terminal"])
def test_lines_written_on_the_event_loop_reach_stdout_whole_and_in_order(kind: str) -> None:
    # A terminal has no RWF_NOWAIT: the log writes it through a non-blocking description of its own.
    read, write = os.pipe() if kind == "pipe" else pty.openpty()  # (master, slave)
    if kind == "terminal":
        tty.setraw(write)  # no newline translation
    lines = [b"%d %s\n" % (n, b"y" * (n % 300)) for n in range(3000)]
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_exactly(read, sum(map(len, lines)))))
    reader.start()

    async def log_every_line() -> bool:
        log = AccessLog(1 << 20, lambda total: None, fd=write)
        for n, line in enumerate(lines):
            log.write(line)
            if n % 50 == 0:
                await asyncio.sleep(0.001)  # a busy server's loop, iteration after iteration
        return log.close()

    try:
        assert asyncio.run(log_every_line())
        reader.join(timeout=10)
        assert received == [b"".join(lines)]
    finally:
        os.close(read)
        os.close(write)
