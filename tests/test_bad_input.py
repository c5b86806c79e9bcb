"""Bad input: always a clear JSON error with the right status, never a 500, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import FEATURES, FIRST

URL = "/models/linear/predict"
JSON = {"Content-Type": "application/json"}


def post(client: TestClient, body: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    response = client.post(URL, content=body, headers=JSON if headers is None else headers)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def with_value(field: str, raw: str) -> str:
    """FIRST as JSON text with one field's value replaced by raw JSON (NaN, 1e400: not producible by json.dumps)."""
    return "{" + ", ".join(f'"{k}": {raw if k == field else json.dumps(v)}' for k, v in FIRST.items()) + "}"


def test_malformed_json_is_400(client: TestClient) -> None:
    status, body = post(client, b'{"CRIM": 0.1,')
    assert status == 400 and "malformed JSON" in body["error"]


@pytest.mark.parametrize("payload", ['"a string"', "42", "null", "true"])
def test_a_body_that_is_neither_a_record_nor_a_batch_is_refused(client: TestClient, payload: str) -> None:
    status, body = post(client, payload)
    assert status == 400 and "instances" in body["error"]


def test_missing_features_are_each_named(client: TestClient) -> None:
    record = {k: v for k, v in FIRST.items() if k not in ("ZN", "LSTAT")}
    status, body = post(client, json.dumps(record))
    assert status == 422 and body["missing"] == ["ZN", "LSTAT"] and "ZN, LSTAT" in body["error"]


def test_an_unknown_field_is_named_so_that_a_typo_does_not_pass(client: TestClient) -> None:
    record = {**{k: v for k, v in FIRST.items() if k != "LSTAT"}, "LSTATT": 4.98}
    status, body = post(client, json.dumps(record))
    assert status == 422 and body["unknown"] == ["LSTATT"] and body["missing"] == ["LSTAT"]


def test_an_extra_field_beside_all_features_is_refused(client: TestClient) -> None:
    status, body = post(client, json.dumps({**FIRST, "comment": "hi"}))
    assert status == 422 and body["unknown"] == ["comment"]


def test_a_feature_given_twice_in_different_case_is_refused(client: TestClient) -> None:
    status, body = post(client, json.dumps({**FIRST, "crim": 1.0}))
    assert status == 422 and body["field"] == "CRIM"


def test_a_feature_given_by_name_and_by_alias_is_refused_naming_both_keys(client: TestClient) -> None:
    status, body = post(client, json.dumps({**FIRST, "black": 396.9}))
    assert status == 422 and body["field"] == "B" and "'B' and 'black'" in body["error"]


@pytest.mark.parametrize("typo, hint", [("LSTATT", "LSTAT"), ("blak", "black"), ("ptratio_", "PTRATIO")])
def test_an_unknown_field_close_to_a_name_or_alias_gets_a_hint(client: TestClient, typo: str, hint: str) -> None:
    record = {**FIRST, typo: 1.0}
    status, body = post(client, json.dumps(record))
    assert status == 422 and body["unknown"] == [typo]
    assert f"unknown field '{typo}' (did you mean {hint}?)" in body["error"]


def test_an_unknown_field_like_no_name_gets_no_hint(client: TestClient) -> None:
    status, body = post(client, json.dumps({**FIRST, "comment": "hi"}))
    assert status == 422 and "unknown field 'comment'" in body["error"] and "did you mean" not in body["error"]


def test_hints_stay_bounded_however_many_fields_are_unknown(client: TestClient) -> None:
    status, body = post(client, json.dumps({**FIRST, **{f"LSTAT{i}": 1.0 for i in range(1000)}}))
    assert status == 422 and len(body["unknown"]) == 20 and "and 980 more" in body["error"]
    assert body["error"].count("did you mean") == 20 and len(body["error"]) < 1100


@pytest.mark.parametrize("raw, kind", [('"0.5"', "a string"), ("true", "a boolean"), ("null", "null"),
                                       ("[1]", "an array"), ('{"v": 1}', "an object")])
def test_a_value_that_is_not_a_number_is_named_with_its_record(client: TestClient, raw: str, kind: str) -> None:
    status, body = post(client, with_value("RM", raw))
    assert status == 422 and body["field"] == "RM" and body["record"] == 0 and kind in body["error"]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400", "3.5e38", "-1e39", "1" + "0" * 400])
def test_non_finite_and_overflowing_values_are_named(client: TestClient, raw: str) -> None:
    status, body = post(client, with_value("TAX", raw))
    assert status == 422 and body["field"] == "TAX" and body["record"] == 0


