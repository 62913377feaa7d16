"""``pip install cyxwiz`` without the node extra: the client, the CLI and central work with
jax, optax and h5py unimportable (tests/scripts/without_jax.py), and ``cyxwiz node`` says
how to install them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from central.cluster import read_cluster
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_JAX = [sys.executable, str(ROOT / "tests" / "scripts" / "without_jax.py")]
CENTRAL_MODULES = ["central.client", "central.server", "central.cli", "central.cli.data", "central.cli.jobs",
                   "central.cli.run", "central.cli.objects", "central.cli.deployments", "central.cli.shell",
                   "central.cli.nats", "central.cli.central", "central.cli.node", "central.cli.stack",
                   "central.readmodel.projection", "central.readmodel.projector", "central.adapters.rest",
                   "central.adapters.job_limits", "events.model_size", "protos.convert"]


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CYXWIZ_")}
    return {**clean, "PYTHONPATH": str(ROOT), **extra}


def test_the_node_extra_holds_jax_and_dev_keeps_everything():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert not any(name in base for name in ("jax", "optax", "h5py"))
    assert {d.split(">")[0] for d in project["optional-dependencies"]["node"]} == {"jax", "optax", "h5py"}
    assert "cyxwiz[node]" in project["optional-dependencies"]["dev"]


def test_central_and_the_cli_import_without_jax():
    done = subprocess.run([*WITHOUT_JAX, "--import", *CENTRAL_MODULES], capture_output=True, text=True,
                          timeout=120, env=env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "loaded: []"


def test_cyxwiz_node_without_jax_says_how_to_install_it():
    done = subprocess.run([*WITHOUT_JAX, "node", "--help"], capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: cyxwiz node needs jax, optax, h5py, which this install lacks: "
                                   "pip install 'cyxwiz[node]' (or -e '.[node]' in a clone) adds JAX, optax and h5py")
    up = subprocess.run([*WITHOUT_JAX, "up", "--home", "unused"], capture_output=True, text=True, timeout=120, env=env())
    assert up.returncode == 1 and "cyxwiz up starts a local node, which needs jax, optax, h5py" in up.stderr


def test_central_serves_without_jax(tmp_path):
    home = tmp_path / "home"
    process = subprocess.Popen([*WITHOUT_JAX, "central", "--home", str(home), "--grpc-port", "0", "--rest-port", "0",
                                "--host", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env(CYXWIZ_NATS_PORT="0"))
    try:
        wait_until(lambda: read_cluster(home) is not None or process.poll() is not None, timeout=90)
        assert process.poll() is None, process.communicate()[0][-3000:]
        listed = subprocess.run([*WITHOUT_JAX, "submit", "-d", "builtin://iris", "-m", "linear", "-e", "1", "--json"],
                                capture_output=True, text=True, timeout=60, env=env(CYXWIZ_HOME=str(home)))
        assert listed.returncode == 0, listed.stderr
        jobs = subprocess.run([*WITHOUT_JAX, "jobs", "--json"], capture_output=True, text=True, timeout=60,
                              env=env(CYXWIZ_HOME=str(home)))
        assert jobs.returncode == 0 and '"state": "queued"' in jobs.stdout
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out[-3000:]


NODE_FLAGS = ["--central", "--nats", "--nats-creds", "--node-port", "--deploy-port", "--terminal-port", "--bind",
              "--advertise-host", "--node-token", "--heartbeat", "--data-root", "--slots", "--home", "--name",
              "--node-id", "--checkpoint-every", "--ready-file", "--infer-http-port", "--api-key", "--model-root",
              "--terminal", "--terminal-user", "--terminal-idle-timeout"]


def test_cyxwiz_node_is_a_typer_command_with_its_flags():
    shown = subprocess.run([sys.executable, "-m", "central", "node", "--help"], capture_output=True, text=True,
                           timeout=120, env=env(COLUMNS="200"))
    assert shown.returncode == 0, shown.stderr
    assert "Usage: cyxwiz node [OPTIONS]" in shown.stdout and "╭─ Options ─" in shown.stdout
    listed = set(re.findall(r"│ (--[a-z-]+)", shown.stdout))
    assert set(NODE_FLAGS) <= listed, set(NODE_FLAGS) - listed
    bad = subprocess.run([sys.executable, "-m", "central", "node", "--bogus"], capture_output=True, text=True,
                         timeout=120, env=env())
    assert bad.returncode == 2 and "No such option: --bogus" in bad.stderr and "Traceback" not in bad.stderr
    value = subprocess.run([sys.executable, "-m", "central", "node", "--slots", "many"], capture_output=True,
                           text=True, timeout=120, env=env())
    assert value.returncode == 2 and value.stderr.strip() == "error: --slots: expected an integer (got 'many')"
