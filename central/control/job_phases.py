"""Where each running job is now: the latest ``JobPhase`` its node published on
``telemetry.job.<job_id>`` (loading, compiling, training with the step within the epoch,
checkpointing), for ``GetJobStatus`` and ``StreamJobUpdates``.

Telemetry, not state: best effort, kept in memory only, and only for a job that is
assigned or running on the node that sent it, for its current attempt. Central follows
the telemetry stream from its end when it starts (a running job's next report, at most a
fraction of a second away while it trains, brings it back). The read model keeps the
same latest phase in the ``jobs`` table (``phase``, ``phase_at``, ``phase_step`` ...).
"""

from __future__ import annotations

import asyncio
import logging

from bus import TELEMETRY_STREAM, EventBus
from central.lifecycle.jobs import ACTIVE, JobState
from central.lifecycle.state import CentralState
from events import InvalidEvent, JobPhase, misplaced

__all__ = ["JobPhases"]

log = logging.getLogger("cyxwiz.central.phases")

SUBJECTS = "telemetry.job.>"


class JobPhases:
    """The latest phase of every active job (``of(job)``), folded from telemetry."""

    def __init__(self, state: CentralState) -> None:
        self.state = state
        self.latest: dict[str, JobPhase] = {}
        state.listen(self._on_event)

    def _on_event(self, event, old, new) -> None:
        if isinstance(new, JobState) and new.done:
            self.latest.pop(new.job_id, None)

    def apply(self, phase: JobPhase) -> bool:
        """Keep ``phase`` if its node holds the job on that attempt; True when kept."""
        job = self.state.jobs.get(phase.job_id)
        if job is None or not job.holds(phase.node_id, phase.attempt):
            return False
        self.latest[phase.job_id] = phase
        self.state.tell_watchers(phase)
        return True

    def of(self, job: JobState) -> JobPhase | None:
        """The job's phase now: None unless it is assigned or running and its node said one."""
        phase = self.latest.get(job.job_id)
        if phase is None or job.status not in ACTIVE or phase.attempt != job.attempt:
            return None
        return phase

    async def run(self, bus: EventBus) -> None:
        """Follow ``telemetry.job.>`` from the stream's end, forever (cancel to stop)."""
        start = None
        while True:
            try:
                if start is None:
                    start = await bus.last_sequence(TELEMETRY_STREAM) + 1
                async for batch in bus.subscribe_batches(start, subjects=SUBJECTS):
                    for message in batch:
                        start = message.seq + 1
                        self._take(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a dropped subscription: resume where we were
                log.warning("job telemetry interrupted (%s); resuming", exc)
                await asyncio.sleep(0.5)

    def _take(self, message) -> None:
        if message.headers.get("Cyxwiz-Event-Type") not in (None, "JobPhase"):
            return  # JobLog lines: for `cyxwiz jobs logs`, not for the status
        try:
            event = message.decode()
        except InvalidEvent:
            return
        if isinstance(event, JobPhase) and misplaced(event, message.subject) is None:
            self.apply(event)
