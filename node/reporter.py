"""Reports to central, one ordered outbox per job, never blocking the training thread.

The executor's worker thread hands each epoch and the job's end to the reporter
(``on_epoch`` / ``on_end``): that only queues the item on the node's event loop. On the
loop, each job has one outbox task that, in order:

- for an epoch: waits for its checkpoint upload (uploads run one after another as soon
  as the epoch arrives, even while central is away; one still waiting when a newer
  checkpoint arrives is skipped, its epoch reported without one), then sends
  ``ReportProgress``;
- the job's phases (loading, compiling, training with the step within the epoch,
  checkpointing) and its log lines go out at once, in order, as ``JobPhase`` and
  ``JobLog`` telemetry on ``telemetry.job.<job_id>``, outside the outbox (best effort);
- at the end: uploads the final model to ``cyxwiz-models``, then sends
  ``ReportCompletion`` (completed, failed with error and retryable, or cancelled).

A report that fails because central is away is sent again with backoff until it
arrives; central derives deterministic event ids from (job, attempt, epoch), so a
report that arrived twice is stored once. Central stops a job by answering
``continue_job = false`` (or 404/409: the job is no longer this node's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from bus import BusError, ObjectRef
from events import JobLog, JobPhase
from node.agent import Backoff, CentralError
from node.artifacts import ArtifactStore
from node.executor import CANCELLED, COMPLETED, FAILED, Assignment, Outcome
from node.trainer import EpochResult
from protos import common_pb2, job_pb2, node_pb2
from protos.convert import status_error

__all__ = ["CentralLink", "Reporter", "completion_request", "end_line", "progress_request"]

MAX_LOG_TEXT = 16384  # characters of a log line or its traceback that are kept
MAX_TELEMETRY_QUEUED = 10_000

log = logging.getLogger(__name__)


class CentralLink(Protocol):
    """What the reporter needs from the agent."""

    node_id: str

    async def call(self, method: str, make_request: Callable[[], Message], *, timeout: float = 10.0) -> Message: ...


# --- the messages (pure) -------------------------------------------------------------


def epoch_metrics(epoch: EpochResult) -> dict[str, float]:
    values = {
        "loss": epoch.loss, "accuracy": epoch.accuracy, "val_loss": epoch.val_loss,
        "val_accuracy": epoch.val_accuracy, "epoch_seconds": epoch.seconds, "samples_per_second": epoch.samples_per_s,
    }
    return {k: float(v) for k, v in values.items() if v is not None}


def progress_request(node_id: str, job: Assignment, epoch: EpochResult, checkpoint_uri: str) -> node_pb2.ReportProgressRequest:
    metrics = epoch_metrics(epoch)
    status = job_pb2.JobStatus(
        job_id=job.job_id, status=common_pb2.STATUS_IN_PROGRESS, progress=epoch.epoch / epoch.total_epochs,
        current_node_id=node_id, metrics=metrics, current_epoch=epoch.epoch, attempt=job.attempt,
        checkpoint_uri=checkpoint_uri,
    )
    return node_pb2.ReportProgressRequest(
        node_id=node_id, job_id=job.job_id, status=status, current_metrics=metrics,
        checkpoint_uri=checkpoint_uri, attempt=job.attempt, epoch_seconds=epoch.seconds,
        samples_per_second=epoch.samples_per_s,
    )


def final_metrics(outcome: Outcome) -> dict[str, float]:
    r = outcome.result
    if r is None:
        return {}
    values = {"loss": r.loss, "accuracy": r.accuracy, "val_loss": r.val_loss, "val_accuracy": r.val_accuracy,
              "epochs": r.epochs_done, "compute_seconds": r.compute_seconds}
    return {k: float(v) for k, v in values.items() if v is not None}


def completion_request(
    node_id: str, job: Assignment, outcome: Outcome, model: ObjectRef | None
) -> node_pb2.ReportCompletionRequest:
    status = {COMPLETED: common_pb2.STATUS_COMPLETED, CANCELLED: common_pb2.STATUS_CANCELLED}.get(
        outcome.status, common_pb2.STATUS_FAILED
    )
    compute = outcome.result.compute_seconds if outcome.result is not None else outcome.seconds
    result = job_pb2.JobResult(
        job_id=job.job_id, status=status, final_metrics=final_metrics(outcome), total_compute_time=round(compute),
        compute_seconds=compute,
    )
    if model is not None:
        result.model_weights_uri = model.uri
        result.model_weights_hash = model.sha256
        result.model_size = model.size
    request = node_pb2.ReportCompletionRequest(node_id=node_id, job_id=job.job_id, result=result, attempt=job.attempt)
    if status == common_pb2.STATUS_FAILED:
        request.error.CopyFrom(status_error(outcome.error_code or 500, outcome.error))
        request.retryable = outcome.retryable
    return request


def end_line(outcome: Outcome) -> tuple[str, str, str]:
    """The last line of a job's log: how it ended (a crash of its worker included)."""
    if outcome.status == COMPLETED:
        return "info", f"completed in {outcome.seconds:.2f} s", ""
    if outcome.status == CANCELLED:
        return "info", f"cancelled after {outcome.epochs_done} epochs", ""
    again = "a retry elsewhere may help" if outcome.retryable else "a retry will not help"
    return "error", f"failed ({outcome.error_code or 500}, {again}): {outcome.error}", ""


