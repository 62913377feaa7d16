"""The pure and in-process parts of serving: input rules (properties), the batcher, and
one deployment lifecycle for central's state and the read model (same random event
sequences into both, same answer)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import StoredMessage
from central.lifecycle.state import CentralState
from central.readmodel.projection import Projection
from central.readmodel.schema import EVENTS_STREAM
from events import (
    DeploymentDeleted,
    DeploymentFailed,
    DeploymentPlaced,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentStopped,
    encode,
    subject_for,
)
from node.serving import tensors
from node.serving.errors import InvalidRequest, NotActive, QueueFull
from node.serving.runner import PROBE_EVERY, Batcher, batch_sizes

SAMPLE = (8, 8, 1)


@given(shape=st.lists(st.integers(-3, 80), max_size=4), extra=st.integers(-8, 8),
       dtype=st.sampled_from(sorted(tensors.OIP_DTYPES)))
def test_bytes_become_float32_samples_or_a_clear_refusal(shape, extra, dtype):
    dt = tensors.OIP_DTYPES[dtype]
    count = int(np.prod(shape)) if shape and min(shape) >= 0 else 0
    data = bytes(max(count * dt.itemsize + extra, 0))
    try:
        x = tensors.from_bytes(data, shape, dt, SAMPLE, "input", max_samples=1000)
    except InvalidRequest as exc:
        assert exc.message.startswith("input: ")
        return
    assert x.dtype == np.float32 and x.shape[1:] == SAMPLE and x.shape[0] >= 1
    assert extra == 0


def test_one_sample_or_a_batch():
    one = tensors.from_values([0.5] * 64, None, SAMPLE, "input", max_samples=10)
    assert one.shape == (1, 8, 8, 1)
    many = tensors.from_values([[0.5] * 64] * 3, None, SAMPLE, "input", max_samples=10)
    assert many.shape == (3, 8, 8, 1)
    with pytest.raises(InvalidRequest, match="11 samples in one request is over the limit of 10"):
        tensors.from_values([[0.5] * 64] * 11, None, SAMPLE, "input", max_samples=10)
    assert batch_sizes(64) == [1, 2, 4, 8, 16, 32, 64] and batch_sizes(48) == [1, 2, 4, 8, 16, 32, 48]


async def test_batcher_runs_alone_when_idle_gathers_under_load_and_drains_on_close():
    sizes: list[int] = []
    gate = threading.Event()

    def predict(x):
        gate.wait(5)
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)

    batcher = Batcher(predict, max_batch=16, max_delay_s=0.002, queue_size=40, on_batch=sizes.append)
    gate.set()
    out = await batcher.submit(np.ones((1, 4), np.float32))
    assert out.tolist() == [[4.0]] and sizes == [1]  # idle: at once, alone
    gate.clear()
    first = batcher.submit(np.ones((1, 4), np.float32))  # the worker holds this one at the gate
    await asyncio.sleep(0.05)
    rest = [batcher.submit(np.full((1, 4), i, np.float32)) for i in range(30)]
    with pytest.raises(QueueFull):
        for _ in range(20):
            batcher.submit(np.ones((1, 4), np.float32))
    gate.set()
    results = await asyncio.gather(first, *rest)
    assert [r.tolist() for r in results[1:]] == [[[4.0 * i]] for i in range(30)]
    assert max(sizes) == 16  # gathered up to max_batch
    batcher.close()
    with pytest.raises(NotActive):
        batcher.submit(np.ones((1, 4), np.float32))
    assert batcher.join(5)


async def test_an_inline_batcher_runs_idle_requests_on_the_loop_and_busy_ones_in_its_worker():
    threads: list[str] = []
    sizes: list[int] = []
    gate = threading.Event()
    gate.set()

    def predict(x):
        threads.append(threading.current_thread().name)
        if threading.current_thread().name == "worker":
            gate.wait(5)
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)

    batcher = Batcher(predict, max_batch=16, max_delay_s=0.002, queue_size=100, on_batch=sizes.append,
                      name="worker", inline=True)
    loop_thread = threading.current_thread().name
    for i in range(PROBE_EVERY):  # one caller: on the loop, answered before submit returns
        future = batcher.submit(np.full((1, 4), i, np.float32))
        assert future.done() and (await future).tolist() == [[4.0 * i]]
    assert threads == [loop_thread] * PROBE_EVERY
    gate.clear()
    probe = batcher.submit(np.ones((1, 4), np.float32))  # the probe goes to the worker, which holds it
    assert not probe.done()
    rest = [batcher.submit(np.full((1, 4), i, np.float32)) for i in range(20)]  # a second caller: busy
    gate.set()
    results = await asyncio.gather(probe, *rest)
    assert [r.tolist() for r in results[1:]] == [[[4.0 * i]] for i in range(20)]
    assert threads[PROBE_EVERY:] == ["worker"] * (len(threads) - PROBE_EVERY) and max(sizes[PROBE_EVERY:]) > 1
    # busy until the worker answers a batch of one with nothing else in flight; then idle again
    while batcher.busy:
        await batcher.submit(np.ones((1, 4), np.float32))
    assert batcher.submit(np.ones((1, 4), np.float32)).done()
    batcher.close()
    assert batcher.join(5)


# --- one lifecycle ---------------------------------------------------------------------

KINDS = ("requested", "placed", "running", "failed", "lost", "stopped", "deleted")


def _event(kind: str, deployment_id: str, node: str):
    if kind == "requested":
        return DeploymentRequested(deployment_id=deployment_id, model_id="job-1", model_uri="nats://cyxwiz-models/job-1")
    if kind == "placed":
        return DeploymentPlaced(deployment_id=deployment_id, node_id=node, endpoint=f"{node}:50054")
    if kind == "running":
        return DeploymentRunning(deployment_id=deployment_id, node_id=node, http_endpoint=f"http://{node}:8082")
    if kind in ("failed", "lost"):
        return DeploymentFailed(deployment_id=deployment_id, node_id=node, error="boom", lost=kind == "lost")
    if kind == "stopped":
        return DeploymentStopped(deployment_id=deployment_id)
    return DeploymentDeleted(deployment_id=deployment_id)


steps = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["d1", "d2"]), st.sampled_from(["n1", "n2"])),
                 max_size=14)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=steps)
def test_central_state_and_the_read_model_agree(sequence):
    messages = []
    for seq, (kind, deployment_id, node) in enumerate(sequence, start=1):
        event = _event(kind, deployment_id, node)
        messages.append(StoredMessage(seq=seq, subject=subject_for(event), data=encode(event), time_ns=seq * 1000))
    state = CentralState()
    state.apply_batch(messages)
    with tempfile.TemporaryDirectory() as tmp:
        projection = Projection(Path(tmp) / "p.duckdb")
        try:
            if messages:
                projection.apply(EVENTS_STREAM, messages)
            rows = projection.cursor().execute(
                "SELECT deployment_id, status, node_id, updated_seq FROM deployments").fetchall()
            anomalies = projection.cursor().execute("SELECT count(*) FROM anomalies").fetchone()[0]
        finally:
            projection.close()
    assert {r[0]: tuple(r[1:]) for r in rows} == {
        d.deployment_id: (d.status, d.node_id, d.version) for d in state.deployments.values()}
    assert anomalies == state.anomaly_count
