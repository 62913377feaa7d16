"""Our NATS client: nats-py's, with headers parsed in one pass and, where asked, writes
gathered. ``EventBus.connect`` makes one for every connection of ours."""

from __future__ import annotations

import asyncio

import nats.aio.client


class FastHeadersClient(nats.aio.client.Client):
    """nats-py's client, with headers parsed in one pass and writes gathered.

    Writes: nats-py writes to the socket on the first loop turn after any publish, so a
    busy process (central answering hundreds of calls a second) makes a write syscall
    for nearly every publish. With ``flush_linger_s`` set (central sets 1 ms) a publish's
    flush waits that long for the publishes after it; a full buffer or an explicit flush
    still goes at once. Off by default: a node's request-reply traffic (object store
    chunks, reports) would pay the linger on every round trip.

    Headers: nats-py parses each message's headers with a per-character check of every
    name, about a third of what a replay costs per message. Plain ``Name: value`` headers
    (all the bus writes) take this path; a status line (heartbeats, flow control, 503)
    or anything unusual goes to nats-py's own parser.
    """

    flush_linger_s = 0.0
    _flush_timer = None

    async def _flush_pending(self, force_flush: bool = False):
        if force_flush or self.flush_linger_s <= 0 or self._flusher_task is None or not self.is_connected:
            return await super()._flush_pending(force_flush)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.flush_linger_s, self._kick_flusher)
        return None

    def _kick_flusher(self) -> None:
        self._flush_timer = None
        queue = self._flush_queue
        if queue is not None and queue.empty() and self._pending_data_size > 0:
            try:
                queue.put_nowait(asyncio.get_running_loop().create_future())
            except asyncio.QueueFull:
                pass  # a flush is queued already

    async def _process_headers(self, headers):
        if not headers or headers[8] != 13 or b"\r\n\r\n" != headers[-4:]:
            return await super()._process_headers(headers)  # a status line, or not "NATS/1.0\r\n...\r\n\r\n"
        out: dict[str, str] = {}
        for line in headers[10:-4].split(b"\r\n"):
            name, sep, value = line.partition(b":")
            name = name.strip()
            if not sep or not name.replace(b"-", b"").replace(b"_", b"").isalnum():  # ASCII letters and digits only
                return await super()._process_headers(headers)
            out[name.decode()] = value.strip().decode("utf-8", "replace")
        return out or None
