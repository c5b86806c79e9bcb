"""Drift: how the rows a version predicts compare with its training data, over every route and protocol.

Per feature, two figures: values outside the training range (a counter), and the population stability
index (PSI) of a recent window of rows against the training shares export wrote into the metadata
(`drift_reference`: bin edges, and the share of training rows in each bin).

The window is the last `window` rows the version predicted over all workers. Each worker keeps, in a
memory-mapped file of its own, a ring of its last `window` rows (each row's bin per feature, and the
CLOCK_MONOTONIC time it was counted, one clock for every process of the machine). Whichever worker
answers a scrape or GET /drift merges every worker's ring by that time and keeps the newest `window`
rows, the rows of one batch in order: exact with several workers, and no lock on the hot path.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serve.errors import ModelLoadError

REFERENCE_KEY = "drift_reference"
# A bin's share is floored at EPSILON in the PSI, so that bins the training data leaves empty (below its
# minimum, above its maximum) give a large but finite term; 1e-4 is one row of the default window.
EPSILON = 1e-4
BIN_LAYOUT = ("bins per feature: below edges[0] (the training minimum), [edges[i], edges[i+1]) for each i, "
              "exactly edges[-1] (the training maximum), above edges[-1]")
# How a request's rows are binned, by its size: up to _ROW_BY_ROW rows in plain Python (1.8 us a row,
# numpy's per-call cost is more: 11.6 us for 2 rows), up to _COMPARE_ALL by one comparison of every value
# with every bound, beyond by a binary search per feature (9 rows: 6 against 57 us; 10,000 rows: 6 against
# 1 ms; measured).
_ROW_BY_ROW = 4
_COMPARE_ALL = 128


class Feature(Protocol):
    """What the reference needs of a model's feature (serve.model.Feature)."""

    @property
    def name(self) -> str: ...
    @property
    def minimum(self) -> float: ...
    @property
    def maximum(self) -> float: ...


@dataclass(frozen=True)
class Reference:
    """Per feature the bin edges and the training share of each bin, as export wrote them. A file exported
    before drift references has no shares: its edges are the training range alone, for the range counts."""

    names: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    shares: tuple[tuple[float, ...], ...] | None


