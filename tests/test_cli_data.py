"""``cyxwiz sql``, ``events publish|tail`` and ``projection rebuild`` against real servers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import typer
from typer.testing import CliRunner

from bus import EventBus
from central.cli import data as cli_data
from central.readmodel.projection import Projection
from central.adapters.rest import make_app, serve_rest


@pytest.fixture
def cli():
    app = typer.Typer()
    cli_data.register(app)
    runner = CliRunner()
    return lambda *args, **env: runner.invoke(app, list(args), env={"CYXWIZ_REST_URL": None, "CYXWIZ_CENTRAL": None, **env})


def last_sequence(url: str) -> int:
    async def read() -> int:
        bus = await EventBus.connect(url)
        try:
            return await bus.last_sequence()
        finally:
            await bus.close()

    return asyncio.run(read())


@pytest.mark.parametrize(
    "data, message",
    [
        ('{"job_id": "j1", "spec": {"epochs": "ten"}}', "JobSubmitted: Expected `int`, got `str` - at `$.spec.epochs`"),
        ('{"spec": {}}', "JobSubmitted: Object missing required field `job_id`"),
        ('{"job_id": "j1"', "--data is not valid JSON"),
        ('[1, 2]', "event data must be a JSON object, got list"),
        ('{"job_id": "a.b", "spec": {}}', "contains '.'"),
        ('{"job_id": "j1", "spec": {"dataset_uri": "ftp://x"}}',
         "JobSubmitted: spec.dataset_uri 'ftp://x': scheme 'ftp' is not supported: use file://, builtin://, synthetic:// or nats://"),
        ('{"job_id": "j1", "spec": {"dataset_uri": "builtin://iris", "epochs": -1}}',
         "JobSubmitted: spec.epochs must be 1..1000000 (got -1)"),
        ('{"job_id": "j1", "spec": {"dataset_uri": "builtin://iris", "model_definition": "{\\"type\\": \\"mlp\\", \\"hidden\\": [100000000]}"}}',
         "JobSubmitted: spec.model_definition.hidden[0] is 100,000,000 wide, at most 65,536 per layer"),
    ],
)
def test_publish_with_bad_data_exits_2_and_publishes_nothing(cli, nats_server, data, message):
    result = cli("events", "publish", "JobSubmitted", "--data", data, "--nats", nats_server.url)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert last_sequence(nats_server.url) == 0


def test_publish_an_unknown_type_exits_2(cli, nats_server):
    result = cli("events", "publish", "JobExploded", "--data", "{}", "--nats", nats_server.url)
    assert result.exit_code == 2 and "unknown event type 'JobExploded'" in result.output


def test_unreachable_nats_exits_3_within_15s_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{sock.getsockname()[1]}"  # closed again: nobody listens
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "central", "events", "publish", "JobSubmitted", "--data",
         '{"job_id": "j1", "spec": {"dataset_uri": "builtin://iris"}}', "--nats", url],
        capture_output=True, text=True, timeout=30,
    )
    assert time.monotonic() - started < 15, "no waiting for a connect timeout (generous: a loaded machine starts Python slowly)"
    assert done.returncode == 3, "NATS unreachable: the same exit code as every command (central.cli.exits)"
    assert f"cannot reach NATS at {url}" in done.stderr and "Traceback" not in done.stderr


def test_publish_tail_rebuild_and_sql_from_the_file(cli, nats_server, tmp_path):
    url, db = nats_server.url, str(tmp_path / "p.duckdb")
    published = cli("events", "publish", "JobSubmitted", "--data", '{"job_id": "j1", "spec": {"epochs": 3, "dataset_uri": "builtin://iris"}}',
                    "--nats", url)
    assert published.exit_code == 0 and "as seq 1" in published.output
    tail = cli("events", "tail", "--from-start", "--count", "1", "--json", "--type", "JobSubmitted", "--nats", url)
    assert tail.exit_code == 0
    line = json.loads(tail.output.strip())
    assert (line["seq"], line["type"], line["data"]["spec"]["epochs"]) == (1, "JobSubmitted", 3)
    rebuilt = cli("projection", "rebuild", "--db", db, "--nats", url)
    assert rebuilt.exit_code == 0 and "up to seq 1" in rebuilt.output
    rows = cli("sql", "SELECT job_id, state, epochs FROM jobs", "--db", db, "--json")
    assert rows.exit_code == 0 and json.loads(rows.output) == {"job_id": "j1", "state": "queued", "epochs": 3}
    as_csv = cli("sql", "SELECT job_id, epochs FROM jobs", "--db", db, "--csv")
    assert as_csv.output.splitlines()[:2] == ["job_id,epochs", "j1,3"]
    table = cli("sql", "SELECT job_id FROM jobs", "--db", db)
    assert table.exit_code == 0 and "j1" in table.output
    refused = cli("sql", "DELETE FROM jobs", "--db", db)
    assert refused.exit_code == 2 and "only read statements are allowed: got DELETE" in refused.output
    missing = cli("sql", "SELECT 1", "--db", str(tmp_path / "none.duckdb"))
    assert missing.exit_code == 3 and "no projection at" in missing.output


def test_sql_goes_through_central_when_it_answers(cli, tmp_path):
    projection = Projection(tmp_path / "p.duckdb")
    loop = asyncio.new_event_loop()
    app = make_app(projection, scheduler_status=dict, scheduler_queue=list, api_key="k")
    runner, port = loop.run_until_complete(serve_rest(app, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        central = f"http://127.0.0.1:{port}"
        ok = cli("sql", "SELECT count(*) AS n FROM jobs", "--json", "--rest", central, "--api-key", "k")
        assert ok.exit_code == 0 and json.loads(ok.output) == {"n": 0}
        refused = cli("sql", "DROP TABLE jobs", "--rest", central, "--api-key", "k")
        assert refused.exit_code == 2 and "got DROP" in refused.output
        unauthorized = cli("sql", "SELECT 1", "--rest", central)
        assert unauthorized.exit_code == 6 and "401" in unauthorized.output
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        projection.close()
