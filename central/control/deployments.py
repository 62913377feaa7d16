"""Deployments across the cluster: central places each on a node and follows it there.

Create checks the model (a completed job's artifact), estimates the memory serving it
takes (``serving_need``: the artifact's weights and one batch through the widest layer,
or what the request's ``requirements`` ask, whichever is more), picks a node that fits
(``policy.fits``: the device kind asked for, with that much memory *available*: the
node's latest heartbeat, less what its deployments still loading will take; the one
asked for, else of those that fit the one with the fewest active deployments), and
refuses with FAILED_PRECONDITION naming what is missing when none fits. It appends DeploymentRequested
and DeploymentPlaced, then calls the node's CreateDeployment (at the NodeService
endpoint central knows, with the node's session token) and polls GetDeployment until
it is RUNNING or FAILED, appending DeploymentRunning / DeploymentFailed. Nodes never
append events themselves. A lost node's deployments become ``lost`` (DeploymentFailed
with ``lost``) and may be placed again by a new create of the same id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc

from bus import ConcurrencyConflict
from central.lifecycle.errors import Refused
from central.lifecycle.nodes import NodeState
from central.lifecycle.deployments import ACTIVE, DeploymentState
from central.lifecycle.policy import Candidate, fitting, why_unfit
from events import (
    Device,
    DeploymentDeleted,
    DeploymentFailed,
    DeploymentPlaced,
    DeploymentRequested,
    DeploymentRunning,
    DeploymentStopped,
    NodeLost,
    Requirements,
    subject_for,
)
from events.model_size import estimate
from protos import deployment_pb2 as dp
from protos import deployment_pb2_grpc as dpg
from protos.convert import bearer_metadata

__all__ = ["DeploymentControl", "DeploymentRequest", "serving_need"]

log = logging.getLogger("cyxwiz.central.deployments")

LOAD_TIMEOUT_S = 300.0
POLL_S = 0.05


@dataclass(frozen=True)
class DeploymentRequest:
    deployment_id: str
    model_id: str
    name: str = ""
    node: str | None = None  # id or name
    runtime_params: dict[str, str] = field(default_factory=dict)
    user_id: str = ""
    requirements: Requirements = Requirements()  # device kind and memory asked for (0: central estimates)


def serving_need(definition: str, *, weights_bytes: int, max_batch: int) -> int:
    """Bytes serving a model takes: its weights (the artifact's size, or the definition's
    parameter count where larger) and one batch of ``max_batch`` (1 when not given: a
    lower bound) through its widest layer. A definition central cannot read counts its
    weights alone."""
    try:
        size = estimate(definition or "{}", outputs=1)
    except ValueError:
        return max(0, weights_bytes)
    return size.serving_bytes(batch=max_batch, weights_bytes=weights_bytes)


def _max_batch(params: dict[str, str]) -> int:
    text = str(params.get("max_batch_size", "") or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 7 else 0


def _check(req: DeploymentRequest) -> None:
    for what, value, limit in (("config.model.name", req.name, 200), ("config.user_id", req.user_id, 128),
                               ("config.node_id", req.node or "", 128)):
        if len(value) > limit or not value.isprintable():
            raise Refused(400, f"{what} must be at most {limit} printable characters")
    if len(req.runtime_params) > 16 or any(len(k) > 64 or len(v) > 256 for k, v in req.runtime_params.items()):
        raise Refused(400, "config.runtime_params: at most 16 entries, keys of 64 and values of 256 characters")


class DeploymentControl:
    def __init__(self, state, commands, auth, reported: dict | None = None) -> None:
        self.state = state
        self.commands = commands
        self.auth = auth
        self.reported = reported if reported is not None else {}  # node id -> NodeInfo of its latest heartbeat
        self._tasks: set[asyncio.Task] = set()
        state.listen(self._on_event)

    async def _append(self, events: list) -> bool:
        """Append a chain to one deployment at its current version; False on a conflict."""
        bus = self.commands.bus
        seq = self.state.versions.get(subject_for(events[0]), 0)
        try:
            for event in events:
                seq = await bus.append(event, expected_version=seq)
        except ConcurrencyConflict:
            await self.commands.catch_up()
            return False
        await self.state.wait_for_seq(seq)
        return True

    def resume(self) -> None:
        """After a restart: follow again every deployment placed but not yet running."""
        for d in self.state.deployments.values():
            if d.status == "placed":
                self._spawn(self._follow(d.deployment_id))

    # --- reads -------------------------------------------------------------------------

    def terminal_target(self, deployment_id: str) -> tuple[str, bool] | None:
        """(node id, terminal allowed) of an active deployment, for TerminalService.CreateSession."""
        d = self.state.deployments.get(deployment_id)
        if d is None or d.status not in ACTIVE or not d.node_id:
            return None
        return d.node_id, d.runtime_params.get("enable_terminal") == "true"

    def get(self, deployment_id: str) -> DeploymentState:
        d = self.state.deployments.get(deployment_id)
        if d is None or d.status == "deleted":
            raise Refused(404, f"no deployment {deployment_id[:128]!r}; `cyxwiz deployments` lists them")
        return d

    def visible(self) -> list[DeploymentState]:
        return [d for d in self.state.deployments.values() if d.status != "deleted"]

    def node_of(self, d: DeploymentState) -> NodeState:
        node = self.state.nodes.get(d.node_id)
        if node is None:
            raise Refused(503, f"deployment {d.deployment_id!r} has no node")
        return node

    def metadata(self, node: NodeState):
        return bearer_metadata(self.auth.session_token(node.node_id, node.registration_id))

    # --- create ------------------------------------------------------------------------

    async def create(self, req: DeploymentRequest) -> DeploymentState:
        _check(req)
        existing = self.state.deployments.get(req.deployment_id)
        if existing is not None and existing.status not in ("deleted", "lost"):
            if existing.model_id == req.model_id:
                return existing  # a retried create
            raise Refused(409, f"deployment {req.deployment_id!r} exists with model {existing.model_id!r}")
        uri, sha256, definition, size = self._model(req.model_id)
        max_batch = _max_batch(req.runtime_params)
        memory = max(serving_need(definition, weights_bytes=size, max_batch=max_batch or 1),
                     req.requirements.min_memory_bytes)
        need = Requirements(device=req.requirements.device, min_memory_bytes=memory)
        node = self._place(req.node, need, req.deployment_id)
        events = []
        if existing is None or existing.status == "deleted":
            events.append(DeploymentRequested(
                deployment_id=req.deployment_id, model_id=req.model_id, model_uri=uri, sha256=sha256,
                name=req.name, node_id=req.node, max_batch=max_batch, runtime_params=dict(req.runtime_params),
                user_id=req.user_id, requirements=need, memory_bytes=memory))
        events.append(DeploymentPlaced(deployment_id=req.deployment_id, node_id=node.node_id, endpoint=node.endpoint))
        if not await self._append(events):
            raise Refused(409, f"deployment {req.deployment_id!r} changed while placing it; try again")
        self._spawn(self._follow(req.deployment_id))
        return self.state.deployments[req.deployment_id]

    def _model(self, job_id: str) -> tuple[str, str, str, int]:
        """The completed job's model: (uri, sha256, model definition, size in bytes)."""
        job = self.state.jobs.get(job_id)
        if job is None:
            raise Refused(404, f"no job {job_id[:128]!r}: deploy a completed job's model (`cyxwiz jobs` lists them)")
        if job.status != "completed" or job.artifact is None:
            raise Refused(409, f"job {job_id!r} is {job.status}: only a completed job's model can be deployed")
        uri, sha256, size = job.artifact
        return uri, sha256, job.model_definition, size

    def available(self, node: NodeState, placing: str = "") -> Candidate:
        """``node`` as placement sees it: the memory its latest heartbeat says is available
        (its registered totals before the first, or where a figure is 0: not reported),
        less the estimates of its deployments still loading but ``placing`` (which that
        heartbeat may not show yet), on RAM and on every device."""
        info = self.reported.get(node.node_id)
        ram = info.ram_available if info is not None and info.ram_available > 0 else node.ram_bytes
        beat = list(info.devices) if info is not None else []
        free = [beat[i].memory_available if i < len(beat) and beat[i].memory_available > 0 else d.memory_bytes
                for i, d in enumerate(node.devices)]
        loading = sum(d.memory_bytes for d in self.state.deployments.values()
                      if d.node_id == node.node_id and d.status == "placed" and d.deployment_id != placing)
        devices = tuple(Device(type=d.type, name=d.name, memory_bytes=max(0, f - loading))
                        for d, f in zip(node.devices, free))
        return Candidate(node_id=node.node_id, devices=devices, ram_bytes=max(0, ram - loading), slots=1)

    def _place(self, wanted: str | None, need: Requirements, deployment_id: str) -> NodeState:
        online = list(self.state.online_nodes())
        if wanted:
            online = [node for node in online if wanted in (node.node_id, node.name)]
            if not online:
                raise Refused(409, f"node {wanted!r} is not online: `cyxwiz nodes` lists the online ones")
        if not online:
            raise Refused(503, "no node is online to serve the deployment: start one with `cyxwiz node`")
        views = {c.node_id: c for c in (self.available(n, deployment_id) for n in online)}
        fit = {c.node_id for c in fitting(need, views.values())}
        if not fit:
            where = f"node {wanted!r} cannot" if wanted else "no online node can"
            raise Refused(409, f"{where} hold deployment {deployment_id!r}: "
                               f"{why_unfit(need, views.values(), 'available')}")
        load = {n.node_id: 0 for n in online}
        for d in self.state.deployments.values():
            if d.status in ACTIVE and d.node_id in load:
                load[d.node_id] += 1
        return min((n for n in online if n.node_id in fit),
                   key=lambda n: (load[n.node_id], self.state.running_on(n.node_id), n.node_id))

    # --- following the node --------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, deployment_id: str) -> None:
        d = self.state.deployments[deployment_id]
        node = self.node_of(d)
        try:
            answer = await self._run_on_node(d, node)
        except grpc.aio.AioRpcError as exc:
            answer = ("failed", f"node {node.node_id} refused or could not be reached: {exc.details() or exc.code().name}")
        except Exception as exc:  # never leave a deployment placed and unfollowed
            log.exception("following deployment %s failed", deployment_id)
            answer = ("failed", f"central could not follow the deployment: {exc}")
        current = self.state.deployments.get(deployment_id)
        if current is None or current.status != "placed" or current.node_id != node.node_id:
            return  # stopped, lost or placed elsewhere meanwhile
        if answer[0] == "running":
            _, grpc_endpoint, http_endpoint, seconds = answer
            event = DeploymentRunning(deployment_id=deployment_id, node_id=node.node_id, grpc_endpoint=grpc_endpoint,
                                      http_endpoint=http_endpoint, load_seconds=seconds)
        else:
            event = DeploymentFailed(deployment_id=deployment_id, node_id=node.node_id, error=answer[1])
        await self._append([event])

    async def _run_on_node(self, d: DeploymentState, node: NodeState):
        metadata = self.metadata(node)
        config = dp.DeploymentConfig(
            deployment_id=d.deployment_id, user_id=d.user_id, node_id=node.node_id, runtime_params=d.runtime_params,
            model=dp.ModelInfo(model_id=d.model_id, name=d.name, source_url=d.model_uri, metadata={"sha256": d.sha256}),
        )
        started = time.monotonic()
        async with grpc.aio.insecure_channel(node.endpoint) as channel:
            stub = dpg.DeploymentServiceStub(channel)
            await stub.CreateDeployment(dp.CreateDeploymentRequest(config=config), metadata=metadata, timeout=30)
            while time.monotonic() - started < LOAD_TIMEOUT_S:
                current = self.state.deployments.get(d.deployment_id)
                if current is None or current.status != "placed":
                    return ("gone",)
                got = (await stub.GetDeployment(dp.GetDeploymentRequest(deployment_id=d.deployment_id),
                                                metadata=metadata, timeout=30)).deployment
                if got.status == dp.DEPLOYMENT_STATUS_RUNNING:
                    host = node.endpoint.rpartition(":")[0] or node.endpoint
                    return ("running", f"{host}:{got.config.port}", got.endpoint_url, time.monotonic() - started)
                if got.status == dp.DEPLOYMENT_STATUS_FAILED:
                    return ("failed", got.status_message or "the node could not load the model")
                await asyncio.sleep(POLL_S)
        return ("failed", f"the node did not finish loading within {LOAD_TIMEOUT_S:.0f}s")

    # --- stop, delete, lost nodes ------------------------------------------------------------

    async def stop(self, deployment_id: str) -> DeploymentState:
        d = self.get(deployment_id)
        if d.status in ACTIVE and d.node_id:
            node = self.state.nodes.get(d.node_id)
            if node is not None and node.status == "online":
                await self.on_node(node, "StopDeployment", dp.StopDeploymentRequest(deployment_id=deployment_id))
        if d.status in ACTIVE | {"lost", "failed"}:
            if not await self._append([DeploymentStopped(deployment_id=deployment_id, reason="stopped")]):
                raise Refused(409, f"deployment {deployment_id!r} changed while stopping it; try again")
        return self.state.deployments[deployment_id]

    async def delete(self, deployment_id: str) -> None:
        d = self.get(deployment_id)
        if d.status in ACTIVE:
            raise Refused(409, f"deployment {deployment_id!r} is {d.status}: stop it first")
        node = self.state.nodes.get(d.node_id)
        if node is not None and node.status == "online":
            await self.on_node(node, "DeleteDeployment", dp.DeleteDeploymentRequest(deployment_id=deployment_id))
        if not await self._append([DeploymentDeleted(deployment_id=deployment_id)]):
            raise Refused(409, f"deployment {deployment_id!r} changed while deleting it; try again")

    async def on_node(self, node: NodeState, method: str, request):
        """Call ``method`` on the node; a node that is away or forgot the deployment is no error here."""
        try:
            async with grpc.aio.insecure_channel(node.endpoint) as channel:
                return await getattr(dpg.DeploymentServiceStub(channel), method)(
                    request, metadata=self.metadata(node), timeout=30)
        except grpc.aio.AioRpcError as exc:
            log.info("%s on node %s: %s", method, node.node_id, exc.details())
            return None

    def _on_event(self, event, old, new) -> None:
        if isinstance(event, NodeLost):
            lost = [d for d in self.state.deployments.values() if d.node_id == event.node_id and d.status in ACTIVE]
            for d in lost:
                self._spawn(self._append([DeploymentFailed(
                    deployment_id=d.deployment_id, node_id=event.node_id, lost=True,
                    error=f"node {event.node_id} was lost; create the deployment again to place it elsewhere")]))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
