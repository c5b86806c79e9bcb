"""The HTTP layer: every route in one list; endpoints translate HTTP to the Service and back.

The prediction route is a plain ASGI callable: it is the hot path, and Starlette's Request and
Response objects would cost more than the model.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.asgi import check_json_content_type, header, send_json
from serve.codec import json_type_name, parse_json
from serve.dispatch import Dispatch
from serve.errors import ServeError
from serve.middleware import Frontdoor
from serve.service import SERVER_METADATA, Service
from serve.settings import Settings
from serve.v2 import BINARY_HEADER

if TYPE_CHECKING:
    from serve.tracing import Tracing

# Seconds between looks at the shared load/unload intent when several workers run without --watch.
SHARED_INTENT_INTERVAL = 1.0
# Measured at c=64, one record per request: the collector took ~3.4 us a request, half of it in full collections
# of ~17 ms each that walked every object of the start-up (modules, sessions, metadata). Those are frozen out of
# every collection once the models are in, and the young generation is collected when 10,000 objects outlive
# their requests instead of 700 (the default collected every ~90 requests; at 10,000 a run of 80,000 requests
# needed none).
GC_YOUNG_THRESHOLD = 10_000


def service_of(scope: Scope) -> Service:
    service: Service = scope["app"].service
    return service


def check_auth(service: Service, scope: Scope) -> None:
    service.authorize(header(scope, b"authorization"))


class Predict:
    """POST /models/{model}[/versions/{version}]/predict: one record or {"instances": [...]} -> prediction(s);
    with `explain`, .../explain: the same bodies, each prediction with its interval and contributions."""

    def __init__(self, explain: bool = False):
        self.explain = explain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        check_auth(service, scope)
        check_json_content_type(scope)
        body = await scope["app"].bodies.read(scope, receive)
        params = scope["path_params"]
        # Taken after the body: from here to the model call nothing awaits, so an unload waits for this request.
        if self.explain:
            served = service.resolve_explainable(params["model"], params.get("version"))
        else:
            served = service.resolve(params["model"], params.get("version"))
        scope["serve.version"] = served.model.version
        x, batch = served.codec.decode(body)
        if self.explain:
            answer = served.codec.encode_explanation(x, await service.explain(served, x), batch)
        else:
            answer = served.codec.encode(x, await service.predict(served, x), batch)
        scope["serve.rows"] = len(x)
        await send_json(send, answer)


class Infer:
    """POST /v2/models/{model}[/versions/{version}]/infer: the Open Inference Protocol, JSON or binary tensors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        check_auth(service, scope)
        body = await scope["app"].bodies.read(scope, receive)
        params = scope["path_params"]
        served = service.resolve(params["model"], params.get("version"))
        scope["serve.version"] = served.model.version
        request = served.v2_codec.decode(body, header(scope, BINARY_HEADER))
        outputs = await service.infer(served, request.x, request.outputs)
        scope["serve.rows"] = len(request.x)
        response, headers = served.v2_codec.encode(request, outputs)
        await send_json(send, response, 200, headers)


async def not_a_prediction_route(request: Request) -> Response:
    """POST /, where the workshop's notebook sent its requests: a 405 that names the routes to use instead."""
    models = list(service_of(request.scope).store.snapshot.latest)
    raise ServeError(405, "POST / is not a prediction route; use POST /models/{model}/predict or "
                     f"POST /v2/models/{{model}}/infer (models: {', '.join(models)})",
                     headers={"Allow": "GET, HEAD"}, models=models)


async def live(request: Request) -> Response:
    return JSONResponse({"status": "live"})


async def ready(request: Request) -> Response:
    if not service_of(request.scope).ready:
        raise ServeError(503, "not ready: models are loading")
    return JSONResponse({"status": "ready"})


async def list_models(request: Request) -> Response:
    return JSONResponse({"models": service_of(request.scope).models()})


async def model_metadata(request: Request) -> Response:
    params = request.path_params
    return Response(service_of(request.scope).model_document(params["model"], params.get("version")),
                    media_type="application/json")


async def plot(request: Request) -> Response:
    """The predicted-vs-actual plot of a version's model card, when its folder has one."""
    params = request.path_params
    served = service_of(request.scope).resolve(params["model"], params["version"])
    if served.plot is None:
        raise ServeError(404, f"model {served.model.name!r} version {served.model.version} has no plot "
                         "(model.png beside its model.onnx)")
    return Response(served.plot, media_type="image/png")


