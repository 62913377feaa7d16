"""The node's training core: a job's config and data set in, epochs and a model out.

No networking here: the node's worker process (``node.worker``) calls :meth:`Trainer.run`,
passes ``on_epoch`` to report progress and checkpoints, ``on_phase`` for telemetry and
``should_stop`` to cancel. Checkpoints are snapshots on the device, written to bytes
by a background thread (``node.snapshots``) while training goes on.

How an epoch runs: the training split lives on the device; each epoch draws a
permutation from ``fold_in(shuffle_key, epoch)`` and runs the steps as a few *chunks*,
each one jitted ``lax.scan`` over batches gathered on the device by that permutation.
The train state is donated to each chunk; the host waits once per chunk (for its
summed metrics) while the next chunk is already queued. The last batch of an epoch is
padded to full size and masked, so shapes never change. Chunks are sized to take
about ``chunk_seconds`` (measured on the first chunk unless ``steps_per_chunk`` is
given), which bounds how long ``should_stop`` waits. The dropout key of a step is
``fold_in(dropout_key, step)``, so a run resumed from a checkpoint replays exactly the
steps of an uninterrupted one (bit for bit on CPU).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from node import checkpoint
from node.datacache import device_cache
from node.datasets import Dataset
from node.models import Model, build_model
from node.snapshots import EpochPipeline
from node.train_config import TrainConfig

__all__ = [
    "EpochResult", "TrainConfig", "TrainResult", "TrainState", "Trainer", "TrainingError",
    "enable_compilation_cache",
]

_PROBE_STEPS = 4  # length of the first, timed chunk of each epoch when sizing is automatic
_CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """Training failed in a way that retrying the same job will not fix."""

    retryable = False

    def __init__(self, message: str, *, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


def enable_compilation_cache(path: str | Path, *, min_compile_seconds: float = 0.0) -> None:
    """Turn on JAX's persistent compilation cache in ``path`` (process-wide).

    Compiled chunks are then reused across jobs and node restarts.
    """
    from jax.experimental.compilation_cache import compilation_cache

    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # pick the new directory up even after earlier compiles


class TrainState(NamedTuple):
    """What a step changes (parameters, optimizer state, global step) and the dropout key."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class _Sums(NamedTuple):
    loss: jax.Array
    correct: jax.Array
    count: jax.Array


@dataclass(frozen=True)
class EpochResult:
    """Metrics after one epoch. Accuracies are None for regression, validation None without a split."""

    epoch: int
    total_epochs: int
    loss: float
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_s: float
    step: int
    checkpoint: bytes | None = field(default=None, repr=False)
    checkpoint_sha256: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TrainResult:
    """How a run ended. ``model_bytes`` (final params and model definition, see
    :func:`node.models.load_model`) is None when the run was stopped."""

    epochs_done: int
    stopped: bool
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    compute_seconds: float
    model_bytes: bytes | None = field(repr=False)
    history: tuple[EpochResult, ...] = field(default=(), repr=False)

    @property
    def model_sha256(self) -> str | None:
        return None if self.model_bytes is None else checkpoint.sha256_hex(self.model_bytes)


def _never() -> bool:
    return False


def _ignore(*_args: Any) -> None:
    return None


class _Phases:
    """Calls ``on_phase`` when the phase changes (each at most once in a row)."""

    def __init__(self, on_phase: Callable[[str], None] | None) -> None:
        self.on_phase = on_phase
        self.current = ""

    def __call__(self, phase: str) -> None:
        if phase != self.current and self.on_phase is not None:
            self.current = phase
            self.on_phase(phase)


_COMPILED: OrderedDict[tuple, Any] = OrderedDict()
_COMPILED_MAX = 64
_COMPILED_LOCK = threading.Lock()
# Steps per chunk measured by the first run of a program, reused by later runs of it.
_CHUNK_STEPS: dict[tuple, int] = {}


