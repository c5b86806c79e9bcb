"""The front door every request passes: request id, overload guard, the one error handler, metrics
and the access log, in one pure-ASGI layer (Starlette's own middleware stack would cost more than
the model itself)."""

from __future__ import annotations

import itertools
import logging
import secrets
import time

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.accesslog import AccessLog, timestamp
from serve.asgi import BodyReader, header, send_json
from serve.errors import ServeError
from serve.metrics import NO_MODEL, UNMATCHED_ROUTE
from serve.service import Service

logger = logging.getLogger("serve")
_MAX_REQUEST_ID = 128
# Where serve.tracing leaves the request's trace id (that module loads only when tracing is on).
TRACE_ID = "serve.trace_id"


def error_body(exc: Exception, scope: Scope) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers for any exception: the one error shape, no internals leaked."""
    if isinstance(exc, HTTPException):  # raised by the router itself; rendered (and bounded) as ours are
        path = scope.get("path", "")
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no route {scope.get('method')} {path}; the routes are listed in /openapi.json"
        elif exc.status_code == 405:
            message = f"method {scope.get('method')} not allowed on {path}; allowed: {headers.get('Allow', '')}"
        else:
            message = str(exc.detail)
        exc = ServeError(exc.status_code, message, headers=headers)
    if isinstance(exc, ServeError):
        return exc.status, orjson.dumps(exc.body()), exc.headers
    logger.error("unexpected error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
    return 500, b'{"error":"internal server error"}', {}


class Frontdoor:
    def __init__(self, app: ASGIApp, service: Service):
        self.app = app
        self.service = service
        self.in_flight = 0
        self.bodies = BodyReader(service.settings.max_body_bytes, service.settings.body_timeout)
        # Unique across processes and restarts without paying for randomness on every request.
        self._id_prefix = secrets.token_hex(6).encode()
        self._counter = itertools.count()

    def request_id(self, given: bytes | None) -> bytes:
        """The caller's X-Request-ID (header or gRPC metadata) when it is short printable ASCII, else a fresh one."""
        if given and len(given) <= _MAX_REQUEST_ID and given.isascii() and given.decode().isprintable():
            return given
        return b"%s-%x" % (self._id_prefix, next(self._counter))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope["app"] = self
        request_id = self.request_id(header(scope, b"x-request-id"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        limit = self.service.settings.max_concurrency
        self.in_flight += 1
        try:
            if limit and self.in_flight > limit:
                raise ServeError(503, "overloaded: too many requests in flight, retry shortly",
                                 headers={"Retry-After": "1"})
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:  # the response has begun: nothing sane can be sent any more
                raise
            code, body, headers = error_body(exc, scope)
            await send_json(send_with_id, body, code, headers)
        finally:
            self.in_flight -= 1
            self._record(scope, status or 500, time.perf_counter() - start, request_id)

    def _record(self, scope: Scope, status: int, seconds: float, request_id: bytes) -> None:
        route = scope.get("route")
        version = scope.get("serve.version", "")
        # Only names that a version answered for become labels: a scan of made-up names must not add series.
        model = scope["path_params"]["model"] if version else NO_MODEL
        service = self.service
        service.metrics.observe(route.path if route is not None else UNMATCHED_ROUTE, model, version,
                                status, seconds, scope.get("serve.rows", 0))
        if service.settings.access_log != "off":
            client = scope.get("client") or ("-", 0)
            log_access(service.access_log, service.settings.access_log, f"{client[0]}:{client[1]}", scope["method"],
                       scope["path"], status, seconds, request_id, model, version, scope.get(TRACE_ID, ""))


def log_access(log: AccessLog, fmt: str, client: str, method: str, path: str, status: int, seconds: float,
               request_id: bytes, model: str, version: str, trace_id: str = "") -> None:
    """One access log line, text or JSON, for an HTTP request or a gRPC call (method "GRPC"); the trace id only
    when tracing is on. The text line is the one `logging` wrote before: its default asctime, level and logger
    name, then the request."""
    if fmt == "json":
        # Whole microseconds divided by 1,000: a float that prints with at most 3 decimals, without the decimal
        # conversion round(ms, 3) makes; with the optional keys set rather than merged in, 0.95 -> 0.60 us a line.
        entry = {"time": time.time(), "client": client, "method": method, "path": path, "status": status,
                 "duration_ms": round(seconds * 1_000_000) / 1000, "request_id": request_id.decode()}
        if version:
            entry["model"], entry["version"] = model, version
        if trace_id:
            entry["trace_id"] = trace_id
        log.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
    else:
        log.write(f'{timestamp(time.time())} INFO serve.access: {client} "{method} {path}" {status} '
                  f'{seconds * 1000:.2f}ms request_id={request_id.decode()}'
                  f'{f" model={model} version={version}" if version else ""}'
                  f'{f" trace_id={trace_id}" if trace_id else ""}\n'.encode())
