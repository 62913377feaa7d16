"""``cyxwiz submit``, ``cyxwiz jobs``, ``cyxwiz nodes``: the CLI for people, over gRPC.

Exit codes: ``central.cli.exits`` (one table for every command).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from central.cli.exits import EXIT_FAILED, EXIT_INPUT, exit_code
from central.client import Client, ClientError, JobInfo

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


CentralOpt = typer.Option(None, "--central", envvar="CYXWIZ_CENTRAL", help="central's gRPC address (default localhost:50051)")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")

MODEL_PRESETS = {
    "mlp": {"type": "mlp", "hidden": [128, 64]},
    "linear": {"type": "linear"},
    "cnn": {"type": "cnn", "conv": [{"features": 16, "kernel": 3}], "dense": [64], "input_shape": [8, 8, 1]},
}


def fail(message: str, code: int) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def client_errors(exc: ClientError) -> None:
    fail(str(exc), exit_code(exc))


def load_job_file(path: Path) -> dict[str, Any]:
    """A job file in TOML or JSON with the keys of ``Client.submit``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read job file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"job file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"job file {path} must hold a table/object of job settings")
    allowed = {"dataset_uri", "dataset", "model", "epochs", "batch_size", "hyperparameters", "priority",
               "job_type", "device", "job_id", "name", "estimated_memory"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"job file {path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}")
    if "dataset" in data:
        data["dataset_uri"] = data.pop("dataset")
    if "dataset_uri" not in data:
        raise ValueError(f"job file {path}: 'dataset_uri' is required (e.g. \"builtin://digits\")")
    return data


def parse_model(text: str) -> dict | str:
    if text in MODEL_PRESETS:
        return MODEL_PRESETS[text]
    try:
        model = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"--model must be one of {', '.join(MODEL_PRESETS)} or a JSON model definition: {exc}"
        ) from exc
    if not isinstance(model, dict):
        raise ValueError('--model JSON must be an object, e.g. {"type": "mlp", "hidden": [64]}')
    return model


