"""Service configuration: one frozen dataclass, read from the environment (flags write the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from serve.policy import VersionPolicy

ENV_PREFIX = "SERVE_"
ACCESS_LOG_FORMATS = ("off", "text", "json")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    # The Open Inference Protocol over gRPC, on the same host (0: off); 8001 is Triton's.
    grpc_port: int = 8001
    workers: int = 1
    model_dir: Path = Path("onnx_models")
    # onnxruntime intra-op threads per session; keep threads x workers <= cores.
    ort_threads: int = 1
    # Bearer token required on prediction routes when set.
    auth_token: str = ""
    access_log: str = "text"
    # Bytes of access log lines that may wait for a slow stdout; whole lines beyond are dropped and counted.
    access_log_buffer: int = 1024 * 1024
    max_batch: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024
    # Seconds a request may take to send its body once its headers are in (408 beyond).
    body_timeout: float = 30.0
    # Requests handled at once per worker before answering 503 (0: unlimited).
    max_concurrency: int = 0
    # Requests of at most this many rows that arrive together share one onnxruntime call (0: off).
    coalesce_rows: int = 16
    graceful_timeout: float = 30.0
    # Seconds between looks at the model store for new, replaced and removed versions (0: off).
    watch: float = 0.0
    # Which versions of each model serve: all, latest:N, or named versions such as 1,3.
    version_policy: str = "all"
    # Where spans go, OTLP over HTTP (empty: no tracing, and opentelemetry is never imported).
    otlp_endpoint: str = ""
    # Rows in the drift window: each feature's PSI compares the last this many rows with the training data.
    drift_window: int = 10_000
    # Where workers share metrics and the repository API's load/unload state; set by the launcher.
    shared_dir: str = ""

    def __post_init__(self) -> None:
        if self.access_log not in ACCESS_LOG_FORMATS:
            raise ValueError(
                f"SERVE_ACCESS_LOG must be one of {', '.join(ACCESS_LOG_FORMATS)}, got {self.access_log!r}")
        if not self.body_timeout > 0:
            raise ValueError(f"SERVE_BODY_TIMEOUT must be a positive number of seconds, got {self.body_timeout}")
        if not self.watch >= 0:
            raise ValueError(f"SERVE_WATCH must be 0 (off) or a positive number of seconds, got {self.watch}")
        if not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"SERVE_GRPC_PORT must be a port number (0 turns gRPC off), got {self.grpc_port}")
        VersionPolicy.parse(self.version_policy)
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"SERVE_OTLP_ENDPOINT must be an http:// or https:// URL, got {self.otlp_endpoint!r}")
        if self.coalesce_rows < 0 or self.max_concurrency < 0:
            raise ValueError("SERVE_COALESCE_ROWS and SERVE_MAX_CONCURRENCY must be 0 or more")
        for name in ("port", "workers", "ort_threads", "max_batch", "max_body_bytes", "drift_window",
                     "access_log_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            kind = _FIELD_TYPES[field.name]
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + field.name.upper(): str(getattr(self, field.name)) for field in fields(self)}


# How each setting is read from its environment variable: the type of its default.
_FIELD_TYPES: dict[str, type] = {field.name: type(field.default) for field in fields(Settings)}
