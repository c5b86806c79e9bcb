"""The service layer every protocol calls: models and their versions, their documents, the repository
(index, load, unload). Built on the model store; knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from serve import __version__, drift, openapi, page
from serve.accesslog import AccessLog
from serve.errors import ServeError
from serve.intent import Intent
from serve.metrics import Metrics
from serve.model import EXPLANATION_OUTPUTS
from serve.settings import Settings
from serve.store import ModelStore, Served, Snapshot, State

INTENT_FILE = "repository.json"
# The Open Inference Protocol's server metadata, the same over REST and gRPC.
SERVER_METADATA: dict[str, Any] = {"name": "housing-serving", "version": __version__,
                                   "extensions": ["binary_tensor_data", "model_repository"]}


@dataclass
class Service:
    settings: Settings
    store: ModelStore = field(init=False)
    metrics: Metrics = field(init=False)
    access_log: AccessLog = field(init=False)
    # Rebuilt whenever what is served changes; requests only read them.
    openapi: bytes = b""
    page: str = ""

    def __post_init__(self) -> None:
        shared = self.settings.shared_dir
        self.store = ModelStore(self.settings, Intent(Path(shared) / INTENT_FILE if shared else None))
        self.store.on_change(self._rebuild_documents)
        self.metrics = Metrics(shared)
        self.access_log = AccessLog(self.settings.access_log_buffer, self.metrics.access_log_dropped)

    async def start(self) -> None:
        """Load and warm every version the store holds; readiness follows."""
        await self.store.start()

    @property
    def ready(self) -> bool:
        return self.store.ready

    def authorize(self, authorization: bytes | None) -> None:
        """401 unless a token is set and `authorization` (the header or gRPC metadata) is `Bearer <token>`."""
        token = self.settings.auth_token
        if not token:
            return
        scheme, _, credentials = (authorization or b"").partition(b" ")
        # The scheme name is case-insensitive (RFC 9110); the token is compared in constant time.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials, token.encode()):
            raise ServeError(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def resolve(self, name: str, version: str | None = None) -> Served:
        """The version a request runs on: the named one, or the model's newest ready version."""
        return self.store.snapshot.resolve(name, version)

    @staticmethod
    async def predict(served: Served, x: np.ndarray) -> np.ndarray:
        """`served`'s predictions for `x`, counted in flight so that an unload waits for them. Every
        protocol calls it with no await since it resolved `served`: the version cannot go in between."""
        served.in_flight += 1
        try:
            y = await served.coalescer.predict(x)
        finally:
            served.in_flight -= 1
        served.drift.count(x)  # here, where every protocol's rows pass once
        return y

    def resolve_explainable(self, name: str, version: str | None = None) -> Served:
        """As `resolve`, but a version whose file has no explanation outputs is a 409, before the body is judged."""
        served = self.resolve(name, version)
        if not served.model.explainable:
            model = served.model
            raise ServeError(409, f"model {model.name!r} version {model.version} has no explanation outputs "
                             f"({', '.join(EXPLANATION_OUTPUTS)}): its file was exported before them; it still "
                             "predicts", model=model.name, version=model.version)
        return served

    @staticmethod
    async def explain(served: Served, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of `served`'s graph for `x`, counted in flight as `predict` is, so that an unload waits for
        it. In a worker thread (onnxruntime releases the GIL): the MLP's exact Shapley values take ~2 ms a row
        (8,192 network evaluations), so a 10,000-row batch would otherwise stop every other request for 20 s."""
        served.in_flight += 1
        try:
            outputs = await asyncio.to_thread(served.model.explain, x)
        finally:
            served.in_flight -= 1
        served.drift.count(x)  # explained rows are rows the version saw, as predicted ones are
        return outputs

    @classmethod
    async def infer(cls, served: Served, x: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The named outputs for `x`, always with MEDV: MEDV alone by `predict`, which fetches nothing else,
        and by `explain` when the request names any other output (the V2 codec checked that it exists)."""
        model = served.model
        if {model.output_name}.issuperset(outputs):
            return {model.output_name: await cls.predict(served, x)}
        return await cls.explain(served, x)

    def models(self) -> list[dict[str, Any]]:
        return [{"name": name, "version": served.model.version, "description": served.model.description,
                 "predict": f"/models/{name}/predict", "versions": self._versions(name)}
                for name, served in self.store.snapshot.latest.items()]

    def model_document(self, name: str, version: str | None = None) -> bytes:
        return orjson.dumps({**self.resolve(name, version).document, "versions": self._versions(name)})

    def drift_document(self, name: str, version: str | None = None) -> bytes:
        return orjson.dumps(self.resolve(name, version).drift.document())

    def exposition(self) -> str:
        """GET /metrics: the request metrics, readiness, then the drift series of every ready version."""
        ready = [served.drift for by_version in self.store.snapshot.versions.values() for served in by_version.values()]
        readiness = ("# HELP serve_ready 1 while every model has a version ready (GET /health/ready answers 200).\n"
                     f"# TYPE serve_ready gauge\nserve_ready {int(self.ready)}\n")
        return self.metrics.exposition() + readiness + drift.exposition(ready)

    def v2_model(self, name: str, version: str | None = None) -> dict[str, Any]:
        served = self.resolve(name, version)
        return {**served.v2_document, "versions": list(self.store.snapshot.versions[name])}

    def v2_model_document(self, name: str, version: str | None = None) -> bytes:
        return orjson.dumps(self.v2_model(name, version))

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return [{"name": e.name, "version": e.version, "state": e.state.value, "reason": e.reason}
                for e in self.store.index() if not ready_only or e.state == State.READY]

    @staticmethod
    def check_load_parameters(parameters: dict[str, Any]) -> None:
        if parameters:
            raise ServeError(400, f"load parameters {', '.join(map(repr, parameters))} are not supported: load "
                             "takes the model from the model store as it is; write a new "
                             "<model>/<version>/model.onnx instead")

    @staticmethod
    def check_unload_parameters(parameters: dict[str, Any]) -> None:
        if parameters.keys() - {"unload_dependents"} or type(parameters.get("unload_dependents", False)) is not bool:
            raise ServeError(400, "unload takes only the parameter unload_dependents (a boolean; no model here has "
                             f"dependents), got {sorted(parameters)}")

    async def load(self, name: str) -> None:
        """Serve the model again if it was unloaded, and (re)load whatever changed in its folder."""
        self._check_in_store(name)
        self.store.forget_refusals(name)
        self.store.intent.set_loaded(name, True)
        await self.store.reconcile()
        if name not in self.store.snapshot.latest:
            reasons = "; ".join(f"version {e.version}: {e.reason}" for e in self.store.index() if e.name == name)
            raise ServeError(400, f"failed to load {name!r}: {reasons or 'no version'}", model=name)

    async def unload(self, name: str) -> None:
        """Stop serving every version of the model, once their in-flight requests have finished."""
        self._check_in_store(name)
        self.store.intent.set_loaded(name, False)
        await self.store.reconcile()

    def _check_in_store(self, name: str) -> None:
        if not name or name.startswith(".") or not (self.settings.model_dir / name).is_dir():
            raise ServeError(404, f"no model {name!r} in the model store", model=name)

    def _versions(self, name: str) -> list[dict[str, str]]:
        return [{"version": e["version"], "state": e["state"], "reason": e["reason"]}
                for e in self.index() if e["name"] == name]

    def _rebuild_documents(self, snapshot: Snapshot) -> None:
        versions = {name: {v: s.model for v, s in by_version.items()} for name, by_version in snapshot.versions.items()}
        auth = bool(self.settings.auth_token)
        self.openapi = orjson.dumps(openapi.document(versions, self.settings.max_batch, auth))
        self.page = page.render(snapshot.latest, auth)
