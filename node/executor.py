"""The job executor: a fixed number of slots, each with one long-lived worker process.

Slots sit on the node's devices (slot i on device i modulo their number; by default one
slot per device). A job asking for k devices (``Assignment.devices``, see
``events.devices``) takes k free slots on k different devices and trains in one worker
that sees those k devices: a 2-GPU node runs one 2-device job or two 1-device jobs.
The idle workers of the other slots it takes are ended first (a worker holds its
device's memory).

Each job trains in its slot's worker process (see :mod:`node.worker`), so whatever
goes wrong inside it ends that job alone: bad data, a model that does not fit, a NaN
loss or out of memory become a failed :class:`Outcome` with a one-line error naming
the field or problem; a worker that crashes (segfault, killed by the OOM killer)
fails its job with a clear error and the slot gets a fresh worker. The node keeps
serving.

Cancellation first asks the worker to stop at the next step boundary. A job that has
not ended ``stop_grace_s`` seconds later (it is inside XLA compilation, or inside one
very long step) has its worker killed: it is reported cancelled (or, when the node is
shutting down, failed and retryable) and the slot starts a new worker.

The executor never talks to the network itself: a :class:`JobListener` (the reporter)
receives each phase, epoch and the outcome, and must not block. ``fetch_dataset`` and
``fetch_object`` (the object store) run here, in the node's process, on behalf of the
worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from events.devices import batch_problem, resolve_devices
from events.errors import CyxwizError
from node.jobs import CANCELLED, COMPLETED, FAILED, Assignment, JobProblem, Outcome, crashed, outcome_of
from node.trainer import EpochResult
from node.worker import CPU_DEVICES_ENV, DEAD, JobSettings, WorkerProcess

__all__ = [
    "Assignment", "Busy", "Conflict", "Executor", "JobListener", "Outcome", "Unfit",
    "COMPLETED", "FAILED", "CANCELLED", "worker_env",
]

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often a job's thread looks at its stop deadline while the worker is silent


class JobListener(Protocol):
    """Receives a job's epochs and its end, in order, from the job's thread. Must not block.

    A listener may also define ``on_phase(job, phase)`` (loading, compiling, training,
    checkpointing), ``on_progress(job, (epoch, step, steps))`` (within an epoch, a few
    times a second) and ``on_log(job, (level, message, traceback))`` (``node.joblog``);
    each is called when the listener has it.
    """

    def on_epoch(self, job: Assignment, epoch: EpochResult) -> None: ...

    def on_end(self, job: Assignment, outcome: Outcome) -> None: ...


def worker_env(devices: Sequence[object], slots: int) -> Callable[[tuple[int, ...]], dict[str, str | None]]:
    """The environment of a worker that trains on the node's devices ``ids``: it sees
    those alone (``CUDA_VISIBLE_DEVICES`` on GPUs; on a node with several CPU devices,
    that many of them). Slots that share a GPU share its memory instead of each
    preallocating most of it."""
    gpus = sum(1 for d in devices if getattr(d, "kind", "") == "cuda")
    if not gpus:
        several = len(devices) > 1
        return lambda ids: {CPU_DEVICES_ENV: str(len(ids))} if several else {}
    per_gpu = -(-slots // gpus)

    def env(ids: tuple[int, ...]) -> dict[str, str | None]:
        values: dict[str, str | None] = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in ids)}
        if per_gpu > 1:
            values["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.75 / per_gpu:.3f}"
        return values

    return env


class Busy(CyxwizError):
    """Every slot is taken (the node answers 429)."""

    code, retryable = 429, True


class Conflict(CyxwizError):
    """Another attempt of this job is running here (the node answers 409)."""

    code = 409


class Unfit(CyxwizError):
    """The job cannot run here as it asks: more devices than the node has, or a batch
    that does not split over them (the node answers 400)."""

    code = 400


class _Slot:
    """One slot on one device: its worker process, started on first use, after a crash or
    kill, and when a job needs it to see other devices."""

    def __init__(self, index: int, device: int, cache_dir: str | None) -> None:
        self.index = index
        self.device = device
        self.cache_dir = cache_dir
        self.worker: WorkerProcess | None = None
        self.worker_env: Mapping[str, str | None] | None = None
        self.busy = False

    def ready_worker(self, env: Mapping[str, str | None]) -> WorkerProcess:
        if self.worker is not None and self.worker.alive() and self.worker_env == env:
            return self.worker
        self.discard_worker(kill=True)
        self.worker = WorkerProcess(f"cyxwiz-worker-{self.index}", env, self.cache_dir)
        self.worker_env = env
        return self.worker

    def discard_worker(self, *, kill: bool) -> None:
        worker, self.worker = self.worker, None
        if worker is not None and kill:
            worker.kill()


class _Running:
    def __init__(self, job: Assignment, slots: list[_Slot], env: Mapping[str, str | None]) -> None:
        self.job = job
        self.slot = slots[0]  # its worker trains the job
        self.slots = slots
        self.env = env
        self.stop = threading.Event()
        self.stop_reason = CANCELLED  # or FAILED when the node itself is shutting down
        self.stop_asked_at: float | None = None
        self.forced: Outcome | None = None  # the listener failed: the job ends with this
        self.thread: threading.Thread | None = None


class Executor:
    """Runs up to ``slots`` jobs at once on ``devices`` devices, each in a worker process.

    ``fetch_dataset(name)`` reads ``nats://<name>`` data sets, ``dataset_sha256(name)``
    says their SHA-256 without reading them (so workers can cache them), and
    ``fetch_object(uri)`` reads resume checkpoints; they block the job's thread in this process only.
    ``worker_env(device_ids)`` gives environment variables for a worker that trains on
    those devices (a value of None removes one), for example the GPUs it may see.
    """

    def __init__(
        self,
        slots: int,
        listener: JobListener,
        *,
        devices: int = 1,
        data_roots: Sequence[Path] = (),
        fetch_dataset: Callable[[str], bytes] | None = None,
        dataset_sha256: Callable[[str], str] | None = None,
        fetch_object: Callable[[str], bytes] | None = None,
        checkpoint_every: int = 1,
        checkpoint_interval_s: float = 0.0,
        stop_grace_s: float = 3.0,
        worker_env: Callable[[tuple[int, ...]], Mapping[str, str | None]] | None = None,
        compilation_cache_dir: str | Path | None = None,
    ) -> None:
        if slots < 1 or devices < 1:
            raise ValueError(f"slots and devices must be >= 1 (got {slots}, {devices})")
        self.slots = slots
        self.devices = devices
        self.worker_env = worker_env
        self.listener = listener
        self.fetch_dataset = fetch_dataset
        self.dataset_sha256 = dataset_sha256
        self.fetch_object = fetch_object
        self.stop_grace_s = stop_grace_s
        self.settings = JobSettings(
            data_roots=tuple(data_roots), checkpoint_every=checkpoint_every,
            checkpoint_interval_s=checkpoint_interval_s,
            can_fetch_datasets=fetch_dataset is not None, can_fetch_objects=fetch_object is not None,
            can_hash_datasets=dataset_sha256 is not None,
        )
        cache = None if compilation_cache_dir is None else str(compilation_cache_dir)
        self._slots = [_Slot(i, i % devices, cache) for i in range(slots)]
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # --- what the service and agent call -----------------------------------------

    def submit(self, job: Assignment) -> bool:
        """Start ``job`` on free slots of as many devices as it asks. Returns False when
        that same attempt already runs here (an idempotent repeat); raises
        :class:`Conflict`, :class:`Unfit` or :class:`Busy`."""
        count = resolve_devices(job.devices, self.devices)
        if count > self.devices:
            raise Unfit(f"job {job.job_id!r} asks for {count} devices; this node has {self.devices}")
        problem = batch_problem(job.batch_size, count)
        if problem:
            raise Unfit(f"job {job.job_id!r}: {problem} (devices=all is {count} on this node)")
        with self._lock:
            current = self._running.get(job.job_id)
            if current is not None:
                if current.job.attempt == job.attempt:
                    return False
                raise Conflict(
                    f"job {job.job_id!r}: attempt {current.job.attempt} is still running on this node"
                )
            slots = self._free_slots_on(count)
            if slots is None:
                free = self.free_slots
                if not free:
                    raise Busy(f"node busy: all {self.slots} slot(s) are running jobs; try another node or later")
                raise Busy(f"node busy: the job needs free slots on {count} devices, {free} of {self.slots} "
                           f"slot(s) are free; try another node or later")
            for slot in slots:
                slot.busy = True
            env = dict(self.worker_env(tuple(s.device for s in slots))) if self.worker_env else {}
            running = _Running(replace(job, devices=count), slots, env)
            running.thread = threading.Thread(
                target=self._run, args=(running,), name=f"job-{job.job_id}", daemon=True
            )
            self._running[job.job_id] = running
        running.thread.start()
        return True

    def _free_slots_on(self, count: int) -> list[_Slot] | None:
        """``count`` free slots on distinct devices (the lowest first), or None."""
        chosen: dict[int, _Slot] = {}
        for slot in self._slots:
            if not slot.busy and slot.device not in chosen:
                chosen[slot.device] = slot
                if len(chosen) == count:
                    return list(chosen.values())
        return None

    def cancel(self, job_id: str) -> bool:
        """Ask ``job_id`` to stop at its next step boundary (killed after the grace period);
        False if it does not run here."""
        with self._lock:
            running = self._running.get(job_id)
        if running is None:
            return False
        self._ask_stop(running)
        return True

    def stop_all(self, reason: str = "node shutting down") -> None:
        """Stop every job; they end as failed and retryable, so central runs them elsewhere."""
        with self._lock:
            jobs = list(self._running.values())
        for running in jobs:
            running.stop_reason = FAILED
            self._ask_stop(running)

    def active_jobs(self) -> list[str]:
        with self._lock:
            return list(self._running)

    @property
    def free_slots(self) -> int:
        """Slots no job holds (a job on k devices holds k)."""
        return sum(1 for s in self._slots if not s.busy)

    def worker_pids(self) -> list[int | None]:
        """The process id of each slot's worker (None where none runs now)."""
        return [s.worker.pid if s.worker is not None and s.worker.alive() else None for s in self._slots]

    def join(self, timeout: float | None = None) -> bool:
        """Wait for running jobs to end; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [r.thread for r in self._running.values() if r.thread is not None]
            if not threads:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            threads[0].join(remaining)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every job, then end every worker process."""
        self.stop_all()
        self.join(timeout + self.stop_grace_s)
        for slot in self._slots:
            if slot.worker is not None:
                slot.worker.close()
                slot.worker = None

    # --- one job's thread --------------------------------------------------------------

    def _ask_stop(self, running: _Running) -> None:
        if running.stop.is_set():
            return
        running.stop_asked_at = time.monotonic()
        running.stop.set()
        worker = running.slot.worker
        if worker is not None:
            worker.send("stop", running.job.job_id)

    def _run(self, running: _Running) -> None:
        job = running.job
        started = time.monotonic()
        try:
            outcome = self._supervise(running)
        except BaseException as exc:  # noqa: BLE001 - a bug here must still end the job and free the slot
            log.exception("job %s: supervising its worker failed", job.job_id)
            running.slot.discard_worker(kill=True)
            outcome = outcome_of(exc)
        outcome = replace(self._final(running, outcome), seconds=time.monotonic() - started)
        if outcome.status == FAILED:
            log.warning("job %s failed: %s", job.job_id, outcome.error)
        with self._lock:
            self._running.pop(job.job_id, None)  # the slots are free before central hears of the end
            for slot in running.slots:
                slot.busy = False
        try:
            self.listener.on_end(job, outcome)
        except Exception:  # a listener bug must not kill the thread silently
            log.exception("job %s: reporting its end failed", job.job_id)

    def _final(self, running: _Running, outcome: Outcome) -> Outcome:
        if running.forced is not None:
            return running.forced
        if outcome.status == CANCELLED and running.stop_reason == FAILED:
            return Outcome(
                status=FAILED, result=outcome.result, error="the node shut down while the job ran",
                error_code=503, retryable=True, epochs_done=outcome.epochs_done,
            )
        return outcome

    def _supervise(self, running: _Running) -> Outcome:
        """Hand the job to the slot's worker and relay what it says until the job ends."""
        job, slot = running.job, running.slot
        for other in running.slots[1:]:
            other.discard_worker(kill=True)  # an idle worker there holds its device's memory
        worker = slot.ready_worker(running.env)
        epochs_done = job.resume_from_epoch
        if not worker.send("run", job.job_id, job, self.settings):
            slot.discard_worker(kill=True)
            worker = slot.ready_worker(running.env)
            worker.send("run", job.job_id, job, self.settings)
        if running.stop.is_set():  # asked before the worker existed
            worker.send("stop", job.job_id)
        while True:
            message = worker.recv(_POLL_S)
            if message is DEAD:
                code = worker.exitcode()
                slot.discard_worker(kill=True)
                if running.stop.is_set():
                    return Outcome(status=CANCELLED, epochs_done=epochs_done)
                log.error("job %s: worker process %s died (exit code %s)", job.job_id, worker.pid, code)
                return crashed(code, epochs_done)
            if message is None:
                asked = running.stop_asked_at
                if asked is not None and time.monotonic() - asked > self.stop_grace_s:
                    log.warning("job %s did not stop within %.1fs; killing its worker", job.job_id, self.stop_grace_s)
                    slot.discard_worker(kill=True)
                    return Outcome(status=CANCELLED, epochs_done=epochs_done)
                continue
            kind = message[0]
            if kind == "end":
                return message[2]
            if kind == "fetch":
                threading.Thread(target=self._answer_fetch, args=(worker, message[1], message[2]), daemon=True).start()
            elif kind == "epoch":
                epochs_done = message[2].epoch
                self._tell(running, "on_epoch", message[2])
            elif kind == "phase":
                self._tell(running, "on_phase", message[2])
            elif kind == "progress":
                self._tell(running, "on_progress", message[2:])
            elif kind == "log":
                self._tell(running, "on_log", message[2:])

    def _tell(self, running: _Running, method: str, item: object) -> None:
        listen = getattr(self.listener, method, None)
        if listen is None:
            return
        try:
            listen(running.job, item)
        except Exception as exc:  # noqa: BLE001 - a listener bug fails this job alone
            if running.forced is None:
                running.forced = outcome_of(exc)
            self._ask_stop(running)

    def _answer_fetch(self, worker: WorkerProcess, kind: str, arg: str) -> None:
        """Fetch for the worker here (the object store lives in this process) and reply."""
        try:
            if kind == "dataset":
                data = self.fetch_dataset(arg)  # type: ignore[misc]
            elif kind == "dataset_sha256":
                data = self.dataset_sha256(arg).encode()  # type: ignore[misc]
            else:
                data = self._fetch_checkpoint(arg)
        except BaseException as exc:  # noqa: BLE001 - the worker fails the job with this
            failed = outcome_of(exc)
            worker.send("reply", False, (failed.error, failed.error_code, failed.retryable))
            return
        worker.send("reply", True, bytes(data))

    def _fetch_checkpoint(self, uri: str) -> bytes:
        try:
            return self.fetch_object(uri)  # type: ignore[misc]
        except ValueError as exc:  # a malformed URI
            raise JobProblem(f"resume_checkpoint_uri: {exc}", 400, False) from exc
