"""One lifecycle: central's state and the DuckDB projection fold any sequence of stored
messages — hostile ones included — to the same jobs, nodes, attempts, epochs and
anomalies (they call the same ``anomaly``/``evolve``)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from bus import StoredMessage
from central.lifecycle.state import CentralState
from central.readmodel.projection import EVENTS_STREAM, Projection
from events import (
    EpochCompleted,
    JobAssigned,
    JobCancelled,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobRequeued,
    JobSpec,
    JobStarted,
    JobSubmitted,
    JobWaiting,
    NodeDeregistered,
    NodeLost,
    NodeRegistered,
    encode,
    subject_for,
    utc_now,
)

_T0 = 1_700_000_000_000_000_000
JOBS = ["a", "b", "c"]
NODES = ["n1", "n2", "n3"]

jobs, nodes, attempts, epochs = st.sampled_from(JOBS), st.sampled_from(NODES), st.integers(1, 3), st.integers(0, 4)


def _spec(epochs_: int) -> JobSpec:
    return JobSpec(epochs=epochs_, dataset_uri="builtin://iris")


events = st.one_of(
    st.builds(lambda j, e: JobSubmitted(job_id=j, spec=_spec(e)), jobs, st.integers(1, 3)),
    st.builds(lambda j, n, a: JobAssigned(job_id=j, node_id=n, attempt=a), jobs, nodes, attempts),
    st.builds(lambda j, n, a: JobRejected(job_id=j, node_id=n, attempt=a, reason="busy"), jobs, nodes, attempts),
    st.builds(lambda j, n, a: JobStarted(job_id=j, node_id=n, attempt=a), jobs, nodes, attempts),
    st.builds(lambda j, n, a, e: EpochCompleted(job_id=j, node_id=n, attempt=a, epoch=e, loss=0.5,
                                                 checkpoint_uri=f"nats://c/{j}/{e}" if e % 2 else None),
              jobs, nodes, attempts, epochs),
    st.builds(lambda j, n, a: JobCompleted(job_id=j, node_id=n, attempt=a, metrics={"loss": 0.1}), jobs, nodes, attempts),
    st.builds(lambda j, n, a, r: JobFailed(job_id=j, node_id=n, attempt=a, error="x", retryable=r),
              jobs, st.none() | nodes, attempts, st.booleans()),
    st.builds(lambda j, r: JobWaiting(job_id=j, reason=r), jobs, st.sampled_from(["all slots busy", "no node is online"])),
    st.builds(lambda j, a, x: JobRequeued(job_id=j, reason="lost", next_attempt=a, excluded_node=x),
              jobs, st.integers(2, 4), st.none() | nodes),
    st.builds(lambda j: JobCancelRequested(job_id=j), jobs),
    st.builds(lambda j: JobCancelled(job_id=j), jobs),
    st.builds(lambda n: NodeRegistered(node_id=n, endpoint="127.0.0.1:1"), nodes),
    st.builds(lambda n: NodeLost(node_id=n, last_seen=utc_now()), nodes),
    st.builds(lambda n: NodeDeregistered(node_id=n), nodes),
)

# what lands on the stream: an event on its subject, an event on another aggregate's
# subject (a script's mistake, or hostility), garbage, or the same message again
messages = st.one_of(
    st.tuples(st.just("event"), events),
    st.tuples(st.just("misplaced"), events, jobs),
    st.tuples(st.just("garbage"), jobs, st.sampled_from([b"{not json", b'{"type": "JobExploded"}', b"\xff\x00",
                                                           b'{"type": "JobSubmitted", "job_id": 5}'])),
    st.tuples(st.just("again")),
)


def stored(plan) -> list[StoredMessage]:
    out: list[StoredMessage] = []
    for step in plan:
        seq = len(out) + 1
        if step[0] == "event":
            out.append(StoredMessage(seq, subject_for(step[1]), encode(step[1]), {}, _T0 + seq))
        elif step[0] == "misplaced":
            out.append(StoredMessage(seq, f"events.job.{step[2]}x", encode(step[1]), {}, _T0 + seq))
        elif step[0] == "garbage":
            out.append(StoredMessage(seq, f"events.job.{step[1]}", step[2], {}, _T0 + seq))
        elif out:  # a duplicate: a retried publish outside the dedup window, new sequence
            out.append(StoredMessage(seq, out[-1].subject, out[-1].data, {}, _T0 + seq))
    return out


def central_view(state: CentralState) -> tuple:
    jobs_ = {j.job_id: (str(j.status), j.node_id, j.attempt, j.epochs_done, j.cancel_requested,
                        j.waiting_reason if j.status == "queued" else "", j.retryable if j.status == "failed" else None)
             for j in state.jobs.values()}
    nodes_ = {n.node_id: n.status for n in state.nodes.values()}
    return jobs_, nodes_, sorted(seq for seq, _, _ in state.anomalies)


def projection_view(projection: Projection) -> tuple:
    rows = projection.query("SELECT job_id, state, node_id, attempt, current_epoch, cancel_requested, "
                            "coalesce(waiting_reason, ''), retryable FROM jobs").rows
    jobs_ = {r[0]: tuple(r[1:]) for r in rows}
    nodes_ = dict(projection.query("SELECT node_id, state FROM nodes").rows)
    anomalies = [r[0] for r in projection.query("SELECT seq FROM anomalies ORDER BY seq").rows]
    return jobs_, nodes_, anomalies


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(messages, min_size=1, max_size=60), cut=st.integers(1, 60))
def test_central_and_the_projection_fold_any_stream_alike(tmp_path_factory, plan, cut):
    sequence = stored(plan)
    state = CentralState()
    for message in sequence:
        state.apply(message)
    projection = Projection(tmp_path_factory.mktemp("one") / "p.duckdb")
    try:
        projection.apply(EVENTS_STREAM, sequence[:cut])  # in two batches, cut anywhere
        projection.apply(EVENTS_STREAM, sequence[cut:])
        assert projection_view(projection) == central_view(state)
        epochs_rows = projection.query("SELECT job_id, attempt, max(epoch) FROM epochs GROUP BY ALL").rows
        for job_id, attempt, top in epochs_rows:
            job = state.jobs[job_id]
            if job.attempt == attempt and not job.done:
                assert top == job.epochs_done, "the epochs recorded are the ones central counts"
    finally:
        projection.close()


def test_a_misplaced_event_is_an_anomaly_for_both_and_versions_its_own_subject():
    ghost = JobSubmitted(job_id="b", spec=_spec(1))
    sequence = [StoredMessage(1, "events.job.a", encode(ghost), {}, _T0),
                StoredMessage(2, "events.job.c", b"garbage", {}, _T0)]
    state = CentralState()
    for message in sequence:
        state.apply(message)
    assert state.jobs == {} and [seq for seq, _, _ in state.anomalies] == [1, 2]
    assert "JobSubmitted belongs on subject events.job.b, not events.job.a" in state.anomalies[0][2]
    assert (state.job_version("a"), state.job_version("b"), state.job_version("c")) == (1, 0, 2), \
        "an append to job a must expect the message that sits on its subject"
