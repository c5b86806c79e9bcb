"""Properties of request decoding (hypothesis): any JSON value either decodes to exactly the array a
reference reading of the rules gives, or is refused with a 4xx; a batch's predictions equal its
records' single predictions, in order."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from serve.codec import FLOAT32_LIMIT, RecordCodec
from serve.errors import ServeError
from serve.model import Model
from serve.v2 import V2Codec
from tests.conftest import FEATURES, ROWS, model_file

MAX_BATCH = 50
MODEL = Model.load(model_file("linear"))
CODEC = RecordCodec(MODEL, MAX_BATCH)
V2 = V2Codec(MODEL, MAX_BATCH)
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# What a client may send: real rows, any float (NaN, infinities, beyond float32), big integers,
# booleans, strings, null and nesting, as records, value arrays and batches, with names in any case.

def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from([v for row in ROWS[:50] for v in row.values()]),
                     st.floats(), st.integers(min_value=-2**70, max_value=2**70),
                     st.sampled_from([3.4028234663852886e38, 3.402823466385289e38, FLOAT32_LIMIT, -FLOAT32_LIMIT]))


def values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(numbers(), numbers(), numbers(), st.booleans(), st.none(), st.text(max_size=5))
    return st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))


def names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(FEATURES), st.sampled_from(FEATURES).map(str.lower),
                     st.sampled_from(["instances", "crim ", "LSTATT", ""]))


def good_numbers() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from([v for row in ROWS[:50] for v in row.values()]),
                     st.floats(-1e6, 1e6), st.integers(-10**6, 10**6))


@st.composite
def records(draw: st.DrawFn, clean: bool = False) -> Any:
    """Unless clean, about half of them are spoilt: a bad value, a missing or extra field, or no record at all."""
    kind = draw(st.sampled_from(["named", "values"] if clean else ["named", "named", "values", "partial", "other"]))
    row = [draw(good_numbers()) for _ in FEATURES]
    if not clean and draw(st.booleans()):
        row[draw(st.sampled_from(range(len(FEATURES))))] = draw(values())
    if kind == "named":  # every feature once, in any case and order, perhaps an extra field
        keys = [draw(st.sampled_from([name, name.lower()])) for name in FEATURES]
        record = dict(draw(st.permutations(list(zip(keys, row)))))
        if not clean and draw(st.integers(0, 4)) == 0:
            record[draw(names())] = draw(values())
        return record
    if kind == "values":
        return row if clean else draw(st.sampled_from([row, row[:-1], [*row, draw(values())]]))
    if kind == "partial":
        return draw(st.dictionaries(names(), values(), max_size=14))
    return draw(values())


def bodies() -> st.SearchStrategy[Any]:
    # One spoilt record in about twenty, so that many batches are wholly valid.
    batch = st.lists(st.one_of(*[records(clean=True)] * 19, records()), max_size=MAX_BATCH + 2).map(
        lambda rs: {"instances": rs})
    other = st.recursive(st.one_of(st.none(), st.booleans(), numbers(), st.text(max_size=5)),
                         lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                 st.dictionaries(names(), inner, max_size=3)), max_leaves=10)
    return st.one_of(records(), records(), batch, batch, other)


# The rules, written plainly: the specification the fast and exhaustive paths must both follow.

class Refused(Exception):
    pass


def reference_number(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) >= FLOAT32_LIMIT:
        raise Refused
    return float(value)


def reference_record(record: Any) -> list[float]:
    if type(record) is list:
        if len(record) != len(FEATURES):
            raise Refused
        return [reference_number(v) for v in record]
    if type(record) is not dict:
        raise Refused
    by_name: dict[str, Any] = {}
    for key, value in record.items():
        name = next((f for f in FEATURES if f.lower() == key.lower()), None)
        if name is None or name in by_name:
            raise Refused
        by_name[name] = value
    if len(by_name) != len(FEATURES):
        raise Refused
    return [reference_number(by_name[name]) for name in FEATURES]


def reference(payload: Any) -> tuple[np.ndarray, bool]:
    if type(payload) is dict and "instances" in payload:
        records = payload["instances"]
        if len(payload) != 1 or type(records) is not list or not 1 <= len(records) <= MAX_BATCH:
            raise Refused
        return np.array([reference_record(r) for r in records], np.float32), True
    if type(payload) not in (dict, list):
        raise Refused
    return np.array([reference_record(payload)], np.float32), False


def encode(payload: Any) -> bytes:
    """JSON as a client may write it: NaN and Infinity as the bare words some encoders emit."""
    return json.dumps(payload, allow_nan=True).encode()


@PROPERTY
@given(bodies())
def test_any_json_value_decodes_to_the_reference_array_or_is_refused_with_a_4xx(payload: Any) -> None:
    body = encode(payload)
    try:
        expected = reference(payload)
    except Refused:
        with pytest.raises(ServeError) as refused:
            CODEC.decode(body)
        assert 400 <= refused.value.status < 500
        event(f"refused with {refused.value.status}")
        return
    x, batch = CODEC.decode(body)
    event(f"decoded a {'batch' if batch else 'record'}")
    assert batch == expected[1] and x.dtype == np.float32
    np.testing.assert_array_equal(x, expected[0])


@PROPERTY
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_arbitrary_bytes_are_decoded_or_refused_with_a_4xx_never_an_unexpected_error(body: bytes) -> None:
    for decode in (CODEC.decode, lambda b: V2.decode(b, None)):
        try:
            decode(body)
        except ServeError as refused:
            assert 400 <= refused.status < 500


@PROPERTY
@given(st.lists(st.sampled_from(range(len(ROWS))), min_size=1, max_size=20), st.data())
def test_a_batch_predicts_what_its_records_predict_one_by_one_in_order(client: TestClient, picks: list[int],
                                                                        data: st.DataObject) -> None:
    records = [data.draw(st.sampled_from([{k: ROWS[i][k] for k in FEATURES}, [ROWS[i][k] for k in FEATURES]]))
               for i in picks]
    model = data.draw(st.sampled_from(["linear", "mlp"]))
    batch = client.post(f"/models/{model}/predict", json={"instances": records}).json()["predictions"]
    singles = [client.post(f"/models/{model}/predict", json=record).json()["prediction"] for record in records]
    assert batch == singles


@PROPERTY
@given(st.lists(st.sampled_from(range(len(ROWS))), min_size=1, max_size=20), st.booleans())
def test_v2_json_and_binary_tensors_decode_to_the_same_rows_as_records(picks: list[int], binary: bool) -> None:
    x = np.array([[ROWS[i][k] for k in FEATURES] for i in picks], np.float32)
    tensor: dict[str, Any] = {"name": "features", "datatype": "FP32", "shape": list(x.shape)}
    if binary:
        head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        request = V2.decode(head + x.tobytes(), str(len(head)).encode())
    else:
        request = V2.decode(json.dumps({"inputs": [{**tensor, "data": x.tolist()}]}).encode(), None)
    records, _ = CODEC.decode(json.dumps({"instances": x.tolist()}).encode())
    np.testing.assert_array_equal(request.x, records)


def test_values_each_within_float32_are_accepted_even_when_their_magnitudes_sum_beyond_it() -> None:
    # The fast paths check the sum of magnitudes; a sum beyond FP32 must fall back, not refuse.
    row = [3.4028234663852886e38, -3.4028234663852886e38] + [0.0] * (len(FEATURES) - 2)
    expected = np.array([row], np.float32)
    np.testing.assert_array_equal(CODEC.decode(json.dumps(row).encode())[0], expected)
    np.testing.assert_array_equal(CODEC.decode(json.dumps(dict(zip(FEATURES, row))).encode())[0], expected)
    tensor = {"name": "features", "datatype": "FP32", "shape": [1, len(FEATURES)], "data": row}
    np.testing.assert_array_equal(V2.decode(json.dumps({"inputs": [tensor]}).encode(), None).x, expected)
