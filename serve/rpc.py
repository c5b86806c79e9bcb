"""The Open Inference Protocol over gRPC: protobuf messages translated onto the service layer and the V2
codec, so that every check, error message, metric and the dynamic batching are the REST route's.

A `ModelInferRequest` becomes the parsed JSON request the V2 codec checks: each input a dict with its
typed contents as `data`, or with `binary_data_size` when it travels in `raw_input_contents` (joined
in order, as the binary tensor extension lays them after the JSON header). The reply is raw when the
request was (tritonclient.grpc's `as_numpy` reads only `raw_output_contents`), typed otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serve import in_flight
from serve.errors import ServeError
from serve.middleware import Frontdoor, log_access
from serve.protocol import open_inference_grpc_pb2 as pb
from serve.protocol import open_inference_grpc_pb2_grpc as pb_grpc
from serve.service import SERVER_METADATA, Service
from serve.v2 import bad

if TYPE_CHECKING:
    from serve.tracing import Tracing

logger = logging.getLogger("serve")
T = TypeVar("T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# A REST status -> the gRPC code carrying the same refusal; any other 4xx is INVALID_ARGUMENT.
CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The contents field that carries each accepted datatype; the codec refuses every other datatype.
_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def _parameter(value: pb.InferParameter | pb.ModelRepositoryParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _parameters(parameters: Any) -> dict[str, Any]:
    return {key: _parameter(value) for key, value in parameters.items()}


def infer_payload(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes]:
    """The request as the V2 codec's parsed JSON request and binary section."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad(f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs: "
                  "send every input raw, one entry each, or every input as typed contents")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        parameters = _parameters(tensor.parameters)
        if raw:
            if tensor.HasField("contents"):
                raise bad(f"input {tensor.name!r}: both typed contents and raw_input_contents; send one")
            parameters["binary_data_size"] = len(raw[i])
        else:
            item["data"] = list(getattr(tensor.contents, _CONTENTS.get(tensor.datatype, "fp32_contents")))
        if parameters:
            item["parameters"] = parameters
        inputs.append(item)
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if request.parameters:
        payload["parameters"] = _parameters(request.parameters)
    if request.outputs:  # none named: every output, as on REST
        payload["outputs"] = [{"name": o.name, "parameters": _parameters(o.parameters)} for o in request.outputs]
    return payload, b"".join(raw)


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each RPC: the REST endpoint's steps, answered as a message or aborted with the mapped code."""

    def __init__(self, service: Service, frontdoor: Frontdoor, tracing: Tracing | None):
        self.service = service
        self.frontdoor = frontdoor
        self.tracing = tracing
        self._calls: set[Call] = set()  # those in flight
        in_flight.count(self._calls, from_arrival=False)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext[Any, Any]
                         ) -> pb.ServerLiveResponse:
        return await self._answer("ServerLive", context, False, lambda call: _now(pb.ServerLiveResponse(live=True)))

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext[Any, Any]
                          ) -> pb.ServerReadyResponse:
        return await self._answer("ServerReady", context, False,
                                  lambda call: _now(pb.ServerReadyResponse(ready=self.service.ready)))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext[Any, Any]
                         ) -> pb.ModelReadyResponse:
        async def ready(call: Call) -> pb.ModelReadyResponse:
            try:
                self.service.resolve(request.name, request.version or None)
            except ServeError as exc:
                if exc.status != 404:
                    raise
                return pb.ModelReadyResponse(ready=False)  # as Triton answers: not an error, just not ready
            return pb.ModelReadyResponse(ready=True)

        return await self._answer("ModelReady", context, False, ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: aio.ServicerContext[Any, Any]
                             ) -> pb.ServerMetadataResponse:
        return await self._answer("ServerMetadata", context, False,
                                  lambda call: _now(pb.ServerMetadataResponse(**SERVER_METADATA)))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: aio.ServicerContext[Any, Any]
                            ) -> pb.ModelMetadataResponse:
        async def metadata(call: Call) -> pb.ModelMetadataResponse:
            document = self.service.v2_model(request.name, request.version or None)
            tensors = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=document["name"], versions=document["versions"], platform=document["platform"],
                inputs=[tensors(**tensor) for tensor in document["inputs"]],
                outputs=[tensors(**tensor) for tensor in document["outputs"]])

        return await self._answer("ModelMetadata", context, False, metadata)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext[Any, Any]
                         ) -> pb.ModelInferResponse:
        async def infer(call: Call) -> pb.ModelInferResponse:
            payload, binary = infer_payload(request)
            served = self.service.resolve(request.model_name, request.model_version or None)
            call.model, call.version = served.model.name, served.model.version
            decoded = served.v2_codec.decode_parsed(payload, binary)
            outputs = await self.service.infer(served, decoded.x, decoded.outputs)
            call.rows = len(decoded.x)
            model = served.model
            warnings = served.v2_codec.warnings(decoded, model.prediction(outputs))
            response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
            for name in decoded.outputs:
                values = outputs[name]
                output = response.outputs.add(name=name, datatype="FP32",
                                              shape=served.v2_codec.shape(name, len(decoded.x)))
                if request.raw_input_contents:
                    response.raw_output_contents.append(values.astype("<f4").tobytes())
                else:
                    output.contents.fp32_contents.extend(values.reshape(-1).tolist())
            if warnings:
                response.parameters["warnings"].string_param = warnings
            return response

        return await self._answer("ModelInfer", context, True, infer)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: aio.ServicerContext[Any, Any]
                              ) -> pb.RepositoryIndexResponse:
        async def index(call: Call) -> pb.RepositoryIndexResponse:
            self._check_repository(request.repository_name)
            entries = self.service.index(ready_only=request.ready)
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

        return await self._answer("RepositoryIndex", context, True, index)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: aio.ServicerContext[Any, Any]) -> pb.RepositoryModelLoadResponse:
        async def load(call: Call) -> pb.RepositoryModelLoadResponse:
            self._check_repository(request.repository_name)
            self.service.check_load_parameters(_parameters(request.parameters))
            await self.service.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._answer("RepositoryModelLoad", context, True, load)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: aio.ServicerContext[Any, Any]) -> pb.RepositoryModelUnloadResponse:
        async def unload(call: Call) -> pb.RepositoryModelUnloadResponse:
            self._check_repository(request.repository_name)
            self.service.check_unload_parameters(_parameters(request.parameters))
            await self.service.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._answer("RepositoryModelUnload", context, True, unload)

    @staticmethod
    def _check_repository(name: str) -> None:
        if name:
            raise ServeError(404, f"unknown repository {name!r}: this server has one, named by leaving it empty")

    async def _answer(self, method: str, context: aio.ServicerContext[Any, Any], guarded: bool,
                      handler: Callable[[Call], Awaitable[T]]) -> T:
        call = Call()
        metadata = dict(context.invocation_metadata() or ())
        if self.tracing is None:
            return await self._handle(method, context, metadata, guarded, handler, call)
        return await self.tracing.rpc(SERVICE_NAME, method, metadata, call,
                                      self._handle(method, context, metadata, guarded, handler, call))

    async def _handle(self, method: str, context: aio.ServicerContext[Any, Any], metadata: dict[str, Any],
                      guarded: bool, handler: Callable[[Call], Awaitable[T]], call: Call) -> T:
        """Auth (if `guarded`), the overload guard, the handler; errors as status codes; metrics and the log."""
        start = time.perf_counter()
        status = 500
        frontdoor = self.frontdoor
        frontdoor.in_flight += 1
        self._calls.add(call)
        try:
            call.request_id = frontdoor.request_id(_metadata_bytes(metadata.get("x-request-id")))
            if guarded:
                self.service.authorize(_metadata_bytes(metadata.get("authorization")))
            limit = self.service.settings.max_concurrency
            if limit and frontdoor.in_flight > limit:
                raise ServeError(503, "overloaded: too many requests in flight, retry shortly")
            answer = await handler(call)
            status = 200
            return answer
        except ServeError as exc:
            status = exc.status
            code = CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            call.code = code.value[0]
            await context.abort(code, exc.message)
        except Exception:
            logger.exception("unexpected error on gRPC %s", method)
            call.code = grpc.StatusCode.INTERNAL.value[0]
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        finally:
            frontdoor.in_flight -= 1
            self._calls.discard(call)
            self._record(method, context, call, status, time.perf_counter() - start)
        raise AssertionError("context.abort returned")  # it raises; this line tells the type checker

    def _record(self, method: str, context: aio.ServicerContext[Any, Any], call: Call, status: int,
                seconds: float) -> None:
        service = self.service
        service.metrics.observe(f"grpc:{method}", call.model, call.version, status, seconds, call.rows)
        if service.settings.access_log != "off":
            log_access(service.access_log, service.settings.access_log, context.peer(), "GRPC",
                       f"/{SERVICE_NAME}/{method}", status, seconds, call.request_id, call.model, call.version,
                       call.trace_id)


