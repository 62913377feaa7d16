"""Who may call central: the node token, node session tokens, and the API key.

- With a node token configured, RegisterNode needs it in ``authentication_token``, and
  every later call of that node needs the session token RegisterNode returned, sent as
  ``authorization: Bearer <token>`` metadata.
- With an API key configured, job and discovery calls need it the same way.
- Unconfigured, calls are open (local use) and central logs that at start.

A session token is ``HMAC-SHA256(secret, "<node_id>/<registration event id>")``. The
NodeRegistered event carries only the token's SHA-256, so any central process that shares
the secret (kept in the NATS KV bucket ``cyxwiz-central``) can both check a node's token
after a restart and send it back in ``AssignJobRequest.authorization_token``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets


from central.lifecycle.errors import Refused
from central.lifecycle.nodes import NodeState
from protos.convert import bearer_token

log = logging.getLogger("cyxwiz.central.auth")

SECRET_BUCKET = "cyxwiz-central"
SECRET_KEY = "session-secret"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _session_token(secret: bytes, node_id: str, registration_id: str) -> str:
    """One HMAC per registration, not one per dispatched job."""
    return hmac.new(secret, f"{node_id}/{registration_id}".encode(), hashlib.sha256).hexdigest()


class Auth:
    def __init__(self, secret: bytes, *, node_token: str | None = None, api_key: str | None = None) -> None:
        self.secret = secret
        self.node_token = node_token or None
        self.api_key = api_key or None

    def describe(self) -> str:
        nodes = "node token required" if self.node_token else "OPEN (no node token: any node may register)"
        jobs = "API key required" if self.api_key else "OPEN (no API key: anyone may submit jobs)"
        return f"node registration: {nodes}; job calls: {jobs}"

    def session_token(self, node_id: str, registration_id: str) -> str:
        return _session_token(self.secret, node_id, registration_id)

    def check_registration(self, token: str) -> None:
        if self.node_token and not hmac.compare_digest(token.encode(), self.node_token.encode()):
            what = "missing" if not token else "wrong"
            raise Refused(401, f"authentication_token is {what}: RegisterNode needs the operator's node token "
                               "(CYXWIZ_NODE_TOKEN / --node-token)")

    def check_node(self, metadata, node: NodeState) -> None:
        """Raise ``Refused(401)`` unless the metadata carries ``node``'s session token."""
        if not self.node_token:
            return
        token = bearer_token(metadata)
        if token is None:
            raise Refused(401, "missing session token: send 'authorization: Bearer <session_token>' from RegisterNode")
        if not hmac.compare_digest(token_sha256(token), node.token_sha256):
            raise Refused(401, f"wrong session token for node {node.node_id!r}: register again")

    def holds_session(self, metadata, node: NodeState) -> bool:
        """True when the metadata carries ``node``'s current session token (whatever the
        node token setting: it is how a node proves it holds its id)."""
        token = bearer_token(metadata)
        return token is not None and bool(node.token_sha256) and hmac.compare_digest(
            token_sha256(token), node.token_sha256)

    def check_client(self, metadata) -> None:
        if not self.api_key:
            return
        token = bearer_token(metadata)
        if token is None or not hmac.compare_digest(token.encode(), self.api_key.encode()):
            what = "missing" if token is None else "wrong"
            raise Refused(401, f"API key {what}: send 'authorization: Bearer <api key>' (CYXWIZ_API_KEY)")


async def load_secret(bus) -> bytes:
    """The session secret shared by every central on this stream (created once).

    Only central's NATS credentials may read the bucket; any other role gets
    ``BusForbidden`` at once (``bus.violations``)."""
    return await bus.violations.guard(_load_secret(bus))


async def _load_secret(bus) -> bytes:
    return await bus.put_once(SECRET_BUCKET, SECRET_KEY, secrets.token_hex(32).encode())
