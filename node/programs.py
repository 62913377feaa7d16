"""The pure, jitted programs of a training run: initial state, an epoch's sample order,
a chunk of train steps as one ``lax.scan``, a chunk of validation, a snapshot copy.

A :class:`Program` is fixed by model, optimizer and shapes (no data, no seed), so the
chunks it compiles are shared process-wide by every run with the same shapes. The host
loop that drives them (chunk plans, host syncs, checkpoints) is :mod:`node.trainer`;
where their arrays live (one device, or data parallel over several) is
:mod:`node.parallel`'s :class:`Layout`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from node.models import Model
from node.parallel import Layout
from node.train_config import TrainConfig

__all__ = ["Program", "TrainState", "build_optimizer"]


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


_COMPILED: OrderedDict[tuple, Any] = OrderedDict()
_COMPILED_MAX = 64
_COMPILED_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class Program:
    """The pure, jitted functions of a run, fixed by model, optimizer, shapes and the
    devices' layout (no data, no seed), so that compiled chunks are shared by every run
    with the same shapes. ``batch`` is the global batch: split over ``layout``'s data
    axis inside each step."""

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
    layout: Layout

    def compiled(self, kind: str, length: int, *args: Any) -> Any:
        """Compiled ahead of time (so that timings exclude it) and kept process-wide.

        Every program takes and gives its arrays as ``layout`` says: the train state as
        :meth:`Layout.state_shardings`, data, sample order and metrics replicated."""
        avals = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
        key = (self.signature, self.layout.key, kind, length, avals)
        with _COMPILED_LOCK:
            fn = _COMPILED.get(key)
            if fn is not None:
                _COMPILED.move_to_end(key)
                return fn
        fn = self._jitted(kind, length, args).lower(*args).compile()
        with _COMPILED_LOCK:
            _COMPILED[key] = fn
            while len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.popitem(last=False)
        return fn

    def _jitted(self, kind: str, length: int, args: tuple) -> Any:
        layout = self.layout
        rep = layout.replicated
        if kind == "init":
            state = layout.state_shardings(jax.eval_shape(self.init_state, *args))
            return jax.jit(self.init_state, in_shardings=(rep, rep), out_shardings=state)
        if kind == "order":
            return jax.jit(self.epoch_order, in_shardings=(rep, rep), out_shardings=rep)
        first = layout.state_shardings(args[0])  # the train state, or the parameters for eval
        if kind == "chunk":
            return jax.jit(partial(self.run_chunk, length=length), donate_argnums=0,
                           in_shardings=(first, rep, rep, rep, rep), out_shardings=(first, rep))
        if kind == "snapshot":
            return jax.jit(_copy_tree, in_shardings=(first,), out_shardings=first)
        return jax.jit(partial(self.eval_chunk, length=length), in_shardings=(first, rep, rep, rep),
                       out_shardings=rep)

    def init_state(self, init_key: jax.Array, dropout_key: jax.Array) -> TrainState:
        params = self.model.init(init_key)
        return TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32), dropout_key)

    def epoch_order(self, shuffle_key: jax.Array, epoch: jax.Array) -> jax.Array:
        """This epoch's sample order, padded to whole batches (padding is masked)."""
        perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), self.n_train)
        return jnp.resize(perm, self.steps_per_epoch * self.batch).astype(jnp.int32)  # repeats perm's head

    def run_chunk(self, state, x, y, order, start, *, length):
        """``length`` train steps from step ``start`` of the epoch; metrics summed."""
        batch, n_train = self.batch, self.n_train

        def body(carry, i):
            state, acc = carry
            first = (start + i) * batch
            split = self.layout.split_batch
            idx = split(lax.dynamic_slice_in_dim(order, first, batch))
            valid = split(first + jnp.arange(batch) < n_train)
            count = jnp.clip(n_train - first, 0, batch)  # valid.sum() without a collective on the way
            state, sums = self.train_step(state, (split(x[idx]), split(y[idx]), valid, count))
            return (state, _Sums(*(a + s for a, s in zip(acc, sums)))), None

        (state, sums), _ = lax.scan(body, (state, _zero_sums()), jnp.arange(length, dtype=jnp.int32))
        return state, _as_vector(sums)

    def train_step(self, state: TrainState, batch: tuple[jax.Array, ...]) -> tuple[TrainState, _Sums]:
        """One optimizer step on a masked batch (examples, labels, mask, and the mask's
        count): pure, so it jits and replays exactly."""
        x, y, valid, count = batch
        key = jax.random.fold_in(state.key, state.step)

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
            split = self.layout.split_batch
            xb = split(lax.dynamic_slice_in_dim(xv, first, batch))
            yb = split(lax.dynamic_slice_in_dim(yv, first, batch))
            valid = split(first + jnp.arange(batch) < n_val)
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


def _copy_tree(tree: Any) -> Any:
    """A copy in new device buffers (the state itself is donated to the next chunk)."""
    return jax.tree.map(jnp.copy, tree)


def _zero_sums() -> _Sums:
    return _Sums(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _as_vector(sums: _Sums) -> jax.Array:
    """Chunk metrics as one float32 vector (loss sum, correct, count): one transfer."""
    return jnp.stack([sums.loss, sums.correct.astype(jnp.float32), sums.count.astype(jnp.float32)])



def build_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer of ``config`` (weight decay decoupled for adamw, added to the
    gradient otherwise)."""
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=wd)
    base = optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr, momentum=config.momentum or None)
    return optax.chain(optax.add_decayed_weights(wd), base) if wd else base
