"""The reporter's ordering rules, with an in-process store that uploads only when told:
epochs are reported in order, one upload at a time, and a checkpoint still waiting for
its turn is superseded by a newer one, so reports never fall behind training."""

from __future__ import annotations

import asyncio

import pytest
from waiting import eventually

from bus import ObjectRef
from node.executor import COMPLETED, Assignment, Outcome
from node.reporter import Reporter
from node.trainer import EpochResult
from protos import node_pb2

pytestmark = pytest.mark.timeout(30)


class Link:
    """Central's side: records what was sent and always says continue."""

    node_id = "n1"

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def call(self, method, make_request, *, timeout=10.0):
        request = make_request()
        self.sent.append((method, request))
        if method == "ReportProgress":
            return node_pb2.ReportProgressResponse(continue_job=True)
        return node_pb2.ReportCompletionResponse()


class GatedStore:
    """Uploads one checkpoint each time ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.uploaded: list[int] = []

    async def put_checkpoint(self, job_id, attempt, epoch, data):
        await self.release.wait()
        self.release.clear()
        self.uploaded.append(epoch)
        return ObjectRef(bucket="cyxwiz-checkpoints", name=f"{job_id}/attempt-{attempt}/epoch-{epoch}", sha256="", size=len(data))

    async def put_model(self, job_id, data):
        return ObjectRef(bucket="cyxwiz-models", name=job_id, sha256="", size=len(data))


def epoch(k: int) -> EpochResult:
    return EpochResult(epoch=k, total_epochs=5, loss=1.0, accuracy=None, val_loss=None, val_accuracy=None,
                       seconds=0.1, samples_per_s=1.0, step=k, checkpoint=b"x" * 10)


async def test_a_waiting_checkpoint_upload_is_superseded_and_reports_stay_in_order():
    link, store = Link(), GatedStore()
    reporter = Reporter(link, store, cancel=lambda _job: False)  # type: ignore[arg-type]
    await reporter.start()
    job = Assignment(job_id="j", model_definition="{}", dataset_uri="builtin://digits", epochs=5, batch_size=8)
    for k in (1, 2, 3, 4):  # epoch 1 uploads; 2 and 3 wait behind it, each superseded by the next
        reporter.on_epoch(job, epoch(k))
    await asyncio.sleep(0)  # the hand-over runs on the loop
    store.release.set()  # epoch 1's upload
    await eventually(lambda: store.uploaded == [1] and not store.release.is_set(), message="epoch 1 uploaded")
    store.release.set()  # epoch 4's upload (2 and 3 never start)
    reporter.on_end(job, Outcome(status=COMPLETED))
    assert await reporter.drain(10)
    progress = [r for m, r in link.sent if m == "ReportProgress"]
    assert [r.status.current_epoch for r in progress] == [1, 2, 3, 4]
    assert [r.checkpoint_uri.rsplit("/", 1)[-1] if r.checkpoint_uri else "" for r in progress] == [
        "epoch-1", "", "", "epoch-4",
    ]
    assert store.uploaded == [1, 4] and reporter.stats.checkpoints_superseded == 2
    assert link.sent[-1][0] == "ReportCompletion"
    await reporter.close()