# --- the outboxes ----------------------------------------------------------------------


@dataclass
class ReporterStats:
    progress_sent: int = 0
    completions_sent: int = 0
    retries: int = 0
    dropped: int = 0
    checkpoints_stored: int = 0
    checkpoints_superseded: int = 0
    telemetry_dropped: int = 0


class Reporter:
    """Feeds each job's outbox from worker threads (the executor's JobListener)."""

    def __init__(
        self,
        link: CentralLink,
        store: ArtifactStore | None,
        *,
        cancel: Callable[[str], object],
        backoff: Backoff | None = None,
        upload_patience_s: float = 120.0,
    ) -> None:
        self.link = link
        self.store = store
        self.cancel = cancel
        self.backoff = backoff or Backoff()
        self.upload_patience_s = upload_patience_s
        self.stats = ReporterStats()
        self._outboxes: dict[tuple[str, int], _Outbox] = {}
        self._telemetry_queue: asyncio.Queue = asyncio.Queue()
        self._telemetry_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    # JobListener: called from worker threads, returns at once.
    def on_epoch(self, job: Assignment, epoch: EpochResult) -> None:
        self._hand_over(job, "epoch", epoch)

    def on_end(self, job: Assignment, outcome: Outcome) -> None:
        self._hand_over(job, "end", outcome)
        self.on_log(job, end_line(outcome))

    def on_phase(self, job: Assignment, phase: str) -> None:
        """Publish the job's phase as ``JobPhase`` telemetry (best effort, not in order
        with the reports: it is for watching where the time goes)."""
        self._telemetry(JobPhase(job_id=job.job_id, node_id=self.link.node_id, attempt=job.attempt, phase=phase))

    def on_progress(self, job: Assignment, progress: tuple[int, int, int]) -> None:
        """Where training is within an epoch (a few times a second at most): a ``JobPhase``."""
        epoch, step, steps = progress
        self._telemetry(JobPhase(job_id=job.job_id, node_id=self.link.node_id, attempt=job.attempt, phase="training",
                                 epoch=epoch, step=step, steps=steps))

    def on_log(self, job: Assignment, line: tuple[str, str, str]) -> None:
        """One line of the job's log (``node.joblog``) as ``JobLog`` telemetry."""
        level, message, trace = line
        self._telemetry(JobLog(job_id=job.job_id, node_id=self.link.node_id, attempt=job.attempt, level=level,
                               message=message[:MAX_LOG_TEXT], traceback=trace[-MAX_LOG_TEXT:]))

    def _telemetry(self, event: JobPhase | JobLog) -> None:
        if self._loop is None or self.store is None:
            return
        self._loop.call_soon_threadsafe(self._queue_telemetry, event)

    def _queue_telemetry(self, event: JobPhase | JobLog) -> None:
        if self._telemetry_queue.qsize() >= MAX_TELEMETRY_QUEUED:
            self.stats.telemetry_dropped += 1  # the bus is away or slow: telemetry may be lost, reports may not
            return
        self._telemetry_queue.put_nowait(event)
        if self._telemetry_task is None or self._telemetry_task.done():
            self._telemetry_task = asyncio.get_running_loop().create_task(self._publish_telemetry())

    async def _publish_telemetry(self) -> None:
        """One publisher, so a job's lines and phases reach the stream in the order they happened."""
        while not self._telemetry_queue.empty():
            event = self._telemetry_queue.get_nowait()
            try:
                await self.store.publish_telemetry(event)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - telemetry is best effort
                self.stats.telemetry_dropped += 1
                log.debug("telemetry of job %s not published: %s", event.job_id, exc)

    def _hand_over(self, job: Assignment, kind: str, item: object) -> None:
        if self._loop is None:
            raise RuntimeError("Reporter.start() was not awaited on the node's loop")
        self._loop.call_soon_threadsafe(self._enqueue, job, kind, item)

    def _enqueue(self, job: Assignment, kind: str, item: object) -> None:
        key = (job.job_id, job.attempt)
        outbox = self._outboxes.get(key)
        if outbox is None:
            outbox = self._outboxes[key] = _Outbox(self, job)
            outbox.task.add_done_callback(lambda _t: self._outboxes.pop(key, None))
        outbox.put(kind, item)

    def pending(self) -> int:
        """Jobs whose reports are not all delivered yet."""
        return len(self._outboxes)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every outbox to deliver; True if all did."""
        tasks = [o.task for o in self._outboxes.values()]
        if not tasks:
            return True
        done, _ = await asyncio.wait(tasks, timeout=timeout)
        return len(done) == len(tasks)

    async def close(self) -> None:
        if self._telemetry_task is not None:
            self._telemetry_task.cancel()
        for outbox in list(self._outboxes.values()):
            outbox.task.cancel()
        await asyncio.gather(*(o.task for o in self._outboxes.values()), return_exceptions=True)

    # --- delivery with retries -------------------------------------------------------

    async def send(self, method: str, make_request: Callable[[], Message]) -> Message | None:
        """Send until central takes it; None when central refused it for good."""
        for delay in self.backoff.delays():
            try:
                return await self.link.call(method, make_request)
            except CentralError as exc:
                if not exc.retryable:
                    raise
                self.stats.retries += 1
                log.debug("%s not delivered (%s); retrying in %.2fs", method, exc, delay)
            await asyncio.sleep(delay)
        return None  # unreachable: delays() never ends

    async def store_object(self, what: str, put: Callable[[], object]) -> ObjectRef | None:
        """Upload with retries for up to ``upload_patience_s``; None if the store stayed away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.upload_patience_s
        for delay in self.backoff.delays():
            try:
                return await put()  # type: ignore[misc]
            except BusError as exc:
                if loop.time() + delay > deadline:
                    log.warning("could not store %s: %s", what, exc)
                    return None
            await asyncio.sleep(delay)
        return None


