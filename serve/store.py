"""The model store: the one place that decides which model versions are served.

It reads `<model_dir>/<name>/<version>/model.onnx` (Triton's and KServe's layout). A version takes
traffic only once it has loaded, warmed up and reproduced its golden predictions; a file that fails
any step is refused with its reason, and what was serving keeps serving. Each change publishes a
new immutable `Snapshot`; a request takes the snapshot once, so it runs entirely on the version it
started on, and a swap is one reference assignment. An unloaded version's session is released
once its in-flight requests have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from serve import documents
from serve.batching import Coalescer
from serve.codec import RecordCodec
from serve.drift import Drift
from serve.errors import ModelLoadError, ServeError
from serve.intent import Intent
from serve.model import Model
from serve.policy import VersionPolicy
from serve.settings import Settings
from serve.v2 import V2Codec

logger = logging.getLogger("serve")

MODEL_FILE = "model.onnx"
# The model card's predicted-vs-actual plot, which export writes beside the model; optional.
PLOT_FILE = "model.png"
# How often an unload looks whether the version's last requests have finished.
_DRAIN_POLL_SECONDS = 0.005


class State(StrEnum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class Entry:
    """One row of the repository index."""

    name: str
    version: str
    state: State
    reason: str = ""


# (inode, size, modification time): a replaced or rewritten file has another.
Signature = tuple[int, int, int]


class Served:
    """A ready version and everything its requests use, built once when it loads. `in_flight` counts
    the requests running on it, so that an unload can wait for them before releasing the session."""

    __slots__ = ("coalescer", "codec", "document", "drift", "in_flight", "model", "plot", "signature", "v2_codec",
                 "v2_document")

    def __init__(self, model: Model, signature: Signature, settings: Settings):
        self.model = model
        self.signature = signature
        self.codec = RecordCodec(model, settings.max_batch)
        self.v2_codec = V2Codec(model, settings.max_batch)
        self.coalescer = Coalescer(model, settings.coalesce_rows)
        self.drift = Drift(model.name, model.version, model.drift_reference, settings.drift_window, settings.shared_dir,
                           model.range)
        self.document = documents.model(model)
        self.v2_document = documents.v2_model(model)
        self.plot = _read_plot(model.path.with_name(PLOT_FILE))
        self.in_flight = 0


@dataclass(frozen=True)
class Snapshot:
    versions: dict[str, dict[str, Served]] = field(default_factory=dict)  # name -> version -> ready version
    latest: dict[str, Served] = field(default_factory=dict)  # name -> its newest ready version

    def resolve(self, name: str, version: str | None = None) -> Served:
        served = self.latest.get(name) if version is None else self.versions.get(name, {}).get(version)
        if served is not None:
            return served
        if name not in self.latest:
            raise ServeError(404, f"unknown model {name!r}; available: {', '.join(self.latest)}",
                             models=list(self.latest))
        available = list(self.versions[name])
        raise ServeError(404, f"model {name!r} has no ready version {version!r}; ready: {', '.join(available)}",
                         versions=available)


@dataclass
class _Candidate:
    name: str
    version: str
    path: Path
    signature: Signature | None  # None: no readable model file
    problem: str = ""  # why the folder cannot hold a version at all


class ModelStore:
    def __init__(self, settings: Settings, intent: Intent):
        self.settings = settings
        self.directory = settings.model_dir
        self.policy = VersionPolicy.parse(settings.version_policy)
        self.intent = intent
        self.snapshot = Snapshot()
        self._entries: dict[tuple[str, str], Entry] = {}
        self._refused: dict[tuple[Path, Signature], str] = {}  # bad files are not retried until they change
        self._required: set[str] = set()  # models that should have a ready version
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[Snapshot], None]] = []

    def on_change(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """The first reconcile; raises unless every model in the store has a version that serves."""
        await self.reconcile()
        if not self._required:
            raise ModelLoadError(f"model store {self.directory} holds no <name>/<version>/{MODEL_FILE} "
                                 "(run `make export`)")
        missing = sorted(self._required - self.snapshot.latest.keys())
        if missing:
            reasons = "; ".join(f"{e.name} version {e.version}: {e.reason}" for e in self.index() if e.name in missing)
            raise ModelLoadError(f"no version of {', '.join(missing)} can serve: {reasons}")

    async def watch(self, interval: float, rescan: bool) -> None:
        """For the server's lifetime: every `interval` seconds reconcile, if `rescan`, or when another
        worker changed the load/unload intent. A failure is logged and the watch goes on."""
        while True:
            await asyncio.sleep(interval)
            if rescan or self.intent.changed():
                try:
                    await self.reconcile()
                except Exception:  # whatever went wrong, what serves keeps serving and the next tick retries
                    logger.exception("reconciling the model store %s failed", self.directory)

    async def close(self) -> None:
        """Unload everything (the server is stopping, or the launcher checked the store)."""
        async with self._lock:
            for name in list(self.snapshot.versions):
                for version in list(self._served(name)):
                    await self._retire(name, version, reason=None)

    @property
    def ready(self) -> bool:
        """Every model in the store that is not unloaded on purpose has a ready version."""
        return bool(self.snapshot.latest) and self._required <= self.snapshot.latest.keys()

    def index(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: (e.name, int(e.version) if e.version.isdigit() else 0))

    def forget_refusals(self, name: str) -> None:
        """An explicit load retries the model's refused files even if they have not changed."""
        self._refused = {key: reason for key, reason in self._refused.items() if key[0].parts[-3] != name}

    async def reconcile(self) -> None:
        """Make what is served match the store, the version policy and the load/unload intent."""
        async with self._lock:
            unloaded = self.intent.unloaded()
            found = self._scan()
            self._required = {name for name in found if name not in unloaded}
            present = {(c.name, c.version) for candidates in found.values() for c in candidates}
            self._entries = {key: entry for key, entry in self._entries.items()  # folders since removed go
                             if key in present or key[1] in self._served(key[0])}
            for name in sorted({*found, *self.snapshot.versions}):
                candidates = found.get(name, [])
                if name in unloaded:
                    await self._unload_model(name, candidates, "unloaded through the repository API")
                else:
                    await self._reconcile_model(name, candidates)

    def _scan(self) -> dict[str, list[_Candidate]]:
        if not self.directory.is_dir():
            raise ModelLoadError(f"model store {self.directory} does not exist")
        found: dict[str, list[_Candidate]] = {}
        for model_dir in sorted(p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                path = version_dir / MODEL_FILE
                candidate = _Candidate(model_dir.name, version_dir.name, path, _signature(path))
                if not (version_dir.name.isdigit() and int(version_dir.name) > 0):
                    candidate.problem = f"version folder {version_dir.name!r} is not a positive integer"
                elif candidate.signature is None:
                    candidate.problem = f"{model_dir.name}/{version_dir.name}/{MODEL_FILE} is missing or unreadable"
                found.setdefault(model_dir.name, []).append(candidate)
        return found

    async def _reconcile_model(self, name: str, candidates: list[_Candidate]) -> None:
        usable = {c.version: c for c in candidates if not c.problem}
        for version in [v for v in self._served(name) if v not in usable]:  # removed, or its file is gone
            await self._retire(name, version, reason=None)
        for candidate in candidates:
            if candidate.problem:
                self._set(candidate, State.UNAVAILABLE, candidate.problem)
        selected = self.policy.select(list(usable))
        excluded = f"not selected by the version policy {self.policy}"
        ready = 0
        # Newest first: under latest:N an older version serves only while a newer one cannot.
        for candidate in sorted(usable.values(), key=lambda c: -int(c.version)):
            current = self._served(name).get(candidate.version)
            if candidate.version not in selected or ready >= self.policy.limit:
                if current is not None:
                    await self._retire(name, candidate.version, reason=excluded)
                else:
                    self._set(candidate, State.UNAVAILABLE, excluded)
                continue
            if current is not None and current.signature == candidate.signature:
                ready += 1
                continue
            fresh = await self._load(candidate, replacing=current is not None)
            if fresh is not None:
                self._publish(name, {**self._served(name), candidate.version: fresh})
                if current is not None:
                    await self._drain_and_release(current)
            ready += fresh is not None or current is not None  # a refused replacement: the old file serves on

    async def _unload_model(self, name: str, candidates: list[_Candidate], reason: str) -> None:
        for version in list(self._served(name)):
            await self._retire(name, version, reason=None)
        for candidate in candidates:
            self._set(candidate, State.UNAVAILABLE, candidate.problem or reason)

    async def _load(self, candidate: _Candidate, replacing: bool) -> Served | None:
        assert candidate.signature is not None
        key = (candidate.path, candidate.signature)
        if key in self._refused:
            self._set(candidate, State.READY if replacing else State.UNAVAILABLE, self._refused[key])
            return None
        if not replacing:
            self._set(candidate, State.LOADING)
        try:
            model = await asyncio.to_thread(Model.load, candidate.path, self.settings.ort_threads)
            if (model.name, model.version) != (candidate.name, candidate.version):
                raise ModelLoadError(f"{candidate.path}: its metadata says model {model.name!r} version "
                                     f"{model.version!r}, its folder {candidate.name}/{candidate.version}")
        except ModelLoadError as exc:
            logger.error("refused %s version %s: %s", candidate.name, candidate.version, exc)
            # Clients see the file as the store names it, not where this machine keeps the store.
            reason = str(exc).replace(str(candidate.path), f"{candidate.name}/{candidate.version}/{MODEL_FILE}")
            self._refused[key] = reason
            if replacing:
                reason = f"still serving the previous file; its replacement was refused: {reason}"
            self._set(candidate, State.READY if replacing else State.UNAVAILABLE, reason)
            return None
        logger.info("loaded model %s version %s from %s", model.name, model.version, candidate.path)
        self._set(candidate, State.READY)
        return Served(model, candidate.signature, self.settings)

    def _served(self, name: str) -> dict[str, Served]:
        return self.snapshot.versions.get(name, {})

    async def _retire(self, name: str, version: str, reason: str | None) -> None:
        """Stop routing to a version, wait for its requests, release it; keep an index row if `reason`."""
        served = self._served(name)[version]
        self._entries[(name, version)] = Entry(name, version, State.UNLOADING)
        self._publish(name, {v: s for v, s in self._served(name).items() if v != version})
        await self._drain_and_release(served)
        if reason is None:
            self._entries.pop((name, version), None)
        else:
            self._entries[(name, version)] = Entry(name, version, State.UNAVAILABLE, reason)
        logger.info("unloaded model %s version %s", name, version)

    async def _drain_and_release(self, served: Served) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.graceful_timeout
        while served.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(_DRAIN_POLL_SECONDS)
        if served.in_flight:
            logger.warning("model %s version %s: %d request(s) still running after %g s; released anyway",
                           served.model.name, served.model.version, served.in_flight, self.settings.graceful_timeout)
        served.model.release()
        _return_freed_memory()

    def _publish(self, name: str, versions: dict[str, Served]) -> None:
        all_versions = {**self.snapshot.versions, name: {v: versions[v] for v in sorted(versions, key=int)}}
        if not versions:
            del all_versions[name]
        latest = {n: vs[max(vs, key=int)] for n, vs in sorted(all_versions.items())}
        self.snapshot = Snapshot(all_versions, latest)
        for listener in self._listeners:
            listener(self.snapshot)

    def _set(self, candidate: _Candidate, state: State, reason: str = "") -> None:
        self._entries[(candidate.name, candidate.version)] = Entry(candidate.name, candidate.version, state, reason)


def _return_freed_memory() -> None:
    """Hand the freed session's memory back to the system: glibc keeps small frees for reuse, so
    without this the resident size never drops (11 MLP versions unloaded: 81.4 -> 81.4 MB; with it
    79.6 -> 77.1 MB, measured)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: no such call, nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_plot(path: Path) -> bytes | None:
    """The plot's bytes, read once with the version it belongs to; None when there is none."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _signature(path: Path) -> Signature | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns
