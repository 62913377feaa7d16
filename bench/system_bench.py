"""One job through the whole system against the trainer alone and the bare loop, in one run.

Through the system: nats-server, central and a node (its worker process), a real job
submitted with the Python client and followed on its update stream; the samples/s are
wall-clock between the client seeing epoch 1 and the last epoch, so checkpoints,
reports and everything else the platform does count. "checkpoints on" is the node's
default (a checkpoint per epoch, at most one per 5 s of training, and the last);
"every epoch" sets the job's ``checkpoint_interval_s`` to 0. The trainer alone: the same
training in this process (``Trainer.run``, no checkpoints), timed the same way from its
epoch callbacks. The bare loop: ``bench/trainer_bench.py``'s plain jit + ``lax.scan``
loop over the same number of samples. Also submit -> first epoch (the client sees epoch 1)
for a first job on a fresh node, for a second, identical job, and for a third with the
same shapes but new data (another seed: the data cache misses, so the synthetic set is
generated again, on the device), and the through-the-system rate with checkpoints on
(the default) and off. ``--latency-only`` runs only the submit -> first epoch jobs.

    python bench/system_bench.py                      # CPU: MLP 784-1024-1024-10, batch 500
    python bench/system_bench.py --samples 245760 --hidden 4096,4096 --batch 4096 --dtype bfloat16 --epochs 12  # H200
    python bench/system_bench.py --latency-only --latency-samples 245760 --hidden 4096,4096 --batch 4096 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.4")  # this process and the node's worker share a GPU
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from central.client import Client  # noqa: E402

try:  # the layout after the `house:` commit, then the one before it
    from central.cli.stack import Stack, StackConfig  # noqa: E402
except ImportError:  # pragma: no cover
    from central.stack import Stack, StackConfig  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--hidden", default="1024,1024")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--epochs", type=int, default=6, help="epochs of the throughput jobs")
    p.add_argument("--latency-samples", type=int, default=1000,
                   help="samples of the submit -> first epoch jobs (their epoch's own time is reported apart)")
    p.add_argument("--latency-only", action="store_true", help="only the submit -> first epoch jobs")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def job_fields(args, *, epochs: int, checkpoint_every: int | None = None, samples: int | None = None,
               interval: float | None = None, seed: int = 0) -> dict:
    hyper = {"optimizer": "adam", "learning_rate": "0.001", "seed": "0", "dtype": args.dtype, "validation_split": "0"}
    if checkpoint_every is not None:
        hyper["checkpoint_every"] = str(checkpoint_every)
    if interval is not None:
        hyper["checkpoint_interval_s"] = str(interval)
    return dict(
        dataset_uri=f"synthetic://classification?n={samples or args.samples}&features={args.features}&classes={args.classes}&seed={seed}",
        model={"type": "mlp", "hidden": [int(h) for h in args.hidden.split(",")]},
        epochs=epochs, batch_size=args.batch, hyperparameters=hyper,
    )


def rate(seen: list[float], samples: int) -> float:
    """Samples/s from the times epochs 1..E were seen: (E - 1) epochs over their span."""
    return (len(seen) - 1) * samples / (seen[-1] - seen[0])


def trainer_alone(args) -> float:
    from node.datasets import load_dataset
    from node.trainer import TrainConfig, Trainer

    fields = job_fields(args, epochs=args.epochs)
    dataset = load_dataset(fields["dataset_uri"], data_roots=[])
    config = TrainConfig.from_job(fields["hyperparameters"], epochs=args.epochs, batch_size=args.batch,
                                  model_definition=fields["model"])
    Trainer(config, dataset).run()  # compiles; the timed run below reuses it
    seen: list[float] = []
    Trainer(config, dataset).run(on_epoch=lambda e: seen.append(time.perf_counter()))
    return rate(seen, args.samples)


def bare_loop(args) -> float:
    import trainer_bench

    bench_args = trainer_bench.parse_args([
        "--features", str(args.features), "--hidden", args.hidden, "--classes", str(args.classes),
        "--batch", str(args.batch), "--steps", str(args.samples // args.batch), "--epochs", str(args.epochs - 1),
        "--dtype", args.dtype,
    ])
    bench_args.hidden_list = [int(h) for h in args.hidden.split(",")]
    x, y = trainer_bench.make_data(bench_args)
    return trainer_bench.bench_bare(bench_args, x, y)


TRAINED: list[float] = []  # per throughput job: samples/s from the node's own epoch seconds


def through_system(client: Client, args, *, epochs: int, **fields) -> tuple[float, list[float], float]:
    """(seconds from submit to the client seeing epoch 1, the times each epoch was seen,
    the first epoch's own training seconds as the node measured them)."""
    started = time.perf_counter()
    job_id = client.submit(job_id=f"bench-{uuid.uuid4().hex[:8]}", **job_fields(args, epochs=epochs, **fields))
    seen: dict[int, float] = {}
    last = None
    epoch_seconds = 0.0
    walls: dict[int, float] = {}
    for last in client.follow(job_id):
        if last.epoch >= 1 and "epoch_seconds" in last.metrics:
            walls.setdefault(last.epoch, float(last.metrics["epoch_seconds"]))
        if last.epoch >= 1 and last.epoch not in seen:
            seen[last.epoch] = time.perf_counter()
            if last.epoch == 1:
                epoch_seconds = float(last.metrics.get("epoch_seconds", 0.0))
        if last.done:
            break
    if last is None or last.state != "completed":
        raise RuntimeError(f"job {job_id} ended {last and last.state}: {last and last.error}")
    times = [seen[e] for e in sorted(seen)]
    later = [walls[e] for e in sorted(walls) if e > 1]  # epoch 1 includes the warm-up
    TRAINED.append(len(later) * (fields.get("samples") or args.samples) / sum(later) if later else 0.0)
    return seen[1] - started, times, epoch_seconds


def latency_only(args, report: dict) -> dict:
    """Submit -> first epoch: a first job on a fresh node, a second identical one, a third
    on new data of the same shapes (generated on the device; programs already compiled)."""
    with tempfile.TemporaryDirectory() as home:
        config = StackConfig(home=Path(home), grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                             terminal_port=0, fresh_nats=True)
        with Stack(config) as stack, Client(stack.grpc, timeout=60) as client:
            small = args.latency_samples
            jobs = {"first_job": 0, "second_identical_job": 0, "new_data_same_shapes": 1, "new_data_again": 2}
            for name, seed in jobs.items():
                seconds, _, epoch = through_system(client, args, epochs=2, samples=small, seed=seed)
                jobs[name] = {"submit_to_first_epoch_s": round(seconds, 3), "epoch_itself_s": round(epoch, 3)}
                print(f"{name}: submit -> first epoch {seconds:.3f} s (the epoch itself {epoch:.3f} s)", flush=True)
    report["submit_to_first_epoch"] = {"samples": args.latency_samples, **jobs}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}), {os.cpu_count()} cpus; "
          f"mlp {args.features}-{args.hidden.replace(',', '-')}-{args.classes}, batch {args.batch}, {args.dtype}, "
          f"{args.samples} samples, {args.epochs} epochs", flush=True)
    report: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {device.device_kind}"}
    if args.latency_only:
        return latency_only(args, report)
    report["bare_loop_samples_per_s"] = bare_loop(args)
    report["trainer_alone_samples_per_s"] = trainer_alone(args)
    print(f"bare {report['bare_loop_samples_per_s']:,.0f}  trainer alone {report['trainer_alone_samples_per_s']:,.0f}", flush=True)
    with tempfile.TemporaryDirectory() as home:
        config = StackConfig(home=Path(home), grpc_port=0, rest_port=0, nodes=1, node_port=0, deploy_port=0,
                             terminal_port=0, fresh_nats=True)
        with Stack(config) as stack, Client(stack.grpc, timeout=60) as client:
            small = args.latency_samples
            first, _, first_epoch = through_system(client, args, epochs=2, samples=small)
            second, _, second_epoch = through_system(client, args, epochs=2, samples=small)
            new_data, _, new_data_epoch = through_system(client, args, epochs=2, samples=small, seed=1)
            print(f"submit -> first epoch: first job {first:.3f} s, second identical job {second:.3f} s "
                  f"(of which the epoch itself {second_epoch:.3f} s)", flush=True)
            TRAINED.clear()
            _, on, _ = through_system(client, args, epochs=args.epochs)
            _, off, _ = through_system(client, args, epochs=args.epochs, checkpoint_every=0)
            _, on_again, _ = through_system(client, args, epochs=args.epochs)
            _, every_epoch, _ = through_system(client, args, epochs=args.epochs, interval=0)
            trained = dict(zip(("checkpoints_on", "checkpoints_off", "checkpoints_on_again", "every_epoch"), TRAINED))
            latency_every_epoch, _, _ = through_system(client, args, epochs=2, samples=small, interval=0)
    samples = args.samples
    system_on = max(rate(on, samples), rate(on_again, samples))
    report["node_trained_samples_per_s"] = trained  # sum of the node's epoch seconds: stalls in training count
    report.update({
        "submit_to_first_epoch_s": {
            "samples": small, "first_job": round(first, 3), "second_identical_job": round(second, 3),
            "second_job_epoch_itself": round(second_epoch, 3), "first_job_epoch_itself": round(first_epoch, 3),
            "new_data_same_shapes": round(new_data, 3), "new_data_epoch_itself": round(new_data_epoch, 3),
            "identical_job_checkpointing_epoch_1": round(latency_every_epoch, 3),
        },
        "system_samples_per_s": {"checkpoints_on": system_on, "checkpoints_off": rate(off, samples),
                                 "checkpoint_every_epoch_no_interval": rate(every_epoch, samples)},
    })
    bare_s, alone = report["bare_loop_samples_per_s"], report["trainer_alone_samples_per_s"]
    report["ratios"] = {
        "system/trainer_alone": system_on / alone,
        "system/bare_loop": system_on / bare_s,
        "trainer_alone/bare_loop": alone / bare_s,
        "checkpoints_on/off": system_on / rate(off, samples),
        "checkpoint_every_epoch/off": rate(every_epoch, samples) / rate(off, samples),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
