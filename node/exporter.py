"""The node's Prometheus metrics on its own HTTP port (``--metrics-port``, default 8083).

    cyxwiz_node_info{node_id, name}                 1, to join the others with central's names
    cyxwiz_node_slots                               jobs the node runs at once
    cyxwiz_node_active_jobs                         jobs running now
    cyxwiz_node_samples_per_second                  training samples/s of the running jobs, summed
    cyxwiz_node_job_samples_per_second{job_id}      each running job's, from its last epoch
    cyxwiz_node_epochs_total                        epochs reported since the node started
    cyxwiz_node_jobs_finished_total{outcome}        completed, failed, cancelled
    cyxwiz_node_cpu_utilization_ratio               CPU use (0..1), the figure of the last heartbeat
    cyxwiz_node_memory_utilization_ratio            RAM use (0..1), the same sample
    cyxwiz_node_memory_used_bytes                   RAM in use, the same sample
    cyxwiz_node_load_sample_timestamp_seconds       when that sample was taken
    cyxwiz_node_gpu_utilization_ratio{gpu, name}    per GPU, from NVML when scraped
    cyxwiz_node_gpu_memory_used_bytes{gpu, name}
    cyxwiz_node_gpu_memory_total_bytes{gpu, name}
    grpc_server_handled_total{...}                  the node's gRPC calls by method and code
    process_*                                       the node process's CPU, memory, file descriptors

The GPU series exist only where NVML answers (package ``nvidia-ml-py`` and a driver): a
node without them reports no GPU figures rather than zeros. Each node has its own
registry, so several nodes in one process (tests) do not mix.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from node.config import ConfigError
from node.metrics import GpuReading, MetricsHistory, gpu_readings
from node.serving.http_api import start_http
from node.throughput import Throughput
from protos.call_metrics import grpc_handled_counter

__all__ = ["NodeCollector", "NodeExporter"]


class NodeCollector:
    """Reads the node's figures when scraped."""

    def __init__(
        self, *, node_id: Callable[[], str], name: str, slots: int, active_jobs: Callable[[], list[str]],
        load: MetricsHistory, throughput: Throughput, gpus: Callable[[], list[GpuReading]] = gpu_readings,
    ) -> None:
        self.node_id, self.name, self.slots = node_id, name, slots
        self.active_jobs, self.load, self.throughput, self.gpus = active_jobs, load, throughput, gpus

    def collect(self):
        info = GaugeMetricFamily("cyxwiz_node_info", "This node's id and name", labels=["node_id", "name"])
        info.add_metric([self.node_id() or "", self.name], 1)
        yield info
        yield GaugeMetricFamily("cyxwiz_node_slots", "Jobs the node runs at once", value=self.slots)
        yield GaugeMetricFamily("cyxwiz_node_active_jobs", "Jobs running on the node", value=len(self.active_jobs()))
        yield from self._training()
        yield from self._load()
        yield from self._gpus()

    def _training(self):
        snap = self.throughput.snapshot()
        yield GaugeMetricFamily("cyxwiz_node_samples_per_second",
                                "Training samples/s of the running jobs, from their last epochs, summed",
                                value=sum(snap.samples_per_s.values()))
        per_job = GaugeMetricFamily("cyxwiz_node_job_samples_per_second",
                                    "Training samples/s of a running job, from its last epoch", labels=["job_id"])
        for job_id, rate in sorted(snap.samples_per_s.items()):
            per_job.add_metric([job_id], rate)
        yield per_job
        yield CounterMetricFamily("cyxwiz_node_epochs", "Epochs reported since the node started", value=snap.epochs)
        finished = CounterMetricFamily("cyxwiz_node_jobs_finished", "Jobs that ended on this node, by outcome",
                                       labels=["outcome"])
        for outcome in ("completed", "failed", "cancelled"):
            finished.add_metric([outcome], snap.finished.get(outcome, 0))
        yield finished

    def _load(self):
        sample = self.load.latest()
        if sample is None:
            return
        yield GaugeMetricFamily("cyxwiz_node_cpu_utilization_ratio", "CPU use (0..1) at the last heartbeat's sample",
                                value=sample.cpu)
        yield GaugeMetricFamily("cyxwiz_node_memory_utilization_ratio", "RAM use (0..1) at the last sample",
                                value=sample.memory)
        yield GaugeMetricFamily("cyxwiz_node_memory_used_bytes", "RAM in use at the last sample",
                                value=sample.ram_used_bytes)
        yield GaugeMetricFamily("cyxwiz_node_load_sample_timestamp_seconds", "When the last load sample was taken",
                                value=sample.timestamp)

    def _gpus(self):
        readings = self.gpus()
        if not readings:
            return
        labels = ["gpu", "name"]
        util = GaugeMetricFamily("cyxwiz_node_gpu_utilization_ratio", "GPU use (0..1), from NVML", labels=labels)
        used = GaugeMetricFamily("cyxwiz_node_gpu_memory_used_bytes", "GPU memory in use, from NVML", labels=labels)
        total = GaugeMetricFamily("cyxwiz_node_gpu_memory_total_bytes", "GPU memory, from NVML", labels=labels)
        for g in readings:
            key = [str(g.index), g.name]
            util.add_metric(key, g.utilization)
            used.add_metric(key, g.memory_used_bytes)
            total.add_metric(key, g.memory_total_bytes)
        yield from (util, used, total)


class NodeExporter:
    """The node's registry and the HTTP port that serves it at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.grpc_handled = grpc_handled_counter(self.registry)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    def add(self, collector: NodeCollector) -> None:
        self.registry.register(collector)

    async def start(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = any free port); the port bound."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self.registry))
        try:
            self._runner, self.port = await start_http(app, host, port)
        except OSError as exc:
            raise ConfigError(f"--metrics-port / CYXWIZ_METRICS_PORT: cannot listen on {host}:{port} "
                              f"({exc.strerror or exc}); choose another port (0 = any free)") from exc
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
