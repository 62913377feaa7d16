"""``cyxwiz deploy``, ``cyxwiz deployments``, ``cyxwiz predict``: serving for people.

    cyxwiz deploy JOB_ID [--name N] [--node N] [--max-batch N] [--device cpu|cuda]   # waits for RUNNING
    cyxwiz deployments [list|show ID|stop ID|delete ID]
    cyxwiz predict DEPLOYMENT --input FILE.npy|-                  # '-': JSON numbers on stdin

Ids may be unique prefixes (``central.cli.ids``). Exit codes as for jobs: 2 bad input,
3 central unreachable, 4 unknown id, 5 refused (a failed deployment included).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from central.cli.exits import EXIT_INPUT
from central.cli.ids import resolve_deployment, resolve_job
from central.cli.jobs import CentralOpt, JsonOpt, client_errors, console, fail
from central.client import Client
from events.errors import CyxwizError

__all__ = ["register"]


def _show(d, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(d.to_dict()))
        return
    console.print(f"deployment [bold]{d.deployment_id}[/bold]: {d.status} (model {d.model_id}, node {d.node_id or '-'})")
    if d.status == "running":
        console.print(f"  HTTP:  {d.http_endpoint}/v1/predict   (OIP: {d.http_endpoint}/v2/models/{d.deployment_id}/infer)")
        console.print(f"  gRPC:  {d.grpc_endpoint}   (InferenceService, inference.GRPCInferenceService)")
        console.print("  or through central's REST port: POST /v1/predict, /v2/models/<id>/infer")
    elif d.message:
        console.print(f"  {d.message}")


def _read_input(source: str) -> np.ndarray:
    try:
        if source == "-":
            return np.asarray(json.loads(sys.stdin.read()), dtype=np.float32)
        data = Path(source).read_bytes()
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        fail(f"--input {source}: {exc} (give a .npy file, or '-' with a JSON list on stdin)", EXIT_INPUT)
        raise


def register(app: typer.Typer) -> None:
    deployments_app = typer.Typer(help="List, show, stop and delete deployments.", invoke_without_command=True)

    @app.command()
    def deploy(
        job_id: str = typer.Argument(..., help="a completed job's id"),
        name: str = typer.Option("", "--name", help="a name for the deployment"),
        node: str = typer.Option("", "--node", help="the node (id or name) to serve it; default: central picks"),
        max_batch: Optional[int] = typer.Option(None, "--max-batch", help="most samples run together (default 64)"),
        deployment_id: str = typer.Option("", "--id", help="the deployment id (default: a new one)"),
        device: Optional[str] = typer.Option(None, "--device", help="place it on a node with this device: cpu or cuda"),
        central: Optional[str] = CentralOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Serve a trained model: waits until it is RUNNING and prints where to send requests."""
        try:
            with Client(central) as client:
                d = client.deploy(resolve_job(client, job_id), deployment_id=deployment_id, name=name, node=node, max_batch=max_batch,
                                  device=device)
        except CyxwizError as exc:
            client_errors(exc)
        _show(d, as_json)

    @deployments_app.callback()
    def deployments(ctx: typer.Context, central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
        """Deployments across the cluster (no sub-command: list them)."""
        ctx.obj = central
        if ctx.invoked_subcommand is None:
            _list(central, as_json)

    @deployments_app.command("list")
    def list_(central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
        _list(central, as_json)

    @deployments_app.command()
    def show(deployment_id: str, central: Optional[str] = CentralOpt, as_json: bool = JsonOpt) -> None:
        try:
            with Client(central) as client:
                _show(client.deployment(resolve_deployment(client, deployment_id)), as_json)
        except CyxwizError as exc:
            client_errors(exc)

    @deployments_app.command()
    def stop(deployment_id: str, central: Optional[str] = CentralOpt) -> None:
        """Stop serving (requests already accepted are answered)."""
        try:
            with Client(central) as client:
                deployment_id = resolve_deployment(client, deployment_id)
                console.print(f"deployment {deployment_id}: {client.stop_deployment(deployment_id).status}")
        except CyxwizError as exc:
            client_errors(exc)

    @deployments_app.command()
    def delete(deployment_id: str, central: Optional[str] = CentralOpt) -> None:
        """Forget a stopped deployment."""
        try:
            with Client(central) as client:
                deployment_id = resolve_deployment(client, deployment_id)
                client.delete_deployment(deployment_id)
        except CyxwizError as exc:
            client_errors(exc)
        console.print(f"deployment {deployment_id}: deleted")

    @app.command()
    def predict(
        deployment_id: str = typer.Argument(...),
        input: str = typer.Option(..., "--input", "-i", help="a .npy file, or '-' for JSON numbers on stdin"),
        central: Optional[str] = CentralOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Predict with a deployment; prints the outputs (and the argmax of each row)."""
        x = _read_input(input)
        try:
            with Client(central) as client:
                out = client.predict(resolve_deployment(client, deployment_id), x)
        except CyxwizError as exc:
            client_errors(exc)
        if as_json:
            console.print_json(json.dumps({"output": out.tolist(), "argmax": out.argmax(-1).tolist()}))
            return
        for i, row in enumerate(out):
            console.print(f"{i}: argmax {int(row.argmax())}  " + " ".join(f"{v:.4f}" for v in row[:10]))

    def _list(central, as_json: bool) -> None:
        try:
            with Client(central) as client:
                found = client.deployments()
        except CyxwizError as exc:
            client_errors(exc)
        if as_json:
            console.print_json(json.dumps([d.to_dict() for d in found]))
            return
        table = Table("deployment", "status", "model", "node", "endpoint")
        for d in found:
            table.add_row(d.deployment_id, d.status, d.model_id, d.node_id, d.http_endpoint)
        console.print(table)

    app.add_typer(deployments_app, name="deployments")
