"""The benchmark suite cannot rot: its smallest configuration runs end to end and writes its results.

Only that it ran is asserted, never a speed: figures on a shared machine are the report's business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import readme, wrk
from benchmarks.payloads import Request
from benchmarks.plan import FULL
from benchmarks.throughput import Endpoint, Point, run_rounds
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


def test_the_goal_points_get_more_rounds_and_each_round_runs_a_points_targets_back_to_back(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    order: list[str] = []

    def fake_run(url: str, *args: object) -> wrk.Run:
        order.append(url)
        return wrk.Run(requests=1, seconds=1.0, errors=0, non_2xx=0, p50_ms=1.0, p99_ms=1.0, mean_ms=1.0)

    monkeypatch.setattr(wrk, "run", fake_run)
    points = [Point(target, rows, 64) for rows in (1, 1000) for target in ("ceiling", "ours", "mlserver")]
    endpoints = {target: Endpoint(f"http://{target}", {rows: (tmp_path, Request(f"/{rows}", b"", {}))
                                                       for rows in (1, 1000)}) for target in ("ceiling", "ours",
                                                                                              "mlserver")}
    summaries = run_rounds(points, endpoints, replace(FULL, rounds=2, goal_rounds=4).rounds_for, 1)
    assert {(s.point.target, s.point.rows): len(s.runs) for s in summaries} == {
        ("ceiling", 1): 4, ("ours", 1): 4, ("mlserver", 1): 2, ("ceiling", 1000): 2, ("ours", 1000): 2,
        ("mlserver", 1000): 2}
    round_one = ["http://ceiling/1", "http://ours/1", "http://mlserver/1",
                 "http://ceiling/1000", "http://ours/1000", "http://mlserver/1000"]
    assert order == round_one * 2 + ["http://ceiling/1", "http://ours/1"] * 2
