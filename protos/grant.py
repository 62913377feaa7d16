"""Terminal grants: a short credential central mints and a node checks. Pure: no I/O.

A grant lets one user open a terminal on one node (for one deployment, or the node's
home) for at most five minutes. It is ``<payload>.<mac>``: the payload is URL-safe
base64 of compact JSON ``{"v", "sub", "node", "dep", "exp", "jti", "key"}`` and the mac
is HMAC-SHA256 over the payload text with the node's *grant key*.

The grant key is derived from the node's session token (``HMAC(session_token,
"cyxwiz-terminal-grant/v1")``): central can compute every node's session token from
its session secret, and the node got its own from RegisterNode, so no new secret is
distributed; each node's key differs (a grant for node A is useless on node B), and a
node that registers again gets a new key (older grants die with the old session).

``key`` says whether the caller held the cluster API key at central: only such grants
open a shell in the node's home (an empty ``dep``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from events.errors import CyxwizError

__all__ = ["GRANT_TTL_S", "Grant", "GrantInvalid", "grant_key", "looks_like_grant", "mint_grant", "verify_grant"]

GRANT_TTL_S = 300
MAX_GRANT_CHARS = 2048
_CONTEXT = b"cyxwiz-terminal-grant/v1"
_SKEW_S = 30  # clocks of central and node may differ by this much


class GrantInvalid(CyxwizError):
    """The grant cannot be used; the message says why (never echoes the grant)."""

    code = 401


@dataclass(frozen=True, slots=True)
class Grant:
    user: str
    node_id: str
    deployment_id: str
    expires_at: int
    grant_id: str
    key_holder: bool


def grant_key(session_token: str) -> bytes:
    """The node's grant key, from the session token central gave it."""
    return hmac.new(session_token.encode(), _CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_grant(key: bytes, grant: Grant) -> str:
    body = {"v": 1, "sub": grant.user, "node": grant.node_id, "dep": grant.deployment_id,
            "exp": grant.expires_at, "jti": grant.grant_id, "key": grant.key_holder}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    mac = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def looks_like_grant(token: str) -> bool:
    """A cheap shape test, to tell a grant from an API key before checking either."""
    return token.count(".") == 1 and len(token) <= MAX_GRANT_CHARS and token.startswith("ey")


def verify_grant(key: bytes, token: str, *, node_id: str, now: float, check_expiry: bool = True) -> Grant:
    """The grant in ``token`` if its mac, node and expiry hold; else ``GrantInvalid``."""
    if not looks_like_grant(token):
        raise GrantInvalid("not a terminal grant")
    payload, _, mac = token.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise GrantInvalid("the grant's signature does not match this node's current registration; "
                           "ask central for a new one (cyxwiz shell does)")
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        grant = Grant(user=str(body["sub"]), node_id=str(body["node"]), deployment_id=str(body["dep"]),
                      expires_at=int(body["exp"]), grant_id=str(body["jti"]), key_holder=bool(body["key"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise GrantInvalid("the grant's payload is malformed") from exc
    if grant.node_id != node_id:
        raise GrantInvalid(f"the grant is for node {grant.node_id!r}, not this node")
    if check_expiry and grant.expires_at < now:
        raise GrantInvalid("the grant has expired (grants last 5 minutes); ask central for a new one")
    if grant.expires_at > now + GRANT_TTL_S + _SKEW_S:
        raise GrantInvalid("the grant claims to last longer than 5 minutes; grants from central never do")
    return grant
