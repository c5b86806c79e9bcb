"""Drift: how the rows a version predicts compare with its training data, over every route and protocol.

Per feature, two figures: values outside the training range (a counter), and the population stability
index (PSI) of a recent window of rows against the training shares export wrote into the metadata
(`drift_reference`: bin edges, and the share of training rows in each bin).

The window is the last `window` rows the version predicted over all workers. Each worker keeps, in a
memory-mapped file of its own, a ring of its last `window` rows (the row as predicted, and the
CLOCK_MONOTONIC time it was counted, one clock for every process of the machine). Whichever worker
answers a scrape or GET /drift merges every worker's ring by that time, keeps the newest `window`
rows (the rows of one batch in order) and bins them: exact with several workers, no lock and no
binning on the hot path.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serve.errors import ModelLoadError
from serve.ranges import RangeCheck

REFERENCE_KEY = "drift_reference"
# A bin's share is floored at EPSILON in the PSI, so that bins the training data leaves empty (below its
# minimum, above its maximum) give a large but finite term; 1e-4 is one row of the default window.
EPSILON = 1e-4
# Single records' out-of-range values are counted this many rows at a time (at most the window).
_BLOCK_ROWS = 256
# Requests of up to this many rows are copied row by row: numpy's per-call costs make a batch of 2 take
# 17.6 us, against 1.3 us per row one by one (measured; a single record 0.5 us).
_ROW_BY_ROW = 8
BIN_LAYOUT = ("bins per feature: below edges[0] (the training minimum), [edges[i], edges[i+1]) for each i, "
              "exactly edges[-1] (the training maximum), above edges[-1]")


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

    The hot path only copies the row into the ring. Rows are binned when read, and their out-of-range
    values counted a block at a time, in numpy, once a block of rows has come in (the rows not counted
    yet are still in the ring, and a reader counts them itself): a single record then costs a copy, not
    the 26 comparisons that would take longer than the rest of the bookkeeping together.

    The worker's file: rows seen, rows counted out of range, out-of-range counts per feature (float64),
    then the ring's times (float64, one per row) and rows (float32, as predicted); a version reloaded by
    the same worker goes on from it.
    """

    def __init__(self, model: str, version: str, reference: Reference, window: int, shared_dir: str,
                 ranges: RangeCheck):
        """`ranges`: the training range check of the version's model (the reference's first and last edges), which
        its range warnings use too."""
        self.model, self.version, self.reference, self.window = model, version, reference, window
        self._n = n = len(reference.edges)
        self._block = min(_BLOCK_ROWS, window)
        edges = [np.array(e, dtype=np.float32) for e in reference.edges]
        self._range = ranges
        # A value's bin is the number of these bounds at most it: the edges, then the float32 after the
        # maximum, which splits "exactly the maximum" from "above it".
        self._bounds = [np.append(e, np.nextafter(e[-1], np.float32(np.inf))) for e in edges]
        self._header_size = 8 * (2 + n)
        self._rows_offset = self._header_size + 8 * window
        self._directory: Path | None = None
        size = self._rows_offset + 4 * window * n
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
        self._times = memoryview(self._map)[self._header_size:self._rows_offset].cast("d")
        self._rows = memoryview(self._map)[self._rows_offset:]
        self._header_array, self._times_array, self._rows_array = self._views(self._map)
        self._seen, self._counted = int(self._header[0]), int(self._header[1])

    def _views(self, buffer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A worker's file as arrays: header, times, rows."""
        return (np.frombuffer(buffer, np.float64, 2 + self._n),
                np.frombuffer(buffer, np.float64, self.window, self._header_size),
                np.frombuffer(buffer, np.float32, self.window * self._n, self._rows_offset).reshape(self.window, -1))

    def count(self, x: np.ndarray) -> None:
        """Count the rows of `x` (N, features; float32) into the window and the out-of-range counters."""
        if len(x) == 1:  # a (1, n) array's bytes are its row's: iterating over it would cost as much again
            self._count_row(x)
        elif len(x) <= _ROW_BY_ROW:
            for row in x:
                self._count_row(row)
        else:
            self._count_rows(x)

    def _count_row(self, row: np.ndarray) -> None:
        seen, width = self._seen, 4 * self._n
        start = seen % self.window * width
        self._rows[start:start + width] = row.tobytes()
        self._times[seen % self.window] = time.monotonic()
        # Rows seen last: a reader never takes a slot whose row is not written yet.
        self._seen = self._header[0] = seen + 1
        if seen + 1 - self._counted >= self._block:
            self._count_out_of_range(seen + 1)

    def _count_rows(self, x: np.ndarray) -> None:
        # The rows before them first: a large batch may overwrite them in the ring.
        self._count_out_of_range(self._seen)
        self._add_outside(x)
        kept = x[-self.window:]
        # Into the ring as at most two slices, the second where it wraps (at 1,000 rows 2 us, against 14 us by
        # an index array of slots).
        start = (self._seen + len(x) - len(kept)) % self.window
        first, now = min(len(kept), self.window - start), time.monotonic()
        self._rows_array[start:start + first], self._times_array[start:start + first] = kept[:first], now
        self._rows_array[:len(kept) - first], self._times_array[:len(kept) - first] = kept[first:], now
        self._seen += len(x)
        # Counted before seen: a reader in between counts none of these rows twice.
        self._counted = self._header[1] = self._seen
        self._header[0] = self._seen

    def _count_out_of_range(self, upto: int) -> None:
        """Add the out-of-range values of the rows counted since the last time, up to row `upto`."""
        if upto > self._counted:
            self._add_outside(self._rows_array[np.arange(self._counted, upto) % self.window])
            self._counted = self._header[1] = upto

    def _add_outside(self, rows: np.ndarray) -> None:
        if (counts := self._outside(rows)) is not None:
            self._header_array[2:] += counts

    def _outside(self, rows: np.ndarray) -> np.ndarray | None:
        """Per feature, how many of `rows` lie outside the training range; None when none does (most batches). Counted
        as a vector of ones times the mask: at 1,000 rows 5.7 us, against 15 us for `mask.sum(axis=0)`, which adds
        the (1000, 13) mask one short row at a time. In float64 the integer counts are exact whatever order the BLAS
        of this CPU adds them in."""
        outside = self._range.outside(rows)
        if outside is None:
            return None
        counts: np.ndarray = np.ones(len(outside)) @ outside.astype(np.float64)
        return counts

    def summary(self) -> Summary:
        window = self.window
        seen, outside = 0, np.zeros(self._n)
        times, rows = [], []
        for raw in self._worker_files():
            header, worker_times, worker_rows = self._views(raw)
            count, counted = int(header[0]), int(header[1])
            seen += count
            # Counted in blocks: the latest rows' out-of-range values are counted here, from the ring.
            # (At most a window of them: a read racing a worker's write may see its counts half updated.)
            latest = self._outside(worker_rows[np.arange(max(counted, count - window), count) % window])
            outside += header[2:] if latest is None else header[2:] + latest
            slots = np.arange(count - min(count, window), count) % window  # this worker's rows, oldest first
            times.append(worker_times[slots])
            rows.append(worker_rows[slots])
        merged, all_times = np.concatenate(rows), np.concatenate(times)
        if len(merged) > window:  # the newest rows by time; a batch's rows (one time) in their order
            merged = merged[np.lexsort((np.arange(len(merged)), all_times))[-window:]]
        counts = [np.bincount(np.searchsorted(bounds, merged[:, j], side="right"), minlength=len(bounds) + 1)
                  for j, bounds in enumerate(self._bounds)]
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
