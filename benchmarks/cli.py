"""`python -m benchmarks [--quick]`: measure in one run, write JSON, Markdown and PNG plots to benchmarks/results/."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks import environment, plots, readme, report, run
from benchmarks.paths import RESULTS, ROOT, WORK
from benchmarks.plan import FULL, QUICK, SECTIONS, Plan
from benchmarks.targets import PEER_PYTHONS, TARGETS


def parse_args(argv: list[str]) -> tuple[Plan, Path, bool]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the <= 2 minute subset (written to build/bench/)")
    parser.add_argument("--results", type=Path, help="output folder (default benchmarks/results, with --quick "
                        "build/bench/quick-results: a smoke run is not a result to commit)")
    parser.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (whole, at least 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per HTTP point")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.targets:
        plan = replace(plan, targets=tuple(_known(args.targets, tuple(TARGETS), "target")))
    if args.sections:
        plan = replace(plan, sections=tuple(_known(args.sections, SECTIONS, "section")))
    if args.seconds:
        plan = replace(plan, seconds=max(1, args.seconds))
    if args.rounds:
        plan = replace(plan, rounds=max(1, args.rounds), goal_rounds=max(1, args.rounds))
    default = WORK / "quick-results" if args.quick else RESULTS
    # Only a full run into the default folder is "the latest result" the README shows.
    publish = not args.quick and args.results is None and not (args.targets or args.sections or args.seconds
                                                               or args.rounds)
    return plan, args.results or default, publish


def _known(given: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}(s): {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return chosen


def measure(plan: Plan, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"environment": environment.describe()}
    missing = [t for t in plan.targets if t in PEER_PYTHONS and not PEER_PYTHONS[t].exists()]
    if missing:
        venvs = sorted({str(PEER_PYTHONS[t].parent.parent.relative_to(ROOT)) for t in missing})
        results["skipped"] = f"{', '.join(missing)} ({', '.join(venvs)} missing: `make bench` builds them)"
        plan = plan.without(missing)
    results["plan"] = asdict(plan)
    for section in SECTIONS:
        if section not in plan.sections:
            continue
        _say(f"{section} ...")
        if section == "inprocess":
            results["inprocess"] = run.inprocess_section(plan)
        elif section == "export":
            results["export"] = run.export_section(work)
        elif section == "http" and plan.points():
            results["http"] = run.http_section(plan, work)
        elif section == "workers" and "ours" in plan.targets:
            results["workers"] = run.workers_section(plan, work)
    results["headline"] = report.headline(results)
    results["serving_checks"] = report.serving_checks(results)
    results["load_average_end"] = os.getloadavg()
    results["duration_s"] = time.monotonic() - started
    return results


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    written = plots.write(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(report.markdown(results, written))
    (out / "summary.md").write_text(report.summary(results, written))
    return out / "results.md"


def main(argv: list[str] | None = None) -> int:
    plan, out, publish = parse_args(sys.argv[1:] if argv is None else argv)
    grpc = any(TARGETS[p.target].transport == "grpc" for p in plan.points())
    for tool, package, needed in (("wrk", "wrk", True), ("h2load", "nghttp2-client", grpc)):
        if needed and shutil.which(tool) is None and "http" in plan.sections:
            print(f"benchmarks: {tool} is not installed (apt-get install -y {package}; `make bench` does it)",
                  file=sys.stderr)
            return 2
    work = WORK / ("quick" if plan.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    results = measure(plan, work)
    table = write(results, out)
    if publish and readme.update((out / "summary.md").read_text(), out):
        _say("updated the README's Performance section")
    print(table.read_text())
    _say(f"wrote {out}/ in {results['duration_s']:.0f} s")
    return 0


def _say(message: str) -> None:
    print(f"benchmarks: {message}", file=sys.stderr, flush=True)
