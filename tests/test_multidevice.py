"""One job on several devices of its node (issue 16): the trainer data parallel over a
mesh, the node's slots counting devices, central's scheduler matching the count, the
count in the events and in DuckDB.

CPU only: XLA makes several CPU devices when told (``--xla_force_host_platform_device_count``,
read once per process, so the trainer runs in a process of its own) and a node's workers
get theirs through ``JAX_NUM_CPU_DEVICES`` (``node.executor.worker_env``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from bus import StoredMessage
from central.cli.run import rest_sql
from central.cli.stack import Stack, StackConfig
from central.client import Client
from central.readmodel.projection import EVENTS_STREAM, Projection
from central.server import CentralConfig, CentralServer
from events import JobAssigned, JobRequeued, JobSpec, JobSubmitted, decode, encode, subject_for
from fake_node import FakeNode
from node.executor import Assignment, Busy, Executor, Unfit, worker_env
from node.metrics import DeviceInfo
from protos import common_pb2, job_pb2, job_pb2_grpc
from waiting import eventually, wait_until

ROOT = Path(__file__).resolve().parent.parent
FOUR_CPUS = "--xla_force_host_platform_device_count=4"


@pytest.mark.timeout(600)  # a process of its own: JAX, compiling on a loaded machine
def test_same_seed_same_params_on_1_2_and_4_devices_and_a_2_device_checkpoint_resumes_on_1():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FOUR_CPUS}"}
    done = subprocess.run([sys.executable, str(ROOT / "tests/scripts/multidevice_trainer.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["process_devices"] == 4
    assert out["devices_seen"] == {"1": [1], "2": [2], "4": [4]}, "each run trained on the devices it asked for"
    assert out["all_means"] == 4
    for count, difference in out["difference"].items():
        assert difference < 1e-5, f"{count} devices moved the final parameters by {difference}"
    assert out["same_checkpoint_format"], "a checkpoint holds the same arrays whatever the devices"
    assert out["resumed_epochs"] == 2
    assert out["resumed_on_1_difference"] < 1e-5


# --- the node: slots count devices ----------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.devices: dict[str, set[int]] = {}
        self.ends: dict[str, object] = {}
        self._lock = threading.Lock()

    def on_epoch(self, job, epoch) -> None:
        with self._lock:
            self.devices.setdefault(job.job_id, set()).add(epoch.devices)

    def on_end(self, job, outcome) -> None:
        with self._lock:
            self.ends[job.job_id] = outcome


def _job(job_id: str, devices: int, batch_size: int = 64) -> Assignment:
    return Assignment(job_id=job_id, model_definition='{"type": "mlp", "hidden": [16]}', devices=devices,
                      hyperparameters={"seed": "0", "steps_per_chunk": "4"}, dataset_uri="builtin://iris",
                      epochs=1000, batch_size=batch_size)


@pytest.mark.timeout(240)
def test_a_2_device_job_and_two_1_device_jobs_share_a_4_device_node(tmp_path):
    four = [DeviceInfo(kind="cpu", name="cpu", memory_bytes=0)] * 4
    recorder = Recorder()
    executor = Executor(4, recorder, devices=4, data_roots=[tmp_path], worker_env=worker_env(four, 4))
    try:
        assert executor.submit(_job("two", 2)) and executor.submit(_job("one-a", 1)) and executor.submit(_job("one-b", 1))
        assert executor.free_slots == 0 and sorted(executor.active_jobs()) == ["one-a", "one-b", "two"]
        with pytest.raises(Busy) as busy:
            executor.submit(_job("one-c", 1))
        assert str(busy.value) == "node busy: all 4 slot(s) are running jobs; try another node or later"
        with pytest.raises(Unfit) as unfit:
            executor.submit(_job("eight", 8))
        assert str(unfit.value) == "job 'eight' asks for 8 devices; this node has 4"
        with pytest.raises(Unfit) as unfit:
            executor.submit(_job("all", 0, batch_size=66))
        assert str(unfit.value) == ("job 'all': batch_size 66 must divide by the number of devices (4): the global "
                                    "batch is split evenly over them; use 64 or 68 (devices=all is 4 on this node)")
        wait_until(lambda: len(recorder.devices) == 3, timeout=180, message="an epoch of each job")
        assert recorder.devices == {"two": {2}, "one-a": {1}, "one-b": {1}}, "each worker sees its own devices"
        executor.cancel("one-a")
        wait_until(lambda: "one-a" in recorder.ends and executor.free_slots == 1, timeout=60, message="one slot free")
        with pytest.raises(Busy) as busy:
            executor.submit(_job("two-more", 2))
        assert str(busy.value) == ("node busy: the job needs free slots on 2 devices, 1 of 4 slot(s) are free; "
                                   "try another node or later")
        assert executor.submit(_job("one-c", 1)) and executor.free_slots == 0
    finally:
        executor.close()


# --- central: the scheduler matches the count --------------------------------------------------


@pytest.fixture
async def central(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", heartbeat_s=0.2, node_timeout_s=1.0)
    server = CentralServer(config)
    await server.start()
    yield server
    await server.stop()


async def test_the_scheduler_counts_devices_and_an_8_device_job_waits_saying_why(central):
    channel = grpc.aio.insecure_channel(central.grpc_address)
    jobs = job_pb2_grpc.JobServiceStub(channel)
    node = await FakeNode(central.grpc_address, name="four", slots=4,
                          devices=((common_pb2.DEVICE_CUDA, 16 << 30),) * 4).start()
    node.start_heartbeats(0.2)

    async def submit(job_id: str, devices: str, batch_size: int = 8):
        config = job_pb2.JobConfig(job_id=job_id, job_type=job_pb2.JOB_TYPE_TRAINING, epochs=1, batch_size=batch_size,
                                   dataset_uri="builtin://iris", hyperparameters={"devices": devices})
        return await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config))

    async def status(job_id: str):
        return (await jobs.GetJobStatus(job_pb2.GetJobStatusRequest(job_id=job_id))).status

    try:
        for job_id, devices in (("two", "2"), ("one-a", "1"), ("one-b", "1"), ("one-c", "1"), ("eight", "8")):
            await submit(job_id, devices)
        await eventually(lambda: len(node.assignments) == 3, timeout=20, message="4 slots: 2 + 1 + 1")
        sent = {a.job_id: a.config.hyperparameters["devices"] for a in node.assignments}
        assert sent == {"two": "2", "one-a": "1", "one-b": "1"}
        assert (await status("one-c")).waiting_reason == "all slots of the nodes that fit it are busy"
        assert (await status("eight")).waiting_reason == (
            "needs 8 devices on one node; the online nodes that fit it have at most 4")
        await node.complete("two")
        await eventually(lambda: len(node.assignments) == 4, timeout=20, message="the freed slots take one-c")
        assert node.assignments[3].job_id == "one-c"
        assert (await status("eight")).state == "queued"
        assigned = [e for e in await _events(central) if isinstance(e, JobAssigned)]
        assert {e.job_id: e.devices for e in assigned} == {"two": 2, "one-a": 1, "one-b": 1, "one-c": 1}

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit("three", "3")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == ("config.batch_size 8 must divide by the number of devices (3): the "
                                           "global batch is split evenly over them; use 6 or 9")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit("lots", "many")
        assert refused.value.details() == ('config.hyperparameters.devices must be a whole number 1..1024 or "all" '
                                           "(got 'many')")
    finally:
        await node.stop()
        await channel.close()


async def _events(central) -> list:
    out = []
    async for msg in central.bus.read(1):
        out.append(msg.decode())
    return out


# --- the events and the read model -------------------------------------------------------------


def test_a_job_assigned_of_before_devices_decodes_as_one_device():
    old = b'{"type":"JobAssigned","job_id":"j","node_id":"n","attempt":1,' \
          b'"event_id":"e","occurred_at":"2026-01-01T00:00:00Z","schema_version":1}'
    assert decode(old).devices == 1


def test_duckdb_keeps_each_attempts_device_count(tmp_path):
    events = [
        JobSubmitted(job_id="j", spec=JobSpec(epochs=2, hyperparameters={"devices": "all"})),
        JobAssigned(job_id="j", node_id="big", attempt=1, devices=4),
        JobRequeued(job_id="j", reason="node lost", next_attempt=2),
        JobAssigned(job_id="j", node_id="small", attempt=2, devices=2),
    ]
    messages = [StoredMessage(seq, subject_for(e), encode(e), {}, 1_700_000_000_000_000_000 + seq)
                for seq, e in enumerate(events, start=1)]
    projection = Projection(tmp_path / "p.duckdb")
    try:
        projection.apply(EVENTS_STREAM, messages)
        assert projection.query("SELECT attempt, node_id, devices FROM assignments ORDER BY attempt").rows == [
            [1, "big", 4], [2, "small", 2]]
        assert projection.query("SELECT attempt, devices FROM jobs").rows == [[2, 2]]
    finally:
        projection.close()


@pytest.mark.timeout(600)  # a process of its own: JAX, compiling on a loaded machine
def test_the_scaling_bench_runs_in_one_command_on_2_forced_cpu_devices():
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    tiny = ["--features", "8", "--hidden", "8", "--batch", "16", "--steps", "2", "--epochs", "1", "--repeats", "1"]
    done = subprocess.run([sys.executable, str(ROOT / "bench/multigpu_bench.py"), *tiny], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = out["samples_per_s"]["1"], out["samples_per_s"]["2"]
    assert one > 0 and two > 0 and out["efficiency"] == round(two / (2 * one), 3)
    assert (out["model"], out["global_batch"], out["dtype"]) == ("8-8-10", 16, "bfloat16")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cyxwiz_submit_devices_2_trains_on_2_devices_of_a_4_device_node(tmp_path):
    """The whole path as processes: a node that sees 4 CPU devices has 4 slots, the CLI's
    --devices 2 reaches its trainer, and the attempt's count is in SQL."""
    config = StackConfig(home=tmp_path / "home", grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                         terminal_port=0, fresh_nats=True, extra_env={"XLA_FLAGS": FOUR_CPUS})
    with Stack(config) as stack:
        with Client(stack.grpc) as client:
            [node] = client.nodes()
        assert (len(node.devices), node.slots) == (4, 4)
        done = subprocess.run([sys.executable, "-m", "central", "submit", "-d", "builtin://iris", "-m", "mlp", "-e", "2",
                               "-b", "8", "--devices", "2", "--follow", "--central", stack.grpc],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        rows = wait_until(lambda: rest_sql(stack.rest, "SELECT state, devices FROM jobs")["rows"] == [["completed", 2]]
                          and rest_sql(stack.rest, "SELECT attempt, devices FROM assignments")["rows"], timeout=30,
                          message="the completed job in SQL")
        assert rows == [[1, 2]]
        refused = subprocess.run([sys.executable, "-m", "central", "submit", "-d", "builtin://iris", "-b", "8",
                                  "--devices", "3", "--central", stack.grpc], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "config.batch_size 8 must divide by the number of devices (3)" in refused.stderr
        assert "Traceback" not in refused.stderr
