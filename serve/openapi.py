"""The OpenAPI 3 document, generated once from the loaded models' metadata."""

from __future__ import annotations

from typing import Any

from serve.codec import FLOAT32_LIMIT
from serve.model import EXPLANATION_OUTPUTS, Model

_ERROR = {"$ref": "#/components/schemas/Error"}
# The model computes in float32: a number is accepted when it rounds to a finite float32.
_NUMBER = {"type": "number", "minimum": -FLOAT32_LIMIT, "maximum": FLOAT32_LIMIT,
           "exclusiveMinimum": True, "exclusiveMaximum": True}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    """The given error responses, plus 503, which any route answers when over --max-concurrency."""
    reasons = {400: "Malformed request", 401: "Missing or wrong bearer token", 404: "Unknown model or version",
               408: "Body not received within --body-timeout", 413: "Body or batch over the limit",
               409: "This version's file has no explanation outputs (an older export); it still predicts",
               415: "Unsupported Content-Type", 422: "Invalid record (the message names record and field)",
               503: "Not ready or overloaded"}
    return {str(status): _json(_ERROR, reasons[status]) for status in (*statuses, 503)}


def _record_schema(model: Model) -> dict[str, Any]:
    """Every feature once, by its name or one of its aliases; JSON Schema has no case-insensitive keys,
    so only the spellings as published are listed."""
    properties: dict[str, Any] = {}
    for f in model.features:
        also = f"; also named {', '.join(f.aliases)}" if f.aliases else ""
        properties[f.name] = {**_NUMBER, "example": f.mean, "description": f"{f.description} ({f.unit}); "
                              f"training range [{f.minimum:g}, {f.maximum:g}]{also}"}
        # No example: an example beside the name's would make an example record naming the feature twice.
        properties.update({alias: {**_NUMBER, "description": f"{f.name} by another name; send one spelling of it only"}
                           for alias in f.aliases})
    record: dict[str, Any] = {
        "type": "object",
        "description": "One record: every feature by name or alias (case-insensitive), once; no other field.",
        "properties": properties,
        "required": [f.name for f in model.features if not f.aliases],
        "additionalProperties": False,
    }
    aliased = [f for f in model.features if f.aliases]
    if aliased:  # exactly one spelling of each: naming a feature twice is refused
        record["allOf"] = [{"oneOf": [{"required": [spelling]} for spelling in (f.name, *f.aliases)]}
                           for f in aliased]
    return record


