"""OpenTelemetry traces (`--otlp-endpoint`): a server span per HTTP request and gRPC call, continuing
the caller's W3C `traceparent`, with children `decode`, `model` and `encode`, exported over OTLP/HTTP
by a background thread.

Imported only when tracing is on: without it no opentelemetry module loads and no request does any
tracing work, since nothing here sits on the untraced path. The children are timed from the
boundaries the request passes anyway (the body's last byte, the model call, the answer) and written
when the request ends, so the endpoints and protocol modules know nothing of tracing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import numpy as np
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve import __version__
from serve.asgi import header
from serve.middleware import TRACE_ID
from serve.service import SERVER_METADATA, Service
from serve.settings import Settings
from serve.store import Served

T = TypeVar("T")
TRACES_PATH = "/v1/traces"
FLUSH_SECONDS = 3.0
# gRPC codes that make a server span an error (OpenTelemetry's RPC conventions): UNKNOWN, DEADLINE_EXCEEDED,
# UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. The others are the caller's mistakes.
_GRPC_SERVER_ERRORS = frozenset((2, 4, 12, 13, 14, 15))
_PROPAGATOR = TraceContextTextMapPropagator()


class Stages:
    """When a request's body was in and its model call began and ended (ns since the epoch; 0: not yet)."""

    __slots__ = ("body_read", "model_end", "model_start")

    def __init__(self, started: int):
        self.body_read = started  # a gRPC message is in when its call starts; HTTP moves it to the body's end
        self.model_start = self.model_end = 0


# The stages of the request this task serves: each HTTP request and each RPC runs in a task of its own.
_stages: ContextVar[Stages] = ContextVar("serve_stages")


class TimedService(Service):
    """The service layer, noting when each request's model call (predict or explain) begins and ends."""

    @staticmethod
    async def predict(served: Served, x: np.ndarray) -> np.ndarray:
        with _model_call():
            return await Service.predict(served, x)

    @staticmethod
    async def explain(served: Served, x: np.ndarray) -> dict[str, np.ndarray]:
        with _model_call():
            return await Service.explain(served, x)


@contextmanager
def _model_call() -> Iterator[None]:
    stages = _stages.get()  # every protocol calls the model within a request, so within its span
    stages.model_start = time.time_ns()
    try:
        yield
    finally:
        stages.model_end = time.time_ns()


