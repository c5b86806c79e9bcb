"""The image built from the project's Dockerfile, unchanged, and run for real with podman.

This machine has no Docker engine and cannot pull from Docker Hub, so `python:3.11-slim` is a local
stand-in (tests/container/) built on a debootstrapped Debian bookworm. podman keeps everything in one
folder that outlives the run (CONTAINER_TEST_STATE): only the first run debootstraps and installs.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
STANDIN_DIR = Path(__file__).parent / "container"
STATE = Path(os.environ.get("CONTAINER_TEST_STATE", "/var/tmp/housing-serving-podman"))
BASE_IMAGE = "localhost/housing-serving/bookworm:minbase"
STANDIN_IMAGE = "docker.io/library/python:3.11-slim"
PROJECT_IMAGE = "localhost/housing-serving:test"
GRACE_SECONDS = 10
# Docker Hub's python:3.11-slim is about 130 MB unpacked; the budget for the whole image is 300 MB.
MAX_ADDED_MB = 170

pytestmark = pytest.mark.slow


def run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Runs a command; on failure the assertion carries its output, which CalledProcessError would hide."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Podman:
    """Rootful podman confined to STATE, set up the way this sandbox needs it."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 60) -> str:
        return run(["podman", *args], timeout, self.env)

    def returncode(self, *args: str, timeout: float = 60) -> int:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, timeout=timeout)
        return done.returncode

    def logs(self, name: str) -> str:
        """stdout and stderr interleaved, as the server wrote them (uvicorn logs to stderr)."""
        return subprocess.run(["podman", "logs", name], env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60).stdout


def configure_podman() -> Podman:
    for folder in ("storage", "run", "tmp"):
        (STATE / folder).mkdir(parents=True, exist_ok=True)
    (STATE / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{STATE}/storage"\nrunroot = "{STATE}/run"\n'
    )
    # runc: crun refuses this host's cgroup layout; cgroupfs: no systemd; ulimits: podman's defaults
    # exceed the host's hard limits, which the container cannot raise.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    (STATE / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{STATE}/run/events.log"\n'
        'runtime = "runc"\n'
    )
    env = os.environ | {
        "CONTAINERS_STORAGE_CONF": f"{STATE}/storage.conf",
        "CONTAINERS_CONF": f"{STATE}/containers.conf",
        "TMPDIR": f"{STATE}/tmp",
    }
    return Podman(env)


