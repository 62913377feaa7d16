"""``synthetic://classification`` and ``synthetic://regression``: deterministic, learnable
Gaussian data for tests and benchmarks, generated on the device.

The arrays are made by one jitted ``jax.random`` program on JAX's default device (a
worker's one GPU, or the CPU): no host array is built, and all that crosses to the
device is the seed (4 bytes) and the noise level. Shapes are constants of the program,
so it is compiled once per shape and serves every seed. The same URI gives the same
values every time on one backend (threefry's bits are the same on CPU and GPU; the
float transforms may differ in the last bit between them). The values are not those
of the NumPy generator used before (``numpy.random.default_rng``).
"""

from __future__ import annotations

import numpy as np

from node.datasets.dataset import Dataset, DatasetError
from node.datasets.uris import DatasetURI

__all__ = ["synthetic_dataset"]


def synthetic_dataset(parsed: DatasetURI) -> Dataset:
    """The data set a ``synthetic://`` URI names, its arrays on the device."""
    uri, kind, p = parsed.uri, parsed.name, parsed.params  # checked, defaults in (events.jobspec)
    n, features, seed = int(p["n"]), int(p["features"]), int(p["seed"])
    if kind == "classification":
        classes = int(p["classes"])
        x, y = _classification(n, features, classes, seed)
        if parsed.task == "regression":
            return Dataset(uri, x, y.astype("float32"), "regression", 0)
        return Dataset(uri, x, y, "classification", classes)
    if parsed.task == "classification":
        raise DatasetError(uri, "classification labels must be whole numbers >= 0 (class indices)")
    x, y = _regression(n, features, int(p["targets"]), float(p["noise"]), seed)
    return Dataset(uri, x, y, "regression", 0)


def _classification(n: int, features: int, classes: int, seed: int):
    """Class centres on a sphere of radius 3 with unit noise: separable, not trivially."""
    import jax.numpy as jnp

    def shape(noise, centres, labels):
        centres = centres.reshape(classes, features)
        centres = centres * (3.0 / jnp.linalg.norm(centres, axis=1, keepdims=True))
        y = (labels % classes).astype(jnp.int32)  # from 32 random bits: a bias under classes / 2**32
        return centres[y] + noise.reshape(n, features), y

    wanted = (("normal", n * features), ("normal", classes * features), ("bits", n))
    return _made(shape, ("classification", n, features, classes), seed, wanted)


def _regression(n: int, features: int, targets: int, noise_level: float, seed: int):
    """Targets ``tanh(x w) + noise``, ``w`` scaled so that ``x w`` has unit variance."""
    import jax
    import jax.numpy as jnp

    def shape(x, w, noise, level):
        x, w = x.reshape(n, features), w.reshape(features, targets) / jnp.sqrt(jnp.float32(features))
        y = jnp.tanh(jnp.matmul(x, w, precision=jax.lax.Precision.HIGHEST)) + level * noise.reshape(n, targets)
        return x, (y[:, 0] if targets == 1 else y)

    wanted = (("normal", n * features), ("normal", features * targets), ("normal", n * targets))
    return _made(shape, ("regression", n, features, targets), seed, wanted, jax.device_put(np.float32(noise_level)))


# Random values come in blocks of _BLOCK values, made _BATCHES[i] blocks at a time by
# programs that depend on nothing else, so XLA compiles the costly random-bit generator
# twice per kind and process (JAX's persistent cache keeps them), not once per data shape.
_BLOCK = 1 << 16
_BATCHES = (64, 1)
_PROGRAMS: dict = {}


def _made(shape, signature: tuple, seed: int, wanted: tuple[tuple[str, int], ...], *extra):
    """``shape(*streams, *extra)``, stream i holding ``wanted[i]`` = (kind, size) random
    values of ``seed``: one jitted program per data shape, cheap to compile (no random-bit
    generator inside), over the blocks that ``_streams`` makes."""
    fn = _PROGRAMS.get(signature)
    if fn is None:
        import jax
        import jax.numpy as jnp

        sizes = [size for _, size in wanted]

        def joined(streams, *extra):
            return shape(*(jnp.concatenate(parts)[:size] for parts, size in zip(streams, sizes)), *extra)

        fn = _PROGRAMS[signature] = jax.jit(joined)
    return fn(_streams(seed, wanted), *extra)


def _streams(seed: int, wanted: tuple[tuple[str, int], ...]) -> tuple:
    """For each (kind, size): at least that many random values (``normal`` float32 or
    ``bits`` uint32) from stream i of ``seed``, as a few arrays of whole blocks."""
    import jax

    key = _program("key", 0)(jax.device_put(np.uint32(seed)))
    out = []
    for stream, (kind, size) in enumerate(wanted):
        blocks, first, parts = -(-size // _BLOCK), 0, []
        for count in _BATCHES:
            while blocks - first >= count:
                parts.append(_program(kind, count)(key, *jax.device_put((np.uint32(stream), np.uint32(first)))))
                first += count
        out.append(tuple(parts))
    return tuple(out)


def _program(kind: str, blocks: int):
    """The jitted maker of ``blocks`` blocks of random values (of the root key, for "key")."""
    fn = _PROGRAMS.get((kind, blocks))
    if fn is not None:
        return fn
    import jax
    import jax.numpy as jnp

    def make(key, stream, first):
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, stream), i))(
            first + jnp.arange(blocks, dtype=jnp.uint32)
        )
        if kind == "normal":
            return jax.vmap(lambda k: jax.random.normal(k, (_BLOCK,), jnp.float32))(keys).reshape(-1)
        return jax.vmap(lambda k: jax.random.bits(k, (_BLOCK,), jnp.uint32))(keys).reshape(-1)

    fn = _PROGRAMS[(kind, blocks)] = jax.jit(jax.random.PRNGKey if kind == "key" else make)
    return fn
