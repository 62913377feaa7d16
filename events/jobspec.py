"""What a job may be: the one set of rules that central checks at submit and the node
checks when it trains. Pure, standard library only (no JAX), so both import it.

    check_job(dataset_uri="builtin://digits", model_definition='{"type": "mlp"}',
              hyperparameters={"learning_rate": "0.01"}, epochs=5, batch_size=32)
    # -> CheckedJob(model={...normalised...}, hyperparameters={"learning_rate": 0.01}, dataset=DatasetRef(...))

Every problem raises ``InvalidJobSpec`` (code 400, not retryable: the same job fails
the same way everywhere), whose message starts with the field it names and says what
to do: ``hyperparameters.lerning_rate is not a hyperparameter: did you mean
learning_rate? ...``. ``ModelDefinitionError`` and ``InvalidDatasetUri`` are its kinds
for the model and the data set. Central puts its own prefix before the field
(``config.`` for a gRPC caller, ``spec.`` for a publisher) with ``under``.

What only the node can know stays on the node: whether a ``file://`` path is under its
data roots and exists, what the data holds, and whether the model fits the data's shape.
"""

from __future__ import annotations

import difflib
import json
import math
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from events.errors import CyxwizError

__all__ = [
    "ACTIVATIONS", "BUILTIN_DATASETS", "DATASET_SCHEMES", "DEFAULT_MODEL", "DTYPES", "HYPERPARAMETERS", "MAX_BATCH", "MAX_EPOCHS",
    "MAX_SEED", "MAX_SYNTHETIC_VALUES", "MODEL_TYPES", "OPTIMIZERS", "SYNTHETIC_KINDS", "TASKS",
    "CheckedJob", "DatasetRef", "InvalidDatasetUri", "InvalidJobSpec", "ModelDefinitionError",
    "check_dataset_uri", "check_hyperparameter", "check_job", "normalise_model", "parse_hyperparameters",
    "parse_model_definition",
]

MAX_EPOCHS = 1_000_000
MAX_BATCH = 1 << 24
DATASET_SCHEMES = ("file", "builtin", "synthetic", "nats")
BUILTIN_DATASETS = ("digits", "iris", "diabetes")  # shipped in node/data
TASKS = ("classification", "regression")
MAX_SYNTHETIC_VALUES = 200_000_000
MAX_SEED = 2**32 - 1  # seeds, of the job and of a synthetic set, are 32 bits
# each synthetic kind's parameters with their defaults, and the least value each may take
SYNTHETIC_KINDS: Mapping[str, Mapping[str, float]] = {
    "classification": {"n": 1000, "features": 20, "classes": 2, "seed": 0},
    "regression": {"n": 1000, "features": 20, "targets": 1, "noise": 0.1, "seed": 0},
}
_SYNTHETIC_MINIMUM = {"n": 1, "features": 1, "classes": 2, "targets": 1, "seed": 0, "noise": 0.0}
_OBJECT_SUFFIXES = (".csv", ".npz", ".npy", ".h5", ".hdf5")

MODEL_TYPES = ("linear", "mlp", "cnn")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu")  # node/models.py maps them to JAX
_MODEL_FIELDS = {
    "linear": {"type"},
    "mlp": {"type", "hidden", "activation", "dropout", "bias"},
    "cnn": {"type", "conv", "dense", "activation", "dropout", "input_shape"},
}
_CONV_FIELDS = ("features", "kernel", "stride", "pool")
_CONV_DEFAULTS = {"features": None, "kernel": 3, "stride": 1, "pool": 1}

OPTIMIZERS = ("adam", "adamw", "sgd")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


# --------------------------------------------------------------------------- errors


class InvalidJobSpec(CyxwizError, ValueError):
    """A job that no node can run as given; ``field`` names what is wrong (``epochs``,
    ``hyperparameters.learning_rate``, ``model_definition.hidden``), ``problem`` what."""

    code = 400
    retryable = False

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem

    def under(self, prefix: str) -> "InvalidJobSpec":
        """The same error with its field under ``prefix`` (``config`` -> ``config.epochs``)."""
        return type(self)(f"{prefix}.{self.field}" if prefix else self.field, self.problem)


class ModelDefinitionError(InvalidJobSpec):
    """A ``model_definition`` that cannot be built."""


class InvalidDatasetUri(InvalidJobSpec):
    """A ``dataset_uri`` no node can load; ``reason`` is the problem without the URI."""

    def __init__(self, field: str, problem: str, *, uri: str = "", reason: str = "") -> None:
        super().__init__(field, problem)
        self.uri = uri
        self.reason = reason or problem

    def under(self, prefix: str) -> "InvalidDatasetUri":
        return InvalidDatasetUri(f"{prefix}.{self.field}" if prefix else self.field, self.problem,
                                 uri=self.uri, reason=self.reason)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the whole job


