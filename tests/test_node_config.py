"""Node settings: flags, then CYXWIZ_* variables, then defaults; bad values name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig, parse_config


def test_defaults_follow_the_architecture_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config([], env={})
    assert (cfg.central, cfg.node_port, cfg.deploy_port, cfg.terminal_port) == ("localhost:50051", 50054, 50052, 50053)
    assert cfg.heartbeat_s == 10 and cfg.slots is None and cfg.node_token is None
    assert cfg.nats_url == "nats://localhost:4222" and cfg.public_host == "127.0.0.1"
    assert cfg.data_roots == (tmp_path / "data", Path(".cyxwiz") / "data")


def test_flags_win_over_environment_which_wins_over_defaults():
    env = {"CYXWIZ_CENTRAL": "10.0.0.5:6000", "CYXWIZ_NODE_PORT": "7000", "CYXWIZ_HEARTBEAT_S": "2.5",
           "CYXWIZ_NODE_TOKEN": "secret", "CYXWIZ_DATA_ROOTS": "/a:/b", "CYXWIZ_HOME": "/h"}
    cfg = parse_config(["--node-port", "0", "--data-root", "/x", "--data-root", "/y", "--slots", "3"], env=env)
    assert cfg.central == "10.0.0.5:6000" and cfg.node_port == 0 and cfg.heartbeat_s == 2.5
    assert cfg.node_token == "secret" and cfg.slots == 3 and cfg.home == Path("/h")
    assert cfg.data_roots == (Path("/x"), Path("/y"))
    assert cfg.nats_url == "nats://10.0.0.5:4222"
    assert parse_config(["--nats", "nats://n:1"], env=env).nats_url == "nats://n:1"
    assert parse_config([], env=env).data_roots == (Path("/a"), Path("/b"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--node-port", "x"], "--node-port: expected an integer"),
        (["--deploy-port", "70000"], "--deploy-port: port must be 0..65535"),
        (["--heartbeat", "0"], "--heartbeat / CYXWIZ_HEARTBEAT_S: must be > 0"),
        (["--slots", "0"], "--slots: must be >= 1"),
        (["--central", "nohost"], "--central / CYXWIZ_CENTRAL: expected HOST:PORT"),
    ],
)
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(argv, env={})


def test_ipv6_central():
    assert NodeConfig(central="[::1]:50051").nats_url == "nats://[::1]:4222"


def test_a_restarted_node_keeps_its_id(tmp_path):
    from node.agent import stored_node_id

    first = stored_node_id(tmp_path / "home")
    assert first.startswith("node-") and stored_node_id(tmp_path / "home") == first
    assert stored_node_id(tmp_path / "other") != first