@dataclass(frozen=True, eq=False)
class _Program:
    """The pure, jitted functions of a run, fixed by model, optimizer and shapes (no data,
    no seed), so that compiled chunks are shared by every run with the same shapes."""

    model: Model
    optimizer: optax.GradientTransformation
    signature: tuple
    classification: bool
    dtype: Any
    batch: int
    n_train: int
    steps_per_epoch: int
    val_batch: int
    n_val: int

    def compiled(self, kind: str, length: int, *args: Any) -> Any:
        """Compiled ahead of time (so that timings exclude it) and kept process-wide."""
        avals = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
        key = (self.signature, kind, length, avals)
        with _COMPILED_LOCK:
            fn = _COMPILED.get(key)
            if fn is not None:
                _COMPILED.move_to_end(key)
                return fn
        if kind == "init":
            jitted = jax.jit(self.init_state)
        elif kind == "order":
            jitted = jax.jit(self.epoch_order)
        elif kind == "chunk":
            jitted = jax.jit(partial(self.run_chunk, length=length), donate_argnums=0)
        elif kind == "snapshot":
            jitted = jax.jit(_copy_tree)
        else:
            jitted = jax.jit(partial(self.eval_chunk, length=length))
        fn = jitted.lower(*args).compile()
        with _COMPILED_LOCK:
            _COMPILED[key] = fn
            while len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.popitem(last=False)
        return fn

    def init_state(self, init_key: jax.Array, dropout_key: jax.Array) -> TrainState:
        params = self.model.init(init_key)
        return TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32), dropout_key)

    def epoch_order(self, shuffle_key: jax.Array, epoch: jax.Array) -> jax.Array:
        """This epoch's sample order, padded to whole batches (padding is masked)."""
        perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), self.n_train)
        pad = self.steps_per_epoch * self.batch - self.n_train
        return jnp.concatenate([perm, perm[:pad]]).astype(jnp.int32)

    def run_chunk(self, state, x, y, order, start, *, length):
        """``length`` train steps from step ``start`` of the epoch; metrics summed."""
        batch, n_train = self.batch, self.n_train

        def body(carry, i):
            state, acc = carry
            first = (start + i) * batch
            idx = lax.dynamic_slice_in_dim(order, first, batch)
            valid = first + jnp.arange(batch) < n_train
            state, sums = self.train_step(state, (x[idx], y[idx], valid))
            return (state, _Sums(*(a + s for a, s in zip(acc, sums)))), None

        (state, sums), _ = lax.scan(body, (state, _zero_sums()), jnp.arange(length, dtype=jnp.int32))
        return state, _as_vector(sums)

    def train_step(self, state: TrainState, batch: tuple[jax.Array, ...]) -> tuple[TrainState, _Sums]:
        """One optimizer step on a masked batch: pure, so it jits and replays exactly."""
        x, y, valid = batch
        key = jax.random.fold_in(state.key, state.step)
        count = valid.sum()

        def loss_fn(params):
            loss, correct = self.per_example(self.model.apply(params, x, key, dtype=self.dtype), y)
            loss = jnp.where(valid, loss, 0.0)
            return loss.sum() / jnp.maximum(count, 1), (loss.sum(), (correct & valid).sum())

        (_, (loss_sum, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params, opt_state, state.step + 1, state.key)
        return new_state, _Sums(loss_sum, correct.astype(jnp.int32), count)

    def eval_chunk(self, params, xv, yv, start, *, length):
        """Summed validation metrics over ``length`` batches from batch ``start``."""
        batch, n_val = self.val_batch, self.n_val

        def body(acc, i):
            first = (start + i) * batch
            xb = lax.dynamic_slice_in_dim(xv, first, batch)
            yb = lax.dynamic_slice_in_dim(yv, first, batch)
            valid = first + jnp.arange(batch) < n_val
            loss, correct = self.per_example(self.model.apply(params, xb, None, dtype=self.dtype), yb)
            sums = (jnp.where(valid, loss, 0.0).sum(), (correct & valid).sum(), valid.sum())
            return _Sums(*(a + s for a, s in zip(acc, sums))), None

        sums, _ = lax.scan(body, _zero_sums(), jnp.arange(length, dtype=jnp.int32))
        return _as_vector(sums)

    def per_example(self, out: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Loss and correctness of each example: cross-entropy, or mean squared error."""
        if self.classification:
            loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
            return loss, jnp.argmax(out, axis=-1) == y
        loss = jnp.mean(jnp.square(out - y.reshape(out.shape)), axis=-1)
        return loss, jnp.zeros(loss.shape, bool)


class Trainer:
    """Trains ``config``'s model on ``dataset``; construction checks that they fit."""

    def __init__(self, config: TrainConfig, dataset: Dataset) -> None:
        self.config = config
        self.dataset = dataset
        self.model: Model = build_model(
            config.model_definition, sample_shape=dataset.sample_shape, output_dim=dataset.num_outputs
        )
        n = dataset.x.shape[0]
        n_val = min(int(round(n * config.validation_split)), n - 1)
        split = np.random.default_rng(config.seed).permutation(n)
        self._train_idx, self._val_idx = np.sort(split[n_val:]), np.sort(split[:n_val])
        n_train = n - n_val
        batch = min(config.batch_size, n_train)
        val_batch = min(config.batch_size, n_val)
        self._program = _Program(
            model=self.model, optimizer=_optimizer(config),
            signature=(
                json.dumps(self.model.definition, sort_keys=True), self.model.sample_shape,
                self.model.output_dim, dataset.task, config.optimizer, config.learning_rate,
                config.weight_decay, config.momentum, config.dtype, batch, n_train, val_batch, n_val,
            ),
            classification=dataset.task == "classification",
            dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
            batch=batch, n_train=n_train, steps_per_epoch=-(-n_train // batch),
            val_batch=val_batch, n_val=n_val,
        )
        self.val_steps = -(-n_val // val_batch) if n_val else 0
        root = jax.random.PRNGKey(config.seed)
        self._init_key, self._shuffle_key, self._dropout_key = (jax.random.fold_in(root, i) for i in range(3))
        self._chunk_steps: int | None = (
            config.steps_per_chunk if config.steps_per_chunk is not None
            else _CHUNK_STEPS.get(self._program.signature)
        )
        self._device_data: tuple[jax.Array, ...] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self._program.steps_per_epoch

    def init_state(self) -> TrainState:
        """The state before the first step (parameters from the seed)."""
        keys = (self._init_key, self._dropout_key)
        return self._program.compiled("init", 0, *keys)(*keys)

    def run(
        self,
        on_epoch: Callable[[EpochResult], None] | None = None,
        should_stop: Callable[[], bool] = _never,
        resume: bytes | None = None,
        on_phase: Callable[[str], None] | None = None,
        *,
        lossless_checkpoints: bool = False,
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> TrainResult:
        """Train until ``config.epochs`` (or ``should_stop()`` turns true between chunks).

        ``on_epoch`` is called in epoch order from a background thread, an epoch with a
        checkpoint once its bytes are written (see :mod:`node.snapshots`: a checkpoint
        still waiting when a newer one is taken is dropped unless
        ``lossless_checkpoints``); every call has returned when ``run`` returns.
        ``on_phase`` hears "compiling", "training" and "checkpointing" (waiting for the
        last checkpoint); ``on_progress(epoch, steps_done, steps)`` each chunk of steps
        within an epoch (every chunk: the caller bounds the rate). ``resume``: checkpoint bytes from an ``EpochResult`` of a run
        with the same config and data; training continues at the next epoch. Raises
        :class:`TrainingError` when the loss stops being finite and
        :class:`node.checkpoint.CheckpointError` for a checkpoint that does not fit.
        """
        started = time.perf_counter()
        phase = _Phases(on_phase)
        self._data()  # queues the host-to-device copies; the compilation below overlaps them
        phase("compiling")
        state, done, last = self._start_state(resume)
        pipeline = EpochPipeline(on_epoch or _ignore, lossless=lossless_checkpoints)
        try:
            state, done, last, history, stopped = self._epochs(state, done, last, should_stop, pipeline, phase,
                                                               on_progress or _ignore)
        except BaseException:
            pipeline.close(raise_error=False)
            raise
        if pipeline.pending():
            phase("checkpointing")
        pipeline.close()
        return self._result(state, done, last, history, started, stopped=stopped)

    def _epochs(self, state, done, last, should_stop, pipeline: EpochPipeline, phase: _Phases, progress=_ignore):
        cfg = self.config
        history: list[EpochResult] = []
        last_checkpoint = time.perf_counter()  # the interval counts from the start of training
        for epoch in range(done + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            state, sums = self._train_epoch(state, epoch, should_stop, phase, progress)
            if sums is None:
                return state, done, last, history, True
            train_seconds = time.perf_counter() - t0
            val = self._evaluate(state.params, should_stop, epoch)
            if val is False:
                return state, done, last, history, True
            every, now = cfg.checkpoint_every, time.perf_counter()
            write = None
            due = every and (epoch % every == 0 or epoch == cfg.epochs)
            if due and now - last_checkpoint >= cfg.checkpoint_interval_s:
                write, last_checkpoint = self._snapshot(state, epoch, sums, val), now
            last = EpochResult(
                epoch=epoch, total_epochs=cfg.epochs,
                loss=sums[0], accuracy=sums[1], val_loss=val[0] if val else None,
                val_accuracy=val[1] if val else None, seconds=time.perf_counter() - t0,
                samples_per_s=self._program.n_train / train_seconds, step=epoch * self.steps_per_epoch,
            )
            done = epoch
            history.append(last)
            pipeline.put(last, write)
        return state, done, last, history, False

    def _snapshot(self, state: TrainState, epoch: int, sums, val) -> Callable[[], bytes]:
        """A copy of ``state`` on the device now; the function that writes it, later."""
        copy = self._program.compiled("snapshot", 0, state)(state)
        return lambda: self._checkpoint(copy, epoch, sums, val)

    # --- one epoch -------------------------------------------------------------

    def _train_epoch(self, state: TrainState, epoch: int, should_stop: Callable[[], bool], phase=_ignore,
                     progress=_ignore):
        """Run the epoch's chunks; return (state, (loss, accuracy)) or (state, None) if stopped."""
        program = self._program
        x, y, _, _ = self._data()
        order_args = (self._shuffle_key, np.int32(epoch))
        order = program.compiled("order", 0, *order_args)(*order_args)
        totals = np.zeros(3)
        pending = None
        plan = self._plan()
        i = 0
        while i < len(plan):
            start, length = plan[i]
            if should_stop():
                return state, None
            args = (x, y, order, np.int32(start))
            fn = program.compiled("chunk", length, state, *args)
            if self._chunk_steps is None:  # a first, untimed run on a copy: warm-up is slow
                jax.block_until_ready(fn(jax.device_put(jax.device_get(state)), *args))
            phase("training")
            t0 = time.perf_counter()
            state, sums = fn(state, *args)
            if pending is not None:
                totals += self._fetch(pending, epoch)
                progress(epoch, start, self.steps_per_epoch)  # the chunks before this one are done
            pending = sums
            if self._chunk_steps is None:  # first chunk ever: time it to size the rest
                totals += self._fetch(pending, epoch)
                pending = None
                self._chunk_steps = self._size_chunks((time.perf_counter() - t0) / length)
                _CHUNK_STEPS[program.signature] = self._chunk_steps
                plan = plan[:1] + self._plan()[1:]
            i += 1
        if pending is not None:
            totals += self._fetch(pending, epoch)
        loss, correct, count = totals
        accuracy = float(correct / count) if self._program.classification else None
        return state, (float(loss / count), accuracy)

    def _plan(self) -> list[tuple[int, int]]:
        """(first step, steps) of each chunk: a short first chunk when sizing is automatic,
        then near-equal chunks of at most the chunk size."""
        total = self.steps_per_epoch
        if self.config.steps_per_chunk is not None:
            size = self.config.steps_per_chunk
            return [(s, min(size, total - s)) for s in range(0, total, size)]
        head = min(_PROBE_STEPS, total)
        plan = [(0, head)]
        rest = total - head
        if rest and self._chunk_steps is not None:
            count = -(-rest // self._chunk_steps)
            size = -(-rest // count)
            plan += [(s, min(size, total - s)) for s in range(head, total, size)]
        elif rest:
            plan.append((head, rest))  # placeholder, replaced once the first chunk is timed
        return plan

    def _size_chunks(self, seconds_per_step: float) -> int:
        steps = int(self.config.chunk_seconds / max(seconds_per_step, 1e-9))
        return max(1, min(steps, self.steps_per_epoch))

    def _fetch(self, sums: jax.Array, epoch: int) -> np.ndarray:
        values = np.asarray(sums, np.float64)  # the chunk's one host sync
        if not math.isfinite(values[0]):
            raise TrainingError(
                f"loss became {'NaN' if math.isnan(values[0]) else 'inf'} at epoch {epoch}: "
                f"lower the learning_rate or check the data for NaN and inf values", epoch=epoch,
            )
        return values

    def _evaluate(self, params: Any, should_stop: Callable[[], bool], epoch: int):
        """(val_loss, val_accuracy), None without a validation split, False if stopped."""
        if not self.val_steps:
            return None
        _, _, xv, yv = self._data()
        size = self.val_steps if self._chunk_steps is None else min(self.val_steps, 2 * self._chunk_steps)
        totals = np.zeros(3)
        for start in range(0, self.val_steps, size):
            if should_stop():
                return False
            args = (params, xv, yv, np.int32(start))
            fn = self._program.compiled("eval", min(size, self.val_steps - start), *args)
            totals += np.asarray(fn(*args), np.float64)
        loss, correct, count = totals
        if not math.isfinite(loss):
            raise TrainingError(
                f"validation loss became {'NaN' if math.isnan(loss) else 'inf'} at epoch {epoch}: "
                f"lower the learning_rate or check the data for NaN and inf values", epoch=epoch,
            )
        return float(loss / count), (float(correct / count) if self._program.classification else None)

    def _data(self) -> tuple[jax.Array, ...]:
        """Train and validation arrays on the device (validation padded to whole batches),
        kept between runs on the same data set, split and dtype (``node.datacache``)."""
        if self._device_data is None:
            p, c = self._program, self.config
            key = (self.dataset, c.seed, c.validation_split, p.batch, p.val_batch, c.dtype)
            self._device_data = device_cache.get_or_make(
                key, self._put_data, lambda arrays: sum(int(a.nbytes) for a in arrays)
            )
        return self._device_data

    def _put_data(self) -> tuple[jax.Array, ...]:
        """Copy the data set to the device once and split it there (asynchronously)."""
        d, p = self.dataset, self._program
        x, y = jax.device_put(d.x), jax.device_put(d.y)
        pad = self.val_steps * p.val_batch - p.n_val
        vidx = np.concatenate([self._val_idx, self._val_idx[:pad]])
        train, val = jax.device_put(self._train_idx.astype(np.int32)), jax.device_put(vidx.astype(np.int32))
        return (x[train].astype(p.dtype), y[train], x[val].astype(p.dtype), y[val])

    # --- checkpoints and results ----------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to resume this run exactly."""
        c, d = self.config, self.dataset
        return {
            "model_definition": self.model.definition, "optimizer": c.optimizer,
            "learning_rate": c.learning_rate, "weight_decay": c.weight_decay, "momentum": c.momentum,
            "seed": c.seed, "dtype": c.dtype, "validation_split": c.validation_split,
            "batch_size": c.batch_size, "samples": int(d.x.shape[0]), "sample_shape": list(d.sample_shape),
            "task": d.task, "outputs": d.num_outputs,
        }

    def _checkpoint(self, state: TrainState, epoch: int, sums, val) -> bytes:
        meta = {
            "kind": "checkpoint", "version": _CHECKPOINT_VERSION, "epoch": epoch,
            "fingerprint": self._fingerprint(),
            "metrics": {"loss": sums[0], "accuracy": sums[1], "val_loss": val[0] if val else None,
                        "val_accuracy": val[1] if val else None},
        }
        return checkpoint.to_buffer(state, meta)  # bytes-like; written without holding the GIL long

    def _start_state(self, resume: bytes | None) -> tuple[TrainState, int, EpochResult | None]:
        if resume is None:
            return self.init_state(), 0, None
        meta = checkpoint.read_meta(resume)
        if meta.get("kind") != "checkpoint" or meta.get("version") != _CHECKPOINT_VERSION:
            raise checkpoint.CheckpointError(f"not a version {_CHECKPOINT_VERSION} training checkpoint")
        ours = self._fingerprint()
        for name, value in meta["fingerprint"].items():
            if ours.get(name) != value:
                theirs, mine = (json.dumps(v, sort_keys=True) for v in (value, ours.get(name)))
                raise checkpoint.CheckpointError(
                    f"checkpoint was made with {name}={theirs}, this run has {name}={mine}"
                )
        like = jax.eval_shape(self._program.init_state, self._init_key, self._dropout_key)
        state, _ = checkpoint.from_bytes(resume, like)
        epoch, m = int(meta["epoch"]), meta["metrics"]
        last = EpochResult(
            epoch=epoch, total_epochs=self.config.epochs, loss=m["loss"], accuracy=m["accuracy"],
            val_loss=m["val_loss"], val_accuracy=m["val_accuracy"], seconds=0.0, samples_per_s=0.0,
            step=int(state.step),
        )
        return jax.device_put(state), epoch, last

    def _result(self, state, done, last, history, started, *, stopped: bool) -> TrainResult:
        model_bytes = None
        if not stopped:
            d = self.dataset
            meta = {
                "kind": "model", "model_definition": self.model.definition,
                "sample_shape": list(self.model.sample_shape), "output_dim": self.model.output_dim,
                "task": d.task, "class_names": list(d.class_names), "epochs": done,
            }
            model_bytes = checkpoint.to_bytes(state.params, meta)
        return TrainResult(
            epochs_done=done, stopped=stopped,
            loss=last.loss if last else None, accuracy=last.accuracy if last else None,
            val_loss=last.val_loss if last else None, val_accuracy=last.val_accuracy if last else None,
            compute_seconds=time.perf_counter() - started, model_bytes=model_bytes, history=tuple(history),
        )


def _copy_tree(tree: Any) -> Any:
    """A copy in new device buffers (the state itself is donated to the next chunk)."""
    return jax.tree.map(jnp.copy, tree)


def _zero_sums() -> _Sums:
    return _Sums(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _as_vector(sums: _Sums) -> jax.Array:
    """Chunk metrics as one float32 vector (loss sum, correct, count): one transfer."""
    return jnp.stack([sums.loss, sums.correct.astype(jnp.float32), sums.count.astype(jnp.float32)])


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=wd)
    base = optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr, momentum=config.momentum or None)
    return optax.chain(optax.add_decayed_weights(wd), base) if wd else base
