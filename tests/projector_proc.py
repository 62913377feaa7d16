"""A projector in its own process (for the kill -9 test), and a job history to feed it.

    python tests/projector_proc.py <nats url> <duckdb path> [max_batch] [--follow]

Catches up with the stream, printing ``applied <seq>`` after every committed batch,
then exits 0. With ``--follow`` (the benchmark's projector: central's, in its own
process) it prints ``ready`` once caught up and goes on applying live batches, events
stream only, until killed or its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus import EventBus  # noqa: E402
from central.readmodel.projection import EVENTS_STREAM, Projection  # noqa: E402

from central.readmodel.projector import Projector  # noqa: E402
from bus.loop import run as run_loop  # noqa: E402  (central's event loop: uvloop where installed)
from events import (  # noqa: E402
    Device,
    EpochCompleted,
    Event,
    JobAssigned,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobRequeued,
    JobSpec,
    JobStarted,
    JobSubmitted,
    NodeLost,
    NodeRegistered,
    utc_now,
)


def history(jobs: int, epochs: int = 3, nodes: int = 4) -> list[Event]:
    """A plausible history: nodes register; jobs are submitted, assigned (some
    rejected first), trained epoch by epoch, and end completed, failed, requeued and
    completed elsewhere, or cancelled. Deterministic for a given size."""
    out: list[Event] = [
        NodeRegistered(node_id=f"n{k}", endpoint=f"127.0.0.1:{50100 + k}", devices=[Device(type="cpu")], slots=2)
        for k in range(nodes)
    ]
    for i in range(jobs):
        job, node = f"job-{i}", f"n{i % nodes}"
        out.append(JobSubmitted(job_id=job, spec=JobSpec(epochs=epochs, priority=i % 4, hyperparameters={"lr": "0.01"})))
        if i % 7 == 3:
            out.append(JobRejected(job_id=job, node_id=node, reason="busy"))
            node = f"n{(i + 1) % nodes}"
        out.append(JobAssigned(job_id=job, node_id=node))
        if i % 11 == 5:
            out.append(JobCancelled(job_id=job))
            continue
        out.append(JobStarted(job_id=job, node_id=node))
        attempt = 1
        if i % 13 == 6:
            out.append(EpochCompleted(job_id=job, node_id=node, epoch=1, loss=1.0, checkpoint_uri=f"nats://cyxwiz-checkpoints/{job}/1"))
            out.append(JobRequeued(job_id=job, reason="node lost", next_attempt=2, resume_epoch=1))
            attempt, node = 2, f"n{(i + 2) % nodes}"
            out.append(JobAssigned(job_id=job, node_id=node, attempt=2, resume_epoch=1))
            out.append(JobStarted(job_id=job, node_id=node, attempt=2, resumed_from_epoch=1))
        for epoch in range(1, epochs + 1):
            out.append(EpochCompleted(job_id=job, node_id=node, attempt=attempt, epoch=epoch, loss=1.0 / epoch, accuracy=0.5 + epoch / 10))
        if i % 17 == 8:
            out.append(JobFailed(job_id=job, node_id=node, attempt=attempt, error="NaN loss"))
        else:
            out.append(JobCompleted(job_id=job, node_id=node, attempt=attempt, metrics={"loss": 1.0 / epochs, "accuracy": 0.9}))
    out.append(NodeLost(node_id="n0", last_seen=utc_now()))
    return out


async def main(url: str, path: str, max_batch: int, follow: bool = False) -> None:
    bus = await EventBus.connect(url)
    projection = Projection(path)

    def report(stream: str, seq: int) -> None:
        if stream == EVENTS_STREAM:
            print(f"applied {seq}", flush=True)

    projector = Projector(projection, bus, max_batch=max_batch, on_applied=report, telemetry=not follow)
    await projector.catch_up()
    if follow:
        print("ready", flush=True)
        task = asyncio.create_task(projector.run())
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    projection.close()
    await bus.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--follow"]
    run_loop(main(args[0], args[1], int(args[2]) if len(args) > 2 else 2000, follow="--follow" in sys.argv))
