"""``cyxwiz jobs logs ID [-f]``: a job's log, from the bus.

What the job's node said (``JobLog`` and ``JobPhase`` telemetry on
``telemetry.job.<id>``: data loaded, compiled in N s, each epoch, warnings, the error with
its traceback) merged in time order with what happened to the job (its events on
``events.job.<id>``: submitted, waiting, assigned, requeued, failed, ...). ``--follow``
keeps going until the job ends, with its phase and the progress within the epoch live
(a status line on a terminal; ``progress`` lines when piped). Exit codes: the CLI's
table (``central.cli.exits``): 4 an unknown job, 3 NATS unreachable; with ``--follow``,
1 when the job failed or was cancelled.

Where the bus is: ``--nats`` / ``$CYXWIZ_NATS_URL``, else the embedded server of
``$CYXWIZ_HOME``, as for ``cyxwiz events tail``; the ``reader`` role is enough.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from bus import BusError, EventBus, StoredMessage, open_bus
from bus.loop import run as run_loop
from central.cli.exits import EXIT_FAILED, EXIT_INPUT, EXIT_NOT_FOUND, exit_code
from events import InvalidEvent, JobLog, JobPhase, job_subject, to_builtins

__all__ = ["describe", "jobs_logs", "register"]

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True)

ENDED = {"JobCompleted": 0, "JobFailed": EXIT_FAILED, "JobCancelled": EXIT_FAILED}
DRAIN_S = 1.0  # after the job ended, how long its node's last lines may still come


def register(app: typer.Typer) -> None:
    """Add ``logs`` to the ``jobs`` group that ``central.cli.jobs`` made."""
    jobs = next(group.typer_instance for group in app.registered_groups if group.name == "jobs")
    jobs.command("logs")(jobs_logs)


def jobs_logs(
    job_id: str = typer.Argument(..., help="the job's id"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep going until the job ends, with its phase live"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    nats_url: Optional[str] = typer.Option(None, "--nats", envvar="CYXWIZ_NATS_URL",
                                           help="NATS URL (default: the embedded server of CYXWIZ_HOME)"),
    home: Optional[Path] = typer.Option(None, "--home", envvar="CYXWIZ_HOME", help="state folder (default .cyxwiz)"),
) -> None:
    """Show a job's log lines (its node's, and what happened to it); -f to follow it live."""
    try:
        job_subject(job_id)
    except InvalidEvent as exc:
        _fail(f"job id: {exc}", EXIT_INPUT)
    printer = _Printer(as_json, live=follow and not as_json and out.is_terminal)
    try:
        code = run_loop(_show(job_id, follow, printer, nats_url, home))
    except BusError as exc:
        _fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    finally:
        printer.close()
    if code is None:
        _fail(f"unknown job {job_id!r}: no event of it is on the bus", EXIT_NOT_FOUND)
    raise typer.Exit(code if follow else 0)


async def _show(job_id: str, follow: bool, printer: "_Printer", nats_url: str | None, home: Path | None) -> int | None:
    """Print the job's log; the exit code of its end (0 while it runs), None if unknown."""
    bus, server = await open_bus(nats_url, home=home, timeout=2.5, role="reader")
    try:
        subjects = (job_subject(job_id), f"telemetry.job.{job_id}")
        history: list[StoredMessage] = []
        ends = []
        for subject in subjects:
            last = 0
            async for batch in bus.read_batches(1, subjects=subject):
                history.extend(batch)
                last = batch[-1].seq
            ends.append(last)
        history.sort(key=lambda m: m.time_ns)
        ended = None
        known = False
        for message in history:
            kind = printer.show(message, in_history=True)
            known = known or message.subject == subjects[0]
            if kind in ENDED:
                ended = ENDED[kind]
        if not known:
            return None
        if ended is not None or not follow:
            return ended or 0
        return await _follow(bus, subjects, ends, printer)
    finally:
        await bus.close()
        if server is not None and server.owned:
            await asyncio.to_thread(server.stop)


