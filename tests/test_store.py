"""The model store: what serves, what is refused and why, and how versions come and go."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from serve.errors import ModelLoadError, ServeError
from serve.intent import Intent
from serve.policy import VersionPolicy
from serve.settings import Settings
from serve.store import ModelStore, State
from tests.versions import put, remove, store_copy, variant, without_metadata

ROW = np.array([[0.00632, 18.0, 2.31, 0.0, 0.538, 6.575, 65.2, 4.09, 1.0, 296.0, 15.3, 396.9, 4.98]], np.float32)


def started(store_dir: Path, policy: str = "all") -> ModelStore:
    store = ModelStore(Settings(model_dir=store_dir, version_policy=policy), Intent())
    asyncio.run(store.start())
    return store


def reconcile(store: ModelStore) -> None:
    asyncio.run(store.reconcile())


def predict(store: ModelStore, name: str, version: str | None = None) -> float:
    return float(store.snapshot.resolve(name, version).model.predict(ROW)[0])


def states(store: ModelStore, name: str) -> dict[str, tuple[State, str]]:
    return {e.version: (e.state, e.reason) for e in store.index() if e.name == name}


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return store_copy(tmp_path)


def test_every_version_serves_and_the_unversioned_name_means_the_newest(store_dir: Path) -> None:
    put(store_dir, "linear", 2, variant("linear", 2, shift=10.0))
    store = started(store_dir)
    assert predict(store, "linear", "2") == pytest.approx(predict(store, "linear", "1") + 10, abs=1e-4)
    assert store.snapshot.resolve("linear").model.version == "2"
    assert {v: s for v, (s, _) in states(store, "linear").items()} == {"1": State.READY, "2": State.READY}


def test_a_new_version_serves_after_a_reconcile_and_a_removed_one_stops(store_dir: Path) -> None:
    store = started(store_dir)
    put(store_dir, "mlp", 3, variant("mlp", 3, shift=-1.0))
    reconcile(store)
    assert store.snapshot.resolve("mlp").model.version == "3"
    remove(store_dir, "mlp", 3)
    reconcile(store)
    assert store.snapshot.resolve("mlp").model.version == "1" and "3" not in states(store, "mlp")


def test_a_replaced_file_serves_its_new_predictions(store_dir: Path) -> None:
    put(store_dir, "linear", 2, variant("linear", 2, shift=1.0))
    store = started(store_dir)
    before = predict(store, "linear", "2")
    put(store_dir, "linear", 2, variant("linear", 2, shift=5.0))
    reconcile(store)
    assert predict(store, "linear", "2") == pytest.approx(before + 4, abs=1e-4)


@pytest.mark.parametrize(("content", "reason"), [
    (b"not an onnx file", "not a loadable ONNX model"),
    (without_metadata("linear"), "metadata lacks"),
    (variant("linear", 2, shift=1.0, golden_shift=0.0), "does not reproduce its golden predictions"),
    (variant("linear", 7, shift=1.0), "its metadata says model 'linear' version '7', its folder linear/2"),
])
def test_a_bad_file_is_refused_with_its_reason_while_the_previous_version_serves(
        store_dir: Path, content: bytes, reason: str) -> None:
    store = started(store_dir)
    served = predict(store, "linear")
    put(store_dir, "linear", 2, content)
    reconcile(store)
    state, why = states(store, "linear")["2"]
    assert state == State.UNAVAILABLE and reason in why
    assert store.snapshot.resolve("linear").model.version == "1" and predict(store, "linear") == served
    put(store_dir, "linear", 2, variant("linear", 2, shift=1.0))  # a good file later is picked up
    reconcile(store)
    assert states(store, "linear")["2"] == (State.READY, "") and predict(store, "linear") == pytest.approx(served + 1)


def test_a_refused_replacement_leaves_the_old_file_of_that_version_serving(store_dir: Path) -> None:
    put(store_dir, "linear", 2, variant("linear", 2, shift=1.0))
    store = started(store_dir)
    served = predict(store, "linear", "2")
    put(store_dir, "linear", 2, b"corrupt")
    reconcile(store)
    state, why = states(store, "linear")["2"]
    assert state == State.READY and "replacement was refused" in why and predict(store, "linear", "2") == served


def test_folders_that_are_not_versions_are_listed_as_unavailable(store_dir: Path) -> None:
    put(store_dir, "linear", "latest", variant("linear", 2, shift=1.0))
    (store_dir / "mlp" / "4").mkdir()
    store = started(store_dir)
    assert states(store, "linear")["latest"] == (State.UNAVAILABLE, "version folder 'latest' is not a positive integer")
    assert "model.onnx is missing" in states(store, "mlp")["4"][1]


def test_a_removed_folder_leaves_the_index(store_dir: Path) -> None:
    put(store_dir, "linear", 2, b"corrupt")
    store = started(store_dir)
    assert states(store, "linear")["2"][0] == State.UNAVAILABLE
    remove(store_dir, "linear", 2)
    reconcile(store)
    assert list(states(store, "linear")) == ["1"]


def test_latest_policy_serves_the_newest_versions_that_load(store_dir: Path) -> None:
    put(store_dir, "linear", 2, variant("linear", 2, shift=1.0))
    put(store_dir, "linear", 3, b"corrupt")
    store = started(store_dir, "latest:1")
    # Version 3 cannot serve, so the newest one that can does; version 1 is left out by the policy.
    assert list(store.snapshot.versions["linear"]) == ["2"]
    assert states(store, "linear")["1"] == (State.UNAVAILABLE, "not selected by the version policy latest:1")


def test_named_policy_serves_only_those_versions(store_dir: Path) -> None:
    put(store_dir, "linear", 2, variant("linear", 2, shift=1.0))
    store = started(store_dir, "1")
    assert list(store.snapshot.versions["linear"]) == ["1"] and store.snapshot.resolve("linear").model.version == "1"


def test_an_unknown_version_is_a_404_naming_the_ready_ones(store_dir: Path) -> None:
    store = started(store_dir)
    with pytest.raises(ServeError, match="has no ready version '9'; ready: 1") as raised:
        store.snapshot.resolve("linear", "9")
    assert raised.value.status == 404


def test_unloading_waits_for_the_versions_requests_then_releases_its_session(store_dir: Path) -> None:
    put(store_dir, "linear", 2, variant("linear", 2, shift=1.0))
    store = ModelStore(Settings(model_dir=store_dir), Intent())

    async def scenario() -> tuple[State, bool, bool]:
        await store.start()
        served = store.snapshot.resolve("linear", "2")
        served.in_flight += 1  # a request is running on version 2
        remove(store_dir, "linear", 2)
        unloading = asyncio.create_task(store.reconcile())
        await asyncio.sleep(0.05)
        state = states(store, "linear")["2"][0]
        still_usable = served.model.predict(ROW).shape == (1,)  # the request can finish on it
        served.in_flight -= 1
        await unloading
        return state, still_usable, hasattr(served.model, "_session")

    state, still_usable, session_kept = asyncio.run(scenario())
    assert state == State.UNLOADING and still_usable and not session_kept
    assert store.snapshot.resolve("linear").model.version == "1"


def test_an_unloaded_model_stops_serving_and_a_load_brings_it_back(store_dir: Path) -> None:
    store = started(store_dir)
    store.intent.set_loaded("mlp", False)
    reconcile(store)
    assert "mlp" not in store.snapshot.latest and store.ready
    assert states(store, "mlp")["1"] == (State.UNAVAILABLE, "unloaded through the repository API")
    store.intent.set_loaded("mlp", True)
    reconcile(store)
    assert "mlp" in store.snapshot.latest


def test_start_up_fails_when_a_model_has_no_version_that_can_serve(store_dir: Path) -> None:
    put(store_dir, "mlp", 1, b"corrupt")
    with pytest.raises(ModelLoadError, match=r"no version of mlp can serve: mlp version 1: .*not a loadable"):
        started(store_dir)


def test_an_empty_store_fails_start_up(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"holds no <name>/<version>/model\.onnx"):
        started(tmp_path)


def test_the_shared_intent_is_seen_by_another_worker(tmp_path: Path) -> None:
    one, other = Intent(tmp_path / "repository.json"), Intent(tmp_path / "repository.json")
    assert other.unloaded() == frozenset() and not other.changed()
    one.set_loaded("mlp", False)
    assert other.changed() and other.unloaded() == {"mlp"} and not other.changed()
    one.set_loaded("mlp", True)
    assert other.changed() and other.unloaded() == frozenset()


@pytest.mark.parametrize(("text", "kept"), [
    ("all", {"1", "2", "3"}), ("latest:2", {"1", "2", "3"}), ("1,3", {"1", "3"})])
def test_version_policies_select_versions(text: str, kept: set[str]) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(["1", "2", "3"]) == kept and str(policy) == text


@pytest.mark.parametrize("text", ["latest:0", "latest:", "newest", "1,x", ""])
def test_a_bad_version_policy_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not `all`, `latest:N` or versions"):
        VersionPolicy.parse(text)
