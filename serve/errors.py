"""One error type for everything the service refuses, rendered as one JSON shape."""

from __future__ import annotations

from typing import Any


class ServeError(Exception):
    """A request the service refuses: HTTP status, a message naming the problem, optional details.

    Rendered as `{"error": message, **details}`; details must be JSON-serialisable.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **details: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


class ModelLoadError(Exception):
    """A model file the service cannot serve; start-up stops with this message."""
