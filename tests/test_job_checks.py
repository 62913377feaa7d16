"""Jobs checked at submit, failures that say whether a retry helps, waiting reasons,
phases and `cyxwiz jobs logs`: against a real stack (nats-server, central and a node as
processes) through the real CLI, exit codes and messages asserted exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from central.cli.run import rest_sql
from central.cli.stack import Stack, StackConfig
from protos import job_pb2, job_pb2_grpc
from waiting import wait_until

pytestmark = pytest.mark.slow

KNOWN = ("optimizer, learning_rate, weight_decay, momentum, seed, dtype, validation_split, steps_per_chunk, "
         "checkpoint_every, checkpoint_interval_s, label_column, name, devices")
LONG = "synthetic://classification?n=200000&features=64&classes=4"  # a job that trains for a while on 2 cores


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("checks")
    config = StackConfig(home=home / "home", grpc_port=0, rest_port=0, nodes=1, slots=1, node_port=0,
                         deploy_port=0, terminal_port=0, fresh_nats=True)
    with Stack(config) as running:
        yield running


def cli(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env_args = ["--central", stack.grpc] if args[0] in ("submit", "jobs") and args[:2] != ("jobs", "logs") else []
    if args[:2] == ("jobs", "logs"):
        env_args = ["--nats", stack.nats_url, "--home", str(stack.home)]
    result = subprocess.run([sys.executable, "-m", "central", *args, *env_args], capture_output=True, text=True,
                            timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def sql(stack: Stack, query: str) -> list[list]:
    return rest_sql(stack.rest, query)["rows"]


@pytest.mark.parametrize(("flags", "message"), [
    (["-d", "builtin://nosuch"],
     "config.dataset_uri 'builtin://nosuch': no built-in data set 'nosuch': choose digits, iris, diabetes"),
    (["-d", "builtin://digits", "-m", '{"type":"transformer"}'],
     "config.model_definition.type 'transformer' is not supported: choose linear, mlp, cnn"),
    (["-d", "builtin://digits", "--hp", "lerning_rate=5"],
     f"config.hyperparameters.lerning_rate is not a hyperparameter: did you mean learning_rate? known are {KNOWN}"),
    (["-d", "builtin://digits", "--hp", "momentum=2"],
     "config.hyperparameters.momentum must be a number in [0, 1) (got '2')"),
    (["-d", "synthetic://classification?n=ten"],
     "config.dataset_uri 'synthetic://classification?n=ten': n must be a number (got 'ten')"),
])
def test_a_job_no_node_can_run_is_refused_at_submit_with_the_field_and_the_problem(stack, flags, message):
    result = cli(stack, "submit", *flags)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == f"error: {message}"


def test_grpc_submit_answers_invalid_argument_with_the_same_words(stack):
    with grpc.insecure_channel(stack.grpc) as channel:
        jobs = job_pb2_grpc.JobServiceStub(channel)
        config = job_pb2.JobConfig(job_type=job_pb2.JOB_TYPE_TRAINING, epochs=1, batch_size=8,
                                   dataset_uri="builtin://nosuch", model_definition='{"type": "mlp"}')
        with pytest.raises(grpc.RpcError) as info:
            jobs.SubmitJob(job_pb2.SubmitJobRequest(config=config), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "config.dataset_uri 'builtin://nosuch': no built-in data set 'nosuch': choose digits, iris, diabetes")


def test_a_job_that_trains_shows_its_logs_and_phases(stack):
    submitted = cli(stack, "submit", "-d", "builtin://iris", "-m", "linear", "-e", "2", "-b", "16")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    followed = cli(stack, "jobs", "logs", job_id, "-f", timeout=120)
    assert followed.returncode == 0, followed.stderr
    lines = [line.split(None, 2)[1:] for line in followed.stdout.splitlines()]
    texts = [text for _, text in lines]
    assert texts[0] == f"submitted: builtin://iris, linear, 2 epochs, batch size 16"
    assert any(t.startswith("assigned to node ") and t.endswith(" (attempt 1)") for t in texts)
    phases = [text for kind, text in lines if kind == "phase"]
    assert phases[:3] == ["loading", "compiling", "training"]
    info = [text for kind, text in lines if kind == "info"]
    assert info[0].startswith("loaded builtin://iris: 150 samples of shape [4], 3 classes (")
    assert info[1].startswith("compiled in ")
    assert [t.split(":")[0] for t in info if t.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert info[-1].startswith("completed in ")
    assert texts[-1].startswith("completed on node ") or info[-1] == texts[-1]
    # without -f: the same history, and it exits 0 at once
    again = cli(stack, "jobs", "logs", job_id[:8])  # a unique prefix is enough
    assert again.returncode == 0 and "epoch 2/2" in again.stdout
    as_json = cli(stack, "jobs", "logs", job_id, "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {r["kind"] for r in records} >= {"job", "phase", "info"}
    assert all(r["event"]["job_id"] == job_id for r in records)


def test_a_deterministic_failure_is_not_retried_and_says_so(stack):
    submitted = cli(stack, "submit", "-d", "file:///no/such/data.csv", "-e", "1")
    assert submitted.returncode == 0, submitted.stderr  # only the node knows its data roots
    job_id = submitted.stdout.strip()
    followed = cli(stack, "jobs", "logs", job_id, "--follow", timeout=120)
    assert followed.returncode == 1, followed.stdout + followed.stderr
    failed = [line for line in followed.stdout.splitlines() if " job " in line and "failed (" in line]
    assert len(failed) == 1 and failed[0].split(None, 2)[2].startswith("failed (400, a retry will not help): dataset_uri:")
    shown = json.loads(cli(stack, "jobs", "show", job_id, "--json").stdout)
    assert (shown["state"], shown["retryable"]) == ("failed", False)
    wait_until(lambda: sql(stack, f"SELECT state, retryable FROM jobs WHERE job_id = '{job_id}'") == [["failed", False]],
               timeout=20, message="projected")
    assert sql(stack, f"SELECT count(*) FROM assignments WHERE job_id = '{job_id}'") == [[1]], "one attempt only"


def test_a_queued_job_says_why_it_waits_in_jobs_show_the_queue_and_sql(stack, tmp_path):
    cuda = cli(stack, "submit", "-d", "builtin://iris", "--device", "cuda", "-e", "1").stdout.strip()
    huge_file = tmp_path / "huge.toml"
    huge_file.write_text(f'dataset_uri = "builtin://iris"\nepochs = 1\nestimated_memory = {2 << 40}\n')
    huge = cli(stack, "submit", "--file", str(huge_file)).stdout.strip()
    ram = sql(stack, "SELECT max(ram_bytes) FROM nodes")[0][0]
    expected = {cuda: "no online node has a cuda device",
                huge: f"needs 2.0 TiB of memory; the largest online node has {ram / (1 << 30):.1f} GiB"}

    def shown(job_id: str) -> str:
        return json.loads(cli(stack, "jobs", "show", job_id, "--json").stdout)["waiting_reason"]

    for job_id, reason in expected.items():
        wait_until(lambda: shown(job_id) == reason, timeout=20, message=f"{job_id} waits: {reason}")
    with urllib.request.urlopen(f"{stack.rest}/api/v1/scheduler/queue", timeout=10) as answer:
        queue = {j["job_id"]: j["waiting_reason"] for j in json.loads(answer.read())["queue"]}
    assert {k: queue[k] for k in expected} == expected
    wait_until(lambda: dict(sql(stack, "SELECT job_id, waiting_reason FROM jobs WHERE state = 'queued'")) == expected,
               timeout=20, message="waiting reasons in SQL")
    for job_id in expected:
        assert cli(stack, "jobs", "cancel", job_id).returncode == 0


def test_a_busy_slot_is_the_reason_and_the_running_job_shows_its_phase(stack):
    long_job = cli(stack, "submit", "-d", LONG, "-e", "50", "-b", "32").stdout.strip()
    waiting = cli(stack, "submit", "-d", "builtin://iris", "-e", "1").stdout.strip()
    try:
        def status(job_id: str) -> dict:
            return json.loads(cli(stack, "jobs", "show", job_id, "--json").stdout)

        wait_until(lambda: status(long_job)["phase"] == "training", timeout=60, message="the long job trains")
        wait_until(lambda: status(waiting)["waiting_reason"] == "all slots of the nodes that fit it are busy",
                   timeout=20, message="the second job waits for the slot")
        wait_until(lambda: 0 < status(long_job)["epoch_progress"] < 1, timeout=30, message="progress in the epoch")
        wait_until(lambda: sql(stack, f"SELECT phase, phase_steps > 0 FROM jobs WHERE job_id = '{long_job}'")
                   == [["training", True]], timeout=20, message="the phase in SQL")
        with urllib.request.urlopen(f"{stack.rest}/api/v1/jobs/{long_job}", timeout=10) as answer:
            assert json.loads(answer.read())["phase"] == "training"
    finally:
        cli(stack, "jobs", "cancel", long_job)
        cli(stack, "jobs", "cancel", waiting)


def test_logs_of_an_unknown_job_exit_4(stack):
    result = cli(stack, "jobs", "logs", "no-such-job")
    assert result.returncode == 4
    assert result.stderr.strip() == "error: unknown job 'no-such-job': no job id is or starts with it"
    bad = cli(stack, "jobs", "logs", "a.b")
    assert bad.returncode == 2 and bad.stderr.startswith("error: job id: id 'a.b' contains '.'")
