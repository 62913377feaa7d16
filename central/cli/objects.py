"""``cyxwiz datasets put|list`` and ``cyxwiz models get|list``: the object store.

``datasets put`` uploads a data file to the ``cyxwiz-datasets`` bucket and prints the
``nats://NAME`` URI a job can train on (a name already there needs ``--force``).
``models get`` finds the job's JobCompleted event on ``events.job.<id>``, downloads the
artifact it names and checks its SHA-256 before writing the file (a mismatch writes
nothing). Job ids may be given by a unique prefix (``central.cli.ids``).

The store is the NATS at ``--nats`` / ``CYXWIZ_NATS_URL``, else the one of the home's
cluster file, else the embedded server of ``--home`` (started for the command if none
runs, then stopped). ``models list`` asks central (``--central``) for completed jobs.

Exit codes (``events.errors.CODES``): 0 done; 1 the artifact is missing or its hash does
not match; 2 bad input; 3 NATS unreachable; 4 unknown job; 5 the job has not completed,
or the data set exists (no ``--force``); 6 NATS refused the credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bus.files import write_atomic
from bus import EventBus, ObjectNotFound, parse_object_uri
from bus.loop import run as run_loop
from central.cli.ids import resolve_job_on_bus
from central.cli.jobs import CentralOpt, JsonOpt, client_errors, console
from central.cli.render import size_text, when_text
from central.client import Client, ClientError
from central.cluster import connect_bus
from events import JobCompleted
from events.codec import InvalidEvent, job_subject
from events.errors import CyxwizError

__all__ = ["DATASETS_BUCKET", "register"]

DATASETS_BUCKET = "cyxwiz-datasets"
CONNECT_TIMEOUT_S = 3.0
DATASET_SUFFIXES = (".csv", ".npz", ".npy", ".h5", ".hdf5")

NatsOpt = typer.Option(None, "--nats", envvar="CYXWIZ_NATS_URL", help="NATS URL (default: the cluster file's, else the embedded server of --home)")
HomeOpt = typer.Option(Path(".cyxwiz"), "--home", envvar="CYXWIZ_HOME", help="state folder of the embedded NATS")


class CommandError(CyxwizError):
    """A clear one-line failure; ``code`` (HTTP-style) gives the exit code by the one table."""


def _fail(exc: CyxwizError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


async def _with_bus(nats: str | None, home: Path, work):
    bus, server = await connect_bus(nats, home=home, timeout=CONNECT_TIMEOUT_S)
    try:
        return await work(bus)
    finally:
        await bus.close()
        if server is not None and server.owned:
            await asyncio.to_thread(server.stop)


def _run(nats: str | None, home: Path, work):
    """``work(bus)`` on the store; every error of ours leaves as one line and its exit code."""
    try:
        return run_loop(_with_bus(nats, home, work))
    except CyxwizError as exc:
        _fail(exc)


# --- datasets put ----------------------------------------------------------------------


def dataset_name(path: Path, name: str | None) -> str:
    """The object name for ``path``: ``name`` or the file name, with a known suffix."""
    chosen = (name if name is not None else path.name).strip()
    if not chosen or chosen.startswith("/") or any(c.isspace() for c in chosen) or ".." in chosen.split("/"):
        raise CommandError(f"--name {chosen!r}: use a plain name like digits.csv (no spaces, no leading /, no ..)", code=400)
    if not chosen.lower().endswith(DATASET_SUFFIXES):
        raise CommandError(
            f"--name {chosen!r}: must end with {', '.join(DATASET_SUFFIXES)} so the node knows the format", code=400
        )
    return chosen


async def put_dataset(bus: EventBus, name: str, data: bytes, *, force: bool = False) -> str:
    if not force and name in await bus.list_objects(DATASETS_BUCKET):
        raise CommandError(f"data set {name!r} is already in the store (nats://{name}); "
                           "--force replaces it, --name NAME uploads it beside it", code=409)
    ref = await bus.put_object(DATASETS_BUCKET, name, data)
    typer.echo(f"uploaded {len(data)} bytes, sha256 {ref.sha256}", err=True)
    return f"nats://{name}"


# --- models get --------------------------------------------------------------------------


async def completed_event(bus: EventBus, job_id: str) -> JobCompleted:
    """The job's last JobCompleted event (``job_id`` may be a unique prefix); CommandError
    when unknown or not completed."""
    try:
        job_subject(job_id)
    except ValueError as exc:
        raise CommandError(f"job id {job_id!r}: {exc}", code=400) from exc
    job_id = await resolve_job_on_bus(bus, job_id)
    subject = job_subject(job_id)
    last_seq = await bus.subject_version(subject)
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
        raise CommandError(f"job {job_id!r} has not completed (its last event is {last_type}); no model yet", code=409)
    return completed


async def fetch_model(bus: EventBus, job_id: str) -> tuple[bytes, JobCompleted]:
    event = await completed_event(bus, job_id)
    try:
        bucket, name = parse_object_uri(event.artifact_uri or "")
        data = await bus.get_object(bucket, name)
    except (ValueError, ObjectNotFound) as exc:
        raise CommandError(f"job {event.job_id!r}: its model {event.artifact_uri!r} is not in the store: {exc}", code=500) from exc
    digest = hashlib.sha256(data).hexdigest()
    if event.sha256 and digest != event.sha256:
        raise CommandError(
            f"job {event.job_id!r}: SHA-256 mismatch: the stored model hashes to {digest}, "
            f"JobCompleted says {event.sha256}; nothing written", code=500,
        )
    return data, event


def register(app: typer.Typer) -> None:
    datasets = typer.Typer(help="Data sets in the object store.", no_args_is_help=True)
    models = typer.Typer(help="Trained models in the object store.", no_args_is_help=True)
    app.add_typer(datasets, name="datasets")
    app.add_typer(models, name="models")

    @datasets.command("put")
    def datasets_put(
        file: Path = typer.Argument(..., help="CSV, NPZ, NPY or HDF5 file to upload"),
        name: Optional[str] = typer.Option(None, "--name", help="object name (default: the file name)"),
        force: bool = typer.Option(False, "--force", help="replace a data set of that name already in the store"),
        nats: Optional[str] = NatsOpt,
        home: Path = HomeOpt,
    ) -> None:
        """Upload FILE to the dataset bucket; prints the nats:// URI to train on."""
        try:
            object_name = dataset_name(file, name)
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise CommandError(f"FILE {str(file)!r}: cannot read it ({exc.strerror})", code=400) from exc
        except CommandError as exc:
            _fail(exc)
        typer.echo(_run(nats, home, lambda bus: put_dataset(bus, object_name, data, force=force)))

    @datasets.command("list")
    def datasets_list(nats: Optional[str] = NatsOpt, home: Path = HomeOpt, as_json: bool = JsonOpt) -> None:
        """The data sets in the store, as the nats:// URIs jobs train on."""
        names = _run(nats, home, lambda bus: bus.list_objects(DATASETS_BUCKET))
        if as_json:
            print(json.dumps([{"name": n, "uri": f"nats://{n}"} for n in sorted(names)], indent=2))
            return
        table = Table("name", "dataset_uri")
        for n in sorted(names):
            table.add_row(n, f"nats://{n}")
        console.print(table)

    @models.command("list")
    def models_list(central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
        """The trained models: every completed job with its artifact and SHA-256."""
        try:
            with Client(central) as client:
                done = [j for j in client.iter_jobs() if j.state == "completed" and j.sha256]
        except ClientError as exc:
            client_errors(exc)
        if as_json:
            print(json.dumps([{"job_id": j.job_id, "name": j.name, "artifact_uri": j.artifact_uri, "sha256": j.sha256,
                               "size_bytes": j.size_bytes, "finished_at": j.finished_at} for j in done], indent=2))
            return
        table = Table("job", "name", "finished", "size", "sha256")
        for j in done:
            table.add_row(j.job_id, j.name or "-", when_text(j.finished_at), size_text(j.size_bytes), j.sha256)
        console.print(table)

    @models.command("get")
    def models_get(
        job_id: str = typer.Argument(..., help="the job (id or unique prefix) whose trained model to download"),
        output: Path = typer.Option(..., "--output", "-o", help="file to write the model to"),
        fmt: str = typer.Option("cyxwiz", "--format", help="cyxwiz (the artifact as stored) or safetensors"),
        nats: Optional[str] = NatsOpt,
        home: Path = HomeOpt,
    ) -> None:
        """Download JOB's trained model to FILE after checking its SHA-256."""
        try:
            if output.is_dir():
                raise CommandError(f"-o {str(output)!r} is a directory; name a file", code=400)
            if fmt not in ("cyxwiz", "safetensors"):
                raise CommandError(f"--format {fmt!r}: choose cyxwiz or safetensors", code=400)
        except CommandError as exc:
            _fail(exc)
        data, event = _run(nats, home, lambda bus: fetch_model(bus, job_id))
        try:
            if fmt == "safetensors":  # central.cli.model_export
                from central.cli.model_export import ArtifactError, to_safetensors

                try:
                    data = to_safetensors(data)
                except ArtifactError as exc:
                    raise CommandError(f"job {event.job_id!r}: {exc}", code=500) from exc
            try:
                write_atomic(output, data)
            except OSError as exc:
                raise CommandError(f"-o {str(output)!r}: cannot write it ({exc.strerror})", code=400) from exc
        except CommandError as exc:
            _fail(exc)
        typer.echo(f"saved the model of job {event.job_id} to {output} ({len(data)} bytes, sha256 {event.sha256})", err=True)
        print(output, file=sys.stdout)
