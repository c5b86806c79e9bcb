"""The requests in flight on an event loop, over every protocol: whether one about to run the model alone could
be joined by another in this pass of the loop (serve.batching waits one pass for them only when there are)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sized

# Per loop, each protocol server's live collection of its requests: uvicorn's set of request tasks (a task from
# the moment its head is parsed, so requests read in this pass but not yet started count), the gRPC servicer's
# calls. Keyed weakly: a closed loop's entry goes with it.
_COUNTED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Sized]] = weakref.WeakKeyDictionary()


def count(requests: Sized) -> None:
    """Count `requests`, a protocol server's live collection, among the running loop's requests in flight."""
    _COUNTED.setdefault(asyncio.get_running_loop(), []).append(requests)


def others() -> bool:
    """Whether a request other than the asker's may be in flight on the running loop. True when no protocol
    counts its requests here (a bare ASGI call, a test): the asker cannot know, so it assumes there may be."""
    counted = _COUNTED.get(asyncio.get_running_loop())
    return counted is None or sum(map(len, counted)) > 1
