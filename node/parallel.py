"""Where a run's arrays live: a ``jax.sharding.Mesh`` of the job's devices, one axis
``data``. Data parallel: each batch is split along that axis; parameters and optimizer
state are replicated; the data set and each epoch's sample order are replicated too, so
every device gathers its share of a batch from its own copy (no transfer per step) and
XLA adds the one all-reduce of the gradients. On one device every placement is that
device and the programs are the single-device ones.

:meth:`Layout.state_shardings` is the one place that says how the train state is laid
out: sharding parameters later (FSDP, tensor parallel: a ``model`` axis) changes it
and the mesh alone, not the programs or the host loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "Layout"]

DATA_AXIS = "data"


@dataclass(frozen=True, eq=False)
class Layout:
    """The mesh of one run and the shardings its programs take and give."""

    mesh: Mesh

    @classmethod
    def of(cls, count: int) -> Layout:
        """The first ``count`` devices of this process (a worker sees only its own)."""
        devices = jax.devices()
        if not 1 <= count <= len(devices):
            raise ValueError(f"devices: this process has {len(devices)} device(s), the job asks for {count}")
        return cls(Mesh(devices[:count], (DATA_AXIS,)))

    @property
    def size(self) -> int:
        return self.mesh.devices.size

    @property
    def key(self) -> tuple:
        """What tells two layouts apart in a cache of compiled programs or device data."""
        devices = list(self.mesh.devices.flat)
        return (self.mesh.devices.shape, devices[0].platform, tuple(d.id for d in devices))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch(self) -> NamedSharding:
        """The leading (example) axis split over the data axis."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    def state_shardings(self, state: Any) -> Any:
        """The sharding of each leaf of a train state (or of its parameters): replicated."""
        return jax.tree.map(lambda _: self.replicated, state)

    def split_batch(self, array: jax.Array) -> jax.Array:
        """Inside a program: ``array`` (a batch, examples first) split over the devices."""
        return lax.with_sharding_constraint(array, self.batch) if self.size > 1 else array

    def put(self, tree: Any, shardings: Any = None) -> Any:
        """``tree`` on the mesh (replicated unless ``shardings`` says otherwise)."""
        return jax.device_put(tree, self.replicated if shardings is None else shardings)