@dataclass(frozen=True)
class CheckedJob:
    """A job that passed every rule: its parts as the node uses them."""

    model: dict[str, Any]
    hyperparameters: dict[str, Any]
    dataset: "DatasetRef"


def check_job(*, dataset_uri: str, model_definition: str | Mapping[str, Any],
              hyperparameters: Mapping[str, str], epochs: int, batch_size: int) -> CheckedJob:
    """Every rule a job must pass wherever it is checked; raises ``InvalidJobSpec``."""
    _check_count("epochs", epochs, MAX_EPOCHS)
    _check_count("batch_size", batch_size, MAX_BATCH)
    dataset = check_dataset_uri(dataset_uri)
    model = normalise_model(model_definition)
    hyper = parse_hyperparameters(hyperparameters)
    return CheckedJob(model=model, hyperparameters=hyper, dataset=dataset)


def _check_count(name: str, value: Any, limit: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
        raise InvalidJobSpec(name, f"must be 1..{limit} (got {_short(value)})")


# --------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class DatasetRef:
    """A data set URI taken apart: ``name`` is host and path joined (``digits``,
    ``classification``, ``x.csv``); ``query`` the parameters other than ``task``;
    ``params`` a synthetic set's parameters with their defaults."""

    uri: str
    scheme: str
    name: str
    netloc: str = ""
    path: str = ""
    task: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, float] = field(default_factory=dict)


def check_dataset_uri(uri: str) -> DatasetRef:
    """The URI taken apart, or ``InvalidDatasetUri`` naming what no node could load."""

    def bad(reason: str) -> InvalidDatasetUri:
        return InvalidDatasetUri("dataset_uri", f"{_short(uri, 80)}: {reason}", uri=uri, reason=reason)

    if not isinstance(uri, str) or not uri.strip():
        raise InvalidDatasetUri("dataset_uri", "must not be empty: use builtin://NAME, synthetic://KIND, "
                                "file:///path or nats://NAME", uri=str(uri), reason="the URI is empty")
    if len(uri) > 65536:
        raise bad("the URI is longer than 65536 characters")
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as exc:
        raise bad(f"not a URI ({exc})") from None
    if parts.scheme not in DATASET_SCHEMES or "://" not in uri:
        raise bad(f"scheme {parts.scheme!r} is not supported: use file://, builtin://, synthetic:// or nats://")
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key in query:
            raise bad(f"query parameter {key!r} is given twice")
        query[key] = value
    task = query.pop("task", None)
    if task not in (None, *TASKS):
        raise bad(f"task {task!r} is not supported: choose classification or regression")
    name = parts.netloc + parts.path
    ref = DatasetRef(uri=uri, scheme=parts.scheme, name=name, netloc=parts.netloc, path=parts.path, task=task,
                     query=query)
    if parts.scheme == "builtin":
        if name not in BUILTIN_DATASETS:
            suggestion = _did_you_mean(name, BUILTIN_DATASETS)
            raise bad(f"no built-in data set {name!r}: {suggestion}choose {', '.join(BUILTIN_DATASETS)}")
        if query:
            raise bad(f"unknown query parameter {sorted(query)[0]!r}: only task is allowed")
    elif parts.scheme == "synthetic":
        return DatasetRef(uri=uri, scheme=parts.scheme, name=name, netloc=parts.netloc, path=parts.path, task=task,
                          query=query, params=_synthetic(name, query, bad))
    elif parts.scheme == "file":
        if query:
            raise bad(f"unknown query parameter {sorted(query)[0]!r}: only task is allowed")
        if parts.netloc not in ("", "localhost"):
            raise bad(f"file URIs name a local path: file:///path, not host {parts.netloc!r}")
        raw = urllib.parse.unquote(parts.path)
        if not raw.startswith("/"):
            raise bad("the path must be absolute: file:///path/to/data")
        if ".." in PurePosixPath(raw).parts:
            raise bad("'..' is not allowed in data paths; use a path under the node's data roots")
    else:  # nats
        if query:
            raise bad(f"unknown query parameter {sorted(query)[0]!r}: only task is allowed")
        if not name:
            raise bad("no object name: use nats://NAME.csv (or .npz, NAME_x.npy, .h5)")
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in _OBJECT_SUFFIXES:
            raise bad(f"unknown file type {suffix or name!r}: use .csv, .npz, .npy or .h5")
        stem = PurePosixPath(name).stem
        if suffix == ".npy" and not (stem == "x" or stem.endswith("_x")):
            raise bad(f"a .npy URI must name the features file NAME_x.npy (or x.npy), got {PurePosixPath(name).name}")
    return ref


