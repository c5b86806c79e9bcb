"""Small raw-ASGI helpers for the hot routes: header lookup, bounded body reading, JSON answers."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from serve.errors import ServeError

JSON_HEADERS = [(b"content-type", b"application/json")]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a (lower-case) header, without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def check_json_content_type(scope: Scope) -> None:
    """415 unless the body is declared JSON; a missing Content-Type is accepted (curl -d, tritonclient)."""
    content_type = header(scope, b"content-type")
    if content_type is None:
        return
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if media_type != b"application/json" and not media_type.endswith(b"+json"):
        raise ServeError(415, f"unsupported Content-Type {media_type.decode('latin-1')!r}: send application/json")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"body of {int(declared)} bytes is over the limit of {limit}", limit=limit)
    message: Message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ServeError(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"body is over the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def send_json(send: Send, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
    raw = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