def parse_hyperparameters(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp takes key=value, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def follow_job(client: Client, job_id: str, *, as_json: bool) -> JobInfo:
    """Show a live progress bar (or JSON lines) until the job ends; returns its final status."""
    updates = client.follow(job_id)
    if as_json:
        final = None
        for final in updates:
            print(json.dumps(final.to_dict()), flush=True)
        return final or client.status(job_id)
    return _follow_with_bar(client, job_id, updates)


def _follow_with_bar(client: Client, job_id: str, updates: Iterator[JobInfo]) -> JobInfo:
    progress = Progress(
        TextColumn("[bold]{task.fields[job]}[/bold] {task.fields[state]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[sps]} samples/s"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    final = None
    shown = {"loss": "-", "acc": "-", "sps": "-"}  # keep the last known figures when an update lacks them
    with progress:
        task = progress.add_task("train", total=None, job=job_id, state="queued", **shown)
        for final in updates:
            m = final.metrics
            acc = m.get("val_accuracy", m.get("accuracy"))
            if "loss" in m:
                shown["loss"] = f"{m['loss']:.4f}"
            if acc is not None:
                shown["acc"] = f"{acc:.3f}"
            if _sps(m) is not None:
                shown["sps"] = f"{_sps(m):,.0f}"
            progress.update(task, total=final.total_epochs or None, completed=final.epoch, state=final.state, **shown)
    return final or client.status(job_id)


def print_job_result(info: JobInfo) -> None:
    if info.state == "completed":
        console.print(f"[green]✔ job {info.job_id} completed[/green] on {info.node_id or '?'}")
        for key in sorted(info.metrics):
            console.print(f"  {key:<16} {info.metrics[key]:.4f}")
        if info.sha256:
            console.print(f"  model            {info.artifact_uri} ({info.size_bytes:,} bytes)")
            console.print(f"  sha256           {info.sha256}")
    else:
        console.print(f"[red]✘ job {info.job_id} {info.state}[/red]" + (f": {info.error}" if info.error else ""))


def register(app: typer.Typer) -> None:
    jobs_app = typer.Typer(help="List, show, follow and cancel jobs.", no_args_is_help=False, invoke_without_command=True)
    app.command("submit")(submit)
    jobs_app.callback()(jobs_default)
    jobs_app.command("show")(jobs_show)
    jobs_app.command("follow")(jobs_follow)
    jobs_app.command("cancel")(jobs_cancel)
    app.add_typer(jobs_app, name="jobs")
    app.command("nodes")(nodes)


def submit(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="dataset URI: builtin://digits, file://..., nats://NAME, synthetic://classification?n=..."),
    model: str = typer.Option("mlp", "--model", "-m", help="mlp, linear, cnn, or a JSON model definition"),
    epochs: int = typer.Option(10, "--epochs", "-e"),
    batch_size: int = typer.Option(64, "--batch-size", "-b"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="learning rate"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam, adamw or sgd"),
    hp: list[str] = typer.Option([], "--hp", help="extra hyperparameter key=value (repeatable)"),
    priority: str = typer.Option("normal", "--priority", help="low, normal, high, critical"),
    device: Optional[str] = typer.Option(None, "--device", help="required device: cpu or cuda"),
    devices: Optional[str] = typer.Option(None, "--devices", help='devices of one node to train on, data parallel: N or "all" (default 1; --batch-size must divide by N)'),
    name: Optional[str] = typer.Option(None, "--name"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="job file (TOML or JSON) with the same settings"),
    follow: bool = typer.Option(False, "--follow", help="show live progress until the job ends"),
    central: Optional[str] = CentralOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Submit a training job (flags or a job file); --follow to watch it train."""
    try:
        spec = load_job_file(file) if file else {}
        if dataset:
            spec["dataset_uri"] = dataset
        if "dataset_uri" not in spec:
            raise ValueError("give a dataset with --dataset URI (e.g. builtin://digits) or a job file with --file")
        if not file or "model" not in spec:
            spec["model"] = parse_model(model)
        if not file:
            spec.update(epochs=epochs, batch_size=batch_size, priority=priority)
        hyper = {**spec.get("hyperparameters", {}), **parse_hyperparameters(hp)}
        if learning_rate is not None:
            hyper["learning_rate"] = learning_rate
        if optimizer:
            hyper["optimizer"] = optimizer
        if devices:
            hyper["devices"] = devices
        spec["hyperparameters"] = hyper
        if device:
            spec["device"] = device
        if name:
            spec["name"] = name
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    try:
        with Client(central) as client:
            job_id = client.submit(**spec)
            if not follow:
                print(json.dumps({"job_id": job_id}) if as_json else job_id)
                return
            if not as_json:
                console.print(f"submitted [bold]{job_id}[/bold]")
            final = follow_job(client, job_id, as_json=as_json)
    except ClientError as exc:
        client_errors(exc)
    if not as_json:
        print_job_result(final)
    if final.state != "completed":
        raise typer.Exit(EXIT_FAILED)

def jobs_default(
    ctx: typer.Context,
    limit: int = typer.Option(100, "--limit"),
    central: Optional[str] = CentralOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List jobs (or use a sub-command: show, cancel, follow)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        with Client(central) as client:
            jobs = client.jobs(limit=limit)
    except ClientError as exc:
        client_errors(exc)
    if as_json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    table = Table("job", "name", "state", "node", "epoch", "loss", "accuracy")
    for job in jobs:
        m = job.metrics
        acc = m.get("val_accuracy", m.get("accuracy"))
        table.add_row(
            job.job_id, job.name, job.state, job.node_id or "-", f"{job.epoch}/{job.total_epochs}",
            f"{m['loss']:.4f}" if "loss" in m else "-", f"{acc:.3f}" if acc is not None else "-",
        )
    console.print(table)

def jobs_show(job_id: str, central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
    """Show one job with its latest metrics."""
    try:
        with Client(central) as client:
            info = client.status(job_id)
    except ClientError as exc:
        client_errors(exc)
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    table = Table(show_header=False)
    for key, value in info.to_dict().items():
        if key == "metrics":
            value = ", ".join(f"{k}={v:.4f}" for k, v in sorted(value.items())) or "-"
        table.add_row(key, str(value))
    console.print(table)

def jobs_follow(job_id: str, central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
    """Watch a job until it ends."""
    try:
        with Client(central) as client:
            final = follow_job(client, job_id, as_json=as_json)
    except ClientError as exc:
        client_errors(exc)
    if not as_json:
        print_job_result(final)
    if final.state != "completed":
        raise typer.Exit(EXIT_FAILED)

def jobs_cancel(job_id: str, reason: str = typer.Option("", "--reason"), central: Optional[str] = CentralOpt) -> None:
    """Cancel a job: a queued one at once, a running one at its next step."""
    try:
        with Client(central) as client:
            client.cancel(job_id, reason)
    except ClientError as exc:
        client_errors(exc)
    console.print(f"cancel requested for {job_id}")


def nodes(central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
    """List the compute nodes central knows."""
    try:
        with Client(central) as client:
            found = client.nodes()
    except ClientError as exc:
        client_errors(exc)
    if as_json:
        print(json.dumps([n.to_dict() for n in found], indent=2))
        return
    table = Table("node", "name", "endpoint", "online", "devices", "cores", "RAM GiB", "slots", "done")
    for n in found:
        table.add_row(
            n.node_id, n.name, n.endpoint, "yes" if n.online else "no", ", ".join(n.devices),
            str(n.cpu_cores), f"{n.ram_bytes / 2**30:.1f}", str(n.slots), str(n.jobs_completed),
        )
    console.print(table)


def _sps(metrics: dict[str, float]) -> float | None:
    return metrics.get("samples_per_second", metrics.get("samples_per_s"))
