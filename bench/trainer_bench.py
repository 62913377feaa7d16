"""Throughput of the node's Trainer against the fastest plain loops we can write, in one run.

The same data, batch size, optimizer (Adam, lr 1e-3), loss and precision; each loop
runs its epochs over data already on the device:

- ``ours``: ``node.trainer.Trainer`` (on-device shuffling by permutation, masked last
  batch, chunked scans, loss/accuracy metrics, one host sync per chunk);
- ``bare``: one ``jit`` + ``lax.scan`` over the whole epoch of pre-sliced batches, the
  same model function, donated state, one host sync per epoch, nothing else;
- ``bare_nobias`` (MLP only): the same without bias terms, the leanest MLP there is,
  against ``ours_nobias``: ours with ``"bias": false`` in the model definition;
- ``bare_perm``: ``bare`` plus the per-step gather by a permutation (what ours does to
  shuffle), to show what shuffling costs;
- ``torch``: PyTorch eager, fused Adam (``fused=True`` on CUDA), bf16 autocast,
  ``zero_grad(set_to_none=True)``, channels-last for the CNN;
- ``torch_compile``: the same step under ``torch.compile``.

Models: ``--model mlp`` (features-hidden-classes) and ``--model cnn`` (32x32x3 images,
two 3x3 conv layers with 2x2 pooling, a dense layer). Throughput is the median over the
timed epochs (a first epoch of each loop is a warm-up that includes compilation); loops
run in turn for ``--repeats`` rounds, rotating the order; the best round counts (other
work only ever slows a round down). ``--stop`` also measures how long a stop takes:
``should_stop`` turning true mid-epoch until ``Trainer.run`` returns.

``--first-epoch`` measures something else instead: seconds from nothing to the first
epoch of a ``Trainer`` on a synthetic data set of ``batch x steps`` samples (MLP), with
the data generated on the host (the NumPy generator ``node.datasets`` used before, then
copied to the device) against generated on the device (``synthetic://``, as now). A
warm-up round of each compiles; then each round uses a new seed (no cache helps), the
two in turn.

    python bench/trainer_bench.py                                   # CPU-sized MLP
    python bench/trainer_bench.py --model cnn --batch 128 --steps 10  # CPU-sized CNN
    python bench/trainer_bench.py --hidden 4096,4096 --batch 4096 --dtype bfloat16 --steps 60   # H200
    python bench/trainer_bench.py --model cnn --batch 1024 --dtype bfloat16 --steps 60          # H200
    python bench/trainer_bench.py --first-epoch --batch 4096 --steps 60 --repeats 3             # CPU, 245,760 x 784
    python bench/trainer_bench.py --first-epoch --hidden 4096,4096 --batch 4096 --steps 60 --dtype bfloat16  # H200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
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

from node.datasets import Dataset, load_dataset  # noqa: E402
from node.models import build_model  # noqa: E402
from node.trainer import EpochResult, TrainConfig, Trainer  # noqa: E402

CNN = {"type": "cnn", "conv": [{"features": 64, "kernel": 3, "pool": 2}, {"features": 128, "kernel": 3, "pool": 2}],
       "dense": [256]}
LOOPS = ("ours", "ours_nobias", "bare", "bare_nobias", "bare_perm", "torch", "torch_compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--features", type=int, default=784, help="mlp input width")
    p.add_argument("--hidden", default="512,512", help="mlp: comma-separated hidden widths")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4, help="timed epochs (one more is run as warm-up)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--only", default=",".join(LOOPS), help="which loops to run, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="rounds of all loops; the best round counts")
    p.add_argument("--chunk", type=int, default=None, help="ours: steps per chunk (default: automatic)")
    p.add_argument("--stop", action="store_true", help="also measure the trainer's stop latency")
    p.add_argument("--first-epoch", action="store_true",
                   help="measure time to the first epoch, synthetic data generated on the host vs on the device")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def make_data(args) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    shape = (n, 32, 32, 3) if args.model == "cnn" else (n, args.features)
    x = rng.standard_normal(shape, dtype=np.float32)
    return x, rng.integers(0, args.classes, n).astype(np.int32)


def definition(args, *, bias: bool = True) -> dict:
    if args.model == "cnn":
        return CNN
    return {"type": "mlp", "hidden": args.hidden_list} | ({} if bias else {"bias": False})


def flops_per_sample(args) -> float:
    """Multiply-adds x 2 x 3 (forward, and backward twice that)."""
    if args.model == "mlp":
        sizes = [args.features, *args.hidden_list, args.classes]
        macs = sum(a * b for a, b in zip(sizes, sizes[1:]))
    else:
        macs = 32 * 32 * 3 * 9 * 64 + 16 * 16 * 64 * 9 * 128 + 8 * 8 * 128 * 256 + 256 * args.classes
    return 6.0 * macs


# --- the loops: each returns samples/s (median of the timed epochs) ---------------------------


def bench_ours(args, x, y, *, bias: bool = True) -> float:
    cfg = TrainConfig(
        model_definition=definition(args, bias=bias), epochs=args.epochs + 1, batch_size=args.batch, dtype=args.dtype,
        validation_split=0.0, optimizer="adam", learning_rate=1e-3, steps_per_chunk=args.chunk,
    )
    epochs: list[EpochResult] = []
    Trainer(cfg, Dataset("bench", x, y, "classification", args.classes)).run(on_epoch=epochs.append)
    return statistics.median(e.samples_per_s for e in epochs[1:])


def _bare_loop(args, x, y, apply, params, *, gather: bool) -> float:
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    opt = optax.adam(1e-3)
    xs = jnp.asarray(x).astype(dtype)
    xb, yb = xs.reshape(args.steps, args.batch, *x.shape[1:]), jnp.asarray(y).reshape(args.steps, args.batch)

    def loss_fn(p, xs, ys):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xs), ys).mean()

    def step(carry, batch):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, *batch)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    @partial(jax.jit, donate_argnums=0)
    def epoch(carry, xb, yb, key):
        if gather:  # shuffle as ours does: a permutation, then each step gathers its rows
            order = jax.random.permutation(key, args.steps * args.batch).reshape(args.steps, args.batch)
            flat_y = yb.reshape(-1)
            carry, losses = lax.scan(lambda c, idx: step(c, (xs_flat[idx], flat_y[idx])), carry, order)
        else:
            carry, losses = lax.scan(step, carry, (xb, yb))
        return carry, losses.mean()

    xs_flat = xs
    carry = (params, opt.init(params))
    key = jax.random.PRNGKey(1)
    carry, loss = epoch(carry, xb, yb, key)
    float(loss)
    rates = []
    for i in range(args.epochs):
        t0 = time.perf_counter()
        carry, loss = epoch(carry, xb, yb, jax.random.fold_in(key, i))
        float(loss)  # one host sync per epoch
        rates.append(args.steps * args.batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_bare(args, x, y, *, gather: bool = False) -> float:
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model = build_model(definition(args), sample_shape=x.shape[1:], output_dim=args.classes)
    params = model.init(jax.random.PRNGKey(0))
    return _bare_loop(args, x, y, lambda p, xs: model.apply(p, xs, None, dtype=dtype), params, gather=gather)


def bench_bare_nobias(args, x, y) -> float:
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    sizes = [args.features, *args.hidden_list, args.classes]
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    params = [jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a) for k, a, b in zip(keys, sizes, sizes[1:])]

    def apply(p, h):
        for i, w in enumerate(p):
            h = h @ w.astype(dtype)
            h = jax.nn.relu(h) if i < len(p) - 1 else h
        return h.astype(jnp.float32)

    return _bare_loop(args, x, y, apply, params, gather=False)


def _torch_model(args):
    import torch
    from torch import nn

    if args.model == "mlp":
        sizes = [args.features, *args.hidden_list, args.classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, args.classes),
    ).to(memory_format=torch.channels_last)


def bench_torch(args, x, y, *, compiled: bool = False) -> float:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _torch_model(args).to(device)
    fused = {"fused": True} if device == "cuda" else {}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **fused)
    xt = torch.from_numpy(x).to(device)
    if args.model == "cnn":
        xt = xt.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y).long().to(device)
    bf16 = args.dtype == "bfloat16"

    def step(xs, ys):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = model(xs)
        loss = torch.nn.functional.cross_entropy(out.float(), ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        step = torch.compile(step)

    def run_epoch() -> float:
        t0 = time.perf_counter()
        for i in range(args.steps):
            loss = step(xt[i * args.batch : (i + 1) * args.batch], yt[i * args.batch : (i + 1) * args.batch])
        loss.item()  # one host sync per epoch
        return args.steps * args.batch / (time.perf_counter() - t0)

    run_epoch()
    return statistics.median(run_epoch() for _ in range(args.epochs))


def stop_latency(args, x, y) -> float:
    """Seconds from should_stop turning true (mid-epoch) to Trainer.run returning."""
    cfg = TrainConfig(model_definition=definition(args), epochs=1000, batch_size=args.batch, dtype=args.dtype,
                      validation_split=0.0)
    trainer = Trainer(cfg, Dataset("bench", x, y, "classification", args.classes))
    asked: list[float] = []
    started = threading.Event()

    def should_stop() -> bool:
        started.set()
        return bool(asked)

    def ask() -> None:
        started.wait()
        time.sleep(1.0)  # well inside training, after compilation
        asked.append(time.perf_counter())

    threading.Thread(target=ask, daemon=True).start()
    trainer.run(should_stop=should_stop)
    return time.perf_counter() - asked[0]


def host_synthetic(n: int, features: int, classes: int, seed: int) -> Dataset:
    """The synthetic classification data as ``node.datasets`` made it before: NumPy, on the host."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, features))
    centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.standard_normal((n, features), dtype=np.float32)
    return Dataset("host", x.astype(np.float32), y.astype(np.int32), "classification", classes)


