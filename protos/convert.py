"""Pure helpers for the protocol's edges: errors, status codes, auth metadata,
node endpoints, and JobConfig <-> plain dict. No I/O, no state.

A plain job dict has the keys of ``JOB_CONFIG_KEYS``. Enum fields are names
(``"JOB_TYPE_TRAINING"``, ``"PRIORITY_NORMAL"``, ``"DEVICE_CUDA"``); on the way in,
short and lower-case forms (``"training"``, ``"cuda"``) and enum numbers are accepted
too. Bad input raises ``ValueError`` with a message that names the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor

from events.errors import CODES
from protos import common_pb2, job_pb2

# ---------------------------------------------------------------- errors

HTTP_TO_GRPC: Mapping[int, grpc.StatusCode] = MappingProxyType(
    {code: grpc.StatusCode[answer.grpc] for code, answer in CODES.items()}  # the one table: events.errors
)


def grpc_status(code: int) -> grpc.StatusCode:
    """The gRPC status that goes with an HTTP-style ``Error.code`` (``events.errors.CODES``);
    UNKNOWN for a code the table does not list."""
    return HTTP_TO_GRPC.get(code, grpc.StatusCode.UNKNOWN)


def status_error(code: int, message: str, details: str = "") -> common_pb2.Error:
    """The protocol's ``Error`` message."""
    return common_pb2.Error(code=code, message=message, details=details)


# ---------------------------------------------------------------- auth metadata

AUTH_METADATA_KEY = "authorization"
_BEARER = "bearer "


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` as ``authorization: Bearer <token>``."""
    return ((AUTH_METADATA_KEY, f"Bearer {token}"),)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token in gRPC metadata, or None when there is none."""
    for key, value in metadata or ():
        if key.lower() != AUTH_METADATA_KEY or not isinstance(value, str):
            continue
        if value[: len(_BEARER)].lower() == _BEARER and value[len(_BEARER) :].strip():
            return value[len(_BEARER) :].strip()
    return None


# ---------------------------------------------------------------- node endpoint

DEFAULT_NODE_PORT = 50054


class EndpointError(ValueError):
    """A node endpoint that cannot be used; ``field`` names the NodeInfo field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def node_endpoint(ip_address: str, port: int) -> str:
    """The ``host:port`` target of a node's NodeService, as NodeInfo names it.

    Port 0 means the default, 50054. IPv6 addresses get brackets.
    """
    host = ip_address.strip()
    if not host:
        raise EndpointError("ip_address", "node endpoint: ip_address is empty; the node must say where it listens")
    if not 0 <= port <= 65535:
        raise EndpointError("port", f"node endpoint: port must be 0..65535 (got {port})")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port or DEFAULT_NODE_PORT}"


# ---------------------------------------------------------------- JobConfig

_ENUMS = {
    "job_type": (job_pb2.JobType, "JOB_TYPE_"),
    "priority": (job_pb2.JobPriority, "PRIORITY_"),
    "required_device": (common_pb2.DeviceType, "DEVICE_"),
}
_INT64_TYPES = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
_STRINGS = ("job_id", "model_definition", "dataset_uri", "resume_checkpoint_uri")
# In declaration order: the public fields, then ours (numbered above 100).
JOB_CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in job_pb2.JobConfig.DESCRIPTOR.fields)


def job_config_to_dict(config: job_pb2.JobConfig) -> dict[str, Any]:
    """A JobConfig as a plain dict with every key of ``JOB_CONFIG_KEYS``.

    An enum number that the enum does not name (from a newer peer) stays an int.
    """
    out: dict[str, Any] = {}
    for key in JOB_CONFIG_KEYS:
        value = getattr(config, key)
        if key in _ENUMS:
            enum = _ENUMS[key][0]
            value = enum.Name(value) if value in enum.values() else value
        elif key == "hyperparameters":
            value = dict(value)
        out[key] = value
    return out


def dict_to_job_config(data: Mapping[str, Any]) -> job_pb2.JobConfig:
    """A JobConfig from a plain dict; missing keys and None values take the defaults."""
    unknown = sorted(set(data) - set(JOB_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"JobConfig has no field {unknown[0]!r}; known: {', '.join(JOB_CONFIG_KEYS)}"
        )
    config = job_pb2.JobConfig()
    for key, value in data.items():
        if value is None:
            continue
        if key == "hyperparameters":
            config.hyperparameters.update(_hyperparameters(value))
        elif key in _STRINGS:
            setattr(config, key, _string(key, value))
        else:
            _set_int(config, key, _enum_value(key, value) if key in _ENUMS else value)
    return config


def _enum_value(key: str, value: Any) -> int:
    enum, prefix = _ENUMS[key]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        for candidate in (name, prefix + name):
            if candidate in enum.keys():
                return enum.Value(candidate)
    raise ValueError(
        f"JobConfig.{key}: unknown value {value!r}; use one of {', '.join(enum.keys())}"
    )


def _hyperparameters(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(
            "JobConfig.hyperparameters must be a mapping of strings "
            f"(got {type(value).__name__})"
        )
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(
                f"JobConfig.hyperparameters[{k!r}] must map a string to a string "
                f"(got {type(k).__name__} -> {type(v).__name__} {v!r}); write numbers as text"
            )
    return dict(value)


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"JobConfig.{key} must be a string (got {type(value).__name__} {value!r})"
        )
    return value


def _set_int(config: job_pb2.JobConfig, key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(
            f"JobConfig.{key} must be an integer (got {type(value).__name__} {value!r})"
        )
    try:
        setattr(config, key, value)
    except ValueError as exc:
        bits = 64 if config.DESCRIPTOR.fields_by_name[key].cpp_type in _INT64_TYPES else 32
        raise ValueError(f"JobConfig.{key}: {value} is out of range for int{bits}") from exc
