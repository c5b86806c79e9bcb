"""The record/batch JSON wire format <-> one (N, n_features) float32 array, with precise errors.

A fast path handles well-formed bodies with C-level operations; anything it does not accept
is handed to the exhaustive path, which either normalises it (case-insensitive names, aliases) or
raises the error that names the record and field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from serve.errors import ServeError, shortlist, unknown_names
from serve.model import EXPLANATION_OUTPUTS, Model

NUMBER_TYPES = frozenset((int, float))
_JSON_TYPE_NAMES = {str: "a string", bool: "a boolean", type(None): "null", dict: "an object", list: "an array"}
# Numbers below this in magnitude round to a finite float32 (the largest float32 plus half its last
# step; the tie rounds to infinity); the batch and V2 paths convert with numpy, which rounds the same way.
FLOAT32_LIMIT = float(np.finfo(np.float32).max) + 2.0 ** 103


def numbers_within_float32(values: Sequence[Any]) -> bool:
    """Whether a few parsed JSON values are all numbers that fit FP32 (orjson's floats are finite).

    One C-level sum, half the cost of min and max: magnitudes summing below the limit are each below
    it; the rare sum beyond it goes to the caller's exhaustive path, which judges value by value."""
    return NUMBER_TYPES.issuperset(map(type, values)) and sum(map(abs, values)) < FLOAT32_LIMIT


def parse_json(body: bytes) -> tuple[Any, bool]:
    """(value, strict). orjson first: it refuses NaN, Infinity and 1e400, so its floats are all finite
    (strict). What it refuses the standard library may still read; such values are value errors
    (a 422 naming the field), not syntax errors (400)."""
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError as fast_error:
        try:
            value = json.loads(body)
            # The standard library also lets lone surrogates ("\ud800") through, which orjson rightly
            # refuses: text that cannot be encoded again must not reach an error message or an echo.
            json.dumps(value, ensure_ascii=False).encode()
            return value, False
        except (ValueError, RecursionError):
            raise ServeError(400, f"malformed JSON: {fast_error}") from None


class _RepeatedKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return found


def repeated_key(body: bytes) -> str | None:
    """The first key some object in `body` gives twice, or None. orjson silently keeps the last value;
    callers ask only when their cheap quote count says a key may repeat."""
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _RepeatedKey as repeated:
        return str(repeated)
    except (ValueError, RecursionError):  # orjson read it, the standard library cannot: no verdict
        return None
    return None


_QUOTE, _LOWER_A, _LOWER_Z, _LOWER_E = 34, 97, 122, 101
_INSTANCES = "instances"


def _lowercase_letters(text: str) -> int:
    """Lowercase ASCII letters other than the exponent's e: what true, false and null are made of."""
    return sum("a" <= c <= "z" and c != "e" for c in text)


def _only_numbers(body: bytes, keys: int, key_letters: int, copies: int) -> bool:
    """Whether a batch whose records all have exactly the known keys (`keys` of them holding
    `key_letters` lowercase letters, `copies` times over, plus "instances") holds nothing but
    numbers as values, read off the raw bytes: ~60 us for 1,000
    records, against ~300 us to check 13,000 Python objects.

    Its only strings are then its keys, two quotes each: a string value or an escaped quote would
    add more. Literals true, false and null would add lowercase letters, which numbers (but for the
    exponent's e) never have; a key spelled with an escape adds some too and just takes the
    exhaustive path."""
    raw = np.frombuffer(body, np.uint8)
    lower = np.count_nonzero((raw >= _LOWER_A) & (raw <= _LOWER_Z) & (raw != _LOWER_E))
    quotes = 2 * (1 + keys * copies)
    letters = _lowercase_letters(_INSTANCES) + copies * key_letters
    return bool(np.count_nonzero(raw == _QUOTE) == quotes and lower == letters)


def json_type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def check_number(value: Any, field: str, record: int) -> float:
    """The value as a float32-representable finite number, or a 422 naming field and record."""
    if type(value) not in NUMBER_TYPES:
        raise ServeError(422, f"record {record}, field {field}: expected a number, got {json_type_name(value)}",
                         record=record, field=field)
    number = float(value) if not isinstance(value, int) or abs(value) < 2**1024 else math.inf
    if not math.isfinite(number) or abs(number) >= FLOAT32_LIMIT:
        raise ServeError(422, f"record {record}, field {field}: {value!r} is not a finite 32-bit float "
                         "(NaN, Infinity and overflow are refused)", record=record, field=field)
    return number


class RecordCodec:
    """One model's record/batch format: `{feature: value}`, `[values]` or `{"instances": [...]}`."""

    def __init__(self, model: Model, max_batch: int):
        self.model = model
        self.names = model.feature_names
        self.max_batch = max_batch
        # Names and aliases, lower-cased -> the feature's name; only the exhaustive path reads aliases.
        self._by_lower = {spelling: self.names[i] for spelling, i in model.index.items()}
        self._get = itemgetter(*self.names)
        self._name_letters = sum(map(_lowercase_letters, self.names))
        head = orjson.dumps({"model": model.name, "version": model.version})[:-1]
        self._single_head = head + b',"prediction":'
        self._batch_head = head + b',"predictions":'

    def decode(self, body: bytes) -> tuple[np.ndarray, bool]:
        """(array of shape (N, n_features), whether the body was a batch)."""
        payload, strict = parse_json(body)
        if type(payload) is dict and _INSTANCES in payload:
            records = self._instances(payload)
            x = self._fast_rows(records, body) if strict else None
            return (x if x is not None else self._checked_rows(records, body, outer_keys=1)), True
        if type(payload) is dict or type(payload) is list:
            x = self._fast_record(payload, body) if strict else None
            return (x if x is not None else self._checked_rows([payload], body, outer_keys=0)), False
        raise ServeError(400, "body must be a JSON object: one record, or {\"instances\": [record, ...]}; "
                         f"got {json_type_name(payload)}")

    def encode(self, x: np.ndarray, y: np.ndarray, batch: bool) -> bytes:
        """The response body: model, version, prediction(s) and out-of-range warnings."""
        warnings = self._warnings(x, y, batch)
        warnings_json = orjson.dumps(warnings) if warnings else b"[]"
        if batch:
            return self._batch_head + orjson.dumps(y.tolist()) + b',"warnings":' + warnings_json + b"}"
        return self._single_head + orjson.dumps(float(y[0])) + b',"warnings":' + warnings_json + b"}"

    def encode_explanation(self, x: np.ndarray, outputs: dict[str, np.ndarray], batch: bool) -> bytes:
        """The explain answer: as `encode`'s, each prediction with its interval, the baseline and the features'
        contributions to the difference from it, largest magnitude first (`explanations` for a batch)."""
        model = self.model
        lower, upper, contributions = (outputs[name] for name in EXPLANATION_OUTPUTS)
        y = outputs[model.output_name].reshape(-1)
        warnings = self._warnings(x, model.prediction(outputs), batch)
        level, baseline, names = model.interval_level, model.baseline, self.names
        order = np.argsort(-np.abs(contributions), axis=1, kind="stable").tolist()
        explanations = [
            {"prediction": prediction, "interval": {"lower": low, "upper": high, "level": level}, "baseline": baseline,
             # The values as numpy float32s: orjson writes their shortest form, 0.11 as sent, not 0.10999999940395355.
             "contributions": [{"feature": names[j], "value": row[j], "contribution": shares[j]} for j in js]}
            for prediction, low, high, row, shares, js in zip(
                y.tolist(), lower.reshape(-1).tolist(), upper.reshape(-1).tolist(), x, contributions.tolist(), order)
        ]
        head = {"model": model.name, "version": model.version}
        answer = {**head, "explanations": explanations} if batch else {**head, **explanations[0]}
        return orjson.dumps({**answer, "warnings": warnings}, option=orjson.OPT_SERIALIZE_NUMPY)

    def _warnings(self, x: np.ndarray, y: np.ndarray, batch: bool) -> list[dict[str, Any]]:
        """The out-of-range warnings, once every prediction is known to be finite (a 422 otherwise)."""
        unusable = self.model.non_finite(y)
        if unusable:
            raise ServeError(422, f"the model gives no finite prediction for record(s) {unusable[:10]}: "
                             "inputs too far outside the training range", records=unusable[:100])
        return self.model.warnings(x, with_record=batch)

    def _instances(self, payload: dict[str, Any]) -> list[Any]:
        extra = sorted(key for key in payload if key != "instances")
        if extra:
            raise ServeError(422, f"unknown fields beside 'instances': {', '.join(extra)}", unknown=shortlist(extra))
        records = payload["instances"]
        if type(records) is not list:
            raise ServeError(422, f"'instances' must be an array of records, got {json_type_name(records)}")
        if not records:
            raise ServeError(422, "'instances' is empty: send at least one record")
        if len(records) > self.max_batch:
            raise ServeError(413, f"batch of {len(records)} records is over the limit of {self.max_batch}",
                             limit=self.max_batch)
        return records

    def _fast_record(self, record: dict[str, Any] | list[Any], body: bytes) -> np.ndarray | None:
        """A well-formed single record, or None for the exhaustive path to judge."""
        if len(record) != len(self.names) or (type(record) is dict and body.count(b'"') != 2 * len(record)):
            return None
        values: Sequence[Any]
        if isinstance(record, dict):
            try:
                values = self._get(record)
            except KeyError:
                return None
        else:
            values = record
        if not numbers_within_float32(values):
            return None
        return np.array((values,), dtype=np.float32)

    def _checked_rows(self, records: list[Any], body: bytes, outer_keys: int) -> np.ndarray:
        """Every record judged one by one; `outer_keys` counts the keys around the records ("instances")."""
        x = np.array([self._record(r, i) for i, r in enumerate(records)], np.float32)
        # Valid records leave feature names as the body's only strings, so more quotes than their keys
        # need means some object repeats a key (which the parser resolved silently, last one wins).
        keys = outer_keys + sum(len(r) for r in records if type(r) is dict)
        if body.count(b'"') != 2 * keys and (key := repeated_key(body)) is not None:
            raise ServeError(422, f"key {key!r} is given twice in one object: which value is meant is ambiguous",
                             field=self._by_lower.get(key.lower(), key))
        return x

    def _fast_rows(self, records: list[Any], body: bytes) -> np.ndarray | None:
        """A well-formed batch in C-level operations, or None for the exhaustive path to judge."""
        n = len(self.names)
        kind = type(records[0])
        if kind is not dict and kind is not list:
            return None
        if not all(type(r) is kind and len(r) == n for r in records):
            return None
        try:
            rows = list(map(self._get, records)) if kind is dict else records
        except KeyError:
            return None
        if not _only_numbers(body, n, self._name_letters, len(records) if kind is dict else 0):
            return None
        try:
            with np.errstate(over="ignore"):
                x = np.fromiter(chain.from_iterable(rows), np.float32, count=n * len(rows)).reshape(-1, n)
        except (TypeError, ValueError, OverflowError):  # a nested value, an integer beyond float64
            return None
        return x if np.isfinite(x).all() else None

    def _record(self, record: Any, index: int) -> list[float]:
        if type(record) is dict:
            values = self._named_values(record, index)
        elif type(record) is list:
            if len(record) != len(self.names):
                raise ServeError(422, f"record {index}: expected {len(self.names)} values in the order "
                                 f"{', '.join(self.names)}; got {len(record)}", record=index)
            values = record
        else:
            raise ServeError(422, f"record {index}: expected an object of features or an array of "
                             f"{len(self.names)} numbers, got {json_type_name(record)}", record=index)
        return [check_number(value, name, index) for name, value in zip(self.names, values)]

    def _named_values(self, record: dict[str, Any], index: int) -> list[Any]:
        found: dict[str, tuple[str, Any]] = {}  # feature name -> (the key that gave it, value)
        unknown: list[str] = []
        for key, value in record.items():
            name = self._by_lower.get(key.lower())
            if name is None:
                unknown.append(key)
            elif name in found:
                raise ServeError(422, f"record {index}: feature {name} given twice, as {found[name][0]!r} and "
                                 f"{key!r} (names and aliases are case-insensitive)", record=index, field=name)
            else:
                found[name] = key, value
        missing = [name for name in self.names if name not in found]
        if missing or unknown:
            problems = ([f"missing features: {', '.join(missing)}"] if missing else []) + (
                [unknown_names("field", unknown, self.model.closest)] if unknown else [])
            raise ServeError(422, f"record {index}: {'; '.join(problems)}", record=index,
                             missing=missing, unknown=shortlist(unknown))
        return [found[name][1] for name in self.names]