async def metrics(request: Request) -> Response:
    return Response(service_of(request.scope).exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def drift_report(request: Request) -> Response:
    params = request.path_params
    return Response(service_of(request.scope).drift_document(params["model"], params.get("version")),
                    media_type="application/json")


async def openapi_document(request: Request) -> Response:
    return Response(service_of(request.scope).openapi, media_type="application/json")


async def landing_page(request: Request) -> Response:
    return HTMLResponse(service_of(request.scope).page)


async def v2_server(request: Request) -> Response:
    return JSONResponse(SERVER_METADATA)


async def v2_model(request: Request) -> Response:
    params = request.path_params
    return Response(service_of(request.scope).v2_model_document(params["model"], params.get("version")),
                    media_type="application/json")


async def v2_model_ready(request: Request) -> Response:
    service = service_of(request.scope)
    served = service.resolve(request.path_params["model"], request.path_params.get("version"))
    return JSONResponse({"name": served.model.name, "version": served.model.version, "ready": True})


async def repository_index(request: Request) -> Response:
    """Triton's repository extension: every version in the store, with its state and why."""
    service = service_of(request.scope)
    check_auth(service, request.scope)
    body = await _repository_body(request, {"ready": bool})
    return JSONResponse(service.index(ready_only=body.get("ready") is True))


async def repository_load(request: Request) -> Response:
    service = service_of(request.scope)
    check_auth(service, request.scope)
    service.check_load_parameters((await _repository_body(request, {"parameters": dict})).get("parameters", {}))
    await service.load(request.path_params["model"])
    return JSONResponse({})


async def repository_unload(request: Request) -> Response:
    service = service_of(request.scope)
    check_auth(service, request.scope)
    service.check_unload_parameters((await _repository_body(request, {"parameters": dict})).get("parameters", {}))
    await service.unload(request.path_params["model"])
    return JSONResponse({})


async def _repository_body(request: Request, fields: dict[str, type]) -> dict[str, Any]:
    """A repository call's optional JSON object (tritonclient sends none, or `{}`), with only `fields`."""
    raw: bytes = await request.scope["app"].bodies.read(request.scope, request.receive)
    if not raw.strip():
        return {}
    body, _ = parse_json(raw)
    if type(body) is not dict:
        raise ServeError(400, f"the request body must be a JSON object, got {json_type_name(body)}")
    for key, value in body.items():
        if key not in fields or type(value) is not fields[key]:
            expected = ", ".join(f"{name} ({kind.__name__})" for name, kind in fields.items())
            raise ServeError(400, f"unexpected field {key!r} ({json_type_name(value)}) in the request body; "
                             f"it takes {expected}")
    return body


# The router tries routes in order: the hot prediction routes come first.
routes = [
    Route("/v2/models/{model}/infer", Infer(), methods=["POST"]),
    Route("/models/{model}/predict", Predict(), methods=["POST"]),
    Route("/v2/models/{model}/versions/{version}/infer", Infer(), methods=["POST"]),
    Route("/models/{model}/versions/{version}/predict", Predict(), methods=["POST"]),
    Route("/models/{model}/explain", Predict(explain=True), methods=["POST"]),
    Route("/models/{model}/versions/{version}/explain", Predict(explain=True), methods=["POST"]),
    Route("/", landing_page),
    Route("/", not_a_prediction_route, methods=["POST"]),
    Route("/health/live", live),
    Route("/health/ready", ready),
    Route("/metrics", metrics),
    Route("/openapi.json", openapi_document),
    Route("/models", list_models),
    Route("/models/{model}", model_metadata),
    Route("/models/{model}/versions/{version}", model_metadata),
    Route("/models/{model}/drift", drift_report),
    Route("/models/{model}/versions/{version}/drift", drift_report),
    Route("/models/{model}/versions/{version}/plot.png", plot),
    # Open Inference Protocol (KServe V2)
    Route("/v2", v2_server),
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2/models/{model}", v2_model),
    Route("/v2/models/{model}/versions/{version}", v2_model),
    Route("/v2/models/{model}/ready", v2_model_ready),
    Route("/v2/models/{model}/versions/{version}/ready", v2_model_ready),
    # Triton's model repository extension
    Route("/v2/repository/index", repository_index, methods=["POST"]),
    Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
    Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
]


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI application; models load in its lifespan, so readiness means loaded and warmed."""
    settings = settings or Settings.from_env()
    tracing: Tracing | None = None
    if settings.otlp_endpoint:
        # Imported only when on: an untraced server loads no opentelemetry module at all.
        from serve.tracing import Tracing

        tracing = Tracing(settings)
    service = Service(settings) if tracing is None else tracing.service(settings)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.start()
        grpc_server = None
        if settings.grpc_port:
            # Imported here: an app without gRPC (--grpc-port 0, the tests' in-process app) never registers the
            # stubs' protobuf messages, which would clash with a client's in the same process (kserve/kserve#3099).
            from serve import rpc

            grpc_server = await rpc.start(service, frontdoor, tracing)
        tasks = [asyncio.create_task(frontdoor.bodies.watch())]
        # With several workers each one looks at the shared load/unload intent, even without --watch.
        interval = settings.watch or (SHARED_INTENT_INTERVAL if settings.shared_dir else 0)
        if interval:
            tasks.append(asyncio.create_task(service.store.watch(interval, rescan=bool(settings.watch))))
        loop = asyncio.get_running_loop()
        # A server's main thread (its signals, its collector); not a test client's, which runs the app in a thread
        # of its own.
        handles_signals = threading.current_thread() is threading.main_thread()
        if handles_signals:
            loop.add_signal_handler(signal.SIGHUP, lambda: tasks.append(asyncio.create_task(service.store.reconcile())))
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        yield
        if handles_signals:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        if grpc_server is not None:  # uvicorn has drained HTTP; now new RPCs are refused and those in flight finish
            await grpc_server.stop(settings.graceful_timeout)
        await service.store.close()
        if tracing is not None:
            tracing.shutdown()
        # Every request and RPC has been answered and logged: their lines reach stdout before the worker exits.
        service.access_log.close()

    dispatch = Dispatch(Router(routes=routes, lifespan=lifespan))
    service.store.on_change(lambda snapshot: dispatch.index(snapshot.latest))
    frontdoor = Frontdoor(dispatch, service)
    return frontdoor if tracing is None else tracing.wrap(frontdoor)
