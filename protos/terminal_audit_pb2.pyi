from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TerminalAuditKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINAL_AUDIT_UNKNOWN: _ClassVar[TerminalAuditKind]
    TERMINAL_AUDIT_OPENED: _ClassVar[TerminalAuditKind]
    TERMINAL_AUDIT_CLOSED: _ClassVar[TerminalAuditKind]
    TERMINAL_AUDIT_DENIED: _ClassVar[TerminalAuditKind]
TERMINAL_AUDIT_UNKNOWN: TerminalAuditKind
TERMINAL_AUDIT_OPENED: TerminalAuditKind
TERMINAL_AUDIT_CLOSED: TerminalAuditKind
TERMINAL_AUDIT_DENIED: TerminalAuditKind

class TerminalAuditRecord(_message.Message):
    __slots__ = ("event_id", "kind", "session_ref", "principal", "deployment_id", "bytes_in", "bytes_out", "exit_code", "has_exit_code", "duration_s", "reason", "occurred_at", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_REF_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: TerminalAuditKind
    session_ref: str
    principal: str
    deployment_id: str
    bytes_in: int
    bytes_out: int
    exit_code: int
    has_exit_code: bool
    duration_s: float
    reason: str
    occurred_at: float
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[_Union[TerminalAuditKind, str]] = ..., session_ref: _Optional[str] = ..., principal: _Optional[str] = ..., deployment_id: _Optional[str] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., duration_s: _Optional[float] = ..., reason: _Optional[str] = ..., occurred_at: _Optional[float] = ..., user_id: _Optional[str] = ...) -> None: ...

class ReportTerminalActivityRequest(_message.Message):
    __slots__ = ("node_id", "terminal_port", "records")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_PORT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    terminal_port: int
    records: _containers.RepeatedCompositeFieldContainer[TerminalAuditRecord]
    def __init__(self, node_id: _Optional[str] = ..., terminal_port: _Optional[int] = ..., records: _Optional[_Iterable[_Union[TerminalAuditRecord, _Mapping]]] = ...) -> None: ...

class ReportTerminalActivityResponse(_message.Message):
    __slots__ = ("status", "error", "accepted")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.StatusCode
    error: _common_pb2.Error
    accepted: int
    def __init__(self, status: _Optional[_Union[_common_pb2.StatusCode, str]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., accepted: _Optional[int] = ...) -> None: ...
