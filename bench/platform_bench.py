"""Platform overhead (issue 5): one training job through the whole system against the
same training as a bare script, in one run; and submit -> first epoch report latency
for a model whose compiled form is cached.

    python bench/platform_bench.py                 # ~30 s job, CPU
    python bench/platform_bench.py --epochs 5      # quicker look

Targets: through the system at most 5% slower than bare; first epoch report < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from central.client import Client  # noqa: E402
from central.cli.stack import Stack, StackConfig  # noqa: E402

DATASET = "synthetic://classification?n=60000&features=64&classes=10&seed=0"
MODEL = {"type": "mlp", "hidden": [512, 512]}
HYPER = {"optimizer": "adam", "learning_rate": "0.001", "seed": "0"}
SMALL = "synthetic://classification?n=2048&features=16&classes=4&seed=3"


def bare(epochs: int, batch: int) -> float:
    """The same training as a plain script: load, train, serialize the model."""
    from node.datasets import load_dataset
    from node.trainer import TrainConfig, Trainer

    started = time.perf_counter()
    dataset = load_dataset(DATASET, data_roots=[])
    config = TrainConfig.from_job(HYPER, epochs=epochs, batch_size=batch, model_definition=MODEL)
    result = Trainer(config, dataset).run()
    assert result.model_bytes
    return time.perf_counter() - started


def through_system(stack: Stack, epochs: int, batch: int) -> float:
    with Client(stack.grpc, timeout=30) as client:
        started = time.perf_counter()
        job_id = client.submit(dataset_uri=DATASET, model=MODEL, epochs=epochs, batch_size=batch, hyperparameters=HYPER)
        final = client.wait(job_id)
        elapsed = time.perf_counter() - started
    assert final.state == "completed", final
    return elapsed


def first_epoch_latency(stack: Stack, repeats: int) -> list[float]:
    """Submit a small job whose compiled form is cached (same shapes as a warm-up job)
    and time submit -> the client sees epoch 1."""
    latencies = []
    with Client(stack.grpc, timeout=30) as client:
        for i in range(repeats + 1):
            started = time.perf_counter()
            job_id = client.submit(dataset_uri=SMALL, model={"type": "mlp", "hidden": [32]}, epochs=3, batch_size=64,
                                   hyperparameters={"seed": "1"})
            seen = None
            for update in client.follow(job_id):
                if update.epoch >= 1 and seen is None:
                    seen = time.perf_counter() - started
                if update.done:
                    break
            if i > 0:  # the first one compiles
                latencies.append(seen)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        config = StackConfig(home=Path(home), grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                             terminal_port=0, fresh_nats=True)
        with Stack(config) as stack:
            # warm both sides the same way: one short run compiles the shapes (the trainer keeps
            # compiled chunks per process), so the timed runs compare training, not compilation
            bare(1, args.batch)
            through_system(stack, 1, args.batch)
            bare_s = bare(args.epochs, args.batch)
            system_s = through_system(stack, args.epochs, args.batch)
            latencies = first_epoch_latency(stack, args.repeats)
    overhead = system_s / bare_s - 1
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "bare_script_s": round(bare_s, 2),
        "through_system_s": round(system_s, 2),
        "overhead": f"{overhead:+.1%} (target <= +5%)",
        "submit_to_first_epoch_s": {"p50": round(statistics.median(latencies), 3), "max": round(max(latencies), 3),
                                    "target": "< 1 s"},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
