"""The landing page: models, their features and metrics, a curl example and a try-it form each.

Rendered once at start-up; self-contained (no external assets)."""

from __future__ import annotations

from html import escape

import orjson

from serve.model import Feature, Model

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
section{border-top:2px solid #ddd;margin-top:2em}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}
form{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.4em .8em}
label{display:flex;flex-direction:column;font-size:13px}.result{margin-top:.8em;font-weight:bold}
.warn{color:#a05a00;font-weight:normal}.error{color:#b00020}
"""

_SCRIPT = """
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
      for (const w of body.warnings) {
        const line = document.createElement("div");
        line.className = "warn";
        line.textContent = "warning: " + w.message;
        out.appendChild(line);
      }
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


def _section(model: Model, auth: bool) -> str:
    name = escape(model.name)
    url = f"/models/{name}/predict"
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
<table><tr><th>feature</th><th>meaning</th><th>unit</th><th>training range</th><th>used</th></tr>{features}</table>
<h3>curl</h3>
<pre class="curl">curl -s http://HOST{url}{auth_header} -H 'Content-Type: application/json' \\
  -d '{escape(example)}'</pre>
<h3>Try it</h3>
<form class="try" data-url="{url}">{inputs}<button type="submit">Predict</button></form>
<div class="result" aria-live="polite"></div>
</section>"""


def render(models: dict[str, Model], auth: bool) -> str:
    token = ('<p><label>Bearer token <input id="token" type="password" autocomplete="off"></label></p>'
             if auth else "")
    sections = "".join(_section(m, auth) for m in models.values())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Housing model server</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body><h1>Housing model server</h1>
<p>Predicts MEDV (median home value, USD 1000s) from the 13 raw Boston housing features.
Standardization happens inside each ONNX model: send raw values. Routes: <a href="/openapi.json">/openapi.json</a>,
<a href="/models">/models</a>, <a href="/metrics">/metrics</a>, <a href="/health/ready">/health/ready</a>.</p>
{token}{sections}
<script>{_SCRIPT}</script></body></html>"""
