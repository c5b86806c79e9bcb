"""Which of a model's versions are served: Triton's version policy, `all`, `latest:N` or named versions."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPolicy:
    latest: int | None = None  # the newest N versions that load
    named: frozenset[str] | None = None  # exactly these versions

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """`all`, `latest:N` (N >= 1) or a comma-separated list of versions such as `1,3`."""
        text = text.strip()
        if text == "all":
            return cls()
        if text.startswith("latest:"):
            count = text.removeprefix("latest:")
            if count.isdigit() and int(count) >= 1:
                return cls(latest=int(count))
        else:
            named = [v.strip() for v in text.split(",")]
            if all(v.isdigit() and int(v) >= 1 for v in named):
                return cls(named=frozenset(named))
        raise ValueError(f"version policy {text!r} is not `all`, `latest:N` or versions such as `1,3`")

    def select(self, versions: list[str]) -> frozenset[str]:
        return frozenset(versions) if self.named is None else self.named & frozenset(versions)

    @property
    def limit(self) -> float:
        """How many versions may serve at once."""
        return math.inf if self.latest is None else self.latest

    def __str__(self) -> str:
        if self.latest is not None:
            return f"latest:{self.latest}"
        return "all" if self.named is None else ",".join(sorted(self.named, key=int))
