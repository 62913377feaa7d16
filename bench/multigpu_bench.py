"""Scaling of one job over several devices of its node: the node's Trainer data parallel
(``TrainConfig.devices``, a ``jax.sharding.Mesh`` with the batch split over it) at the
same global batch on 1 and on N devices, in one run.

    efficiency = samples/s(N) / (N x samples/s(1))

Throughput is the median over the timed epochs of ``EpochResult.samples_per_s`` (a first
epoch, which includes compilation, is a warm-up); device counts run in turn for
``--repeats`` rounds, rotating the order; the best round of each counts (other work only
ever slows a round down). The data is synthetic and lives on the devices, as in
``bench/trainer_bench.py``.

    python bench/multigpu_bench.py                              # 2 GPUs: 784-4096-4096-10, batch 8192, bf16
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
      python bench/multigpu_bench.py --hidden 32 --batch 64 --steps 4 --epochs 2 --repeats 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from node.datasets import Dataset  # noqa: E402
from node.trainer import EpochResult, TrainConfig, Trainer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--hidden", default="4096,4096", help="comma-separated hidden widths")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=8192, help="the global batch (split over the devices)")
    p.add_argument("--steps", type=int, default=60, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4, help="timed epochs (one more is run as warm-up)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--devices", type=int, default=2, help="N: compared with one device")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the device counts; the best round counts")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def samples_per_s(args, dataset: Dataset, devices: int) -> float:
    config = TrainConfig(
        model_definition={"type": "mlp", "hidden": [int(h) for h in args.hidden.split(",")]},
        epochs=args.epochs + 1, batch_size=args.batch, dtype=args.dtype, validation_split=0.0,
        optimizer="adam", learning_rate=1e-3, devices=devices,
    )
    epochs: list[EpochResult] = []
    Trainer(config, dataset).run(on_epoch=epochs.append)
    assert {e.devices for e in epochs} == {devices}
    return statistics.median(e.samples_per_s for e in epochs[1:])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    have = jax.devices()
    if len(have) < args.devices:
        sys.exit(f"this process has {len(have)} device(s) ({have[0].platform}); --devices {args.devices} needs more "
                 f"(on CPU: XLA_FLAGS=--xla_force_host_platform_device_count={args.devices})")
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.standard_normal((n, args.features), dtype=np.float32)
    dataset = Dataset("bench", x, rng.integers(0, args.classes, n).astype(np.int32), "classification", args.classes)
    counts = [1, args.devices]
    best = {count: 0.0 for count in counts}
    for round_ in range(args.repeats):
        for count in counts[round_ % 2:] + counts[:round_ % 2]:
            best[count] = max(best[count], samples_per_s(args, dataset, count))
    result = {
        "bench": "multigpu", "model": f"{args.features}-{args.hidden.replace(',', '-')}-{args.classes}",
        "global_batch": args.batch, "dtype": args.dtype, "steps_per_epoch": args.steps,
        "device": f"{have[0].platform} ({getattr(have[0], 'device_kind', '')})", "host": platform.node(),
        "samples_per_s": {str(c): round(v, 1) for c, v in best.items()},
        "efficiency": round(best[args.devices] / (args.devices * best[1]), 3),
    }
    print(json.dumps(result))
    print(f"efficiency = samples/s({args.devices}) / ({args.devices} x samples/s(1)) = {result['efficiency']:.3f}",
          file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
