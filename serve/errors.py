"""One error type for everything the service refuses, rendered as one JSON shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# An error names what was wrong without echoing a hostile body back: 100,000 unknown keys would
# otherwise make a 1.6 MB answer.
MAX_MESSAGE_CHARS = 1000
MAX_NAMES = 20
MAX_NAME_CHARS = 100


class ServeError(Exception):
    """A request the service refuses: HTTP status, a message naming the problem, optional details.

    Rendered as `{"error": message, **details}`; details must be JSON-serialisable.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **details: Any):
        super().__init__(message)
        self.status = status
        self.message = message if len(message) <= MAX_MESSAGE_CHARS else (
            f"{message[:MAX_MESSAGE_CHARS]}... ({len(message) - MAX_MESSAGE_CHARS} more characters)")
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


def shortlist(names: list[str]) -> list[str]:
    """The first MAX_NAMES names, each cut to MAX_NAME_CHARS: for an error's list of offending keys."""
    return [name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..." for name in names[:MAX_NAMES]]


def unknown_names(kind: str, names: list[str], closest: Callable[[str], str | None]) -> str:
    """`unknown field 'LSTATT' (did you mean LSTAT?)`: the shortlist of names, each with a hint where one is close."""
    shown = ", ".join(repr(name) + (f" (did you mean {hint}?)" if (hint := closest(name)) else "")
                      for name in shortlist(names))
    more = f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
    return f"unknown {kind}{'s' if len(names) > 1 else ''} {shown}{more}"


class ModelLoadError(Exception):
    """A model file the service cannot serve; start-up stops with this message."""
