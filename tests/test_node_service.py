"""NodeService on the node: AssignJob validation (400), auth (401), slots (429),
idempotent repeats, GetNodeMetrics, and UNIMPLEMENTED for everything else."""

from __future__ import annotations

import grpc
import pytest
from fake_central import FakeCentral, assign, job_config, node_stub, running_node
from hypothesis import given
from protos.convert import bearer_metadata
from hypothesis import strategies as st
from waiting import eventually

from node.service import validate_job
from protos import common_pb2, deployment_pb2, deployment_pb2_grpc, job_pb2, node_pb2

pytestmark = pytest.mark.timeout(90)

LONG = "synthetic://classification?n=2000&features=16&classes=4"


@pytest.fixture
async def central():
    fake = await FakeCentral().start()
    yield fake
    await fake.stop()


# --- validation (pure) -------------------------------------------------------------


def test_a_good_job_is_valid() -> None:
    assert validate_job(job_config("j1")) is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"job_id": ""}, "job.job_id must not be empty"),
        ({"job_type": job_pb2.JOB_TYPE_UNKNOWN}, "job 'j1': job_type must be set"),
        ({"job_type": job_pb2.JOB_TYPE_INFERENCE}, "job 'j1': job_type JOB_TYPE_INFERENCE is not supported"),
        ({"epochs": 0}, "job 'j1': epochs must be 1..1000000 (got 0)"),
        ({"epochs": -3}, "job 'j1': epochs must be 1..1000000 (got -3)"),
        ({"batch_size": 0}, "job 'j1': batch_size must be 1..16777216 (got 0)"),
        ({"dataset_uri": ""}, "job 'j1': dataset_uri must not be empty"),
        ({"dataset_uri": "http://x/y.csv"}, "job 'j1': dataset_uri 'http://x/y.csv': scheme 'http' is not supported"),
        ({"model_definition": "{oops"}, "job 'j1': model_definition is not valid JSON"),
        ({"model_definition": "[1]"}, "job 'j1': model_definition must be a JSON object"),
        ({"model_definition": '{"type": "rnn"}'}, "job 'j1': model_definition.type 'rnn' is not supported"),
        ({"resume_from_epoch": 2}, "job 'j1': resume_from_epoch 2 needs a resume_checkpoint_uri"),
    ],
)
def test_invalid_jobs_are_named_by_field(fields, expected) -> None:
    problem = validate_job(job_config("j1", **fields))
    assert problem is not None and problem.startswith(expected), problem


@given(epochs=st.integers(-(2**31), 2**31 - 1), batch=st.integers(-(2**31), 2**31 - 1))
def test_epochs_and_batch_size_must_be_positive(epochs: int, batch: int) -> None:
    problem = validate_job(job_config("j1", epochs=epochs, batch_size=batch))
    if not 0 < epochs <= 1_000_000:
        assert problem == f"job 'j1': epochs must be 1..1000000 (got {epochs})"
    elif not 0 < batch <= 1 << 24:
        assert problem == f"job 'j1': batch_size must be 1..16777216 (got {batch})"
    else:
        assert problem is None


# --- over gRPC ------------------------------------------------------------------------


async def test_assign_job_needs_the_session_token(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await assign(node, central.record, job_config("j1"), token="not-the-token")
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "401" in caught.value.details()
        assert node.executor.active_jobs() == []


async def test_invalid_job_and_wrong_node_get_400(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        answer = await assign(node, central.record, job_config("j1", epochs=0))
        assert (answer.status, answer.accepted, answer.error.code) == (common_pb2.STATUS_FAILED, False, 400)
        assert answer.error.message == "job 'j1': epochs must be 1..1000000 (got 0)"
        channel, stub = node_stub(node)
        async with channel:
            wrong = await stub.AssignJob(node_pb2.AssignJobRequest(
                node_id="someone-else", job=job_config("j2"), authorization_token=central.record.token,
            ))
        assert wrong.error.code == 400 and "node_id 'someone-else'" in wrong.error.message
        assert node.executor.active_jobs() == []


async def test_two_jobs_run_at_once_and_a_third_is_refused_429(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path, slots=2) as node:
        rec = central.record
        for job_id in ("a", "b"):  # jobs that end only when cancelled: a loaded machine can start b late
            assert (await assign(node, rec, job_config(job_id, epochs=100_000, dataset_uri=LONG))).accepted
        await eventually(lambda: rec.progress_of("a") and rec.progress_of("b"), timeout=60, message="both train")
        assert sorted(node.executor.active_jobs()) == ["a", "b"]
        busy = await assign(node, rec, job_config("c"))
        assert (busy.status, busy.accepted, busy.error.code) == (common_pb2.STATUS_FAILED, False, 429)
        again = await assign(node, rec, job_config("a", epochs=100_000, dataset_uri=LONG))
        assert again.accepted, "repeating an assignment that runs is accepted, not run twice"
        other_attempt = await assign(node, rec, job_config("a", attempt=2))
        assert other_attempt.error.code == 409
        rec.to_cancel.update({"a", "b"})
        await eventually(lambda: rec.completion_of("a") and rec.completion_of("b"), timeout=10)
        assert (await assign(node, rec, job_config("c"))).accepted


async def test_get_node_metrics_returns_points(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        await eventually(lambda: len(node.metrics.between()) >= 3, message="samples")
        channel, stub = node_stub(node)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id=node.node_id))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, "only the central it registered with"
            auth = bearer_metadata(central.record.token)
            answer = await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id=node.node_id), metadata=auth)
            assert len(answer.metrics) >= 3 and not answer.HasField("error")
            stamps = [p.timestamp for p in answer.metrics]
            assert stamps == sorted(stamps) and all(0 <= p.memory_usage <= 1 for p in answer.metrics)
            later = await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(start_time=stamps[-1] + 3600), metadata=auth)
            assert list(later.metrics) == []
            other = await stub.GetNodeMetrics(node_pb2.GetNodeMetricsRequest(node_id="nope"), metadata=auth)
            assert other.error.code == 404


async def test_other_methods_answer_unimplemented(central, nats_server, tmp_path):
    async with running_node(central, nats_server.url, tmp_path) as node:
        channel, stub = node_stub(node)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Heartbeat(node_pb2.HeartbeatRequest())
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        for name, stub_class, call, request, code in (
            ("deploy", deployment_pb2_grpc.TerminalServiceStub, "CloseSession", deployment_pb2.CloseTerminalSessionRequest(),
             grpc.StatusCode.UNIMPLEMENTED),
            # the terminal is served, and off unless the node runs with --terminal (tests/test_terminal.py)
            ("terminal", deployment_pb2_grpc.TerminalServiceStub, "CloseSession", deployment_pb2.CloseTerminalSessionRequest(),
             grpc.StatusCode.FAILED_PRECONDITION),
        ):
            async with grpc.aio.insecure_channel(node.endpoint(name)) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await getattr(stub_class(ch), call)(request)
                assert caught.value.code() == code
