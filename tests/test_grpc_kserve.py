"""KServe's own gRPC client (the `kserve` package) infers on our server. kserve lives in its own venv
(.venv-kserve, made by `make test` from requirements-kserve.txt) and runs in a subprocess: it cannot be
imported beside tritonclient.grpc (kserve/kserve#3099)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.conftest import ROOT, Server
from tests.test_v2 import batch, predict_route

KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"


@pytest.mark.skipif(not KSERVE_PYTHON.exists(), reason="no .venv-kserve: `make test` creates it")
@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_kserves_inference_grpc_client_gets_the_predict_routes_answer(server: Server, model: str) -> None:
    x = batch(7)
    result = subprocess.run([str(KSERVE_PYTHON), "tests/kserve_grpc_client.py", server.grpc_address, model,
                             json.dumps(x.tolist())], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.array(json.loads(result.stdout), np.float32), predict_route(server, model, x),
                               atol=1e-6)
