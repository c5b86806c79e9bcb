"""A real Prometheus (Debian's `prometheus` package, which `make test` installs) scrapes a two-worker server:
what it stores equals what the test sent, and every query of deploy/'s Grafana dashboard and alerting rules
parses and returns data on it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.conftest import FEATURES, ROOT, ROWS, free_port, running_server, stop

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).with_name("prometheus-rules-test.yaml")
JOB = "housing-serving"  # the job name the not-ready alert assumes
# What Grafana would fill in; a minute spans the whole test, both traffic phases included.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": JOB}
# Probes: Prometheus's own scrapes and the fixture's readiness polls, whose numbers the test does not choose.
PROBES = 'route!~"/metrics|/health/ready"'
ALERT_EXPR = re.compile(r"(?P<series>[a-zA-Z_:][\w:]*(\{[^}]*\})?) (==|!=|>=|<=|>|<) (?P<threshold>[0-9.]+)")
T = TypeVar("T")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every panel target, Grafana's variables filled in."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} {target['refId']}", expr))
    return queries


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while (result := condition()) is None or result is False:
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)
    return result


@dataclass
class Sent:
    """What the test sent and what the server answered it."""
    requests: int = 0
    rows: Counter[str] = field(default_factory=Counter)  # by model
    statuses: Counter[int] = field(default_factory=Counter)

    def post(self, http: httpx.Client, path: str, body: Any, status: int = 200, rows: int = 0,
             **kwargs: Any) -> None:
        """POST `body`, expecting `status` and, when it is 200, `rows` predictions of the model in `path`."""
        response = http.post(path, json=body, **kwargs)
        assert response.status_code == status, response.text
        self.requests += 1
        self.statuses[status] += 1
        if rows:
            self.rows[path.split("/models/")[1].split("/")[0]] += rows


def records(start: int, count: int, rm_shift: float = 0) -> list[list[float]]:
    """`count` rows of the training data spread evenly over the whole file (it is sorted by town, so that
    consecutive rows would drift), from row `start` on, RM shifted."""
    return [[ROWS[(start + k * len(ROWS) // count) % len(ROWS)][name] + (rm_shift if name == "RM" else 0)
             for name in FEATURES] for k in range(count)]


def send_phase(url: str, sent: Sent) -> None:
    """Every kind of request once or more: single records, batches, V2 tensors, and 4xx of several kinds. The
    mlp gets RM shifted by +2, a drift the linear model's rows do not have."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for k in range(10):
            sent.post(http, "/models/linear/predict", dict(zip(FEATURES, records(50 * k, 1)[0])), rows=1)
        for k in range(3):
            sent.post(http, "/models/mlp/predict", {"instances": records(k, 400, rm_shift=2)}, rows=400)
        for k in range(2):
            batch = records(k, 300)
            sent.post(http, "/v2/models/linear/infer", {"inputs": [{"name": "features", "shape": [300, 13],
                      "datatype": "FP32", "data": [value for row in batch for value in row]}]}, rows=300)
        sent.post(http, "/models/linear/predict", {"CRIM": 1.0}, 422)
        sent.post(http, "/models/nope/predict", {"instances": records(0, 1)}, 404)
        sent.post(http, "/models/linear/predict", {}, 415, headers={"Content-Type": "text/plain"})
        sent.post(http, "/v2/models/linear/infer", {"inputs": []}, 400)


