"""The model size estimator against node/models.py's real models, and the submit check."""

from __future__ import annotations

import json
import math

import jax
import pytest
from hypothesis import given, settings, strategies as st

from central.adapters.job_limits import (
    MAX_LAYERS, MAX_PARAMETERS, MAX_WIDTH, NO_NODE_MEMORY, check_model_size, check_spec, largest_node_memory,
)
from central.lifecycle.errors import Refused
from events import Device, JobSpec
from events.model_size import estimate
from node.models import build_model

widths = st.lists(st.integers(1, 48), max_size=4)


@st.composite
def definitions(draw):
    """(definition, sample_shape, outputs) that node/models.py builds."""
    outputs = draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["linear", "mlp", "mlp-default", "cnn"]))
    if kind == "linear":
        return {"type": "linear"}, (draw(st.integers(1, 40)),), outputs
    if kind == "mlp-default":
        return {"type": "mlp"}, (draw(st.integers(1, 40)),), outputs
    if kind == "mlp":
        return {"type": "mlp", "hidden": draw(widths)}, (draw(st.integers(1, 40)),), outputs
    h, w, c = draw(st.integers(4, 12)), draw(st.integers(4, 12)), draw(st.integers(1, 3))
    convs, size = [], min(h, w)
    for _ in range(draw(st.integers(1, 3))):
        stride, pool = draw(st.integers(1, 2)), 1
        size = -(-size // stride)
        if size >= 2 and draw(st.booleans()):
            pool = 2
        size //= pool
        convs.append({"features": draw(st.integers(1, 8)), "kernel": draw(st.integers(1, 3)),
                      "stride": stride, "pool": pool})
    definition = {"type": "cnn", "conv": convs, "dense": draw(widths)}
    if draw(st.booleans()):
        return {**definition, "input_shape": [h, w, c]}, (h * w * c,), outputs
    return definition, (h, w, c), outputs


def real_parameter_count(definition, sample_shape, outputs) -> int:
    model = build_model(definition, sample_shape=sample_shape, output_dim=outputs)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


@settings(max_examples=60, deadline=None)
@given(definitions())
def test_the_estimate_is_the_real_parameter_count(case):
    definition, sample_shape, outputs = case
    size = estimate(json.dumps(definition), sample_shape=sample_shape, outputs=outputs)
    assert size.parameters == real_parameter_count(definition, sample_shape, outputs)


@settings(max_examples=60, deadline=None)
@given(definitions())
def test_without_the_data_shape_it_is_a_lower_bound(case):
    definition, sample_shape, outputs = case
    assert estimate(definition).parameters <= estimate(definition, sample_shape=sample_shape, outputs=outputs).parameters


@given(widths.filter(bool), st.data())
def test_the_estimate_grows_with_every_width(hidden, data):
    i = data.draw(st.integers(0, len(hidden) - 1))
    wider = [*hidden[:i], hidden[i] + data.draw(st.integers(1, 100)), *hidden[i + 1:]]
    features = data.draw(st.integers(1, 50))
    small = estimate({"type": "mlp", "hidden": hidden}, sample_shape=(features,))
    big = estimate({"type": "mlp", "hidden": wider}, sample_shape=(features,))
    assert big.parameters > small.parameters and big.training_bytes > small.training_bytes
    deeper = estimate({"type": "mlp", "hidden": [*hidden, 1]}, sample_shape=(features,))
    assert deeper.layers == small.layers + 1


@pytest.mark.parametrize("optimizer, factor", [("adam", 4), ("adamw", 4), ("sgd", 3)])
def test_training_memory_counts_parameters_gradients_and_optimizer_state(optimizer, factor):
    size = estimate({"type": "linear"}, sample_shape=(9,), outputs=1, optimizer=optimizer)
    assert size.parameters == 10 and size.training_bytes == 10 * 4 * factor


def refusal(definition, **kw) -> str:
    with pytest.raises(Refused) as info:
        check_model_size(json.dumps(definition), where="config.model_definition", **kw)
    assert info.value.code == 400
    return info.value.message


def test_a_huge_layer_is_refused_naming_the_field_the_size_and_the_limit():
    assert refusal({"type": "mlp", "hidden": [100_000_000]}) == (
        f"config.model_definition.hidden[0] is 100,000,000 wide, at most {MAX_WIDTH:,} per layer")


def test_ten_thousand_layers_are_refused():
    assert refusal({"type": "mlp", "hidden": [4] * 10_000}) == (
        f"config.model_definition has 10,001 layers, at most {MAX_LAYERS}: use fewer layers")


def test_too_many_parameters_are_refused():
    message = refusal({"type": "mlp", "hidden": [60_000, 60_000]})
    assert message.startswith("config.model_definition has at least 3,600,240,001 parameters")
    assert message.endswith(f"at most {MAX_PARAMETERS:,}: use narrower or fewer layers")


def test_memory_is_checked_against_the_largest_node_or_a_cap():
    definition = {"type": "mlp", "hidden": [20_000, 20_000]}  # 400 M parameters: 6 GiB with adam
    message = refusal(definition, memory=4 << 30)
    assert message == ("config.model_definition needs at least 6.0 GiB to train (400,080,001 parameters with "
                       "gradients and adam state in float32), over the largest online node's memory (4.0 GiB): "
                       "use a smaller model")
    assert check_model_size(json.dumps(definition), memory=8 << 30).parameters == 400_080_001
    assert check_model_size(json.dumps(definition), memory=None).training_bytes < NO_NODE_MEMORY


def test_a_malformed_size_field_is_refused_naming_it():
    assert refusal({"type": "mlp", "hidden": "wide"}) == (
        "config.model_definition.hidden must be a list of positive integers (got 'wide')")
    assert refusal({"type": "rnn"}).startswith("config.model_definition.type 'rnn' is not supported")


class _Node:
    def __init__(self, devices, ram):
        self.devices, self.ram_bytes = tuple(devices), ram


def test_the_largest_node_memory_is_its_accelerator_or_its_ram():
    gpu = _Node([Device(type="cpu", memory_bytes=64 << 30), Device(type="cuda", memory_bytes=24 << 30)], 64 << 30)
    cpu = _Node([Device(type="cpu", memory_bytes=32 << 30)], 32 << 30)
    assert largest_node_memory([gpu, cpu]) == 32 << 30
    assert largest_node_memory([gpu, cpu], "cuda") == 24 << 30
    assert largest_node_memory([gpu]) == 24 << 30
    assert largest_node_memory([]) is None and largest_node_memory([_Node([], 0)]) is None


@pytest.mark.parametrize("spec, message", [
    (JobSpec(dataset_uri="ftp://x"), "spec.dataset_uri 'ftp://x': scheme 'ftp' is not supported"),
    (JobSpec(dataset_uri="builtin://iris", epochs=-1), "spec.epochs must be 1..1000000 (got -1)"),
    (JobSpec(dataset_uri="builtin://iris", name="n" * 300), "spec.name is too long (300 characters, at most 256)"),
    (JobSpec(dataset_uri="builtin://iris", model_definition='{"type": "mlp", "hidden": [100000000]}'),
     "spec.model_definition.hidden[0] is 100,000,000 wide"),
    (JobSpec(dataset_uri="builtin://iris", priority=7), "spec.priority 7 is unknown"),
])
def test_check_spec_refuses_what_no_node_can_run(spec, message):
    with pytest.raises(Refused) as info:
        check_spec(spec)
    assert info.value.message.startswith(message)


def test_check_spec_passes_a_normal_job():
    spec = JobSpec(dataset_uri="builtin://digits", model_definition='{"type": "mlp", "hidden": [256, 128]}')
    assert check_spec(spec, nodes=[_Node([Device(type="cpu", memory_bytes=1 << 30)], 1 << 30)]) is spec
