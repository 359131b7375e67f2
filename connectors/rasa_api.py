"""Rasa's own HTTP API (``--enable-api``) under the server's body limits: the token first.

Rasa checks its token inside the route handler, and Sanic reads a route's whole body before the
handler runs, so without this an anonymous client could make the server buffer 100 MB per request
(Sanic's ``REQUEST_MAX_SIZE``) on ``/model/parse`` and hold it while it trickles. Here the routes
Rasa protects with ``rasa.server.requires_auth`` are recognised by that decorator's code object,
and its token read from the wrapper's closure (``inspect.getclosurevars``), so the same check
runs on the request head, before any body byte is read: a request without Rasa's token or a
valid JWT is refused with Rasa's own 401 at once. Rasa's handler still runs its full check (the
JWT's role and conversation scope) afterwards.

Authenticated clients are the operator's own tools (training data, tracker uploads), so their
bodies get Sanic's ``REQUEST_MAX_SIZE`` (100 MB unless ``SANIC_REQUEST_MAX_SIZE`` says otherwise)
and :data:`AUTHENTICATED_BODY_SECONDS`. Routes Rasa leaves open (``/``, ``/version``) take no
body and fall to the server's default policy.

This reads the structure of Rasa 3.6.21's ``requires_auth`` (its closure names ``token`` and
``app``): :func:`check_version` refuses another Rasa version rather than guess.
"""

from __future__ import annotations

import hmac
import inspect
from typing import Any, Callable, Optional

import rasa
from rasa.server import ErrorResponse, _docs, requires_auth
from rasa.utils.common import call_potential_coroutine
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.rasa_patches import RASA_VERSION

#: How long an authenticated API client has to send its body (100 MB at 1.7 MB/s).
AUTHENTICATED_BODY_SECONDS = 60.0

#: Every handler ``requires_auth`` wraps runs this code object.
_AUTH_WRAPPER_CODE = requires_auth(None, None)(lambda request: None).__code__  # type: ignore


def check_version() -> None:
    if rasa.__version__ != RASA_VERSION:
        raise RuntimeError(
            f"connectors/rasa_api.py reads Rasa {RASA_VERSION}'s requires_auth, found "
            f"{rasa.__version__}: re-read rasa/server.py"
        )


def token_guard(handler: Callable[..., Any]) -> Optional[RasaTokenGuard]:
    """The token check of a handler Rasa wraps in ``requires_auth``; None for any other."""
    if getattr(handler, "__code__", None) is not _AUTH_WRAPPER_CODE:
        return None
    captured = inspect.getclosurevars(handler).nonlocals
    return RasaTokenGuard(captured["app"], captured["token"])


class RasaTokenGuard:
    """``requires_auth``'s authentication, on the request head alone."""

    def __init__(self, app: Sanic, token: Optional[str]) -> None:
        self.app = app
        self.token = token

    async def __call__(self, request: Request) -> Optional[HTTPResponse]:
        """None when the request may send its body; Rasa's 401 otherwise."""
        provided = request.args.get("token")
        if self.token is not None and provided is not None:
            if hmac.compare_digest(provided.encode("utf-8"), self.token.encode("utf-8")):
                return None
        use_jwt = self.app.config.get("USE_JWT")
        if use_jwt and await call_potential_coroutine(
            self.app.ctx.auth.is_authenticated(request)
        ):
            return None
        if self.token is None and use_jwt is None:
            return None  # Rasa runs without authentication
        refusal = ErrorResponse(
            401,
            "NotAuthenticated",
            "User is not authenticated.",
            help_url=_docs("/user-guide/configuring-http-api/#security-considerations"),
        )
        return response.json(refusal.error_info, status=401)
