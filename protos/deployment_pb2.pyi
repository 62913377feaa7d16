from protos import common_pb2 as _common_pb2
from protos import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNKNOWN: _ClassVar[ModelFormat]
    MODEL_FORMAT_ONNX: _ClassVar[ModelFormat]
    MODEL_FORMAT_GGUF: _ClassVar[ModelFormat]
    MODEL_FORMAT_PYTORCH: _ClassVar[ModelFormat]
    MODEL_FORMAT_TENSORFLOW: _ClassVar[ModelFormat]
    MODEL_FORMAT_SAFETENSORS: _ClassVar[ModelFormat]
    MODEL_FORMAT_TFLITE: _ClassVar[ModelFormat]
    MODEL_FORMAT_TORCHSCRIPT: _ClassVar[ModelFormat]

class DeploymentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_TYPE_UNKNOWN: _ClassVar[DeploymentType]
    DEPLOYMENT_TYPE_LOCAL: _ClassVar[DeploymentType]
    DEPLOYMENT_TYPE_NETWORK: _ClassVar[DeploymentType]

class DeploymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATUS_UNKNOWN: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_PENDING: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_PROVISIONING: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_LOADING: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_READY: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_RUNNING: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_STOPPED: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_FAILED: _ClassVar[DeploymentStatus]
    DEPLOYMENT_STATUS_TERMINATED: _ClassVar[DeploymentStatus]

class TerminalSessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINAL_SESSION_UNKNOWN: _ClassVar[TerminalSessionStatus]
    TERMINAL_SESSION_ACTIVE: _ClassVar[TerminalSessionStatus]
    TERMINAL_SESSION_CLOSED: _ClassVar[TerminalSessionStatus]
    TERMINAL_SESSION_ERROR: _ClassVar[TerminalSessionStatus]

class ModelSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_SOURCE_UNKNOWN: _ClassVar[ModelSource]
    MODEL_SOURCE_LOCAL: _ClassVar[ModelSource]
    MODEL_SOURCE_HUGGINGFACE: _ClassVar[ModelSource]
    MODEL_SOURCE_CYXWIZ_HUB: _ClassVar[ModelSource]
    MODEL_SOURCE_URL: _ClassVar[ModelSource]
MODEL_FORMAT_UNKNOWN: ModelFormat
MODEL_FORMAT_ONNX: ModelFormat
MODEL_FORMAT_GGUF: ModelFormat
MODEL_FORMAT_PYTORCH: ModelFormat
MODEL_FORMAT_TENSORFLOW: ModelFormat
MODEL_FORMAT_SAFETENSORS: ModelFormat
MODEL_FORMAT_TFLITE: ModelFormat
MODEL_FORMAT_TORCHSCRIPT: ModelFormat
DEPLOYMENT_TYPE_UNKNOWN: DeploymentType
DEPLOYMENT_TYPE_LOCAL: DeploymentType
DEPLOYMENT_TYPE_NETWORK: DeploymentType
DEPLOYMENT_STATUS_UNKNOWN: DeploymentStatus
DEPLOYMENT_STATUS_PENDING: DeploymentStatus
DEPLOYMENT_STATUS_PROVISIONING: DeploymentStatus
DEPLOYMENT_STATUS_LOADING: DeploymentStatus
DEPLOYMENT_STATUS_READY: DeploymentStatus
DEPLOYMENT_STATUS_RUNNING: DeploymentStatus
DEPLOYMENT_STATUS_STOPPED: DeploymentStatus
DEPLOYMENT_STATUS_FAILED: DeploymentStatus
DEPLOYMENT_STATUS_TERMINATED: DeploymentStatus
TERMINAL_SESSION_UNKNOWN: TerminalSessionStatus
TERMINAL_SESSION_ACTIVE: TerminalSessionStatus
TERMINAL_SESSION_CLOSED: TerminalSessionStatus
TERMINAL_SESSION_ERROR: TerminalSessionStatus
MODEL_SOURCE_UNKNOWN: ModelSource
MODEL_SOURCE_LOCAL: ModelSource
MODEL_SOURCE_HUGGINGFACE: ModelSource
MODEL_SOURCE_CYXWIZ_HUB: ModelSource
MODEL_SOURCE_URL: ModelSource