def debian_mirror() -> str:
    """The bookworm mirror apt already uses here: it is the one known to be reachable."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        line = r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s"
        match = re.search(line, sources_list.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base_image(podman: Podman) -> None:
    if podman.returncode("image", "exists", BASE_IMAGE) == 0:
        return
    rootfs = STATE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)  # a half-finished debootstrap cannot be resumed
    run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()], timeout=900)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    try:
        imported = subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
            stdin=tar.stdout, env=podman.env, capture_output=True, text=True, timeout=300,
        )
    finally:
        tar.wait(timeout=60)
    assert imported.returncode == 0 and tar.returncode == 0, f"podman import failed:\n{imported.stderr}"
    shutil.rmtree(rootfs)  # the image is the cache now


def build_standin(podman: Podman) -> None:
    context = STATE / "standin"
    context.mkdir(exist_ok=True)
    for name in ("python-slim.Dockerfile", "pip.conf"):
        shutil.copy(STANDIN_DIR / name, context / name)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context / "host-ca.crt")
    podman("build", "--pull=never", "--network", "host", "-f", str(context / "python-slim.Dockerfile"),
           "-t", STANDIN_IMAGE, str(context), timeout=600)


def build_project(podman: Podman) -> str:
    """Builds the Dockerfile as it is and returns the image ID, which a concurrent run cannot retag."""
    iidfile = STATE / "tmp" / f"iid-{uuid.uuid4().hex}"
    # docker format: the OCI image config has no HEALTHCHECK, so buildah would drop it
    podman("build", "--pull=never", "--format", "docker", "--network", "host", "--iidfile", str(iidfile),
           "-t", PROJECT_IMAGE, str(REPO), timeout=900)
    image_id = iidfile.read_text().strip()
    iidfile.unlink()
    return image_id


@pytest.fixture(scope="module")
def podman() -> Podman:
    if os.geteuid() != 0:
        pytest.skip("the podman set-up here is rootful")
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    assert not missing, f"{missing} not installed: run `make system-deps`"
    return configure_podman()


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    # One build at a time per machine: engineers and CI share the cached storage.
    with open(STATE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_base_image(podman)
        build_standin(podman)
        return build_project(podman)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base_url} not ready within {timeout}s")


@dataclass(frozen=True)
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running(podman: Podman, image_id: str) -> Iterator[Container]:
    name, port = f"housing-test-{uuid.uuid4().hex[:12]}", free_port()
    try:
        podman("run", "--detach", "--name", name, "--network", "host",
               "--env", "SERVE_HOST=127.0.0.1", "--env", f"SERVE_PORT={port}", image_id)
        container = Container(name, port)
        try:
            wait_until_ready(container.url)
        except AssertionError as error:
            raise AssertionError(f"{error}; logs:\n{podman.logs(name)}") from None
        yield container
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "0", name], env=podman.env, capture_output=True,
                       timeout=60)


@pytest.fixture(scope="module")
def container(podman: Podman, image: str) -> Iterator[Container]:
    with running(podman, image) as started:
        yield started


@pytest.fixture(scope="module")
def local_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("local-service") / "log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--grpc-port", "0"],
                                  cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_ready(f"http://127.0.0.1:{port}")
        except AssertionError as error:
            raise AssertionError(f"{error}; log:\n{log.read_text()}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def first_record() -> dict[str, float]:
    with open(REPO / "data" / "housing.csv", newline="") as rows:
        row = next(csv.DictReader(rows))
    return {name: float(value) for name, value in row.items() if name != "MEDV"}


def exec_python(podman: Podman, container: Container, code: str) -> str:
    return podman("exec", container.name, "python", "-c", code).strip()


def model_names(url: str) -> list[str]:
    return [model["name"] for model in httpx.get(f"{url}/models", timeout=10).json()["models"]]


def test_container_predicts_what_the_local_service_predicts(container: Container, local_service: str) -> None:
    models = model_names(local_service)
    assert models and model_names(container.url) == models
    record = first_record()
    for model in models:
        in_container = httpx.post(f"{container.url}/models/{model}/predict", json=record, timeout=10)
        local = httpx.post(f"{local_service}/models/{model}/predict", json=record, timeout=10)
        assert in_container.status_code == local.status_code == 200, (in_container.text, local.text)
        # Same wheels, same model file, same CPU: a float32 ulp of slack, not a tolerance for drift.
        assert in_container.json()["prediction"] == pytest.approx(local.json()["prediction"], rel=1e-6), model


def test_healthcheck_reports_healthy(podman: Podman, container: Container) -> None:
    # No systemd timer runs it here, so run it once by hand: it is the image's own HEALTHCHECK command.
    assert podman.returncode("healthcheck", "run", container.name) == 0
    assert podman("inspect", "--format", "{{.State.Health.Status}}", container.name).strip() == "healthy"


def test_image_exposes_the_http_and_grpc_ports_the_server_is_told(podman: Podman, image: str) -> None:
    exposed = json.loads(podman("image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image))
    env = dict(item.split("=", 1) for item in json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Env}}", image)))
    assert sorted(exposed) == sorted(f"{env[name]}/tcp" for name in ("SERVE_PORT", "SERVE_GRPC_PORT"))


def test_server_runs_as_a_non_root_user(podman: Podman, container: Container) -> None:
    server_uid = exec_python(podman, container, "print(open('/proc/1/status').read())")
    real_uid = int(re.search(r"^Uid:\s+(\d+)", server_uid, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert real_uid != 0


def test_training_libraries_are_absent(podman: Podman, container: Container) -> None:
    found = exec_python(podman, container, "import importlib.util as u; "
                        "print([m for m in ('torch', 'sklearn', 'skl2onnx', 'onnx') if u.find_spec(m)])")
    assert found == "[]"


def test_the_image_holds_the_model_store_and_plots_without_cards(podman: Podman, container: Container) -> None:
    listed = exec_python(podman, container, "import pathlib; print(sorted(str(p.relative_to('/app/onnx_models')) "
                         "for p in pathlib.Path('/app/onnx_models').rglob('*') if p.is_file()))")
    store = REPO / "onnx_models"
    expected = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name in ("model.onnx", "model.png"))
    assert listed == str(expected) and expected


def test_image_adds_at_most_170_mb_to_python_slim(podman: Podman, image: str) -> None:
    sizes = [int(podman("image", "inspect", "--format", "{{.Size}}", ref)) for ref in (image, STANDIN_IMAGE)]
    added_mb = (sizes[0] - sizes[1]) / 1e6
    print(f"image {sizes[0] / 1e6:.0f} MB, of which {added_mb:.0f} MB above the python:3.11-slim stand-in")
    assert added_mb <= MAX_ADDED_MB


def read_until_closed(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_lets_the_request_in_flight_finish_then_exits_zero(podman: Podman, image: str) -> None:
    body = json.dumps(first_record()).encode()
    headers = (b"POST /models/linear/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
               b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with (running(podman, image) as container,
          socket.create_connection(("127.0.0.1", container.port), timeout=10) as client):
        client.sendall(headers)
        # uvicorn answers 100 Continue when the endpoint first asks for the body: the request is in flight.
        assert client.recv(1024).startswith(b"HTTP/1.1 100 ")
        started = time.monotonic()
        stop = subprocess.Popen(["podman", "stop", "--time", str(GRACE_SECONDS), container.name],
                                env=podman.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = started + GRACE_SECONDS
            while "Waiting for connections to close" not in podman.logs(container.name):
                assert time.monotonic() < deadline, f"no drain after SIGTERM:\n{podman.logs(container.name)}"
                time.sleep(0.1)
            client.sendall(body)
            response = read_until_closed(client)
        finally:
            stop.wait(timeout=GRACE_SECONDS + 30)
        stopped_after = time.monotonic() - started
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container.name).strip()
        logs = podman.logs(container.name)
    assert response.startswith(b"HTTP/1.1 200 ") and b'"prediction"' in response, response
    # Past the grace period podman sends SIGKILL and the exit code is 137.
    assert (exit_code, stopped_after < GRACE_SECONDS) == ("0", True), logs
    assert "Application shutdown complete" in logs and "Finished server process" in logs
