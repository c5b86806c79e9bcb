"""Zero-delay dynamic batching: small requests that arrive in the same event-loop iteration share one
onnxruntime call.

Under concurrency the event loop parses many requests before it runs any of them; each one adds its
rows here and waits, and a single callback scheduled for the next iteration runs the model once for
all of them and hands every request its own slice. No timer, so a lone request waits one loop
iteration (microseconds), not a batching window. onnxruntime's fixed cost per call (~4 us hot, ~12 us
with the server's cold caches) is then paid once per iteration instead of once per request.
"""

from __future__ import annotations

import asyncio

import numpy as np

from serve.model import Model


class Coalescer:
    def __init__(self, model: Model, max_rows: int):
        self.model = model
        self.max_rows = max_rows
        self._rows: list[np.ndarray] = []
        self._waiting: list[asyncio.Future[np.ndarray]] = []

    async def predict(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.max_rows:  # a real batch already amortises the call
            return self.model.predict(x)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            future.get_loop().call_soon(self._run)
        self._rows.append(x)
        self._waiting.append(future)
        return await future

    def _run(self) -> None:
        rows, waiting = self._rows, self._waiting
        self._rows, self._waiting = [], []
        try:
            y = self.model.predict(rows[0] if len(rows) == 1 else np.concatenate(rows))
        except Exception as exc:  # noqa: BLE001 -- inputs are validated, so a server fault: fail every waiter
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for x, future in zip(rows, waiting):
            if not future.done():  # the client may have gone and its task been cancelled
                future.set_result(y[start:start + len(x)])
            start += len(x)
