"""``cyxwiz datasets put FILE`` and ``cyxwiz models get JOB -o FILE``: the object store.

``datasets put`` uploads a data file to the ``cyxwiz-datasets`` bucket and prints the
``nats://NAME`` URI a job can train on. ``models get`` finds the job's JobCompleted
event on ``events.job.<id>``, downloads the artifact it names and checks its SHA-256
before writing the file (a mismatch writes nothing).

The store is the NATS at ``--nats`` / ``CYXWIZ_NATS_URL``, else the embedded server of
``--home`` (started for the command if none runs, then stopped).

Exit codes: 0 done; 1 the artifact is missing or its hash does not match; 2 bad input;
3 NATS unreachable; 4 unknown job; 5 the job has not completed.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Optional

import typer

from bus.files import write_atomic
from bus import BusError, BusUnavailable, EventBus, ObjectNotFound, open_bus, parse_object_uri
from bus.loop import run as run_loop
from events import JobCompleted
from events.codec import InvalidEvent, job_subject

from central.cli.exits import EXIT_FAILED as EXIT_CORRUPT  # noqa: E402
from central.cli.exits import EXIT_INPUT, EXIT_NOT_FOUND, EXIT_UNREACHABLE  # noqa: E402
from central.cli.exits import EXIT_REFUSED as EXIT_NOT_COMPLETED  # noqa: E402
DATASETS_BUCKET = "cyxwiz-datasets"
CONNECT_TIMEOUT_S = 3.0
DATASET_SUFFIXES = (".csv", ".npz", ".npy", ".h5", ".hdf5")

NatsOpt = typer.Option(None, "--nats", envvar="CYXWIZ_NATS_URL", help="NATS URL (default: the embedded server of --home)")
HomeOpt = typer.Option(Path(".cyxwiz"), "--home", envvar="CYXWIZ_HOME", help="state folder of the embedded NATS")


class CommandError(Exception):
    """A clear one-line failure with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _fail(exc: CommandError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.code)


async def _with_bus(nats: str | None, home: Path, work):
    try:
        bus, server = await open_bus(nats, home=home, timeout=CONNECT_TIMEOUT_S)
    except BusUnavailable as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from exc
    try:
        return await work(bus)
    except BusError as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from exc
    finally:
        await bus.close()
        if server is not None and server.owned:
            await asyncio.to_thread(server.stop)


# --- datasets put ----------------------------------------------------------------------


def dataset_name(path: Path, name: str | None) -> str:
    """The object name for ``path``: ``name`` or the file name, with a known suffix."""
    chosen = (name if name is not None else path.name).strip()
    if not chosen or chosen.startswith("/") or any(c.isspace() for c in chosen) or ".." in chosen.split("/"):
        raise CommandError(f"--name {chosen!r}: use a plain name like digits.csv (no spaces, no leading /, no ..)", EXIT_INPUT)
    if not chosen.lower().endswith(DATASET_SUFFIXES):
        raise CommandError(
            f"--name {chosen!r}: must end with {', '.join(DATASET_SUFFIXES)} so the node knows the format", EXIT_INPUT
        )
    return chosen


async def put_dataset(bus: EventBus, name: str, data: bytes) -> str:
    ref = await bus.put_object(DATASETS_BUCKET, name, data)
    typer.echo(f"uploaded {len(data)} bytes, sha256 {ref.sha256}", err=True)
    return f"nats://{name}"


# --- models get --------------------------------------------------------------------------


async def completed_event(bus: EventBus, job_id: str) -> JobCompleted:
    """The job's last JobCompleted event; CommandError when unknown or not completed."""
    try:
        subject = job_subject(job_id)
    except ValueError as exc:
        raise CommandError(f"job id {job_id!r}: {exc}", EXIT_INPUT) from exc
    last_seq = await bus.subject_version(subject)
    if last_seq == 0:
        raise CommandError(f"unknown job {job_id!r}: no events on {subject}", EXIT_NOT_FOUND)
    completed, last_type = None, ""
    async for msg in bus.read(1, until_seq=last_seq, subjects=subject):
        try:
            event = msg.decode()
        except InvalidEvent:
            continue
        last_type = type(event).__name__
        if isinstance(event, JobCompleted) and event.artifact_uri:
            completed = event
    if completed is None:
        raise CommandError(f"job {job_id!r} has not completed (its last event is {last_type}); no model yet", EXIT_NOT_COMPLETED)
    return completed


