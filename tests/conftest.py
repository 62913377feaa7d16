"""Shared fixtures: a real nats-server per test on a free port, with its own store."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before gRPC is imported (why: protos/__init__.py)

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from bus import EventBus, start_server  # noqa: E402


@pytest.fixture
def nats_server(tmp_path):
    server = start_server(tmp_path / "nats", port=0)
    yield server
    server.kill()


@pytest.fixture
async def bus(nats_server):
    event_bus = await EventBus.connect(nats_server.url)
    yield event_bus
    await event_bus.close()
