"""API keys on REST: the app's outermost middleware, so no route, the infer fast path included,
is reached without the key its endpoint needs (`seqserve.auth`). The caller's name goes to the
routes in `scope["state"]["owner"]` (Starlette's `request.state.owner`).

A WebSocket's upgrade request is held to the same rule. Browsers cannot set its headers, so there the
key may also come as an offered subprotocol, `base64url.bearer.seqserve.<the key, base64url, unpadded>`
(Kubernetes' way: a subprotocol is a token, a key need not be); a refused upgrade gets HTTP 401."""

from __future__ import annotations

import base64
import binascii

from starlette.types import ASGIApp, Receive, Scope, Send

from seqserve.auth import SCHEME, Authenticator, rest_endpoint_kind
from seqserve.errors import Unauthenticated
from seqserve.rest.error_handlers import error_response
from seqserve.rest.websocket_messages import refuse_upgrade

_CHALLENGE = {"WWW-Authenticate": f'{SCHEME.capitalize()} realm="seqserve"'}
KEY_SUBPROTOCOL = "base64url.bearer.seqserve."


class RequireApiKey:
    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            if authorization is None and kind == "websocket":
                authorization = _subprotocol_authorization(scope.get("subprotocols", ()))
            owner = self.auth.caller(rest_endpoint_kind(path), authorization)
        except Unauthenticated as e:
            if kind == "websocket":
                await refuse_upgrade(scope, receive, send, e, _CHALLENGE)
            else:
                await error_response(e.http_status, e.message, _CHALLENGE)(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)


def owner_of(scope: Scope) -> str | None:
    """The caller `RequireApiKey` let in; None with authentication off."""
    return scope.get("state", {}).get("owner")


def _subprotocol_authorization(subprotocols: list[str] | tuple[str, ...]) -> str | None:
    """`Bearer <key>` from the key subprotocol a WebSocket client offered, None without one."""
    for offered in subprotocols:
        if offered.startswith(KEY_SUBPROTOCOL):
            encoded = offered[len(KEY_SUBPROTOCOL) :]
            try:
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True).decode()
            except (binascii.Error, ValueError):
                raise Unauthenticated(f"the API key subprotocol {KEY_SUBPROTOCOL}<key> must be base64url") from None
            return f"{SCHEME} {key}"
    return None
