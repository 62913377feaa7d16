"""What a job spec may be: one check of our own ``JobSpec``, for every way a job gets in.

The rules of the job itself (data set URI, model definition, hyperparameters, epochs,
batch size) are ``events.jobspec``'s, the ones the node applies too; this module adds
what only central knows or bounds (the online nodes' memory, text sizes, priority).

``check_spec`` runs on the spec SubmitJob built from a JobConfig and on the spec of a
JobSubmitted that ``cyxwiz events publish`` is about to append, so both refuse the same
jobs with the same message (only the field prefix differs: ``config.`` for a gRPC
caller, ``spec.`` for a publisher, each naming the field it sent).

The model bound keeps one submit from holding a node's slot with a model it can never
train: at most ``MAX_LAYERS`` layers, ``MAX_WIDTH`` units (or conv features) per layer,
``MAX_PARAMETERS`` parameters, and parameters + gradients + optimizer state (float32)
within the memory of the largest online node that could take it (its accelerator's
memory, or its RAM when it trains on CPU), or ``NO_NODE_MEMORY`` when none is online.
The size comes from ``events.model_size.estimate``: a lower bound, since the data's
width is only known on the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from central.lifecycle.errors import Refused
from central.lifecycle.nodes import largest_node_memory
from events import JobSpec
from events.jobspec import MAX_BATCH, MAX_EPOCHS, InvalidJobSpec, check_job
from events.model_size import ModelSize, estimate

__all__ = [
    "MAX_BATCH", "MAX_EPOCHS", "MAX_LAYERS", "MAX_NAME", "MAX_PARAMETERS", "MAX_TEXT",
    "MAX_WIDTH", "NO_NODE_MEMORY", "check_model_size", "check_spec", "largest_node_memory",
]

DEVICE_NAMES = ("cpu", "cuda", "opencl", "metal", "vulkan")
MAX_TEXT = 65536
MAX_NAME = 256
MAX_LAYERS = 256
MAX_WIDTH = 65_536
MAX_PARAMETERS = 1_000_000_000
NO_NODE_MEMORY = 64 << 30
UNBOUNDED = 1 << 62  # memory that bounds nothing


def check_spec(spec: JobSpec, *, nodes: Iterable[Any] = (), where: str = "spec",
               name_field: str | None = None, fit_memory: bool = True,
               largest_memory: Callable[[str | None], int | None] | None = None) -> JobSpec:
    """``spec`` if a node could run it, else ``Refused(400)`` naming the field, the value
    and the limit. ``nodes`` are the online nodes (``devices``, ``ram_bytes``), or
    ``largest_memory(device)`` says what ``largest_node_memory`` would of them (central's
    state keeps it between node changes); ``fit_memory=False`` leaves out the one rule
    that depends on them (a queued job may wait for a larger node)."""
    if spec.job_type != "JOB_TYPE_TRAINING":
        raise Refused(400, f"{where}.job_type {spec.job_type[:40]!r} is not supported: central runs JOB_TYPE_TRAINING jobs")
    if not 0 <= spec.priority <= 3:
        raise Refused(400, f"{where}.priority {spec.priority} is unknown; use 0 (low) .. 3 (critical)")
    if len(spec.name) > MAX_NAME:
        raise Refused(400, f"{name_field or where + '.name'} is too long ({len(spec.name)} characters, at most {MAX_NAME})")
    if sum(len(k) + len(v) for k, v in spec.hyperparameters.items()) > MAX_TEXT:
        raise Refused(400, f"{where}.hyperparameters are too large (over {MAX_TEXT} characters)")
    req = spec.requirements
    if req.device is not None and req.device not in DEVICE_NAMES:
        raise Refused(400, f"{where}.requirements.device {req.device[:40]!r} is unknown; use one of {', '.join(DEVICE_NAMES)}")
    if req.min_memory_bytes < 0:
        raise Refused(400, f"{where}.requirements.min_memory_bytes must be >= 0 (got {req.min_memory_bytes})")
    try:  # the rules the node checks too: one module (events.jobspec)
        checked = check_job(dataset_uri=spec.dataset_uri, model_definition=spec.model_definition,
                            hyperparameters=spec.hyperparameters, epochs=spec.epochs, batch_size=spec.batch_size)
    except InvalidJobSpec as exc:
        raise Refused(400, str(exc.under(where))) from None
    check_model_size(spec.model_definition, optimizer=checked.hyperparameters.get("optimizer", "adam"),
                     memory=_memory(nodes, largest_memory, req.device) if fit_memory else UNBOUNDED,
                     where=f"{where}.model_definition")
    return spec


def check_model_size(definition: str, *, optimizer: str = "adam", memory: int | None = None,
                     where: str = "model_definition") -> ModelSize:
    """The size of ``definition``, or ``Refused(400)`` when it is over a limit;
    ``memory`` is the largest online node's (None: no node online)."""
    if len(definition) > MAX_TEXT:
        raise Refused(400, f"{where} is too long ({len(definition)} characters, at most {MAX_TEXT})")
    try:
        size = estimate(definition, optimizer=optimizer)
    except ValueError as exc:  # its message starts with the field: "model_definition.hidden must be ..."
        raise Refused(400, where + str(exc).removeprefix("model_definition")) from None
    if size.layers > MAX_LAYERS:
        raise Refused(400, f"{where} has {size.layers:,} layers, at most {MAX_LAYERS}: use fewer layers")
    if size.widest > MAX_WIDTH:
        raise Refused(400, f"{where}.{size.widest_field} is {size.widest:,} wide, at most {MAX_WIDTH:,} per layer")
    if size.parameters > MAX_PARAMETERS:
        raise Refused(400, f"{where} has at least {size.parameters:,} parameters, at most {MAX_PARAMETERS:,}: "
                      "use narrower or fewer layers")
    limit = memory or NO_NODE_MEMORY
    if size.training_bytes > limit:
        whose = "the largest online node's memory" if memory else "the limit while no node is online"
        raise Refused(400, f"{where} needs at least {_gib(size.training_bytes)} to train ({size.parameters:,} "
                      f"parameters with gradients and {optimizer} state in float32), over {whose} "
                      f"({_gib(limit)}): use a smaller model")
    return size


def _memory(nodes: Iterable[Any], largest_memory, device: str | None) -> int | None:
    return largest_node_memory(nodes, device) if largest_memory is None else largest_memory(device)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):,.1f} GiB"
