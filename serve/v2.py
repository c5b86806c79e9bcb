"""The Open Inference Protocol (KServe V2) wire format <-> one (N, n_features) float32 array.

JSON tensors and the binary tensor data extension are two ways of carrying the same bytes; both end
in `_tensor`, so they share every check. Every refusal is a 400 naming input and position, as the
protocol asks.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import orjson

from serve.codec import (
    FLOAT32_LIMIT,
    NUMBER_TYPES,
    json_type_name,
    numbers_within_float32,
    parse_json,
    repeated_key,
)
from serve.errors import ServeError, unknown_names
from serve.model import Model

# Accepted input datatypes; FP64 is converted to the model's FP32.
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_SCALAR_TYPES = frozenset((int, float, bool, str, type(None)))
_REQUEST_KEYS = frozenset(("id", "parameters", "inputs", "outputs"))
_TENSOR_KEYS = frozenset(("name", "datatype", "shape", "parameters", "data"))
_OUTPUT_KEYS = frozenset(("name", "parameters"))
# Up to this many values, plain Python checks the range faster than numpy's calls cost.
_SMALL = 64
# A client sends the same JSON header with every binary request of a shape, so a header judged once is known by
# its bytes: no parse or structure check. One row: decode 5.8 -> 1.8 us in a loop; with the server's cold caches
# at c=1, 151 -> 119 us of server CPU a request (side by side). At most this many headers, each at most this long.
_REMEMBERED, _REMEMBERED_HEAD = 256, 1024
BINARY_HEADER = b"inference-header-content-length"


class InferRequest(NamedTuple):  # a NamedTuple: a frozen dataclass costs ~1 us to build
    x: np.ndarray
    id: str | None
    binary_output: bool
    # Requested output names, each once; MEDV alone when the request names none.
    outputs: tuple[str, ...]


class _Header(NamedTuple):
    """What the fast path learns from a request's JSON header, before its values."""

    rows: int
    size: Any  # the input's binary_data_size as given (None: its values are the JSON `data`)
    data: Any
    request_id: str | None
    outputs: tuple[str, ...]
    binary_output: bool


def bad(message: str) -> ServeError:
    return ServeError(400, message)