def _model_schemas(model: Model, max_batch: int) -> dict[str, Any]:
    name, n = model.name, len(model.features)
    record = _record_schema(model)
    values = {"type": "array", "items": _NUMBER, "minItems": n, "maxItems": n,
              "description": f"One record as {n} numbers in the order {', '.join(model.feature_names)}."}
    record_ref = {"$ref": f"#/components/schemas/{name}_record"}
    values_ref = {"$ref": f"#/components/schemas/{name}_values"}
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
    # Every version of a model in the store, with its state (as the repository index has them).
    versions = {"type": "array", "items": {"type": "object", "required": ["version", "state", "reason"],
                                           "properties": {key: {"type": "string"}
                                                          for key in ("version", "state", "reason")}}}
    head = {"model": {"type": "string"}, "version": {"type": "string"},
            "warnings": {"type": "array", "items": {"$ref": "#/components/schemas/Warning"}}}
    numbers = {"type": "array", "items": {"type": "number"}}
    nullable_numbers = {**numbers, "nullable": True}
    drift_feature = {"type": "object", "required": ["name", "psi", "out_of_range", "edges", "training_share",
                                                    "recent_share"], "properties": {
        "name": {"type": "string"}, "psi": {"type": "number", "nullable": True},
        "out_of_range": {"type": "integer", "description": "values outside the training range since start-up"},
        "edges": numbers, "training_share": nullable_numbers, "recent_share": nullable_numbers}}
    drift = {"type": "object", "required": ["model", "version", "reference", "window", "rows_seen", "epsilon", "bins",
                                            "features"], "properties": {
        "model": {"type": "string"}, "version": {"type": "string"},
        "reference": {"type": "boolean", "description": "whether the metadata has a drift reference (else no PSI)"},
        "reason": {"type": "string"},
        "window": {"type": "object", "required": ["size", "rows", "definition"], "properties": {
            "size": {"type": "integer"}, "rows": {"type": "integer"}, "definition": {"type": "string"}}},
        "rows_seen": {"type": "integer", "description": "rows predicted since start-up, over all workers"},
        "epsilon": {"type": "number", "description": "floor of each bin's share in the PSI"},
        "bins": {"type": "string", "description": "the bins the shares are of, given the edges"},
        "features": {"type": "array", "items": drift_feature}}}
    contribution = {"type": "object", "required": ["feature", "value", "contribution"], "additionalProperties": False,
                    "properties": {"feature": {"type": "string"}, "value": {"type": "number"},
                                   "contribution": {"type": "number"}}}
    explanation: dict[str, Any] = {
        "type": "object", "required": ["prediction", "interval", "baseline", "contributions"],
        "additionalProperties": False,
        "properties": {
            "prediction": {"type": "number"},
            "interval": {"type": "object", "required": ["lower", "upper", "level"], "additionalProperties": False,
                         "description": "The prediction interval at `level` (GET /models/{model} says how it is made)",
                         "properties": {key: {"type": "number"} for key in ("lower", "upper", "level")}},
            "baseline": {"type": "number", "description": "The prediction the contributions start from"},
            "contributions": {"type": "array", "items": contribution,
                              "description": "Each feature's contribution to prediction - baseline (they sum to "
                                             "it), largest magnitude first"}},
    }
    return {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
        "Drift": drift,
        "Warning": warning,
        "Prediction": {"type": "object", "properties": {**head, "prediction": {"type": "number"}},
                       "required": ["model", "version", "prediction", "warnings"], "additionalProperties": False},
        "Predictions": {"type": "object",
                        "properties": {**head, "predictions": {"type": "array", "items": {"type": "number"}}},
                        "required": ["model", "version", "predictions", "warnings"], "additionalProperties": False},
        "Explanation": {"type": "object", "properties": {**head, **explanation["properties"]},
                        "required": ["model", "version", *explanation["required"], "warnings"],
                        "additionalProperties": False},
        "Explanations": {"type": "object",
                         "properties": {**head, "explanations": {"type": "array", "items": explanation}},
                         "required": ["model", "version", "explanations", "warnings"], "additionalProperties": False},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]},
        "Models": {"type": "object", "required": ["models"], "properties": {"models": {"type": "array", "items": {
            "type": "object", "required": ["name", "version", "description", "predict", "versions"],
            "properties": {**{key: {"type": "string"} for key in ("name", "version", "description", "predict")},
                           "versions": versions}}}}},
        "ModelMetadata": {"type": "object", "required": ["name", "version", "description", "input", "output",
                                                         "features", "metrics"],
                          "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                         "features": {"type": "array", "items": {"type": "object"}},
                                         "versions": versions,
                                         "interval": {"type": "object", "description": "How the explain route's "
                                                      "interval is made: level, method, description, coverage"},
                                         "baseline": {"type": "object", "description": "The contributions' "
                                                      "baseline: value and kind"},
                                         "coefficients": {"type": "array", "items": {"type": "object"},
                                                          "description": "linear only: the coefficient table"}}},
    }


