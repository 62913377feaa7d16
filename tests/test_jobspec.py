"""The one module of job rules (events/jobspec.py): exact messages, and properties that
tie it to its two callers (central's check_spec and the node's TrainConfig and models)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import JobSpec
from events.jobspec import (
    ACTIVATIONS, BUILTIN_DATASETS, HYPERPARAMETERS, MODEL_TYPES, InvalidDatasetUri, InvalidJobSpec,
    ModelDefinitionError, check_dataset_uri, check_job, normalise_model, parse_hyperparameters,
)

GOOD = dict(dataset_uri="builtin://digits", model_definition='{"type": "mlp"}', hyperparameters={}, epochs=2,
            batch_size=8)


def problem(**fields) -> str:
    with pytest.raises(InvalidJobSpec) as info:
        check_job(**(GOOD | fields))
    assert info.value.code == 400 and info.value.retryable is False
    return str(info.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"dataset_uri": "builtin://nosuch"},
     "dataset_uri 'builtin://nosuch': no built-in data set 'nosuch': choose digits, iris, diabetes"),
    ({"dataset_uri": "builtin://digit"},
     "dataset_uri 'builtin://digit': no built-in data set 'digit': did you mean digits? choose digits, iris, diabetes"),
    ({"dataset_uri": "s3://b/x.csv"},
     "dataset_uri 's3://b/x.csv': scheme 's3' is not supported: use file://, builtin://, synthetic:// or nats://"),
    ({"dataset_uri": ""}, "dataset_uri must not be empty: use builtin://NAME, synthetic://KIND, file:///path or nats://NAME"),
    ({"dataset_uri": "synthetic://classification?rows=5"},
     "dataset_uri 'synthetic://classification?rows=5': unknown parameter 'rows': known are n, features, classes, seed"),
    ({"dataset_uri": "synthetic://regression?n=0"}, "dataset_uri 'synthetic://regression?n=0': n must be at least 1 (got 0)"),
    ({"dataset_uri": "file://data/x.csv"},
     "dataset_uri 'file://data/x.csv': file URIs name a local path: file:///path, not host 'data'"),
    ({"dataset_uri": "nats://x.txt"}, "dataset_uri 'nats://x.txt': unknown file type '.txt': use .csv, .npz, .npy or .h5"),
    ({"model_definition": '{"type": "transformer"}'},
     "model_definition.type 'transformer' is not supported: choose linear, mlp, cnn"),
    ({"model_definition": '{"type": "mlp", "hidden": [64, -1]}'},
     "model_definition.hidden must be a list of positive integers (got [64, -1])"),
    ({"model_definition": '{"type": "cnn", "conv": [{"features": 8, "strides": 2}]}'},
     "model_definition.conv[0] has unknown field 'strides': known are features, kernel, pool, stride"),
    ({"hyperparameters": {"lerning_rate": "5"}},
     "hyperparameters.lerning_rate is not a hyperparameter: did you mean learning_rate? known are optimizer, "
     "learning_rate, weight_decay, momentum, seed, dtype, validation_split, steps_per_chunk, checkpoint_every, "
     "checkpoint_interval_s, label_column, name, devices"),
    ({"hyperparameters": {"learning_rate": "fast"}}, "hyperparameters.learning_rate must be a number > 0 (got 'fast')"),
    ({"hyperparameters": {"learning_rate": "-1"}}, "hyperparameters.learning_rate must be a number > 0 (got '-1')"),
    ({"hyperparameters": {"optimizer": "adagrad"}},
     "hyperparameters.optimizer must be one of adam, adamw or sgd (got 'adagrad')"),
    ({"epochs": 0}, "epochs must be 1..1000000 (got 0)"),
    ({"batch_size": 1 << 30}, "batch_size must be 1..16777216 (got 1073741824)"),
])
def test_each_problem_names_its_field_and_what_to_do(fields, message):
    assert problem(**fields) == message


def test_under_puts_the_callers_prefix_before_the_field():
    with pytest.raises(InvalidDatasetUri) as info:
        check_dataset_uri("builtin://nosuch")
    moved = info.value.under("config")
    assert (moved.field, str(moved), moved.reason) == (
        "config.dataset_uri", "config.dataset_uri 'builtin://nosuch': no built-in data set 'nosuch': choose digits, "
        "iris, diabetes", "no built-in data set 'nosuch': choose digits, iris, diabetes")
    assert isinstance(moved, InvalidDatasetUri)


def test_a_good_job_comes_back_read():
    checked = check_job(**GOOD | {"dataset_uri": "synthetic://regression?n=50&noise=0.5&task=regression",
                                  "hyperparameters": {"dtype": "BF16", "steps_per_chunk": "auto", "seed": "7"}})
    assert checked.hyperparameters == {"dtype": "bfloat16", "steps_per_chunk": None, "seed": 7}
    assert checked.dataset.params == {"n": 50, "features": 20, "targets": 1, "noise": 0.5, "seed": 0}
    assert checked.dataset.task == "regression"
    assert checked.model == {"type": "mlp", "activation": "relu", "dropout": 0.0, "hidden": [128, 64]}
    assert normalise_model("") == checked.model, "an empty definition is the default mlp"


# --- properties ----------------------------------------------------------------------------

names = st.text(st.characters(codec="ascii", categories=("Ll", "Nd"), include_characters="_"), min_size=1, max_size=14)


@given(names)
def test_a_name_is_a_hyperparameter_or_refused_with_the_known_ones(name):
    if name in HYPERPARAMETERS:
        return
    with pytest.raises(InvalidJobSpec) as info:
        parse_hyperparameters({name: "1"})
    assert info.value.field == f"hyperparameters.{name}"
    assert str(info.value).endswith("known are " + ", ".join(HYPERPARAMETERS))


@given(st.sampled_from(sorted(HYPERPARAMETERS)), st.text(max_size=12))
def test_any_text_value_is_read_or_refused_naming_its_field(name, text):
    try:
        value = parse_hyperparameters({name: text})[name]
    except InvalidJobSpec as exc:
        assert exc.field == f"hyperparameters.{name}"
        assert str(exc) == f"hyperparameters.{name} must be {HYPERPARAMETERS[name].expected} (got {text.strip()!r})" \
            or len(repr(text.strip())) > 60
    else:  # what it read passes the typed check again (TrainConfig's path) and reads the same
        from events.jobspec import check_hyperparameter

        assert check_hyperparameter(name, value) == value


model_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(-1, 2) | st.sampled_from(["relu", "mlp", "cnn", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "hidden", "dense", "conv", "activation", "dropout", "bias", "input_shape",
                         "features", "kernel", "stride", "pool", "extra"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"type": st.sampled_from([*MODEL_TYPES, "rnn"])}, optional={
    k: model_values for k in ("hidden", "dense", "conv", "activation", "dropout", "bias", "input_shape", "extra")}))
def test_any_definition_is_normalised_or_refused_and_central_agrees(definition):
    """normalise_model never crashes, its result is a fixed point, and central's
    check_spec refuses exactly the definitions it refuses (one rule, two callers)."""
    from central.adapters.job_limits import check_spec
    from central.lifecycle.errors import Refused

    spec = JobSpec(dataset_uri="builtin://iris", model_definition=json.dumps(definition))
    try:
        model = normalise_model(definition)
    except ModelDefinitionError as exc:
        with pytest.raises(Refused) as info:
            check_spec(spec)
        assert info.value.message == f"spec.{exc}"
        return
    assert normalise_model(model) == model
    try:
        check_spec(spec)
    except Refused as exc:  # only central's size limits may refuse what the grammar allows
        assert "layers, at most" in exc.message or "wide, at most" in exc.message or "parameters" in exc.message


def test_the_node_maps_every_activation_the_rules_allow():
    from node.models import ACTIVATIONS as FUNCTIONS

    assert tuple(FUNCTIONS) == ACTIVATIONS


def test_the_builtin_names_are_the_files_the_node_ships():
    from importlib import resources

    shipped = {p.name.removesuffix(".npz") for p in resources.files("node").joinpath("data").iterdir()
               if p.name.endswith(".npz")}
    assert shipped == set(BUILTIN_DATASETS)


def test_the_module_imports_without_jax():
    code = "import sys, events.jobspec, central.adapters.job_limits; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
