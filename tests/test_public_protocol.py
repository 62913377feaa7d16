"""PROTOCOL.md's test of the wire contract: a program with stubs generated from the
public CyxWiz protocol files registers a node, submits a job, receives AssignJob,
reports, and reads the status and the list, against our central."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from central.cli.stack import Stack, StackConfig

SCRIPT = Path(__file__).parent / "scripts" / "public_protocol_node.py"


def test_a_node_and_client_from_the_public_protocol_work_against_central(tmp_path):
    config = StackConfig(home=tmp_path / "home", grpc_port=0, rest_port=0, nodes=0, fresh_nats=True)
    with Stack(config) as stack:
        done = subprocess.run([sys.executable, str(SCRIPT), stack.grpc], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["registered"] == "STATUS_SUCCESS" and summary["node_id"]
    assert summary["keep_alive"] is True
    assert summary["assigned"] == summary["submitted"]
    assert summary["assigned_to"] == summary["node_id"]
    assert summary["final"] == "STATUS_COMPLETED" and summary["final_epoch"] == 2
    assert summary["submitted"] in summary["listed"]
