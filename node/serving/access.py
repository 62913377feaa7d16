"""Who may deploy and infer: with an API key configured, deployment and inference
calls need ``authorization: Bearer <key>`` (central may also use the session token it
gave this node). Health and metadata stay open. Without a key, calls are open."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from node.serving.errors import Unauthenticated

__all__ = ["Access", "bearer"]

_BEARER = "bearer "


def bearer(value: str | None) -> str | None:
    """The token of an ``authorization`` header value, or None."""
    if not value or value[: len(_BEARER)].lower() != _BEARER:
        return None
    return value[len(_BEARER):].strip() or None


class Access:
    def __init__(self, api_key: str | None = None, session_token: Callable[[], str | None] = lambda: None) -> None:
        self.api_key = api_key or None
        self.session_token = session_token

    @property
    def open(self) -> bool:
        return self.api_key is None

    def check(self, token: str | None) -> None:
        """Raise :class:`Unauthenticated` unless ``token`` may deploy and infer here."""
        if self.api_key is None:
            return
        if token:
            given = token.encode()
            if hmac.compare_digest(given, self.api_key.encode()):
                return
            session = self.session_token()
            if session and hmac.compare_digest(given, session.encode()):
                return
        what = "wrong" if token else "missing"
        raise Unauthenticated(
            f"{what} API key: send 'authorization: Bearer <key>' (the node's --api-key / CYXWIZ_API_KEY)"
        )
