"""ModelInfer's own request parser (node.serving.oip_wire) against protobuf's, and the
predictor's aligned staging of large CPU inputs."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import checkpoint
from node.models import build_model
from node.serving import source
from node.serving.oip_wire import InferRequest, parse_infer_request
from node.serving.runner import CPU_ALIGN, Predictor
from protos import open_inference_pb2 as pb


def _protobuf(data: bytes) -> tuple[pb.ModelInferRequest, list[bytes]]:
    message = pb.ModelInferRequest.FromString(data)
    raw = list(message.raw_input_contents)
    message.ClearField("raw_input_contents")
    return message, raw


def _same_as_protobuf(data: bytes) -> InferRequest:
    got = parse_infer_request(data)
    message, raw = _protobuf(data)
    assert got.message == message
    assert [bytes(r) for r in got.raw] == raw
    return got


def test_raw_contents_are_views_of_the_received_bytes_and_the_rest_is_parsed():
    x = np.arange(2 * 4096, dtype="<f4").reshape(2, 4096)
    request = pb.ModelInferRequest(
        model_name="dep-1", model_version="1", id="r7",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="output")],
        raw_input_contents=[x.tobytes(), b"second"],
    )
    request.parameters["priority"].int64_param = 3
    data = request.SerializeToString()
    got = _same_as_protobuf(data)
    assert all(isinstance(r, memoryview) and r.obj is data for r in got.raw)  # no copy of the tensor
    assert np.array_equal(np.frombuffer(got.raw[0], "<f4").reshape(2, 4096), x)
    assert got.message.id == "r7" and got.message.parameters["priority"].int64_param == 3


def test_fields_in_any_order_and_repeated_scalars_merge_as_protobuf_merges():
    parts = [
        pb.ModelInferRequest(raw_input_contents=[b"a" * 100]),
        pb.ModelInferRequest(model_name="first"),
        pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(name="input", shape=[1, 25])]),
        pb.ModelInferRequest(raw_input_contents=[b""]),
        pb.ModelInferRequest(model_name="last wins", id="x"),
    ]
    got = _same_as_protobuf(b"".join(p.SerializeToString() for p in parts))
    assert got.message.model_name == "last wins" and [bytes(r) for r in got.raw] == [b"a" * 100, b""]


@pytest.mark.parametrize("data", [
    b"\x3a\x05abc",  # raw_input_contents longer than the message
    b"\x38\x01",  # field 7 as a varint: protobuf refuses it
    b"\x0a",  # a tag without its length
    b"\x00\x01",  # field number 0
    b"\xff" * 11,  # a varint past 64 bits
    b"\x0b\x0c",  # a group (unknown field 1 as a group): protobuf decides
])
def test_malformed_or_unusual_bytes_get_protobufs_answer(data):
    _answers_as_protobuf(data)


def _answers_as_protobuf(data: bytes) -> None:
    """``parse_infer_request`` refuses what protobuf refuses and parses the rest alike."""
    try:
        expected = _protobuf(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            parse_infer_request(data)
        return
    got = parse_infer_request(data)
    assert (got.message, [bytes(r) for r in got.raw]) == expected


_tensor = st.builds(
    pb.ModelInferRequest.InferInputTensor, name=st.text(max_size=8), datatype=st.sampled_from(["FP32", "INT8", ""]),
    shape=st.lists(st.integers(-2, 1 << 40), max_size=4),
)
_part = st.one_of(
    st.builds(pb.ModelInferRequest, model_name=st.text(max_size=12)),
    st.builds(pb.ModelInferRequest, model_version=st.text(max_size=4), id=st.text(max_size=12)),
    st.builds(pb.ModelInferRequest, inputs=st.lists(_tensor, max_size=2)),
    st.builds(pb.ModelInferRequest, raw_input_contents=st.lists(st.binary(max_size=300), max_size=3)),
    st.builds(pb.ModelInferRequest, outputs=st.lists(
        st.builds(pb.ModelInferRequest.InferRequestedOutputTensor, name=st.text(max_size=6)), max_size=2)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_part, max_size=8))
def test_any_concatenation_of_fields_parses_as_protobuf_parses_it(parts):
    _same_as_protobuf(b"".join(p.SerializeToString() for p in parts))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_fail_exactly_as_protobuf(data):
    _answers_as_protobuf(data)


@pytest.fixture(scope="module")
def wide_predictor(tmp_path_factory):
    model = build_model({"type": "mlp", "hidden": [8], "activation": "relu", "dropout": 0.0},
                        sample_shape=(4096,), output_dim=3)
    meta = {"kind": "model", "model_definition": model.definition, "sample_shape": [4096], "output_dim": 3,
            "task": "regression", "class_names": [], "epochs": 0}
    data = checkpoint.to_bytes(model.init(jax.random.PRNGKey(0)), meta)
    path = tmp_path_factory.mktemp("wide") / "wide.cyx"
    path.write_bytes(data)
    loaded = source.load(data, source.ModelSource("m", "file://" + str(path), None))
    return Predictor(loaded, max_batch=8)


def test_a_misaligned_large_input_predicts_what_an_aligned_one_does(wide_predictor):
    x = np.random.default_rng(0).standard_normal((8, 4096), dtype=np.float32)
    raw = b"\x00" * 4 + x.tobytes()  # a request's bytes: anywhere in the message
    view = np.frombuffer(memoryview(raw)[4:], "<f4").reshape(8, 4096)
    assert view.ctypes.data % CPU_ALIGN
    expected = wide_predictor(x.copy())
    for _ in range(2):  # the second run reuses the staging buffer
        assert np.allclose(wide_predictor(view), expected, atol=1e-5)
    five = wide_predictor(view[:5])  # padded to a compiled size
    assert five.shape == (5, 3) and np.allclose(five, expected[:5], atol=1e-5)


def test_the_deserializer_walks_only_large_requests():
    from node.serving.oip_wire import WALK_FROM_BYTES, InferRequestParser

    small = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"x" * 100]).SerializeToString()
    large = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"x" * WALK_FROM_BYTES]).SerializeToString()
    assert type(InferRequestParser().FromString(small)) is pb.ModelInferRequest
    got = InferRequestParser().FromString(large)
    assert type(got) is InferRequest and got.message.model_name == "m" and len(got.raw[0]) == WALK_FROM_BYTES
