"""Who is calling the terminal: the cluster API key, a grant from central, or (with no
credential configured at all) a caller on loopback. Pure apart from the clock passed in.

A principal's ``identity`` is what a session is bound to: every API key holder is one
principal; a grant's principal is its user; a local caller is ``local``. A grant is
checked in full (signature, node, expiry) to open a session; afterwards the grant that
opened a session keeps working for that session after its five minutes are up, so a
long shell can still be resized and closed; any other expired grant is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace

from events.errors import CyxwizError
from protos.convert import bearer_token
from protos.grant import Grant, GrantInvalid, looks_like_grant, verify_grant

__all__ = ["Denied", "Principal", "authenticate", "is_loopback_peer", "token_digest"]

CREDENTIAL_HINT = ("send 'authorization: Bearer <token>' with the cluster API key (CYXWIZ_API_KEY) "
                   "or a grant from central's TerminalService.CreateSession (`cyxwiz shell` gets one)")


_CODE = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
         "FAILED_PRECONDITION": 409, "RESOURCE_EXHAUSTED": 429}


class Denied(CyxwizError):
    """A refused terminal call: ``status`` is the gRPC status name (``code`` its HTTP-style
    code in the one error tree), ``message`` what to do."""

    def __init__(self, status: str, message: str, principal: str = "") -> None:
        super().__init__(message, code=_CODE[status])
        self.status = status
        self.message = message
        self.principal = principal


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "api-key", "grant", "local"
    user: str
    key_holder: bool  # may open a shell in the node's home
    token_digest: str = ""
    grant: Grant | None = None
    expired: bool = False

    @property
    def identity(self) -> tuple[str, str]:
        # API key holders are one principal, and so are local callers: their user_id is a claim
        return (self.kind, self.user if self.kind == "grant" else "")

    @property
    def label(self) -> str:
        return "api-key" if self.kind == "api-key" else f"{self.kind}:{self.user}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback_peer(peer: str) -> bool:
    """``context.peer()`` of a caller on this machine (ipv4:127.x, ipv6:[::1], unix:)."""
    if peer.startswith("unix:"):
        return True
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authenticate(
    metadata: Iterable[tuple[str, str | bytes]] | None,
    peer: str,
    *,
    api_key: str | None,
    grant_key: bytes | None,
    node_id: str,
    now: float,
    user_hint: str = "",
) -> Principal:
    """The caller's principal, or ``Denied`` (UNAUTHENTICATED) saying what is missing."""
    loopback = is_loopback_peer(peer)
    if not api_key and not loopback:
        raise Denied("UNAUTHENTICATED", "this node has no API key configured, so it serves terminals to "
                                        "callers on its own machine only")
    token = bearer_token(metadata)
    if token is None:
        if not api_key:
            return Principal(kind="local", user=user_hint or "local", key_holder=True)
        raise Denied("UNAUTHENTICATED", f"missing credential: {CREDENTIAL_HINT}")
    if looks_like_grant(token):
        principal = _grant_principal(token, grant_key, node_id, now)
        if not api_key:  # local use: a caller on this machine may have the home without any credential
            principal = replace(principal, key_holder=True)
        return principal
    if api_key and hmac.compare_digest(token.encode(), api_key.encode()):
        return Principal(kind="api-key", user=user_hint or "operator", key_holder=True,
                         token_digest=token_digest(token))
    raise Denied("UNAUTHENTICATED", f"wrong credential (neither this cluster's API key nor a grant): {CREDENTIAL_HINT}")


def _grant_principal(token: str, grant_key: bytes | None, node_id: str, now: float) -> Principal:
    if grant_key is None:
        raise Denied("UNAUTHENTICATED", "this node is not registered with central yet, so it cannot check "
                                        "grants; retry in a moment")
    try:
        grant = verify_grant(grant_key, token, node_id=node_id, now=now, check_expiry=False)
    except GrantInvalid as exc:
        raise Denied("UNAUTHENTICATED", f"grant refused: {exc}") from None
    expired = grant.expires_at < now
    return Principal(kind="grant", user=grant.user, key_holder=grant.key_holder,
                     token_digest=token_digest(token), grant=grant, expired=expired)
