"""The dashboard's live updates: central's one subscription to the event stream (its
state's listener) fanned out to the pages open in browsers, as server-sent events.

    live = LiveFeed()
    state.listen(live.on_event)          # called for every job event central folds
    async for frame in live.job_frames("j1"): ...    # bytes, ready to write

A job page gets every event of its job at once (``event: epoch`` with the epoch's
metrics, ``event: job`` with the job's state after any other event), so an epoch is on
the page a moment after it is appended. The jobs list gets the jobs that changed,
coalesced (``event: jobs``, at most one frame per ``LIST_FLUSH_S``), so a busy
scheduler costs one encoding per flush however many pages are open. Each frame is
encoded once and shared by every page; a page that falls ``QUEUE_FRAMES`` behind is sent
``event: reset`` and closed (the page reconnects and reloads). Nothing here reads DuckDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from central.lifecycle.jobs import JobState
from events import EpochCompleted, JobEvent

__all__ = ["KEEPALIVE_S", "LIST_FLUSH_S", "LiveFeed", "QUEUE_FRAMES", "job_summary"]

LIST_FLUSH_S = 0.25
KEEPALIVE_S = 15.0
QUEUE_FRAMES = 1000
_CLOSE = b""  # put in a page's queue: the stream ends
_KEEPALIVE = b": keepalive\n\n"
_encode = msgspec.json.Encoder().encode


def frame(kind: str, data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def job_summary(job: JobState) -> dict[str, Any]:
    """What the jobs list and a job page show of a job's live state."""
    return {"job_id": job.job_id, "name": job.name, "state": str(job.status), "attempt": job.attempt,
            "node_id": job.node_id, "current_epoch": job.epochs_done, "epochs": job.epochs,
            "cancel_requested": job.cancel_requested, "error": job.error or None}


def epoch_data(event: EpochCompleted) -> dict[str, Any]:
    return {"job_id": event.job_id, "attempt": event.attempt, "epoch": event.epoch, "total_epochs": event.total_epochs,
            "loss": event.loss, "accuracy": event.accuracy, "val_loss": event.val_loss,
            "val_accuracy": event.val_accuracy, "seconds": event.seconds, "samples_per_s": event.samples_per_s,
            "metrics": event.metrics, "occurred_at": event.occurred_at}


class _Page:
    __slots__ = ("queue", "closed")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES + 1)
        self.closed = False

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= QUEUE_FRAMES:  # too slow: tell it to reload, then end
            self.closed = True
            self.queue.put_nowait(frame("reset", {"reason": "too far behind"}))
            return
        self.queue.put_nowait(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(_CLOSE)


class LiveFeed:
    def __init__(self, *, list_flush_s: float = LIST_FLUSH_S, keepalive_s: float = KEEPALIVE_S) -> None:
        self.list_flush_s = list_flush_s
        self.keepalive_s = keepalive_s
        self._by_job: dict[str, set[_Page]] = {}
        self._lists: set[_Page] = set()
        self._changed: dict[str, JobState] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_pages(self) -> int:
        return len(self._lists) + sum(len(pages) for pages in self._by_job.values())

    # --- fed by central's state ---------------------------------------------------------

    def on_event(self, event: object, old: object, new: object) -> None:
        """A listener of ``CentralState``: called on the event loop for every event folded."""
        if not isinstance(event, JobEvent):
            return
        pages = self._by_job.get(event.job_id)
        if pages:
            if isinstance(event, EpochCompleted):
                data = frame("epoch", epoch_data(event))
            else:
                data = frame("job", job_summary(new))
            for page in pages:
                page.send(data)
        if self._lists:
            self._changed[event.job_id] = new
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_later(self.list_flush_s, self._flush_lists)

    def _flush_lists(self) -> None:
        self._flush = None
        changed, self._changed = self._changed, {}
        if changed and self._lists:
            data = frame("jobs", [job_summary(job) for job in changed.values()])
            for page in self._lists:
                page.send(data)

    # --- read by the open pages ------------------------------------------------------------

    def job_frames(self, job_id: str) -> AsyncIterator[bytes]:
        """The frames of one job's page; registered at once (before the first ``await``
        of the caller), so nothing appended after this call is missed."""
        page = _Page()
        self._by_job.setdefault(job_id, set()).add(page)

        def forget() -> None:
            pages = self._by_job.get(job_id)
            if pages is not None:
                pages.discard(page)
                if not pages:
                    del self._by_job[job_id]

        return self._frames(page, forget)

    def list_frames(self) -> AsyncIterator[bytes]:
        """The frames of a jobs list: the jobs that changed, coalesced."""
        page = _Page()
        self._lists.add(page)
        return self._frames(page, lambda: self._lists.discard(page))

    async def _frames(self, page: _Page, forget) -> AsyncIterator[bytes]:
        if self._closed:
            page.close()
        try:
            yield b"retry: 2000\n" + frame("hello", {"keepalive_s": self.keepalive_s})
            self._keep_alive()
            while True:
                data = await page.queue.get()
                if not data:  # _CLOSE
                    return
                yield data
                if page.closed and page.queue.empty():
                    return
        finally:
            page.closed = True
            forget()

    def _keep_alive(self) -> None:
        """One timer for every open page: a comment frame each ``keepalive_s``, so a page
        that went away without closing is found (its write fails) and forgotten."""
        if self._keepalive is None and not self._closed:
            self._keepalive = asyncio.get_running_loop().call_later(self.keepalive_s, self._beat)

    def _beat(self) -> None:
        self._keepalive = None
        if self.open_pages:
            for pages in (self._lists, *self._by_job.values()):
                for page in pages:
                    page.send(_KEEPALIVE)
            self._keep_alive()

    def close(self) -> None:
        """End every open stream (central is stopping)."""
        self._closed = True
        for timer in (self._flush, self._keepalive):
            if timer is not None:
                timer.cancel()
        self._flush = self._keepalive = None
        for pages in (self._lists, *self._by_job.values()):
            for page in list(pages):
                page.close()
