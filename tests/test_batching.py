"""Zero-delay dynamic batching: concurrent small requests share one model call, each gets its own rows; a request
alone in flight over HTTP runs at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from serve import in_flight
from serve.batching import Coalescer
from serve.model import Model
from tests.conftest import FEATURES, MODEL_DIR, ROOT, ROWS, model_file

X = np.array([[row[k] for k in FEATURES] for row in ROWS], dtype=np.float32)


@pytest.fixture
def counted() -> tuple[Model, list[int]]:
    model = Model.load(model_file("mlp"))
    calls: list[int] = []
    predict = model.predict

    def counting(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return predict(x)

    model.predict = counting  # type: ignore[method-assign]
    return model, calls


def test_requests_arriving_together_share_one_call_and_get_their_own_rows(counted: tuple[Model, list[int]]) -> None:
    model, calls = counted
    coalescer = Coalescer(model, max_rows=16)
    sizes = [1, 3, 1, 2, 1] * 10

    async def run() -> list[np.ndarray]:
        starts = np.cumsum([0, *sizes[:-1]])
        return await asyncio.gather(*(coalescer.predict(X[s:s + n]) for s, n in zip(starts, sizes)))

    answers = asyncio.run(run())
    assert calls == [sum(sizes)]
    expected = Model.load(model_file("mlp")).predict(X[:sum(sizes)])
    np.testing.assert_array_equal(np.concatenate(answers), expected)
    assert [len(a) for a in answers] == sizes


def test_with_others_in_flight_the_first_waits_a_pass_for_them_to_join(counted: tuple[Model, list[int]]) -> None:
    model, calls = counted
    coalescer = Coalescer(model, max_rows=16)

    async def together() -> list[np.ndarray]:
        in_flight.count({"first", "second", "third"})  # as a server counts the requests it has read
        return await asyncio.gather(*(coalescer.predict(X[i:i + 1]) for i in range(3)))

    answers = asyncio.run(together())
    assert calls == [3]
    np.testing.assert_array_equal(np.concatenate(answers), Model.load(model_file("mlp")).predict(X[:3]))


def test_a_request_alone_in_flight_runs_the_model_without_waiting_a_pass(counted: tuple[Model, list[int]]) -> None:
    model, calls = counted
    coalescer = Coalescer(model, max_rows=16)

    async def alone() -> np.ndarray:
        in_flight.count({"the only request"})
        step = coalescer.predict(X[:1])
        with pytest.raises(StopIteration) as finished:
            step.send(None)  # done in its first step: it never gave the loop a pass
        return finished.value.value  # type: ignore[no-any-return]

    answer = asyncio.run(alone())
    assert calls == [1]
    np.testing.assert_array_equal(answer, Model.load(model_file("mlp")).predict(X[:1]))


# Run in a subprocess: serve.rpc's protobuf names clash with tritonclient's, which other tests import.
GRPC_CALLS = """
import asyncio, json, sys
from pathlib import Path
import numpy as np
from serve import in_flight
from serve.middleware import Frontdoor
from serve.protocol import open_inference_grpc_pb2 as pb
from serve.rpc import Servicer
from serve.service import Service
from serve.settings import Settings

class Context:  # what the servicer asks of grpc.aio's context on an answered call
    def invocation_metadata(self): return ()
    def peer(self): return "ipv4:127.0.0.1:50000"

def infer(servicer, row):
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, 13])
    request = pb.ModelInferRequest(model_name="linear", inputs=[tensor],
                                   raw_input_contents=[np.full((1, 13), row, "<f4").tobytes()])
    return servicer.ModelInfer(request, Context())

async def main():
    service = Service(Settings(model_dir=Path(sys.argv[1]), grpc_port=0, access_log="off"))
    await service.start()
    in_flight.count(set())  # the loop's HTTP server, with no request in flight
    servicer = Servicer(service, Frontdoor(None, service), None)
    model, calls = service.resolve("linear").model, []
    predict = model.predict
    model.predict = lambda x: calls.append(len(x)) or predict(x)
    alone = infer(servicer, 1)
    try:
        alone.send(None)
    except StopIteration:  # done in its first step
        waited = False
    else:
        waited = True
        await asyncio.ensure_future(alone)
    print(json.dumps({"alone_waited_a_pass": waited, "calls": calls}))
    calls.clear()
    await asyncio.gather(*(infer(servicer, row) for row in (1, 2, 3)))
    print(json.dumps({"together": calls}))

asyncio.run(main())
"""


def test_grpc_calls_started_one_by_one_still_share_one_call() -> None:
    """grpc.aio starts each call's task on its own: the first cannot see those received with it, so while a gRPC
    call is in flight the first waits its pass, as every request did before requests were counted."""
    output = subprocess.run([sys.executable, "-c", GRPC_CALLS, str(MODEL_DIR)], cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=120)
    alone, together = map(json.loads, output.stdout.splitlines())
    assert alone == {"alone_waited_a_pass": True, "calls": [1]}
    assert together == {"together": [3]}


def test_a_large_batch_runs_on_its_own(counted: tuple[Model, list[int]]) -> None:
    model, calls = counted
    asyncio.run(Coalescer(model, max_rows=16).predict(X[:100]))
    assert calls == [100]


def test_zero_turns_batching_off(counted: tuple[Model, list[int]]) -> None:
    model, calls = counted
    coalescer = Coalescer(model, max_rows=0)

    async def run() -> None:
        await asyncio.gather(*(coalescer.predict(X[i:i + 1]) for i in range(5)))

    asyncio.run(run())
    assert calls == [1] * 5


def test_a_cancelled_request_does_not_disturb_the_others(counted: tuple[Model, list[int]]) -> None:
    model, _ = counted
    coalescer = Coalescer(model, max_rows=16)

    async def run() -> list[np.ndarray]:
        doomed = asyncio.ensure_future(coalescer.predict(X[:1]))
        others = [asyncio.ensure_future(coalescer.predict(X[i:i + 1])) for i in (1, 2)]
        await asyncio.sleep(0)
        doomed.cancel()
        return list(await asyncio.gather(*others))

    answers = asyncio.run(run())
    np.testing.assert_array_equal(np.concatenate(answers), model.predict(X[1:3]))
