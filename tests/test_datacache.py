"""Data sets cached between jobs (node.datacache): nats:// objects by the SHA-256 the
object store holds, against a real nats-server and a real worker process."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading

import numpy as np
import pytest
from waiting import wait_until

from node import checkpoint
from node.artifacts import DATASETS, ArtifactStore
from node.datacache import LRU, cached_dataset, host_cache
from node.executor import COMPLETED, Assignment, Executor

pytestmark = pytest.mark.timeout(240)


def npz(classes: int, rows: int = 96) -> bytes:
    rng = np.random.default_rng(classes)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(rows, 4)).astype(np.float32), y=np.arange(rows) % classes)
    return buffer.getvalue()


class Ends:
    def __init__(self) -> None:
        self.outcomes: dict = {}
        self.lock = threading.Lock()

    def on_end(self, job, outcome) -> None:
        with self.lock:
            self.outcomes[job.job_id] = outcome


async def test_a_nats_data_set_is_fetched_once_until_it_is_uploaded_again(nats_server, bus, tmp_path) -> None:
    await bus.put_object(DATASETS, "set.npz", npz(classes=3))
    store = ArtifactStore(nats_server.url, credentials=nats_server.seed("node"))  # the node's own role
    await store.start()
    gets: list[str] = []

    def get_dataset(name: str) -> bytes:  # the node process's reads of the object store, counted
        gets.append(name)
        return store.get_dataset_blocking(name)

    ends = Ends()
    executor = Executor(1, ends, data_roots=[tmp_path], fetch_dataset=get_dataset,
                        dataset_sha256=store.dataset_sha256_blocking)

    async def run(job_id: str):
        executor.submit(Assignment(job_id=job_id, model_definition='{"type": "linear"}', dataset_uri="nats://set.npz",
                                   epochs=1, batch_size=32, hyperparameters={"checkpoint_every": "0"}))
        outcome = await asyncio.to_thread(wait_until, lambda: ends.outcomes.get(job_id), timeout=200,
                                          message=f"end of {job_id}")
        assert outcome.status == COMPLETED, outcome
        return checkpoint.read_meta(outcome.result.model_bytes)["output_dim"]

    try:
        assert await run("first") == 3 and gets == ["set.npz"]
        assert await run("second") == 3 and gets == ["set.npz"], "the second job read the object again"
        await bus.put_object(DATASETS, "set.npz", npz(classes=4))  # uploaded again: a new SHA-256
        assert await run("third") == 4, "the third job trained on the old data"
        assert gets == ["set.npz", "set.npz"]
    finally:
        await asyncio.to_thread(executor.close)
        await store.close()


def test_an_object_changed_between_its_hash_and_its_read_is_not_kept() -> None:
    """The store's SHA-256 is asked for first, the bytes read after: if they do not match
    (re-uploaded in between), the data is used once and the next job reads again."""
    old, new = npz(classes=3), npz(classes=5)
    reads: list[str] = []

    def fetch(name: str) -> bytes:
        reads.append(name)
        return new

    stale = hashlib.sha256(old).hexdigest()
    host_cache.clear()
    for _ in range(2):
        ds = cached_dataset("nats://race.npz", data_roots=[], fetch_object=fetch, object_sha256=lambda _: stale)
        assert ds.num_classes == 5
    assert reads == ["race.npz", "race.npz"] and len(host_cache) == 0
    current = hashlib.sha256(new).hexdigest()
    for _ in range(2):
        cached_dataset("nats://race.npz", data_roots=[], fetch_object=fetch, object_sha256=lambda _: current)
    assert reads == ["race.npz"] * 3 and len(host_cache) == 1
    host_cache.clear()


def test_lru_keeps_the_most_recent_within_its_bytes() -> None:
    lru = LRU(max_bytes=10)
    lru.put("a", 1, 4)
    lru.put("b", 2, 4)
    assert lru.get("a") == 1  # now the most recent
    lru.put("c", 3, 4)
    assert (lru.get("b"), lru.get("a"), lru.get("c")) == (None, 1, 3)
    lru.put("huge", 4, 11)
    assert lru.get("huge") is None and len(lru) == 2


async def test_the_store_gives_an_objects_sha256_without_reading_it(bus) -> None:
    from bus import ObjectNotFound

    ref = await bus.put_object(DATASETS, "a.csv", b"1,2,0\n")
    assert await bus.object_sha256(DATASETS, "a.csv") == ref.sha256 == hashlib.sha256(b"1,2,0\n").hexdigest()
    with pytest.raises(ObjectNotFound):
        await bus.object_sha256(DATASETS, "missing.csv")