def first_epoch(args, where: str, seed: int) -> float:
    """Seconds from nothing to the first epoch's report: make the data (``where``: host
    or device), build the Trainer, copy/split the data, train one epoch."""
    n = args.batch * args.steps
    cfg = TrainConfig(model_definition=definition(args), epochs=1, batch_size=args.batch, dtype=args.dtype,
                      validation_split=0.0, optimizer="adam", learning_rate=1e-3, steps_per_chunk=args.chunk)
    seen: list[float] = []
    t0 = time.perf_counter()
    if where == "host":
        data = host_synthetic(n, args.features, args.classes, seed)
    else:
        uri = f"synthetic://classification?n={n}&features={args.features}&classes={args.classes}&seed={seed}"
        data = load_dataset(uri, data_roots=[])
    Trainer(cfg, data).run(on_epoch=lambda e: seen.append(time.perf_counter()))
    return seen[0] - t0


def first_epoch_main(args) -> dict:
    print(f"time to first epoch, {args.batch * args.steps} x {args.features} synthetic samples, "
          f"host-generated (NumPy, then copied) vs device-generated (jax.random)", flush=True)
    first_epoch(args, "host", 10_000)  # warm-ups: compile the trainer's and the generator's programs
    first_epoch(args, "device", 10_000)
    times: dict[str, list[float]] = {"host": [], "device": []}
    for r in range(args.repeats):
        for where in (("host", "device") if r % 2 == 0 else ("device", "host")):
            times[where].append(first_epoch(args, where, r + 1))
        print(f"round {r + 1}: host {times['host'][-1]:.3f} s, device {times['device'][-1]:.3f} s", flush=True)
    best = {w: min(v) for w, v in times.items()}
    median = {w: statistics.median(v) for w, v in times.items()}
    summary = {"first_epoch_s": times, "best": best, "median": median,
               "device/host (median)": median["device"] / median["host"]}
    print(f"best: host {best['host']:.3f} s, device {best['device']:.3f} s; median: host {median['host']:.3f} s, "
          f"device {median['device']:.3f} s; device/host (median) {summary['device/host (median)']:.3f}")
    return summary


