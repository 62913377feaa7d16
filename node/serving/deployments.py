"""The node's deployments: create (load in the background), get, list, stop, delete, infer.

States: PENDING -> LOADING -> RUNNING -> STOPPED, or FAILED with a message. Create
answers at once (LOADING); the model is fetched, hash-checked, put on the device and
compiled for every batch size off the loop, then the deployment is RUNNING. Stop takes
no new requests, answers those accepted, then frees the device. Delete forgets a
deployment that is no longer active ("stop it first" otherwise).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from bus import ObjectNotFound
from node.serving import source as sources
from node.serving.errors import NotActive, NotFound, NotReady, QueueFull, ServingError
from node.serving.runner import INLINE_LIMIT_S, Batcher, Predictor
from node.serving.spec import DeploymentSpec
from node.serving.stats import ServingStats, Window

__all__ = ["ACTIVE", "Deployment", "Deployments", "Gate", "Status"]

log = logging.getLogger(__name__)

MAX_SAMPLES_PER_REQUEST = 65536


class Status(enum.Enum):
    PENDING = "pending"
    LOADING = "loading"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE = frozenset({Status.PENDING, Status.LOADING, Status.RUNNING})


@dataclass(eq=False)
class Deployment:
    spec: DeploymentSpec
    source: sources.ModelSource
    status: Status = Status.PENDING
    message: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float = 0.0
    stopped_at: float = 0.0
    loaded: sources.LoadedModel | None = None
    stats: ServingStats = field(default_factory=ServingStats)
    load_seconds: float = 0.0
    error_code: int = 0
    model_sha256: str = ""  # of the bytes loaded, once checked (serving processes load the same)
    _predictor: Predictor | None = None
    _batcher: Batcher | None = None
    _task: asyncio.Task | None = None

    @property
    def deployment_id(self) -> str:
        return self.spec.deployment_id

    @property
    def uptime_seconds(self) -> float:
        if not self.started_at:
            return 0.0
        return (self.stopped_at or time.time()) - self.started_at

    @property
    def max_samples(self) -> int:
        return MAX_SAMPLES_PER_REQUEST

    @property
    def compiled_sizes(self) -> tuple[int, ...]:
        """The batch sizes compiled so far (all of ``batch_sizes(max_batch)`` once done)."""
        return self._predictor.compiled_sizes if self._predictor is not None else ()

    @property
    def inline(self) -> bool:
        """Whether a request on an idle deployment runs on the node's loop (a small CPU
        model) rather than in the worker thread."""
        return self._batcher is not None and self._batcher.inline


Fetch = Callable[[str], Awaitable[bytes]]


class Gate(Protocol):
    """The node's other serving processes (``node.serving.processes``), as the lifecycle sees them."""

    async def ready(self, d: Deployment) -> str | None:
        """Once every serving process has ``d`` loaded: None, or why one could not."""

    async def released(self, d: Deployment, timeout: float) -> None:
        """Once no serving process holds ``d`` any more (each answered what it accepted)."""

    def forget(self, d: Deployment) -> None:
        """``d`` was deleted."""


