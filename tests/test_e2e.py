"""The whole platform as separate processes: NATS, central, nodes, and clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus import CREDS_ENV
from central.cli.run import rest_sql
from central.client import Client
from central.cli.stack import Stack, StackConfig
from waiting import wait_until

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).parent / "scripts"


def stack_config(tmp_path: Path, nodes: int = 1, **kw) -> StackConfig:
    return StackConfig(
        home=tmp_path / "home", grpc_port=0, rest_port=0, nodes=nodes,
        node_port=0, deploy_port=0, terminal_port=0, fresh_nats=True, **kw,
    )


def sql(stack: Stack, query: str) -> list[list]:
    return rest_sql(stack.rest, query)["rows"]


def test_seed_flow_100_jobs_through_public_stubs(tmp_path):
    """The seed's flow: a client built from the public protocol submits 100 jobs at once;
    every job completes, once, with every epoch projected exactly once."""
    epochs = 2
    with Stack(stack_config(tmp_path, nodes=2, slots=2)) as stack:
        done = subprocess.run(
            [sys.executable, str(SCRIPTS / "public_protocol_client.py"), stack.grpc, "100", str(epochs), "240"],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert len(set(summary["job_ids"])) == 100
        assert summary["final"] == {job_id: "STATUS_COMPLETED" for job_id in summary["job_ids"]}
        assert summary["listed"] >= 100

        def projected():
            rows = sql(stack, "SELECT count(*), count(DISTINCT aggregate_id) FROM events WHERE type = 'JobCompleted'")
            return rows[0] == [100, 100]

        wait_until(projected, timeout=20, message="100 JobCompleted in the projection")
        epoch_rows = sql(stack, "SELECT count(*), count(DISTINCT (job_id, epoch)) FROM epochs")
        assert epoch_rows[0] == [100 * epochs, 100 * epochs], (sql(stack, "SELECT seq, reason FROM anomalies ORDER BY seq"), sql(stack, "SELECT count(*) FROM events WHERE type = 'EpochCompleted'"), sql(stack, "SELECT * FROM projection_checkpoint"))
        per_node = sql(stack, "SELECT count(DISTINCT node_id) FROM jobs WHERE state = 'completed'")
        assert per_node[0][0] == 2, "both nodes trained"


def test_a_job_published_as_an_event_by_a_script_trains(tmp_path):
    with Stack(stack_config(tmp_path)) as stack:
        data = {
            "job_id": "scripted-1",
            "spec": {
                "dataset_uri": "synthetic://classification?n=256&features=8&classes=3&seed=2",
                "epochs": 2,
                "batch_size": 32,
                "model_definition": json.dumps({"type": "mlp", "hidden": [8]}),
            },
        }
        published = subprocess.run(
            [sys.executable, "-m", "central", "events", "publish", "JobSubmitted", "--data", json.dumps(data),
             "--nats", stack.nats_url],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, CREDS_ENV: str(stack.nats.seed("publisher"))},  # a script's role
        )
        assert published.returncode == 0, published.stderr
        with Client(stack.grpc) as client:
            wait_until(lambda: _state(client, "scripted-1") in ("completed", "failed"), timeout=90)
            final = client.status("scripted-1")
        assert final.state == "completed", final.error
        assert final.sha256 and len(final.sha256) == 64


def _state(client: Client, job_id: str) -> str:
    try:
        return client.status(job_id).state
    except Exception:  # not projected into central's state yet
        return ""


def test_up_then_sigterm_leaves_no_process_behind(tmp_path):
    home = tmp_path / "home"
    up = subprocess.Popen(
        [sys.executable, "-m", "central", "up", "--home", str(home), "--grpc-port", "0", "--rest-port", "0",
         "--node-port", "0", "--deploy-port", "0", "--terminal-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        run = home / "run"
        wait_until(lambda: (run / "central.ready.json").exists() and (run / "node-0.ready.json").exists(), timeout=90)
        wait_until(lambda: _json(run / "node-0.ready.json") and _json(run / "central.ready.json"), timeout=10)
        pids = [_json(run / "central.ready.json")["pid"], _json(run / "node-0.ready.json")["pid"],
                _json(home / "nats" / "server.json")["pid"]]
        assert all(_alive(pid) for pid in pids)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        said = up.stdout.read()[-1500:]
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=10,
                   message=f"children gone; alive: {[(pid, _cmdline(pid)) for pid in pids if _alive(pid)]}; up said {said}")
    finally:
        if up.poll() is None:
            up.kill()


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    try:
        return status.read_text().split()[2] != "Z"  # a zombie has exited
    except OSError:
        return False


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "central", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_central_down_is_one_clear_line(tmp_path):
    started = time.monotonic()
    result = cli("jobs", "--central", "127.0.0.1:1")
    assert result.returncode == 3
    assert time.monotonic() - started < 20
    assert "central is not reachable at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_bad_job_file(tmp_path):
    bad = tmp_path / "job.toml"
    bad.write_text('dataset_uri = "builtin://digits"\nepochs = [oops\n')
    result = cli("submit", "--file", str(bad), "--central", "127.0.0.1:1")
    assert result.returncode == 2
    assert f"job file {bad} is not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = tmp_path / "job.json"
    unknown.write_text('{"dataset_uri": "builtin://digits", "epochz": 3}')
    result = cli("submit", "--file", str(unknown), "--central", "127.0.0.1:1")
    assert result.returncode == 2 and "unknown key 'epochz'" in result.stderr


def test_cli_unknown_job_id(tmp_path):
    with Stack(stack_config(tmp_path, nodes=0)) as stack:
        result = cli("jobs", "show", "no-such-job", "--central", stack.grpc)
        assert result.returncode == 4, result.stderr
        assert "no-such-job" in result.stderr and "Traceback" not in result.stderr


def test_python_client_submit_follow_cancel_jobs_nodes(tmp_path):
    with Stack(stack_config(tmp_path, nodes=1)) as stack, Client(stack.grpc) as client:
        [node] = client.nodes()
        assert node.online and node.devices[0].startswith("cpu")
        job_id = client.submit(dataset_uri="builtin://digits", model={"type": "mlp", "hidden": [32]}, epochs=3,
                               batch_size=64, hyperparameters={"seed": 3}, name="client-test")
        updates = list(client.follow(job_id))
        epochs = [u.epoch for u in updates]
        assert epochs == sorted(epochs) and {1, 2, 3} <= set(epochs)
        final = updates[-1]
        assert final.state == "completed" and final.total_epochs == 3 and final.name == "client-test"
        assert final.metrics["val_accuracy"] > 0.5 and len(final.sha256) == 64

        long_job = client.submit(dataset_uri="synthetic://classification?n=40000&features=64&classes=4",
                                 model={"type": "mlp", "hidden": [256, 256]}, epochs=500)
        wait_until(lambda: client.status(long_job).state == "running", timeout=60)
        client.cancel(long_job, reason="test")
        wait_until(lambda: client.status(long_job).state == "cancelled", timeout=30)
        assert {j.job_id: j.state for j in client.jobs()} == {job_id: "completed", long_job: "cancelled"}
