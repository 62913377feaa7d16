"""Several central processes of one host on one gRPC port (``--share-port``, SO_REUSEPORT):
the kernel spreads connections over them, each answers what it gets, a job submitted
to either is placed by the lease holder; a central that did not ask to share the port
is refused it with an error that says how."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request

import grpc
import pytest

from cluster_harness import WorkingNode, start_central_process, stop_process, submit_retrying
from protos import job_pb2, job_pb2_grpc
from waiting import eventually

pytestmark = pytest.mark.slow


def listed_calls(rest: str) -> float:
    """How many ListJobs calls this central process answered (its Prometheus counter)."""
    with urllib.request.urlopen(rest + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r'grpc_server_handled_total\{[^}]*grpc_method="ListJobs"[^}]*\} (\S+)', text))


async def test_two_centrals_share_a_port_and_both_answer(nats_server, tmp_path):
    a, info_a = await start_central_process(nats_server.url, tmp_path / "a", "--share-port", "--heartbeat", "0.5",
                                            "--node-timeout", "20")
    port = info_a["grpc"].rsplit(":", 1)[1]
    b, info_b = await start_central_process(nats_server.url, tmp_path / "b", "--share-port", "--grpc-port", port,
                                            "--heartbeat", "0.5", "--node-timeout", "20")
    channels = [grpc.aio.insecure_channel(info_a["grpc"], options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(24)]
    node = None
    try:
        assert info_b["grpc"] == info_a["grpc"]
        for channel in channels:  # 24 connections: the chance that one process gets them all is 2 in 16 million
            await job_pb2_grpc.JobServiceStub(channel).ListJobs(job_pb2.ListJobsRequest(), timeout=30)
        counts = [listed_calls(info_a["rest"]), listed_calls(info_b["rest"])]
        assert sum(counts) == 24 and min(counts) >= 1, counts

        node = await WorkingNode(info_a["grpc"], node_id="shared-node", slots=4).start()
        node.start_heartbeats(0.5)
        stubs = [job_pb2_grpc.JobServiceStub(c) for c in channels]
        for i, stub in enumerate(stubs[:8]):
            assert await submit_retrying([stub], f"shared-{i}", timeout=60)
        await eventually(lambda: {f"shared-{i}" for i in range(8)} <= set(node.done), timeout=60,
                         message="every job, whichever central took it, is placed and completes")

        taken = subprocess.run(
            [sys.executable, "-m", "central", "central", "--nats", nats_server.url, "--home", str(tmp_path / "c"),
             "--grpc-port", port, "--rest-port", "0"], capture_output=True, text=True, timeout=120)
        assert taken.returncode != 0
        assert "the port is taken" in taken.stderr and "--share-port" in taken.stderr, taken.stderr[-2000:]
        assert "Traceback" not in taken.stderr
    finally:
        if node is not None:
            await node.stop()
        for channel in channels:
            await channel.close()
        stop_process(b)
        stop_process(a)