def query(prometheus: str, expr: str, at: float) -> list[dict[str, Any]]:
    """The instant query's result at Unix time `at`, after checking that it parsed and ran."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr, "time": at}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value(prometheus: str, expr: str, at: float) -> float | None:
    """The value of a query that gives one series, or None if it gives none."""
    result = query(prometheus, expr, at)
    return float(result[0]["value"][1]) if result else None


def get(prometheus: str, path: str) -> Any:
    return httpx.get(f"{prometheus}{path}", timeout=10).json()["data"]


@dataclass
class Scraped:
    prometheus: str
    at: float  # when every request sent had been scraped and the rules evaluated on it
    sent: Sent
    exposition: str  # the server's, then
    alerts: list[dict[str, Any]]  # pending and firing, then

    def query(self, expr: str) -> list[dict[str, Any]]:
        return query(self.prometheus, expr, self.at)

    def value(self, expr: str) -> float | None:
        return value(self.prometheus, expr, self.at)


@contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """Our own Prometheus (not the package's service, if it runs) on a free 127.0.0.1 port, its storage in
    `tmp_path`, scraping `target` every second and evaluating deploy/'s rules as often; stopped afterwards."""
    assert PROMETHEUS and PROMTOOL, "Debian's prometheus package (it holds promtool) is installed by `make test`"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }))
    url = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                    f"--web.listen-address={url.removeprefix('http://')}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False
        until(ready, 30, "Prometheus ready")
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """Two phases of the same traffic, each waited for until Prometheus holds exactly what was sent (so that
    every series has a sample before it grows, and rate() has an increase to see); the rules evaluated on
    it; then the server stopped, Prometheus left running to be asked."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    sent = Sent()
    with running_server(tmp_path, "--workers", "2", "--access-log", "off") as server, \
            running_prometheus(tmp_path, server.url.removeprefix("http://")) as prometheus:
        for _ in range(2):
            send_phase(server.url, sent)
            until(lambda: value(prometheus, f"sum(serve_requests_total{{{PROBES}}})", time.time()) == sent.requests,
                  30, f"Prometheus scraped the {sent.requests} requests sent")
        until(lambda: value(prometheus, "sum(serve_rows_predicted_total)", time.time()) == sum(sent.rows.values()),
              30, "Prometheus scraped the rows predicted")
        scraped_at = time.time()
        until(lambda: all(time_of(group["lastEvaluation"]) > scraped_at
                          for group in get(prometheus, "/api/v1/rules")["groups"]),
              30, "the rules evaluated after the last scrape")
        scraped = Scraped(prometheus, time.time(), sent, httpx.get(f"{server.url}/metrics", timeout=10).text,
                          get(prometheus, "/api/v1/alerts")["alerts"])
        stop(server.process, timeout=30)
        yield scraped


def time_of(rfc3339: str) -> float:
    """Prometheus's RFC 3339 times (to the nanosecond, which fromisoformat truncates) as Unix seconds."""
    return datetime.fromisoformat(rfc3339).timestamp()


def test_prometheus_holds_exactly_the_requests_sent(scraped: Scraped) -> None:
    assert scraped.value(f"sum(serve_requests_total{{{PROBES}}})") == scraped.sent.requests
    by_status = {int(result["metric"]["status"]): float(result["value"][1])
                 for result in scraped.query(f"sum by (status) (serve_requests_total{{{PROBES}}})")}
    assert by_status == dict(scraped.sent.statuses)


def test_prometheus_holds_exactly_the_rows_predicted_by_model(scraped: Scraped) -> None:
    rows = {result["metric"]["model"]: float(result["value"][1])
            for result in scraped.query("sum by (model) (serve_rows_predicted_total)")}
    assert rows == dict(scraped.sent.rows) == {"linear": 2 * (10 + 2 * 300), "mlp": 2 * 3 * 400}


def test_the_exposition_passes_promtool_check_metrics(scraped: Scraped) -> None:
    assert PROMTOOL
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=scraped.exposition, capture_output=True, text=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[name for name, _ in dashboard_queries()])
def test_every_dashboard_query_parses_and_returns_data(scraped: Scraped, panel: str, expr: str) -> None:
    assert scraped.query(expr), f"{panel}: no data for {expr}"


def test_every_dashboard_panel_reads_the_data_source_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert "DS_PROMETHEUS" in {variable["name"] for variable in dashboard["templating"]["list"]}
    sources = [item["datasource"] for panel in dashboard["panels"] for item in (panel, *panel["targets"])]
    assert all(source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for source in sources)


