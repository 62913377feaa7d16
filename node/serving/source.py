"""What a deployment serves: where its model comes from, and loading it hash-checked.

A deployment names its model in one of three ways (``DeploymentConfig.model``):

- ``model_id``: a completed job's id; the model is ``nats://cyxwiz-models/<job id>``;
- ``source_url``: ``nats://cyxwiz-models/<name>`` in the shared object store;
- ``local_path``: a file under one of the node's model roots (``..`` is refused).

``metadata["sha256"]`` (central fills it from JobCompleted) is the hash the bytes must
have; without it the hash is computed and reported. The bytes are a model artifact as
the trainer writes it (:func:`node.models.load_model`): parameters plus the model
definition, sample shape, output width and task.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from events.errors import CyxwizError
from node.serving.errors import InvalidRequest

__all__ = ["LoadedModel", "ModelLoadError", "ModelSource", "load", "resolve"]

MODELS_BUCKET = "cyxwiz-models"
_SHA = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.\-/=]{1,255}")


class ModelLoadError(CyxwizError):
    """The model could not be fetched or loaded; the deployment fails with this message
    and ``code`` (HTTP-style: 404 missing, 400 not a model, 409 hash mismatch)."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message, code=code)

    def __reduce__(self):
        return type(self), (str(self), self.code)


@dataclass(frozen=True)
class ModelSource:
    """Where to get the bytes: ``uri`` is ``nats://bucket/name`` or ``file://<path>``."""

    model_id: str
    uri: str
    expected_sha256: str | None

    @property
    def path(self) -> Path | None:
        return Path(self.uri[len("file://"):]) if self.uri.startswith("file://") else None


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # node.models.Model
    params: Any
    meta: dict[str, Any]
    sha256: str
    size: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.model.sample_shape)

    @property
    def output_dim(self) -> int:
        return int(self.model.output_dim)

    @property
    def classification(self) -> bool:
        return self.meta.get("task") == "classification"


def resolve(
    *, model_id: str, source_url: str, local_path: str, metadata: dict[str, str], model_roots: tuple[Path, ...],
) -> ModelSource:
    """The :class:`ModelSource` a deployment's ``ModelInfo`` names (``InvalidRequest`` if none)."""
    expected = metadata.get("sha256", "").strip().lower() or None
    if expected is not None and not _SHA.fullmatch(expected):
        raise InvalidRequest(f"config.model.metadata.sha256 must be 64 hex digits (got {metadata['sha256']!r})")
    if local_path:
        return ModelSource(model_id or PurePath(local_path).name, "file://" + str(_under_roots(local_path, model_roots)), expected)
    if source_url:
        prefix = f"nats://{MODELS_BUCKET}/"
        name = source_url[len(prefix):]
        if not source_url.startswith(prefix) or not _safe_name(name):
            raise InvalidRequest(
                f"config.model.source_url {source_url!r} is not served: use nats://{MODELS_BUCKET}/<job id>, "
                "a model_id (a completed job's id) or a local_path under the node's model roots"
            )
        return ModelSource(model_id or name, source_url, expected)
    if not model_id.strip():
        raise InvalidRequest(
            "config.model needs model_id (a completed job's id), source_url (nats://cyxwiz-models/...) or local_path"
        )
    if not _safe_name(model_id):
        raise InvalidRequest(f"config.model.model_id {model_id!r} is not a job id (letters, digits, '-', '_', '.')")
    return ModelSource(model_id, f"nats://{MODELS_BUCKET}/{model_id}", expected)


def _safe_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and ".." not in PurePath(name).parts and not name.startswith("/")


def _under_roots(local_path: str, roots: tuple[Path, ...]) -> Path:
    if "\x00" in local_path or ".." in PurePath(local_path).parts:
        raise InvalidRequest(f"config.model.local_path {local_path!r}: '..' is not allowed")
    if not roots:
        raise InvalidRequest("config.model.local_path: this node has no model roots (start it with --model-root DIR)")
    candidates = [Path(local_path)] if Path(local_path).is_absolute() else [root / local_path for root in roots]
    for candidate in candidates:
        resolved = candidate.resolve()
        if any(resolved.is_relative_to(root.resolve()) for root in roots):
            return resolved
    shown = ", ".join(str(r) for r in roots)
    raise InvalidRequest(f"config.model.local_path {local_path!r} is not under the node's model roots ({shown})")


def load(data: bytes, source: ModelSource) -> LoadedModel:
    """Check the hash, rebuild the model from its definition and return it with its parameters."""
    from node import checkpoint
    from node.models import load_model

    digest = hashlib.sha256(data).hexdigest()
    if source.expected_sha256 and digest != source.expected_sha256:
        raise ModelLoadError(
            f"model {source.uri} has SHA-256 {digest}, expected {source.expected_sha256}: "
            "the artifact is corrupt or not the one asked for", 409,
        )
    try:
        meta = checkpoint.read_meta(data)
        model, params = load_model(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{source.uri} is not a cyxwiz model artifact: {exc}") from exc
    return LoadedModel(model, params, dict(meta), digest, len(data))
