"""Request dispatch: the prediction paths of the loaded models by one dict lookup, the rest by Starlette's router.

The router tries its routes one by one, a regex each, and copies scopes on the way: ~2 us a request,
as much as decoding the request. Once the models are loaded, every path a prediction can take is known.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send


class Dispatch:
    def __init__(self, router: Router):
        self.router = router
        self._exact: dict[str, tuple[Route, str]] = {}

    def index(self, models: Iterable[str]) -> None:
        """Look up every POST route whose only parameter is the model, spelled out for each model."""
        self._exact = {
            route.path.replace("{model}", name): (route, name)
            for route in self.router.routes
            if isinstance(route, Route) and route.methods == {"POST"} and route.param_convertors.keys() == {"model"}
            for name in models
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With a root path the router strips it before matching; such deployments take the general way.
        hit = (self._exact.get(scope["path"])
               if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path") else None)
        if hit is None:
            await self.router(scope, receive, send)
            return
        route, model = hit
        # What the router would have put in the scope for this route.
        scope["router"], scope["route"], scope["endpoint"] = self.router, route, route.endpoint
        scope["path_params"] = {"model": model}
        await route.app(scope, receive, send)
