"""The node against a fake central (a real gRPC server) and a real NATS: registration,
heartbeats, AssignJob -> real training -> reports, cancellation, resume, retries."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fake_central import FakeCentral, Record, assign, job_config, running_node
from waiting import eventually

from bus import EventBus, parse_object_uri
from events import JobLog, JobPhase, decode
from node.agent import RegistrationRefused
from node.datasets import load_dataset
from protos import common_pb2

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def central():
    fake = await FakeCentral().start()
    yield fake
    await fake.stop()


async def test_registers_with_devices_and_heartbeats_active_jobs(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path, slots=3) as node:
        rec = central.record
        info = rec.registrations[0].info
        assert info.node_id == node.node_id == rec.node_id
        assert info.devices[0].device_type == common_pb2.DEVICE_CPU and info.devices[0].memory_total > 0
        assert info.cpu_cores >= 1 and info.ram_total > 0 and info.slots == 3
        assert (info.ip_address, info.port) == ("127.0.0.1", node.ports["node"])
        await eventually(lambda: len(rec.heartbeats) >= 2, message="heartbeats")
        beat = rec.heartbeats[-1]
        assert beat.node_id == node.node_id and beat.free_slots == 3 and list(beat.active_jobs) == []
        assert 0.0 <= beat.metrics.cpu_usage <= 1.0 and 0.0 < beat.metrics.memory_usage <= 1.0


async def test_digits_job_reports_every_epoch_and_a_model_whose_hash_matches(central, nats_server, tmp_path):
    watcher = await EventBus.connect(nats_server.url, setup=False)
    phases: list[JobPhase] = []

    async def on_phase(msg) -> None:
        phases.append(decode(msg.data))

    await watcher.nc.subscribe("telemetry.job.j-digits", cb=on_phase)
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        hyper = {"learning_rate": "0.003", "seed": "0", "steps_per_chunk": "13", "checkpoint_interval_s": "0"}
        answer = await assign(node, rec, job_config("j-digits", epochs=3, hyperparameters=hyper))
        assert answer.accepted and answer.status == common_pb2.STATUS_SUCCESS
        done = await eventually(lambda: rec.completion_of("j-digits"), timeout=60, message="completion")
        progress = rec.progress_of("j-digits")
        assert [p.status.current_epoch for p in progress] == [1, 2, 3]
        for p in progress:
            assert p.node_id == node.node_id and p.attempt == 1
            assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(p.current_metrics)
            assert p.epoch_seconds > 0 and p.samples_per_second > 0
            # a checkpoint still waiting when a newer one is taken is dropped: the last one never is
            assert p.checkpoint_uri in ("", f"nats://cyxwiz-checkpoints/j-digits/attempt-1/epoch-{p.status.current_epoch}")
        assert progress[-1].checkpoint_uri.endswith("/epoch-3")
        assert done.result.status == common_pb2.STATUS_COMPLETED
        assert done.result.final_metrics["val_accuracy"] > 0.8
        assert done.result.model_weights_uri == "nats://cyxwiz-models/j-digits"
        bus = await EventBus.connect(nats_server.url, setup=False)
        try:
            model = await bus.get_object(*parse_object_uri(done.result.model_weights_uri))
            checkpoint = await bus.get_object(*parse_object_uri(progress[-1].checkpoint_uri))
        finally:
            await bus.close()
        assert hashlib.sha256(model).hexdigest() == done.result.model_weights_hash
        assert len(model) == done.result.model_size and len(checkpoint) > 0
        await eventually(lambda: any(isinstance(e, JobLog) and e.message.startswith("completed in ") for e in phases),
                         message="the last log line")
        await watcher.close()
        only_phases = [p for p in phases if isinstance(p, JobPhase)]
        assert [p.phase for p in only_phases][:3] == ["loading", "compiling", "training"]
        assert all((p.job_id, p.node_id, p.attempt) == ("j-digits", node.node_id, 1) for p in phases)
        lines = [e.message for e in phases if isinstance(e, JobLog)]
        assert lines[0].startswith("loaded builtin://digits: 1,797 samples of shape [8, 8, 1], 10 classes (")
        assert lines[1].startswith("compiled in ") and lines[1].endswith(" s")
        assert [line.split(":")[0] for line in lines[2:5]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
        assert "val_accuracy" in lines[2] and lines[-1].startswith("completed in ")
        in_epoch = [p for p in only_phases if p.steps]
        assert in_epoch, "the first chunk boundary of a job is always reported"
        for p in in_epoch:  # the step within the epoch, at most four a second
            assert p.phase == "training" and 1 <= p.epoch <= 3 and 0 < p.step < p.steps


async def test_nats_dataset_comes_from_the_dataset_bucket(central, nats_server, tmp_path):
    digits = load_dataset("builtin://digits", data_roots=[])
    buffer = io.BytesIO()
    np.savez(buffer, x=digits.x, y=digits.y)
    bus = await EventBus.connect(nats_server.url)
    try:
        await bus.put_object("cyxwiz-datasets", "digits.npz", buffer.getvalue())
    finally:
        await bus.close()
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        assert (await assign(node, rec, job_config("j-nats", dataset_uri="nats://digits.npz"))).accepted
        assert (await assign(node, rec, job_config("j-none", dataset_uri="nats://none.npz"))).accepted
        done = await eventually(lambda: rec.completion_of("j-nats"), timeout=60)
        assert done.result.status == common_pb2.STATUS_COMPLETED
        missing = await eventually(lambda: rec.completion_of("j-none"), timeout=30)
        assert missing.result.status == common_pb2.STATUS_FAILED and missing.error.code == 400
        assert "no object 'none.npz' in bucket cyxwiz-datasets" in missing.error.message
        assert "cyxwiz datasets put" in missing.error.message


async def test_job_resumed_from_a_checkpoint_ends_with_the_same_model(central, nats_server, tmp_path):
    hyper = {"learning_rate": "0.003", "seed": "0", "steps_per_chunk": "13", "checkpoint_interval_s": "0"}
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        assert (await assign(node, rec, job_config("j-resume", epochs=4, hyperparameters=hyper))).accepted
        first = await eventually(lambda: rec.completion_of("j-resume", 1), timeout=60)
        # the earliest checkpoint reported (one still waiting when a newer one came was dropped)
        stored = [p for p in rec.progress_of("j-resume", 1) if p.checkpoint_uri and p.status.current_epoch < 4]
        assert stored, "with checkpoint_interval_s 0, some epoch before the last has its checkpoint"
        epoch = stored[0].status.current_epoch
        requeued = job_config(
            "j-resume", epochs=4, attempt=2, resume_from_epoch=epoch, hyperparameters=hyper,
            resume_checkpoint_uri=f"nats://cyxwiz-checkpoints/j-resume/attempt-1/epoch-{epoch}",
        )
        assert (await assign(node, rec, requeued)).accepted
        second = await eventually(lambda: rec.completion_of("j-resume", 2), timeout=60)
        assert [p.status.current_epoch for p in rec.progress_of("j-resume", 2)] == list(range(epoch + 1, 5))
        assert second.result.status == common_pb2.STATUS_COMPLETED
        assert second.result.model_weights_hash == first.result.model_weights_hash


async def test_cancel_through_heartbeat_stops_the_job_within_a_second(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        long_job = job_config("j-cancel", epochs=200, dataset_uri="synthetic://classification?n=20000&features=32&classes=4")
        assert (await assign(node, rec, long_job)).accepted
        await eventually(lambda: rec.progress_of("j-cancel"), timeout=30, message="first epoch")
        rec.to_cancel.add("j-cancel")
        done = await eventually(lambda: rec.completion_of("j-cancel"), timeout=10)
        arrived = time.monotonic()
        assert done.result.status == common_pb2.STATUS_CANCELLED
        assert arrived - rec.cancel_sent_at["j-cancel"] < 1.0
        assert node.executor.active_jobs() == []


async def test_continue_job_false_stops_the_job(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        rec.stop_jobs.add("j-stop")
        long_job = job_config("j-stop", epochs=200, dataset_uri="synthetic://classification?n=20000&features=32&classes=4")
        assert (await assign(node, rec, long_job)).accepted
        done = await eventually(lambda: rec.completion_of("j-stop"), timeout=30)
        assert done.result.status == common_pb2.STATUS_CANCELLED
        # it stops at the first chunk after the answer; epochs take ~35 ms here, so a loaded
        # machine that delays the reports sees a few more of them, never most of the 200
        assert len(rec.progress_of("j-stop")) < 40


async def test_crashing_job_fails_alone_and_the_node_serves_the_next(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        bad = job_config("j-bad", hyperparameters={"optimizer": "adagrad"})
        assert (await assign(node, rec, bad)).accepted
        failed = await eventually(lambda: rec.completion_of("j-bad"), timeout=30)
        assert failed.result.status == common_pb2.STATUS_FAILED
        assert failed.error.code == 400 and "optimizer" in failed.error.message and not failed.retryable
        assert (await assign(node, rec, job_config("j-good"))).accepted
        good = await eventually(lambda: rec.completion_of("j-good"), timeout=60)
        assert good.result.status == common_pb2.STATUS_COMPLETED


@pytest.mark.parametrize("forgets", [False, True], ids=["remembers", "restarts-empty"])
async def test_reports_are_retried_while_central_is_down(central, nats_server, tmp_path, forgets):
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        await central.stop()  # first: a fast job could otherwise report its end before the stop
        assert (await assign(node, rec, job_config("j-retry", epochs=3))).accepted
        await eventually(lambda: not node.executor.active_jobs(), timeout=60, message="training ends")
        assert rec.completion_of("j-retry") is None
        if forgets:  # a central that lost its sessions: reports get UNAUTHENTICATED, the node registers again
            rec.sessions.clear()
        restarted = await FakeCentral(rec).start(central.port)
        try:
            done = await eventually(lambda: rec.completion_of("j-retry"), timeout=20, message="completion after restart")
            assert done.result.status == common_pb2.STATUS_COMPLETED
            epochs = [p.status.current_epoch for p in rec.progress_of("j-retry")]
            assert sorted(set(epochs)) == [1, 2, 3] and epochs == sorted(epochs)
            # a report may wait in gRPC for the channel (no retry counted) or be retried: either way none is lost
            # the node counts a report when central's answer is back, just after central recorded it
            await eventually(lambda: node.reporter.stats.completions_sent == 1, message="the node saw its answer")
            assert node.reporter.stats.dropped == 0
            assert len(rec.registrations) == (2 if forgets else 1)
        finally:
            await restarted.stop()


async def test_registration_waits_for_central_and_refusal_is_final(nats_server, tmp_path):
    probe = await FakeCentral(Record(node_token="operator-secret")).start()
    port = probe.port
    await probe.stop()
    async with running_node(probe, nats_server.url, tmp_path, register=False, node_token="wrong") as node:
        registering = asyncio.create_task(node.register())
        await eventually(lambda: node.agent.register_attempts >= 2, message="attempts while central is away")
        later = await FakeCentral(probe.record).start(port)
        try:
            with pytest.raises(RegistrationRefused, match="401"):
                await asyncio.wait_for(registering, 20)
        finally:
            await later.stop()
    async with running_node(probe, nats_server.url, tmp_path / "2", register=False, node_token="operator-secret") as node:
        registering = asyncio.create_task(node.register())
        later = await FakeCentral(probe.record).start(port)
        try:
            await asyncio.wait_for(registering, 20)
            assert node.agent.session_token == later.record.token
        finally:
            await later.stop()


async def test_registers_again_when_central_forgets_it(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        rec = central.record
        rec.forget_next_beat = True
        await eventually(lambda: len(rec.registrations) == 2, message="second registration")
        await eventually(lambda: node.agent.session_token == rec.token)
        assert (await assign(node, rec, job_config("j-after"))).accepted
        done = await eventually(lambda: rec.completion_of("j-after"), timeout=60)
        assert done.result.status == common_pb2.STATUS_COMPLETED


def test_python_m_node_writes_ready_file_and_stops_on_sigterm(tmp_path):
    async def scenario() -> None:
        central = await FakeCentral().start()
        ready = tmp_path / "ready.json"
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        process = subprocess.Popen(
            [sys.executable, "-m", "node", "--central", central.address, "--nats", "nats://127.0.0.1:1",
             "--node-port", "0", "--deploy-port", "0", "--terminal-port", "0", "--bind", "127.0.0.1",
             "--home", str(tmp_path), "--heartbeat", "0.2", "--ready-file", str(ready)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            info = await eventually(lambda: ready.exists() and json.loads(ready.read_text()), timeout=60)
            assert info["node_id"] == central.record.node_id and info["pid"] == process.pid
            assert info["node_service"].startswith("127.0.0.1:") and info["deploy"] and info["terminal"]
            process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 20)
            out = process.stdout.read().decode()
            assert code == 0, out
            assert "is ready" in out and info["node_service"] in out
        finally:
            if process.poll() is None:
                process.kill()
            await central.stop()

    asyncio.run(scenario())
