"""The Dockerfile and the manifests in deploy/ agree with the server they ship: no cluster needed.

Ports come from the Dockerfile's EXPOSE, paths are matched against the server's own URL map
(`serve.app.routes`, the one list of every endpoint), and every SERVE_* variable must be one the
server's Settings reads and accepts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Match

from serve.app import routes
from serve.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

Manifest = dict[str, Any]


def manifests(name: str) -> list[Manifest]:
    with open(DEPLOY / name) as file:
        return [document for document in yaml.safe_load_all(file) if document]


def only(name: str) -> Manifest:
    [manifest] = manifests(name)
    return manifest


def runtime_stage() -> dict[str, str]:
    """The default target's instructions (the last stage), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    instructions: dict[str, str] = {}
    for line in lines[last_from:]:
        keyword, _, argument = line.partition(" ")
        instructions[keyword.upper()] = " ".join(argument.split())
    return instructions


def exposed_ports() -> list[int]:
    return [int(port.split("/")[0]) for port in runtime_stage()["EXPOSE"].split()]


def answers_get(path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in routes)


def environment(container: Manifest) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container.get("env", [])}


def pod_container() -> Manifest:
    [container] = only("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return container


def kserve_container(name: str = "inferenceservice.yaml") -> Manifest:
    [container] = only(name)["spec"]["predictor"]["containers"]
    return container


def container_ports(container: Manifest) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_every_manifest_is_a_named_kubernetes_object() -> None:
    for path in sorted(DEPLOY.glob("*.yaml")):
        for manifest in manifests(path.name):
            assert {"apiVersion", "kind"} <= manifest.keys(), path.name
            assert manifest["kind"] == "Kustomization" or manifest["metadata"]["name"], path.name


def test_kustomization_lists_the_plain_kubernetes_manifests() -> None:
    assert only("kustomization.yaml")["resources"] == ["deployment.yaml", "service.yaml", "hpa.yaml"]


def test_dockerfile_passes_hadolint_with_no_findings() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")


def test_image_healthcheck_asks_the_readiness_route() -> None:
    healthcheck = runtime_stage()["HEALTHCHECK"]
    assert re.search(r"\bCMD \[", healthcheck), "exec form: slim has no shell tools worth relying on"
    assert "/health/ready" in healthcheck and answers_get("/health/ready")


def test_image_starts_the_server_in_exec_form_as_a_numeric_user() -> None:
    stage = runtime_stage()
    assert stage["CMD"].startswith("[")  # a shell would be PID 1 and swallow SIGTERM
    assert stage["USER"].split(":")[0].isdigit() and stage["USER"].split(":")[0] != "0"


def test_every_serve_variable_is_a_setting_the_server_accepts() -> None:
    image_env = dict(re.findall(r"(SERVE_\w+)=(\S+)", runtime_stage()["ENV"]))
    for env in (image_env, environment(pod_container()), environment(kserve_container()),
                environment(kserve_container("inferenceservice-grpc.yaml"))):
        serve_env = {name: value for name, value in env.items() if name.startswith(ENV_PREFIX)}
        settings = Settings.from_env(serve_env)  # raises on a value it cannot use
        assert serve_env.keys() <= settings.to_env().keys()  # a misspelt name would be silently ignored


def test_deployment_serves_on_the_ports_the_image_exposes() -> None:
    container = pod_container()
    env, ports = environment(container), container_ports(container)
    assert sorted(ports.values()) == exposed_ports()
    assert ports["http"] == int(env["SERVE_PORT"]) and ports["grpc"] == int(env["SERVE_GRPC_PORT"])
    annotations = only("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert answers_get(annotations["prometheus.io/path"])


@pytest.mark.parametrize(("probe", "path"), [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")])
def test_deployment_probe_asks_a_health_route_the_server_answers(probe: str, path: str) -> None:
    container = pod_container()
    http_get = container[probe]["httpGet"]
    assert http_get["path"] == path and answers_get(path)
    assert http_get["port"] == "http"


def test_deployment_startup_probe_asks_the_grpc_health_service() -> None:
    container = pod_container()
    # A grpc probe takes a port number, not a name; service "" is the server as a whole (grpc.health.v1).
    assert container["startupProbe"]["grpc"] == {"port": container_ports(container)["grpc"], "service": ""}


def test_cpu_request_is_workers_times_onnxruntime_threads() -> None:
    container = pod_container()
    env, resources = environment(container), container["resources"]
    cores = int(env["SERVE_WORKERS"]) * int(env["SERVE_ORT_THREADS"])
    assert cpus(resources["requests"]["cpu"]) == cpus(resources["limits"]["cpu"]) == cores


def test_grace_period_outlasts_the_preStop_pause_and_the_servers_drain() -> None:
    pod = only("deployment.yaml")["spec"]["template"]["spec"]
    pause = pod_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(environment(pod_container())["SERVE_GRACEFUL_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_deployment_runs_as_the_images_user() -> None:
    security = only("deployment.yaml")["spec"]["template"]["spec"]["securityContext"]
    user, _, group = runtime_stage()["USER"].partition(":")
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user), int(group or user))


def test_service_routes_to_the_deployments_http_and_grpc_ports() -> None:
    service, deployment = only("service.yaml"), only("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert {name: port["targetPort"] for name, port in ports.items()} == {"http": "http", "grpc": "grpc"}
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"  # gRPC is HTTP/2 without TLS


def test_autoscaler_scales_the_deployment_on_cpu_it_requests() -> None:
    hpa, deployment = only("hpa.yaml")["spec"], only("deployment.yaml")
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert [metric["resource"]["name"] for metric in hpa["metrics"]] == ["cpu"]
    assert "cpu" in pod_container()["resources"]["requests"]  # utilization is a share of the request
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it


def test_inferenceservice_runs_the_same_image_with_the_v2_protocol() -> None:
    container = kserve_container()
    assert container["name"] == "kserve-container" and container["image"] == pod_container()["image"]
    assert environment(container)["PROTOCOL"] == "v2"
    # Knative routes one port per container; http1 is its name for HTTP/1.1.
    assert container_ports(container) == {"http1": int(environment(container)["SERVE_PORT"])}
    assert container_ports(container)["http1"] == container["readinessProbe"]["httpGet"]["port"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_inferenceservice_probe_asks_a_route_the_server_answers(probe: str) -> None:
    assert answers_get(kserve_container()[probe]["httpGet"]["path"])


def test_grpc_inferenceservice_runs_the_same_image_on_the_grpc_port() -> None:
    container = kserve_container("inferenceservice-grpc.yaml")
    assert container["name"] == "kserve-container" and container["image"] == pod_container()["image"]
    assert environment(container)["PROTOCOL"] == "grpc-v2"
    # h2c is Knative's name for a port served as HTTP/2 in clear text, which gRPC needs.
    assert container_ports(container) == {"h2c": int(environment(container)["SERVE_GRPC_PORT"])}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"]["port"] == container_ports(container)["h2c"]


def test_the_two_inferenceservices_differ_only_in_protocol_ports_and_probes() -> None:
    def without_protocol(name: str) -> Manifest:
        spec = only(name)["spec"]
        [container] = spec["predictor"].pop("containers")
        protocol = {"ports", "env", "livenessProbe", "readinessProbe"}
        return {"spec": spec, "container": {key: value for key, value in container.items() if key not in protocol}}

    assert without_protocol("inferenceservice.yaml") == without_protocol("inferenceservice-grpc.yaml")