def _synthetic(kind: str, query: Mapping[str, str], bad: Callable[[str], InvalidDatasetUri]) -> dict[str, float]:
    if kind not in SYNTHETIC_KINDS:
        raise bad(f"unknown synthetic data set {kind!r}: choose classification or regression")
    params: dict[str, float] = dict(SYNTHETIC_KINDS[kind])
    for key, text in query.items():
        if key not in params:
            raise bad(f"unknown parameter {key!r}: {_did_you_mean(key, tuple(params))}known are {', '.join(params)}")
        try:
            value = float(text) if key == "noise" else int(text)
        except ValueError:
            raise bad(f"{key} must be a number (got {text!r})") from None
        if key == "noise" and not math.isfinite(value):
            raise bad(f"noise must be a finite number (got {text!r})")
        params[key] = value
    for key, low in _SYNTHETIC_MINIMUM.items():
        if key in params and params[key] < low:
            raise bad(f"{key} must be at least {low} (got {params[key]:g})")
    if params["seed"] > MAX_SEED:
        raise bad(f"seed must be at most {MAX_SEED} (got {params['seed']:g})")
    if params["n"] * params["features"] > MAX_SYNTHETIC_VALUES:
        raise bad(f"n * features = {int(params['n'] * params['features'])} is over the limit of {MAX_SYNTHETIC_VALUES}")
    return params


# --------------------------------------------------------------------------- models


DEFAULT_MODEL = {"type": "mlp"}  # what an empty model_definition means (JobSpec's default is "")


