"""Serving windows reach the telemetry stream even when NATS was away when they closed:
they wait and are published once a real nats-server is back, each stored once."""

from __future__ import annotations

import types

from bus import TELEMETRY_STREAM, EventBus, start_server
from events import decode
from node.serving.stats import Window
from node.serving.telemetry import StatsPublisher
from waiting import eventually


def window(start: float, requests: int) -> Window:
    return Window(start=start, end=start + 5, requests=requests, errors=1, p50_ms=1.0, p99_ms=2.0, mean_ms=1.2,
                  mean_batch=1.0, batches=requests)


async def test_windows_closed_while_nats_is_away_are_published_when_it_is_back(tmp_path):
    server = start_server(tmp_path / "nats", port=0)
    port, node_seed, central_seed = int(server.url.rsplit(":", 1)[1]), server.seed("node"), server.seed("central")
    bus = await EventBus.connect(server.url, credentials=central_seed)  # makes the streams
    await bus.close()
    server.kill()
    publisher = StatsPublisher(f"nats://127.0.0.1:{port}", lambda: "n1", credentials=node_seed, retry_s=0.2)
    deployment = types.SimpleNamespace(deployment_id="dep-t")
    publisher(deployment, window(1_700_000_000, 3))
    publisher(deployment, window(1_700_000_005, 4))
    await eventually(lambda: publisher._flushing is not None, message="a flush is under way")
    assert publisher.unsent == 2, "NATS is down: both windows wait"

    server = start_server(tmp_path / "nats", port=port)  # the same store, users and port
    try:
        await eventually(lambda: publisher.unsent == 0, timeout=30, message="both windows published once NATS is back")
        reader = await EventBus.connect(server.url, credentials=central_seed)
        try:
            async def stored():
                if await reader.last_sequence(TELEMETRY_STREAM) < 2:
                    return None
                return [decode(m.data) async for m in reader.read(1, subjects="telemetry.>")]
            events = await eventually(stored, timeout=20, message="both windows stored")
            assert [(e.deployment_id, e.requests) for e in events] == [("dep-t", 3), ("dep-t", 4)]
        finally:
            await reader.close()
    finally:
        await publisher.close()
        server.kill()
