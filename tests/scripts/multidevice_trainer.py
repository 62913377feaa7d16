"""Trains one small job data parallel on 1, 2 and 4 CPU devices and resumes a checkpoint
written on 2 devices on 1; prints what tests/test_multidevice.py checks, as JSON.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=4 (XLA reads it once, when
this process starts JAX: that is why the test runs this in a process of its own).
"""

import json

import jax
import numpy as np

from node import checkpoint
from node.datasets import load_dataset
from node.trainer import TrainConfig, Trainer

DATA = "synthetic://classification?n=300&features=12&classes=3&seed=1"
MLP = {"type": "mlp", "hidden": [32], "dropout": 0.1}  # dropout: its keys must not depend on the layout


def config(devices: int, **kw) -> TrainConfig:
    values = dict(model_definition=MLP, epochs=2, batch_size=32, seed=3, devices=devices, steps_per_chunk=9)
    return TrainConfig(**(values | kw))


def largest_difference(a: bytes, b: bytes) -> float:
    pa, pb = checkpoint.read_arrays(a), checkpoint.read_arrays(b)
    assert pa.keys() == pb.keys()
    return max(float(np.max(np.abs(pa[k].astype(np.float64) - pb[k]))) for k in pa)


def layout(data: bytes) -> list:
    """A checkpoint's arrays as (path, dtype, shape): its format, whatever the devices."""
    return sorted((k, str(v.dtype), list(v.shape)) for k, v in checkpoint.read_arrays(data).items())


def main() -> None:
    dataset = load_dataset(DATA, data_roots=[])
    runs, devices_seen, checkpoints = {}, {}, {}
    for count in (1, 2, 4):
        epochs = []

        def on_epoch(epoch, epochs=epochs):
            epochs.append(epoch)

        result = Trainer(config(count, checkpoint_every=1), dataset).run(on_epoch=on_epoch, lossless_checkpoints=True)
        runs[count] = result.model_bytes
        devices_seen[count] = sorted({e.devices for e in epochs})
        checkpoints[count] = epochs[0].checkpoint
    everything = Trainer(config(0), dataset)  # devices "all"
    resumed = Trainer(config(1), dataset).run(resume=checkpoints[2])
    print(json.dumps({
        "process_devices": len(jax.devices()),
        "devices_seen": devices_seen,
        "all_means": everything.layout.size,
        "difference": {count: largest_difference(runs[1], runs[count]) for count in (2, 4)},
        "same_checkpoint_format": layout(checkpoints[2]) == layout(checkpoints[1]),
        "resumed_epochs": resumed.epochs_done,
        "resumed_on_1_difference": largest_difference(runs[1], resumed.model_bytes),
    }))


if __name__ == "__main__":
    main()
