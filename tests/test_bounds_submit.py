"""Bounds at SubmitJob and RegisterNode against a real central: a model no node can train,
and free text over its limit, are refused with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import json

import grpc
import pytest

from central.server import CentralConfig, CentralServer
from protos import common_pb2, job_pb2, job_pb2_grpc, node_pb2, node_pb2_grpc


@pytest.fixture
async def central(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", heartbeat_s=5, node_timeout_s=60)
    server = CentralServer(config)
    await server.start()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        yield job_pb2_grpc.JobServiceStub(channel), node_pb2_grpc.NodeServiceStub(channel)
    await server.stop()


def job(model: dict | None = None, **fields) -> job_pb2.SubmitJobRequest:
    values = dict(job_type=1, epochs=2, batch_size=4, dataset_uri="builtin://iris",
                  model_definition=json.dumps(model) if model else "")
    values.update(fields)
    return job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(**values))


async def refused(call, request) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.details()


def node(memory: int, **fields) -> node_pb2.RegisterNodeRequest:
    device = common_pb2.DeviceCapabilities(device_type=common_pb2.DEVICE_CPU, device_name="cpu", memory_total=memory)
    info = node_pb2.NodeInfo(ip_address="127.0.0.1", port=1, slots=1, ram_total=memory, devices=[device])
    for name, value in fields.items():
        setattr(info, name, value)
    return node_pb2.RegisterNodeRequest(info=info)


async def test_a_huge_layer_or_ten_thousand_layers_are_refused_at_submit(central):
    jobs, _ = central
    assert await refused(jobs.SubmitJob, job({"type": "mlp", "hidden": [100_000_000]})) == (
        "config.model_definition.hidden[0] is 100,000,000 wide, at most 65,536 per layer")
    assert await refused(jobs.SubmitJob, job({"type": "mlp", "hidden": [8] * 10_000})) == (
        "config.model_definition has 10,001 layers, at most 256: use fewer layers")
    ok = await jobs.SubmitJob(job({"type": "mlp", "hidden": [64]}), timeout=10)
    assert ok.status == common_pb2.STATUS_SUCCESS and ok.job_id


async def test_the_model_must_fit_the_largest_online_node(central):
    jobs, nodes = central
    model = {"type": "mlp", "hidden": [10_000, 10_000]}  # 100 M parameters: 1.5 GiB with adam
    assert (await jobs.SubmitJob(job(model), timeout=10)).job_id  # no node online: the 64 GiB cap
    await nodes.RegisterNode(node(1 << 30), timeout=10)
    assert await refused(jobs.SubmitJob, job(model)) == (
        "config.model_definition needs at least 1.5 GiB to train (100,040,001 parameters with gradients and adam "
        "state in float32), over the largest online node's memory (1.0 GiB): use a smaller model")
    sgd = job(model, hyperparameters={"optimizer": "sgd"})  # 1.1 GiB: still over
    assert "with gradients and sgd state" in await refused(jobs.SubmitJob, sgd)
    await nodes.RegisterNode(node(4 << 30), timeout=10)
    assert (await jobs.SubmitJob(job(model), timeout=10)).job_id


async def test_free_text_over_its_limit_is_refused_not_cut(central):
    jobs, nodes = central
    assert await refused(jobs.SubmitJob, job(hyperparameters={"name": "n" * 300})) == (
        'config.hyperparameters["name"] is too long (300 characters, at most 256)')
    assert (await jobs.SubmitJob(job(hyperparameters={"name": "n" * 256}), timeout=10)).job_id
    assert await refused(nodes.RegisterNode, node(1 << 30, name="x" * 257)) == (
        "info.name is too long (257 characters, at most 256)")
    long_device = node(1 << 30)
    long_device.info.devices[0].device_name = "d" * 300
    assert await refused(nodes.RegisterNode, long_device) == (
        "info.devices[0].device_name is too long (300 characters, at most 256)")
    long_build = node(1 << 30)
    long_build.info.version.build = "b" * 65
    assert await refused(nodes.RegisterNode, long_build) == "info.version.build is too long (65 characters, at most 64)"


async def test_a_bad_uri_or_epochs_give_the_same_words_as_events_publish(central):
    jobs, _ = central
    assert await refused(jobs.SubmitJob, job(dataset_uri="ftp://x")) == (
        "config.dataset_uri 'ftp://x': scheme 'ftp' is not supported: use file://, builtin://, synthetic:// or nats://")
    assert await refused(jobs.SubmitJob, job(epochs=-1)) == "config.epochs must be 1..1000000 (got -1)"
