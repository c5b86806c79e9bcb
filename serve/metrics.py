"""Prometheus metrics that stay exact with several workers and cost about a microsecond per request.

Every worker owns one small memory-mapped file of float64 counters. A series (route, model, version)
gets its slots the first time it is counted, and the worker then rewrites a small key file naming
every slot's series; a scrape, answered by any worker, sums every worker's counters by series. A
worker that has exited leaves its files behind, so counters never go backwards.
"""

from __future__ import annotations

import json
import mmap
import os
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path

import numpy as np

STATUSES = ("200", "400", "401", "404", "405", "408", "413", "415", "422", "500", "503", "other")
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
NO_MODEL = ""
UNMATCHED_ROUTE = "unmatched"
_N_BUCKETS = len(LATENCY_BUCKETS) + 1
# Per (route, model, version) series: requests by status | latency buckets | latency sum | rows predicted.
_SERIES_SIZE = len(STATUSES) + _N_BUCKETS + 2
# Before the series, one counter of the worker's own: access log lines dropped.
_HEADER = 1
_INITIAL_SERIES = 64

Key = tuple[str, str, str]  # route template, model, version


class Metrics:
    def __init__(self, directory: str = ""):
        self._offsets: dict[Key, int] = {}
        self._status_index = {int(status): k for k, status in enumerate(STATUSES[:-1])}
        self._directory = directory
        self._file = None if not directory else Path(directory) / f"metrics-{os.getpid()}.bin"
        self._map = self._mapping(_INITIAL_SERIES)
        self._values = memoryview(self._map).cast("d")

    def observe(self, route: str, model: str, version: str, status: int, seconds: float, rows: int) -> None:
        offset = self._offsets.get((route, model, version))
        if offset is None:
            offset = self._add((route, model, version))
        values = self._values
        values[offset + self._status_index.get(status, len(STATUSES) - 1)] += 1
        values[offset + len(STATUSES) + bisect_left(LATENCY_BUCKETS, seconds)] += 1
        values[offset + _SERIES_SIZE - 2] += seconds
        if rows:
            values[offset + _SERIES_SIZE - 1] += rows

    def access_log_dropped(self, lines: int) -> None:
        """This worker's total of access log lines dropped so far."""
        self._values[0] = lines

    def _add(self, key: Key) -> int:
        offset = _HEADER + len(self._offsets) * _SERIES_SIZE
        if offset + _SERIES_SIZE > len(self._values):
            self._grow()
        self._offsets[key] = offset
        if self._file is not None:  # the counters exist before the key file names them
            temporary = self._file.with_suffix(".tmp")
            temporary.write_text(json.dumps([[*k, o] for k, o in self._offsets.items()]))
            os.replace(temporary, self._file.with_suffix(".json"))
        return offset

    def _mapping(self, series: int) -> mmap.mmap:
        size = (_HEADER + series * _SERIES_SIZE) * 8
        if self._file is None:
            return mmap.mmap(-1, size)
        with open(self._file, "a+b") as file:
            file.truncate(size)
            return mmap.mmap(file.fileno(), size)

    def _grow(self) -> None:
        old_map, old_values = self._map, self._values
        self._map = self._mapping(2 * (len(old_values) - _HEADER) // _SERIES_SIZE)
        self._values = memoryview(self._map).cast("d")
        if self._file is None:  # an anonymous map starts empty: carry the counts over
            self._values[:len(old_values)] = old_values
        old_values.release()
        old_map.close()

    def _totals(self) -> tuple[dict[Key, np.ndarray], np.ndarray]:
        """Every series' counters, and the workers' own counters, summed over the workers."""
        totals: dict[Key, np.ndarray] = defaultdict(lambda: np.zeros(_SERIES_SIZE))
        if self._file is None:
            counters = np.frombuffer(self._map, dtype=np.float64)
            for key, offset in self._offsets.items():
                totals[key] += counters[offset:offset + _SERIES_SIZE]
            return totals, counters[:_HEADER].copy()
        header = np.zeros(_HEADER)
        for keys_path in Path(self._directory).glob("metrics-*.json"):
            keys = json.loads(keys_path.read_text())
            counters = np.fromfile(keys_path.with_suffix(".bin"), dtype=np.float64)
            header += counters[:_HEADER]
            for route, model, version, offset in keys:
                totals[(route, model, version)] += counters[offset:offset + _SERIES_SIZE]
        return totals, header

    def exposition(self) -> str:
        """The Prometheus text format (version 0.0.4)."""
        totals, header = self._totals()
        requests = ["# HELP serve_requests_total HTTP requests answered, by route template, model, version and status.",
                    "# TYPE serve_requests_total counter"]
        latency = ["# HELP serve_request_duration_seconds Time from request start to the last response byte.",
                   "# TYPE serve_request_duration_seconds histogram"]
        rows = ["# HELP serve_rows_predicted_total Records (rows) predicted, by model and version.",
                "# TYPE serve_rows_predicted_total counter"]
        predicted: dict[tuple[str, str], float] = defaultdict(float)
        for (route, model, version), series in sorted(totals.items()):
            labels = f'route="{route}",model="{model}",version="{version}"'
            for status, count in zip(STATUSES, series[:len(STATUSES)]):
                if count:
                    requests.append(f'serve_requests_total{{{labels},status="{status}"}} {count:.0f}')
            cumulative = np.cumsum(series[len(STATUSES):len(STATUSES) + _N_BUCKETS])
            if cumulative[-1]:
                for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), cumulative):
                    latency.append(f'serve_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count:.0f}')
                latency.append(f"serve_request_duration_seconds_sum{{{labels}}} {float(series[-2])!r}")
                latency.append(f"serve_request_duration_seconds_count{{{labels}}} {cumulative[-1]:.0f}")
            if model:
                predicted[(model, version)] += float(series[-1])
        rows += [f'serve_rows_predicted_total{{model="{m}",version="{v}"}} {n:.0f}'
                 for (m, v), n in sorted(predicted.items())]
        dropped = ["# HELP serve_access_log_dropped_lines_total Access log lines dropped: stdout was closed or did "
                   "not keep up.", "# TYPE serve_access_log_dropped_lines_total counter",
                   f"serve_access_log_dropped_lines_total {header[0]:.0f}"]
        return "\n".join(requests + latency + rows + dropped) + "\n"
