"""The HTTP layer: every route in one list; endpoints translate HTTP to the Service and back.

The prediction route is a plain ASGI callable: it is the hot path, and Starlette's Request and
Response objects would cost more than the model.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from serve import __version__
from serve.asgi import check_json_content_type, header, send_json
from serve.dispatch import Dispatch
from serve.errors import ServeError
from serve.middleware import Frontdoor
from serve.service import Service
from serve.settings import Settings
from serve.v2 import BINARY_HEADER


def service_of(scope: Scope) -> Service:
    service: Service = scope["app"].service
    return service


def check_auth(service: Service, scope: Scope) -> None:
    token = service.settings.auth_token
    if not token:
        return
    scheme, _, credentials = (header(scope, b"authorization") or b"").partition(b" ")
    # The scheme name is case-insensitive (RFC 9110); the token is compared in constant time.
    if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials, token.encode()):
        raise ServeError(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


class Predict:
    """POST /models/{model}/predict: one record or {"instances": [...]} -> prediction(s) and warnings."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        check_auth(service, scope)
        model = service.model(scope["path_params"]["model"])
        check_json_content_type(scope)
        body = await scope["app"].bodies.read(scope, receive)
        codec = service.codecs[model.name]
        x, batch = codec.decode(body)
        y = await service.coalescers[model.name].predict(x)
        scope["serve.rows"] = len(y)
        await send_json(send, codec.encode(x, y, batch))


class Infer:
    """POST /v2/models/{model}[/versions/{version}]/infer: the Open Inference Protocol, JSON or binary tensors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        check_auth(service, scope)
        params = scope["path_params"]
        model = service.model(params["model"], params.get("version"))
        body = await scope["app"].bodies.read(scope, receive)
        codec = service.v2_codecs[model.name]
        request = codec.decode(body, header(scope, BINARY_HEADER))
        y = await service.coalescers[model.name].predict(request.x)
        scope["serve.rows"] = len(y)
        response, headers = codec.encode(request, y)
        await send_json(send, response, 200, headers)


async def not_a_prediction_route(request: Request) -> Response:
    """POST /, where the workshop's notebook sent its requests: a 405 that names the routes to use instead."""
    models = list(service_of(request.scope).models)
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
    return JSONResponse({"models": [
        {"name": m.name, "version": m.version, "description": m.description, "predict": f"/models/{m.name}/predict"}
        for m in service_of(request.scope).models.values()
    ]})


async def model_metadata(request: Request) -> Response:
    service = service_of(request.scope)
    model = service.model(request.path_params["model"])
    return Response(service.metadata[model.name], media_type="application/json")


async def metrics(request: Request) -> Response:
    exposition = service_of(request.scope).metrics
    assert exposition is not None
    return Response(exposition.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi_document(request: Request) -> Response:
    return Response(service_of(request.scope).openapi, media_type="application/json")


async def landing_page(request: Request) -> Response:
    return HTMLResponse(service_of(request.scope).page)


async def v2_server(request: Request) -> Response:
    return JSONResponse({"name": "housing-serving", "version": __version__, "extensions": ["binary_tensor_data"]})


async def v2_model(request: Request) -> Response:
    service = service_of(request.scope)
    model = service.model(request.path_params["model"], request.path_params.get("version"))
    return Response(service.v2_metadata[model.name], media_type="application/json")


async def v2_model_ready(request: Request) -> Response:
    service = service_of(request.scope)
    model = service.model(request.path_params["model"], request.path_params.get("version"))
    if not service.ready:
        raise ServeError(503, f"model {model.name!r} is not ready")
    return JSONResponse({"name": model.name, "ready": True})


# The router tries routes in order: the hot prediction routes come first.
routes = [
    Route("/v2/models/{model}/infer", Infer(), methods=["POST"]),
    Route("/models/{model}/predict", Predict(), methods=["POST"]),
    Route("/v2/models/{model}/versions/{version}/infer", Infer(), methods=["POST"]),
    Route("/", landing_page),
    Route("/", not_a_prediction_route, methods=["POST"]),
    Route("/health/live", live),
    Route("/health/ready", ready),
    Route("/metrics", metrics),
    Route("/openapi.json", openapi_document),
    Route("/models", list_models),
    Route("/models/{model}", model_metadata),
    # Open Inference Protocol (KServe V2)
    Route("/v2", v2_server),
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2/models/{model}", v2_model),
    Route("/v2/models/{model}/versions/{version}", v2_model),
    Route("/v2/models/{model}/ready", v2_model_ready),
    Route("/v2/models/{model}/versions/{version}/ready", v2_model_ready),
]


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI application; models load in its lifespan, so readiness means loaded and warmed."""
    service = Service(settings or Settings.from_env(), [route.path for route in routes])

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        service.start()
        dispatch.index(service.models)
        watchdog = asyncio.create_task(frontdoor.bodies.watch())
        yield
        watchdog.cancel()

    dispatch = Dispatch(Router(routes=routes, lifespan=lifespan))
    frontdoor = Frontdoor(dispatch, service)
    return frontdoor
