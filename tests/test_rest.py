"""Central's REST API over a real projection file and a real HTTP server on port 0."""

from __future__ import annotations

import aiohttp
import pytest

from central.readmodel.projection import Projection
from central.readmodel.projector import Projector
from central.adapters.rest import make_app, openapi_document, serve_rest
from events import EpochCompleted, JobAssigned, JobSpec, JobSubmitted, NodeHeartbeat, NodeRegistered
from waiting import eventually


@pytest.fixture
async def api(bus, tmp_path):
    """(base url, projection) with two jobs, one node and one heartbeat projected."""
    await bus.append_many([
        NodeRegistered(node_id="n1", endpoint="127.0.0.1:50054", slots=2),
        JobSubmitted(job_id="j1", spec=JobSpec(epochs=2, name="mnist")),
        JobAssigned(job_id="j1", node_id="n1"),
        EpochCompleted(job_id="j1", node_id="n1", epoch=1, loss=0.7),
        JobSubmitted(job_id="j2", spec=JobSpec()),
    ])
    await bus.publish_telemetry(NodeHeartbeat(node_id="n1", cpu_percent=12.5))
    projection = Projection(tmp_path / "p.duckdb")
    projector = Projector(projection, bus)

    async def heartbeat_projected() -> bool:  # telemetry is fire-and-forget: wait for it
        await projector.catch_up()
        return projection.checkpoint("CYXWIZ_TELEMETRY") >= 1

    await eventually(heartbeat_projected, timeout=10)
    app = make_app(
        projection,
        scheduler_status=lambda: {"queued": 2, "nodes_online": 1},
        scheduler_queue=lambda: [{"job_id": "j2", "priority": 1}],
        api_key=None,
    )
    runner, port = await serve_rest(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()
    projection.close()


async def get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


async def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_jobs_nodes_metrics_and_scheduler(api):
    base, _ = api
    assert await get(f"{base}/api/health") == (200, {"status": "ok", "projection_seq": 5})
    status, body = await get(f"{base}/api/v1/jobs")
    assert status == 200 and sorted(j["job_id"] for j in body["jobs"]) == ["j1", "j2"]
    status, body = await get(f"{base}/api/v1/jobs?state=queued&limit=1")
    assert status == 200 and len(body["jobs"]) == 1
    status, body = await get(f"{base}/api/v1/jobs/j1")
    assert status == 200 and body["name"] == "mnist"
    assert [(e["epoch"], e["loss"]) for e in body["epochs_done"]] == [(1, 0.7)]
    status, body = await get(f"{base}/api/v1/nodes")
    assert [n["node_id"] for n in body["nodes"]] == ["n1"] and body["nodes"][0]["state"] == "online"
    status, body = await get(f"{base}/api/v1/nodes/n1/metrics")
    assert status == 200 and body["metrics"][0]["cpu_percent"] == 12.5
    assert await get(f"{base}/api/v1/scheduler/queue") == (200, {"queue": [{"job_id": "j2", "priority": 1}]})
    assert await get(f"{base}/api/v1/scheduler/status") == (200, {"queued": 2, "nodes_online": 1})


async def test_unknown_ids_and_paths_are_404_with_a_json_error(api):
    base, _ = api
    assert await get(f"{base}/api/v1/jobs/nope") == (404, {"error": {"code": 404, "message": "no job 'nope'"}})
    assert await get(f"{base}/api/v1/nodes/nope/metrics") == (404, {"error": {"code": 404, "message": "no node 'nope'"}})
    status, body = await get(f"{base}/api/v1/nothing")
    assert status == 404 and body["error"]["code"] == 404


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=99999999"])
async def test_bad_parameters_are_400(api, query):
    base, _ = api
    status, body = await get(f"{base}/api/v1/jobs?{query}")
    assert status == 400 and "limit must be" in body["error"]["message"]


async def test_sql_reads_and_refuses_writes(api):
    base, _ = api
    status, body = await post(f"{base}/api/v1/sql", b'{"sql": "SELECT job_id, epochs FROM jobs ORDER BY job_id"}')
    assert status == 200 and body == {"columns": ["job_id", "epochs"], "rows": [["j1", 2], ["j2", 1]], "truncated": False}
    status, body = await post(f"{base}/api/v1/sql", b'{"sql": "DROP TABLE jobs"}')
    assert (status, body["error"]["message"]) == (400, "only read statements are allowed: got DROP (statement 1)")
    status, body = await post(f"{base}/api/v1/sql", b'{"sql": "SELECT nope FROM jobs"}')
    assert status == 400 and body["error"]["message"].startswith("Binder Error")
    for bad in (b"not json", b'{"query": "SELECT 1"}', b'{"sql": 5}'):
        status, body = await post(f"{base}/api/v1/sql", bad)
        assert status == 400 and body["error"]["code"] == 400


async def test_an_api_key_guards_v1_but_not_health(bus, tmp_path):
    projection = Projection(tmp_path / "p.duckdb")
    app = make_app(projection, scheduler_status=dict, scheduler_queue=list, api_key="s3cret")
    runner, port = await serve_rest(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        assert (await get(f"{base}/api/health"))[0] == 200
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, body = await get(f"{base}/api/v1/jobs", headers)
            assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
        assert (await get(f"{base}/api/v1/jobs", {"Authorization": "Bearer s3cret"}))[0] == 200
        assert (await get(f"{base}/api/v1/openapi.json"))[0] == 200
    finally:
        await runner.cleanup()
        projection.close()


async def test_openapi_document_reuses_the_row_types(api):
    base, _ = api
    status, doc = await get(f"{base}/api/v1/openapi.json")
    assert status == 200 and doc == openapi_document()
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    assert {"JobRow", "JobDetail", "EpochRow", "NodeRow", "Device", "QueryResult", "ErrorBody"} <= set(schemas)
    assert "final_loss" in schemas["JobDetail"]["properties"]
    ref = doc["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/JobDetail"}
