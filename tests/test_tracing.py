"""OpenTelemetry traces (`--otlp-endpoint`), received by a real OTLP/HTTP collector on 127.0.0.1: a small
http.server decoding each ExportTraceServiceRequest with opentelemetry-proto."""

from __future__ import annotations

import http.server
import itertools
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as triton
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from serve.settings import Settings
from serve.tracing import traces_url
from tests.conftest import FIRST, MODEL_DIR, ROOT, Server, free_port, running_server
from tests.test_server import raw_request, read_response
from tests.test_v2 import batch

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
# The SDK's batch processor exports every 5 s by default; the servers here export every 50 ms.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@dataclass
class Received:
    span: Span
    resource: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


def attributes(values: Any) -> dict[str, Any]:
    return {item.key: value_of(item.value) for item in values}


def value_of(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value"))


@dataclass
class Collector:
    url: str
    paths: list[str] = field(default_factory=list)
    spans: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def receive(self, path: str, request: ExportTraceServiceRequest) -> None:
        with self.arrived:
            self.paths.append(path)
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                self.spans += [Received(span, resource) for scope in resource_spans.scope_spans for span in scope.spans]
            self.arrived.notify_all()

    def trace(self, trace_id: str, count: int, timeout: float = 10) -> list[Received]:
        """The spans of one trace, once `count` of them have arrived."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self._of(trace_id)) >= count, timeout)
            return self._of(trace_id)

    def _of(self, trace_id: str) -> list[Received]:
        return [received for received in self.spans if received.span.trace_id.hex() == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.receive(self.path, ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found = Collector(f"http://127.0.0.1:{receiver.server_address[1]}")
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield found
    receiver.shutdown()
    receiver.server_close()


@pytest.fixture(scope="module")
def traced(collector: Collector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("traced"), "--otlp-endpoint", collector.url,
                        env=FAST_EXPORT) as server:
        yield server


def traceparent(trace_id: str = TRACE_ID, parent_id: str = PARENT_ID) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{parent_id}-01"}


def server_span_and_stages(spans: list[Received]) -> tuple[Received, dict[str, Span]]:
    (server,) = [received for received in spans if received.span.kind == Span.SPAN_KIND_SERVER]
    stages = {received.span.name: received.span for received in spans if received is not server}
    return server, stages


def check_stages(server: Span, stages: dict[str, Span]) -> None:
    """decode, model and encode: children of the server span, one after the other within it."""
    assert sorted(stages) == ["decode", "encode", "model"]
    decode, model, encode = stages["decode"], stages["model"], stages["encode"]
    assert {span.parent_span_id for span in stages.values()} == {server.span_id}
    assert server.start_time_unix_nano <= decode.start_time_unix_nano <= decode.end_time_unix_nano
    assert decode.end_time_unix_nano <= model.start_time_unix_nano <= model.end_time_unix_nano
    assert model.end_time_unix_nano <= encode.start_time_unix_nano <= encode.end_time_unix_nano
    assert encode.end_time_unix_nano <= server.end_time_unix_nano


def access_line(server: Server, needle: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in server.log().splitlines() if needle in line]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f"no log line with {needle!r}:\n{server.log()}")


def test_a_predict_continues_the_callers_trace_with_decode_model_and_encode_children(
        traced: Server, collector: Collector) -> None:
    response = httpx.post(traced.url + "/models/linear/predict", json={"instances": [FIRST, FIRST]},
                          headers=traceparent())
    assert response.status_code == 200
    server, stages = server_span_and_stages(collector.trace(TRACE_ID, 4))
    assert server.span.name == "POST /models/{model}/predict"
    assert server.span.parent_span_id.hex() == PARENT_ID
    assert server.span.status.code == Status.STATUS_CODE_UNSET
    assert server.attributes.items() >= {
        "http.request.method": "POST", "http.route": "/models/{model}/predict", "url.path": "/models/linear/predict",
        "http.response.status_code": 200, "model": "linear", "model.version": "1", "rows": 2,
        "client.address": "127.0.0.1", "server.port": int(traced.url.rsplit(":", 1)[1]),
    }.items()
    assert server.resource.items() >= {"service.name": "housing-serving"}.items()
    assert server.resource["service.version"] and server.resource["service.instance.id"]
    check_stages(server.span, stages)
    assert collector.paths[0] == "/v1/traces"


def test_the_access_log_line_carries_the_trace_id(traced: Server) -> None:
    trace_id = "1" * 32
    httpx.post(traced.url + "/models/linear/predict", json=FIRST, headers=traceparent(trace_id))
    assert access_line(traced, f"trace_id={trace_id}").endswith(f"model=linear version=1 trace_id={trace_id}")


def test_the_json_access_log_has_the_trace_id_as_a_field(collector: Collector, tmp_path: Path) -> None:
    trace_id = "5" * 32
    with running_server(tmp_path, "--access-log", "json", "--otlp-endpoint", collector.url) as server:
        httpx.post(server.url + "/models/linear/predict", json=FIRST, headers=traceparent(trace_id))
        entry = json.loads(access_line(server, trace_id))
    assert (entry["trace_id"], entry["model"], entry["status"]) == (trace_id, "linear", 200)
    assert len(collector.trace(trace_id, 4)) == 4  # with the default export period: flushed at shutdown


def test_a_v2_infer_is_traced_under_its_route_template(traced: Server, collector: Collector) -> None:
    trace_id = "2" * 32
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 13], "data": batch(3).tolist()}]}
    assert httpx.post(traced.url + "/v2/models/mlp/infer", json=body, headers=traceparent(trace_id)).status_code == 200
    server, stages = server_span_and_stages(collector.trace(trace_id, 4))
    assert server.span.name == "POST /v2/models/{model}/infer"
    assert server.attributes.items() >= {"model": "mlp", "rows": 3, "http.response.status_code": 200}.items()
    check_stages(server.span, stages)


def test_an_explain_is_traced_with_its_model_call_as_the_model_child(traced: Server, collector: Collector) -> None:
    trace_id = "7" * 32
    response = httpx.post(traced.url + "/models/linear/explain", json=FIRST, headers=traceparent(trace_id))
    assert response.status_code == 200
    server, stages = server_span_and_stages(collector.trace(trace_id, 4))
    assert server.span.name == "POST /models/{model}/explain"
    assert server.attributes.items() >= {"model": "linear", "rows": 1, "http.response.status_code": 200}.items()
    check_stages(server.span, stages)


def test_a_grpc_model_infer_continues_the_traceparent_of_its_metadata(traced: Server, collector: Collector) -> None:
    trace_id = "3" * 32
    tensor = triton.InferInput("features", [2, 13], "FP32")
    tensor.set_data_from_numpy(batch(2))
    triton.InferenceServerClient(traced.grpc_address).infer("linear", [tensor], headers=traceparent(trace_id))
    server, stages = server_span_and_stages(collector.trace(trace_id, 4))
    assert server.span.name == "inference.GRPCInferenceService/ModelInfer"
    assert server.span.parent_span_id.hex() == PARENT_ID
    assert server.attributes.items() >= {
        "rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0, "model": "linear", "model.version": "1", "rows": 2,
    }.items()
    check_stages(server.span, stages)
    assert "GRPC /inference.GRPCInferenceService/ModelInfer" in access_line(traced, f"trace_id={trace_id}")


def test_a_malformed_traceparent_starts_a_new_trace_and_still_answers(traced: Server, collector: Collector) -> None:
    response = httpx.post(traced.url + "/models/linear/predict", json=FIRST,
                          headers={"traceparent": "00-not-a-trace-01", "X-Request-ID": "malformed-parent"})
    assert response.status_code == 200
    trace_id = re.findall(r"trace_id=([0-9a-f]{32})", access_line(traced, "request_id=malformed-parent"))[0]
    server, _ = server_span_and_stages(collector.trace(trace_id, 4))
    assert server.span.parent_span_id == b"" and trace_id != TRACE_ID


def test_a_trace_the_caller_sampled_out_is_continued_in_the_log_but_not_exported(traced: Server,
                                                                               collector: Collector) -> None:
    trace_id = "6" * 32
    headers = {"traceparent": f"00-{trace_id}-{PARENT_ID}-00"}
    assert httpx.post(traced.url + "/models/linear/predict", json=FIRST, headers=headers).status_code == 200
    access_line(traced, f"trace_id={trace_id}")
    assert collector.trace(trace_id, 1, timeout=0.5) == []  # ten export periods


def test_a_refused_request_is_a_span_without_stages_and_not_an_error(traced: Server, collector: Collector) -> None:
    """As OpenTelemetry's HTTP conventions say: a 4xx is the caller's fault, so a server span's status stays unset."""
    trace_id = "4" * 32
    response = httpx.post(traced.url + "/models/linear/predict", json={"CRIM": 0.1}, headers=traceparent(trace_id))
    assert response.status_code == 422
    (server,) = collector.trace(trace_id, 1)
    assert server.span.status.code == Status.STATUS_CODE_UNSET
    assert server.attributes["http.response.status_code"] == 422 and "error.type" not in server.attributes
    time.sleep(0.3)  # several export periods: no stage span follows
    assert len(collector.trace(trace_id, 1)) == 1


def test_a_server_error_marks_the_span_as_an_error(collector: Collector, tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-concurrency", "1", "--otlp-endpoint", collector.url,
                        env=FAST_EXPORT) as server:
        sock, rest = raw_request(int(server.url.rsplit(":", 1)[1]), json.dumps(FIRST).encode(), split=10)
        for attempt in itertools.count(1):  # until the held request has taken the one slot
            trace_id = f"7{attempt:031x}"
            if httpx.post(server.url + "/models/linear/predict", json=FIRST,
                          headers=traceparent(trace_id)).status_code == 503:
                break
            time.sleep(0.05)
        sock.sendall(rest)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.close()
    (span,) = collector.trace(trace_id, 1)
    assert span.attributes.items() >= {"http.response.status_code": 503, "error.type": "503"}.items()
    assert span.span.status.code == Status.STATUS_CODE_ERROR


def test_an_unreachable_collector_neither_fails_nor_slows_requests(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with running_server(tmp_path, "--otlp-endpoint", nowhere, env=FAST_EXPORT) as server, httpx.Client() as client:
        seconds = []
        for _ in range(100):
            start = time.perf_counter()
            assert client.post(server.url + "/models/linear/predict", json=FIRST).status_code == 200
            seconds.append(time.perf_counter() - start)
        # Exporting on the request path would cost each request a refused connection and its retries' backoff.
        assert max(seconds) < 0.5, seconds
        start = time.monotonic()
        server.process.terminate()
        assert server.process.wait(timeout=15) == 0
    assert time.monotonic() - start < 12  # the last export gives up within its timeout


def test_every_worker_exports_its_own_spans(collector: Collector, tmp_path: Path) -> None:
    with running_server(tmp_path, "--workers", "2", "--otlp-endpoint", collector.url, env=FAST_EXPORT) as server:
        instances: set[str] = set()
        for i in range(200):  # a fresh connection each: the kernel spreads them over the workers
            trace_id = f"{i + 1:032x}"[::-1]
            httpx.post(server.url + "/models/linear/predict", json=FIRST, headers=traceparent(trace_id))
            instances |= {received.resource["service.instance.id"] for received in collector.trace(trace_id, 4)}
            if len(instances) == 2:
                break
        assert len(instances) == 2


def test_without_an_endpoint_no_opentelemetry_module_is_imported() -> None:
    script = f"""
import sys
from pathlib import Path
from starlette.testclient import TestClient
from serve.app import create_app
from serve.settings import Settings
settings = Settings(model_dir=Path({str(MODEL_DIR)!r}), grpc_port={free_port()}, access_log="off")
with TestClient(create_app(settings)) as client:
    assert client.post("/models/linear/predict", json={FIRST!r}).status_code == 200
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""
    output = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"


def test_the_collector_url_gets_the_traces_path_only_when_it_names_none() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://x.example/otlp/v1/traces") == "https://x.example/otlp/v1/traces"


def test_an_endpoint_that_is_not_an_http_url_fails_start_up() -> None:
    with pytest.raises(ValueError, match="SERVE_OTLP_ENDPOINT"):
        Settings.from_env({"SERVE_OTLP_ENDPOINT": "collector:4318"})

