"""Worker processes: where jobs train, so that the node can always end one.

Each executor slot keeps one long-lived worker process. It runs the slot's jobs one
after another, so JAX's compiled programs and the data set caches survive from one job
to the next (a second identical job starts training at once). The node's process
stays the I/O shell: it talks to central and the object store, and answers the
worker's fetch requests; the worker only computes.

The pipe between them carries pickled tuples:

- node → worker: ``("run", job_id, Assignment, JobSettings)``, ``("stop", job_id)``,
  ``("reply", ok, value)`` (the answer to a fetch), ``("exit",)``;
- worker → node: ``("phase", job_id, phase)``, ``("progress", job_id, epoch, step, steps)``,
  ``("log", job_id, level, message, traceback)`` (``node.joblog``),
  ``("epoch", job_id, EpochResult, has_checkpoint)``
  (then, if it has one, the checkpoint as one raw message),
  ``("fetch", kind, arg)`` (kind ``dataset``, ``dataset_sha256`` or ``object``), ``("end", job_id, Outcome)``.

A stop is cooperative (the trainer looks at it between chunks of steps); a worker
that does not end the job within the executor's grace period (stuck in XLA
compilation or in one very long step) is killed and a fresh one takes its place.
The worker processes come from a fork server that has already imported JAX and the
trainer, so starting one costs tens of milliseconds, not an interpreter start.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from node.jobs import CANCELLED, COMPLETED, FAILED, Assignment, JobProblem, Outcome, bad_job, outcome_of
from node.joblog import JobDiary
from events.jobspec import InvalidJobSpec, check_job
from node.models import ModelDefinitionError
from node.trainer import EpochResult, TrainConfig, Trainer

__all__ = ["JobSettings", "WorkerProcess", "leave_device_memory_to_workers", "run_job"]

log = logging.getLogger(__name__)
DEAD = object()  # what WorkerProcess.recv answers once the process is gone


@dataclass(frozen=True)
class JobSettings:
    """What the node decides for every job, sent with each one."""

    data_roots: tuple[Path, ...] = ()
    checkpoint_every: int = 1
    checkpoint_interval_s: float = 0.0
    can_fetch_datasets: bool = False
    can_fetch_objects: bool = False
    can_hash_datasets: bool = False  # the node can ask the store for a data set's SHA-256 (caching nats://)


# --- in the worker process ------------------------------------------------------------------


def run_job(
    job: Assignment,
    settings: JobSettings,
    *,
    fetch: Callable[[str, str], bytes],
    should_stop: Callable[[], bool],
    on_epoch: Callable[[EpochResult], None],
    diary: JobDiary,
) -> Outcome:
    """Train ``job`` here and say how it ended (its log lines, phases and progress go to
    ``diary``); never raises."""
    try:
        with diary.warnings_as_lines():
            outcome = _train(job, settings, fetch, should_stop, on_epoch, diary)
    except BaseException as exc:  # noqa: BLE001 - whatever happens, this job alone fails
        outcome = outcome_of(exc)
        diary.crashed(exc, outcome.error)
        return outcome
    if outcome.status == FAILED:
        diary.line(outcome.error, "error")
    return outcome


def _train(job, settings, fetch, should_stop, on_epoch, diary: JobDiary) -> Outcome:
    from node.datacache import cached_dataset

    try:  # the rules central checked at submit (events.jobspec), for a job from anywhere
        checked = check_job(dataset_uri=job.dataset_uri, model_definition=job.model_definition,
                            hyperparameters=job.hyperparameters, epochs=job.epochs, batch_size=job.batch_size)
    except InvalidJobSpec as exc:
        return bad_job(str(exc))
    hyper = checked.hyperparameters
    label_column = hyper.pop("label_column", None)
    hyper.pop("name", None)
    every = hyper.pop("checkpoint_every", settings.checkpoint_every)
    interval = hyper.pop("checkpoint_interval_s", settings.checkpoint_interval_s)
    config = TrainConfig(model_definition=checked.model, epochs=job.epochs, batch_size=job.batch_size,
                         checkpoint_every=every, checkpoint_interval_s=interval, **hyper)
    diary.phase("loading")
    loading = time.perf_counter()
    dataset = cached_dataset(
        job.dataset_uri, data_roots=settings.data_roots, label_column=label_column,
        fetch_object=(lambda name: fetch("dataset", name)) if settings.can_fetch_datasets else None,
        object_sha256=(lambda name: fetch("dataset_sha256", name).decode()) if settings.can_hash_datasets else None,
    )
    diary.loaded(dataset, time.perf_counter() - loading)
    try:
        trainer = Trainer(config, dataset)
    except ModelDefinitionError as exc:
        return bad_job(str(exc))
    except ValueError as exc:  # the model does not fit the data it was given
        return bad_job(f"model_definition: {exc}")
    resume = None
    if job.resume_checkpoint_uri:
        if not settings.can_fetch_objects:
            raise JobProblem("resume_checkpoint_uri: this node has no object store to read it from", 500, True)
        resume = fetch("object", job.resume_checkpoint_uri)
    if should_stop():
        return Outcome(status=CANCELLED, epochs_done=job.resume_from_epoch)
    def epoch_done(epoch: EpochResult) -> None:
        on_epoch(epoch)
        diary.epoch(epoch)

    result = trainer.run(on_epoch=epoch_done, should_stop=should_stop, resume=resume, on_phase=diary.phase,
                         on_progress=diary.progress)
    if result.stopped:
        return Outcome(status=CANCELLED, result=result, epochs_done=result.epochs_done)
    return Outcome(status=COMPLETED, result=result, epochs_done=result.epochs_done)


class _Serving:
    """The worker's loop: a reader thread takes the node's messages, the main thread trains."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.jobs: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.stops: dict[str, threading.Event] = {}
        self.send_lock = threading.Lock()

    def send(self, *message: Any) -> None:
        with self.send_lock:
            self.conn.send(message)

    def send_epoch(self, job_id: str, epoch: EpochResult) -> None:
        """An epoch; its checkpoint goes as raw bytes after it (no pickling of a copy)."""
        with self.send_lock:
            self.conn.send(("epoch", job_id, replace(epoch, checkpoint=None), epoch.checkpoint is not None))
            if epoch.checkpoint is not None:
                self.conn.send_bytes(epoch.checkpoint)

    def read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the node is gone: nobody is left to report to
            kind = message[0]
            if kind == "run":
                stop = self.stops[message[1]] = threading.Event()
                self.jobs.put((message[2], message[3], stop))
            elif kind == "stop" and message[1] in self.stops:
                self.stops[message[1]].set()
            elif kind == "reply":
                self.replies.put(message[1:])
            elif kind == "exit":
                self.jobs.put(None)
                return

    def fetch(self, kind: str, arg: str) -> bytes:
        self.send("fetch", kind, arg)
        ok, value = self.replies.get()
        if ok:
            return value
        raise JobProblem(*value)

    def serve(self) -> None:
        threading.Thread(target=self.read, name="worker-pipe", daemon=True).start()
        while (item := self.jobs.get()) is not None:
            job, settings, stop = item
            outcome = run_job(
                job, settings, fetch=self.fetch, should_stop=stop.is_set,
                on_epoch=lambda e, j=job.job_id: self.send_epoch(j, e),
                diary=JobDiary(lambda kind, *rest, j=job.job_id: self.send(kind, j, *rest)),
            )
            self.stops.pop(job.job_id, None)
            self.send("end", job.job_id, outcome)


