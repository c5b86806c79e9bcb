"""The requests in flight on an event loop, over every protocol: whether one about to run the model alone could
be joined by another in this pass of the loop (serve.batching waits one pass for them only when there may be)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sized


class _Counted:
    """One loop's protocol servers' live collections of their requests in flight."""

    __slots__ = ("from_arrival", "once_started")

    def __init__(self) -> None:
        # uvicorn's set of request tasks: a task from the moment its head is parsed, so that the requests read in
        # this pass but not yet started are in it.
        self.from_arrival: list[Sized] = []
        # The gRPC servicer's calls: grpc.aio starts each call's task on its own, so a call is seen only once it
        # runs, and while any is in flight others may have arrived unseen.
        self.once_started: list[Sized] = []


_COUNTED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Counted] = weakref.WeakKeyDictionary()


def count(requests: Sized, *, from_arrival: bool = True) -> None:
    """Count `requests`, a protocol server's live collection, among the running loop's requests in flight: each
    request from its arrival, or (`from_arrival` False) only once it has started."""
    counted = _COUNTED.setdefault(asyncio.get_running_loop(), _Counted())
    (counted.from_arrival if from_arrival else counted.once_started).append(requests)


def others() -> bool:
    """Whether a request other than the asker's may be in flight on the running loop. True when no protocol
    counts its requests here (a bare ASGI call, a test): the asker cannot know, so it assumes there may be."""
    counted = _COUNTED.get(asyncio.get_running_loop())
    return counted is None or any(counted.once_started) or sum(map(len, counted.from_arrival)) > 1
