"""The landing page: models, their features and metrics, a curl example and a try-it form each, which shows the
prediction's interval and the features' contributions as an inline SVG bar chart, and the model card's plot.

Rendered once whenever what is served changes; self-contained (no external assets but the plot, served here)."""

from __future__ import annotations

from html import escape

import orjson

from serve.model import Feature, Model
from serve.store import Served

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
section{border-top:2px solid #ddd;margin-top:2em}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}
form{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.4em .8em}
label{display:flex;flex-direction:column;font-size:13px}.result{margin-top:.8em;font-weight:bold}
.warn{color:#a05a00;font-weight:normal}.error{color:#b00020}.detail{font-weight:normal}
.bars{display:block;margin-top:.4em;font-weight:normal}.bars text{font-size:12px}.bars .pos{fill:#2b6cb0}
.bars .neg{fill:#c05621}.bars line{stroke:#444}figure{margin:1em 0}figure img{max-width:100%;height:auto}
"""

_SCRIPT = """
const SVG = "http://www.w3.org/2000/svg";
function line(parent, className, text) {
  const div = document.createElement("div");
  div.className = className;
  div.textContent = text;
  parent.appendChild(div);
}
function svg(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
// One bar per feature, largest first as the server sorts them: right of the axis raises the prediction, left lowers it.
function chart(contributions) {
  const row = 18, label = 170, half = 230, axis = label + 60 + half, width = axis + half + 60;
  const height = row * contributions.length + 4;
  const largest = Math.max(...contributions.map(c => Math.abs(c.contribution))) || 1;
  const root = svg("svg", {class: "bars", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                           "aria-label": "contribution of each feature to the prediction"});
  contributions.forEach((c, i) => {
    const y = i * row + 2, size = Math.abs(c.contribution) / largest * half, lowers = c.contribution < 0;
    root.appendChild(svg("text", {x: 0, y: y + 12}, `${c.feature} = ${c.value}`));
    root.appendChild(svg("rect", {x: lowers ? axis - size : axis, y, width: Math.max(size, 0.5), height: row - 4,
                                  class: lowers ? "neg" : "pos"}));
    root.appendChild(svg("text", {x: lowers ? axis - size - 4 : axis + size + 4, y: y + 12,
                                  "text-anchor": lowers ? "end" : "start"},
                         (lowers ? "" : "+") + c.contribution.toFixed(2)));
  });
  root.appendChild(svg("line", {x1: axis, x2: axis, y1: 0, y2: height}));
  return root;
}
for (const pre of document.querySelectorAll("pre.curl")) {
  pre.textContent = pre.textContent.replace("http://HOST", location.origin);
}
for (const form of document.querySelectorAll("form.try")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = form.parentElement.querySelector(".result");
    const record = {};
    for (const input of form.querySelectorAll("input[data-feature]")) record[input.name] = Number(input.value);
    const headers = {"Content-Type": "application/json"};
    const token = document.getElementById("token");
    if (token && token.value) headers["Authorization"] = "Bearer " + token.value;
    out.className = "result";
    out.textContent = "…";
    try {
      const response = await fetch(form.dataset.url, {method: "POST", headers, body: JSON.stringify(record)});
      const body = await response.json();
      if (!response.ok) {
        out.className = "result error";
        out.textContent = response.status + ": " + body.error;
        return;
      }
      out.textContent = "Predicted MEDV: " + body.prediction.toFixed(2);
      if (body.interval) {
        const {lower, upper, level} = body.interval;
        const percent = Math.round(level * 100);
        line(out, "detail", `${percent}% prediction interval: ${lower.toFixed(2)} to ${upper.toFixed(2)}`);
        line(out, "detail", `Contributions to the difference from the baseline ${body.baseline.toFixed(2)}:`);
        out.appendChild(chart(body.contributions));
      }
      for (const w of body.warnings) line(out, "warn", "warning: " + w.message);
    } catch (error) { out.className = "result error"; out.textContent = String(error); }
  });
}
"""


_METRIC_NAMES = {"in_sample": "in-sample", "cv": "5-fold CV"}


def _metrics_table(model: Model) -> str:
    metrics = model.metadata["metrics"]
    rows = "".join(
        f"<tr><td>{escape(_METRIC_NAMES.get(kind, kind))}</td>"
        + "".join(f"<td>{values.get(k, float('nan')):.3f}</td>" for k in ("rmse", "mae", "r2"))
        + "</tr>"
        for kind, values in metrics.items()
    )
    return f"<table><tr><th>metric</th><th>RMSE</th><th>MAE</th><th>R²</th></tr>{rows}</table>"


def _also(feature: Feature) -> str:
    return f" <small>also: {escape(', '.join(feature.aliases))}</small>" if feature.aliases else ""


def _coefficients_table(model: Model) -> str:
    """The linear model's coefficient table, as the workshop's GLM printed it; none for other models."""
    if "coefficients" not in model.metadata:
        return ""
    keys = ("coefficient", "std_error", "t", "p", "ci_lower", "ci_upper")
    rows = "".join(f"<tr><td>{escape(str(row['term']))}</td>" + "".join(f"<td>{row[k]:.6g}</td>" for k in keys)
                   + "</tr>" for row in model.metadata["coefficients"])
    return ("<table><tr><th>term</th><th>coefficient</th><th>std. error</th><th>t</th><th>p</th>"
            f"<th>95% CI lower</th><th>95% CI upper</th></tr>{rows}</table>")


def _explains(model: Model) -> str:
    """What the try-it form's interval and contributions are, in the words export wrote."""
    if not model.explainable:
        return "<p>This version has no explanation outputs: the form shows the prediction alone.</p>"
    interval, baseline = model.metadata["interval"], model.metadata["baseline"]
    return (f"<p><b>Interval:</b> {escape(str(interval.get('description', '')))}</p><p><b>Contributions</b> are "
            f"relative to the baseline {model.baseline:.4g} ({escape(str(baseline.get('kind', '')))}).</p>")


def _plot(served: Served) -> str:
    model = served.model
    if served.plot is None:
        return ""
    return (f'<figure><img src="/models/{escape(model.name)}/versions/{escape(model.version)}/plot.png" '
            f'alt="{escape(model.name)}: predicted against actual MEDV" width="480">'
            "<figcaption>Predicted against actual MEDV, from the model card</figcaption></figure>")


def _section(served: Served, auth: bool) -> str:
    model = served.model
    name = escape(model.name)
    url = f"/models/{name}/{'explain' if model.explainable else 'predict'}"
    features = "".join(
        f"<tr><td>{escape(f.name)}{_also(f)}</td>"
        f"<td>{escape(f.description)}</td><td>{escape(f.unit)}</td>"
        f"<td>{f.minimum:g} to {f.maximum:g}</td><td>{'yes' if f.used else 'no'}</td></tr>"
        for f in model.features
    )
    inputs = "".join(
        f'<label>{escape(f.name)}<input name="{escape(f.name)}" data-feature type="number" step="any" required '
        f'value="{f.mean:.4g}" title="{escape(f.description)} ({escape(f.unit)})"></label>'
        for f in model.features
    )
    example = orjson.dumps({f.name: round(f.mean, 4) for f in model.features}).decode()
    auth_header = " -H 'Authorization: Bearer $TOKEN'" if auth else ""
    return f"""<section id="model-{name}">
<h2>{name} <small>version {escape(model.version)}</small></h2>
<p>{escape(model.description)}</p>
{_metrics_table(model)}
{_coefficients_table(model)}
{_plot(served)}
<table><tr><th>feature</th><th>meaning</th><th>unit</th><th>training range</th><th>used</th></tr>{features}</table>
<h3>curl</h3>
<pre class="curl">curl -s http://HOST{url}{auth_header} -H 'Content-Type: application/json' \\
  -d '{escape(example)}'</pre>
<h3>Try it</h3>
{_explains(model)}
<form class="try" data-url="{url}">{inputs}<button type="submit">Predict</button></form>
<div class="result" aria-live="polite"></div>
</section>"""


def render(models: dict[str, Served], auth: bool) -> str:
    token = ('<p><label>Bearer token <input id="token" type="password" autocomplete="off"></label></p>'
             if auth else "")
    sections = "".join(_section(m, auth) for m in models.values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Housing model server</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body><h1>Housing model server</h1>
<p>Predicts MEDV (median home value, USD 1000s) from the 13 raw Boston housing features, with a prediction
interval and each feature's contribution.
Standardization happens inside each ONNX model: send raw values. Routes: <a href="/openapi.json">/openapi.json</a>,
<a href="/models">/models</a>, <a href="/metrics">/metrics</a>, <a href="/health/ready">/health/ready</a>.</p>
{token}{sections}
<script>{_SCRIPT}</script></body></html>"""
