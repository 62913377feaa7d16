"""A fake central for node tests: a real grpc.aio server implementing central's half of
NodeService (RegisterNode, Heartbeat, ReportProgress, ReportCompletion), recording what
it receives. Its ``Record`` outlives the server, so a test can stop central and start
it again on the same port with the same memory.
"""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from protos import common_pb2, job_pb2, node_pb2, node_pb2_grpc
from protos.convert import bearer_token, status_error


@dataclass
class Record:
    node_token: str | None = None
    sessions: dict[str, str] = field(default_factory=dict)  # session token -> node id
    registrations: list[node_pb2.RegisterNodeRequest] = field(default_factory=list)
    heartbeats: list[node_pb2.HeartbeatRequest] = field(default_factory=list)
    progress: list[node_pb2.ReportProgressRequest] = field(default_factory=list)
    completions: list[node_pb2.ReportCompletionRequest] = field(default_factory=list)
    to_cancel: set[str] = field(default_factory=set)  # sent once in jobs_to_cancel
    cancel_sent_at: dict[str, float] = field(default_factory=dict)
    stop_jobs: set[str] = field(default_factory=set)  # continue_job = false on their progress
    forget_next_beat: bool = False

    @property
    def token(self) -> str:
        """The latest session token handed out."""
        return list(self.sessions)[-1]

    @property
    def node_id(self) -> str:
        return self.sessions[self.token]

    def progress_of(self, job_id: str, attempt: int | None = None) -> list[node_pb2.ReportProgressRequest]:
        return [p for p in self.progress if p.job_id == job_id and (attempt is None or p.attempt == attempt)]

    def completion_of(self, job_id: str, attempt: int | None = None) -> node_pb2.ReportCompletionRequest | None:
        found = [c for c in self.completions if c.job_id == job_id and (attempt is None or c.attempt == attempt)]
        return found[-1] if found else None


class FakeCentral(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, record: Record | None = None) -> None:
        self.record = record or Record()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> FakeCentral:
        self.server = grpc.aio.server()
        node_pb2_grpc.add_NodeServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)

    async def _session(self, context) -> str:
        token = bearer_token(context.invocation_metadata())
        if token not in self.record.sessions:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown session token: register first")
        return self.record.sessions[token]

    async def RegisterNode(self, request, context):
        rec = self.record
        if rec.node_token is not None and request.authentication_token != rec.node_token:
            return node_pb2.RegisterNodeResponse(
                status=common_pb2.STATUS_FAILED, error=status_error(401, "wrong node token")
            )
        rec.registrations.append(request)
        node_id = request.info.node_id or f"node-{uuid.uuid4().hex[:8]}"
        token = uuid.uuid4().hex
        rec.sessions[token] = node_id
        return node_pb2.RegisterNodeResponse(status=common_pb2.STATUS_SUCCESS, node_id=node_id, session_token=token)

    async def Heartbeat(self, request, context):
        await self._session(context)
        rec = self.record
        rec.heartbeats.append(request)
        if rec.forget_next_beat:
            rec.forget_next_beat = False
            rec.sessions.clear()
            return node_pb2.HeartbeatResponse(status=common_pb2.STATUS_SUCCESS, keep_alive=False)
        cancel = sorted(rec.to_cancel)
        rec.to_cancel.clear()
        now = time.monotonic()
        for job_id in cancel:
            rec.cancel_sent_at[job_id] = now
        return node_pb2.HeartbeatResponse(status=common_pb2.STATUS_SUCCESS, keep_alive=True, jobs_to_cancel=cancel)

    async def ReportProgress(self, request, context):
        await self._session(context)
        self.record.progress.append(request)
        keep_going = request.job_id not in self.record.stop_jobs
        return node_pb2.ReportProgressResponse(status=common_pb2.STATUS_SUCCESS, continue_job=keep_going)

    async def ReportCompletion(self, request, context):
        await self._session(context)
        self.record.completions.append(request)
        return node_pb2.ReportCompletionResponse(status=common_pb2.STATUS_SUCCESS)


def job_config(job_id: str, /, **fields) -> job_pb2.JobConfig:
    """A small, fast training job on builtin://digits unless fields say otherwise."""
    values = dict(
        job_id=job_id, job_type=job_pb2.JOB_TYPE_TRAINING, model_definition='{"type": "mlp", "hidden": [32]}',
        hyperparameters={"learning_rate": "0.003", "seed": "0", "steps_per_chunk": "13"}, dataset_uri="builtin://digits",
        batch_size=64, epochs=2, attempt=1,
    )
    values.update(fields)
    return job_pb2.JobConfig(**values)


@asynccontextmanager
async def running_node(central: FakeCentral, nats_url: str, home: Path, *, register: bool = True, **settings):
    """A registered node (in this process) talking to ``central``; stopped on exit."""
    from node.agent import Backoff
    from node.config import NodeConfig
    from node.main import Node

    values = dict(
        central=central.address, nats=nats_url, node_port=0, deploy_port=0, terminal_port=0,
        bind_host="127.0.0.1", advertise_host="127.0.0.1", heartbeat_s=0.2, slots=2, home=home,
        data_roots=(home,), name="test-node",
    )
    values.update(settings)
    node = Node(NodeConfig(**values), backoff=Backoff(first=0.05, cap=0.3))
    await node.start()
    try:
        if register:
            await node.register()
        yield node
    finally:
        await node.stop(grace=2.0)


def node_stub(node) -> tuple[grpc.aio.Channel, node_pb2_grpc.NodeServiceStub]:
    channel = grpc.aio.insecure_channel(node.endpoint("node"))
    return channel, node_pb2_grpc.NodeServiceStub(channel)


async def assign(node, record: Record, job: job_pb2.JobConfig, *, token: str | None = None) -> node_pb2.AssignJobResponse:
    """AssignJob on ``node`` as central would send it."""
    channel, stub = node_stub(node)
    async with channel:
        return await stub.AssignJob(
            node_pb2.AssignJobRequest(
                node_id=record.node_id, job=job, authorization_token=record.token if token is None else token
            ),
            timeout=10,
        )
