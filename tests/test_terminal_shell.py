"""``cyxwiz shell`` against ``cyxwiz up``'s stack (real NATS, central and node processes),
driven through a pseudo-terminal with pexpect: raw mode, window size, Ctrl-C, exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

from central.cli.stack import Stack, StackConfig

ROOT = Path(__file__).resolve().parent.parent
PROMPT = r"[#$] "


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("shell-stack")
    config = StackConfig(home=home, grpc_port=0, rest_port=0, node_port=0, deploy_port=0, terminal_port=0,
                         heartbeat_s=0.5, fresh_nats=True, terminal=True,
                         extra_env={"CYXWIZ_API_KEY": "", "CYXWIZ_SECRET_FOR_TEST": "do-not-leak"})
    with Stack(config) as running:
        yield running


def _shell(stack, *args: str, rows: int = 30, cols: int = 90) -> pexpect.spawn:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CYXWIZ_API_KEY": ""}
    child = pexpect.spawn(sys.executable, ["-m", "central", "shell", "--central", stack.grpc, *args],
                          env=env, dimensions=(rows, cols), timeout=60, encoding="utf-8", codec_errors="replace")
    return child


def test_an_interactive_shell_with_window_size_ctrl_c_and_exit_code(stack):
    child = _shell(stack, rows=33, cols=101)
    child.expect(PROMPT)
    child.sendline("echo ready-$((40+2))")
    child.expect("ready-42")
    child.sendline("stty size")
    child.expect("33 101")
    child.setwinsize(41, 120)  # SIGWINCH: the new size reaches the remote PTY
    child.sendline("stty size")
    child.expect("41 120")
    child.sendline('echo sleep""ing-now; sleep 30; echo not-interrupted')
    child.expect("sleeping-now")  # the output, not the echoed line: the sleep is (about to be) running
    for _ in range(10):  # a Ctrl-C that reaches bash in the instant before it starts sleep is bash's alone
        child.sendcontrol("c")  # raw mode: Ctrl-C goes to the remote shell, not to the CLI
        if child.expect([PROMPT, pexpect.TIMEOUT], timeout=3) == 0:
            break
    child.sendline("echo after-interrupt")
    child.expect("after-interrupt")
    child.sendline("echo leaked=$(env | grep -c CYXWIZ_); exit 7")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7
    assert "leaked=0" in child.before  # the node's CYXWIZ_SECRET_FOR_TEST and the rest stay out
    assert "not-interrupted" not in child.before


def test_an_unknown_node_is_a_clear_error(stack):
    child = _shell(stack, "no-such-node")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    assert "no node or deployment 'no-such-node'" in child.before


def test_a_deployment_shell_needs_enable_terminal_and_opens_in_its_folder(stack):
    import grpc

    from central.client import Client
    from protos import deployment_pb2 as dp
    from protos import deployment_pb2_grpc as dpg
    from waiting import wait_until

    with Client(stack.grpc) as client:
        job_id = client.submit(dataset_uri="builtin://digits", model={"type": "mlp", "hidden": [16]}, epochs=2,
                               batch_size=64, hyperparameters={"seed": 0})
        assert client.wait(job_id).state == "completed"
    with grpc.insecure_channel(stack.grpc) as channel:
        stub = dpg.DeploymentServiceStub(channel)
        for deployment_id, terminal in (("dep-shell", True), ("dep-closed", False)):
            stub.CreateDeployment(dp.CreateDeploymentRequest(config=dp.DeploymentConfig(
                deployment_id=deployment_id, model=dp.ModelInfo(model_id=job_id), enable_terminal=terminal)))
        for deployment_id in ("dep-shell", "dep-closed"):
            wait_until(lambda: stub.GetDeployment(dp.GetDeploymentRequest(deployment_id=deployment_id))
                       .deployment.status == dp.DEPLOYMENT_STATUS_RUNNING, timeout=90)
    child = _shell(stack, "dep-closed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 6 and "created without enable_terminal" in child.before
    child = _shell(stack, "dep-shell")
    child.expect(PROMPT)
    child.sendline("echo where=$(pwd); exit 0")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "/deployments/dep-shell" in child.before.split("where=")[-1]
