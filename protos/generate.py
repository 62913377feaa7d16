"""Generate the Python modules of ``protos/*.proto``: ``python -m protos.generate``.

Runs ``grpc_tools.protoc`` with the repository root as the include path, so the
proto files import each other as ``protos/common.proto`` and the generated code
imports as ``from protos import common_pb2``. Writes ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` beside the protos (or under ``--out``/protos). The output is
committed as generated; tests/test_protos_fresh.py fails when it is stale.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
from pathlib import Path

from grpc_tools import protoc

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class ProtocError(RuntimeError):
    """protoc rejected the proto files; its own message went to stderr."""


def proto_files() -> list[Path]:
    """Our proto files, in a fixed order."""
    return sorted(PACKAGE_DIR.glob("*.proto"))


def generated_names() -> list[str]:
    """File names that generation writes into ``protos/``."""
    return sorted(p.stem + suffix for p in proto_files() for suffix in GENERATED_SUFFIXES)


def generate(out: Path = ROOT) -> list[Path]:
    """Write the generated modules under ``out/protos`` and return their paths."""
    out = Path(out).resolve()
    (out / "protos").mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(ROOT)) for p in proto_files()),
    ]
    # protoc resolves the relative proto paths against the include path, not the cwd.
    if protoc.main(args) != 0:
        raise ProtocError(f"protoc failed on {', '.join(p.name for p in proto_files())}")
    return [out / "protos" / name for name in generated_names()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.generate", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=ROOT, help="root to write protos/*_pb2*.py under"
    )
    ns = parser.parse_args(argv)
    try:
        written = generate(ns.out)
    except ProtocError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