RUNS = {
    "ours": bench_ours, "ours_nobias": partial(bench_ours, bias=False), "bare": bench_bare, "bare_nobias": bench_bare_nobias,
    "bare_perm": partial(bench_bare, gather=True), "torch": bench_torch,
    "torch_compile": partial(bench_torch, compiled=True),
}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.hidden_list = [int(h) for h in args.hidden.split(",") if h]
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    if args.first_epoch:
        summary = first_epoch_main(args)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
        return summary
    x, y = make_data(args)
    shape = "cnn 32x32x3 conv64-conv128-256" if args.model == "cnn" else \
        f"mlp {args.features}-{'-'.join(map(str, args.hidden_list))}-{args.classes}"
    print(f"{shape}, batch {args.batch}, {args.dtype}, {args.steps} steps/epoch, {args.epochs} timed epochs")
    names = [n for n in args.only.split(",") if n and not (n.endswith("_nobias") and args.model == "cnn")]
    try:
        import torch

        print(f"torch {torch.__version__}")
    except ImportError:
        print("torch is not installed here: its loops are left out")
        names = [n for n in names if not n.startswith("torch")]
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
            rounds[name].append(RUNS[name](args, x, y))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in rounds.items()), flush=True)
    best = {name: max(values) for name, values in rounds.items()}
    median = {name: statistics.median(values) for name, values in rounds.items()}
    flops = flops_per_sample(args)
    print(f"{'':>14}  {'best round':>12}  {'median round':>12}  samples/s   TFLOP/s (best)")
    for name in names:
        print(f"{name:>14}: {best[name]:>12,.0f}  {median[name]:>12,.0f}  {best[name] * flops / 1e12:>14.1f}")
    bare_best = max((best[n] for n in ("bare", "bare_nobias") if n in best), default=None)
    torch_best = max((best[n] for n in ("torch", "torch_compile") if n in best), default=None)
    ratios = {}
    if "ours" in best:
        for other in [n for n in names if not n.startswith("ours")]:
            ratios[f"ours/{other}"] = best["ours"] / best[other]
        if "ours_nobias" in best and "bare_nobias" in best:
            ratios["ours_nobias/bare_nobias"] = best["ours_nobias"] / best["bare_nobias"]
        if bare_best:
            ratios["ours/best_bare"] = best["ours"] / bare_best
        if torch_best:
            ratios["ours/best_torch"] = best["ours"] / torch_best
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    summary = {
        "args": {k: v for k, v in vars(args).items() if k != "json"}, "device": str(device.device_kind),
        "samples_per_s_best": best, "samples_per_s_median": median, "rounds": rounds, "ratios": ratios,
        "tflops_best": {n: v * flops / 1e12 for n, v in best.items()},
    }
    if args.stop:
        summary["stop_latency_s"] = stop_latency(args, x, y)
        print(f"stop latency (should_stop true -> run returns): {summary['stop_latency_s']:.3f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