async def fetch_model(bus: EventBus, job_id: str) -> tuple[bytes, JobCompleted]:
    event = await completed_event(bus, job_id)
    try:
        bucket, name = parse_object_uri(event.artifact_uri or "")
        data = await bus.get_object(bucket, name)
    except (ValueError, ObjectNotFound) as exc:
        raise CommandError(f"job {job_id!r}: its model {event.artifact_uri!r} is not in the store: {exc}", EXIT_CORRUPT) from exc
    digest = hashlib.sha256(data).hexdigest()
    if event.sha256 and digest != event.sha256:
        raise CommandError(
            f"job {job_id!r}: SHA-256 mismatch: the stored model hashes to {digest}, "
            f"JobCompleted says {event.sha256}; nothing written", EXIT_CORRUPT,
        )
    return data, event


def write_atomically(path: Path, data: bytes) -> None:
    write_atomic(path, data)


def register(app: typer.Typer) -> None:
    datasets = typer.Typer(help="Data sets in the object store.", no_args_is_help=True)
    models = typer.Typer(help="Trained models in the object store.", no_args_is_help=True)
    app.add_typer(datasets, name="datasets")
    app.add_typer(models, name="models")

    @datasets.command("put")
    def datasets_put(
        file: Path = typer.Argument(..., help="CSV, NPZ, NPY or HDF5 file to upload"),
        name: Optional[str] = typer.Option(None, "--name", help="object name (default: the file name)"),
        nats: Optional[str] = NatsOpt,
        home: Path = HomeOpt,
    ) -> None:
        """Upload FILE to the dataset bucket; prints the nats:// URI to train on."""
        try:
            object_name = dataset_name(file, name)
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise CommandError(f"FILE {str(file)!r}: cannot read it ({exc.strerror})", EXIT_INPUT) from exc
            uri = run_loop(_with_bus(nats, home, lambda bus: put_dataset(bus, object_name, data)))
        except CommandError as exc:
            _fail(exc)
        typer.echo(uri)

    @models.command("get")
    def models_get(
        job_id: str = typer.Argument(..., help="the job whose trained model to download"),
        output: Path = typer.Option(..., "--output", "-o", help="file to write the model to"),
        fmt: str = typer.Option("cyxwiz", "--format", help="cyxwiz (the artifact as stored) or safetensors"),
        nats: Optional[str] = NatsOpt,
        home: Path = HomeOpt,
    ) -> None:
        """Download JOB's trained model to FILE after checking its SHA-256."""
        try:
            if output.is_dir():
                raise CommandError(f"-o {str(output)!r} is a directory; name a file", EXIT_INPUT)
            if fmt not in ("cyxwiz", "safetensors"):
                raise CommandError(f"--format {fmt!r}: choose cyxwiz or safetensors", EXIT_INPUT)
            data, event = run_loop(_with_bus(nats, home, lambda bus: fetch_model(bus, job_id)))
            if fmt == "safetensors":  # central.cli.model_export
                from central.cli.model_export import ArtifactError, to_safetensors

                try:
                    data = to_safetensors(data)
                except ArtifactError as exc:
                    raise CommandError(f"job {job_id!r}: {exc}", EXIT_CORRUPT) from exc
            try:
                write_atomically(output, data)
            except OSError as exc:
                raise CommandError(f"-o {str(output)!r}: cannot write it ({exc.strerror})", EXIT_INPUT) from exc
        except CommandError as exc:
            _fail(exc)
        typer.echo(f"saved the model of job {job_id} to {output} ({len(data)} bytes, sha256 {event.sha256})", err=True)
        print(output, file=sys.stdout)
