"""The dispatch's dict lookup for prediction paths routes exactly as Starlette's router does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.exceptions import HTTPException
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from serve.app import routes
from serve.dispatch import Dispatch

MODELS = ["linear", "mlp"]


class Recorder:
    """Stands in for an endpoint: notes which route the request reached, with which parameters."""

    def __init__(self, seen: list[Any]):
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append((scope["route"].path, scope["endpoint"], scope["path_params"]))


def resolve(app: Any, seen: list[Any], method: str, path: str) -> Any:
    """Where a request ends: the route reached, an error raised, or a response sent (a redirect)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b"",
             "scheme": "http", "server": ("127.0.0.1", 80), "app": None}
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message.get("status"))

    try:
        asyncio.run(app(scope, None, send))
    except HTTPException as exc:
        return "raised", exc.status_code
    if sent:
        return "sent", sent[0]
    (reached,) = seen
    seen.clear()
    return reached[0], type(reached[1]).__name__, reached[2]


def recording_router(seen: list[Any]) -> Router:
    """The app's routes, each answered by a recorder, in the same order."""
    return Router(routes=[Route(route.path, Recorder(seen), methods=route.methods) for route in routes
                          if isinstance(route, Route)])


REQUESTS = [(method, path.replace("{model}", model)) for model in [*MODELS, "unknown"]
            for method in ("POST", "GET") for path in [
                "/v2/models/{model}/infer", "/models/{model}/predict", "/v2/models/{model}/versions/1/infer",
                "/models/{model}/explain", "/models/{model}/versions/1/explain",
                "/v2/models/{model}", "/models/{model}", "/models/{model}/predict/", "/nowhere/{model}",
                "/models/{model}/versions/1/predict", "/v2/repository/models/{model}/load"]]


@pytest.mark.parametrize("method, path", REQUESTS)
def test_every_request_reaches_the_route_and_parameters_the_router_gives(method: str, path: str) -> None:
    seen: list[Any] = []
    router = recording_router(seen)
    dispatch = Dispatch(router)
    dispatch.index(MODELS)
    assert resolve(dispatch, seen, method, path) == resolve(router, seen, method, path)


def test_the_lookup_holds_the_post_routes_of_each_loaded_model_that_take_only_the_model() -> None:
    dispatch = Dispatch(recording_router([]))
    dispatch.index(MODELS)
    assert sorted(dispatch._exact) == sorted(f"{prefix}{model}{suffix}" for model in MODELS for prefix, suffix in [
        ("/v2/models/", "/infer"), ("/models/", "/predict"), ("/models/", "/explain"),
        ("/v2/repository/models/", "/load"), ("/v2/repository/models/", "/unload")])
