"""A real CentralServer on an event loop of its own thread, for synchronous tests (gRPC
stubs, hypothesis): ``with ThreadedCentral(config) as central: central.call(coro)``."""

from __future__ import annotations

import asyncio
import threading

from central.server import CentralConfig, CentralServer


class ThreadedCentral:
    def __init__(self, config: CentralConfig) -> None:
        self.server = CentralServer(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self):
        self.thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc):
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