def split_body(body: bytes, header_length: bytes) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) per the binary tensor data extension."""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise bad(f"Inference-Header-Content-Length {header_length.decode('latin-1')!r} is not a length "
                  f"within the {len(body)}-byte body")
    return body[:int(header_length)], body[int(header_length):]


class V2Codec:
    def __init__(self, model: Model, max_batch: int):
        self.model = model
        self.max_batch = max_batch
        self._input, self._width = model.input_name, len(model.features)
        self._default_outputs = (model.output_name,)
        self._binary_headers: dict[bytes, _Header] = {}  # judged headers of binary requests, by their bytes

    def decode(self, body: bytes, header_length: bytes | None) -> InferRequest:
        head, binary = (body, b"") if header_length is None else split_body(body, header_length)
        short = len(head) <= _REMEMBERED_HEAD  # a longer one is never remembered, nor hashed to look for it
        header = self._binary_headers.get(head) if short else None
        payload = None
        if header is None:
            payload, strict = parse_json(head)
            header = self._fast_header(payload, head) if strict and type(payload) is dict else None
            if header is not None and header.size is not None and short:
                if len(self._binary_headers) >= _REMEMBERED:  # unique ids: start over rather than grow
                    self._binary_headers.clear()
                self._binary_headers[head] = header
        if header is not None:
            x = self._fast_values(header.data, header.size, binary, header.rows, self._width)
            if x is not None:
                return InferRequest(x, header.request_id, header.binary_output, header.outputs)
        if payload is None:  # a known header whose binary data is not: judged in full, to name what is wrong
            payload, _ = parse_json(head)
        request = self.decode_parsed(payload, binary)
        if head.count(b'"') > 2 * _strings(payload) and (key := repeated_key(head)) is not None:
            raise bad(f"key {key!r} is given twice in one object: which value is meant is ambiguous")
        return request

    def decode_parsed(self, payload: Any, binary: bytes) -> InferRequest:
        """A request already parsed into the JSON shape (tensors as dicts, binary data after), checked in full:
        the entry point of protocols that are not JSON on the wire (gRPC)."""
        if type(payload) is not dict:
            raise bad(f"the inference request must be a JSON object, got {json_type_name(payload)}")
        inputs = payload.get("inputs")
        if type(inputs) is not list or not inputs:
            raise bad("'inputs' must be a non-empty array of tensors")
        request_id = payload.get("id")
        if request_id is not None and type(request_id) is not str:
            raise bad(f"'id' must be a string, got {json_type_name(request_id)}")
        parameters = _parameters(payload, "the request")
        tensors, used = self._tensors(inputs, binary)
        if used != len(binary):
            raise bad(f"{len(binary) - used} bytes of binary data are not claimed by any input's binary_data_size")
        x = tensors[0] if len(tensors) == 1 else np.concatenate(tensors, axis=1)
        if len(x) > self.max_batch:
            raise ServeError(413, f"batch of {len(x)} rows is over the limit of {self.max_batch}", limit=self.max_batch)
        outputs, binary_output = self._outputs(payload.get("outputs"), parameters.get("binary_data_output") is True)
        return InferRequest(x, request_id, binary_output, outputs)

    def _fast_header(self, payload: dict[str, Any], head: bytes) -> _Header | None:
        """The common request's header (one FP32 tensor of the model's input, parameters holding only scalars)
        in a few C-level steps, or None for the exhaustive path to judge and name what is wrong."""
        inputs = payload.get("inputs")
        if type(inputs) is not list or len(inputs) != 1:
            return None
        if len(payload) == 1:  # {"inputs": [...]} alone, the plain JSON request
            outputs = request_id = request_parameters = None
        else:
            outputs, request_id = payload.get("outputs"), payload.get("id")
            request_parameters = payload.get("parameters")
            if not _REQUEST_KEYS.issuperset(payload) or (request_id is not None and type(request_id) is not str):
                return None
        tensor = inputs[0]
        if (type(tensor) is not dict or not _TENSOR_KEYS.issuperset(tensor)
                or tensor.get("name") != self._input or tensor.get("datatype") != "FP32"):
            return None
        shape, width = tensor.get("shape"), self._width
        if (type(shape) is not list or len(shape) != 2 or shape[1] != width or type(shape[0]) is not int
                or not 0 < shape[0] <= self.max_batch):
            return None
        # Its strings are its keys, its id, the tensor's name and datatype, the outputs' names and
        # string parameters; more quotes in the body than they need means a repeated key.
        strings = len(payload) + (request_id is not None) + len(tensor) + 2
        tensor_parameters = tensor.get("parameters")
        for parameters in (request_parameters, tensor_parameters):
            if parameters is not None:
                if type(parameters) is not dict or (found := _scalar_strings(parameters)) is None:
                    return None
                strings += found
        if outputs is not None:
            if type(outputs) is not list:
                return None
            for output in outputs:
                if (type(output) is not dict or not _OUTPUT_KEYS.issuperset(output)
                        or type(output.get("name")) is not str):
                    return None
                parameters = output.get("parameters", {})
                if type(parameters) is not dict or (found := _scalar_strings(parameters)) is None:
                    return None
                strings += len(output) + 1 + found
        if head.count(b'"') != 2 * strings:
            return None
        size = None if tensor_parameters is None else tensor_parameters.get("binary_data_size")
        binary_default = request_parameters is not None and request_parameters.get("binary_data_output") is True
        try:
            names, binary_output = self._outputs(outputs, binary_default)
        except ServeError:  # the exhaustive path names it, after any fault in the values
            return None
        return _Header(shape[0], size, tensor.get("data"), request_id, names, binary_output)

    def _fast_values(self, data: Any, size: Any, binary: bytes, rows: int, width: int) -> np.ndarray | None:
        """(rows, width) FP32 values from the JSON `data` or, with a `size`, from the binary section."""
        count = rows * width
        if size is not None:
            if size != 4 * count or len(binary) != size or data is not None:
                return None
            raw = np.frombuffer(binary, "<f4")
            x = raw.reshape(rows, width)
            if count <= _SMALL:  # 13 values: 0.5 us, against numpy's isfinite and all, 1.6 us
                return x if all(map(math.isfinite, raw.tolist())) else None
            # Values within the training range are finite: one pass answers both, and the range warnings and drift
            # counters then ask no more (1,000 rows: 6.2 -> 3.6 us); the exhaustive path names what is wrong.
            return x if self.model.range.within(x) or np.isfinite(x).all() else None
        if binary or type(data) is not list or not data:
            return None
        values = data if type(data[0]) is not list else list(chain.from_iterable(data))
        flat = _float32(values) if len(values) == count else None
        return None if flat is None else flat.reshape(rows, width)

    def _tensors(self, inputs: list[Any], binary: bytes) -> tuple[list[np.ndarray], int]:
        """The input tensors as float32 columns in feature order, and the binary bytes they used."""
        model = self.model
        offset = 0
        if len(inputs) == 1 and type(inputs[0]) is dict and inputs[0].get("name") == model.input_name:
            x, offset = self._tensor(inputs[0], binary, offset, width=len(model.features))
            return [x], offset
        columns: dict[int, np.ndarray] = {}
        given_as: dict[int, str] = {}
        unknown = []
        for tensor in inputs:
            name = tensor.get("name") if type(tensor) is dict else None
            index = model.index.get(name.lower()) if type(name) is str else None
            if index is None:
                unknown.append(str(name))
                continue
            if index in columns:
                raise bad(f"input for feature {model.feature_names[index]} given twice, as {given_as[index]!r} "
                          f"and {name!r} (names and aliases are case-insensitive)")
            given_as[index] = tensor["name"]
            columns[index], offset = self._tensor(tensor, binary, offset, width=None)
        missing = [model.feature_names[i] for i in range(len(model.features)) if i not in columns]
        if unknown or missing:
            problems = ([unknown_names("input", unknown, model.closest)] if unknown else []) + (
                [f"missing features: {', '.join(missing)}"] if missing else [])
            raise bad(f"expected one input {model.input_name!r} of shape [N, {len(model.features)}] or one input "
                      f"per feature ({', '.join(model.feature_names)}); {'; '.join(problems)}")
        rows = {len(column) for column in columns.values()}
        if len(rows) != 1:
            raise bad(f"per-feature inputs must all have the same length, got lengths {sorted(rows)}")
        return [columns[i] for i in range(len(model.features))], offset

    def _tensor(self, tensor: dict[str, Any], binary: bytes, offset: int, width: int | None) -> tuple[np.ndarray, int]:
        """One input as a float32 array of shape (N, width) (or (N, 1) for a feature column)."""
        name = tensor["name"]
        datatype = tensor.get("datatype")
        if type(datatype) is not str or datatype not in DTYPES:
            raise bad(f"input {name!r}: datatype {datatype!r} is not supported; send FP32 (FP64 is converted)")
        shape = tensor.get("shape")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"input {name!r}: 'shape' must be an array of non-negative integers, got {shape!r}")
        expected = f"[N, {width}]" if width else "[N] or [N, 1]"
        if (width and (len(shape) != 2 or shape[1] != width)) or (
                not width and not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))):
            raise bad(f"input {name!r}: shape {shape} does not match the model's {expected}")
        if shape[0] == 0:
            raise bad(f"input {name!r}: the batch is empty (shape {shape})")
        count = math.prod(shape)  # exact: numpy's int64 product wraps and would pass a huge shape
        parameters = _parameters(tensor, f"input {name!r}")
        if "shared_memory_region" in parameters:
            raise bad(f"input {name!r}: shared memory is not supported by this server; send the data in the request")
        size = parameters.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise bad(f"input {name!r}: binary_data_size {size!r} exceeds the {len(binary) - offset} binary "
                          "bytes left (is the Inference-Header-Content-Length header set?)")
            if size != count * DTYPES[datatype].itemsize:
                raise bad(f"input {name!r}: shape {shape} in {datatype} needs {count * DTYPES[datatype].itemsize} "
                          f"bytes, binary_data_size is {size}")
            values = np.frombuffer(binary, DTYPES[datatype], count, offset)
            offset += size
        else:
            values = _json_values(tensor.get("data"), name, count, DTYPES[datatype])
        with np.errstate(over="ignore"):
            x = values.astype(np.float32).reshape(shape[0], width or 1)
        if not np.isfinite(x).all():
            row, column = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
            feature = self.model.feature_names[column] if width else name
            raise bad(f"input {name!r}: row {row}, feature {feature}: value is NaN, infinite or beyond FP32")
        return x, offset

    def _outputs(self, requested: Any, binary_default: bool) -> tuple[tuple[str, ...], bool]:
        if requested is None:
            return self._default_outputs, binary_default
        if type(requested) is not list or not all(type(o) is dict for o in requested):
            raise bad("'outputs' must be an array of objects naming outputs")
        names = tuple(dict.fromkeys(o.get("name") for o in requested))  # each once, in the order asked
        outputs = self.model.output_shapes
        unknown = [str(n) for n in names if n not in outputs]
        if unknown:
            raise bad(f"unknown output(s) {', '.join(unknown)}; the model has {', '.join(map(repr, outputs))}")
        binary = any(_parameters(o, "output").get("binary_data", binary_default) is True for o in requested)
        return names, binary

    def encode(self, request: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
        """(response body, extra headers): the requested outputs, JSON, or a JSON header followed by binary
        tensor data."""
        warnings = self.warnings(request, self.model.prediction(outputs))
        tensors: list[dict[str, Any]] = []
        raw = b""
        for name in request.outputs:
            values = outputs[name]
            tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": self.shape(name, len(request.x))}
            if request.binary_output:
                data = values.astype("<f4").tobytes()
                raw += data
                tensor["parameters"] = {"binary_data_size": len(data)}
            else:
                tensor["data"] = values.reshape(-1).tolist()
            tensors.append(tensor)
        response: dict[str, Any] = {"model_name": self.model.name, "model_version": self.model.version,
                                    "outputs": tensors}
        if request.id is not None:
            response["id"] = request.id
        if warnings:
            response["parameters"] = {"warnings": warnings}
        head = orjson.dumps(response)
        if not raw:
            return head, {}
        headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
        return head + raw, headers

    def shape(self, output: str, rows: int) -> list[int]:
        """The shape of an output for `rows` rows."""
        return [rows, *self.model.output_shapes[output][1:]]

    def warnings(self, request: InferRequest, y: np.ndarray) -> str:
        """The range warnings as the response's "warnings" parameter ("" for none), once the predictions are
        known to be usable. V2 parameter values are scalars: the warnings travel as one JSON-encoded string."""
        unusable = self.model.non_finite(y)
        if unusable:
            raise bad(f"the model gives no finite prediction for row(s) {unusable[:10]}: "
                      "inputs too far outside the training range")
        warnings = self.model.warnings(request.x, with_record=True)
        return orjson.dumps(warnings).decode() if warnings else ""


def _strings(value: Any) -> int:
    """Keys and string values in a parsed document, skipping arrays of numbers (the tensor data).

    Each takes two quotes in the body; more quotes than that means escaped quotes or a repeated key.
    A loop, not recursion: unknown parameters may nest a thousand levels deep."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            count += 1
        elif type(item) is dict:
            count += len(item)
            stack.extend(item.values())
        elif type(item) is list and item and type(item[0]) not in NUMBER_TYPES:
            stack.extend(item)
    return count