class _Outbox:
    """One job's reports, delivered in order by one task on the loop."""

    def __init__(self, reporter: Reporter, job: Assignment) -> None:
        self.reporter = reporter
        self.job = job
        self.queue: asyncio.Queue[tuple[str, object, asyncio.Task | None]] = asyncio.Queue()
        self.last_upload: asyncio.Task | None = None
        self.last_claim: list[bool] | None = None  # [superseded] of the newest upload, until it starts
        self.task = asyncio.get_running_loop().create_task(self._pump(), name=f"reports-{job.job_id}")

    def put(self, kind: str, item: object) -> None:
        upload = None
        if kind == "epoch" and item.checkpoint is not None and self.reporter.store is not None:  # type: ignore[attr-defined]
            if self.last_claim is not None:
                self.last_claim[0] = True  # still waiting: this newer checkpoint supersedes it
            claim = [False]
            idle = self.last_upload is None or self.last_upload.done()
            self.last_claim = None if idle else claim  # with nothing before it, it starts at once
            upload = asyncio.get_running_loop().create_task(self._upload_checkpoint(self.last_upload, item, claim))
            self.last_upload = upload
        self.queue.put_nowait((kind, item, upload))

    async def _upload_checkpoint(self, previous: asyncio.Task | None, epoch: EpochResult, claim: list[bool]) -> str:
        """Upload after the one before (one at a time, in epoch order); an upload that a
        newer checkpoint superseded while it waited uploads nothing (its epoch is reported
        without a checkpoint), so reports never fall behind training."""
        if previous is not None:
            await asyncio.wait([previous])
        if claim[0]:
            self.reporter.stats.checkpoints_superseded += 1
            return ""
        if self.last_claim is claim:
            self.last_claim = None  # started: no longer supersedable
        job, store = self.job, self.reporter.store
        ref = await self.reporter.store_object(
            f"checkpoint of job {job.job_id} epoch {epoch.epoch}",
            lambda: store.put_checkpoint(job.job_id, job.attempt, epoch.epoch, epoch.checkpoint),  # type: ignore[union-attr]
        )
        if ref is None:
            return ""
        self.reporter.stats.checkpoints_stored += 1
        return ref.uri

    async def _pump(self) -> None:
        while True:
            kind, item, upload = await self.queue.get()
            if kind == "epoch":
                await self._progress(item, await upload if upload is not None else "")  # type: ignore[arg-type]
            else:
                await self._completion(item)  # type: ignore[arg-type]
                return

    async def _progress(self, epoch: EpochResult, checkpoint_uri: str) -> None:
        job, reporter = self.job, self.reporter
        try:
            response = await reporter.send(
                "ReportProgress", lambda: progress_request(reporter.link.node_id, job, epoch, checkpoint_uri)
            )
        except CentralError as exc:
            reporter.stats.dropped += 1
            log.warning("job %s: progress of epoch %d refused: %s", job.job_id, epoch.epoch, exc)
            if exc.code in (404, 409):  # the job is no longer ours
                reporter.cancel(job.job_id)
            return
        reporter.stats.progress_sent += 1
        stop = response is not None and not response.continue_job and response.status in (
            common_pb2.STATUS_SUCCESS, common_pb2.STATUS_CANCELLED,
        )
        if stop and reporter.cancel(job.job_id):
            log.info("central asked to stop job %s", job.job_id)

    async def _completion(self, outcome: Outcome) -> None:
        job, reporter = self.job, self.reporter
        model = None
        if outcome.status == COMPLETED and outcome.result is not None and outcome.result.model_bytes is not None:
            model = await self._store_model(outcome.result.model_bytes)
            if model is None:
                outcome = Outcome(
                    status=FAILED, result=outcome.result, error="could not store the trained model in the object store",
                    error_code=503, retryable=True, epochs_done=outcome.epochs_done, seconds=outcome.seconds,
                )
        try:
            await reporter.send(
                "ReportCompletion", lambda: completion_request(reporter.link.node_id, job, outcome, model)
            )
        except CentralError as exc:
            reporter.stats.dropped += 1
            log.warning("job %s: completion refused: %s", job.job_id, exc)
            return
        reporter.stats.completions_sent += 1

    async def _store_model(self, data: bytes) -> ObjectRef | None:
        store = self.reporter.store
        if store is None:
            return None
        return await self.reporter.store_object(
            f"model of job {self.job.job_id}", lambda: store.put_model(self.job.job_id, data)
        )
