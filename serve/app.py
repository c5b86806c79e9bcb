"""The HTTP layer: every route in one list; endpoints translate HTTP to the Service and back.

The prediction route is a plain ASGI callable: it is the hot path, and Starlette's Request and
Response objects would cost more than the model.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.asgi import check_json_content_type, header, read_body, send_json
from serve.errors import ServeError
from serve.middleware import Frontdoor
from serve.service import Service
from serve.settings import Settings


def service_of(scope: Scope) -> Service:
    service: Service = scope["app"].service
    return service


def check_auth(service: Service, scope: Scope) -> None:
    token = service.settings.auth_token
    if not token:
        return
    given = header(scope, b"authorization") or b""
    if not hmac.compare_digest(given, b"Bearer " + token.encode()):
        raise ServeError(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


class Predict:
    """POST /models/{model}/predict: one record or {"instances": [...]} -> prediction(s) and warnings."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        check_auth(service, scope)
        model = service.model(scope["path_params"]["model"])
        check_json_content_type(scope)
        body = await read_body(scope, receive, service.settings.max_body_bytes)
        codec = service.codecs[model.name]
        x, batch = codec.decode(body)
        y = model.predict(x)
        scope["serve.rows"] = len(y)
        await send_json(send, codec.encode(x, y, batch))


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


# The router tries routes in order: the hot prediction route comes first.
routes = [
    Route("/models/{model}/predict", Predict(), methods=["POST"]),
    Route("/", landing_page),
    Route("/health/live", live),
    Route("/health/ready", ready),
    Route("/metrics", metrics),
    Route("/openapi.json", openapi_document),
    Route("/models", list_models),
    Route("/models/{model}", model_metadata),
]


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI application; models load in its lifespan, so readiness means loaded and warmed."""
    service = Service(settings or Settings.from_env(), [route.path for route in routes])

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        service.start()
        yield

    return Frontdoor(Router(routes=routes, lifespan=lifespan), service)
