"""Shared fixtures: the committed models, an in-process client and a real uvicorn on a free port."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from serve.app import create_app
from serve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "onnx_models"


def model_file(name: str, version: int = 1) -> Path:
    """A committed model version's ONNX file in the store."""
    return MODEL_DIR / name / str(version) / "model.onnx"
DATA = ROOT / "data" / "housing.csv"


def housing_rows() -> list[dict[str, float]]:
    with DATA.open() as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


ROWS = housing_rows()
FEATURES = [name for name in ROWS[0] if name != "MEDV"]
FIRST = {name: ROWS[0][name] for name in FEATURES}


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    # No gRPC in process: the test process may hold tritonclient.grpc, whose protobuf descriptors (package
    # `inference`) clash with our stubs' (kserve/kserve#3099); gRPC is tested on servers in subprocesses.
    with TestClient(create_app(Settings(model_dir=MODEL_DIR, access_log="off", grpc_port=0))) as test_client:
        yield test_client


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are, or the kernel may hand one out twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log_path: Path
    grpc_address: str  # 127.0.0.1:<port> (an explicit --grpc-port 0 turns it off)

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def running_server(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 30, stdout: int | None = None) -> Iterator[Server]:
    """`python -m serve` on a free 127.0.0.1 port, its gRPC on another, ready when this yields; stopped (SIGTERM)
    afterwards. Servers run side by side over the suite: none may take the default gRPC port 8001. Both
    stdout (the access log) and stderr go to the log, unless `stdout` is given (subprocess.PIPE)."""
    port, grpc_port = free_ports(2)
    log_path = tmp_path / f"server-{port}.log"
    command = [sys.executable, "-m", "serve", "--port", str(port), "--grpc-port", str(grpc_port),
               "--model-dir", str(MODEL_DIR), *args]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log if stdout is None else stdout,
                                   stderr=subprocess.STDOUT if stdout is None else log, text=True,
                                   env={**os.environ, **(env or {})})
    server = Server(process, f"http://127.0.0.1:{port}", log_path, f"127.0.0.1:{grpc_port}")
    try:
        wait_ready(server, timeout, int(args[args.index("--workers") + 1]) if "--workers" in args else 1)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if `process` has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(server: Server, timeout: float, workers: int = 1) -> None:
    """Until /health/ready answers 200 and, with several workers, every worker has started (the first
    one ready answers for itself only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            ready = httpx.get(server.url + "/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            ready = False
        if ready and server.log().count("Application startup complete") >= workers:
            return
        time.sleep(0.05)
    raise AssertionError(f"server not ready within {timeout}s:\n{server.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server")) as running:
        yield running