def document(versions: dict[str, dict[str, Model]], max_batch: int, auth: bool) -> dict[str, Any]:
    """The document for the ready versions (name -> version -> model); each model's schemas are its
    newest version's."""
    models = {name: by_version[max(by_version, key=int)] for name, by_version in versions.items()}
    schemas = _common_schemas()
    model_parameter = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": f"one of {', '.join(models)}"}
    version_parameter = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                         "description": "a ready version of the model (GET /models lists them)"}
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Landing page", "responses": {"200": {"description": "HTML page",
                                                                        "content": {"text/html": {}}}, **_errors()}}},
        "/health/live": {"get": {"summary": "Liveness", "responses": {
            "200": _json({"$ref": "#/components/schemas/Status"}, "Live"), **_errors()}}},
        "/health/ready": {"get": {"summary": "Readiness: every model loaded and warmed", "responses": {
            "200": _json({"$ref": "#/components/schemas/Status"}, "Ready"), **_errors()}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {}}}, **_errors()}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": _json({"type": "object"}, "OpenAPI 3"), **_errors()}}},
        "/models": {"get": {"summary": "Models and versions", "responses": {
            "200": _json({"$ref": "#/components/schemas/Models"}, "Models"), **_errors()}}},
        "/models/{model}": {"get": {
            "summary": "A model's metadata (its newest version's): features with descriptions and ranges, metrics, "
                       "version, input, output, and every version's state",
            "parameters": [model_parameter],
            "responses": {"200": _json({"$ref": "#/components/schemas/ModelMetadata"}, "Model metadata"),
                          **_errors(404)}}},
        "/models/{model}/versions/{version}": {"get": {
            "summary": "One version's metadata", "parameters": [model_parameter, version_parameter],
            "responses": {"200": _json({"$ref": "#/components/schemas/ModelMetadata"}, "Model metadata"),
                          **_errors(404)}}},
        "/models/{model}/drift": {"get": {
            "summary": "Drift of a model's newest version: per feature the PSI of the recent window against the "
                       "training data, its bins with both shares, and the values outside the training range",
            "parameters": [model_parameter],
            "responses": {"200": _json({"$ref": "#/components/schemas/Drift"}, "Drift"), **_errors(404)}}},
        "/models/{model}/versions/{version}/drift": {"get": {
            "summary": "One version's drift", "parameters": [model_parameter, version_parameter],
            "responses": {"200": _json({"$ref": "#/components/schemas/Drift"}, "Drift"), **_errors(404)}}},
        "/models/{model}/versions/{version}/plot.png": {"get": {
            "summary": "The predicted-vs-actual plot of one version's model card",
            "parameters": [model_parameter, version_parameter],
            "responses": {"200": {"description": "PNG image", "content": {"image/png": {}}},
                          **_errors(404)}}},
        **_repository_paths(auth),
    }
    for name, model in models.items():
        schemas.update(_model_schemas(model, max_batch))
        request = {"oneOf": [{"$ref": f"#/components/schemas/{name}_{kind}"} for kind in ("record", "values", "batch")]}
        predict: dict[str, Any] = {
            "summary": f"Predict with {name} (newest version {model.version}): {model.description}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": _json({"oneOf": [{"$ref": "#/components/schemas/Prediction"},
                                        {"$ref": "#/components/schemas/Predictions"}]},
                             "Prediction for a record, or predictions in order for a batch"),
                **_errors(400, *((401,) if auth else ()), 408, 413, 415, 422),
            },
            **({"security": [{"bearer": []}]} if auth else {}),
        }
        explain: dict[str, Any] = {
            **predict,
            "summary": f"Predict with {name} (newest version {model.version}) and explain: each prediction with its "
                       "prediction interval, the baseline and every feature's contribution, largest first",
            "responses": {
                **predict["responses"],
                "200": _json({"oneOf": [{"$ref": "#/components/schemas/Explanation"},
                                        {"$ref": "#/components/schemas/Explanations"}]},
                             "Explanation for a record, or explanations in order for a batch"),
                **_errors(409)},
        }
        ready = {**version_parameter, "schema": {"type": "string", "enum": sorted(versions[name], key=int)}}
        for action, operation in (("predict", predict), ("explain", explain)):
            paths[f"/models/{name}/{action}"] = {"post": operation}
            paths[f"/models/{name}/versions/{{version}}/{action}"] = {"post": {
                **operation, "summary": f"{action.capitalize()} with one version of {name}", "parameters": [ready],
                "responses": {**operation["responses"], **_errors(404)}}}
    paths.update(_v2_paths(models, versions, auth))
    schemas.update(_v2_schemas())
    components: dict[str, Any] = {"schemas": schemas}
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Housing model server", "version": "1.0.0",
                 "description": "Predicts MEDV from raw Boston housing features; "
                                "standardization is inside each model."},
        "paths": paths,
        "components": components,
    }


