"""Per-epoch overhead of the node around the trainer: checkpoint upload and progress
report must not block the training thread.

One process, the same job three ways:

- **trainer**: ``Trainer.run`` alone with a checkpoint every epoch, nothing done with it;
- **node**: the same job through ``AssignJob`` on an in-process node, with a real
  nats-server (checkpoint uploads) and a fake central (a real gRPC server);
- **node, central down**: the same, with central stopped until training ends, then
  started again (the reports wait in the outbox and arrive afterwards).

Printed: wall time of training, median epoch samples/s, the time the worker thread
spends handing an epoch to the reporter, and how long after an epoch its report
arrives at central.

    python bench/node_reporting_bench.py
    python bench/node_reporting_bench.py --epochs 10 --n 60000 --hidden 512,512
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before gRPC is imported (why: protos/__init__.py)

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_central import FakeCentral, assign, job_config, running_node  # noqa: E402

from bus import CREDS_ENV, start_server  # noqa: E402
from node.datasets import load_dataset  # noqa: E402
from node.trainer import TrainConfig, Trainer  # noqa: E402


class TimedCentral(FakeCentral):
    """Records when each progress report arrives."""

    arrivals: dict[int, float] = {}

    async def ReportProgress(self, request, context):
        TimedCentral.arrivals.setdefault(request.status.current_epoch, time.perf_counter())
        return await super().ReportProgress(request, context)


class TimedListener:
    """Wraps the reporter: times the hand-over on the worker thread, notes epoch ends."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.handover: list[float] = []
        self.epoch_end: dict[int, float] = {}
        self.train_end = 0.0

    def on_epoch(self, job, epoch) -> None:
        t0 = time.perf_counter()
        self.epoch_end[epoch.epoch] = t0
        self.inner.on_epoch(job, epoch)
        self.handover.append(time.perf_counter() - t0)

    def on_end(self, job, outcome) -> None:
        self.train_end = time.perf_counter()
        self.inner.on_end(job, outcome)


def trainer_alone(args) -> dict:
    dataset = load_dataset(args.dataset, data_roots=[])
    cfg = TrainConfig.from_job(args.hyper, epochs=args.epochs, batch_size=args.batch,
                               model_definition=args.model, checkpoint_every=1)
    Trainer(cfg, dataset).run()  # warm-up: compiles
    rates, sizes = [], []
    started = time.perf_counter()
    Trainer(cfg, dataset).run(on_epoch=lambda e: (rates.append(e.samples_per_s), sizes.append(len(e.checkpoint))))
    return {"wall_s": time.perf_counter() - started, "samples_per_s": statistics.median(rates[1:] or rates),
            "checkpoint_bytes": sizes[0]}


async def through_node(args, nats_url: str, home: Path, *, central_down: bool) -> dict:
    TimedCentral.arrivals = {}
    central = await TimedCentral().start()
    async with running_node(central, nats_url, home, heartbeat_s=1.0) as node:
        timed = TimedListener(node.executor.listener)
        node.executor.listener = timed
        job = job_config(f"bench-{int(central_down)}", epochs=args.epochs, batch_size=args.batch,
                         dataset_uri=args.dataset, model_definition=args.model, hyperparameters=args.hyper)
        started = time.perf_counter()
        assert (await assign(node, central.record, job)).accepted
        if central_down:
            await central.stop()
        while not timed.train_end:
            await asyncio.sleep(0.01)
        train_wall = timed.train_end - started
        if central_down:
            central = await TimedCentral(central.record).start(central.port)
        while central.record.completion_of(job.job_id) is None:
            await asyncio.sleep(0.01)
        delivered = time.perf_counter() - started
        rates = [p.samples_per_second for p in central.record.progress_of(job.job_id)]
        lags = [TimedCentral.arrivals[e] - t for e, t in timed.epoch_end.items() if e in TimedCentral.arrivals]
        await central.stop()
        return {
            "train_wall_s": train_wall, "all_reports_delivered_s": delivered,
            "samples_per_s": statistics.median(rates[1:] or rates),
            "handover_us_median": statistics.median(timed.handover) * 1e6,
            "handover_us_max": max(timed.handover) * 1e6,
            "report_lag_ms_median": statistics.median(lags) * 1e3, "report_lag_ms_max": max(lags) * 1e3,
            "retries": node.reporter.stats.retries,
        }


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "nats", port=0)
        os.environ[CREDS_ENV] = str(server.seed("central"))  # this process and its children
        try:
            alone = await asyncio.to_thread(trainer_alone, args)
            node = await through_node(args, server.url, Path(tmp), central_down=False)
            down = await through_node(args, server.url, Path(tmp), central_down=True)
        finally:
            server.kill()
    return {"trainer": alone, "node": node, "node_central_down": down}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n", type=int, default=30000)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    args.dataset = f"synthetic://classification?n={args.n}&features={args.features}&classes=10&seed=0"
    args.model = json.dumps({"type": "mlp", "hidden": [int(h) for h in args.hidden.split(",")]})
    args.hyper = {"learning_rate": "0.001", "seed": "0"}
    result = asyncio.run(main_async(args))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(json.dumps(result, indent=2))
    node, alone = result["node"], result["trainer"]
    print(f"node/trainer samples/s: {node['samples_per_s'] / alone['samples_per_s']:.3f}; "
          f"central down: {result['node_central_down']['samples_per_s'] / alone['samples_per_s']:.3f}")


if __name__ == "__main__":
    main()