def parse_model_definition(text: str | Mapping[str, Any]) -> dict[str, Any]:
    """The job's ``model_definition`` (JSON text, or an already parsed object) as a dict;
    empty text is ``DEFAULT_MODEL``."""
    if isinstance(text, Mapping):
        return dict(text)
    if not isinstance(text, str):
        raise ModelDefinitionError("model_definition", f"must be JSON text (got {type(text).__name__})")
    if not text.strip():
        return dict(DEFAULT_MODEL)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ModelDefinitionError("model_definition", f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ModelDefinitionError("model_definition", f"must be a JSON object (got {type(value).__name__})")
    return value


def normalise_model(definition: str | Mapping[str, Any]) -> dict[str, Any]:
    """Check a model definition's fields and values and fill in the defaults; raises
    ``ModelDefinitionError`` naming the field (whether it fits the data is the node's)."""
    spec = parse_model_definition(definition)
    kind = spec.get("type")
    if kind not in _MODEL_FIELDS:
        hint = _did_you_mean(kind, MODEL_TYPES) if isinstance(kind, str) else ""
        raise ModelDefinitionError("model_definition.type", f"{_short(kind)} is not supported: {hint}choose "
                                   f"{', '.join(MODEL_TYPES)}")
    unknown = sorted(set(spec) - _MODEL_FIELDS[kind])
    if unknown:
        hint = _did_you_mean(unknown[0], tuple(_MODEL_FIELDS[kind]))
        raise ModelDefinitionError("model_definition", f"has unknown field {unknown[0]!r} for type {kind}: {hint}"
                                   f"known are {', '.join(sorted(_MODEL_FIELDS[kind]))}")
    out: dict[str, Any] = {"type": kind}
    if kind == "linear":
        return out
    activation = spec.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise ModelDefinitionError("model_definition.activation",
                                   f"{_short(activation)} is not supported: choose {', '.join(ACTIVATIONS)}")
    out["activation"] = activation
    dropout = spec.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ModelDefinitionError("model_definition.dropout", f"must be a number in [0, 1) (got {_short(dropout)})")
    out["dropout"] = float(dropout)
    if "bias" in spec:
        if not isinstance(spec["bias"], bool):
            raise ModelDefinitionError("model_definition.bias", f"must be true or false (got {_short(spec['bias'])})")
        if not spec["bias"]:
            out["bias"] = False  # the default (true) is left out, so definitions without it stay as they were
    widths_field = "hidden" if kind == "mlp" else "dense"
    out[widths_field] = _positive_ints(spec.get(widths_field, [128, 64] if kind == "mlp" else [64]), widths_field)
    if kind == "cnn":
        convs = spec.get("conv", [{"features": 16, "kernel": 3}])
        if not isinstance(convs, list) or not convs:
            raise ModelDefinitionError("model_definition.conv", f"must be a non-empty list of layers (got {_short(convs)})")
        out["conv"] = [_conv(c, i) for i, c in enumerate(convs)]
        if spec.get("input_shape") is not None:
            shape = _positive_ints(spec["input_shape"], "input_shape")
            if len(shape) not in (2, 3):
                raise ModelDefinitionError("model_definition.input_shape",
                                           f"{shape} must be [height, width] or [height, width, channels]")
            out["input_shape"] = shape
    return out


def _positive_ints(value: Any, name: str) -> list[int]:
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise ModelDefinitionError(f"model_definition.{name}", f"must be a list of positive integers (got {_short(value)})")
    return list(value)


def _conv(layer: Any, i: int) -> dict[str, int]:
    where = f"model_definition.conv[{i}]"
    if not isinstance(layer, Mapping):
        raise ModelDefinitionError(where, f'must be an object like {{"features": 16, "kernel": 3}} (got {_short(layer)})')
    unknown = sorted(set(layer) - set(_CONV_FIELDS))
    if unknown:
        raise ModelDefinitionError(where, f"has unknown field {unknown[0]!r}: known are {', '.join(sorted(_CONV_FIELDS))}")
    out = {}
    for name, default in _CONV_DEFAULTS.items():
        value = layer.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelDefinitionError(f"{where}.{name}", f"must be a positive integer (got {_short(value)})")
        out[name] = value
    return out


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class _Rule:
    kind: type  # int, float or str: what the text is read as
    check: Callable[[Any], bool]
    expected: str  # "a number > 0": what the message says a value must be
    choices: Mapping[str, str] | None = None  # str values: what each accepted word means
    auto: bool = False  # "auto" is allowed and means None


def _real(low: float, high: float = math.inf, *, open_low: bool = False, open_high: bool = True):
    def check(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    return check


def _integer(low: int, high: int | None = None):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


HYPERPARAMETERS: Mapping[str, _Rule] = {
    "optimizer": _Rule(str, lambda v: v in OPTIMIZERS, "one of adam, adamw or sgd", {o: o for o in OPTIMIZERS}),
    "learning_rate": _Rule(float, _real(0, open_low=True), "a number > 0"),
    "weight_decay": _Rule(float, _real(0), "a number >= 0"),
    "momentum": _Rule(float, _real(0, 1), "a number in [0, 1)"),
    "seed": _Rule(int, _integer(0, MAX_SEED), f"an integer in [0, {MAX_SEED}]"),
    "dtype": _Rule(str, lambda v: v in DTYPES, "float32 or bfloat16", DTYPES),
    "validation_split": _Rule(float, _real(0, 1), "a number in [0, 1)"),
    "steps_per_chunk": _Rule(int, _integer(1), "an integer >= 1 or auto", auto=True),
    "checkpoint_every": _Rule(int, _integer(0), "an integer >= 0"),
    "checkpoint_interval_s": _Rule(float, _real(0), "a number of seconds >= 0"),
    "label_column": _Rule(str, lambda v: isinstance(v, str) and 0 < len(v) <= 256, "a CSV column name or index"),
    "name": _Rule(str, lambda v: isinstance(v, str) and len(v) <= 256, "text of at most 256 characters"),
}


def parse_hyperparameters(values: Mapping[str, str]) -> dict[str, Any]:
    """The job's hyperparameters (text, as in the protocol) read and checked: known
    names only, each value of its type and range (``steps_per_chunk`` "auto" is None)."""
    out: dict[str, Any] = {}
    for name, raw in values.items():
        rule = HYPERPARAMETERS.get(name)
        if rule is None:
            raise InvalidJobSpec(f"hyperparameters.{name}", f"is not a hyperparameter: {_did_you_mean(name, tuple(HYPERPARAMETERS))}"
                                 f"known are {', '.join(HYPERPARAMETERS)}")
        text = str(raw).strip()
        if rule.auto and text.lower() == "auto":
            out[name] = None
            continue
        if rule.kind is str:
            value: Any = text.lower() if rule.choices is not None else text
        else:
            try:
                value = rule.kind(text)
            except ValueError:
                raise InvalidJobSpec(f"hyperparameters.{name}", f"must be {rule.expected} (got {_short(text)})") from None
        try:
            out[name] = check_hyperparameter(name, value)
        except InvalidJobSpec:  # say the text it was given, not what it was read as
            raise InvalidJobSpec(f"hyperparameters.{name}", f"must be {rule.expected} (got {_short(text)})") from None
    return out


def check_hyperparameter(name: str, value: Any) -> Any:
    """``value`` if hyperparameter ``name`` may take it (a word in its canonical form,
    ``bf16`` -> ``bfloat16``), else ``InvalidJobSpec``."""
    rule = HYPERPARAMETERS[name]
    if rule.auto and value is None:
        return None
    if not rule.check(value):
        raise InvalidJobSpec(f"hyperparameters.{name}", f"must be {rule.expected} (got {_short(value)})")
    return rule.choices[value] if rule.choices is not None else value


def _did_you_mean(word: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""