def _scalar_strings(parameters: dict[str, Any]) -> int | None:
    """How many strings (keys and values) a parameters object holds, or None if a value is not a scalar."""
    count = len(parameters)
    for value in parameters.values():
        kind = type(value)
        if kind is str:
            count += 1
        elif kind not in _SCALAR_TYPES:
            return None
    return count


def _float32(values: list[Any]) -> np.ndarray | None:
    """The JSON numbers `values` as float32, or None when any is not a number or lies beyond FP32."""
    if len(values) <= _SMALL:
        return np.array(values, np.float32) if numbers_within_float32(values) else None
    if not NUMBER_TYPES.issuperset(map(type, values)):
        return None
    try:
        wide = np.array(values, np.float64)  # orjson's floats are finite: only the FP32 range to check
    except OverflowError:
        return None
    return wide.astype(np.float32) if np.abs(wide).max() < FLOAT32_LIMIT else None


def _parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = owner.get("parameters", {})
    if type(parameters) is not dict:
        raise bad(f"'parameters' of {what} must be an object, got {json_type_name(parameters)}")
    return parameters


def _json_values(data: Any, name: str, count: int, dtype: np.dtype[Any]) -> np.ndarray:
    """JSON tensor data, flat or nested (row-major), as a flat array of `count` numbers."""
    if type(data) is not list:
        raise bad(f"input {name!r}: 'data' must be an array (or use binary_data_size), got {json_type_name(data)}")
    flat = data
    while flat and type(flat[0]) is list:
        if not all(type(item) is list for item in flat):
            raise bad(f"input {name!r}: 'data' mixes nested arrays and numbers")
        flat = list(chain.from_iterable(flat))
    if len(flat) != count:
        raise bad(f"input {name!r}: the shape needs {count} values, 'data' holds {len(flat)}")
    if not NUMBER_TYPES.issuperset(map(type, flat)):
        index, value = next((i, v) for i, v in enumerate(flat) if type(v) not in NUMBER_TYPES)
        raise bad(f"input {name!r}: element {index} is {json_type_name(value)}, expected a number")
    try:
        with np.errstate(over="ignore"):  # beyond FP32 becomes inf, refused by the caller with its position
            return np.array(flat, dtype=dtype)
    except OverflowError:
        raise bad(f"input {name!r}: an integer is beyond {dtype}") from None
