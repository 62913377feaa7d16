"""Throughput of the node's Trainer against a bare JAX loop and a PyTorch eager loop.

The same MLP, data, batch size, optimizer (Adam, lr 1e-3) and precision, three ways:

- ours:  ``node.trainer.Trainer`` (shuffling, masking, chunked scans, metrics);
- bare:  ``jit`` + ``lax.scan`` over pre-sliced batches on the device, nothing else;
- torch: a plain eager loop (autocast for bfloat16).

Throughput is the median over the timed epochs (the first epoch of each is a warm-up
that includes compilation); the loops run in turn for ``--repeats`` rounds and the best
and median round of each are printed (other work on the machine only ever slows a round
down, so the best round is the fairer figure on a shared machine).
Examples::

    python bench/trainer_bench.py                       # CPU-sized defaults
    python bench/trainer_bench.py --hidden 4096,4096 --batch 4096 --dtype bfloat16 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")  # leave room for torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

from node.datasets import Dataset  # noqa: E402
from node.trainer import EpochResult, TrainConfig, Trainer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--hidden", default="512,512", help="comma-separated hidden widths")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4, help="timed epochs (one more is run as warm-up)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--only", default="ours,bare,torch", help="which loops to run, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="rounds of all loops; the best round counts")
    p.add_argument("--chunk", type=int, default=None, help="ours: steps per chunk (default: automatic)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def make_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.standard_normal((n, args.features), dtype=np.float32)
    y = rng.integers(0, args.classes, n).astype(np.int32)
    return x, y


def bench_ours(args, x, y, hidden) -> float:
    cfg = TrainConfig(
        model_definition={"type": "mlp", "hidden": hidden}, epochs=args.epochs + 1, batch_size=args.batch,
        dtype=args.dtype, validation_split=0.0, optimizer="adam", learning_rate=1e-3,
        steps_per_chunk=args.chunk,
    )
    epochs: list[EpochResult] = []
    Trainer(cfg, Dataset("bench", x, y, "classification", args.classes)).run(on_epoch=epochs.append)
    return statistics.median(e.samples_per_s for e in epochs[1:])


def bench_bare(args, x, y, hidden) -> float:
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    sizes = [args.features, *hidden, args.classes]
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    params = [
        (jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), jnp.zeros(b)) for k, a, b in zip(keys, sizes, sizes[1:])
    ]
    opt = optax.adam(1e-3)
    xb = jnp.asarray(x).astype(dtype).reshape(args.steps, args.batch, args.features)
    yb = jnp.asarray(y).reshape(args.steps, args.batch)

    def loss_fn(p, xs, ys):
        h = xs
        for i, (w, b) in enumerate(p):
            h = h @ w.astype(dtype) + b.astype(dtype)
            h = jax.nn.relu(h) if i < len(p) - 1 else h
        return optax.softmax_cross_entropy_with_integer_labels(h.astype(jnp.float32), ys).mean()

    def step(carry, batch):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, *batch)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    @partial(jax.jit, donate_argnums=0)
    def epoch(carry, xb, yb):
        carry, losses = lax.scan(step, carry, (xb, yb))
        return carry, losses.mean()

    carry = (params, opt.init(params))
    carry, loss = epoch(carry, xb, yb)
    float(loss)
    rates = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        carry, loss = epoch(carry, xb, yb)
        float(loss)  # one host sync per epoch
        rates.append(args.steps * args.batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_torch(args, x, y, hidden) -> float:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [args.features, *hidden, args.classes]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
    bf16 = args.dtype == "bfloat16"
    if bf16:
        xt = xt.to(torch.bfloat16)

    def run_epoch() -> float:
        t0 = time.perf_counter()
        for i in range(args.steps):
            xs, ys = xt[i * args.batch : (i + 1) * args.batch], yt[i * args.batch : (i + 1) * args.batch]
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                out = model(xs)
            loss = torch.nn.functional.cross_entropy(out.float(), ys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()  # one host sync per epoch
        return args.steps * args.batch / (time.perf_counter() - t0)

    run_epoch()
    return statistics.median(run_epoch() for _ in range(args.epochs))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    hidden = [int(h) for h in args.hidden.split(",") if h]
    x, y = make_data(args)
    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}), {cpu}, "
          f"{os.cpu_count()} cpus")
    print(f"mlp {args.features}-{'-'.join(map(str, hidden))}-{args.classes}, batch {args.batch}, {args.dtype}, "
          f"{args.steps} steps/epoch, {args.epochs} timed epochs")
    runs = {"ours": bench_ours, "bare": bench_bare, "torch": bench_torch}
    names = args.only.split(",")
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
            rounds[name].append(runs[name](args, x, y, hidden))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in rounds.items()), flush=True)
    best = {name: max(values) for name, values in rounds.items()}
    median = {name: statistics.median(values) for name, values in rounds.items()}
    print(f"{'':>6}  {'best round':>14}  {'median round':>14}  (samples/s)")
    for name in names:
        extra = ""
        if name == "torch":
            import torch

            extra = f"  (torch {torch.__version__})"
        print(f"{name:>6}: {best[name]:>14,.0f}  {median[name]:>14,.0f}{extra}")
    for other in ("bare", "torch"):
        if "ours" in best and other in best:
            ratio_best, ratio_median = best["ours"] / best[other], median["ours"] / median[other]
            print(f"ours/{other}: {ratio_best:.3f} (best), {ratio_median:.3f} (median)")
    summary = {
        "args": vars(args) | {"json": None}, "device": str(device.device_kind),
        "samples_per_s_best": best, "samples_per_s_median": median, "rounds": rounds,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
