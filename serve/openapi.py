"""The OpenAPI 3 document, generated once from the loaded models' metadata."""

from __future__ import annotations

from typing import Any

from serve.model import Model

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "Malformed request", 401: "Missing or wrong bearer token", 404: "Unknown model",
               413: "Body or batch over the limit", 415: "Unsupported Content-Type",
               422: "Invalid record (the message names record and field)", 503: "Not ready or overloaded"}
    return {str(status): _json(_ERROR, reasons[status]) for status in statuses}


def _model_schemas(model: Model, max_batch: int) -> dict[str, Any]:
    name, n = model.name, len(model.features)
    record = {
        "type": "object",
        "description": "One record: every feature by name (case-insensitive); no other field.",
        "properties": {
            f.name: {"type": "number", "description": f"{f.description} ({f.unit}); training range "
                                                      f"[{f.minimum:g}, {f.maximum:g}]", "example": f.mean}
            for f in model.features
        },
        "required": list(model.feature_names),
        "additionalProperties": False,
    }
    values = {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n,
              "description": f"One record as {n} numbers in the order {', '.join(model.feature_names)}."}
    record_ref, values_ref = {"$ref": f"#/components/schemas/{name}_record"}, {"$ref": f"#/components/schemas/{name}_values"}
    batch = {
        "type": "object",
        "properties": {"instances": {"type": "array", "items": {"oneOf": [record_ref, values_ref]},
                                     "minItems": 1, "maxItems": max_batch}},
        "required": ["instances"],
        "additionalProperties": False,
    }
    return {f"{name}_record": record, f"{name}_values": values, f"{name}_batch": batch}


def _common_schemas() -> dict[str, Any]:
    warning = {
        "type": "object",
        "properties": {"record": {"type": "integer"}, "feature": {"type": "string"}, "value": {"type": "number"},
                       "min": {"type": "number"}, "max": {"type": "number"}, "used_by_model": {"type": "boolean"},
                       "message": {"type": "string"}},
        "required": ["feature", "value", "min", "max", "used_by_model", "message"],
    }
    head = {"model": {"type": "string"}, "version": {"type": "string"},
            "warnings": {"type": "array", "items": {"$ref": "#/components/schemas/Warning"}}}
    return {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
        "Warning": warning,
        "Prediction": {"type": "object", "properties": {**head, "prediction": {"type": "number"}},
                       "required": ["model", "version", "prediction", "warnings"], "additionalProperties": False},
        "Predictions": {"type": "object",
                        "properties": {**head, "predictions": {"type": "array", "items": {"type": "number"}}},
                        "required": ["model", "version", "predictions", "warnings"], "additionalProperties": False},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]},
    }


def document(models: dict[str, Model], max_batch: int, auth: bool) -> dict[str, Any]:
    schemas = _common_schemas()
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Landing page", "responses": {"200": {"description": "HTML page",
                                                                        "content": {"text/html": {}}}}}},
        "/health/live": {"get": {"summary": "Liveness", "responses": {"200": _json({"$ref": "#/components/schemas/Status"}, "Live")}}},
        "/health/ready": {"get": {"summary": "Readiness: every model loaded and warmed", "responses": {
            "200": _json({"$ref": "#/components/schemas/Status"}, "Ready"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}},
        "/models": {"get": {"summary": "Models and versions", "responses": {"200": _json({"type": "object"}, "Models")}}},
        "/models/{model}": {"get": {
            "summary": "A model's metadata: features with descriptions and ranges, metrics, version, input, output",
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": f"one of {', '.join(models)}"}],
            "responses": {"200": _json({"type": "object"}, "Model metadata"), **_errors(404)}}},
    }
    for name, model in models.items():
        schemas.update(_model_schemas(model, max_batch))
        request = {"oneOf": [{"$ref": f"#/components/schemas/{name}_{kind}"} for kind in ("record", "values", "batch")]}
        paths[f"/models/{name}/predict"] = {"post": {
            "summary": f"Predict with {name} v{model.version}: {model.description}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": _json({"oneOf": [{"$ref": "#/components/schemas/Prediction"},
                                        {"$ref": "#/components/schemas/Predictions"}]},
                             "Prediction for a record, or predictions in order for a batch"),
                **_errors(400, *((401,) if auth else ()), 413, 415, 422),
            },
            **({"security": [{"bearer": []}]} if auth else {}),
        }}
    components: dict[str, Any] = {"schemas": schemas}
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Housing model server", "version": "1.0.0",
                 "description": "Predicts MEDV from raw Boston housing features; standardization is inside each model."},
        "paths": paths,
        "components": components,
    }
