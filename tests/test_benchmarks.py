"""The benchmark suite cannot rot: its smallest configuration runs end to end and writes its results.

Only that it ran is asserted, never a speed: figures on a shared machine are the report's business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import readme
from tests.conftest import ROOT


@pytest.mark.slow
def test_quick_run_of_ours_against_the_ceiling_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--targets", "ceiling,ours", "--sections", "http",
         "--seconds", "1", "--results", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    points = results["http"]["points"]
    assert {p["target"] for p in points} == {"ceiling", "ours"}
    assert all(p["requests"] > 0 and p["non_2xx"] == 0 for p in points)
    assert results["http"]["answer_checks"]["ours/1"] == "200, predictions match"
    assert results["environment"]["commit"] and results["environment"]["load_average_start"]
    assert "## Headline" in (out / "results.md").read_text()
    assert (out / "http.png").stat().st_size > 0


def test_readme_performance_section_is_replaced_between_its_markers_only(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"# Title\n## Performance\n{readme.START}\nold\n{readme.END}\n## Next\n")
    assert readme.update("# Benchmarks\n\n| a |\n\n![http.png](http.png)\n", tmp_path / "results", page)
    text = page.read_text()
    assert "old" not in text and "](results/http.png)" in text and text.endswith(f"{readme.END}\n## Next\n")


def test_readme_without_markers_is_left_alone(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text("# Title\n## Performance\n")
    assert not readme.update("# Benchmarks\n", tmp_path, page)
    assert page.read_text() == "# Title\n## Performance\n"