class RpcCall(Protocol):
    """What an RPC's span needs from serve.rpc's Call (not imported: its stubs must load only with gRPC on)."""

    model: str
    version: str
    rows: int
    code: int
    trace_id: str


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: the endpoint as given, or with /v1/traces when it names only the collector."""
    return endpoint if urlsplit(endpoint).path.strip("/") else endpoint.rstrip("/") + TRACES_PATH


class Tracing:
    """One worker's tracer provider, exporter and the spans it writes."""

    def __init__(self, settings: Settings):
        # Each worker is an instance of its own: its provider, its export thread, its id.
        resource = Resource.create({SERVICE_NAME: SERVER_METADATA["name"], SERVICE_VERSION: __version__,
                                    SERVICE_INSTANCE_ID: str(uuid.uuid4())})
        # Shut down by the lifespan, within a bound; the SDK's own exit hook would wait as long as exports retry.
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        # Export in batches from the processor's thread: a slow or absent collector never holds a request.
        exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("serve", __version__)

    @staticmethod
    def service(settings: Settings) -> Service:
        """The service layer to serve with: one that times each request's model call for its span."""
        return TimedService(settings)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        return TracedHttp(app, self)

    def shutdown(self) -> None:
        """Export what is still queued, giving up after FLUSH_SECONDS: an absent collector (each export
        retrying for 10 s) must not hold up a stop."""
        flush = threading.Thread(target=self.provider.shutdown, name="otlp-flush", daemon=True)
        flush.start()
        flush.join(FLUSH_SECONDS)

    def start(self, name: str, traceparent: bytes | str | None, tracestate: bytes | str | None,
              start: int) -> Span:
        """A server span continuing the caller's trace, or starting one if `traceparent` is absent or malformed."""
        carrier = {key: value.decode("latin-1") if isinstance(value, bytes) else value
                   for key, value in (("traceparent", traceparent), ("tracestate", tracestate)) if value}
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        return self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, start_time=start)

    def end(self, span: Span, stages: Stages, answered: int, error: bool) -> None:
        """The stage spans of a request that reached its model, then the server span itself."""
        if stages.model_start:
            context = set_span_in_context(span, Context())
            for name, begin, finish in (("decode", stages.body_read, stages.model_start),
                                        ("model", stages.model_start, stages.model_end),
                                        ("encode", stages.model_end, answered)):
                self.tracer.start_span(name, context=context, start_time=begin).end(end_time=finish)
        if error:
            span.set_status(StatusCode.ERROR)
        span.end(end_time=answered)

    async def rpc(self, service: str, method: str, metadata: dict[str, Any], call: RpcCall,
                  handle: Awaitable[T]) -> T:
        """`handle` (one RPC) within its server span."""
        start = time.time_ns()
        span = self.start(f"{service}/{method}", metadata.get("traceparent"), metadata.get("tracestate"), start)
        call.trace_id = trace_id(span)
        stages = Stages(start)
        token = _stages.set(stages)
        try:
            return await handle
        finally:
            _stages.reset(token)
            if span.is_recording():
                span.set_attributes({"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                                     "rpc.grpc.status_code": call.code,
                                     **_model_attributes(call.model, call.version, call.rows)})
                self.end(span, stages, time.time_ns(), call.code in _GRPC_SERVER_ERRORS)


class TracedHttp:
    """The outermost ASGI layer when tracing: a server span around each HTTP request the front door handles."""

    def __init__(self, app: ASGIApp, tracing: Tracing):
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.time_ns()
        span = self.tracing.start(scope["method"], header(scope, b"traceparent"), header(scope, b"tracestate"), start)
        scope[TRACE_ID] = trace_id(span)
        stages = Stages(start)
        status = 500  # unless a response starts
        answered = 0

        async def receive_timed() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                stages.body_read = time.time_ns()
            return message

        async def send_timed(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], time.time_ns()
            await send(message)

        token = _stages.set(stages)
        try:
            await self.app(scope, receive_timed, send_timed)
        finally:
            _stages.reset(token)
            if span.is_recording():  # a trace sampled out, by the caller or OTEL_TRACES_SAMPLER, is spared the rest
                route = scope.get("route")
                if route is not None:
                    span.update_name(f"{scope['method']} {route.path}")
                span.set_attributes(_http_attributes(scope, status, route.path if route is not None else None))
                self.tracing.end(span, stages, answered or time.time_ns(), status >= 500)


def trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def _http_attributes(scope: Scope, status: int, route: str | None) -> dict[str, Any]:
    """OpenTelemetry's HTTP server span attributes, and the model's."""
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"], "url.path": scope["path"], "url.scheme": scope.get("scheme", "http"),
        "http.response.status_code": status, "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if route is not None:
        attributes["http.route"] = route
    if status >= 500:
        attributes["error.type"] = str(status)
    if client := scope.get("client"):
        attributes["client.address"], attributes["client.port"] = client
    if server := scope.get("server"):
        attributes["server.address"], attributes["server.port"] = server
    if user_agent := header(scope, b"user-agent"):
        attributes["user_agent.original"] = user_agent.decode("latin-1")
    version = scope.get("serve.version", "")
    model = scope["path_params"]["model"] if version else ""
    return {**attributes, **_model_attributes(model, version, scope.get("serve.rows", 0))}


def _model_attributes(model: str, version: str, rows: int) -> dict[str, Any]:
    """The model, version and rows of a request that a model version answered."""
    return {"model": model, "model.version": version, "rows": rows} if version else {}