def _serve(conn: Connection, env: Mapping[str, str | None], cache_dir: str | None) -> None:
    """The worker process's main: environment first (before JAX starts its backend)."""
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the node, which ends its workers
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s worker: %(message)s")
    from node.trainer import enable_compilation_cache

    if cache_dir:
        enable_compilation_cache(cache_dir, min_compile_seconds=0.5)
    else:  # every worker of this machine shares one cache: a fresh worker loads, not compiles
        enable_compilation_cache(Path(tempfile.gettempdir()) / f"cyxwiz-jax-cache-{os.getuid()}")
    _Serving(conn).serve()


# --- in the node's process ---------------------------------------------------------------

_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()
_NODE_ONLY_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
_RESTORE_IN_WORKERS: dict[str, str | None] = {}


def leave_device_memory_to_workers() -> None:
    """For the node's process, before it starts JAX: its own JAX (device detection,
    serving) does not preallocate GPU memory; the workers get the operator's setting back."""
    for name, value in _NODE_ONLY_ENV.items():
        if name not in _RESTORE_IN_WORKERS:
            _RESTORE_IN_WORKERS[name] = os.environ.get(name)
        os.environ[name] = value


def _context() -> Any:
    """A fork server that has imported this module (and so JAX and the trainer) once."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["node.worker"])
            _CONTEXT = ctx
        return _CONTEXT


class WorkerProcess:
    """The node's handle on one worker process."""

    def __init__(self, name: str, env: Mapping[str, str | None] | None = None, cache_dir: str | None = None) -> None:
        ctx = _context()
        self.conn, child = ctx.Pipe(duplex=True)
        env = {**_RESTORE_IN_WORKERS, **(env or {})}
        self.process = ctx.Process(target=_serve, args=(child, env, cache_dir), name=name, daemon=True)
        self.process.start()
        child.close()  # our copy: the worker's death must show as end of file here
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def send(self, *message: Any) -> bool:
        """Send; False if the worker is gone."""
        try:
            with self._send_lock:
                self.conn.send(message)
            return True
        except (OSError, EOFError, ValueError):
            return False

    def recv(self, timeout: float) -> Any:
        """The next message, None if none came within ``timeout``, DEAD if the worker is gone."""
        try:
            if not self.conn.poll(timeout):
                return None if self.process.is_alive() else DEAD
            message = self.conn.recv()
            if message[0] == "epoch" and message[3]:  # its checkpoint follows as raw bytes
                message = ("epoch", message[1], replace(message[2], checkpoint=self.conn.recv_bytes()))
            return message
        except (EOFError, OSError, ValueError):
            return DEAD

    def exitcode(self, wait: float = 5.0) -> int | None:
        self.process.join(wait)
        return self.process.exitcode

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def close(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        self.send("exit")
        self.process.join(timeout)
        self.kill()