async def _follow(bus: EventBus, subjects: tuple[str, str], ends: list[int], printer: "_Printer") -> int:
    arrived: asyncio.Queue = asyncio.Queue()

    async def pump(subject: str, start: int) -> None:
        async for batch in bus.subscribe_batches(start, subjects=subject):
            for message in batch:
                arrived.put_nowait(message)

    pumps = [asyncio.create_task(pump(s, e + 1)) for s, e in zip(subjects, ends)]
    try:
        while True:
            message = await arrived.get()
            kind = printer.show(message, in_history=False)
            if kind in ENDED:
                await _drain(arrived, printer)
                return ENDED[kind]
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _drain(arrived: asyncio.Queue, printer: "_Printer") -> None:
    """The node's last lines (how the job ended, its traceback) come beside the end event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_S
    while (rest := deadline - loop.time()) > 0:
        try:
            printer.show(await asyncio.wait_for(arrived.get(), rest), in_history=False)
        except asyncio.TimeoutError:
            return


# --- what a record says ------------------------------------------------------------------


def describe(event: Any) -> tuple[str, str] | None:
    """(kind, text) of one record of a job's log; None for a record not shown as a line
    (an epoch event: the node's own epoch line says it, with more)."""
    name = type(event).__name__
    if isinstance(event, JobLog):
        return event.level, event.message
    if isinstance(event, JobPhase):
        if event.steps:
            share = event.step / event.steps
            return "progress", f"epoch {event.epoch}: {event.step}/{event.steps} steps ({share:.0%})"
        return "phase", event.phase
    spec = getattr(event, "spec", None)
    texts = {
        "JobSubmitted": lambda: f"submitted: {spec.dataset_uri}, {_model_type(spec.model_definition)}, "
                                f"{spec.epochs} epochs, batch size {spec.batch_size}",
        "JobWaiting": lambda: f"waiting: {event.reason}",
        "JobAssigned": lambda: f"assigned to node {event.node_id} (attempt {event.attempt}"
                               + (f", resuming after epoch {event.resume_epoch})" if event.resume_checkpoint else ")"),
        "JobRejected": lambda: f"refused by node {event.node_id} ({event.reason}): {event.message}",
        "JobStarted": lambda: f"running on node {event.node_id}",
        "JobRequeued": lambda: f"requeued for attempt {event.next_attempt}: {event.reason}",
        "JobCancelRequested": lambda: "cancel requested" + (f": {event.reason}" if event.reason else ""),
        "JobCompleted": lambda: f"completed on node {event.node_id} in {event.compute_seconds:.1f} s; model "
                                f"{event.artifact_uri or '-'} sha256 {event.sha256 or '-'}",
        "JobFailed": lambda: f"failed ({event.code or 500}, "
                             f"{'a retry elsewhere may help' if event.retryable else 'a retry will not help'}): "
                             f"{event.error}",
        "JobCancelled": lambda: f"cancelled at epoch {event.at_epoch}",
    }
    text = texts.get(name)
    return None if text is None else ("job", text())


def _model_type(definition: str) -> str:
    try:
        value = json.loads(definition) if definition else {"type": "mlp"}
    except ValueError:
        return "model ?"
    return str(value.get("type", "?")) if isinstance(value, dict) else "model ?"


class _Printer:
    """Lines to stdout; with ``live``, the latest phase and in-epoch progress as a status
    line under them (rich), instead of a line per progress record."""

    def __init__(self, as_json: bool, live: bool) -> None:
        self.as_json = as_json
        self.status = out.status("") if live else None
        self.phase = ""

    def show(self, message: StoredMessage, *, in_history: bool) -> str | None:
        """Print one stored record; returns its event type (None if it is not an event)."""
        try:
            event = message.decode()
        except InvalidEvent:
            return None
        shown = describe(event)
        name = type(event).__name__
        if shown is None or (shown[0] == "progress" and in_history):
            return name  # the past's progress is no news
        kind, text = shown
        if self.as_json:
            sys.stdout.write(json.dumps({"time": event.occurred_at.isoformat(), "kind": kind, "text": text,
                                         "event": to_builtins(event)})
                             + "\n")
            sys.stdout.flush()
            return name
        if kind == "phase":
            self.phase = text
        if self.status is not None and kind in ("phase", "progress"):
            self.status.update(f"[bold]{self.phase}[/bold] {text if kind == 'progress' else ''}")
            self.status.start()
            if kind == "progress":
                return name
        out.print(f"{_clock(event.occurred_at)}  {kind:<8} {text}", markup=False)
        trace = getattr(event, "traceback", "")
        if trace:
            out.print(trace.rstrip("\n"), markup=False)
        return name

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]


def _fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)
