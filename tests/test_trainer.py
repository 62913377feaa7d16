"""The training core: accuracy, determinism, resume, cancellation, failures, config."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from events.jobspec import HYPERPARAMETERS
from hypothesis import given, settings
from hypothesis import strategies as st

from node import checkpoint
from node.datasets import Dataset, load_dataset
from node.models import build_model, load_model
from node.trainer import EpochResult, TrainConfig, Trainer, TrainingError, enable_compilation_cache

MLP = {"type": "mlp", "hidden": [64], "activation": "relu"}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("builtin://digits", data_roots=[])


@pytest.fixture(scope="module")
def small() -> Dataset:
    return load_dataset("synthetic://classification?n=300&features=12&classes=3&seed=1", data_roots=[])


def config(**kwargs) -> TrainConfig:
    values = {"model_definition": MLP, "epochs": 3, "batch_size": 32} | kwargs
    return TrainConfig(**values)


def params_of(model_bytes: bytes) -> dict[str, np.ndarray]:
    return checkpoint.read_arrays(model_bytes)


def assert_same_params(a: bytes, b: bytes) -> None:
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


def test_digits_mlp_reaches_95_percent_within_60_seconds(digits: Dataset) -> None:
    started = time.perf_counter()
    cfg = TrainConfig.from_job(
        {"learning_rate": "0.003", "seed": "0"},
        epochs=15, batch_size=64, model_definition=json.dumps({"type": "mlp", "hidden": [128]}),
    )
    epochs: list[EpochResult] = []
    result = Trainer(cfg, digits).run(on_epoch=epochs.append)
    elapsed = time.perf_counter() - started
    assert result.val_accuracy >= 0.95, result
    assert elapsed < 60
    assert [e.epoch for e in epochs] == list(range(1, 16))
    assert (result.epochs_done, result.stopped) == (15, False)
    assert epochs[-1].loss < epochs[0].loss
    assert all(e.checkpoint is None and e.samples_per_s > 0 for e in epochs)
    # the saved model predicts what the trainer measured
    model, params = load_model(result.model_bytes)
    assert model.definition == {"type": "mlp", "hidden": [128], "activation": "relu", "dropout": 0.0}
    predicted = np.asarray(model.apply(params, digits.x)).argmax(axis=1)
    assert (predicted == digits.y).mean() > 0.95
    assert result.model_sha256 == checkpoint.sha256_hex(result.model_bytes)


def test_cnn_and_bfloat16_train_on_digits(digits: Dataset) -> None:
    cnn = {"type": "cnn", "conv": [{"features": 8, "kernel": 3, "pool": 2}], "dense": [32]}
    result = Trainer(config(model_definition=cnn, epochs=3, dtype="bf16", learning_rate=3e-3), digits).run()
    assert result.val_accuracy > 0.8, result


def test_flat_data_is_reshaped_for_a_cnn(small: Dataset) -> None:
    cnn = {"type": "cnn", "conv": [{"features": 4, "kernel": 2}], "dense": [8], "input_shape": [3, 4, 1]}
    result = Trainer(config(model_definition=cnn, epochs=2), small).run()
    assert result.epochs_done == 2 and math.isfinite(result.loss)


def test_linear_regression_learns() -> None:
    data = load_dataset("synthetic://regression?n=400&features=5&noise=0.01", data_roots=[])
    history: list[EpochResult] = []
    result = Trainer(config(model_definition={"type": "linear"}, epochs=5, learning_rate=0.05), data).run(
        on_epoch=history.append
    )
    assert result.accuracy is None and result.val_accuracy is None
    assert history[-1].val_loss < history[0].val_loss / 2


def test_same_seed_same_result_other_seed_other_result(small: Dataset) -> None:
    cfg = config(model_definition=MLP | {"dropout": 0.2})
    a, b = Trainer(cfg, small).run(), Trainer(cfg, small).run()
    assert a.model_bytes == b.model_bytes
    assert (a.loss, a.val_loss) == (b.loss, b.val_loss)
    c = Trainer(config(model_definition=MLP | {"dropout": 0.2}, seed=1), small).run()
    assert c.model_bytes != a.model_bytes


def test_chunk_size_does_not_change_the_result(small: Dataset) -> None:
    results = [Trainer(config(steps_per_chunk=n), small).run() for n in (1, 3, None)]
    assert_same_params(results[0].model_bytes, results[1].model_bytes)
    assert_same_params(results[0].model_bytes, results[2].model_bytes)


def test_resume_from_epoch_k_equals_an_uninterrupted_run(small: Dataset) -> None:
    cfg = config(model_definition=MLP | {"dropout": 0.1}, epochs=4, checkpoint_every=1, optimizer="adamw")
    checkpoints: dict[int, bytes] = {}
    full = Trainer(cfg, small).run(
        on_epoch=lambda e: checkpoints.update({e.epoch: e.checkpoint}), lossless_checkpoints=True
    )
    assert sorted(checkpoints) == [1, 2, 3, 4] and all(checkpoints.values())
    assert checkpoint.read_meta(checkpoints[2])["epoch"] == 2

    resumed_epochs: list[int] = []
    resumed = Trainer(cfg, small).run(on_epoch=lambda e: resumed_epochs.append(e.epoch), resume=checkpoints[2])
    assert resumed_epochs == [3, 4]
    assert_same_params(resumed.model_bytes, full.model_bytes)
    assert resumed.model_bytes == full.model_bytes
    assert (resumed.loss, resumed.val_accuracy) == (full.loss, full.val_accuracy)


def test_resume_from_the_last_epoch_trains_nothing(small: Dataset) -> None:
    cfg = config(epochs=2, checkpoint_every=2)
    last: list[bytes] = []
    full = Trainer(cfg, small).run(on_epoch=lambda e: last.append(e.checkpoint))
    again = Trainer(cfg, small).run(on_epoch=lambda e: pytest.fail("no epoch should run"), resume=last[-1])
    assert (again.epochs_done, again.model_bytes, again.val_loss) == (2, full.model_bytes, full.val_loss)


def test_resume_refuses_a_checkpoint_of_another_config(small: Dataset) -> None:
    snapshots: list[bytes] = []
    Trainer(config(epochs=1, checkpoint_every=1), small).run(on_epoch=lambda e: snapshots.append(e.checkpoint))
    assert snapshots[0], "the last epoch always has its checkpoint"
    with pytest.raises(checkpoint.CheckpointError) as info:
        Trainer(config(epochs=2, learning_rate=0.01), small).run(resume=snapshots[0])
    assert str(info.value) == "checkpoint was made with learning_rate=0.001, this run has learning_rate=0.01"
    with pytest.raises(checkpoint.CheckpointError) as info:
        Trainer(config(model_definition={"type": "mlp", "hidden": [32]}), small).run(resume=snapshots[0])
    assert str(info.value) == (
        'checkpoint was made with model_definition={"activation": "relu", "dropout": 0.0, "hidden": [64], '
        '"type": "mlp"}, this run has model_definition={"activation": "relu", "dropout": 0.0, '
        '"hidden": [32], "type": "mlp"}'
    )


def test_should_stop_interrupts_an_epoch_within_a_second() -> None:
    """Stop is looked at between chunks, and chunks are sized to a small part of an epoch.

    The bounds are generous (a loaded 2-core machine stretches every chunk several
    times); how fast a stop really is, is measured by bench/trainer_bench.py --cancel.
    """
    big = load_dataset("synthetic://classification?n=200000&features=64&classes=10", data_roots=[])
    trainer = Trainer(config(model_definition={"type": "mlp", "hidden": [512, 512]}, epochs=1), big)
    calls: list[float] = []
    stop_at: list[float] = []

    def should_stop() -> bool:  # turns true 0.5 s after the chunks are compiled and running
        calls.append(time.perf_counter())
        if len(calls) == 3:
            stop_at.append(calls[-1] + 0.5)
        return bool(stop_at) and calls[-1] >= stop_at[0]

    history: list[EpochResult] = []
    result = trainer.run(on_epoch=history.append, should_stop=should_stop)
    returned = time.perf_counter()
    assert result.stopped and result.epochs_done == 0 and history == []
    assert result.model_bytes is None
    # the epoch is many chunks (sized to 0.1 s each), so a stop waits for one chunk only
    chunks_per_epoch = trainer.steps_per_epoch / trainer._chunk_steps
    assert chunks_per_epoch >= 10, chunks_per_epoch
    assert len(calls) >= 4 and len(calls) - 2 < chunks_per_epoch, "stopped before the epoch's end"
    gaps = np.diff(calls[2:])
    assert returned - stop_at[0] < 1.0 + 5 * float(np.median(gaps)), (returned - stop_at[0], gaps)


def test_a_checkpoint_still_waiting_is_superseded_by_a_newer_one(small: Dataset) -> None:
    """A slow listener never makes training wait: epochs keep coming, the newest
    checkpoint wins, every epoch is delivered in order, and the last has its checkpoint."""
    release = threading.Event()
    delivering = threading.Event()
    seen: list[EpochResult] = []
    calls: list[int] = []

    def slow_listener(epoch: EpochResult) -> None:
        if epoch.epoch == 1:
            delivering.set()
            assert release.wait(60), "training did not go on while epoch 1 was being delivered"
        seen.append(epoch)

    def should_stop() -> bool:  # called once per chunk: 4 chunks an epoch here
        calls.append(1)
        if len(calls) == 5:  # epoch 2 is running; on a loaded machine the delivery thread may not
            # have taken epoch 1 yet (then epoch 2's snapshot would rightly supersede it): let it
            assert delivering.wait(60), "epoch 1 was never handed to the listener"
        if len(calls) >= 18:  # epoch 5 is running: let epoch 1's delivery go
            release.set()
        return False

    trainer = Trainer(config(epochs=6, checkpoint_every=1, steps_per_chunk=4), small)
    result = trainer.run(on_epoch=slow_listener, should_stop=should_stop)
    assert [e.epoch for e in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[0].checkpoint and seen[-1].checkpoint
    assert checkpoint.read_meta(seen[-1].checkpoint)["epoch"] == 6
    assert seen[-1].checkpoint_sha256 == checkpoint.sha256_hex(seen[-1].checkpoint)
    dropped = [e.epoch for e in seen if e.checkpoint is None]
    assert dropped and set(dropped) <= {2, 3, 4, 5}, dropped
    assert result.epochs_done == 6


def test_nan_loss_raises_training_error(small: Dataset) -> None:
    with pytest.raises(TrainingError) as info:
        Trainer(config(learning_rate=1e30, optimizer="sgd", epochs=5), small).run()
    assert str(info.value).startswith("loss became NaN at epoch ") or str(info.value).startswith("loss became inf")
    assert info.value.epoch >= 1


def test_inf_in_the_data_raises_training_error(small: Dataset) -> None:
    x = np.array(small.x)  # a host copy: synthetic data is made on the device
    x[5, 0] = np.inf
    bad = Dataset("synthetic://bad", x, small.y, small.task, small.num_classes)
    with pytest.raises(TrainingError) as info:
        Trainer(config(validation_split=0.0), bad).run()
    assert str(info.value) == (
        "loss became NaN at epoch 1: lower the learning_rate or check the data for NaN and inf values"
    )
    assert info.value.epoch == 1


def test_compilation_cache_writes_entries(tmp_path: Path, small: Dataset) -> None:
    try:
        enable_compilation_cache(tmp_path / "jax-cache")
        Trainer(config(epochs=1, batch_size=16, steps_per_chunk=2), small).run()
        assert any((tmp_path / "jax-cache").iterdir())
    finally:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", None)
        compilation_cache.reset_cache()


# --- model definitions that do not fit -------------------------------------------


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"type": "cnn", "input_shape": [8, 8, 1]},
         "model_definition.input_shape [8, 8, 1] has 64 values but the data has 12 features"),
        ({"type": "cnn"},
         "model_definition.input_shape is required for a cnn when the data is not image-shaped "
         "(samples have shape [12]): give [height, width, channels]"),
        ({"type": "rnn"}, "model_definition.type 'rnn' is not supported: did you mean cnn? choose linear, mlp, cnn"),
        ({"type": "mlp", "activation": "swish2"},
         "model_definition.activation 'swish2' is not supported: "
         "choose relu, gelu, silu, tanh, sigmoid, elu, leaky_relu"),
        ({"type": "mlp", "hidden": [64, 0]},
         "model_definition.hidden must be a list of positive integers (got [64, 0])"),
        ({"type": "mlp", "hiden": [64]},
         "model_definition has unknown field 'hiden' for type mlp: did you mean hidden? known are activation, bias, dropout, hidden, type"),
        ({"type": "mlp", "dropout": 1.0}, "model_definition.dropout must be a number in [0, 1) (got 1.0)"),
        ({"type": "cnn", "input_shape": [2, 6], "conv": [{"features": 4, "pool": 4}]},
         "model_definition.conv[0].pool 4 is larger than the 2x6 feature map it pools: "
         "use a smaller pool or fewer layers"),
        ({"type": "cnn", "input_shape": [3, 4], "conv": [{"features": 0}]},
         "model_definition.conv[0].features must be a positive integer (got 0)"),
    ],
)
def test_unfitting_model_definitions_name_the_field(small: Dataset, definition: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Trainer(config(model_definition=definition), small)
    assert str(info.value) == message


def test_model_definition_must_be_json_object() -> None:
    with pytest.raises(ValueError, match=r"^model_definition is not valid JSON: "):
        config(model_definition="{type: mlp}")
    with pytest.raises(ValueError) as info:
        build_model("[1, 2]", sample_shape=(3,), output_dim=2)
    assert str(info.value) == "model_definition must be a JSON object (got list)"


# --- config ----------------------------------------------------------------------


def test_unknown_optimizer_and_hyperparameter() -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig.from_job({"optimizer": "foo"}, epochs=1, batch_size=8, model_definition=MLP)
    assert str(info.value) == "hyperparameters.optimizer must be one of adam, adamw or sgd (got 'foo')"
    with pytest.raises(ValueError) as info:
        TrainConfig.from_job({"learning_rat": "0.1"}, epochs=1, batch_size=8, model_definition=MLP)
    assert str(info.value) == (
        "hyperparameters.learning_rat is not a hyperparameter: did you mean learning_rate? known are optimizer, "
        "learning_rate, weight_decay, momentum, seed, dtype, validation_split, steps_per_chunk, checkpoint_every, "
        "checkpoint_interval_s, label_column, name, devices"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1 (got 0)"),
        ({"batch_size": -3}, "batch_size must be an integer >= 1 (got -3)"),
        ({"dtype": "float16"}, "hyperparameters.dtype must be float32 or bfloat16 (got 'float16')"),
        ({"validation_split": 1.0}, "hyperparameters.validation_split must be a number in [0, 1) (got 1.0)"),
        ({"momentum": -0.1}, "hyperparameters.momentum must be a number in [0, 1) (got -0.1)"),
        ({"learning_rate": 0.0}, "hyperparameters.learning_rate must be a number > 0 (got 0.0)"),
        ({"seed": -1}, "hyperparameters.seed must be an integer in [0, 4294967295] (got -1)"),
    ],
)
def test_bad_config_fields_are_named(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        config(**fields)
    assert str(info.value) == message


@settings(max_examples=60, deadline=None)
@given(
    optimizer=st.sampled_from(["adam", "adamw", "sgd", "ADAM"]),
    lr=st.floats(1e-6, 10.0),
    wd=st.floats(0.0, 1.0),
    momentum=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float32", "bfloat16", "bf16", "fp32"]),
    split=st.floats(0.0, 0.9),
    chunk=st.one_of(st.just("auto"), st.integers(1, 1000).map(str)),
)
def test_hyperparameter_strings_parse_exactly(optimizer, lr, wd, momentum, seed, dtype, split, chunk) -> None:
    hp = {
        "optimizer": optimizer, "learning_rate": repr(lr), "weight_decay": repr(wd),
        "momentum": f" {momentum!r} ", "seed": str(seed), "dtype": dtype,
        "validation_split": repr(split), "steps_per_chunk": chunk,
    }
    cfg = TrainConfig.from_job(hp, epochs=2, batch_size=16, model_definition=json.dumps(MLP))
    assert (cfg.optimizer, cfg.learning_rate, cfg.weight_decay) == (optimizer.lower(), lr, wd)
    assert (cfg.momentum, cfg.seed, cfg.validation_split) == (momentum, seed, split)
    assert cfg.dtype == ("bfloat16" if dtype.startswith("b") else "float32")
    assert cfg.steps_per_chunk == (None if chunk == "auto" else int(chunk))
    assert cfg.model_definition == MLP


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["learning_rate", "weight_decay", "momentum", "validation_split", "seed"]),
    text=st.text(st.characters(codec="ascii", exclude_characters="0123456789"), min_size=1, max_size=6),
)
def test_non_numeric_hyperparameters_are_refused(name: str, text: str) -> None:
    if text.strip().lower() in ("inf", "nan", "infinity", "-inf", "+inf", "-nan", "+nan", "-infinity", "+infinity"):
        return  # parse as floats; the range checks refuse them (covered above)
    with pytest.raises(ValueError) as info:
        TrainConfig.from_job({name: text}, epochs=1, batch_size=1, model_definition=MLP)
    expected = HYPERPARAMETERS[name].expected  # events.jobspec's words for the rule
    assert str(info.value) == f"hyperparameters.{name} must be {expected} (got {text.strip()!r})"


def test_defaults() -> None:
    cfg = config()
    assert (cfg.optimizer, cfg.learning_rate, cfg.weight_decay, cfg.validation_split) == ("adam", 1e-3, 0.0, 0.1)
    assert config(optimizer="adamw").weight_decay == 1e-4
    assert config(optimizer="sgd").learning_rate == 1e-2


# --- checkpoint serialisation -----------------------------------------------------------


def test_checkpoint_bytes_round_trip_and_are_deterministic() -> None:
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": (np.int32(7), np.zeros(0, np.uint32))}
    data = checkpoint.to_bytes(tree, {"epoch": 3})
    assert data == checkpoint.to_bytes(jax.device_put(tree), {"epoch": 3})
    back, meta = checkpoint.from_bytes(data, tree)
    assert meta == {"epoch": 3} and checkpoint.read_meta(data) == {"epoch": 3}
    np.testing.assert_array_equal(back["a"], tree["a"])
    assert back["b"][0] == 7 and back["b"][0].dtype == np.int32 and back["b"][1].shape == (0,)
    assert checkpoint.sha256_hex(data) == checkpoint.sha256_hex(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="bad magic bytes"):
        checkpoint.from_bytes(b"PK\x03\x04" + data, tree)
    with pytest.raises(checkpoint.CheckpointError, match="truncated"):
        checkpoint.from_bytes(data[:-1], tree)


def test_an_mlp_without_biases_has_no_bias_arrays_and_learns(small: Dataset) -> None:
    result = Trainer(config(model_definition=MLP | {"bias": False}, epochs=5), small).run()
    assert sorted(params_of(result.model_bytes)) == ["['dense_0']['w']", "['out']['w']"]
    assert result.val_accuracy >= 0.7 and result.loss < result.history[0].loss
    with pytest.raises(ValueError, match="model_definition.bias must be true or false"):
        Trainer(config(model_definition=MLP | {"bias": "no"}), small)


def test_checkpoint_interval_skips_checkpoints_until_that_much_training_has_passed(small: Dataset) -> None:
    seen: list[EpochResult] = []
    Trainer(config(epochs=4, checkpoint_every=1, checkpoint_interval_s=3600.0), small).run(on_epoch=seen.append)
    assert [e.epoch for e in seen if e.checkpoint] == [], "none is due before an hour of training"
    seen.clear()
    Trainer(config(epochs=4, checkpoint_every=1, checkpoint_interval_s=0.0), small).run(on_epoch=seen.append)
    assert seen[-1].checkpoint, "without an interval the last epoch always has its checkpoint"
    with pytest.raises(ValueError, match="checkpoint_interval_s must be a number of seconds >= 0"):
        config(checkpoint_interval_s=-1.0)
