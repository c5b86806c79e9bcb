"""Bad training data is refused by the real CLI with file, line and column named, and nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export import data

REPO = Path(__file__).resolve().parent.parent
GOOD = (REPO / "data" / "housing.csv").read_text()
HEADER, *ROWS = GOOD.splitlines()


def with_cell(line: int, column: str, value: str) -> str:
    """The good CSV with one cell replaced; `line` counts the header as line 1."""
    lines = GOOD.splitlines()
    cells = lines[line - 1].split(",")
    cells[HEADER.split(",").index(column)] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def without_column(column: str) -> str:
    index = HEADER.split(",").index(column)
    return "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != index) for line in [HEADER, *ROWS])


CASES = {
    "missing column": (without_column("RM"), ["line 1", "missing column(s) RM"]),
    "misnamed column": (GOOD.replace("LSTAT", "LSTATS", 1), ["line 1", "missing column(s) LSTAT", "'LSTATS'"]),
    "non-numeric cell": (
        with_cell(5, "TAX", "cheap"), ["line 5", "data row 4", "column TAX", "'cheap' is not a number"]
    ),
    "literal nan": (with_cell(7, "RM", "nan"), ["line 7", "column RM", "'nan' is not a finite number"]),
    "empty cell": (with_cell(3, "CRIM", ""), ["line 3", "column CRIM", "empty cell"]),
    "ragged row": (GOOD.replace(ROWS[9], ROWS[9] + ",1.0"), ["line 11", "15 cells, expected 14"]),
    "empty file": ("", ["the file is empty"]),
    "header only": (HEADER + "\n", ["0 data rows"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_data_exits_non_zero_naming_file_row_and_column_and_writes_nothing(case: str, tmp_path: Path) -> None:
    text, expected = CASES[case]
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "export", "--data", str(bad), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"export: error: {bad}")
    assert "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in result.stderr
    assert not out.exists()


def test_a_missing_data_file_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "export", "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "nowhere.csv: cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_columns_may_come_in_any_order_and_are_read_by_name(tmp_path: Path) -> None:
    lines = [line.split(",") for line in GOOD.splitlines()]
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join(",".join(reversed(cells)) for cells in lines) + "\n")
    original, reordered = data.load(REPO / "data" / "housing.csv"), data.load(shuffled)
    np.testing.assert_array_equal(original.features, reordered.features)
    np.testing.assert_array_equal(original.target, reordered.target)


def test_the_dataset_is_the_workshops_506_rows() -> None:
    dataset = data.load(REPO / "data" / "housing.csv")
    assert dataset.features.shape == (506, 13)
    assert dataset.target[:3].tolist() == [24.0, 21.6, 34.7]