class HardwareRequirements(_message.Message):
    __slots__ = ("min_vram", "min_ram", "min_cpu_cores", "required_device", "gpu_name_preference", "supported_formats")
    MIN_VRAM_FIELD_NUMBER: _ClassVar[int]
    MIN_RAM_FIELD_NUMBER: _ClassVar[int]
    MIN_CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_DEVICE_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FORMATS_FIELD_NUMBER: _ClassVar[int]
    min_vram: int
    min_ram: int
    min_cpu_cores: int
    required_device: _common_pb2.DeviceType
    gpu_name_preference: str
    supported_formats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, min_vram: _Optional[int] = ..., min_ram: _Optional[int] = ..., min_cpu_cores: _Optional[int] = ..., required_device: _Optional[_Union[_common_pb2.DeviceType, str]] = ..., gpu_name_preference: _Optional[str] = ..., supported_formats: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "name", "description", "format", "source", "source_url", "local_path", "size_bytes", "requirements", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    name: str
    description: str
    format: ModelFormat
    source: ModelSource
    source_url: str
    local_path: str
    size_bytes: int
    requirements: HardwareRequirements
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, model_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., source: _Optional[_Union[ModelSource, str]] = ..., source_url: _Optional[str] = ..., local_path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., requirements: _Optional[_Union[HardwareRequirements, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeploymentConfig(_message.Message):
    __slots__ = ("deployment_id", "user_id", "type", "model", "node_id", "requirements", "preferred_region", "environment_vars", "runtime_params", "port", "enable_terminal")
    class EnvironmentVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RuntimeParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_REGION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_VARS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_PARAMS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TERMINAL_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    user_id: str
    type: DeploymentType
    model: ModelInfo
    node_id: str
    requirements: HardwareRequirements
    preferred_region: str
    environment_vars: _containers.ScalarMap[str, str]
    runtime_params: _containers.ScalarMap[str, str]
    port: int
    enable_terminal: bool
    def __init__(self, deployment_id: _Optional[str] = ..., user_id: _Optional[str] = ..., type: _Optional[_Union[DeploymentType, str]] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., node_id: _Optional[str] = ..., requirements: _Optional[_Union[HardwareRequirements, _Mapping]] = ..., preferred_region: _Optional[str] = ..., environment_vars: _Optional[_Mapping[str, str]] = ..., runtime_params: _Optional[_Mapping[str, str]] = ..., port: _Optional[int] = ..., enable_terminal: _Optional[bool] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("deployment_id", "config", "status", "assigned_node", "status_message", "created_at", "started_at", "stopped_at", "endpoint_url", "terminal_endpoint", "uptime_seconds", "total_requests", "avg_latency_ms", "error")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STOPPED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    config: DeploymentConfig
    status: DeploymentStatus
    assigned_node: _node_pb2.NodeInfo
    status_message: str
    created_at: int
    started_at: int
    stopped_at: int
    endpoint_url: str
    terminal_endpoint: str
    uptime_seconds: int
    total_requests: int
    avg_latency_ms: float
    error: _common_pb2.Error
    def __init__(self, deployment_id: _Optional[str] = ..., config: _Optional[_Union[DeploymentConfig, _Mapping]] = ..., status: _Optional[_Union[DeploymentStatus, str]] = ..., assigned_node: _Optional[_Union[_node_pb2.NodeInfo, _Mapping]] = ..., status_message: _Optional[str] = ..., created_at: _Optional[int] = ..., started_at: _Optional[int] = ..., stopped_at: _Optional[int] = ..., endpoint_url: _Optional[str] = ..., terminal_endpoint: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., total_requests: _Optional[int] = ..., avg_latency_ms: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class TerminalData(_message.Message):
    __slots__ = ("session_id", "deployment_id", "data", "is_eof", "sequence_number")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    IS_EOF_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    deployment_id: str
    data: bytes
    is_eof: bool
    sequence_number: int
    def __init__(self, session_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., data: _Optional[bytes] = ..., is_eof: _Optional[bool] = ..., sequence_number: _Optional[int] = ...) -> None: ...

class TerminalResize(_message.Message):
    __slots__ = ("session_id", "rows", "cols")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    rows: int
    cols: int
    def __init__(self, session_id: _Optional[str] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class TerminalSession(_message.Message):
    __slots__ = ("session_id", "deployment_id", "user_id", "status", "created_at", "last_activity", "rows", "cols")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    deployment_id: str
    user_id: str
    status: TerminalSessionStatus
    created_at: int
    last_activity: int
    rows: int
    cols: int
    def __init__(self, session_id: _Optional[str] = ..., deployment_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[TerminalSessionStatus, str]] = ..., created_at: _Optional[int] = ..., last_activity: _Optional[int] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class CreateDeploymentRequest(_message.Message):
    __slots__ = ("config", "authentication_token")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    config: DeploymentConfig
    authentication_token: str
    def __init__(self, config: _Optional[_Union[DeploymentConfig, _Mapping]] = ..., authentication_token: _Optional[str] = ...) -> None: ...

class CreateDeploymentResponse(_message.Message):
    __slots__ = ("status", "deployment", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    deployment: Deployment
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., deployment: _Optional[_Union[Deployment, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id", "user_id")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    user_id: str
    def __init__(self, deployment_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "error")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    error: _common_pb2.Error
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("user_id", "type_filter", "status_filter", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FILTER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    type_filter: DeploymentType
    status_filter: DeploymentStatus
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., type_filter: _Optional[_Union[DeploymentType, str]] = ..., status_filter: _Optional[_Union[DeploymentStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token", "total_count", "error")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    total_count: int
    error: _common_pb2.Error
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_count: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class StopDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id", "user_id")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    user_id: str
    def __init__(self, deployment_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class StopDeploymentResponse(_message.Message):
    __slots__ = ("status", "deployment", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    deployment: Deployment
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., deployment: _Optional[_Union[Deployment, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class DeleteDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id", "user_id")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    user_id: str
    def __init__(self, deployment_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteDeploymentResponse(_message.Message):
    __slots__ = ("status", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class GetDeploymentMetricsRequest(_message.Message):
    __slots__ = ("deployment_id", "start_time", "end_time")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    start_time: int
    end_time: int
    def __init__(self, deployment_id: _Optional[str] = ..., start_time: _Optional[int] = ..., end_time: _Optional[int] = ...) -> None: ...

class GetDeploymentMetricsResponse(_message.Message):
    __slots__ = ("metrics", "error")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[DeploymentMetricPoint]
    error: _common_pb2.Error
    def __init__(self, metrics: _Optional[_Iterable[_Union[DeploymentMetricPoint, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class DeploymentMetricPoint(_message.Message):
    __slots__ = ("timestamp", "cpu_usage", "gpu_usage", "memory_usage", "request_count", "avg_latency_ms", "throughput_rps")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_RPS_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    cpu_usage: float
    gpu_usage: float
    memory_usage: float
    request_count: int
    avg_latency_ms: float
    throughput_rps: float
    def __init__(self, timestamp: _Optional[int] = ..., cpu_usage: _Optional[float] = ..., gpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., request_count: _Optional[int] = ..., avg_latency_ms: _Optional[float] = ..., throughput_rps: _Optional[float] = ...) -> None: ...

class CreateTerminalSessionRequest(_message.Message):
    __slots__ = ("deployment_id", "user_id", "rows", "cols", "node_id")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    user_id: str
    rows: int
    cols: int
    node_id: str
    def __init__(self, deployment_id: _Optional[str] = ..., user_id: _Optional[str] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class CreateTerminalSessionResponse(_message.Message):
    __slots__ = ("status", "session", "error", "terminal_endpoint", "grant", "grant_expires_at", "node_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    GRANT_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    session: TerminalSession
    error: _common_pb2.Error
    terminal_endpoint: str
    grant: str
    grant_expires_at: int
    node_id: str
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., session: _Optional[_Union[TerminalSession, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., terminal_endpoint: _Optional[str] = ..., grant: _Optional[str] = ..., grant_expires_at: _Optional[int] = ..., node_id: _Optional[str] = ...) -> None: ...

class CloseTerminalSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseTerminalSessionResponse(_message.Message):
    __slots__ = ("status", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...

class SimpleResponse(_message.Message):
    __slots__ = ("status", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    error: _common_pb2.Error
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ...) -> None: ...
