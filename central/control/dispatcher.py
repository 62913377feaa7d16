"""The dispatcher: turns a JobAssigned into ``AssignJob`` on the node's endpoint.

One gRPC channel per node endpoint, reused. The node's session token travels in
``AssignJobRequest.authorization_token``. A refusal (429 busy, 400 invalid, 401) or an
unreachable node becomes JobRejected, so the job goes back to the queue (a call with no
answer in time is made once more first: the node may have taken the job, and a node
answers an attempt it already runs as accepted; rejecting it would requeue a job that
runs, and the node's completion would be refused as not holding it); a busy,
unauthorized or unreachable node is then left out for a while, with a backoff that
doubles on each failure in a row (1 s up to 30 s) and resets on an accepted job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import grpc
from google.protobuf.message import DecodeError

from bus import BusError
from central.adapters.auth import Auth
from central.control.commands import Commands
from central.lifecycle.deciders import Reject
from central.lifecycle.errors import Refused
from central.control.dispatch_worker import DispatchWorker, WorkerCallError
from central.adapters.specs import config_from_spec
from central.lifecycle.state import CentralState
from events import JobAssigned
from protos import node_pb2, node_pb2_grpc

log = logging.getLogger("cyxwiz.central.dispatcher")

REASON_OF_CODE = {429: "busy", 400: "invalid", 401: "unauthorized"}
AMBIGUOUS = "no answer in time"  # the call may have reached the node: the outcome is not known
REASON_OF_STATUS = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized",
}


class Dispatcher:
    def __init__(
        self,
        state: CentralState,
        commands: Commands,
        auth: Auth,
        *,
        timeout_s: float = 5.0,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        worker: DispatchWorker | None = None,
    ) -> None:
        """``worker``: make the calls from that process (central's default), else here."""
        self.worker = worker
        self.state = state
        self.commands = commands
        self.auth = auth
        self.timeout_s = timeout_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.excluded_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._stubs: dict[str, tuple[grpc.aio.Channel, node_pb2_grpc.NodeServiceStub]] = {}
        self.accepted = 0
        self.rejected = 0
        self.on_exclusion_end: Callable[[], None] | None = None

    def excluded(self, node_id: str, now: float | None = None) -> bool:
        until = self.excluded_until.get(node_id)
        if until is None:
            return False
        if (self.clock() if now is None else now) >= until:
            del self.excluded_until[node_id]
            return False
        return True

    async def dispatch(self, assigned: JobAssigned, seq: int) -> None:
        """Call AssignJob for an appended JobAssigned (stream sequence ``seq``)."""
        job = self.state.jobs.get(assigned.job_id)
        node = self.state.nodes.get(assigned.node_id)
        if job is None or node is None:
            return
        request = node_pb2.AssignJobRequest(
            node_id=node.node_id,
            job=config_from_spec(job, attempt=assigned.attempt, resume_uri=assigned.resume_checkpoint,
                                 resume_epoch=assigned.resume_epoch, devices=assigned.devices),
            authorization_token=self.auth.session_token(node.node_id, node.registration_id),
        )
        reason, message = await self._call(node.endpoint, request)
        if reason == AMBIGUOUS:  # the node may have taken it: ask again; it answers a repeat as accepted
            reason, message = await self._call(node.endpoint, request)
            reason = "unreachable" if reason == AMBIGUOUS else reason
        if reason is None:
            self.accepted += 1
            self._failures.pop(node.node_id, None)
            return
        self.rejected += 1
        if reason != "invalid":
            self._exclude(node.node_id)
        await self._reject(assigned, seq, reason, message)

    async def redispatch(self, job) -> None:
        """Call AssignJob again for a job that is assigned and not started: its
        JobAssigned may be all that a central which lost the lease (or died) did. A node
        answers an attempt it already runs as accepted, so a repeat changes nothing."""
        assigned = JobAssigned(job_id=job.job_id, node_id=job.node_id, attempt=job.attempt,
                               resume_checkpoint=job.checkpoint_uri, resume_epoch=job.checkpoint_epoch)
        await self.dispatch(assigned, self.state.job_version(job.job_id))

    async def _call(self, endpoint: str, request) -> tuple[str | None, str]:
        try:
            if self.worker is not None:
                payload = await self.worker.call(endpoint, request.SerializeToString(), self.timeout_s)
                response = node_pb2.AssignJobResponse.FromString(payload)
            else:
                response = await self._stub(endpoint).AssignJob(request, timeout=self.timeout_s)
        except (grpc.aio.AioRpcError, WorkerCallError) as exc:
            reason = AMBIGUOUS if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else REASON_OF_STATUS.get(
                exc.code(), "unreachable")
            return reason, f"{exc.code().name}: {exc.details() or ''}"[:500]
        except DecodeError:
            return "invalid", "the node's AssignJob answer is not an AssignJobResponse"
        if response.accepted:
            return None, ""
        code = response.error.code
        return REASON_OF_CODE.get(code, "refused"), (response.error.message or f"refused with code {code}")[:500]

    async def _reject(self, assigned: JobAssigned, seq: int, reason: str, message: str) -> None:
        await self.state.wait_for_seq(seq)
        try:
            await self.commands.job(assigned.job_id, Reject(assigned.node_id, assigned.attempt, reason, message))
        except Refused:
            pass  # the job moved on (cancelled, lost node requeued it): nothing to undo
        except BusError as exc:
            log.warning("job %s: could not record rejection by %s: %s", assigned.job_id, assigned.node_id, exc)

    def _exclude(self, node_id: str) -> None:
        failures = self._failures.get(node_id, 0) + 1
        self._failures[node_id] = failures
        backoff = min(self.max_backoff_s, self.base_backoff_s * 2 ** (failures - 1))
        self.excluded_until[node_id] = self.clock() + backoff
        log.info("node %s left out for %.1fs after %d failure(s) in a row", node_id, backoff, failures)
        if self.on_exclusion_end is not None:
            asyncio.get_running_loop().call_later(backoff + 0.01, self.on_exclusion_end)

    def _stub(self, endpoint: str) -> node_pb2_grpc.NodeServiceStub:
        entry = self._stubs.get(endpoint)
        if entry is None:
            channel = grpc.aio.insecure_channel(endpoint, options=[("grpc.enable_retries", 0)])
            entry = (channel, node_pb2_grpc.NodeServiceStub(channel))
            self._stubs[endpoint] = entry
        return entry[1]

    async def forget(self, endpoint: str) -> None:
        if self.worker is not None:
            self.worker.forget(endpoint)
        entry = self._stubs.pop(endpoint, None)
        if entry is not None:
            await entry[0].close()

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()
