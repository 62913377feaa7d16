"""The DuckDB projection against a real nats-server: exactly once, disposable, total."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from central.readmodel.projection import EVENTS_STREAM, Projection
from central.readmodel.projector import Projector, rebuild
from events import EpochCompleted, JobAssigned, JobCompleted, JobSpec, JobSubmitted, NodeHeartbeat, NodeRegistered
from projector_proc import history
from waiting import eventually

TABLES = ("events", "jobs", "nodes", "epochs", "assignments", "anomalies", "projection_checkpoint")
HERE = Path(__file__).parent


def snapshot(path: Path) -> dict[str, list]:
    """Every table of a projection file, rows in a fixed order."""
    projection = Projection(path, read_only=True)
    try:
        return {t: projection.query(f"SELECT * FROM {t} ORDER BY ALL", max_rows=10**6).rows for t in TABLES}
    finally:
        projection.close()


async def append_garbage(bus) -> None:
    await bus.js.publish("events.job.x", b"not json at all")
    await bus.js.publish("events.job.x", b'{"type": "JobExploded", "job_id": "x"}')
    await bus.js.publish("events.job.x", b'{"type": "JobSubmitted", "job_id": "x", "spec": {"epochs": "many"}}')
    await bus.js.publish("events.job.y", JobSubmitted(job_id="x", spec=JobSpec()).__class__.__name__.encode())


async def test_a_duplicate_publish_is_stored_and_counted_once(bus, tmp_path):
    event = JobSubmitted(job_id="j1", spec=JobSpec(epochs=2))
    first = await bus.append(event)
    again = await bus.append(event)
    assert again == first
    assert await bus.last_sequence() == first
    projection = Projection(tmp_path / "p.duckdb")
    await Projector(projection, bus).catch_up()
    assert projection.query("SELECT count(*) FROM events WHERE event_id = '%s'" % event.event_id).rows == [[1]]
    assert projection.query("SELECT count(*) FROM jobs").rows == [[1]]


async def test_malformed_messages_become_anomalies_and_the_rest_is_projected(bus, tmp_path):
    await bus.append(JobSubmitted(job_id="before", spec=JobSpec()))
    await append_garbage(bus)
    await bus.append(JobCompleted(job_id="ghost"))  # a job nobody submitted
    await bus.append_many([JobSubmitted(job_id="after", spec=JobSpec()), JobAssigned(job_id="after", node_id="n1"),
                           EpochCompleted(job_id="after", node_id="n1", epoch=1),
                           JobCompleted(job_id="after", node_id="n1", metrics={"loss": 0.25})])
    await bus.append(JobCompleted(job_id="after"))  # a second terminal event
    projection = Projection(tmp_path / "p.duckdb")
    await Projector(projection, bus).catch_up()
    reasons = projection.query("SELECT seq, reason FROM anomalies ORDER BY seq").rows
    assert [seq for seq, _ in reasons] == [2, 3, 4, 5, 6, 11]
    assert reasons[0][1].startswith("not valid JSON")
    assert reasons[1][1] == "unknown event type 'JobExploded'"
    assert "$.spec.epochs" in reasons[2][1]
    assert reasons[4][1] == "job ghost: JobCompleted for an unknown job"
    assert reasons[5][1] == "job after: JobCompleted for a job that has completed"
    assert projection.query("SELECT job_id, state, final_loss FROM jobs ORDER BY job_id").rows == [
        ["after", "completed", 0.25],
        ["before", "queued", None],
    ]
    assert projection.checkpoint() == 11


async def test_a_repeated_epoch_is_one_row(bus, tmp_path):
    await bus.append_many([JobSubmitted(job_id="j", spec=JobSpec(epochs=3)), JobAssigned(job_id="j", node_id="n1")])
    for _ in range(2):  # a retried report with a new event id
        await bus.append_many([EpochCompleted(job_id="j", node_id="n1", epoch=1, loss=0.5),
                               EpochCompleted(job_id="j", node_id="n1", epoch=2, loss=0.4)])
    projection = Projection(tmp_path / "p.duckdb")
    await Projector(projection, bus, max_batch=2).catch_up()
    assert projection.query("SELECT epoch, loss FROM epochs ORDER BY epoch").rows == [[1, 0.5], [2, 0.4]]
    assert projection.query("SELECT count(*) FROM anomalies").rows == [[2]]


async def test_live_projection_equals_a_rebuild_and_tracks_telemetry(bus, tmp_path):
    events = history(jobs=60)
    projection = Projection(tmp_path / "live.duckdb")
    projector = Projector(projection, bus, max_batch=25)
    task = asyncio.create_task(projector.run())
    try:
        for start in range(0, len(events), 50):  # arrives in pieces while it runs
            seqs = await bus.append_many(events[start : start + 50])
        await append_garbage(bus)
        await bus.publish_telemetry(NodeHeartbeat(node_id="n1", cpu_percent=42.0, active_jobs=["job-1"]))
        assert await projector.wait_for_seq(seqs[-1] + 4, timeout=20)
        await eventually(lambda: projection.checkpoint("CYXWIZ_TELEMETRY") >= 1)
        assert projection.query("SELECT node_id, cpu_percent, active_jobs FROM node_metrics").rows == [["n1", 42.0, 1]]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    projection.close()
    await rebuild(tmp_path / "rebuilt.duckdb", bus)
    live, rebuilt = snapshot(tmp_path / "live.duckdb"), snapshot(tmp_path / "rebuilt.duckdb")
    assert live == rebuilt
    states = dict(Projection(tmp_path / "rebuilt.duckdb", read_only=True).query(
        "SELECT state, count(*) FROM jobs GROUP BY state").rows)
    assert states == {"completed": 51, "failed": 4, "cancelled": 5}


async def test_wait_for_seq_times_out_false(bus, tmp_path):
    projector = Projector(Projection(tmp_path / "p.duckdb"), bus)
    assert await projector.wait_for_seq(5, timeout=0.05) is False


async def test_a_failed_rebuild_leaves_the_old_file(bus, tmp_path):
    path = tmp_path / "p.duckdb"
    await bus.append(NodeRegistered(node_id="n1", endpoint="h:1"))
    await rebuild(path, bus)
    before = snapshot(path)
    await bus.append(NodeRegistered(node_id="n2", endpoint="h:2"))
    await bus.nc.close()
    with pytest.raises(Exception):
        await rebuild(path, bus)
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("p.duckdb")) == ["p.duckdb"]


def test_exactly_once_across_kill_9(nats_server, tmp_path):
    """kill -9 the projector in the middle of a replay; restarted, it equals a clean rebuild."""
    events = history(jobs=3000)  # about 30,000 events

    async def fill() -> int:
        from bus import EventBus

        bus = await EventBus.connect(nats_server.url)
        for start in range(0, len(events), 10_000):
            await bus.append_many(events[start : start + 10_000])
        await append_garbage(bus)
        last = await bus.last_sequence()
        await bus.close()
        return last

    last = asyncio.run(fill())
    path = tmp_path / "p.duckdb"
    cmd = [sys.executable, str(HERE / "projector_proc.py"), nats_server.url, str(path), "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if int(line.split()[1]) >= last // 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    halfway = Projection(path, read_only=True)
    assert 0 < halfway.checkpoint(EVENTS_STREAM) < last
    halfway.close()

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=120)

    async def clean() -> None:
        from bus import EventBus

        bus = await EventBus.connect(nats_server.url)
        await rebuild(tmp_path / "clean.duckdb", bus)
        await bus.close()

    asyncio.run(clean())
    resumed, fresh = snapshot(path), snapshot(tmp_path / "clean.duckdb")
    assert resumed["projection_checkpoint"] == [["CYXWIZ_EVENTS", last], ["CYXWIZ_TELEMETRY", 0]]
    assert len(resumed["events"]) + len(resumed["anomalies"]) >= last
    assert resumed == fresh


# --- pure: the projection fed StoredMessages directly (no bus) ----------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from bus import StoredMessage  # noqa: E402
from central.readmodel.fold import Index  # noqa: E402
from events import (  # noqa: E402
    JobAssigned,
    JobCancelled,
    JobFailed,
    JobRejected,
    JobRequeued,
    JobStarted,
    NodeLost,
    encode,
    subject_for,
    utc_now,
)

_T0 = 1_700_000_000_000_000_000


def _event(kind: str, job: int, attempt: int, epoch: int):
    jid, node = f"j{job}", f"n{job % 2}"
    return {
        "submit": lambda: JobSubmitted(job_id=jid, spec=JobSpec(epochs=3, name=f"job {job}")),
        "assign": lambda: JobAssigned(job_id=jid, node_id=node, attempt=attempt),
        "reject": lambda: JobRejected(job_id=jid, node_id=node, attempt=attempt, reason="busy" if epoch % 2 else ""),
        "start": lambda: JobStarted(job_id=jid, node_id=node, attempt=attempt),
        "epoch": lambda: EpochCompleted(job_id=jid, node_id=node, attempt=attempt, epoch=epoch, loss=1 / epoch),
        "requeue": lambda: JobRequeued(job_id=jid, reason="lost", next_attempt=attempt + 1, resume_epoch=epoch),
        "complete": lambda: JobCompleted(job_id=jid, node_id=node, attempt=attempt, metrics={"loss": 0.5}),
        "fail": lambda: JobFailed(job_id=jid, error="NaN loss"),
        "cancel": lambda: JobCancelled(job_id=jid),
        "register": lambda: NodeRegistered(node_id=node, endpoint=f"h:{epoch}", slots=attempt),
        "lose": lambda: NodeLost(node_id=node, last_seen=utc_now()),
    }[kind]()


def _messages(steps) -> list[StoredMessage]:
    out = []
    for seq, step in enumerate(steps, start=1):
        if step == "garbage":
            out.append(StoredMessage(seq, "events.job.j0", b"{not json", {}, _T0 + seq))
        else:
            event = _event(*step)
            out.append(StoredMessage(seq, subject_for(event), encode(event), {}, _T0 + seq))
    return out


def _index_view(index: Index) -> tuple:
    return dict(index.jobs), dict(index.assignments), {n: s.status for n, s in index.nodes.items()}


def _tables(projection: Projection) -> dict[str, list]:
    return {t: projection.query(f"SELECT * FROM {t} ORDER BY ALL", max_rows=10**6).rows for t in TABLES}


_steps = st.lists(
    st.one_of(
        st.just("garbage"),
        st.tuples(
            st.sampled_from(["assign", "assign", "start", "start", "epoch", "epoch", "epoch", "reject", "requeue",
                             "complete", "fail", "cancel", "register", "lose", "submit"]),
            st.integers(0, 3), st.integers(1, 2), st.integers(1, 3),
        ),
    ),
    min_size=5, max_size=40,
)
_PREAMBLE = [("register", 0, 1, 1), ("register", 1, 1, 1), ("submit", 0, 1, 1), ("submit", 1, 1, 1), ("submit", 2, 1, 1),
             ("submit", 3, 1, 1)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps, cuts=st.lists(st.integers(1, 44), min_size=1, max_size=10), reopen=st.booleans())
def test_the_tables_do_not_depend_on_where_batches_are_cut(tmp_path_factory, steps, cuts, reopen):
    """Any batch boundaries, and a restart between batches (the index reloaded from
    the file), give the same tables as one batch."""
    messages = _messages(_PREAMBLE + steps)
    folder = tmp_path_factory.mktemp("cuts")
    whole = Projection(folder / "whole.duckdb")
    whole.apply(EVENTS_STREAM, messages)
    path = folder / "cut.duckdb"
    cut = Projection(path)
    bounds = sorted({0, len(messages), *(c for c in cuts if c < len(messages))})
    for number, (start, end) in enumerate(zip(bounds, bounds[1:])):
        if reopen and number == len(bounds) // 2:
            cut.close()
            cut = Projection(path)
        cut.apply(EVENTS_STREAM, messages[start:end])
    assert _tables(cut) == _tables(whole)
    assert _index_view(cut._index) == _index_view(Index.load(cut.con))  # the index matches the file
    cut.close()
    whole.close()


def test_a_value_duckdb_refuses_is_an_anomaly_and_the_batch_goes_on(tmp_path):
    steps = [("submit", 0, 1, 1), ("submit", 1, 1, 1), ("assign", 1, 1, 1), ("epoch", 1, 1, 1)]
    messages = _messages(steps)
    huge = JobSubmitted(job_id="big", spec=JobSpec(epochs=2**40))  # the epochs column is INTEGER
    messages.insert(1, StoredMessage(99, subject_for(huge), encode(huge), {}, _T0))
    messages = [StoredMessage(i, m.subject, m.data, {}, m.time_ns) for i, m in enumerate(messages, start=1)]
    projection = Projection(tmp_path / "p.duckdb")
    projection.apply(EVENTS_STREAM, messages)
    [[seq, reason]] = projection.query("SELECT seq, reason FROM anomalies").rows
    assert seq == 2 and reason.startswith("the projection could not apply it")
    assert projection.query("SELECT job_id, state, current_epoch FROM jobs ORDER BY job_id").rows == [
        ["j0", "queued", 0], ["j1", "running", 1]]
    projection.apply(EVENTS_STREAM, _messages([("submit", 0, 1, 1)] * 6)[5:])  # seq 6: j0 again
    assert projection.query("SELECT count(*) FROM anomalies").rows == [[2]]
    assert projection.checkpoint() == 6


async def test_a_fed_projector_loses_nothing_to_a_late_start_a_dropped_backlog_or_a_gap(bus, tmp_path):
    """Central hands the projector the batches its own subscription folds; what the
    projector never got (before it caught up, dropped when far behind, skipped) it reads
    from the bus, so the result equals a clean rebuild."""
    events = history(60)
    seqs = await bus.append_many(events[:100])  # before the projector starts
    projection = Projection(tmp_path / "fed.duckdb")
    projector = Projector(projection, bus, telemetry=False, min_commit_interval_s=0)
    projector.MAX_FED = 40
    feed = projector.use_feed()
    task = asyncio.create_task(projector.run())
    try:
        await eventually(lambda: projection.checkpoint(EVENTS_STREAM) == seqs[-1], message="caught up on its own")
        await eventually(lambda: projector._fed is not None, message="live")
        rest = await bus.append_many(events[100:])
        stored = [m async for m in bus.read(seqs[-1] + 1)]  # what central's subscription hands in
        feed(stored[10:30])  # the first 10 never handed in: a gap
        for start in range(30, len(stored), 25):
            feed(stored[start:start + 25])  # more than MAX_FED piles up: dropped, read from the bus
        await eventually(lambda: projection.checkpoint(EVENTS_STREAM) == rest[-1], message="all applied")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    projection.close()
    await rebuild(tmp_path / "clean.duckdb", bus)
    assert snapshot(tmp_path / "fed.duckdb") == snapshot(tmp_path / "clean.duckdb")


async def test_a_rebuilt_file_keeps_last_seen_from_telemetry(bus, tmp_path):
    """Telemetry is applied once the events stream has caught up, so a heartbeat moves
    the last_seen of a node whose row a fresh file has only just written."""
    from datetime import datetime, timedelta, timezone

    registered = datetime(2026, 1, 1, tzinfo=timezone.utc)
    await bus.append(NodeRegistered(node_id="n1", endpoint="h:1", occurred_at=registered))
    beat = registered + timedelta(hours=1)
    await bus.publish_telemetry(NodeHeartbeat(node_id="n1", occurred_at=beat))
    await eventually(lambda: _telemetry_stored(bus), message="the heartbeat is in its stream")
    projection = Projection(tmp_path / "fresh.duckdb")
    task = asyncio.create_task(Projector(projection, bus, telemetry_linger_s=0).run())
    try:
        await eventually(lambda: projection.checkpoint("CYXWIZ_TELEMETRY") >= 1, message="telemetry applied")
        [[seen]] = projection.query("SELECT last_seen FROM nodes WHERE node_id = 'n1'").rows
        assert seen.replace(tzinfo=timezone.utc) == beat
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        projection.close()


async def _telemetry_stored(bus) -> bool:
    return await bus.last_sequence("CYXWIZ_TELEMETRY") >= 1


def test_a_file_another_process_holds_is_busy_not_a_traceback(tmp_path):
    """DuckDB's lock on the file is looked at directly (its own error is a plain IOException)."""
    from central.readmodel.projection import ProjectionBusy

    path = tmp_path / "held.duckdb"
    Projection(path).close()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); "
                               "print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for read_only in (False, True):
            with pytest.raises(ProjectionBusy, match="in use by another process"):
                Projection(path, read_only=read_only)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    Projection(path, read_only=True).close()  # free again
