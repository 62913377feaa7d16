"""``cyxwiz central`` refuses a taken port with one clear line, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest


@pytest.mark.parametrize("flag", ["--grpc-port", "--rest-port"])
def test_a_taken_port_is_a_clear_error(nats_server, tmp_path, flag):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--grpc-port": "0", "--rest-port": "0", flag: str(port)}
        result = subprocess.run(
            [sys.executable, "-m", "central", "central", "--home", str(tmp_path), "--nats", nats_server.url,
             *[x for pair in ports.items() for x in pair]],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f":{port}" in result.stderr and "for any free port" in result.stderr
