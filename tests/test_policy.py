"""Scheduler policy: queue order, fitting, scoring; and the folded state's queue."""

from __future__ import annotations

from hypothesis import given, strategies as st

from central.lifecycle.policy import Candidate, Ranking, choose, fits, queue_key, score
from central.lifecycle.state import CentralState
from bus import StoredMessage
from events import Device, JobSpec, JobSubmitted, Requirements, encode

CPU = (Device(type="cpu", memory_bytes=0),)
GPU16 = (Device(type="cpu"), Device(type="cuda", name="A", memory_bytes=16 << 30))


def node(node_id, devices=CPU, ram=8 << 30, slots=2, running=0, completed=0, uptime=0.0):
    return Candidate(node_id, devices, ram, slots, running, completed, uptime)


def test_queue_order_is_priority_then_submission_time():
    keys = [queue_key(1, 10.0, "b"), queue_key(3, 50.0, "c"), queue_key(1, 5.0, "a"), queue_key(0, 1.0, "d")]
    assert [k[2] for k in sorted(keys)] == ["c", "a", "b", "d"]


def test_fits_device_and_memory():
    assert fits(Requirements(), CPU, 1)
    assert fits(Requirements(device="cpu", min_memory_bytes=4 << 30), CPU, 8 << 30)
    assert not fits(Requirements(device="cpu", min_memory_bytes=16 << 30), CPU, 8 << 30)
    assert not fits(Requirements(device="cuda"), CPU, 8 << 30)
    assert fits(Requirements(device="cuda", min_memory_bytes=12 << 30), GPU16, 8 << 30)
    assert not fits(Requirements(device="cuda", min_memory_bytes=20 << 30), GPU16, 8 << 30)
    assert fits(Requirements(min_memory_bytes=12 << 30), GPU16, 8 << 30), "any device: the GPU's memory counts"


def test_choose_prefers_low_load_then_history_then_uptime():
    assert choose(Requirements(), [node("a", running=1), node("b")]) == "b"
    assert choose(Requirements(), [node("a", completed=1), node("b", completed=50)]) == "b"
    assert choose(Requirements(), [node("a", uptime=10), node("b", uptime=1000)]) == "b"
    assert choose(Requirements(), [node("b"), node("a")]) == "a", "ties go to the smaller id"
    assert choose(Requirements(), [node("a", running=2)]) is None, "no free slot"
    assert choose(Requirements(device="cuda"), [node("a"), node("g", devices=GPU16, running=1)]) == "g"


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 4), st.integers(0, 10_000), st.floats(0, 1e6)),
                min_size=1, max_size=20))
def test_choose_returns_a_free_node_and_load_dominates(specs):
    nodes = [node(f"n{i}", slots=slots, running=min(r, slots), completed=c, uptime=u)
             for i, (r, slots, c, u) in enumerate(specs)]
    chosen = choose(Requirements(), nodes)
    free = [n for n in nodes if n.free > 0]
    if not free:
        assert chosen is None
        return
    best = next(n for n in nodes if n.node_id == chosen)
    assert best.free > 0
    least_load = min(n.running / n.slots for n in free)
    assert best.running / best.slots == least_load
    assert score(best) == max(score(n) for n in free if n.running / n.slots == least_load)


def test_state_queue_is_in_scheduling_order_and_skips_stale_entries():
    state = CentralState()
    jobs = [("low", 0), ("n1", 1), ("high", 2), ("n2", 1)]
    for seq, (job_id, priority) in enumerate(jobs, start=1):
        event = JobSubmitted(job_id=job_id, spec=JobSpec(priority=priority))
        state.apply(StoredMessage(seq, f"events.job.{job_id}", encode(event)))
    assert [j.job_id for j in state.queued()] == ["high", "n1", "n2", "low"]
    assert state.job_version("n1") == 2
    first = state.pop_queued()
    assert first.job_id == "high"
    state.push_queued(first)
    state.push_queued(first)  # a duplicate entry is harmless
    assert [j.job_id for j in state.queued()] == ["high", "n1", "n2", "low"]


def test_state_keeps_undecodable_messages_as_anomalies():
    state = CentralState()
    state.apply(StoredMessage(1, "events.job.x", b'{"type": "JobExploded"}'))
    state.apply(StoredMessage(2, "events.job.x", b"not json"))
    assert state.anomaly_count == 2 and state.last_seq == 2 and not state.jobs


requirements = st.sampled_from([Requirements(), Requirements(device="cuda"), Requirements(device="cuda", min_memory_bytes=12 << 30),
                                Requirements(min_memory_bytes=12 << 30), Requirements(device="tpu")])
