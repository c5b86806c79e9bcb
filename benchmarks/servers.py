"""Server processes under test: started (optionally pinned) on a free 127.0.0.1 port, timed to their first
right answer, measured (RSS) and stopped. Every wait is bounded."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import orjson

from benchmarks.cpus import SERVER_CPU, pinned
from benchmarks.paths import ROOT
from benchmarks.payloads import Request, unframe

HOST = "127.0.0.1"
START_TIMEOUT = 60.0


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are, or the kernel may hand one out twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]


def send(port: int, request: Request, timeout: float = 10.0) -> Reply:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST", request.path, request.body, request.headers)
        response = connection.getresponse()
        return Reply(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


def call(port: int, request: Request, timeout: float = 10.0) -> Reply:
    """The framed message in `request.body` sent with a real gRPC client, bytes in and out, so the status in the
    trailers is read (h2load counts any HTTP 200 a success). Waits for the server's gRPC side to be ready."""
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        try:
            answer = channel.unary_unary(request.path)(unframe(request.body), timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            return Reply(error.code().value[0], f"gRPC {error.code().name}: {error.details()}".encode(), {})
    return Reply(200, answer, {})


@dataclass(frozen=True)
class ServerSpec:
    name: str
    # (port, work dir) -> argv; may write config files. With `grpc`, (port, work dir, gRPC port) -> argv: the
    # server answers gRPC too, on a second free port.
    command: Callable[..., list[str]]
    grpc: bool = False


@dataclass
class Server:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    started: float
    cold_start_s: float = 0.0
    tree: list[int] = field(default_factory=list)  # every descendant process, counted when ready
    survivors: list[int] = field(default_factory=list)  # descendants still alive after stop(), then killed

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"http://{HOST}:{self.grpc_port}"  # h2load speaks HTTP/2 in cleartext to an http:// URL

    def wait_until_answering(self, probe: Request) -> None:
        """Until `probe` answers 200: what a client sees as ready. Records the cold start."""
        deadline = self.started + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.process.returncode}; see its log")
            try:
                if send(self.port, probe, timeout=2).status == 200:
                    self.cold_start_s = time.monotonic() - self.started
                    self.tree = descendants(self.process.pid)
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.spec.name} did not answer within {START_TIMEOUT:.0f} s")

    def rss_mib(self) -> list[float]:
        """Resident memory of each process that serves: the workers if there are child processes, else itself."""
        children = _children(self.process.pid)
        return [_rss_kib(pid) / 1024 for pid in (children or [self.process.pid])]

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server so far: the process and its live workers, all threads."""
        return sum(_cpu_ticks(pid) for pid in [self.process.pid, *_children(self.process.pid)]) / os.sysconf(
            "SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, as a supervisor stops it; then any descendant left behind (some frameworks leave their
        workers) is recorded and killed by PID."""
        tree = set(self.tree) | set(descendants(self.process.pid))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        time.sleep(0.2)  # children exit on their parent's signal: give them the moment
        self.survivors = [pid for pid in sorted(tree) if alive(pid)]
        for pid in self.survivors:
            os.kill(pid, signal.SIGKILL)


def start(spec: ServerSpec, work: Path, pin: bool = True) -> Server:
    port, grpc_port = free_ports(2) if spec.grpc else (free_port(), 0)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = spec.command(port, work, grpc_port) if spec.grpc else spec.command(port, work)
    with (logs / f"{spec.name}.log").open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(pinned(command, SERVER_CPU) if pin else command, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
    return Server(spec, process, port, grpc_port, started)


def write_mlserver_config(directory: Path, port: int, grpc_port: int, model_file: Path) -> Path:
    """MLServer's two settings files. parallel_workers=0: its default (1) crashes at start-up with uvloop
    0.23 (SeldonIO/MLServer #2286), and on one core an extra inference process only adds IPC."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.json").write_bytes(orjson.dumps({
        "parallel_workers": 0, "host": HOST, "http_port": port, "grpc_port": grpc_port,
        "metrics_port": free_port(), "debug": False,
    }))
    (directory / "model-settings.json").write_bytes(orjson.dumps({
        "name": "linear", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "v1"},
    }))
    return directory


def _children(pid: int) -> list[int]:
    """Child processes, less multiprocessing's resource tracker (a helper, not a worker)."""
    try:
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
        return [child for child in children
                if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, helpers included."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in descendants(child)]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
