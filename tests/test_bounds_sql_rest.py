"""Hostile SQL through central's REST API (a real projection and HTTP server on port 0):
huge values and answers are 413, long queries stop at the timeout, a full pool is 429, and
the API's own reads keep answering while long queries run."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import typer
from typer.testing import CliRunner

from central.adapters.rest import make_app, serve_rest
from central.cli import data as cli_data
from central.readmodel.projection import Projection
from central.readmodel.projector import Projector
from central.readmodel.sql import SqlLimits
from events import JobSpec, JobSubmitted

SLOW = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
TIMEOUT_S = 3.0


@pytest.fixture
async def base(bus, tmp_path):
    await bus.append_many([JobSubmitted(job_id=f"j{i}", spec=JobSpec(dataset_uri="builtin://iris")) for i in range(3)])
    projection = Projection(tmp_path / "p.duckdb")
    await Projector(projection, bus).catch_up()
    app = make_app(projection, scheduler_status=dict, scheduler_queue=list,
                   sql_limits=SqlLimits(timeout_s=TIMEOUT_S), sql_workers=4, sql_waiting=4)
    runner, port = await serve_rest(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()
    projection.close()


async def sql(session: aiohttp.ClientSession, base: str, query: str) -> tuple[int, dict, dict]:
    async with session.post(f"{base}/api/v1/sql", json={"sql": query}) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_a_huge_value_is_413_and_central_copies_nothing_out(base):
    async with aiohttp.ClientSession() as session:
        status, body, _ = await sql(session, base, "SELECT repeat('x', 2000000)")
    assert status == 413, body
    assert body["error"]["message"].startswith("a value of column \"repeat('x', 2000000)\" is over 1 MiB, the limit per value")


async def test_a_long_query_is_stopped_with_a_message(base):
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        status, body, _ = await sql(session, base, SLOW)
    assert (status, body["error"]["message"]) == (400, (
        f"the query ran longer than {TIMEOUT_S:g} s, the limit per query, and was stopped: "
        "filter it (WHERE), add a LIMIT, or aggregate"))
    assert time.monotonic() - started < TIMEOUT_S + 20


async def test_jobs_answer_while_eight_long_queries_run_and_a_ninth_is_429(base):
    async with aiohttp.ClientSession() as session:
        slow = [asyncio.create_task(sql(session, base, SLOW)) for _ in range(8)]
        await asyncio.sleep(0)  # the eight are sent first (their order is not asserted)
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            async with session.get(f"{base}/api/v1/jobs") as response:
                assert response.status == 200 and len((await response.json())["jobs"]) == 3
            latencies.append(time.monotonic() - started)
        busy_seen = False
        while not all(task.done() for task in slow):
            status, body, headers = await sql(session, base, "SELECT 1")
            if status == 429:
                busy_seen = True
                assert headers["Retry-After"] == "5" and "try again in 5 s" in body["error"]["message"]
                break
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*slow)
    assert max(latencies) < 2.0, latencies
    assert busy_seen
    assert [status for status, _, _ in results] == [400] * 8
    assert all("ran longer than" in body["error"]["message"] for _, body, _ in results)


async def test_the_cli_prints_the_limit_message_in_one_line_and_exits_2(base):
    app = typer.Typer()
    cli_data.register(app)

    def run():
        return CliRunner().invoke(app, ["sql", "SELECT repeat('x', 5000000) AS big", "--rest", base],
                                  env={"CYXWIZ_REST_URL": None})

    result = await asyncio.to_thread(run)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == ["error: a value of column 'big' is over 1 MiB, the limit per value: "
                     "select part of it (left(big, 1000)) or its length instead"]