def _v2_schemas() -> dict[str, Any]:
    """Open Inference Protocol messages; the parameters objects are open, as the protocol has it."""
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2}
    parameters = {"type": "object", "additionalProperties": True}
    tensor_in = {
        "type": "object", "required": ["name", "datatype", "shape"],
        "description": "'features' of shape [N, 13], or one input per feature (named by feature or alias) of shape "
                       "[N] or [N, 1]; values as "
                       "'data' (flat or nested, row-major) or as binary_data_size bytes after the JSON header",
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                       "shape": shape, "parameters": parameters,
                       "data": {"type": "array", "items": {"oneOf": [_NUMBER, {"type": "array"}]}}},
    }
    tensor_out = {"type": "object", "required": ["name", "datatype", "shape"],
                  "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": shape,
                                 "parameters": parameters, "data": {"type": "array", "items": {"type": "number"}}}}
    return {
        "InferenceRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": parameters,
            "inputs": {"type": "array", "items": tensor_in, "minItems": 1},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "description": f"MEDV, or where the version has them (its metadata lists "
                                                          f"its outputs) {', '.join(EXPLANATION_OUTPUTS)}"},
                "parameters": parameters}},
                "description": "The outputs to answer; MEDV alone when left out"}}},
        "InferenceResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": parameters, "outputs": {"type": "array", "items": tensor_out}}},
        "V2Server": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}},
        "V2Model": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                    "properties": {"name": {"type": "string"}, "platform": {"type": "string"},
                                   "versions": {"type": "array", "items": {"type": "string"}},
                                   "inputs": {"type": "array", "items": {"type": "object"}},
                                   "outputs": {"type": "array", "items": {"type": "object"}},
                                   "parameters": parameters}},
        "V2ModelReady": {"type": "object", "required": ["name", "ready"],
                         "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    }


def _repository_paths(auth: bool) -> dict[str, Any]:
    """Triton's model repository extension: the index, and load and unload of a model."""
    security: dict[str, Any] = {"security": [{"bearer": []}]} if auth else {}
    statuses = (400, *((401,) if auth else ()), 404, 408)
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "a model folder in the model store"}
    entry = {"type": "object", "required": ["name", "version", "state", "reason"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"}, "reason": {"type": "string"},
        "state": {"type": "string", "enum": ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]}}}
    def body(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "properties": {"parameters": {
                "type": "object", "additionalProperties": False, "properties": parameters}}}}}}

    done = _json({"type": "object", "additionalProperties": False}, "Done: the index shows the new states")
    return {
        "/v2/repository/index": {"post": {
            "summary": "Every version in the model store, with its state and the reason it is not ready",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "properties": {"ready": {"type": "boolean"}}}}}},
            "responses": {"200": _json({"type": "array", "items": entry}, "The index"), **_errors(*statuses)},
            **security}},
        "/v2/repository/models/{model}/load": {"post": {
            "summary": "Serve the model (again), loading what changed in its folder; 400 if no version can serve",
            "parameters": [model], "requestBody": body({}), "responses": {"200": done, **_errors(*statuses)},
            **security}},
        "/v2/repository/models/{model}/unload": {"post": {
            "summary": "Stop serving every version of the model, once their requests have finished",
            "parameters": [model], "requestBody": body({"unload_dependents": {"type": "boolean"}}),
            "responses": {"200": done, **_errors(*statuses)},
            **security}},
    }


def _v2_paths(models: dict[str, Model], versions: dict[str, dict[str, Model]], auth: bool) -> dict[str, Any]:
    """The Open Inference Protocol (KServe V2) routes, each also under /versions/{version}."""
    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def path_parameters(versioned: bool) -> list[dict[str, Any]]:
        ready = sorted({v for by_version in versions.values() for v in by_version}, key=int)
        names = [("model", sorted(models))] + ([("version", ready)] if versioned else [])
        return [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "enum": values}}
                for name, values in names]

    examples = [{"inputs": [{"name": m.input_name, "datatype": "FP32", "shape": [1, len(m.features)],
                             "data": [f.mean for f in m.features]}]} for m in models.values()]
    infer: dict[str, Any] = {
        "summary": "Infer (Open Inference Protocol): JSON tensors, or binary tensor data after a JSON header",
        "parameters": [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                        "description": "Length of the JSON header when binary tensor data follows it"}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": ref("InferenceRequest"), **({"example": examples[0]} if examples else {})},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "200": {"description": "Outputs as JSON, or a JSON header followed by binary tensor data",
                    "headers": {"Inference-Header-Content-Length": {
                        "schema": {"type": "integer"}, "description": "Set when binary output follows the header"}},
                    "content": {"application/json": {"schema": ref("InferenceResponse")},
                                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            **_errors(400, *((401,) if auth else ()), 404, 408, 413)},
        **({"security": [{"bearer": []}]} if auth else {}),
    }
    paths: dict[str, Any] = {
        "/v2": {"get": {"summary": "Server metadata", "responses": {"200": _json(ref("V2Server"), "Server"),
                                                                     **_errors()}}},
        "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": _json(ref("Status"), "Live"),
                                                                          **_errors()}}},
        "/v2/health/ready": {"get": {"summary": "Readiness", "responses": {"200": _json(ref("Status"), "Ready"),
                                                                            **_errors()}}},
    }
    for prefix, versioned in (("/v2/models/{model}", False), ("/v2/models/{model}/versions/{version}", True)):
        parameters = path_parameters(versioned)
        paths[prefix] = {"get": {"summary": "Model metadata", "parameters": parameters, "responses": {
            "200": _json(ref("V2Model"), "Model metadata"), **_errors(404)}}}
        paths[prefix + "/ready"] = {"get": {"summary": "Model readiness", "parameters": parameters, "responses": {
            "200": _json(ref("V2ModelReady"), "Ready"), **_errors(404)}}}
        paths[prefix + "/infer"] = {"post": {**infer, "parameters": [*parameters, *infer["parameters"]]}}
    return paths
