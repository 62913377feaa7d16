"""The bus as a security boundary: nats-server's own authorization, one nkey user per role.

Every test runs against a real nats-server started with the generated auth config
(the ``nats_server`` fixture); each role connects with its own seed of that server.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nkeys
import pytest

from bus import (
    CREDS_ENV, EVENTS_STREAM, TELEMETRY_STREAM, BusForbidden, BusUnauthorized, CredentialsError, EventBus,
    start_server,
)
from bus.credentials import ROLES, authorization_block, credentials_from_file, permissions
from central.adapters.auth import load_secret
from events import JobSpec, JobSubmitted, NodeHeartbeat, subject_for
from waiting import eventually

BUCKETS = ("cyxwiz-checkpoints", "cyxwiz-models", "cyxwiz-datasets")
VALID_JOB = json.dumps({"job_id": "j1", "spec": {"dataset_uri": "builtin://digits", "epochs": 1}})


@pytest.fixture
async def central(nats_server):
    bus = await EventBus.connect(nats_server.url, credentials=nats_server.seed("central"))
    await load_secret(bus)  # central made its secret before anyone else connects
    yield bus
    await bus.close()


@pytest.fixture
async def as_role(nats_server, central):
    opened: list[EventBus] = []

    async def connect(role: str) -> EventBus:
        bus = await EventBus.connect(nats_server.url, credentials=nats_server.seed(role), name=f"test-{role}")
        opened.append(bus)
        return bus

    yield connect
    for bus in opened:
        await bus.close()


def _events(n: int = 1) -> list[JobSubmitted]:
    return [JobSubmitted(job_id=f"auth-{i}", spec=JobSpec()) for i in range(n)]


# --- who may connect ---------------------------------------------------------------------


async def test_no_credentials_are_refused_at_once_in_one_clear_line(nats_server, monkeypatch):
    monkeypatch.delenv(CREDS_ENV)
    with pytest.raises(BusUnauthorized) as refused:
        await asyncio.wait_for(EventBus.connect(nats_server.url, timeout=20), 10)
    message = str(refused.value)
    assert "\n" not in message and f"NATS at {nats_server.url} refused the connection" in message
    assert "no credentials given" in message and "CYXWIZ_NATS_CREDS" in message and "cyxwiz nats creds" in message
    assert not refused.value.retryable and refused.value.code == 401


async def test_a_seed_the_server_does_not_know_is_refused(nats_server, tmp_path):
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    with pytest.raises(BusUnauthorized, match=f"credentials {stranger}"):
        await EventBus.connect(nats_server.url, credentials=stranger)


async def test_a_decorated_seed_file_connects(nats_server, central, tmp_path):
    decorated = tmp_path / "reader.nk"
    seed = nats_server.seed("reader").read_text().strip()
    decorated.write_text(f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n")
    bus = await EventBus.connect(nats_server.url, credentials=decorated, setup=False)
    try:
        assert await bus.last_sequence() == 0
    finally:
        await bus.close()


async def test_a_credentials_file_without_a_seed_says_so(nats_server, tmp_path):
    (tmp_path / "empty.nk").write_text("not a seed\n")
    with pytest.raises(CredentialsError, match="holds no nkey user seed"):
        await EventBus.connect(nats_server.url, credentials=tmp_path / "empty.nk")
    with pytest.raises(CredentialsError, match="cannot read NATS credentials"):
        await EventBus.connect(nats_server.url, credentials=tmp_path / "missing.nk")


# --- the node role -----------------------------------------------------------------------


async def test_node_cannot_read_or_write_centrals_secret(as_role):
    for role in ("node", "publisher", "reader"):
        bus = await as_role(role)
        with pytest.raises(BusForbidden, match="(?i)KV_cyxwiz-central"):
            await asyncio.wait_for(load_secret(bus), 10)
        with pytest.raises(BusForbidden, match="(?i)\\$kv.cyxwiz-central"):
            await asyncio.wait_for(bus.violations.guard(bus.js.publish("$KV.cyxwiz-central.session-secret", b"x")), 10)


async def test_node_cannot_read_the_replies_central_gets(as_role, central):
    node = await as_role("node")
    refused = []
    node.violations.listeners.append(lambda action, subject: refused.append((action, subject)))
    got = []

    async def on_message(msg) -> None:
        got.append(msg)

    await node.nc.subscribe("_INBOX.>", cb=on_message)
    await eventually(lambda: refused == [("subscription", "_inbox.>")], message="the server refuses the subscription")
    await load_secret(central)  # a reply to central's inbox
    await central.append(_events()[0])
    assert got == []


async def test_node_cannot_append_events(as_role, central):
    node = await as_role("node")
    with pytest.raises(BusForbidden, match="publish to 'events.job.auth-0'"):
        await asyncio.wait_for(node.append(_events()[0]), 10)
    with pytest.raises(BusForbidden):
        await asyncio.wait_for(node.append_many(_events(3)), 10)
    assert await central.last_sequence() == 0


async def test_node_puts_and_gets_objects_in_its_three_buckets_and_publishes_telemetry(as_role, central):
    node = await as_role("node")
    for bucket in BUCKETS:
        await node.put_object(bucket, "job-1/attempt-1/epoch-1", b"w" * 300_000)  # several chunks
        await node.put_object(bucket, "job-1/attempt-1/epoch-1", b"v" * 1000)  # replaced: old chunks purged
        assert await node.get_object(bucket, "job-1/attempt-1/epoch-1") == b"v" * 1000
        assert await node.list_objects(bucket) == ["job-1/attempt-1/epoch-1"]
        assert await central.get_object(bucket, "job-1/attempt-1/epoch-1") == b"v" * 1000
    await central.put_object("cyxwiz-datasets", "digits.csv", b"1,2\n")
    assert await node.get_object("cyxwiz-datasets", "digits.csv") == b"1,2\n"
    await node.publish_telemetry(NodeHeartbeat(node_id="n1"))
    await eventually(lambda: central.last_sequence(TELEMETRY_STREAM), message="the heartbeat is stored")
    [stored] = [m async for m in central.read(1, subjects="telemetry.>")]
    assert stored.subject == "telemetry.node.n1" and stored.decode().node_id == "n1"


async def test_node_cannot_touch_other_streams(as_role):
    node = await as_role("node")
    with pytest.raises(BusForbidden, match="(?i)stream.info.CYXWIZ_EVENTS"):
        await asyncio.wait_for(node.last_sequence(EVENTS_STREAM), 10)
    with pytest.raises(BusForbidden, match="(?i)STREAM.DELETE"):
        await asyncio.wait_for(node.violations.guard(node.js.delete_stream(EVENTS_STREAM)), 10)


# --- publisher and reader ----------------------------------------------------------------


async def test_publisher_appends_a_job_and_garbage_consumers_then_validate(as_role, central):
    publisher = await as_role("publisher")
    job = JobSubmitted(job_id="from-a-script", spec=JobSpec())
    assert await publisher.append(job) == 1
    ack = await publisher.js.publish("events.job.other", b"\x00 not an event")  # acked: the stream took it
    assert ack.seq == 2
    stored = [m async for m in central.read(1)]
    assert [m.subject for m in stored] == [subject_for(job), "events.job.other"]
    assert stored[0].decode() == job
    with pytest.raises(BusForbidden):
        await asyncio.wait_for(publisher.violations.guard(publisher.js.publish("telemetry.node.x", b"{}")), 10)
    with pytest.raises(BusForbidden):
        await asyncio.wait_for(publisher.read(1).__anext__(), 10)  # a publisher does not read


async def test_reader_replays_both_streams_but_cannot_publish(as_role, central):
    await central.append_many(_events(5))
    await central.publish_telemetry(NodeHeartbeat(node_id="n1"))
    await eventually(lambda: central.last_sequence(TELEMETRY_STREAM))
    reader = await as_role("reader")
    assert [m.decode().job_id async for m in reader.read(1)] == [f"auth-{i}" for i in range(5)]
    assert [m.subject async for m in reader.read(1, subjects="telemetry.>")] == ["telemetry.node.n1"]
    assert await reader.subject_version("events.job.auth-4") == 5
    with pytest.raises(BusForbidden, match="publish to 'events.job.late'"):
        await asyncio.wait_for(reader.append(JobSubmitted(job_id="late", spec=JobSpec())), 10)
    with pytest.raises(BusForbidden):
        await asyncio.wait_for(reader.get_object("cyxwiz-models", "x"), 10)
    assert await central.last_sequence() == 5


# --- seeds, the server config and the CLI ------------------------------------------------------


def test_seeds_are_private_made_once_and_reused(tmp_path):
    first = start_server(tmp_path / "nats", port=0)
    try:
        keys = {role: credentials_from_file(first.seed(role)).public_key for role in ROLES}
    finally:
        first.stop()
    second = start_server(tmp_path / "nats", port=0)
    try:
        assert {role: credentials_from_file(second.seed(role)).public_key for role in ROLES} == keys
        for role in ROLES:
            assert stat.S_IMODE(second.seed(role).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "nats" / "creds").stat().st_mode) == 0o700
        assert len(set(keys.values())) == 4
        assert (tmp_path / "nats" / "auth.conf").read_text() == authorization_block(keys)
    finally:
        second.stop()


def test_authorization_block_grants_each_role_its_own_inbox_only():
    keys = {role: f"U{role.upper():A<55}" for role in ROLES}
    block = authorization_block(keys)
    assert f'{{ nkey: "{keys["central"]}" }}' in block  # central: no limits
    for role in ("node", "publisher", "reader"):
        perms = permissions(role, keys[role])
        assert perms["subscribe"]["allow"] == [f"_INBOX_{keys[role]}.>"]
        assert not any(s.startswith(("events.", "$KV", "$JS.API.STREAM.CREATE", "_INBOX"))
                       for s in perms["publish"]["allow"] if role != "publisher" or s != "events.>")
    assert "telemetry.>" in permissions("node", "U")["publish"]["allow"]
    with pytest.raises(ValueError, match="unknown NATS role 'admin'"):
        permissions("admin", "U")


def test_parse_violation_reads_nats_py_error_texts():
    from bus.connection import parse_violation

    assert parse_violation('nats: permissions violation for publish to "events.job.b"') == ("publish", "events.job.b")
    assert parse_violation("nats: 'Permissions Violation for Subscription to \"_INBOX.>\"'") == ("subscription", "_INBOX.>")
    assert parse_violation("nats: 'Authorization Violation'") is None


def _cyxwiz(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "central", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


async def test_cli_creds_writes_a_private_seed_file_that_connects_as_its_role(nats_server, tmp_path, central):
    out = tmp_path / "given" / "node.creds"
    out.parent.mkdir()
    done = await asyncio.to_thread(
        _cyxwiz, "nats", "creds", "--role", "node", "-o", str(out), "--home", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes() == nats_server.seed("node").read_bytes()
    node = await EventBus.connect(nats_server.url, credentials=out, setup=False)
    try:
        await node.put_object("cyxwiz-models", "m", b"model")
        with pytest.raises(BusForbidden):
            await asyncio.wait_for(node.append(_events()[0]), 10)
    finally:
        await node.close()
    bad = await asyncio.to_thread(_cyxwiz, "nats", "creds", "--role", "root", "-o", str(out), "--home", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --role 'root': use one of central, node, publisher, reader"


async def test_cli_without_credentials_says_so_in_one_line(nats_server, tmp_path):
    done = await asyncio.to_thread(  # an empty home: no seed of a home in the working folder is found
        _cyxwiz, "events", "publish", "JobSubmitted", "--data", VALID_JOB,
        "--nats", nats_server.url, env={CREDS_ENV: "", "CYXWIZ_HOME": str(tmp_path / "empty-home")})
    assert done.returncode == 6  # 401: missing or wrong credentials (events.errors.CODES)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "refused the connection (no credentials given)" in lines[0] and "CYXWIZ_NATS_CREDS" in lines[0]


async def test_cli_with_a_readers_credentials_cannot_publish_in_one_line(nats_server, central):
    done = await asyncio.to_thread(
        _cyxwiz, "events", "publish", "JobSubmitted", "--data", VALID_JOB,
        "--nats", nats_server.url, env={CREDS_ENV: str(nats_server.seed("reader"))})
    assert done.returncode == 6 and "Traceback" not in done.stderr  # 403
    assert len(done.stderr.strip().splitlines()) == 1
    assert "NATS refused publish to 'events.job.j1'" in done.stderr
    published = await asyncio.to_thread(
        _cyxwiz, "events", "publish", "JobSubmitted", "--data", VALID_JOB,
        "--nats", nats_server.url, env={CREDS_ENV: str(nats_server.seed("publisher"))})
    assert published.returncode == 0, published.stderr
    assert await central.last_sequence() == 1


def test_up_hands_each_child_its_roles_credentials(tmp_path):
    from central.cli.stack import Stack, StackConfig

    config = StackConfig(home=tmp_path / "home", grpc_port=0, rest_port=0, node_port=0, deploy_port=0,
                         terminal_port=0, fresh_nats=True, nodes=1)
    with Stack(config) as stack:
        central_env = _environ(stack.central.process.pid)
        node_env = _environ(stack.node_parts[0].process.pid)
        assert central_env[CREDS_ENV] == str(stack.nats.seed("central"))
        assert node_env[CREDS_ENV] == str(stack.nats.seed("node"))
        assert not any(v.startswith("SU") for v in node_env.values())  # a path, never the seed
        for part in stack.parts:
            seed = stack.nats.seed("node").read_text().strip()
            assert seed not in part.log_path.read_text()

        async def node_appends() -> None:
            bus = await EventBus.connect(stack.nats_url, credentials=node_env[CREDS_ENV], setup=False)
            try:
                with pytest.raises(BusForbidden):
                    await asyncio.wait_for(bus.append(_events()[0]), 10)
            finally:
                await bus.close()

        asyncio.run(node_appends())


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


async def test_the_nodes_artifact_store_uses_the_node_role(nats_server, central, monkeypatch):
    from node.artifacts import ArtifactStore
    from node.config import parse_config

    config = parse_config(["--nats-creds", str(nats_server.seed("node")), "--nats", nats_server.url], env={})
    assert config.nats_creds == nats_server.seed("node")
    store = ArtifactStore(config.nats_url, credentials=config.nats_creds)
    await store.start()
    ref = await store.put_checkpoint("j1", 1, 1, b"weights")
    assert await store.get_uri(ref.uri) == b"weights"
    with pytest.raises(BusForbidden):
        await asyncio.wait_for((await store._connected()).append(_events()[0]), 10)
    monkeypatch.delenv(CREDS_ENV)
    anonymous = ArtifactStore(nats_server.url)
    await anonymous.start()
    with pytest.raises(BusUnauthorized, match="no credentials given"):
        await anonymous.get_uri(ref.uri)


def test_a_publishers_garbage_does_not_stop_the_next_job(tmp_path):
    from central.cli.stack import Stack, StackConfig
    from central.client import Client
    from waiting import wait_until

    config = StackConfig(home=tmp_path / "home", grpc_port=0, rest_port=0, node_port=0, deploy_port=0,
                         terminal_port=0, fresh_nats=True, nodes=1)
    job = JobSubmitted(job_id="after-garbage", spec=JobSpec(
        dataset_uri="synthetic://classification?n=128&features=4&classes=2&seed=1", epochs=1, batch_size=32,
        model_definition=json.dumps({"type": "mlp", "hidden": [4]})))
    with Stack(config) as stack:

        async def publish() -> None:
            bus = await EventBus.connect(stack.nats_url, credentials=stack.nats.seed("publisher"), setup=False)
            try:
                await bus.js.publish("events.job.garbage", b"\x00 not json")
                await bus.js.publish("events.node.n1", b'{"type": "NoSuchEvent"}')
                await bus.append(job)
            finally:
                await bus.close()

        asyncio.run(publish())
        with Client(stack.grpc) as client:
            wait_until(lambda: _state(client, job.job_id) in ("completed", "failed"), timeout=90)
            assert client.status(job.job_id).state == "completed"


def _state(client, job_id: str) -> str:
    try:
        return client.status(job_id).state
    except Exception:  # not in central's state yet
        return ""
