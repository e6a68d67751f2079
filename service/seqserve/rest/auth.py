"""API keys on REST: the app's outermost middleware, so no route, the infer fast path included,
is reached without the key its endpoint needs (`seqserve.auth`). The caller's name goes to the
routes in `scope["state"]["owner"]` (Starlette's `request.state.owner`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from seqserve.auth import SCHEME, Authenticator, rest_endpoint_kind
from seqserve.errors import Unauthenticated
from seqserve.rest.error_handlers import error_response

_CHALLENGE = {"WWW-Authenticate": f'{SCHEME.capitalize()} realm="seqserve"'}


class RequireApiKey:
    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            owner = self.auth.caller(rest_endpoint_kind(path), authorization)
        except Unauthenticated as e:
            await error_response(e.http_status, e.message, _CHALLENGE)(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)


def owner_of(scope: Scope) -> str | None:
    """The caller `RequireApiKey` let in; None with authentication off."""
    return scope.get("state", {}).get("owner")