class Deployments:
    """Every deployment of this node. Methods run on the node's loop."""

    def __init__(
        self, *, fetch: Fetch, model_roots: tuple[Path, ...] = (), max_active: int = 32,
        on_window: Callable[[Deployment, Window], None] | None = None, gate: Gate | None = None,
    ) -> None:
        self.fetch = fetch
        self.model_roots = model_roots
        self.max_active = max_active
        self.on_window = on_window
        self.gate = gate
        self._by_id: dict[str, Deployment] = {}

    # --- lifecycle --------------------------------------------------------------------

    def create(self, spec: DeploymentSpec) -> Deployment:
        """A new deployment in LOADING (or the existing one of that id for the same model)."""
        source = self._source(spec)
        existing = self._by_id.get(spec.deployment_id)
        if existing is not None:
            if existing.source == source and existing.spec.params == spec.params:
                return existing  # a retried create
            raise NotActive(f"deployment {spec.deployment_id!r} already exists with another model or settings")
        if sum(d.status in ACTIVE for d in self._by_id.values()) >= self.max_active:
            raise QueueFull(f"this node serves {self.max_active} deployments already: stop one or use another node")
        deployment = Deployment(spec=spec, source=source, status=Status.LOADING)
        self._by_id[spec.deployment_id] = deployment
        deployment._task = asyncio.create_task(self._load(deployment), name=f"load-{spec.deployment_id}")
        return deployment

    def _source(self, spec: DeploymentSpec) -> sources.ModelSource:
        return sources.resolve(
            model_id=spec.model_id, source_url=spec.source_url, local_path=spec.local_path,
            metadata=dict(spec.metadata), model_roots=self.model_roots,
        )

    async def _load(self, d: Deployment) -> None:
        started = time.perf_counter()
        try:
            data = await self._bytes(d.source)
            loaded = await asyncio.to_thread(sources.load, data, d.source)
            d.model_sha256 = loaded.sha256
            predictor = await asyncio.to_thread(Predictor, loaded, d.spec.params.max_batch)
        except asyncio.CancelledError:
            raise
        except sources.ModelLoadError as exc:
            return self._fail(d, str(exc), exc.code)
        except ObjectNotFound:
            return self._fail(d, f"no model {d.source.uri}: is the job id right, and did the job complete?", 404)
        except Exception as exc:  # fetch failures (object store away), XLA compile errors
            log.warning("deployment %s: loading failed", d.deployment_id, exc_info=True)
            return self._fail(d, f"loading {d.source.uri} failed: {exc}", 503)
        problem = None
        if self.gate is not None and d.status is Status.LOADING:
            try:  # RUNNING means every process on the port answers for it
                problem = await self.gate.ready(d)
            except asyncio.CancelledError:
                predictor.release()
                raise
        if problem is not None or d.status is not Status.LOADING:  # a serving process failed, or stopped while loading
            predictor.release()
            return self._fail(d, problem, 503) if problem is not None else None
        p = d.spec.params
        d.loaded, d._predictor = loaded, predictor
        d._batcher = Batcher(
            predictor, max_batch=p.max_batch, max_delay_s=p.max_delay_s, queue_size=p.queue_size,
            gather=p.batching, on_batch=d.stats.batch, name=f"serve-{d.deployment_id}",
            inline=predictor.on_cpu and predictor.batch_seconds <= INLINE_LIMIT_S,
        )
        d.load_seconds = time.perf_counter() - started
        d.status, d.started_at = Status.RUNNING, time.time()
        d.message = f"serving {loaded.model.definition.get('type')} model {d.source.uri} (sha256 {loaded.sha256[:12]})"
        log.info("deployment %s running after %.2fs: %s", d.deployment_id, d.load_seconds, d.message)
        try:
            await asyncio.to_thread(predictor.compile_rest)
        except Exception:  # sizes 1 and max_batch serve every batch; the others only save padding
            log.warning("deployment %s: compiling the smaller batch sizes failed", d.deployment_id, exc_info=True)

    async def _bytes(self, source: sources.ModelSource) -> bytes:
        path = source.path
        if path is None:
            return await self.fetch(source.uri)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise sources.ModelLoadError(f"cannot read {path}: {exc.strerror or exc}", 404) from exc

    def _fail(self, d: Deployment, message: str, code: int) -> None:
        if d.status is Status.LOADING:
            d.status, d.message, d.error_code, d.stopped_at = Status.FAILED, message, code, time.time()

    async def stop(self, deployment_id: str, *, drain_s: float = 30.0) -> Deployment:
        """Stop taking requests, answer the accepted ones, free the device."""
        d = self.get(deployment_id)
        if d.status not in ACTIVE:
            return d
        d.status, d.stopped_at = Status.STOPPED, time.time()
        d.message = "stopped"
        if d._task is not None and not d._task.done():
            d._task.cancel()
        batcher, predictor = d._batcher, d._predictor
        if batcher is not None:
            batcher.close()
            await asyncio.to_thread(batcher.join, drain_s)
            await asyncio.sleep(0)  # let the last batch's answers out
        if predictor is not None:
            predictor.release()
        d._batcher = d._predictor = None
        if self.gate is not None:
            await self.gate.released(d, drain_s)
        return d

    def delete(self, deployment_id: str) -> None:
        d = self.get(deployment_id)
        if d.status in ACTIVE:
            raise NotActive(f"deployment {deployment_id!r} is {d.status.value}: stop it first")
        del self._by_id[deployment_id]
        if self.gate is not None:
            self.gate.forget(d)

    def record(self, spec: DeploymentSpec, status: Status, message: str = "", error_code: int = 0) -> Deployment:
        """A deployment known here that this process does not load (a serving process's
        copy of the node's record: it answers for it as the node would)."""
        source = self._source(spec)
        d = Deployment(spec=spec, source=source, status=status, message=message, error_code=error_code)
        self._by_id[spec.deployment_id] = d
        return d

    def forget(self, deployment_id: str) -> None:
        """Drop a deployment whatever its state (a serving process following the node)."""
        self._by_id.pop(deployment_id, None)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(i, drain_s=5.0) for i in list(self._by_id)))

    # --- reads -------------------------------------------------------------------------

    def get(self, deployment_id: str) -> Deployment:
        d = self._by_id.get(deployment_id)
        if d is None:
            raise NotFound(f"no deployment {deployment_id[:128]!r} on this node")
        return d

    def list(self, *, status: Status | None = None, user_id: str = "") -> list[Deployment]:
        """Deployments in creation order, filtered."""
        return [
            d for d in self._by_id.values()
            if (status is None or d.status is status) and (not user_id or d.spec.user_id == user_id)
        ]

    def metrics(self, deployment_id: str, start: float, end: float) -> list[Window]:
        return self.get(deployment_id).stats.between(start, end)

    def roll_windows(self) -> None:
        """Close finished windows of every deployment and hand them to ``on_window``."""
        for d in list(self._by_id.values()):
            for window in d.stats.roll():
                if self.on_window is not None:
                    self.on_window(d, window)

    # --- inference ----------------------------------------------------------------------

    def serving(self, deployment_id: str) -> Deployment:
        """The deployment, if it takes requests now (else the error that says why not)."""
        d = self._by_id.get(deployment_id)
        if d is None:
            raise NotFound(f"no deployment {deployment_id[:128]!r} on this node")
        if d.status is Status.RUNNING:
            return d
        if d.status in (Status.PENDING, Status.LOADING):
            raise NotReady(f"deployment {deployment_id!r} is still loading its model: retry shortly", retry_after=1)
        if d.status is Status.FAILED:
            raise NotActive(f"deployment {deployment_id!r} failed: {d.message}")
        raise NotActive(f"deployment {deployment_id!r} is stopped: create a new deployment to serve again")

    async def infer(self, d: Deployment, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Rows of the output for float32 samples ``x``, and the node's latency in ms."""
        started = time.perf_counter()
        batcher = d._batcher
        if batcher is None or d.status is not Status.RUNNING:
            self.serving(d.deployment_id)  # raises why
            raise NotActive(f"deployment {d.deployment_id!r} is not running")
        try:
            out = await batcher.submit(x)
        except ServingError:
            d.stats.error()
            raise
        latency = time.perf_counter() - started
        d.stats.request(latency)
        return out, latency * 1000.0

    def record_error(self, deployment_id: str) -> None:
        d = self._by_id.get(deployment_id)
        if d is not None:
            d.stats.error()