def test_the_bad_record_of_a_batch_is_named_by_index(client: TestClient) -> None:
    records = [FIRST, FIRST, {**FIRST, "AGE": "old"}]
    status, body = post(client, json.dumps({"instances": records}))
    assert status == 422 and (body["record"], body["field"]) == (2, "AGE")


@pytest.mark.parametrize("raw", ['"5"', "true", "false", "null", "[1]", '{"v": 1}', "NaN", "1e400"])
@pytest.mark.parametrize("shape", ["objects", "arrays"])
def test_any_non_number_in_a_large_batch_is_named_by_index(client: TestClient, raw: str, shape: str) -> None:
    good = json.dumps(FIRST) if shape == "objects" else json.dumps([FIRST[k] for k in FEATURES])
    bad = with_value("DIS", raw) if shape == "objects" else "[" + ", ".join(
        raw if k == "DIS" else json.dumps(v) for k, v in FIRST.items()) + "]"
    status, body = post(client, '{"instances": [' + ",".join([good] * 500 + [bad] + [good] * 10) + "]}")
    assert status == 422 and (body["record"], body["field"]) == (500, "DIS")


def test_case_insensitive_names_work_in_a_large_batch_too(client: TestClient) -> None:
    records = [FIRST] * 100 + [{k.lower(): v for k, v in FIRST.items()}]
    status, body = post(client, json.dumps({"instances": records}))
    assert status == 200 and len(set(body["predictions"])) == 1


def test_an_overflow_in_a_batch_is_named_by_index(client: TestClient) -> None:
    rows = [json.dumps(FIRST), json.dumps(FIRST), with_value("B", "1e39")]
    status, body = post(client, '{"instances": [' + ",".join(rows) + "]}")
    assert status == 422 and (body["record"], body["field"]) == (2, "B")


@pytest.mark.parametrize("length", [0, 12, 14])
def test_an_array_of_the_wrong_length_is_refused(client: TestClient, length: int) -> None:
    status, body = post(client, json.dumps({"instances": [[1.0] * length]}))
    assert status == 422 and f"got {length}" in body["error"] and "CRIM, ZN" in body["error"]


def test_a_record_that_is_neither_object_nor_array_is_refused(client: TestClient) -> None:
    status, body = post(client, json.dumps({"instances": [FIRST, 3]}))
    assert status == 422 and body["record"] == 1


def test_an_empty_batch_is_refused(client: TestClient) -> None:
    status, body = post(client, b'{"instances": []}')
    assert status == 422 and "empty" in body["error"]


def test_instances_must_be_an_array(client: TestClient) -> None:
    status, body = post(client, json.dumps({"instances": FIRST}))
    assert status == 422 and "array" in body["error"]


def test_fields_beside_instances_are_refused(client: TestClient) -> None:
    status, body = post(client, json.dumps({"instances": [FIRST], "parameters": {}}))
    assert status == 422 and body["unknown"] == ["parameters"]


def test_a_batch_over_the_limit_is_413(client: TestClient) -> None:
    status, body = post(client, json.dumps({"instances": [[1.0] * len(FEATURES)] * 10_001}))
    assert status == 413 and body["limit"] == 10_000


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    status, body = post(client, b" " * (4 * 1024 * 1024 + 1))
    assert status == 413 and "limit" in body["error"]


def test_an_unknown_model_is_404_listing_the_models(client: TestClient) -> None:
    response = client.post("/models/nope/predict", json=FIRST)
    assert response.status_code == 404 and {"linear", "mlp"} <= set(response.json()["models"])


def test_a_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.get(URL)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "POST" in response.json()["error"]


def test_post_to_the_landing_page_is_405_naming_the_prediction_routes(client: TestClient) -> None:
    response = client.post("/", json=FIRST)
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/json" and response.json()["models"] == ["linear", "mlp"]
    assert response.json()["error"] == ("POST / is not a prediction route; use POST /models/{model}/predict or "
                                        "POST /v2/models/{model}/infer (models: linear, mlp)")


def test_an_unknown_route_is_404_json(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and "/nope" in response.json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_an_unsupported_content_type_is_415(client: TestClient, content_type: str) -> None:
    status, body = post(client, json.dumps(FIRST), headers={"Content-Type": content_type})
    assert status == 415 and content_type in body["error"]


def test_a_missing_content_type_is_accepted(client: TestClient) -> None:
    status, body = post(client, json.dumps(FIRST), headers={})
    assert status == 200 and "prediction" in body


def test_json_with_a_charset_is_accepted(client: TestClient) -> None:
    status, _ = post(client, json.dumps(FIRST), headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200
