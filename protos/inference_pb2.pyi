from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorData(_message.Message):
    __slots__ = ("name", "shape", "dtype", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: _common_pb2.DataType
    data: bytes
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[_common_pb2.DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("deployment_id", "inputs")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorData]
    def __init__(self, deployment_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorData, _Mapping]]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("status", "outputs", "latency_ms", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    outputs: _containers.RepeatedCompositeFieldContainer[TensorData]
    latency_ms: float
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., outputs: _Optional[_Iterable[_Union[TensorData, _Mapping]]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("deployment_id",)
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    def __init__(self, deployment_id: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("status", "input_specs", "output_specs", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SPECS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SPECS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    input_specs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TensorInfo]
    output_specs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TensorInfo]
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., input_specs: _Optional[_Iterable[_Union[_common_pb2.TensorInfo, _Mapping]]] = ..., output_specs: _Optional[_Iterable[_Union[_common_pb2.TensorInfo, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...
