"""``cyxwiz datasets put`` and ``cyxwiz models get`` against a real NATS server."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from typer.testing import CliRunner

from bus import EventBus
from central.cli.objects import CommandError, dataset_name
from events import JobCompleted, JobSubmitted
from events.catalog import JobSpec

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def app():
    import typer

    from central.cli import objects as cli_objects

    application = typer.Typer()
    cli_objects.register(application)
    return application


def run(app, *args: str):
    return CliRunner().invoke(app, list(args))


def on_bus(url: str, work):
    async def go():
        bus = await EventBus.connect(url)
        try:
            return await work(bus)
        finally:
            await bus.close()

    return asyncio.run(go())


def test_datasets_put_prints_the_uri_and_stores_the_bytes(app, nats_server, tmp_path):
    data = tmp_path / "digits.csv"
    data.write_text("1,2,0\n3,4,1\n")
    result = run(app, "datasets", "put", str(data), "--nats", nats_server.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "nats://digits.csv"
    renamed = run(app, "datasets", "put", str(data), "--name", "other.csv", "--nats", nats_server.url)
    assert renamed.stdout.strip().splitlines()[-1] == "nats://other.csv"
    stored = on_bus(nats_server.url, lambda bus: bus.get_object("cyxwiz-datasets", "other.csv"))
    assert stored == data.read_bytes()


def test_datasets_put_bad_input_exits_2(app, nats_server, tmp_path):
    missing = run(app, "datasets", "put", str(tmp_path / "nope.csv"), "--nats", nats_server.url)
    assert missing.exit_code == 2 and "cannot read it" in missing.output
    (tmp_path / "x.txt").write_text("1")
    odd = run(app, "datasets", "put", str(tmp_path / "x.txt"), "--nats", nats_server.url)
    assert odd.exit_code == 2 and "must end with .csv" in odd.output


@pytest.mark.parametrize("name", ["", "/abs.csv", "a b.csv", "../up.csv", "data.txt"])
def test_dataset_names_are_checked(tmp_path, name):
    with pytest.raises(CommandError, match="--name"):
        dataset_name(tmp_path / "f.csv", name)


def test_datasets_put_without_nats_exits_3(app, tmp_path):
    (tmp_path / "d.csv").write_text("1,0\n")
    result = run(app, "datasets", "put", str(tmp_path / "d.csv"), "--nats", "nats://127.0.0.1:1")
    assert result.exit_code == 3 and "cannot reach NATS" in result.output


def _completed_job(url: str, job_id: str, model: bytes, *, sha256: str | None = None) -> None:
    async def work(bus: EventBus) -> None:
        ref = await bus.put_object("cyxwiz-models", job_id, model)
        await bus.append(JobSubmitted(job_id=job_id, spec=JobSpec(dataset_uri="builtin://digits")))
        await bus.append(JobCompleted(
            job_id=job_id, node_id="n1", artifact_uri=ref.uri, sha256=sha256 or ref.sha256, size_bytes=ref.size,
        ))

    on_bus(url, work)


def test_models_get_downloads_and_checks_the_hash(app, nats_server, tmp_path):
    model = b"model-bytes" * 100
    _completed_job(nats_server.url, "job-1", model)
    out = tmp_path / "model.bin"
    result = run(app, "models", "get", "job-1", "-o", str(out), "--nats", nats_server.url)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == model and hashlib.sha256(model).hexdigest() in result.output


def test_models_get_refuses_a_hash_mismatch_and_writes_nothing(app, nats_server, tmp_path):
    _completed_job(nats_server.url, "job-2", b"real", sha256="0" * 64)
    out = tmp_path / "model.bin"
    result = run(app, "models", "get", "job-2", "-o", str(out), "--nats", nats_server.url)
    assert result.exit_code == 1 and "SHA-256 mismatch" in result.output
    assert not out.exists()


def test_models_get_unknown_and_unfinished_jobs(app, nats_server, tmp_path):
    out = tmp_path / "m.bin"
    unknown = run(app, "models", "get", "nobody", "-o", str(out), "--nats", nats_server.url)
    assert unknown.exit_code == 4 and "unknown job 'nobody'" in unknown.output
    on_bus(nats_server.url, lambda bus: bus.append(JobSubmitted(job_id="waiting", spec=JobSpec())))
    _completed_job(nats_server.url, "later", b"x")  # the stream moves on past the waiting job's events
    waiting = run(app, "models", "get", "waiting", "-o", str(out), "--nats", nats_server.url)
    assert waiting.exit_code == 5 and "has not completed (its last event is JobSubmitted)" in waiting.output
    bad_id = run(app, "models", "get", "a.b", "-o", str(out), "--nats", nats_server.url)
    assert bad_id.exit_code == 2
    assert not out.exists()
