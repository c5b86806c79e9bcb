"""Results -> the headline ratios, the serving-issue checks, and the Markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from benchmarks.plan import DEFAULT_TRANSPORTS, LARGE_BATCH, PEER_POINTS, PEERS, SAME_TRANSPORT
from benchmarks.targets import PEER_PYTHONS, TARGETS

# The serving issue's goals.
RATIO_GOAL = 0.8
# The access-log issue's: `python -m serve` as it starts (text log on), and with the JSON log.
DEFAULT_RATIO_GOAL = 0.9
JSON_LOG_RATIO_GOAL = 0.85
P99_GOAL_MS = 0.3
BATCH_1000_GOAL_MS = 2.0
FEW_REQUESTS = 100
# The peers issue's, ours as `python -m serve` starts against the fastest peer measured in the same run.
PEER_SPEED_GOAL = 10.0
PEER_P99_GOAL = 0.5
PEER_ROWS_GOAL = 5.0
PEER_NAMES = {"mlserver": "MLServer", "kserve": "KServe", "litserve": "LitServe", "bentoml": "BentoML",
              "naive": "naive"}
# Every peer target, over every transport it was measured on.
PEER_TARGETS = tuple(peer for peers in SAME_TRANSPORT.values() for peer in peers)
CEILING = ("ceiling",)


def point(results: dict[str, Any], target: str, rows: int, connections: int) -> dict[str, Any] | None:
    for entry in results.get("http", {}).get("points", []):
        if (entry["target"], entry["rows"], entry["connections"]) == (target, rows, connections):
            return dict(entry)
    return None


def figure(entry: dict[str, Any] | None, key: str) -> float | None:
    return None if entry is None else float(entry[key])


def ratio(results: dict[str, Any], a: str, b: str, rows: int, connections: int) -> float | None:
    """req/s of `a` over `b`: the median of the per-round ratios. The two ran back to back in each round, so
    a round in which the shared machine was busy lowers both and cancels out, which medians of each do not."""
    ratios = [x / y for x, y in _rounds(results, a, b, rows, connections, "req_per_s_rounds") if y]
    return statistics.median(ratios) if ratios else None


def cpu_ratio(results: dict[str, Any], a: str, b: str, rows: int, connections: int) -> float | None:
    """Requests per server CPU-second of `a` over `b` (the median of the per-round ratios): the req/s ratio if
    each had its core to itself, which a busy shared machine does not give (see the README's Performance)."""
    ratios = [y / x for x, y in _rounds(results, a, b, rows, connections, "server_cpu_us_per_request_rounds") if x]
    return statistics.median(ratios) if ratios else None


def _rounds(results: dict[str, Any], a: str, b: str, rows: int, connections: int,
            key: str) -> list[tuple[float, float]]:
    """The two points' figures round by round, where both were measured."""
    first, second = point(results, a, rows, connections), point(results, b, rows, connections)
    if first is None or second is None:
        return []
    return list(zip(first.get(key, []), second.get(key, []), strict=False))


def widest(results: dict[str, Any]) -> int:
    """The most connections measured: where the throughput goals are judged."""
    return max((e["connections"] for e in results.get("http", {}).get("points", [])), default=64)


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Ours against each baseline at every (rows, connections) point measured in this run."""
    entries = results.get("http", {}).get("points", [])
    rows_connections = sorted({(e["rows"], e["connections"]) for e in entries if e["target"] == "ours"})
    ratios = [{
        "rows": rows, "connections": connections,
        **{f"ours_over_{b}": ratio(results, "ours", b, rows, connections) for b in ("ceiling", *PEERS)},
        "v2_json_over_ceiling": ratio(results, "ours-v2-json", "ceiling", rows, connections),
        "v2_binary_over_ceiling": ratio(results, "ours-v2-binary", "ceiling", rows, connections),
    } for rows, connections in rows_connections]
    return [r for r in ratios if any(value is not None for key, value in r.items() if "_over_" in key)]


def over_fastest_peer(results: dict[str, Any], rows: int, connections: int,
                      ours_targets: tuple[str, ...] = DEFAULT_TRANSPORTS) -> tuple[float | None, str]:
    """Our default configuration's req/s over the fastest peer's at this point, each side over its fastest
    transport (by median req/s): the per-round ratio of the two, and which two they were."""
    ours, peer = (_best(results, targets, rows, connections, "req_per_s", max)
                  for targets in (ours_targets, PEER_TARGETS))
    if ours is None or peer is None:
        return None, ""
    return ratio(results, ours[1], peer[1], rows, connections), f"{ours[1]} / {peer[1]}"


def p99_over_fastest_peer(results: dict[str, Any],
                          ours_targets: tuple[str, ...] = DEFAULT_TRANSPORTS) -> tuple[float | None, str]:
    """Our default configuration's lowest p99 at c=1, one row, over the lowest of any peer's transports there."""
    ours, peer = (_best(results, targets, 1, 1, "p99_ms", min) for targets in (ours_targets, PEER_TARGETS))
    if ours is None or peer is None:
        return None, ""
    return ours[0] / peer[0], f"{ours[1]} / {peer[1]}"


def _best(results: dict[str, Any], targets: tuple[str, ...], rows: int, connections: int, key: str,
          pick: Callable[[list[tuple[float, str]]], tuple[float, str]]) -> tuple[float, str] | None:
    """(figure, target) of the target whose `key` figure `pick` (min or max) chooses, of those measured here."""
    measured = [(float(entry[key]), target) for target in targets
                if (entry := point(results, target, rows, connections)) is not None]
    return pick(measured) if measured else None


def peer_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers issue's goals (rows/s ratio equals the req/s ratio: both sides send the same rows), each naming
    the transports that won on either side."""
    c_max = widest(results)
    checks = [
        (f"defaults / fastest peer, 1 row, c={c_max} (req/s)", over_fastest_peer(results, 1, c_max),
         f">= {PEER_SPEED_GOAL:g}", lambda v: v >= PEER_SPEED_GOAL),
        # What the Python HTTP stack allows at all: a bare Starlette route answering a constant, against the same
        # peer. Where this falls short of a goal, no server on that stack meets it on this machine.
        (f"bound: ceiling / fastest peer, 1 row, c={c_max} (req/s)", over_fastest_peer(results, 1, c_max, CEILING),
         "(context)", None),
        ("defaults p99 / fastest peer's p99, 1 row, c=1", p99_over_fastest_peer(results),
         f"<= {PEER_P99_GOAL:g}", lambda v: v <= PEER_P99_GOAL),
        ("bound: ceiling p99 / fastest peer's p99, 1 row, c=1", p99_over_fastest_peer(results, CEILING),
         "(context)", None),
        ("defaults / fastest peer, 1,000 rows, c=8 (rows/s)", over_fastest_peer(results, 1000, 8),
         f">= {PEER_ROWS_GOAL:g}", lambda v: v >= PEER_ROWS_GOAL),
    ]
    return [_check(f"{name}: {pair}" if pair else name, value, goal, passes)
            for name, (value, pair), goal, passes in checks]


def serving_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier serving issue's acceptance figures, each with its goal (None when not measured)."""
    c_max = widest(results)
    single_c1 = point(results, "ours", 1, 1)
    ceiling_c1 = point(results, "ceiling", 1, 1)
    batch = point(results, "ours", 1000, 1)
    binary = point(results, "ours-v2-binary", LARGE_BATCH, 1)
    json_ = point(results, "ours-v2-json", LARGE_BATCH, 1)
    return [
        *peer_checks(results),
        _check(f"ours / ceiling, 1 record, c={c_max} (req/s)", ratio(results, "ours", "ceiling", 1, c_max),
               f">= {RATIO_GOAL}", lambda v: v >= RATIO_GOAL),
        _check("ours p99 at c=1, 1 record (ms)", figure(single_c1, "p99_ms"), f"<= {P99_GOAL_MS}",
               lambda v: v <= P99_GOAL_MS),
        # Context for the p99: scheduling noise from the shared machine reaches the ceiling alike.
        _check("ceiling p99 at c=1, 1 record (ms), same run", figure(ceiling_c1, "p99_ms"), "(context)", None),
        _check("ours p50 at c=1, 1,000-record body (ms, bounds server time)", figure(batch, "p50_ms"),
               f"<= {BATCH_1000_GOAL_MS}", lambda v: v <= BATCH_1000_GOAL_MS),
        _check(f"V2 JSON / ceiling, 1 row, c={c_max} (req/s)", ratio(results, "ours-v2-json", "ceiling", 1, c_max),
               f">= {RATIO_GOAL}", lambda v: v >= RATIO_GOAL),
        _check(f"V2 binary / ceiling, 1 row, c={c_max} (req/s)",
               ratio(results, "ours-v2-binary", "ceiling", 1, c_max), "(reported)", None),
        _check(f"V2 binary FP32, {LARGE_BATCH:,} rows, c=1 (rows/s)", figure(binary, "rows_per_s"), "(reported)",
               None),
        _check(f"V2 JSON, {LARGE_BATCH:,} rows, c=1 (rows/s)", figure(json_, "rows_per_s"), "(reported)", None),
        _check(f"V2 binary / JSON rows/s at {LARGE_BATCH:,} rows",
               ratio(results, "ours-v2-binary", "ours-v2-json", LARGE_BATCH, 1), "(reported)", None),
        _check(f"defaults (text access log) / ceiling, 1 record, c={c_max} (req/s)",
               ratio(results, "ours-default", "ceiling", 1, c_max), f">= {DEFAULT_RATIO_GOAL}",
               lambda v: v >= DEFAULT_RATIO_GOAL),
        _check(f"JSON access log / ceiling, 1 record, c={c_max} (req/s)",
               ratio(results, "ours-json-log", "ceiling", 1, c_max), f">= {JSON_LOG_RATIO_GOAL}",
               lambda v: v >= JSON_LOG_RATIO_GOAL),
        _check(f"defaults (text access log) / access log off, 1 record, c={c_max} (req/s)",
               ratio(results, "ours-default", "ours", 1, c_max), "(reported)", None),
        _check(f"defaults / ceiling by server CPU time per request, 1 record, c={c_max}",
               cpu_ratio(results, "ours-default", "ceiling", 1, c_max), "(context)", None),
        _check(f"JSON access log / ceiling by server CPU time per request, 1 record, c={c_max}",
               cpu_ratio(results, "ours-json-log", "ceiling", 1, c_max), "(context)", None),
        _check(f"access log off / ceiling by server CPU time per request, 1 record, c={c_max}",
               cpu_ratio(results, "ours", "ceiling", 1, c_max), "(context)", None),
    ]


def _check(name: str, value: float | None, goal: str, passes: Any) -> dict[str, Any]:
    met = None if value is None or passes is None else bool(passes(value))
    return {"check": name, "value": value, "goal": goal, "met": met}


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    """The whole report: the summary, then every figure."""
    return summary(results, plots) + "\n" + details(results)


def summary(results: dict[str, Any], plots: list[str]) -> str:
    """Context, headline ratios, the serving-issue checks and the plots: what the README shows."""
    env = results["environment"]
    rounds, goal_rounds = results["plan"]["rounds"], results["plan"]["goal_rounds"]
    more = (f" ({goal_rounds} for the single-row points on which the goals are judged: the ceiling, ours, V2 JSON, "
            "the defaults and the JSON log at the most connections, ours and the defaults at one)"
            if goal_rounds != rounds else "")
    lines = [
        f"# Benchmarks{' (--quick)' if results['plan']['quick'] else ''}",
        "",
        f"{env['date_utc']}, commit `{env['commit'][:12]}`"
        f"{' + uncommitted changes' if env['uncommitted_changes'] else ''}, "
        f"{env['cpu']} x{env['cores']}, {env['os']}, Python {env['python']}, onnxruntime "
        f"{env['packages']['onnxruntime']}, {env['wrk']}{', ' + env['h2load'] if env.get('h2load') else ''}. "
        f"Load average at start {_load(env['load_average_start'])}, "
        f"at end {_load(results['load_average_end'])} (the machine is shared: compare ratios within this run). "
        f"Whole run {results['duration_s']:.0f} s.",
        "",
        f"HTTP: server pinned to CPU 0 (one uvicorn worker, uvloop + httptools; our server as `python -m serve` "
        f"starts, and in the grid below with `--access-log off` like the ceiling; ours writes each response's head "
        f"with its body and the responses of an event-loop pass together, with one keep-alive timer, "
        f"`serve/http_protocol.py`, the ceiling and the peers as uvicorn does, head then body as they come), "
        f"`wrk -t1` pinned to CPU 1, "
        f"{results['plan']['seconds']} s per run, medians of {rounds} interleaved round(s){more}; ratios are medians "
        "of the per-round ratios. Every target was first checked to answer 200 with the right prediction.",
        "",
        "gRPC: to the same servers' gRPC ports, ModelInfer with the rows as raw FP32 bytes (`raw_input_contents`, "
        "answered raw), `h2load -t1 -m1` (one stream per connection, so connections = concurrency) pinned to CPU 1; "
        "p50/p99 from its per-request log. Each gRPC target was first checked with a gRPC client (the status "
        "travels in trailers, which h2load does not read).",
        "",
    ]
    c_max = widest(results)
    if point(results, "ours-default", 1, c_max) is not None:
        by_rps, by_cpu = ({target: _x(of(results, target, "ceiling", 1, c_max))
                           for target in ("ours-default", "ours-json-log", "ours")} for of in (ratio, cpu_ratio))
        lines += [f"**The default configuration** (`python -m serve` as it starts: text access log on, gRPC on) "
                  f"answers **{by_rps['ours-default']}** the ceiling's requests/s, one record per request at "
                  f"c={c_max}; with `--access-log json` {by_rps['ours-json-log']}, with `--access-log off` "
                  f"{by_rps['ours']}. By server CPU time per request, which the share of a busy machine's core does "
                  f"not sway: {by_cpu['ours-default']}, {by_cpu['ours-json-log']} and {by_cpu['ours']}.", ""]
    if results.get("skipped"):
        lines += [f"Not measured: {results['skipped']}.", ""]
    if peers := peer_table(results):
        lines += [*peers, ""]
    lines += ["## Headline: ratios measured in the same run (req/s)", "",
              "| rows | connections | ours / ceiling | " + "".join(f"ours / {PEER_NAMES[p]} | " for p in PEERS)
              + "V2 JSON / ceiling | V2 binary / ceiling |", "|---:|---:|" + "---:|" * (len(PEERS) + 3)]
    for entry in results.get("headline", []):
        lines.append(f"| {entry['rows']:,} | {entry['connections']} | {_x(entry['ours_over_ceiling'])} | "
                     + "".join(f"{_x(entry.get(f'ours_over_{p}'))} | " for p in PEERS)
                     + f"{_x(entry['v2_json_over_ceiling'])} | {_x(entry['v2_binary_over_ceiling'])} |")
    lines += ["", "## Serving-issue checks", "", "| check | measured | goal | met |", "|---|---:|---|---|"]
    for check in results.get("serving_checks", []):
        met = {True: "yes", False: "**no**", None: "-"}[check["met"]]
        lines.append(f"| {check['check']} | {_number(check['value'])} | {check['goal']} | {met} |")
    lines += ["", *[f"![{name}]({name})" for name in plots], ""]
    return "\n".join(lines)


def peer_table(results: dict[str, Any]) -> list[str]:
    """Ours against every peer at the points the peers issue judges, same run, each transport against ours on the
    same, all of ours as `python -m serve` starts: REST JSON peers against ours' /models JSON, gRPC against ours'
    gRPC, V2 binary against ours' V2 binary."""
    lines = ["## Against the servers users pick instead (same run; ours with its defaults)", "",
             "| target | rows | conns | req/s | rows/s | p50 ms | p99 ms | ours (same transport) / this (req/s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rows, connections in PEER_POINTS:
        for ours, peers in SAME_TRANSPORT.items():
            if all(point(results, peer, rows, connections) is None for peer in peers):
                continue
            for target in (ours, *peers):
                entry = point(results, target, rows, connections)
                if entry is not None:
                    versus = None if target == ours else ratio(results, ours, target, rows, connections)
                    lines.append(f"| {TARGETS[target].label} | {rows:,} | {connections} | {entry['req_per_s']:,.0f} | "
                                 f"{entry['rows_per_s']:,.0f} | {entry['p50_ms']:.3f} | {entry['p99_ms']:.3f} | "
                                 f"{_x(versus)} |")
    return lines if len(lines) > 4 else []


def details(results: dict[str, Any]) -> str:
    http = results.get("http", {})
    lines = []
    if http:
        lines += ["", "## HTTP, medians of the rounds", "",
                  "| target | rows | conns | rounds | req/s | rows/s | p50 ms | p99 ms | non-2xx | socket errors "
                  "| server CPU µs/request |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for e in http["points"]:
            few = " (few)" if e["requests"] < FEW_REQUESTS * e["rounds"] else ""
            lines.append(f"| {TARGETS[e['target']].label} | {e['rows']:,} | {e['connections']} | {e['rounds']} | "
                         f"{e['req_per_s']:,.0f}{few} | {e['rows_per_s']:,.0f} | {e['p50_ms']:.3f} | "
                         f"{e['p99_ms']:.3f} | {e['non_2xx']} | {e['socket_errors']} | "
                         f"{e.get('server_cpu_us_per_request', 0):.1f} |")
        lines += ["", f"(few): under {FEW_REQUESTS} answers per run completed, a coarse figure; wrk counts no answer "
                  "still in flight when a run ends.", "",
                  "| server | cold start (process start to first right answer) | RSS at ready -> after the run | "
                  "requests served | processes | left running after stop | installed |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, s in http["servers"].items():
            lines.append(f"| {name} | {s['cold_start_s']:.2f} s | {_mib(s['rss_mib_at_ready'])} -> "
                         f"{_mib(s['rss_mib'])} | {s['requests_served']:,} | {s['processes']} | "
                         f"{s['left_running_after_stop']} | {_installed(results['environment'], name)} |")
        lines += ["", "Installed: ours, the packages `requirements.txt` pins (what the image ships; the dev venv holds "
                  "more); a peer, `du` of its venv (pip and setuptools included; MLServer and naive share one). "
                  "Image sizes, where a peer publishes an image: not measurable here (no registry access)."]
    workers = results.get("workers")
    if workers:
        lines += ["", "## 2 workers vs 1 (server and wrk unpinned, 1 record)", "",
                  "| server | conns | req/s | p99 ms | RSS per worker |", "|---|---:|---:|---:|---:|"]
        for e in workers["points"]:
            lines.append(f"| {TARGETS[e['target']].label} | {e['connections']} | {e['req_per_s']:,.0f} | "
                         f"{e['p99_ms']:.3f} | {_mib(workers['servers'][TARGETS[e['target']].server]['rss_mib'])} |")
    if results.get("inprocess"):
        sizes = sorted({e["rows"] for e in results["inprocess"]})
        lines += ["", "## In-process, one thread on CPU 0: microseconds per call (rows/s at the largest batch)", "",
                  "| implementation | " + " | ".join(f"{s:,}" for s in sizes) + f" | rows/s at {sizes[-1]:,} |",
                  "|---|" + "---:|" * (len(sizes) + 1)]
        for label in dict.fromkeys(e["label"] for e in results["inprocess"]):
            by_size = {e["rows"]: e for e in results["inprocess"] if e["label"] == label}
            lines.append(f"| {label} | " + " | ".join(f"{by_size[s]['us_per_call']:,.1f}" for s in sizes)
                         + f" | {by_size[sizes[-1]]['rows_per_s']:,.0f} |")
    if results.get("export"):
        lines += ["", f"Export (`python -m export`: train both models with 5-fold CV, convert, prove parity, write): "
                  f"{results['export']['seconds']:.1f} s."]
    lines.append("")
    return "\n".join(lines)


def _installed(env: dict[str, Any], server: str) -> str:
    if server.startswith("ours"):
        size = env.get("runtime_mib")
    elif server in PEER_PYTHONS:
        size = env.get("venv_mib", {}).get(PEER_PYTHONS[server].parent.parent.name)
    else:
        size = None  # the ceiling: a test harness, not something to install
    return "-" if size is None else f"{size:,.0f} MiB"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3f}"


def _mib(values: list[float]) -> str:
    return ", ".join(f"{v:.0f} MiB" for v in values)


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)
