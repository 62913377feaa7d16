"""The job and node deciders: the lifecycle, refusals, anomalies, and properties of any
sequence of commands or events (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from central.lifecycle.deciders import (
    MAX_ATTEMPTS,
    Assign,
    Cancel,
    Fail,
    Finish,
    Progress,
    Reject,
    Requeue,
    Submit,
    decide,
)
from central.lifecycle.errors import Refused
from central.lifecycle.jobs import TERMINAL, anomaly, evolve, report_event_id
from central.lifecycle.nodes import Deregister, MarkLost, decide_node, evolve_node
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
    NodeLost,
    NodeRegistered,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def run(state, command):
    events = decide(state, command, NOW)
    for event in events:
        assert anomaly(state, event) is None, f"decide produced an event that does not apply: {event}"
        state = evolve(state, event)
    return state, events


def submitted(epochs: int = 3):
    return run(None, Submit("j1", JobSpec(epochs=epochs)))[0]


def running(node: str = "n1"):
    state, _ = run(submitted(), Assign(node))
    state, _ = run(state, Progress(node, epoch=0))
    return state


def trained(node: str = "n1"):
    """Running, with every one of its 3 epochs reported."""
    state = running(node)
    for epoch in (1, 2, 3):
        state, _ = run(state, Progress(node, epoch=epoch))
    return state


def test_submit_queues_a_retry_is_nothing_and_another_spec_is_a_conflict():
    state = submitted()
    assert (state.status, state.attempt, state.epochs) == ("queued", 1, 3)
    assert decide(state, Submit("j1", JobSpec(epochs=3)), NOW) == [], "the same job again: nothing to do"
    with pytest.raises(Refused) as info:
        decide(state, Submit("j1", JobSpec()), NOW)
    assert (info.value.code, info.value.reason) == (409, "exists")
    assert info.value.message == "job 'j1' already exists with a different spec; submit it under another job_id"
    done, _ = run(trained(), Finish("n1", "completed"))
    assert decide(done, Submit("j1", JobSpec(epochs=3)), NOW) == [], "an ended job's id is still taken by it"


def test_decisions_are_functions_of_their_arguments():
    first, again = decide(None, Submit("j1", JobSpec()), NOW), decide(None, Submit("j1", JobSpec()), NOW)
    assert first == again, "same inputs, same events, same ids (a retried submit is stored once)"
    state = submitted()
    assert decide(state, Assign("n1"), NOW, 7) == decide(state, Assign("n1"), NOW, 7)
    assert decide(state, Assign("n1"), NOW, 7)[0].event_id != decide(state, Assign("n1"), NOW, 8)[0].event_id
    assert decide(state, Assign("n1"), NOW, 7)[0].event_id != decide(state, Assign("n2"), NOW, 7)[0].event_id


def test_epochs_are_reported_in_order_and_a_completion_needs_them_all():
    state, _ = run(running(), Progress("n1", epoch=1))
    with pytest.raises(Refused) as info:
        decide(state, Progress("n1", epoch=3), NOW)
    assert info.value.code == 400 and "epoch 3 reported, but epoch 2 is the next one" in info.value.message
    with pytest.raises(Refused) as info:
        decide(state, Finish("n1", "completed"), NOW)
    assert info.value.code == 409 and "epochs 2..3 were never reported" in info.value.message
    assert "skips epoch 2" in anomaly(state, EpochCompleted(job_id="j1", node_id="n1", epoch=3))
    assert "never recorded" in anomaly(state, JobCompleted(job_id="j1", node_id="n1"))


def test_a_completion_of_the_attempt_requeued_after_all_its_epochs_is_accepted():
    state, _ = run(trained(), Requeue("node n1 lost", "n1"))
    assert (state.status, state.attempt, state.excluded_node) == ("queued", 2, "n1")
    state, events = run(state, Finish("n1", "completed", attempt=1, sha256="ab"))
    assert [type(e) for e in events] == [JobCompleted] and events[0].attempt == 1
    assert (state.status, state.node_id, state.artifact[1]) == ("completed", "n1", "ab")
    half, _ = run(running(), Progress("n1", epoch=1))
    half, _ = run(half, Requeue("node n1 lost", "n1"))
    with pytest.raises(Refused):
        decide(half, Finish("n1", "completed", attempt=1), NOW)


def test_unknown_job_is_404():
    with pytest.raises(Refused) as info:
        decide(None, Cancel(), NOW)
    assert info.value.code == 404


def test_happy_path_assigned_running_epochs_completed():
    state, events = run(submitted(), Assign("n1"))
    assert [type(e) for e in events] == [JobAssigned] and state.status == "assigned"
    state, events = run(state, Progress("n1", epoch=1, metrics={"loss": 0.5, "f1": 0.2}, checkpoint_uri="nats://c/1"))
    assert [type(e) for e in events] == [JobStarted, EpochCompleted]
    assert events[1].loss == 0.5 and events[1].metrics == {"f1": 0.2}
    assert (state.status, state.epochs_done, state.checkpoint_uri) == ("running", 1, "nats://c/1")
    state, events = run(state, Progress("n1", epoch=1))
    assert events == [], "a repeated epoch decides nothing"
    state, _ = run(state, Progress("n1", epoch=2))
    state, _ = run(state, Progress("n1", epoch=3))
    state, events = run(state, Finish("n1", "completed", artifact_uri="nats://m/j1", sha256="ab", size_bytes=3))
    assert [type(e) for e in events] == [JobCompleted]
    assert state.status == "completed" and state.spec is None and state.artifact == ("nats://m/j1", "ab", 3)


def test_report_event_ids_are_deterministic():
    _, first = run(running(), Progress("n1", epoch=1))
    _, again = run(running(), Progress("n1", epoch=1))
    assert first[0].event_id == again[0].event_id == report_event_id("j1", 1, "epoch/1")


def test_a_report_from_a_node_that_does_not_hold_the_job_is_refused():
    state = running("n1")
    with pytest.raises(Refused) as info:
        decide(state, Progress("n2", epoch=1), NOW)
    assert info.value.code == 409 and "node 'n2' does not hold job 'j1'" in info.value.message
    with pytest.raises(Refused):
        decide(state, Finish("n1", "completed", attempt=2), NOW)


def test_rejection_requeues_and_three_invalid_rejections_fail():
    state = submitted()
    for n in range(3):
        state, events = run(state, Assign("n1"))
        state, events = run(state, Reject("n1", 1, "invalid", "bad model"))
    assert [type(e) for e in events] == [JobRejected, JobFailed]
    assert state.status == "failed" and "rejected as invalid" in state.error


def test_requeue_carries_the_checkpoint_and_gives_up_after_three_attempts():
    state, _ = run(running(), Progress("n1", epoch=1))
    state, _ = run(state, Progress("n1", epoch=2, checkpoint_uri="nats://c/2"))
    state, events = run(state, Requeue("node n1 lost", "n1"))
    assert [type(e) for e in events] == [JobRequeued]
    assert (events[0].next_attempt, events[0].resume_checkpoint, events[0].resume_epoch) == (2, "nats://c/2", 2)
    state, events = run(state, Assign("n2"))
    assert (events[0].attempt, events[0].resume_checkpoint, events[0].resume_epoch) == (2, "nats://c/2", 2)
    state, _ = run(state, Requeue("node n2 lost"))
    state, _ = run(state, Assign("n3"))
    state, events = run(state, Requeue("node n3 lost"))
    assert [type(e) for e in events] == [JobFailed]
    assert state.status == "failed" and state.attempt == MAX_ATTEMPTS
    assert "giving up after 3 attempts" in state.error


def test_retryable_failure_requeues_a_final_one_fails():
    state, events = run(running(), Finish("n1", "failed", error="OOM", retryable=True))
    assert [type(e) for e in events] == [JobRequeued] and state.attempt == 2
    state, _ = run(state, Assign("n2"))
    state, events = run(state, Finish("n2", "failed", error="bad data"))
    assert [type(e) for e in events] == [JobFailed] and state.error == "bad data"


def test_cancel_queued_is_immediate_running_waits_for_the_node():
    state, events = run(submitted(), Cancel("no longer needed"))
    assert [type(e) for e in events] == [JobCancelRequested, JobCancelled] and state.status == "cancelled"
    state, events = run(running(), Cancel())
    assert [type(e) for e in events] == [JobCancelRequested] and state.status == "running"
    assert run(state, Cancel())[1] == []
    state, events = run(state, Progress("n1", epoch=1, cancelled=True))
    assert type(events[-1]) is JobCancelled and state.status == "cancelled"
    assert run(state, Progress("n1", epoch=2))[1] == [], "reports after the cancel decide nothing"
    with pytest.raises(Refused) as info:
        decide(state, Cancel(), NOW)
    assert info.value.code == 409


def test_a_lost_node_with_a_cancel_requested_job_cancels_it():
    state, _ = run(running(), Cancel())
    state, events = run(state, Requeue("node lost"))
    assert [type(e) for e in events] == [JobCancelled]


def test_anomalies_change_nothing():
    done, _ = run(trained(), Finish("n1", "completed"))
    for event in (JobCompleted(job_id="j1"), JobAssigned(job_id="j1", node_id="n9"),
                  EpochCompleted(job_id="j1", epoch=9), JobSubmitted(job_id="j1", spec=JobSpec())):
        assert anomaly(done, event) is not None
        assert evolve(done, event) is done
    assert "unknown job" in anomaly(None, JobCompleted(job_id="x"))


def test_node_lifecycle():
    reg = NodeRegistered(node_id="n1", endpoint="127.0.0.1:1", slots=0, session_token_sha256="h")
    node = evolve_node(None, reg)
    assert (node.status, node.slots, node.registration_id) == ("online", 1, reg.event_id)
    lost = decide_node(node, MarkLost(NOW), NOW)
    assert [type(e) for e in lost] == [NodeLost]
    node = evolve_node(node, lost[0])
    assert node.status == "lost"
    with pytest.raises(Refused):
        decide_node(node, MarkLost(NOW), NOW)
    assert evolve_node(node, lost[0]) is node
    assert evolve_node(node, reg).status == "online", "a node that comes back registers again"
    with pytest.raises(Refused):
        decide_node(None, Deregister(), NOW)


# --- properties -------------------------------------------------------------------------

nodes = st.sampled_from(["n1", "n2"])
attempts = st.integers(0, 4)
commands = st.one_of(
    st.builds(Assign, nodes),
    st.builds(Reject, nodes, attempts, st.sampled_from(["busy", "invalid", "unreachable"])),
    st.builds(Requeue, st.just("lost"), st.none() | nodes),
    st.builds(Progress, nodes, attempts, st.integers(0, 5), st.just({"loss": 1.0}), st.none() | st.just("nats://c/x"),
              cancelled=st.booleans()),
    st.builds(Finish, nodes, st.sampled_from(["completed", "failed", "cancelled"]), attempts, retryable=st.booleans()),
    st.builds(Cancel),
    st.builds(Fail, st.just("operator")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=30))
def test_any_command_sequence_keeps_the_lifecycle_sound(sequence):
    state = submitted(epochs=5)
    terminal_events = 0
    for command in sequence:
        before = state
        try:
            state, events = run(state, command)
        except Refused as exc:
            assert exc.code in (400, 404, 409)
            assert state is before
            continue
        terminal_events += sum(type(e).__name__ in ("JobCompleted", "JobFailed", "JobCancelled") for e in events)
        assert state.attempt >= before.attempt and state.attempt <= MAX_ATTEMPTS
        assert state.epochs_done <= 5
        if before.status in TERMINAL:
            assert events == [] and state is before
        if state.status in ("queued",):
            assert state.node_id is None
    assert terminal_events == (1 if state.status in TERMINAL else 0)


events_any = st.one_of(
    st.builds(JobAssigned, job_id=st.just("j1"), node_id=nodes, attempt=st.integers(1, 4)),
    st.builds(JobRejected, job_id=st.just("j1"), node_id=nodes, attempt=st.integers(1, 4)),
    st.builds(JobStarted, job_id=st.just("j1"), node_id=nodes, attempt=st.integers(1, 4)),
    st.builds(EpochCompleted, job_id=st.just("j1"), node_id=nodes, attempt=st.integers(1, 4), epoch=st.integers(-1, 6)),
    st.builds(JobCompleted, job_id=st.just("j1"), node_id=nodes, attempt=st.integers(1, 4)),
    st.builds(JobFailed, job_id=st.just("j1"), error=st.just("x")),
    st.builds(JobRequeued, job_id=st.just("j1"), reason=st.just("r"), next_attempt=st.integers(1, 5)),
    st.builds(JobCancelRequested, job_id=st.just("j1")),
    st.builds(JobCancelled, job_id=st.just("j1")),
    st.builds(JobSubmitted, job_id=st.just("j1"), spec=st.just(JobSpec())),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(events_any, max_size=30))
def test_evolve_is_total_and_an_ended_job_stays_ended(sequence):
    """Any events, as a script might publish them: evolve never raises, ends are final."""
    state = None
    for event in sequence:
        before = state
        state = evolve(state, event)
        if anomaly(before, event) is not None:
            assert state is before
        if before is not None and before.status in TERMINAL:
            assert state is before