def reference(path: Path, metadata: dict[str, Any], features: Sequence[Feature]) -> Reference:
    names = tuple(f.name for f in features)
    raw = metadata.get(REFERENCE_KEY)
    if raw is None:
        return Reference(names, tuple(tuple(sorted({f.minimum, f.maximum})) for f in features), None)
    problem = f"{path}: metadata {REFERENCE_KEY!r}"
    try:
        written = [entry["name"] for entry in raw]
        edges = tuple(tuple(float(e) for e in entry["edges"]) for entry in raw)
        shares = tuple(tuple(float(s) for s in entry["shares"]) for entry in raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{problem} needs a name, edges and shares per feature ({exc})") from exc
    if written != list(names):
        raise ModelLoadError(f"{problem} names {written}, the features are {list(names)}")
    for feature, e, s in zip(features, edges, shares):
        e32 = np.array(e, dtype=np.float32)
        if not (len(e) and np.all(np.diff(e32) > 0) and e32[0] == np.float32(feature.minimum)
                and e32[-1] == np.float32(feature.maximum)):
            raise ModelLoadError(f"{problem}: the edges of {feature.name} must rise strictly from its training "
                                 f"minimum {feature.minimum:g} to its maximum {feature.maximum:g}")
        if len(s) != len(e) + 2 or len(s) > 255 or not (min(s) >= 0 and abs(sum(s) - 1) <= 1e-6):  # NaN fails too
            raise ModelLoadError(f"{problem}: {feature.name} needs {len(e) + 2} shares summing to 1 ({BIN_LAYOUT})")
    return Reference(names, edges, shares)


@dataclass(frozen=True)
class Summary:
    """One version's counts over all workers."""

    rows_seen: int
    out_of_range: list[int]  # per feature, since start-up
    window_rows: int
    counts: list[np.ndarray]  # per feature, the window's rows in each bin

    def psi(self, shares: tuple[tuple[float, ...], ...]) -> list[float]:
        return [_psi(np.array(expected), counts / self.window_rows) for expected, counts in zip(shares, self.counts)]


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class Drift:
    """One version's drift counts in this worker (`count`, on the hot path), and the figures over all workers.

    The worker's file: rows seen and out-of-range counts per feature (float64), then the ring's times
    (float64, one per row) and bins (uint8, one per row and feature); a version reloaded by the same
    worker goes on from it.
    """

    def __init__(self, model: str, version: str, reference: Reference, window: int, shared_dir: str):
        self.model, self.version, self.reference, self.window = model, version, reference, window
        self._n = n = len(reference.edges)
        edges = [np.array(e, dtype=np.float32) for e in reference.edges]
        # A row's bin in feature j is the number of bounds of j at most its value (bisect_right): the edges,
        # then the float32 after the maximum repeated to one width for all, so that 0 is below every
        # feature's range and `_above` above it (one byte search each on the hot path).
        self._above = max(len(e) for e in edges) + 1
        self._bounds = np.array([np.append(e, [np.nextafter(e[-1], np.float32(np.inf))] * (self._above - len(e)))
                                 for e in edges])
        self._bound_lists = self._bounds.tolist()
        # Bins as numbered here -> the bins of BIN_LAYOUT, per feature.
        self._layout = [np.r_[:len(e) + 1, self._above] for e in edges]
        self._header_size = 8 * (1 + n)
        self._bins_offset = self._header_size + 8 * window
        self._directory: Path | None = None
        size = self._bins_offset + window * n
        if shared_dir:
            # Under a digest of the bins and the window: a replaced file or another window starts afresh.
            digest = hashlib.sha256(json.dumps([reference.edges, window]).encode()).hexdigest()[:12]
            self._directory = Path(shared_dir) / "drift" / model / version / digest
            self._directory.mkdir(parents=True, exist_ok=True)
            with open(self._directory / f"{os.getpid()}.bin", "a+b") as file:
                file.truncate(size)
                self._map = mmap.mmap(file.fileno(), size)
        else:
            self._map = mmap.mmap(-1, size)
        self._header = memoryview(self._map)[:self._header_size].cast("d")
        self._times = memoryview(self._map)[self._header_size:self._bins_offset].cast("d")
        self._bins = memoryview(self._map)[self._bins_offset:]
        self._header_array = np.frombuffer(self._map, np.float64, 1 + n)
        self._times_array = np.frombuffer(self._map, np.float64, window, self._header_size)
        self._bins_array = np.frombuffer(self._map, np.uint8, window * n, self._bins_offset).reshape(window, n)
        self._seen = int(self._header[0])

    def count(self, x: np.ndarray) -> None:
        """Count the rows of `x` (N, features) into the window and the out-of-range counters."""
        if len(x) <= _ROW_BY_ROW:
            for row in x.tolist():
                self._count_row(row)
            return
        if len(x) <= _COMPARE_ALL:
            bins = (x[:, :, None] >= self._bounds).sum(axis=2, dtype=np.uint8)
        else:
            bins = np.empty(x.shape, dtype=np.uint8)
            for j, bounds in enumerate(self._bounds):
                bins[:, j] = np.searchsorted(bounds, x[:, j], side="right")
        self._count_rows(bins)

    def _count_row(self, row: list[float]) -> None:
        bins = bytes(map(bisect_right, self._bound_lists, row))
        header = self._header
        if 0 in bins or self._above in bins:
            for j, b in enumerate(bins):
                if b == 0 or b == self._above:
                    header[1 + j] += 1
        seen, n = self._seen, self._n
        slot = seen % self.window
        self._bins[slot * n:slot * n + n] = bins
        self._times[slot] = time.monotonic()
        # Rows seen last: a reader never takes a slot whose bins are not written yet.
        self._seen = header[0] = seen + 1

    def _count_rows(self, bins: np.ndarray) -> None:
        self._header_array[1:] += ((bins == 0) | (bins == self._above)).sum(axis=0)
        kept = bins[-self.window:]
        slots = (self._seen + len(bins) - len(kept) + np.arange(len(kept))) % self.window
        self._bins_array[slots] = kept
        self._times_array[slots] = time.monotonic()
        self._seen += len(bins)
        self._header[0] = self._seen

    def summary(self) -> Summary:
        n, window = self._n, self.window
        seen, outside = 0, np.zeros(n)
        times, bins = [], []
        for raw in self._worker_files():
            header = np.frombuffer(raw, np.float64, 1 + n)
            rows = int(header[0])
            seen += rows
            outside += header[1:]
            slots = np.arange(rows - min(rows, window), rows) % window  # this worker's rows, oldest first
            times.append(np.frombuffer(raw, np.float64, window, self._header_size)[slots])
            bins.append(np.frombuffer(raw, np.uint8, window * n, self._bins_offset).reshape(window, n)[slots])
        merged, all_times = np.concatenate(bins), np.concatenate(times)
        if len(merged) > window:  # the newest rows by time; a batch's rows (one time) in their order
            merged = merged[np.lexsort((np.arange(len(merged)), all_times))[-window:]]
        counts = [np.bincount(merged[:, j], minlength=self._above + 1)[layout] for j, layout in enumerate(self._layout)]
        return Summary(seen, [int(v) for v in outside], len(merged), counts)

    def _worker_files(self) -> Iterable[bytes]:
        if self._directory is None:
            return [bytes(self._map)]
        return [path.read_bytes() for path in sorted(self._directory.glob("*.bin"))]

    def document(self) -> dict[str, Any]:
        """GET /models/{model}/drift: per feature the PSI, the bins and both shares, and the window."""
        summary, shares = self.summary(), self.reference.shares
        psi = summary.psi(shares) if shares is not None and summary.window_rows else None
        features = []
        for j, name in enumerate(self.reference.names):
            recent = (summary.counts[j] / summary.window_rows).tolist() if summary.window_rows else None
            features.append({"name": name, "psi": None if psi is None else psi[j],
                             "out_of_range": summary.out_of_range[j], "edges": list(self.reference.edges[j]),
                             "training_share": None if shares is None else list(shares[j]), "recent_share": recent})
        return {
            "model": self.model, "version": self.version,
            "reference": shares is not None,
            **({} if shares is not None else {"reason": f"this version's metadata has no {REFERENCE_KEY} (it was "
                                              "exported before drift statistics): no PSI; re-export it for one"}),
            "window": {"size": self.window, "rows": summary.window_rows,
                       "definition": f"the last {self.window} rows this version predicted, over every worker, route "
                                     "and protocol, ordered by the time their request was counted"},
            "rows_seen": summary.rows_seen,
            "epsilon": EPSILON,
            "bins": BIN_LAYOUT,
            "features": features,
        }


def exposition(drifts: Iterable[Drift]) -> str:
    """The drift series in the Prometheus text format."""
    outside = ["# HELP serve_out_of_range_total Values outside the training range, by model, version and feature.",
               "# TYPE serve_out_of_range_total counter"]
    psi = ["# HELP serve_feature_psi Population stability index of the recent window against the training data.",
           "# TYPE serve_feature_psi gauge"]
    rows = ["# HELP serve_drift_window_rows Rows in the drift window now (at most its size).",
            "# TYPE serve_drift_window_rows gauge"]
    for drift in drifts:
        summary, shares = drift.summary(), drift.reference.shares
        labels = f'model="{drift.model}",version="{drift.version}"'
        outside += [f'serve_out_of_range_total{{{labels},feature="{name}"}} {count}'
                    for name, count in zip(drift.reference.names, summary.out_of_range)]
        if shares is not None and summary.window_rows:
            psi += [f'serve_feature_psi{{{labels},feature="{name}"}} {value!r}'
                    for name, value in zip(drift.reference.names, summary.psi(shares))]
        rows.append(f"serve_drift_window_rows{{{labels}}} {summary.window_rows}")
    return "\n".join(outside + psi + rows) + "\n"
