"""A deployment request in our own terms, checked: pure, no I/O.

``runtime_params`` (all optional, strings as in the protocol's map):

- ``max_batch_size``: most samples run together (1..4096; default 64);
- ``batch_delay_ms``: how long a batch under load waits for more requests (0..100; default 1);
- ``queue_size``: requests waiting at most before 429 / RESOURCE_EXHAUSTED (1..100000; default 1024);
- ``batching``: ``on`` (default) or ``off`` (every request runs alone).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from node.serving.errors import InvalidRequest

__all__ = [
    "DEFAULT_MAX_BATCH", "DeploymentSpec", "ServingParams", "check_deployment_id", "new_deployment_id", "serving_params",
]

DEFAULT_MAX_BATCH = 64
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class ServingParams:
    max_batch: int = DEFAULT_MAX_BATCH
    max_delay_s: float = 0.001
    queue_size: int = 1024
    batching: bool = True


@dataclass(frozen=True)
class DeploymentSpec:
    deployment_id: str
    name: str
    model_id: str
    source_url: str = ""
    local_path: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    params: ServingParams = ServingParams()
    user_id: str = ""


def check_deployment_id(deployment_id: str, what: str = "deployment_id") -> str:
    if not _ID.fullmatch(deployment_id):
        raise InvalidRequest(
            f"{what} {deployment_id[:80]!r} must be 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return deployment_id


def new_deployment_id() -> str:
    return "dep-" + uuid.uuid4().hex[:12]


def _int(params: Mapping[str, str], key: str, low: int, high: int, default: int) -> int:
    text = params.get(key, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise InvalidRequest(f"config.runtime_params.{key} must be a whole number in {low}..{high} (got {text[:40]!r})")
    return int(text)


def serving_params(params: Mapping[str, str]) -> ServingParams:
    delay_text = params.get("batch_delay_ms", "").strip()
    try:
        delay_ms = float(delay_text) if delay_text else 1.0
    except ValueError:
        delay_ms = -1.0
    if not 0.0 <= delay_ms <= 100.0:
        raise InvalidRequest(f"config.runtime_params.batch_delay_ms must be a number in 0..100 (got {delay_text[:40]!r})")
    batching = params.get("batching", "on").strip().lower() or "on"
    if batching not in ("on", "off"):
        raise InvalidRequest(f"config.runtime_params.batching must be 'on' or 'off' (got {batching[:40]!r})")
    return ServingParams(
        max_batch=_int(params, "max_batch_size", 1, 4096, DEFAULT_MAX_BATCH), max_delay_s=delay_ms / 1000.0,
        queue_size=_int(params, "queue_size", 1, 100_000, 1024), batching=batching == "on",
    )
