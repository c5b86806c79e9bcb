"""`python -m serve`: check the models, then run uvicorn with one or more workers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from serve.errors import ModelLoadError
from serve.http_protocol import HttpToolsProtocol
from serve.intent import Intent
from serve.settings import ACCESS_LOG_FORMATS, Settings
from serve.store import Entry, ModelStore, State


def parse_args(argv: list[str], defaults: Settings) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                     epilog="Every option can also be set as SERVE_<OPTION> in the environment.")
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--grpc-port", type=int, default=defaults.grpc_port,
                        help="port of the Open Inference Protocol over gRPC (0: off)")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--model-dir", type=Path, default=defaults.model_dir)
    parser.add_argument("--ort-threads", type=int, default=defaults.ort_threads,
                        help="onnxruntime threads per session (keep threads x workers <= cores)")
    parser.add_argument("--access-log", choices=ACCESS_LOG_FORMATS, default=defaults.access_log)
    parser.add_argument("--access-log-buffer", type=int, default=defaults.access_log_buffer,
                        help="bytes of access log lines that may wait for a slow stdout (whole lines beyond: dropped)")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout,
                        help="seconds a request may take to send its body (408 beyond)")
    parser.add_argument("--max-concurrency", type=int, default=defaults.max_concurrency,
                        help="requests in flight per worker before answering 503 (0: unlimited)")
    parser.add_argument("--coalesce-rows", type=int, default=defaults.coalesce_rows,
                        help="requests of at most this many rows arriving together share one model call (0: off)")
    parser.add_argument("--watch", type=float, default=defaults.watch,
                        help="seconds between looks at the model store for new, replaced or removed versions (0: off)")
    parser.add_argument("--version-policy", default=defaults.version_policy,
                        help="versions served per model: all, latest:N, or versions such as 1,3")
    parser.add_argument("--otlp-endpoint", default=defaults.otlp_endpoint,
                        help="send a trace span per request there, OTLP over HTTP, e.g. http://collector:4318 "
                        "(default: no tracing)")
    parser.add_argument("--drift-window", type=int, default=defaults.drift_window,
                        help="rows in the drift window (over all workers) that each PSI compares with training")
    args = parser.parse_args(argv)
    return replace(defaults, **{key: value for key, value in vars(args).items()})


def log_config() -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        # The access log is not a logger: serve/accesslog.py writes its lines to stdout.
        "formatters": {"default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "serve": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
    return config


async def check_store(settings: Settings) -> list[Entry]:
    """Load the store once as a worker would, say what serves and what was refused, then let it go."""
    store = ModelStore(settings, Intent())
    await store.start()
    index = store.index()
    await store.close()
    return index


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv, Settings.from_env())
        logging.config.dictConfig(log_config())
        # Fail here, in one process, rather than in every worker: never a half-alive server.
        index = asyncio.run(check_store(settings))
    except (ModelLoadError, ValueError) as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr)
        return 2
    shared_dir = ""
    if settings.workers > 1 and not settings.shared_dir:
        shared_dir = tempfile.mkdtemp(prefix="serve-shared-")
        settings = replace(settings, shared_dir=shared_dir)
    os.environ.update(settings.to_env())
    logger = logging.getLogger("serve")
    logger.info("serving %d model version(s) on http://%s:%d%s with %d worker(s)",
                sum(entry.state == State.READY for entry in index), settings.host, settings.port,
                f" and gRPC {settings.host}:{settings.grpc_port}" if settings.grpc_port else "", settings.workers)
    # uvicorn drains on SIGTERM, then re-raises it to the handler it found: make that a no-op, so that
    # a drained stop exits 0 (what orchestrators count as a clean stop) rather than "killed by signal".
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(
            "serve.app:create_app", factory=True, host=settings.host, port=settings.port, workers=settings.workers,
            loop="uvloop", http=HttpToolsProtocol, ws="none", lifespan="on", access_log=False, log_config=log_config(),
            timeout_graceful_shutdown=int(settings.graceful_timeout),
        )
    finally:
        if shared_dir:
            shutil.rmtree(shared_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
