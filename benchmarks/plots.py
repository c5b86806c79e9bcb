"""The PNG plots: HTTP throughput per target, in-process cost per batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt

from benchmarks.plan import CONFIG_TARGETS, PEER_POINTS, PEERS
from benchmarks.targets import TARGETS

HTTP_PLOT = "http.png"
PEERS_PLOT = "peers.png"
INPROCESS_PLOT = "inprocess.png"


def write(results: dict[str, Any], directory: Path) -> list[str]:
    """The names of the plots written (those whose data this run has)."""
    written = []
    if results.get("http", {}).get("points"):
        _http(results["http"]["points"], directory / HTTP_PLOT)
        written.append(HTTP_PLOT)
    if any(p["target"] in PEERS for p in results.get("http", {}).get("points", [])):
        _peers(results["http"]["points"], directory / PEERS_PLOT)
        written.append(PEERS_PLOT)
    if results.get("inprocess"):
        _inprocess(results["inprocess"], directory / INPROCESS_PLOT)
        written.append(INPROCESS_PLOT)
    return written


def _http(points: list[dict[str, Any]], path: Path) -> None:
    grid = [p for p in points if p["target"] not in (*CONFIG_TARGETS, *PEERS)]  # peers have their own plot
    targets = list(dict.fromkeys(p["target"] for p in grid))
    connections = sorted({p["connections"] for p in grid})
    widest = max(connections)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        rps = [next((p["req_per_s"] for p in grid if (p["target"], p["rows"], p["connections"]) == (target, 1, c)), 0)
               for c in connections]
        left.bar([j + i * width for j in range(len(connections))], rps, width, label=TARGETS[target].label)
        sizes = sorted({p["rows"] for p in grid if p["target"] == target and p["connections"] == widest})
        right.plot(sizes, [next(p["rows_per_s"] for p in grid if (p["target"], p["rows"], p["connections"])
                                == (target, s, widest)) for s in sizes], marker="o", label=TARGETS[target].label)
    left.set_xticks([j + 0.4 - width / 2 for j in range(len(connections))], [f"c={c}" for c in connections])
    left.set_ylabel("requests/s (median)")
    left.set_title("One record per request, server on one core")
    left.legend(fontsize=7)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("rows per request")
    right.set_ylabel("rows/s (median)")
    right.set_title(f"Batches at c={widest}")
    right.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _peers(points: list[dict[str, Any]], path: Path) -> None:
    """Rows/s of ours as it starts and of each peer at the peers issue's points, one group of bars per point."""
    targets = [t for t in ("ours-default", *PEERS) if any(p["target"] == t for p in points)]
    figure, axes = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        rows_per_s = [next((p["rows_per_s"] for p in points if (p["target"], p["rows"], p["connections"])
                            == (target, rows, connections)), 0) for rows, connections in PEER_POINTS]
        axes.bar([j + i * width for j in range(len(PEER_POINTS))], rows_per_s, width, label=TARGETS[target].label)
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(PEER_POINTS))],
                    [f"{rows:,} row{'s' if rows > 1 else ''}, c={connections}" for rows, connections in PEER_POINTS])
    axes.set_yscale("log")
    axes.set_ylabel("rows/s (median)")
    axes.set_title("Against the servers users pick instead, each on one core")
    axes.legend(fontsize=7)
    axes.grid(True, axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _inprocess(entries: list[dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 5))
    for label in dict.fromkeys(e["label"] for e in entries):
        mine = sorted((e["rows"], e["us_per_call"]) for e in entries if e["label"] == label)
        axes.plot([r for r, _ in mine], [us for _, us in mine], marker="o", label=label,
                  linestyle="--" if label.startswith("mlp") else "-")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("rows per call")
    axes.set_ylabel("microseconds per call (median)")
    axes.set_title("In-process, one thread")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
