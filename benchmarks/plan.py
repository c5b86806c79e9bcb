"""What one run measures: the full suite (<= 10 min) or --quick (<= 2 min)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmarks.throughput import Point

SECTIONS = ("inprocess", "http", "workers", "export")
GRID_TARGETS = ("ceiling", "ours", "ours-v2-json", "ours-v2-binary")
# The serving issue's large-batch check: 10,000 rows at one connection, binary against JSON.
LARGE_BATCH = 10_000
# The default configuration and the JSON log, measured at one point: single records at the most connections.
CONFIG_TARGETS = ("ours-default", "ours-json-log")
# The servers users pick instead, each measured against our default configuration at the peers issue's
# (rows, connections) points only: over the whole grid they would take most of the 10 minutes.
PEERS = ("mlserver", "kserve", "litserve", "bentoml", "naive")
PEER_POINTS = ((1, 1), (1, 64), (100, 8), (1000, 8))
# The other transports, at the same points: gRPC and V2 binary, ours (as `python -m serve` starts) and the peers'.
TRANSPORT_TARGETS = ("ours-grpc", "ours-default-v2-binary", "mlserver-grpc", "kserve-grpc", "kserve-v2-binary")
# Each transport's peer targets and ours on the same transport, which the report divides by each.
SAME_TRANSPORT = {"ours-default": PEERS, "ours-grpc": ("mlserver-grpc", "kserve-grpc"),
                  "ours-default-v2-binary": ("kserve-v2-binary",)}
# Our default configuration over each of its transports: the peer goals take the fastest of these against the
# fastest of every peer target.
DEFAULT_TRANSPORTS = ("ours-default", "ours-grpc", "ours-default-v2-binary")
# The issues' goals are judged on single-row requests to these targets at the most connections, and on the p99 of
# these at one connection: those points get `goal_rounds` (the others' extra rounds would not fit in 10 minutes).
GOAL_TARGETS = ("ceiling", "ours", "ours-v2-json", *CONFIG_TARGETS)
P99_GOAL_TARGETS = ("ours", "ours-default")


@dataclass(frozen=True)
class Plan:
    quick: bool
    targets: tuple[str, ...]
    rows: tuple[int, ...]
    connections: tuple[int, ...]
    rounds: int
    # On a shared machine a median of three rounds still moves by a few percent: the goal points get more.
    goal_rounds: int
    seconds: int
    inprocess_sizes: tuple[int, ...]
    inprocess_block_seconds: float
    sections: tuple[str, ...]

    def points(self) -> list[Point]:
        grid = [Point(t, r, c) for t in GRID_TARGETS if t in self.targets for r in self.rows for c in self.connections]
        extra = [Point(t, LARGE_BATCH, 1) for t in ("ours", "ours-v2-json", "ours-v2-binary") if t in self.targets]
        extra += [Point(t, 1, max(self.connections)) for t in CONFIG_TARGETS if t in self.targets]
        # The grid's targets at the peer points too, but for its V2 binary: ours-default-v2-binary is measured there.
        peer_pointed = (*(t for t in GRID_TARGETS if t != "ours-v2-binary"), "ours-default", *PEERS, *TRANSPORT_TARGETS)
        extra += [Point(t, rows, connections) for t in peer_pointed
                  if t in self.targets for rows, connections in PEER_POINTS]
        return list(dict.fromkeys(grid + extra))  # e.g. ours-default's (1, c_max) is both a config and a peer point

    def rounds_for(self, point: Point) -> int:
        at_most = point.target in GOAL_TARGETS and point.connections == max(self.connections)
        at_one = point.target in P99_GOAL_TARGETS and point.connections == 1
        goal = point.rows == 1 and (at_most or at_one)
        return self.goal_rounds if goal else self.rounds

    def without(self, targets: list[str]) -> Plan:
        return replace(self, targets=tuple(t for t in self.targets if t not in targets))


FULL = Plan(
    # The grid's 100 rows only at the peer point (100, 8): the whole row would take 48 s the 10 minutes lack.
    quick=False, targets=(*GRID_TARGETS, *CONFIG_TARGETS, *PEERS, *TRANSPORT_TARGETS), rows=(1, 1000),
    connections=(1, 8, 64), rounds=3, goal_rounds=7, seconds=2,
    inprocess_sizes=(1, 10, 100, 1_000, 10_000, 100_000), inprocess_block_seconds=0.05, sections=SECTIONS,
)
QUICK = Plan(
    quick=True, targets=(*GRID_TARGETS, *CONFIG_TARGETS, *PEERS, *TRANSPORT_TARGETS), rows=(1,),
    connections=(1, 64), rounds=1, goal_rounds=1, seconds=1,
    inprocess_sizes=(1, 100, 10_000, 100_000), inprocess_block_seconds=0.01, sections=("inprocess", "http", "workers"),
)
