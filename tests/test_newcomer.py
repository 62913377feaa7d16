"""The newcomer's first hour (issue 15): the cluster file, the CLI's ids, numbers, exit
codes and notes, through the real ``cyxwiz`` command (a subprocess, not a TTY) against
one real stack (nats-server, central, a node)."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bus.server import ensure_server
from central.cli.stack import Stack, StackConfig
from central.client import Client
from central.cluster import cluster_path, read_cluster
from events.errors import ConfigError
from waiting import wait_until

pytestmark = pytest.mark.slow

UNSET = ("CYXWIZ_CENTRAL", "CYXWIZ_REST_URL", "CYXWIZ_NATS_URL", "CYXWIZ_NATS_CREDS", "CYXWIZ_REST_PORT",
         "CYXWIZ_API_KEY", "CYXWIZ_NATS_PORT")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, "CYXWIZ_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **extra}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("newcomer") / "home"
    config = StackConfig(home=home, grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0, terminal_port=0,
                         fresh_nats=True)
    saved = {k: os.environ.pop(k) for k in UNSET if k in os.environ}
    with Stack(config) as running:
        yield running
    os.environ.update(saved)
    assert not cluster_path(home).exists(), "central removes its cluster file when it stops"


@pytest.fixture(scope="module")
def cyxwiz(stack):
    """The real command, in another working folder, finding everything through the cluster file."""

    def run(*args: str, timeout: float = 120, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "central", *args], capture_output=True, text=True,
                              timeout=timeout, env=clean_env(stack.home, **env), cwd=cwd or stack.home.parent)

    return run


@pytest.fixture(scope="module")
def done_job(cyxwiz):
    """One completed job, submitted with no address given (the cluster file's central)."""
    result = cyxwiz("submit", "-d", "builtin://iris", "-m", "linear", "-e", "2", "--follow")
    assert result.returncode == 0, result.stderr[-2000:]
    job_id = re.search(r"submitted ([0-9a-f]{32})", result.stdout).group(1)
    return job_id


def test_the_cluster_file_names_the_stack_and_is_private(stack):
    path = cluster_path(stack.home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = read_cluster(stack.home)
    assert (info.grpc, info.rest, info.nats) == (stack.grpc, stack.rest, stack.nats_url)
    assert info.credentials == str((stack.home / "nats" / "creds" / "central.nk").resolve())
    assert info.host == "127.0.0.1" and info.job_calls_open is True
    assert info.pid == stack.central.info["pid"]


def test_client_finds_central_through_the_cluster_file(stack, monkeypatch):
    monkeypatch.setenv("CYXWIZ_HOME", str(stack.home))
    with Client() as client:
        assert client.target == stack.grpc
        assert [n.online for n in client.nodes()] == [True]


def test_a_stale_cluster_file_is_ignored(tmp_path):
    (tmp_path / "cluster.json").write_text(json.dumps({"grpc": "127.0.0.1:9", "pid": 2**22 + 12345}))
    assert read_cluster(tmp_path) is None


def test_show_by_prefix_in_readable_units(cyxwiz, done_job):
    shown = cyxwiz("jobs", "show", done_job[:6])
    assert shown.returncode == 0, shown.stderr
    fields = dict(re.findall(r"│ (\w+)\s+│ (.*?)\s*│", shown.stdout))
    assert fields["job_id"] == done_job
    assert fields["state"] == "completed"
    assert fields["progress"] == "100%"
    assert fields["epoch"] == "2/2" and fields["total_epochs"] == "2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+ (s|min) ago\)", fields["submitted_at"]), fields
    sha = fields["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", sha), "a piped SHA-256 stays whole on one line"
    as_json = json.loads(cyxwiz("jobs", "show", done_job[:6], "--json").stdout)
    assert as_json["progress"] == 1.0 and isinstance(as_json["submitted_at"], int)


def test_ambiguous_and_unknown_prefixes(cyxwiz, stack, tmp_path):
    for suffix in ("1111", "2222"):
        job = tmp_path / f"j{suffix}.toml"
        job.write_text(f'job_id = "feed{suffix}"\ndataset_uri = "builtin://iris"\nepochs = 1\n'
                       'model = { type = "linear" }\n')
        assert cyxwiz("submit", "--file", str(job)).returncode == 0
    ambiguous = cyxwiz("jobs", "show", "feed")
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.strip() == ("error: job id prefix 'feed' is ambiguous: it matches feed1111, feed2222; "
                                        "give more characters")
    unknown = cyxwiz("jobs", "cancel", "0000beef")
    assert unknown.returncode == 4
    assert unknown.stderr.strip() == "error: unknown job '0000beef': no job id is or starts with it"
    assert cyxwiz("jobs", "follow", "feed2").returncode == 0  # unique: waits for it to end


def test_file_settings_are_overridden_by_flags_with_a_note(cyxwiz, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('dataset_uri = "builtin://iris"\nepochs = 20\nmodel = { type = "linear" }\n'
                   'hyperparameters = { learning_rate = "0.01" }\n')
    result = cyxwiz("submit", "--file", str(job), "-e", "1", "--lr", "0.05", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"note: --epochs 1 overrides epochs = 20 from {job}",
        f'note: learning_rate=0.05 overrides hyperparameters.learning_rate = "0.01" from {job}',
    ]
    job_id = json.loads(result.stdout)["job_id"]
    shown = json.loads(cyxwiz("jobs", "show", job_id, "--json").stdout)
    assert shown["total_epochs"] == 1


def test_sql_through_the_cluster_file_and_central_is_grpc_everywhere(cyxwiz, done_job, stack):
    rows = cyxwiz("sql", f"SELECT state FROM jobs WHERE job_id = '{done_job}'", "--json")
    assert rows.returncode == 0, rows.stderr
    assert json.loads(rows.stdout) == {"state": "completed"}
    by_central = cyxwiz("sql", "SELECT 1 AS one", "--json", "--central", stack.grpc)
    assert json.loads(by_central.stdout) == {"one": 1}
    wrong = cyxwiz("sql", "SELECT 1", "--central", stack.rest)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (f"error: --central takes central's gRPC HOST:PORT (got {stack.rest!r}); "
                                    "give a REST URL with --rest")


def test_datasets_need_force_to_be_replaced_and_are_listed(cyxwiz, tmp_path):
    data = tmp_path / "tiny.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n")
    first = cyxwiz("datasets", "put", str(data))
    assert (first.returncode, first.stdout.strip()) == (0, "nats://tiny.csv")
    again = cyxwiz("datasets", "put", str(data))
    assert again.returncode == 5
    assert again.stderr.strip() == ("error: data set 'tiny.csv' is already in the store (nats://tiny.csv); "
                                    "--force replaces it, --name NAME uploads it beside it")
    assert cyxwiz("datasets", "put", str(data), "--force").returncode == 0
    listed = json.loads(cyxwiz("datasets", "list", "--json").stdout)
    assert {"name": "tiny.csv", "uri": "nats://tiny.csv"} in listed


def test_models_by_prefix_and_listed(cyxwiz, done_job, tmp_path):
    out = tmp_path / "model.bin"
    got = cyxwiz("models", "get", done_job[:8], "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.stat().st_size > 0
    listed = cyxwiz("models", "list")
    line = next(line for line in listed.stdout.splitlines() if done_job in line)
    assert re.search(r"\b[0-9a-f]{64}\b", line), "id and SHA-256 on one line when piped"
    missing = cyxwiz("models", "get", "0000dead", "-o", str(out))
    assert missing.returncode == 4
    assert missing.stderr.strip() == "error: unknown job '0000dead': no job id is or starts with it"


def test_publishing_an_anomaly_is_refused(cyxwiz, done_job):
    data = json.dumps({"job_id": done_job, "spec": {"dataset_uri": "builtin://iris", "epochs": 1}})
    result = cyxwiz("events", "publish", "JobSubmitted", "--data", data)
    assert result.returncode == 5
    assert re.fullmatch(
        rf"error: JobSubmitted would be an anomaly on events\.job\.{done_job} \(seq \d+\): job {done_job}: "
        r"JobSubmitted for a job that already exists \(completed\); nothing published", result.stderr.strip()), result.stderr
    epoch = json.dumps({"job_id": "never-submitted", "epoch": 1, "attempt": 1, "node_id": "n1"})
    skipped = cyxwiz("events", "publish", "EpochCompleted", "--data", epoch)
    assert skipped.returncode == 5 and "EpochCompleted for an unknown job" in skipped.stderr


def test_nats_unreachable_is_exit_3_for_every_command(cyxwiz, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"nats://127.0.0.1:{probe.getsockname()[1]}"
    data = tmp_path / "x.csv"
    data.write_text("a,label\n1,0\n")
    commands = [
        ("events", "tail", "--nats", dead, "-n", "1"),
        ("events", "publish", "JobSubmitted", "--data", '{"job_id": "x1", "spec": {"dataset_uri": "builtin://iris"}}',
         "--nats", dead),
        ("datasets", "put", str(data), "--nats", dead),
        ("datasets", "list", "--nats", dead),
        ("models", "get", "abcd1234", "-o", str(tmp_path / "m"), "--nats", dead),
        ("projection", "rebuild", "--db", str(tmp_path / "p.duckdb"), "--nats", dead),
    ]
    for args in commands:
        result = cyxwiz(*args)
        assert result.returncode == 3, (args, result.stderr)
        assert result.stderr.startswith(f"error: NATS at {dead}") or dead in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_version_and_completion(cyxwiz):
    version = cyxwiz("--version")
    assert version.returncode == 0 and re.fullmatch(r"cyxwiz \d+\.\d+\.\d+\S*", version.stdout.strip())
    # typer finds the shell from the process tree (shellingham), where under `just test` the
    # nearest is just's sh; its own switch for tests lets the shell be named instead
    completion = cyxwiz("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert completion.returncode == 0 and "complete" in completion.stdout, completion.stderr


def test_embedded_nats_port_from_the_environment(tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CYXWIZ_NATS_PORT", str(port))
    server = ensure_server(tmp_path)
    try:
        assert server.url == f"nats://127.0.0.1:{port}"
    finally:
        server.stop()
    monkeypatch.setenv("CYXWIZ_NATS_PORT", "http")
    with pytest.raises(ConfigError, match=r"CYXWIZ_NATS_PORT must be a port 0\.\.65535 \(0: any free port\), got 'http'"):
        ensure_server(tmp_path / "other")


def test_the_banner_says_where_it_listens_and_that_job_calls_are_open(stack):
    from rich.console import Console

    from central.cli.run import banner

    console = Console(width=300, record=True)
    console.print(banner(stack))
    text = re.sub(r" {2,}", "  ", console.export_text())
    assert "listening on  127.0.0.1 (this machine only; --host 0.0.0.0 for others)" in text
    assert ("job calls  OPEN: no API key, anyone who reaches central's port may submit and cancel jobs "
            "(set CYXWIZ_API_KEY)") in text
    assert str(cluster_path(stack.home)) in text


def test_central_stops_and_removes_its_cluster_file(tmp_path):
    home = tmp_path / "h"
    process = subprocess.Popen([sys.executable, "-m", "central", "central", "--home", str(home), "--grpc-port", "0",
                                "--rest-port", "0", "--host", "127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=clean_env(home, CYXWIZ_NATS_PORT="0"))
    try:
        wait_until(lambda: read_cluster(home) is not None, timeout=60)
        info = read_cluster(home)
        assert info.grpc.startswith("127.0.0.1:") and info.pid == process.pid
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out[-2000:]
    assert "job calls are OPEN: no API key" in out
    assert not cluster_path(home).exists()


def test_a_node_on_centrals_machine_finds_it_through_the_cluster_file(stack, tmp_path):
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "node", "--home", str(tmp_path / "node"), "--node-port", "0",
         "--deploy-port", "0", "--terminal-port", "0", "--bind", "127.0.0.1", "--name", "second", "--ready-file",
         str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(stack.home))
    try:
        wait_until(lambda: ready.exists() or process.poll() is not None, timeout=120)
        assert process.poll() is None, process.communicate()[0][-3000:]
        with Client(stack.grpc) as client:
            assert "second" in {n.name for n in client.nodes() if n.online}
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=60)
    assert f"note: central {stack.grpc} from the cluster file" in out


def test_shell_targets_by_prefix_or_name(stack):
    from central.cli.shell import resolve_target

    node_id = stack.node_parts[0].info["node_id"]
    assert resolve_target(stack.grpc, None, node_id[:9]) == node_id
    assert resolve_target(stack.grpc, None, "local-0") == "local-0"  # a name goes to central as given
    assert resolve_target(stack.grpc, None, "nothing-like-it") == "nothing-like-it"  # central answers 404
