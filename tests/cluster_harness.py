"""Central processes on a NATS cluster, and fake nodes that keep working through failures:
what tests/test_cluster*.py share.

- ``start_central_process``: ``python -m central central`` against a URL (a cluster's,
  comma-separated), waits for its ready file.
- ``WorkingNode``: a fake node (a real gRPC server) that reports every job it accepts as
  trained at once, retrying while central or NATS is unavailable, and counts refusals.
- ``submit_retrying``: SubmitJob with a chosen job id, retried while unavailable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

from bus import BusUnavailable, EventBus
from fake_node import Assignment, FakeNode
from protos import job_pb2, job_pb2_grpc
from waiting import eventually

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
TERMINAL = ("JobCompleted", "JobFailed", "JobCancelled")


async def start_central_process(nats_url: str, home: Path, *args: str, env: dict | None = None
                                ) -> tuple[subprocess.Popen, dict]:
    home.mkdir(parents=True, exist_ok=True)
    ready = home / "ready.json"
    ready.unlink(missing_ok=True)
    log = home / "central.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "central", "central", "--nats", nats_url, "--home", str(home), "--grpc-port", "0",
         "--rest-port", "0", "--ready-file", str(ready), *args],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True,
        env={**os.environ, "CYXWIZ_LOG_LEVEL": "WARNING", **(env or {})},
    )
    await eventually(lambda: ready.exists() or process.poll() is not None, timeout=60, message="central ready")
    assert process.poll() is None, log.read_text()[-3000:]
    return process, json.loads(ready.read_text())


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class WorkingNode(FakeNode):
    """Accepts each (job, attempt) once, as a real node does (a repeat is answered as
    accepted and changes nothing), and reports it trained a moment later."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.started: Counter[tuple[str, int]] = Counter()
        self.refusals: list[str] = []  # answers other than success or "unavailable, retry"
        self.done: set[str] = set()
        self.retried: Counter[str] = Counter()  # why a report was sent again (UNAVAILABLE: ...)
        self._work: set[asyncio.Task] = set()
        self.on_assign = self._start

    def _start(self, a: Assignment) -> None:
        key = (a.job_id, a.attempt)
        self.started[key] += 1
        if self.started[key] == 1:
            task = asyncio.create_task(self._finish(a))
            self._work.add(task)
            task.add_done_callback(self._work.discard)

    async def _finish(self, a: Assignment) -> None:
        deadline = asyncio.get_running_loop().time() + 90
        while True:
            try:
                await self.complete(a.job_id, attempt=a.attempt)
                self.done.add(a.job_id)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or asyncio.get_running_loop().time() > deadline:
                    self.refusals.append(f"{a.job_id}: {exc.code().name} {exc.details()}")
                    return
                self.retried[f"{exc.code().name}: {(exc.details() or '')[:100]}"] += 1
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)
        await super().stop()


def job_config(job_id: str) -> job_pb2.JobConfig:
    return job_pb2.JobConfig(job_id=job_id, job_type=job_pb2.JOB_TYPE_TRAINING, epochs=1, batch_size=8,
                             dataset_uri="builtin://iris")


async def submit_retrying(stubs: list[job_pb2_grpc.JobServiceStub], job_id: str, timeout: float = 60.0) -> bool:
    """True once a central acknowledged the job (any of ``stubs``, in turn); False when
    none did before ``timeout``. The same id every time: a retry never makes a second job."""
    deadline = asyncio.get_running_loop().time() + timeout
    turn = 0
    while asyncio.get_running_loop().time() < deadline:
        stub = stubs[turn % len(stubs)]
        turn += 1
        try:
            await stub.SubmitJob(job_pb2.SubmitJobRequest(config=job_config(job_id)), timeout=10)
            return True
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.1)
    return False


async def events_by_job(bus: EventBus, timeout: float = 30.0) -> dict[str, Counter]:
    """For each job, how many events of each type the stream holds. A read that NATS
    cannot answer yet (a new stream leader is being elected) is tried again."""
    deadline = time.monotonic() + timeout
    while True:
        out: dict[str, Counter] = {}
        try:
            async for msg in bus.read(1, subjects="events.job.>"):
                out.setdefault(msg.subject.rsplit(".", 1)[-1], Counter())[msg.headers.get("Cyxwiz-Event-Type", "")] += 1
            return out
        except BusUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def terminal_count(counts: Counter) -> int:
    return sum(counts[t] for t in TERMINAL)
