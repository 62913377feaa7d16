"""A fake compute node for central's tests and benchmarks: a real grpc.aio server on
port 0 implementing NodeService.AssignJob, which registers with central, heartbeats,
and reports progress and results when told to. It trains nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from protos import common_pb2, job_pb2, node_pb2, node_pb2_grpc
from protos.convert import bearer_metadata


@dataclass
class Assignment:
    job_id: str
    attempt: int
    config: job_pb2.JobConfig
    received_at: float = 0.0


class FakeNode(node_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        central: str | grpc.aio.Channel,
        *,
        name: str = "fake",
        node_id: str = "",
        slots: int = 1,
        refuse: int = 0,
        devices: tuple[tuple[int, int], ...] = ((common_pb2.DEVICE_CPU, 8 << 30),),
        node_token: str = "",
        region: str = "",
    ) -> None:
        self._channel = central if isinstance(central, grpc.aio.Channel) else None
        self._target = central if isinstance(central, str) else None
        self.name = name
        self.node_id = node_id
        self.slots = slots
        self.refuse = refuse  # an Error code to refuse every AssignJob with (429, 400), 0: accept
        self.devices = devices
        self.node_token = node_token
        self.region = region
        self.session_token = ""
        self.assignments: list[Assignment] = []
        self.reported: dict[tuple[str, int], int] = {}  # (job, attempt) -> epochs reported
        self.beats_ok = 0  # heartbeats central answered with keep_alive
        self.assigned = asyncio.Event()
        self.on_assign = None  # optional callback(Assignment)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._owns_channel = False
        self._beats: asyncio.Task | None = None

    # --- the server side: AssignJob ------------------------------------------------------

    async def AssignJob(self, request, context):
        if request.authorization_token != self.session_token:
            return node_pb2.AssignJobResponse(job_id=request.job.job_id, accepted=False,
                                              error=common_pb2.Error(code=401, message="wrong token"))
        if self.refuse:
            return node_pb2.AssignJobResponse(job_id=request.job.job_id, accepted=False,
                                              error=common_pb2.Error(code=self.refuse, message="refused"))
        a = Assignment(request.job.job_id, request.job.attempt, request.job, asyncio.get_running_loop().time())
        self.assignments.append(a)
        self.assigned.set()
        if self.on_assign is not None:
            self.on_assign(a)
        return node_pb2.AssignJobResponse(status=common_pb2.STATUS_SUCCESS, job_id=a.job_id, accepted=True)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, register: bool = True) -> "FakeNode":
        self._server = grpc.aio.server()
        node_pb2_grpc.add_NodeServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target)
            self._owns_channel = True
        self.stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self.status_stub = node_pb2_grpc.JobStatusServiceStub(self._channel)
        if register:
            await self.register()
        return self

    async def register(self) -> str:
        info = node_pb2.NodeInfo(node_id=self.node_id, name=self.name, ip_address="127.0.0.1", port=self.port,
                                 slots=self.slots, cpu_cores=2, ram_total=8 << 30, region=self.region)
        for kind, memory in self.devices:
            info.devices.append(common_pb2.DeviceCapabilities(device_type=kind, memory_total=memory))
        proof = self.metadata if self.session_token else None  # registering its own id again
        response = await self.stub.RegisterNode(
            node_pb2.RegisterNodeRequest(info=info, authentication_token=self.node_token), metadata=proof, timeout=10)
        self.node_id, self.session_token = response.node_id, response.session_token
        return self.node_id

    @property
    def metadata(self):
        return bearer_metadata(self.session_token)

    async def heartbeat(self, active_jobs: list[str] = (), status: node_pb2.NodeInfo | None = None
                        ) -> node_pb2.HeartbeatResponse:
        return await self.stub.Heartbeat(
            node_pb2.HeartbeatRequest(node_id=self.node_id, active_jobs=list(active_jobs), current_status=status),
            metadata=self.metadata, timeout=10, wait_for_ready=True)

    def start_heartbeats(self, interval: float) -> None:
        async def beat():
            while True:
                try:
                    response = await self.heartbeat()
                    self.beats_ok += response.keep_alive
                    if not response.keep_alive:
                        await self.register()
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(interval)

        self._beats = asyncio.create_task(beat())

    def stop_heartbeats(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            self._beats = None

    async def progress(self, job_id: str, epoch: int, *, attempt: int = 0, loss: float = 0.5,
                       checkpoint: str = "", cancelled: bool = False) -> node_pb2.ReportProgressResponse:
        status = job_pb2.JobStatus(job_id=job_id, current_epoch=epoch,
                                   status=common_pb2.STATUS_CANCELLED if cancelled else common_pb2.STATUS_IN_PROGRESS)
        key = (job_id, attempt or self._attempt(job_id))
        answer = await self.stub.ReportProgress(
            node_pb2.ReportProgressRequest(node_id=self.node_id, job_id=job_id, status=status, attempt=attempt,
                                           current_metrics={"loss": loss}, checkpoint_uri=checkpoint),
            metadata=self.metadata, timeout=10, wait_for_ready=True)
        self.reported[key] = max(self.reported.get(key, 0), epoch)  # once central took it: a failed one is sent again
        return answer

    def _attempt(self, job_id: str) -> int:
        return max((a.attempt for a in self.assignments if a.job_id == job_id), default=1)

    async def train(self, job_id: str, *, attempt: int = 0) -> None:
        """Report every epoch of the job not reported yet, as a node that trained it does."""
        attempt = attempt or self._attempt(job_id)
        epochs = max((a.config.epochs for a in self.assignments if a.job_id == job_id), default=0)
        for epoch in range(self.reported.get((job_id, attempt), 0) + 1, epochs + 1):
            await self.progress(job_id, epoch, attempt=attempt)

    async def complete(self, job_id: str, *, attempt: int = 0, status: int = common_pb2.STATUS_COMPLETED,
                       error: str = "", retryable: bool = False, train: bool = True) -> node_pb2.ReportCompletionResponse:
        """Report the end; a completion first reports the epochs not reported yet
        (``train=False`` sends it as it is)."""
        if train and status == common_pb2.STATUS_COMPLETED:
            await self.train(job_id, attempt=attempt)
        result = job_pb2.JobResult(job_id=job_id, status=status, model_weights_uri=f"nats://cyxwiz-models/{job_id}",
                                   model_weights_hash="0" * 64, model_size=10, final_metrics={"loss": 0.1})
        return await self.stub.ReportCompletion(
            node_pb2.ReportCompletionRequest(node_id=self.node_id, job_id=job_id, result=result, attempt=attempt,
                                             error=common_pb2.Error(code=500, message=error), retryable=retryable),
            metadata=self.metadata, timeout=10, wait_for_ready=True)

    async def stop(self) -> None:
        self.stop_heartbeats()
        if self._server is not None:
            await self._server.stop(grace=0)
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
