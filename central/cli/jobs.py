"""``cyxwiz submit``, ``cyxwiz jobs``, ``cyxwiz nodes``: the CLI for people, over gRPC.

Central is ``--central`` / ``CYXWIZ_CENTRAL``, else the home's cluster file
(``central.cluster``). Job ids may be given by a unique prefix (``central.cli.ids``).
Exit codes: ``central.cli.exits`` (one table for every command).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from central.cli.exits import EXIT_FAILED, EXIT_INPUT, exit_code
from central.cli.ids import resolve_job
from central.cli.render import console, epoch_text, err_console, metric_text, percent_text, size_text, when_text
from central.client import Client, ClientError, JobInfo
from events.errors import CyxwizError

__all__ = ["CentralOpt", "JsonOpt", "client_errors", "console", "err_console", "fail", "follow_job", "jobs_app",
           "load_job_file", "parse_model", "print_job_result", "register"]

CentralOpt = typer.Option(None, "--central", envvar="CYXWIZ_CENTRAL",
                          help="central's gRPC HOST:PORT (default: the cluster file's, else localhost:50051)")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")

MODEL_PRESETS = {
    "mlp": {"type": "mlp", "hidden": [128, 64]},
    "linear": {"type": "linear"},
    "cnn": {"type": "cnn", "conv": [{"features": 16, "kernel": 3}], "dense": [64], "input_shape": [8, 8, 1]},
}


def fail(message: str, code: int) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def client_errors(exc: CyxwizError) -> None:
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
            console.print(f"  {key:<16} {metric_text(info.metrics[key])}")
        if info.sha256:
            console.print(f"  model            {info.artifact_uri} ({size_text(info.size_bytes)})")
            console.print(f"  sha256           {info.sha256}")
    else:
        console.print(f"[red]✘ job {info.job_id} {info.state}[/red]" + (f": {info.error}" if info.error else ""))


# ``cyxwiz jobs ...``: module-level, so another module of this package can add a sub-command
# to it in its own ``register`` (typer reads the commands when the CLI runs)
jobs_app = typer.Typer(help="List, show, follow and cancel jobs.", no_args_is_help=False, invoke_without_command=True)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    jobs_app.callback()(jobs_default)
    jobs_app.command("show")(jobs_show)
    jobs_app.command("follow")(jobs_follow)
    jobs_app.command("cancel")(jobs_cancel)
    app.add_typer(jobs_app, name="jobs")
    app.command("nodes")(nodes)


def submit(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="dataset URI: builtin://digits, file://..., nats://NAME, synthetic://classification?n=..."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="mlp (default), linear, cnn, or a JSON model definition"),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="epochs to train (default 10)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="samples per step (default 64)"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="learning rate"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam, adamw or sgd"),
    hp: list[str] = typer.Option([], "--hp", help="extra hyperparameter key=value (repeatable)"),
    priority: Optional[str] = typer.Option(None, "--priority", help="low, normal (default), high, critical"),
    device: Optional[str] = typer.Option(None, "--device", help="required device: cpu or cuda"),
    name: Optional[str] = typer.Option(None, "--name"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="job file (TOML or JSON) with the same settings; flags given override it"),
    follow: bool = typer.Option(False, "--follow", help="show live progress until the job ends"),
    central: Optional[str] = CentralOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Submit a training job (flags or a job file); --follow to watch it train."""
    try:
        spec = load_job_file(file) if file else {}
        flags = {"dataset_uri": ("--dataset", dataset), "model": ("--model", model), "epochs": ("--epochs", epochs),
                 "batch_size": ("--batch-size", batch_size), "priority": ("--priority", priority),
                 "device": ("--device", device), "name": ("--name", name)}
        for key, (flag, value) in flags.items():
            if value is None:
                continue
            if key in spec:
                err_console.print(f"note: {flag} {value} overrides {key} = {json.dumps(spec[key])} from {file}",
                                  highlight=False, markup=False)
            spec[key] = parse_model(value) if key == "model" else value
        if "dataset_uri" not in spec:
            raise ValueError("give a dataset with --dataset URI (e.g. builtin://digits) or a job file with --file")
        if "model" not in spec:
            spec["model"] = parse_model("mlp")
        elif isinstance(spec["model"], str):
            spec["model"] = parse_model(spec["model"])
        spec.setdefault("epochs", SUBMIT_DEFAULTS["epochs"])
        spec.setdefault("batch_size", SUBMIT_DEFAULTS["batch_size"])
        spec.setdefault("priority", SUBMIT_DEFAULTS["priority"])
        given = {**parse_hyperparameters(hp), **({"learning_rate": learning_rate} if learning_rate is not None else {}),
                 **({"optimizer": optimizer} if optimizer else {})}
        hyper = dict(spec.get("hyperparameters", {}))
        for key, value in given.items():
            if key in hyper:
                err_console.print(f"note: {key}={value} overrides hyperparameters.{key} = {json.dumps(hyper[key])} "
                                  f"from {file}", highlight=False, markup=False)
            hyper[key] = value
        spec["hyperparameters"] = hyper
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


SUBMIT_DEFAULTS = {"epochs": 10, "batch_size": 64, "priority": "normal"}


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
    table = Table("job", "name", "state", "node", "epoch", "progress", "loss", "accuracy", "submitted")
    for job in jobs:
        m = job.metrics
        acc = m.get("val_accuracy", m.get("accuracy"))
        table.add_row(
            job.job_id, job.name, job.state, job.node_id or "-", epoch_text(job.epoch, job.total_epochs),
            percent_text(job.progress), metric_text(m["loss"]) if "loss" in m else "-",
            metric_text(acc) if acc is not None else "-", when_text(job.submitted_at),
        )
    console.print(table)

def jobs_show(job_id: str, central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
    """Show one job (id or unique prefix) with its latest metrics."""
    try:
        with Client(central) as client:
            info = client.status(resolve_job(client, job_id))
    except CyxwizError as exc:
        client_errors(exc)
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    table = Table(show_header=False)
    for key, value in info.to_dict().items():
        table.add_row(key, _shown(key, value, info))
    console.print(table)


def _shown(key: str, value: Any, info: JobInfo) -> str:
    """One field of ``jobs show`` as people read it (``--json`` has the raw values)."""
    if key == "metrics":
        return ", ".join(f"{k}={metric_text(v)}" for k, v in sorted(value.items())) or "-"
    if key in ("submitted_at", "started_at", "finished_at"):
        return when_text(value)
    if key == "progress":
        return percent_text(value)
    if key == "epoch":
        return epoch_text(value, info.total_epochs)
    if key == "total_epochs":
        return str(int(value))
    if key == "size_bytes":
        return size_text(value)
    return str(value) if value not in ("", None) else "-"

def jobs_follow(job_id: str, central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
    """Watch a job (id or unique prefix) until it ends."""
    try:
        with Client(central) as client:
            final = follow_job(client, resolve_job(client, job_id), as_json=as_json)
    except CyxwizError as exc:
        client_errors(exc)
    if not as_json:
        print_job_result(final)
    if final.state != "completed":
        raise typer.Exit(EXIT_FAILED)

def jobs_cancel(job_id: str, reason: str = typer.Option("", "--reason"), central: Optional[str] = CentralOpt) -> None:
    """Cancel a job (id or unique prefix): a queued one at once, a running one at its next step."""
    try:
        with Client(central) as client:
            job_id = resolve_job(client, job_id)
            client.cancel(job_id, reason)
    except CyxwizError as exc:
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
