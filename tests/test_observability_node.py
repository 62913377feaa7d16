"""The node's Prometheus port, health checking and reflection on its three gRPC ports,
against a real node (in this process, its jobs in worker processes) and a fake central."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from fake_central import FakeCentral, assign, job_config, node_stub, running_node
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waiting import eventually

from metrics_text import samples, total, value
from node.config import parse_config
from node.main import banner
from node.metrics import gpu_readings
from protos import node_pb2
from protos.convert import bearer_metadata
from test_observability_central import NOT_SERVING, SERVING, health, reflected_services

pytestmark = pytest.mark.timeout(120)

LONG = "synthetic://classification?n=2000&features=16&classes=4"
STANDARD = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
SERVING_SERVICES = {"cyxwiz.protocol.DeploymentService", "cyxwiz.protocol.InferenceService",
                    "inference.GRPCInferenceService"}


@pytest.fixture
async def central():
    fake = await FakeCentral().start()
    yield fake
    await fake.stop()


async def scrape(node) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(node.metrics_url) as response:
            assert response.status == 200
            return samples(await response.text())


def test_metrics_port_flag_variable_and_default() -> None:
    assert parse_config([], env={}).prometheus_port == 8083
    assert parse_config(["--deploy-port", "0"], env={}).prometheus_port == 0  # many nodes on one machine
    assert parse_config([], env={"CYXWIZ_METRICS_PORT": "9300"}).prometheus_port == 9300
    assert parse_config(["--metrics-port", "0"], env={"CYXWIZ_METRICS_PORT": "9300"}).prometheus_port == 0
    with pytest.raises(ValueError, match=r"--metrics-port: port must be 0..65535 \(got 70000\)"):
        parse_config(["--metrics-port", "70000"], env={})
    with pytest.raises(ValueError, match=r"--metrics-port: expected an integer \(got 'x'\)"):
        parse_config(["--metrics-port", "x"], env={})


async def test_metrics_port_serves_jobs_samples_and_load(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path, slots=2) as node:
        assert f"  metrics:       {node.metrics_url} (Prometheus)" in banner(node)
        idle = await scrape(node)
        assert value(idle, "cyxwiz_node_info", node_id=node.node_id, name="test-node") == 1
        assert value(idle, "cyxwiz_node_slots") == 2
        assert value(idle, "cyxwiz_node_active_jobs") == 0
        assert value(idle, "process_resident_memory_bytes") > 0
        assert value(idle, "cyxwiz_node_samples_per_second") == 0
        sample = node.metrics.latest()
        assert value(idle, "cyxwiz_node_memory_used_bytes") == sample.ram_used_bytes
        assert 0 <= value(idle, "cyxwiz_node_cpu_utilization_ratio") <= 1
        assert 0 < value(idle, "cyxwiz_node_memory_utilization_ratio") <= 1
        gpu_series = {labels for name, labels in idle if name == "cyxwiz_node_gpu_utilization_ratio"}
        assert gpu_series == {frozenset({("gpu", str(g.index)), ("name", g.name)}) for g in gpu_readings()}, \
            "one series per GPU NVML answers for; none (not zeros) without it"

        rec = central.record
        assert (await assign(node, rec, job_config("j1", epochs=100_000, dataset_uri=LONG))).accepted
        await eventually(lambda: len(rec.progress_of("j1")) >= 2, timeout=60, message="j1 reports epochs")

        async def training():
            now = await scrape(node)
            reported = rec.progress_of("j1")[-1].samples_per_second
            return (value(now, "cyxwiz_node_active_jobs") == 1
                    and value(now, "cyxwiz_node_job_samples_per_second", job_id="j1") == pytest.approx(reported)
                    and value(now, "cyxwiz_node_samples_per_second") == pytest.approx(reported) and reported > 0
                    and value(now, "cyxwiz_node_epochs_total") >= 2)
        await eventually(training, timeout=10, message="the node reports what its worker measured")

        rec.to_cancel.add("j1")
        await eventually(lambda: rec.completion_of("j1"), timeout=20, message="j1 cancelled")

        async def ended():
            now = await scrape(node)
            return (value(now, "cyxwiz_node_active_jobs") == 0 and value(now, "cyxwiz_node_samples_per_second") == 0
                    and total(now, "cyxwiz_node_job_samples_per_second") == 0
                    and value(now, "cyxwiz_node_jobs_finished_total", outcome="cancelled") == 1)
        await eventually(ended, timeout=10, message="a job that ended trains no samples")


async def test_node_counts_its_grpc_calls_by_code(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        channel, stub = node_stub(node)
        async with channel:
            await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id=node.node_id),
                                      metadata=bearer_metadata(central.record.token))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id=node.node_id))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        now = await scrape(node)
        labels = dict(grpc_type="unary", grpc_service="cyxwiz.protocol.NodeService", grpc_method="GetNodeMetrics")
        assert value(now, "grpc_server_handled_total", grpc_code="OK", **labels) == 1
        assert value(now, "grpc_server_handled_total", grpc_code="UNAUTHENTICATED", **labels) == 1


async def test_health_and_reflection_on_every_node_port(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path, register=False) as node:
        node_port, deploy, terminal = (node.endpoint(name) for name in ("node", "deploy", "terminal"))
        assert await health(node_port) == NOT_SERVING, "50054 takes work only once registered"
        assert await health(node_port, "cyxwiz.protocol.NodeService") == NOT_SERVING
        assert await health(node_port, "cyxwiz.protocol.DeploymentService") == SERVING
        assert await health(deploy) == SERVING
        assert await health(deploy, "inference.GRPCInferenceService") == SERVING
        assert await health(terminal) == SERVING
        assert await health(terminal, "cyxwiz.protocol.TerminalService") == NOT_SERVING, "terminal is off"

        assert await asyncio.to_thread(reflected_services, node_port) == {
            "cyxwiz.protocol.NodeService", *SERVING_SERVICES, *STANDARD}
        assert await asyncio.to_thread(reflected_services, deploy) == {*SERVING_SERVICES, *STANDARD}
        assert await asyncio.to_thread(reflected_services, terminal) == {"cyxwiz.protocol.TerminalService", *STANDARD}

        await node.register()
        assert await health(node_port) == SERVING
        assert await health(node_port, "cyxwiz.protocol.NodeService") == SERVING


async def test_a_node_with_its_terminal_on_says_so(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path, terminal=True) as node:
        assert await health(node.endpoint("terminal"), "cyxwiz.protocol.TerminalService") == SERVING


async def test_a_taken_metrics_port_is_a_config_error_naming_the_flag():
    import socket

    from node.config import ConfigError
    from node.exporter import NodeExporter

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = NodeExporter()
        with pytest.raises(ConfigError, match=rf"^--metrics-port / CYXWIZ_METRICS_PORT: cannot listen on 127.0.0.1:{port} "
                                              r"\(.+\); choose another port \(0 = any free\)$"):
            await exporter.start("127.0.0.1", port)
        await exporter.stop()
