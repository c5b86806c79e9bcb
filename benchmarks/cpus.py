"""The two cores: the server under test on one, the load generator on the other."""

from __future__ import annotations

SERVER_CPU = 0
LOADGEN_CPU = 1


def pinned(command: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *command]
