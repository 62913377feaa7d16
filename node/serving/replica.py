"""A serving process of a node (``--serving-processes``): ``python -m node.serving.replica``.

Started by the node (``node.serving.processes``), which writes its settings as JSON on
stdin. It follows the node's deployments, loads each one the node loads (the same bytes,
pinned by their SHA-256), answers InferenceService and the Open Inference Protocol on the
node's deploy port (SO_REUSEPORT) and forwards every other call to the node. It exits when
the node is gone, or on SIGTERM after answering what it accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import msgspec

from node.serving.access import Access
from node.serving.deployments import ACTIVE, Deployments, Status
from node.serving.forward import Forward
from node.serving.grpc_api import InferenceServicer
from node.serving.oip_grpc import OipServicer, add_to_server as add_oip_to_server
from node.serving.processes import SYNC_METHOD, SYNC_S, DeploymentState, Snapshot, SyncReport, spec_from_dict, staged_name
from protos import inference_pb2_grpc

log = logging.getLogger("node.serving.replica")

NODE_GONE_S = 10.0  # syncs failing this long: the node is gone, so is this process
_LIMITS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
_LOCAL = frozenset({"cyxwiz.protocol.InferenceService", "inference.GRPCInferenceService"})


class Follower:
    """This process's deployments, kept as the node's: loads what the node loads, stops
    what it stops, forgets what it deletes, and answers for the rest as the node would."""

    def __init__(self, deployments: Deployments) -> None:
        self.deployments = deployments
        self.failed: dict[str, str] = {}
        self._stopping: dict[str, asyncio.Task] = {}
        self._life: dict[str, float] = {}  # the node's created_at of what each local deployment follows

    def apply(self, snapshot: Snapshot) -> None:
        wanted = {s.spec["deployment_id"]: s for s in snapshot.deployments}
        for deployment_id in [d.deployment_id for d in self.deployments.list()]:
            if deployment_id not in wanted:
                self._stop(deployment_id, None, forget=True)
        for deployment_id, state in wanted.items():
            if self._life.get(deployment_id, state.created_at) != state.created_at:
                self._stop(deployment_id, None, forget=True)  # deleted and created again: this is a new one
            if deployment_id in self._stopping:
                continue  # followed once its old life has let go
            self._life[deployment_id] = state.created_at
            self._follow(deployment_id, state)

    def _follow(self, deployment_id: str, state: DeploymentState) -> None:
        status = Status(state.status)
        local = self.deployments._by_id.get(deployment_id)
        if status in ACTIVE and state.sha256:  # the node has the bytes: load them too
            if local is None or (local._task is None and local.status in ACTIVE):
                spec = spec_from_dict(state.spec)
                pinned = {**dict(spec.metadata), "sha256": state.sha256}
                spec = dataclasses.replace(spec, metadata=pinned)
                self.deployments.forget(deployment_id)
                try:
                    self.deployments.create(spec).stats.start_export()  # its records go to the node
                except Exception as exc:  # noqa: BLE001 - said to the node, which fails the deployment
                    self.failed[deployment_id] = str(exc)
            return
        if status in ACTIVE:  # loading on the node, bytes not there yet: answer "still loading"
            if local is None:
                self._record(deployment_id, state)
            return
        if local is None:
            self._record(deployment_id, state)
        elif local.status in ACTIVE:
            self._stop(deployment_id, state)
        else:
            local.status, local.message, local.error_code = status, state.message, state.error_code

    def _record(self, deployment_id: str, state: DeploymentState) -> None:
        try:
            self.deployments.record(spec_from_dict(state.spec), Status(state.status), state.message, state.error_code)
        except Exception:  # noqa: BLE001 - a source this process cannot resolve: answered as not found
            log.warning("deployment %s: cannot follow it here", deployment_id, exc_info=True)

    def _stop(self, deployment_id: str, state: DeploymentState | None, *, forget: bool = False) -> None:
        if deployment_id in self._stopping:
            return

        async def stop() -> None:
            try:
                if deployment_id in self.deployments._by_id:
                    await self.deployments.stop(deployment_id)
            finally:
                self._stopping.pop(deployment_id, None)
                local = self.deployments._by_id.get(deployment_id)
                if forget:
                    self.deployments.forget(deployment_id)
                    self.failed.pop(deployment_id, None)
                    self._life.pop(deployment_id, None)
                elif local is not None and state is not None:
                    local.status, local.message, local.error_code = Status(state.status), state.message, state.error_code

        self._stopping[deployment_id] = asyncio.create_task(stop(), name=f"stop-{deployment_id}")

    def report(self, token: str, index: int, listening: bool) -> SyncReport:
        ready, held, stats = [], [], {}
        for d in self.deployments.list():
            if d.status is Status.RUNNING:
                ready.append(d.deployment_id)
            if d._predictor is not None or d._batcher is not None or d.deployment_id in self._stopping:
                held.append(d.deployment_id)
            if d._task is not None:
                latencies, errors, batches, samples = d.stats.take_export()
                if latencies or errors or batches:
                    stats[d.deployment_id] = (latencies, errors, batches, samples)
            if d.status is Status.FAILED and d._task is not None:
                self.failed[d.deployment_id] = d.message
        return SyncReport(token=token, index=index, pid=os.getpid(), listening=listening, ready=ready, held=held,
                          failed=dict(self.failed), stats=stats)

    async def settled(self) -> None:
        """Once every load started here has ended (RUNNING or FAILED)."""
        tasks = [d._task for d in self.deployments.list() if d._task is not None and not d._task.done()]
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(config: dict) -> int:
    staging = Path(config["staging"])

    async def fetch(uri: str) -> bytes:  # the bytes the node fetched (and checked), staged for us
        return await asyncio.to_thread((staging / staged_name(uri)).read_bytes)

    deployments = Deployments(fetch=fetch, model_roots=tuple(Path(r) for r in config["model_roots"]))
    follower = Follower(deployments)
    session: list[str | None] = [None]
    access = Access(config["api_key"], lambda: session[0])
    channel = grpc.aio.insecure_channel(f"unix:{config['socket']}", options=_LIMITS)
    sync = channel.unary_unary(SYNC_METHOD)
    token, index = config["token"], int(config["index"])
    listening = False

    async def one_sync() -> None:
        report = follower.report(token, index, listening)
        answer = await sync(msgspec.json.encode(report), timeout=5)
        snapshot = msgspec.json.decode(answer, type=Snapshot)
        session[0] = snapshot.session_token
        follower.apply(snapshot)

    await one_sync()
    await follower.settled()  # what already runs on the node is loaded before this process listens

    from protos.decode_guard import DecodeGuard

    server = grpc.aio.server(interceptors=[DecodeGuard()], options=[("grpc.so_reuseport", 1), *_LIMITS])
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(deployments, access), server)
    add_oip_to_server(OipServicer(deployments, access), server)
    _import_forwarded_services()
    server.add_generic_rpc_handlers((Forward(channel, local=_LOCAL),))
    host, port = config["host"], int(config["port"])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) != port:
        log.error("serving process %d: cannot listen on %s with the node", index, address)
        return 2
    await server.start()
    listening = True

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    failing_since = 0.0
    while not stop.is_set():
        try:
            await one_sync()
            failing_since = 0.0
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
                log.error("serving process %d: the node refused it (%s): exiting", index, exc.details())
                break
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > NODE_GONE_S:
                log.warning("serving process %d: the node does not answer (%s): exiting", index, exc.code().name)
                break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SYNC_S)
    # answer what was accepted: stop taking connections, drain every deployment, then go
    stopping = server.stop(5.0)
    await deployments.close()
    await stopping
    await channel.close()
    return 0


def _import_forwarded_services() -> None:
    """Put the node's other services' descriptors in the pool, so their calls are forwarded."""
    import grpc_health.v1.health_pb2  # noqa: F401
    import grpc_reflection.v1alpha.reflection_pb2  # noqa: F401

    import protos.deployment_pb2  # noqa: F401


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("jax").setLevel(logging.WARNING)  # the node has said which backend it uses
    try:
        config = json.loads(sys.stdin.read())
    except ValueError:
        print("node.serving.replica: start me through the node (--serving-processes), not by hand", file=sys.stderr)
        return 2
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
