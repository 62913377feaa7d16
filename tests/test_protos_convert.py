"""protos.convert: pure helpers, tested without a server."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protos import common_pb2, job_pb2
from protos.convert import (
    DEFAULT_NODE_PORT,
    JOB_CONFIG_KEYS,
    bearer_metadata,
    bearer_token,
    dict_to_job_config,
    grpc_status,
    job_config_to_dict,
    node_endpoint,
    status_error,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


def _names(enum) -> st.SearchStrategy[str]:
    return st.sampled_from(list(enum.keys()))


job_dicts = st.fixed_dictionaries(
    {
        "job_id": st.text(),
        "job_type": _names(job_pb2.JobType),
        "priority": _names(job_pb2.JobPriority),
        "model_definition": st.text(),
        "hyperparameters": st.dictionaries(st.text(), st.text(), max_size=5),
        "dataset_uri": st.text(),
        "batch_size": INT32,
        "epochs": INT32,
        "required_device": _names(common_pb2.DeviceType),
        "estimated_memory": INT64,
        "estimated_duration": INT64,
        "resume_checkpoint_uri": st.text(),
        "resume_from_epoch": INT32,
        "attempt": INT32,
    }
)


# ---------------------------------------------------------------- JobConfig


@given(job_dicts)
def test_dict_to_job_config_round_trips(data: dict) -> None:
    assert job_config_to_dict(dict_to_job_config(data)) == data


@given(job_dicts)
def test_job_config_round_trips_through_dict_and_bytes(data: dict) -> None:
    config = dict_to_job_config(data)
    wire = job_pb2.JobConfig.FromString(config.SerializeToString())
    assert dict_to_job_config(job_config_to_dict(wire)) == config


def test_keys_cover_every_job_config_field_in_order() -> None:
    assert JOB_CONFIG_KEYS == (
        "job_id", "job_type", "priority", "model_definition", "hyperparameters",
        "dataset_uri", "batch_size", "epochs", "required_device", "estimated_memory",
        "estimated_duration", "resume_checkpoint_uri", "resume_from_epoch", "attempt",
    )


def test_empty_dict_gives_defaults_with_enum_names() -> None:
    assert job_config_to_dict(dict_to_job_config({})) == {
        "job_id": "", "job_type": "JOB_TYPE_UNKNOWN", "priority": "PRIORITY_LOW",
        "model_definition": "", "hyperparameters": {}, "dataset_uri": "",
        "batch_size": 0, "epochs": 0, "required_device": "DEVICE_UNKNOWN",
        "estimated_memory": 0, "estimated_duration": 0, "resume_checkpoint_uri": "",
        "resume_from_epoch": 0, "attempt": 0,
    }


def test_none_means_default() -> None:
    assert dict_to_job_config({"epochs": None, "job_type": None}) == job_pb2.JobConfig()


@pytest.mark.parametrize(
    ("key", "given_value", "expected"),
    [
        ("job_type", "training", job_pb2.JOB_TYPE_TRAINING),
        ("job_type", "TRAINING", job_pb2.JOB_TYPE_TRAINING),
        ("job_type", " job_type_inference ", job_pb2.JOB_TYPE_INFERENCE),
        ("job_type", 3, job_pb2.JOB_TYPE_EVALUATION),
        ("priority", "high", job_pb2.PRIORITY_HIGH),
        ("priority", "PRIORITY_CRITICAL", job_pb2.PRIORITY_CRITICAL),
        ("required_device", "cuda", common_pb2.DEVICE_CUDA),
        ("required_device", "DEVICE_CPU", common_pb2.DEVICE_CPU),
    ],
)
def test_enum_fields_accept_short_names_and_numbers(key, given_value, expected) -> None:
    assert getattr(dict_to_job_config({key: given_value}), key) == expected


def test_unnamed_enum_number_stays_an_int() -> None:
    config = job_pb2.JobConfig.FromString(job_pb2.JobConfig(job_type=42).SerializeToString())
    as_dict = job_config_to_dict(config)
    assert as_dict["job_type"] == 42
    assert dict_to_job_config(as_dict) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"epoch": 3},
            "JobConfig has no field 'epoch'; known: " + ", ".join(JOB_CONFIG_KEYS),
        ),
        ({"epochs": "3"}, "JobConfig.epochs must be an integer (got str '3')"),
        ({"epochs": 2.0}, "JobConfig.epochs must be an integer (got float 2.0)"),
        ({"epochs": True}, "JobConfig.epochs must be an integer (got bool True)"),
        ({"epochs": 2**31}, "JobConfig.epochs: 2147483648 is out of range for int32"),
        (
            {"estimated_memory": 2**63},
            "JobConfig.estimated_memory: 9223372036854775808 is out of range for int64",
        ),
        ({"dataset_uri": 7}, "JobConfig.dataset_uri must be a string (got int 7)"),
        (
            {"job_type": "gpu"},
            "JobConfig.job_type: unknown value 'gpu'; use one of JOB_TYPE_UNKNOWN, "
            "JOB_TYPE_TRAINING, JOB_TYPE_INFERENCE, JOB_TYPE_EVALUATION, "
            "JOB_TYPE_PREPROCESSING",
        ),
        (
            {"required_device": 1.0},
            "JobConfig.required_device: unknown value 1.0; use one of DEVICE_UNKNOWN, "
            "DEVICE_CPU, DEVICE_CUDA, DEVICE_OPENCL, DEVICE_METAL, DEVICE_VULKAN",
        ),
        (
            {"hyperparameters": {"learning_rate": 0.001}},
            "JobConfig.hyperparameters['learning_rate'] must map a string to a string "
            "(got str -> float 0.001); write numbers as text",
        ),
        (
            {"hyperparameters": ["lr"]},
            "JobConfig.hyperparameters must be a mapping of strings (got list)",
        ),
    ],
)
def test_bad_input_names_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        dict_to_job_config(data)
    assert str(info.value) == message


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (404, grpc.StatusCode.NOT_FOUND),
        (409, grpc.StatusCode.FAILED_PRECONDITION),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.INTERNAL),
        (418, grpc.StatusCode.UNKNOWN),
    ],
)
def test_grpc_status_for_http_codes(code: int, status: grpc.StatusCode) -> None:
    assert grpc_status(code) is status


def test_status_error_builds_the_protocol_error() -> None:
    err = status_error(404, "Job 'j1' not found", "ask ListJobs for known ids")
    assert err == common_pb2.Error(
        code=404, message="Job 'j1' not found", details="ask ListJobs for known ids"
    )
    assert status_error(429, "node busy").details == ""


# ---------------------------------------------------------------- auth metadata


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1))
def test_bearer_metadata_round_trips(token: str) -> None:
    assert bearer_token(bearer_metadata(token)) == token


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("Authorization", "bearer  abc "),), "abc"),
        ((("user-agent", "x"), ("authorization", "Bearer t2")), "t2"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "Bearer "),), None),
        ((("authorization-bin", b"Bearer abc"),), None),
        ((), None),
        (None, None),
    ],
)
def test_bearer_token_from_metadata(metadata, token) -> None:
    assert bearer_token(metadata) == token


# ---------------------------------------------------------------- node endpoint


@pytest.mark.parametrize(
    ("ip", "port", "endpoint"),
    [
        ("10.0.0.5", 50060, "10.0.0.5:50060"),
        ("10.0.0.5", 0, f"10.0.0.5:{DEFAULT_NODE_PORT}"),
        ("node-a.local", 7000, "node-a.local:7000"),
        ("::1", 50055, "[::1]:50055"),
        ("[::1]", 0, "[::1]:50054"),
    ],
)
def test_node_endpoint(ip: str, port: int, endpoint: str) -> None:
    assert node_endpoint(ip, port) == endpoint


@pytest.mark.parametrize(
    ("ip", "port", "message"),
    [
        ("", 50054, "node endpoint: ip_address is empty; the node must say where it listens"),
        ("10.0.0.5", 70000, "node endpoint: port must be 0..65535 (got 70000)"),
        ("10.0.0.5", -1, "node endpoint: port must be 0..65535 (got -1)"),
    ],
)
def test_node_endpoint_rejects_nonsense(ip: str, port: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        node_endpoint(ip, port)
    assert str(info.value) == message