class Call:
    """What one RPC's metrics, access log line and span need, filled in as the handler learns it."""

    __slots__ = ("code", "model", "request_id", "rows", "trace_id", "version")

    def __init__(self) -> None:
        self.model = self.version = self.trace_id = ""
        self.rows = self.code = 0  # code: the gRPC status code's number, 0 (OK) unless aborted
        self.request_id = b""


async def _now(value: T) -> T:
    return value


def _metadata_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode("latin-1") if isinstance(value, str) else value


async def start(service: Service, frontdoor: Frontdoor, tracing: Tracing | None) -> aio.Server:
    """The gRPC server on the HTTP server's host and the gRPC port, serving in this event loop."""
    settings = service.settings
    # A message over the body limit is refused by grpc itself, with RESOURCE_EXHAUSTED.
    options = [("grpc.max_receive_message_length", settings.max_body_bytes),
               ("grpc.max_send_message_length", -1)]
    server = aio.server(options=options)
    # The generated module has no type hints (grpcio-tools writes .pyi stubs for the messages only).
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(service, frontdoor, tracing), server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(Health(service), server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    # Several workers bind the same port: grpc sets SO_REUSEPORT on Linux, and the kernel spreads connections.
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else \
        f"{settings.host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    return server


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # grpcio-health-checking is untyped
    """grpc.health.v1: SERVING while the server is ready (every model it should serve is loaded), for the
    server ("") and for the inference service."""

    def __init__(self, service: Service):
        self.service = service

    async def Check(self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext[Any, Any]
                    ) -> health_pb2.HealthCheckResponse:
        if request.service not in ("", SERVICE_NAME):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = health_pb2.HealthCheckResponse.SERVING if self.service.ready else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=serving)