def test_the_dashboards_threshold_lines_are_the_alerts_thresholds() -> None:
    alerts = {rule["alert"]: ALERT_EXPR.fullmatch(rule["expr"].strip()) for rule in rules() if "alert" in rule}
    thresholds = {name: float(match["threshold"]) for name, match in alerts.items() if match}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    defaults = {panel["title"]: panel["fieldConfig"]["defaults"] for panel in panels}
    lines = {title: {step["value"] for step in config["thresholds"]["steps"]} - {None}
             for title, config in defaults.items() if "thresholds" in config}
    assert lines["Drift: PSI per feature"] == {0.1, thresholds["ServeFeatureDrift"]}  # 0.1: a moderate shift
    assert lines["Error ratio"] == {thresholds["ServeServerErrors"], thresholds["ServeClientErrors"]}


def test_the_dashboards_job_variable_lists_the_scraped_job(scraped: Scraped) -> None:
    [variable] = [v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["name"] == "job"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
    assert match
    metric, label = match.groups()
    assert get(scraped.prometheus, f"/api/v1/label/{label}/values?match[]={metric}") == [JOB]


@pytest.mark.parametrize("rule", rules(), ids=[rule.get("record", rule.get("alert")) for rule in rules()])
def test_every_rule_query_parses_and_returns_data(scraped: Scraped, rule: dict[str, Any]) -> None:
    """A recording rule's query returns data; an alert compares one series with a threshold, and that
    series returns data (the alert itself firing is the business of prometheus-rules-test.yaml)."""
    expr = rule["expr"].strip()
    if "alert" in rule:
        match = ALERT_EXPR.fullmatch(expr)
        assert match, f"{rule['alert']}: not `series op threshold`: {expr}"
        scraped.query(expr)  # parses and runs, with or without data
        expr = match["series"]
    assert scraped.query(expr), f"no data for {expr}"


def test_prometheus_evaluates_every_rule_without_error(scraped: Scraped) -> None:
    groups = get(scraped.prometheus, "/api/v1/rules")["groups"]
    health = {rule["name"]: (rule["health"], rule.get("lastError", "")) for group in groups for rule in group["rules"]}
    assert health == {rule.get("record", rule.get("alert")): ("ok", "") for rule in rules()}


def test_the_client_error_alert_is_pending_when_a_fifth_of_the_requests_are_4xx(scraped: Scraped) -> None:
    assert scraped.sent.statuses[200] / scraped.sent.requests < 0.9
    states = {alert["labels"]["alertname"]: alert["state"] for alert in scraped.alerts
              if alert["labels"]["alertname"] != "ServeFeatureDrift"}
    assert states == {"ServeClientErrors": "pending"}


def test_the_drift_alert_is_pending_for_the_shifted_feature_of_the_shifted_model(scraped: Scraped) -> None:
    drifted = {(alert["labels"]["model"], alert["labels"]["feature"]) for alert in scraped.alerts
               if alert["labels"]["alertname"] == "ServeFeatureDrift"}
    assert drifted == {("mlp", "RM")}


def test_the_not_ready_condition_holds_once_the_server_is_gone_and_not_before(scraped: Scraped) -> None:
    [alert] = [rule for rule in rules() if rule.get("alert") == "ServeNotReady"]
    assert scraped.value(alert["expr"]) is None
    until(lambda: value(scraped.prometheus, alert["expr"], time.time()) == 0, 15,
          f"{alert['expr']} once the server stopped")


def rule_test_series() -> dict[str, set[str]]:
    """The names of the made-up series in prometheus-rules-test.yaml, and the label names each is given."""
    series: dict[str, set[str]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for given in test["input_series"]:
            name, _, labels = given["series"].partition("{")
            series.setdefault(name, set()).update(re.findall(r'(\w+)="', labels))
    return series


@pytest.mark.parametrize(("name", "labels"), rule_test_series().items(), ids=list(rule_test_series()))
def test_the_alerts_unit_tests_make_up_series_with_real_names_and_labels(scraped: Scraped, name: str,
                                                                        labels: set[str]) -> None:
    stored = get(scraped.prometheus, f"/api/v1/series?match[]={name}")
    assert stored, f"Prometheus has no {name}"
    assert labels <= set().union(*stored)


def test_promtool_check_rules_passes() -> None:
    assert PROMTOOL
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_alerts_fire_when_their_unit_tests_say() -> None:
    assert PROMTOOL
    check = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
