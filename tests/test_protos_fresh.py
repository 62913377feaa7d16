"""Our generated code is fresh, and our protos keep the public CyxWiz wire contract.

The public protocol lives verbatim in tests/fixtures/cyxwiz_protocol. Both sides are
compiled by protoc into FileDescriptorSets and compared: every message present in
both keeps each public field's number, name, type and label (or reserves a dropped
one), our own fields sit above 100, enums keep every public value, and every method
we serve has the public full name, request and response types.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from grpc_tools import protoc

from protos import generate

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_DIR = ROOT / "tests" / "fixtures" / "cyxwiz_protocol"
PUBLIC_FILES = ("common.proto", "job.proto", "node.proto", "deployment.proto")
PACKAGE = "cyxwiz.protocol"
OUR_FIELDS_START = 101

# PROTOCOL.md, "What we serve": service -> methods (any process).
SERVED = {
    "JobService": (
        "SubmitJob", "GetJobStatus", "CancelJob", "StreamJobUpdates", "ListJobs", "DeleteJob",
    ),
    "NodeService": (
        "RegisterNode", "Heartbeat", "ReportProgress", "ReportCompletion", "GetNodeMetrics",
        "AssignJob",
    ),
    "NodeDiscoveryService": ("FindNodes", "ListNodes", "GetNodeInfo"),
    "JobStatusService": ("UpdateJobStatus", "ReportJobResult"),
    "DeploymentService": (
        "CreateDeployment", "GetDeployment", "ListDeployments", "StopDeployment",
        "DeleteDeployment", "GetDeploymentMetrics",
    ),
    "TerminalService": ("CreateSession", "StreamTerminal", "ResizeTerminal", "CloseSession"),
}
# Served methods the public protocol does not have.
OURS_ONLY_METHODS = {"JobService.DeleteJob"}


# ---------------------------------------------------------------- freshness


def test_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    stale = [
        p.name for p in written if p.read_bytes() != (ROOT / "protos" / p.name).read_bytes()
    ]
    assert stale == [], f"stale generated files, run `python -m protos.generate`: {stale}"


def test_no_generated_file_without_its_proto() -> None:
    committed = sorted(
        p.name
        for suffix in generate.GENERATED_SUFFIXES
        for p in (ROOT / "protos").glob(f"*{suffix}")
    )
    assert committed == generate.generated_names()


# ---------------------------------------------------------------- descriptors


def _descriptor_set(tmp: Path, include: Path, files: list[str]) -> descriptor_pb2.FileDescriptorSet:
    out = tmp / "set.pb"
    rc = protoc.main(
        ["protoc", f"-I{include}", "--include_imports", f"--descriptor_set_out={out}", *files]
    )
    assert rc == 0, f"protoc failed on {files}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def public_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    return _descriptor_set(tmp_path_factory.mktemp("public"), PUBLIC_DIR, list(PUBLIC_FILES))


@pytest.fixture(scope="module")
def our_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    files = [str(p.relative_to(ROOT)) for p in generate.proto_files()]
    return _descriptor_set(tmp_path_factory.mktemp("ours"), ROOT, files)


def _messages(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message, nested ones (map entries) included, by full name."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs) -> None:
        for m in msgs:
            found[f"{prefix}.{m.name}"] = m
            walk(f"{prefix}.{m.name}", m.nested_type)

    for f in fds.file:
        walk(f.package, f.message_type)
    return found


def _enums(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, dict[str, int]]:
    return {
        f"{f.package}.{e.name}": {v.name: v.number for v in e.value}
        for f in fds.file
        for e in f.enum_type
    }


def _services(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, dict[str, tuple]]:
    return {
        f"{f.package}.{s.name}": {
            m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for m in s.method
        }
        for f in fds.file
        for s in f.service
    }


def _is_reserved(msg: descriptor_pb2.DescriptorProto, number: int, name: str) -> bool:
    in_range = any(r.start <= number < r.end for r in msg.reserved_range)
    return in_range and name in msg.reserved_name


def test_every_file_is_in_the_protocol_package(our_set, public_set) -> None:
    # open_inference.proto is the Open Inference Protocol, package `inference` (tests/test_serving_protos.py)
    assert {f.package for f in our_set.file if f.name != "protos/open_inference.proto"} == {PACKAGE}
    assert {f.package for f in public_set.file} == {PACKAGE}


def test_shared_messages_keep_public_fields(our_set, public_set) -> None:
    ours, public = _messages(our_set), _messages(public_set)
    problems = []
    for name in sorted(ours.keys() & public.keys()):
        by_number = {f.number: f for f in ours[name].field}
        for pf in public[name].field:
            of = by_number.get(pf.number)
            if of is None:
                if not _is_reserved(ours[name], pf.number, pf.name):
                    problems.append(f"{name}.{pf.name} = {pf.number}: dropped but not reserved")
                continue
            want = (pf.name, pf.type, pf.label, pf.type_name)
            got = (of.name, of.type, of.label, of.type_name)
            if got != want:
                problems.append(f"{name} field {pf.number}: public {want}, ours {got}")
    assert problems == []


def test_our_own_fields_are_numbered_above_100(our_set, public_set) -> None:
    ours, public = _messages(our_set), _messages(public_set)
    problems = [
        f"{name}.{f.name} = {f.number}"
        for name in sorted(ours.keys() & public.keys())
        for f in ours[name].field
        if f.number not in {pf.number for pf in public[name].field}
        and f.number < OUR_FIELDS_START
    ]
    assert problems == []


def test_shared_enums_keep_every_public_value(our_set, public_set) -> None:
    ours, public = _enums(our_set), _enums(public_set)
    for name in sorted(ours.keys() & public.keys()):
        assert public[name].items() <= ours[name].items(), name
    # Enums the contract needs must exist on our side.
    for name in ("StatusCode", "DeviceType", "JobType", "JobPriority", "DeploymentStatus"):
        assert f"{PACKAGE}.{name}" in ours


def test_served_methods_keep_public_names_and_types(our_set, public_set) -> None:
    ours, public = _services(our_set), _services(public_set)
    for service, methods in SERVED.items():
        full = f"{PACKAGE}.{service}"
        assert full in ours, f"missing service {full}"
        for method in methods:
            assert method in ours[full], f"missing method /{full}/{method}"
            if f"{service}.{method}" in OURS_ONLY_METHODS:
                assert method not in public[full]
                continue
            assert ours[full][method] == public[full][method], f"/{full}/{method}"


def test_shared_services_keep_every_public_method(our_set, public_set) -> None:
    ours, public = _services(our_set), _services(public_set)
    for full in sorted(ours.keys() & public.keys()):
        for method, signature in public[full].items():
            assert ours[full].get(method) == signature, f"/{full}/{method}"


def test_types_used_by_served_methods_exist_on_both_sides(our_set, public_set) -> None:
    """A served method's messages, and every message they reach, are shared ones."""
    ours, public = _messages(our_set), _messages(public_set)
    todo = [
        t
        for service, methods in SERVED.items()
        for m, sig in _services(our_set)[f"{PACKAGE}.{service}"].items()
        if m in methods and f"{service}.{m}" not in OURS_ONLY_METHODS
        for t in sig[:2]
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop().lstrip(".")
        if name in seen:
            continue
        seen.add(name)
        assert name in ours and name in public, name
        todo += [f.type_name for f in ours[name].field if f.type == f.TYPE_MESSAGE]


# ---------------------------------------------------------------- bytes on the wire


def _classes(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessages(list(fds.file), pool=pool)


def _fill(msg, depth: int = 0) -> None:
    """Set every field of msg (and of its messages, a few levels deep) to a non-default."""
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        entry = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        if entry is not None and entry.GetOptions().map_entry:
            vfield = entry.fields_by_name["value"]
            if vfield.type == FieldDescriptor.TYPE_MESSAGE:
                _fill(value["k"], depth + 1)
            else:
                value["k"] = _scalar(vfield)
        elif entry is not None:
            if depth >= 3:
                (value.add() if field.is_repeated else value).SetInParent()
            else:
                _fill(value.add() if field.is_repeated else value, depth + 1)
        elif field.is_repeated:
            value.append(_scalar(field))
        else:
            setattr(msg, field.name, _scalar(field))


def _scalar(field: FieldDescriptor):
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-value"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return field.name.encode()
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return field.number + 0.5
    return field.number


def _as_dict(msg, keep) -> dict:
    """msg as a dict, with only the fields `keep` (a message class's descriptor) has."""
    full = MessageToDict(msg, preserving_proto_field_name=True)
    return _prune(full, keep)


def _prune(data: dict, desc) -> dict:
    out = {}
    for key, value in data.items():
        field = desc.fields_by_name.get(key)
        if field is None:
            continue
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            vdesc = sub.fields_by_name["value"].message_type
            out[key] = {k: _prune(v, vdesc) for k, v in value.items()} if vdesc else value
        elif sub is not None:
            out[key] = [_prune(v, sub) for v in value] if field.is_repeated else _prune(value, sub)
        else:
            out[key] = value
    return out


def _shared_top_level_names() -> list[str]:
    from protos import common_pb2, deployment_pb2, job_pb2, node_pb2

    names = set()
    for mod in (common_pb2, job_pb2, node_pb2, deployment_pb2):
        names |= {f"{PACKAGE}.{n}" for n in mod.DESCRIPTOR.message_types_by_name}
    # The public side is checked in the test itself; this only names candidates.
    return sorted(names)


@pytest.mark.parametrize("name", _shared_top_level_names())
def test_bytes_cross_between_ours_and_public(name: str, our_set, public_set) -> None:
    ours, public = _classes(our_set), _classes(public_set)
    if name not in public:
        pytest.skip(f"{name} is ours only")
    our_cls, pub_cls = ours[name], public[name]

    ours_full = our_cls()
    _fill(ours_full)
    seen_by_public = pub_cls.FromString(ours_full.SerializeToString())
    assert _as_dict(seen_by_public, our_cls.DESCRIPTOR) == _as_dict(ours_full, pub_cls.DESCRIPTOR)
    # Our own fields survive a trip through a public-protocol peer as unknown fields.
    assert our_cls.FromString(seen_by_public.SerializeToString()) == ours_full

    public_full = pub_cls()
    _fill(public_full)
    seen_by_us = our_cls.FromString(public_full.SerializeToString())
    assert _as_dict(seen_by_us, pub_cls.DESCRIPTOR) == _as_dict(public_full, our_cls.DESCRIPTOR)
