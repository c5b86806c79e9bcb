"""Read and validate the training CSV: every problem is reported with file, line and column."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from export.errors import ExportError
from export.schema import FEATURE_NAMES, TARGET

COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, TARGET.name)
# 5-fold cross-validation with an early-stopping split inside each fold needs a few rows per fold.
MIN_ROWS = 20


class DataError(ExportError):
    pass


@dataclass(frozen=True)
class Dataset:
    path: Path
    features: npt.NDArray[np.float64]  # (rows, 13), columns in schema order
    target: npt.NDArray[np.float64]  # (rows,)
    sha256: str  # of the file's bytes


def load(path: Path) -> Dataset:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the file: {error}") from error
    table = _parse(path, text)
    return Dataset(path, table[:, :-1], table[:, -1], hashlib.sha256(raw).hexdigest())


def _parse(path: Path, text: str) -> npt.NDArray[np.float64]:
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    if not header:
        raise DataError(f"{path}: the file is empty; expected a header row with {', '.join(COLUMNS)}")
    order = _column_order(path, header)
    data_rows = (cells for cells in reader if cells)  # blank lines, e.g. a trailing one, are not rows
    rows = [
        _parse_row(f"{path}, line {reader.line_num} (data row {number})", header, cells)
        for number, cells in enumerate(data_rows, start=1)
    ]
    if len(rows) < MIN_ROWS:
        raise DataError(f"{path}: {len(rows)} data rows after the header; at least {MIN_ROWS} are needed")
    return np.asarray(rows, dtype=np.float64)[:, order]


def _column_order(path: Path, header: list[str]) -> list[int]:
    """Positions of the expected columns in the file; any order is accepted, nothing missing or extra."""
    where = f"{path}, line 1 (header)"
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{where}: duplicate column(s) {', '.join(duplicates)}")
    missing = [name for name in COLUMNS if name not in header]
    unexpected = [f"{name!r} (column {i + 1})" for i, name in enumerate(header) if name not in COLUMNS]
    if missing or unexpected:
        problems = [f"missing column(s) {', '.join(missing)}"] if missing else []
        problems += [f"unexpected column(s) {', '.join(unexpected)}"] if unexpected else []
        raise DataError(f"{where}: {'; '.join(problems)}; expected {', '.join(COLUMNS)}")
    return [header.index(name) for name in COLUMNS]


def _parse_row(where: str, header: list[str], cells: list[str]) -> list[float]:
    if len(cells) != len(header):
        raise DataError(f"{where}: {len(cells)} cells, expected {len(header)}")
    return [_parse_cell(f"{where}, column {name}", cell.strip()) for name, cell in zip(header, cells)]


def _parse_cell(where: str, cell: str) -> float:
    if not cell:
        raise DataError(f"{where}: empty cell (missing value)")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {cell!r} is not a finite number")
    return value