candidates = st.lists(
    st.builds(node, st.sampled_from("abcdefgh"), st.sampled_from([CPU, GPU16]), st.sampled_from([4 << 30, 16 << 30]),
              st.integers(1, 4), st.integers(0, 4), st.integers(0, 3), st.sampled_from([0.0, 60.0, 9e5])),
    max_size=8, unique_by=lambda c: c.node_id)


@given(candidates, st.lists(requirements, max_size=30))
def test_ranking_takes_what_choose_would(nodes, jobs):
    ranking = Ranking(nodes)
    current = {n.node_id: n for n in nodes}
    for wanted in jobs:
        expected = choose(wanted, current.values())
        assert ranking.take(wanted) == expected
        if expected is not None:
            n = current[expected]
            current[expected] = Candidate(n.node_id, n.devices, n.ram_bytes, n.slots, n.running + 1, n.completed, n.uptime_s)
    assert bool(ranking) == any(n.free > 0 for n in current.values())


def test_why_a_job_waits_names_what_is_missing():
    from central.lifecycle.policy import why_waiting

    cpu = Candidate("n1", (Device(type="cpu", memory_bytes=8 << 30),), 16 << 30, 1)
    assert why_waiting(Requirements(), []) == "no node is online"
    assert why_waiting(Requirements(device="cuda"), [cpu]) == "no online node has a cuda device"
    assert why_waiting(Requirements(min_memory_bytes=2 << 40), [cpu]) == (
        "needs 2.0 TiB of memory; the largest online node has 16.0 GiB")
    assert why_waiting(Requirements(min_memory_bytes=1 << 30), [cpu]) == "all slots of the nodes that fit it are busy"


def test_a_ranking_passes_over_the_node_to_avoid_while_another_fits():
    nodes = [Candidate("a", (Device(type="cpu"),), 8 << 30, 1), Candidate("b", (Device(type="cpu"),), 8 << 30, 1)]
    assert Ranking(nodes).take(Requirements()) == "a"
    assert Ranking(nodes).take(Requirements(), avoid="a") == "b"
    only = Ranking(nodes[:1])
    assert only.take(Requirements(), avoid="a") == "a", "the avoided node when no other fits"


# --- devices: a job on k devices takes k slots of one node with k devices ----------------------

GPUS = tuple(Device(type="cuda", memory_bytes=16 << 30) for _ in range(4))


def test_slots_taken_counts_the_devices_a_job_asks_for():
    from central.lifecycle.policy import device_count, slots_taken

    four, one = node("four", devices=GPUS, slots=4), node("cpu", devices=CPU, slots=2)
    assert (device_count(GPUS), device_count(GPU16), device_count(CPU)) == (4, 1, 1)
    assert [slots_taken(k, 8, four) for k in (1, 2, 4, 8)] == [1, 2, 4, None]
    assert slots_taken(0, 8, four) == 4 and slots_taken(0, 6, four) is None, "all: 4 devices, 6 does not split"
    assert slots_taken(2, 8, one) is None and slots_taken(0, 7, one) == 1
    assert slots_taken(4, 8, node("few-slots", devices=GPUS, slots=2)) is None, "k slots on k devices"


@given(candidates.map(lambda ns: [n._replace(devices=GPUS[:n.slots]) for n in ns]),
       st.lists(st.tuples(requirements, st.sampled_from([0, 1, 1, 2, 3, 4])), max_size=30))
def test_ranking_with_devices_takes_what_choose_would(nodes, jobs):
    from central.lifecycle.policy import slots_taken

    ranking = Ranking(nodes)
    current = {n.node_id: n for n in nodes}
    for wanted, devices in jobs:
        expected = choose(wanted, current.values(), devices, 8)
        assert ranking.take(wanted, devices=devices, batch_size=8) == expected
        if expected is not None:
            n = current[expected]
            count = slots_taken(devices, 8, n)
            assert count is not None and n.free >= count
            current[expected] = n._replace(running=n.running + count)


def test_why_a_job_waits_for_devices():
    from central.lifecycle.policy import why_waiting

    four = node("four", devices=GPUS, slots=4, running=4)
    assert why_waiting(Requirements(), [four], 8, 8) == "needs 8 devices on one node; the online nodes that fit it have at most 4"
    assert why_waiting(Requirements(), [four], 2, 8) == "all slots of the nodes that fit it are busy"
    assert why_waiting(Requirements(), [four], 0, 6) == (
        "devices=all: batch_size 6 does not divide by the device count of any node that fits (4); "
        "choose a number of devices or another batch_size")
