"""Who may do what over HTTP.

- Reads (GET, HEAD, OPTIONS) are open unless ``VMEMLAB_OPEN_READS=0``; the health check and the
  OpenAPI document are always open.
- Every other method needs ``Authorization: Bearer <token>`` with a ``write`` or ``admin`` token.
- Views marked ``@admin_only`` (registering, enabling and disabling plugins) need an ``admin`` token.

The check runs before the request body is read, so nobody without a token learns anything from
validation errors. The OpenAPI document says the same: ``bearerAuth`` security, 401 and 403
responses, and ``x-required-role`` on each operation that needs a token (``TokenDocs``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from apispec import BasePlugin
from flask import Flask, current_app, request
from flask_smorest import abort

from ..auth import ADMIN, WRITE, Principal, authenticate
from .common import db, read_db, settings
from .reads import read_again_once

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ = "read"
ROLE_ATTRIBUTE = "vmemlab_required_role"
ALWAYS_OPEN = ("health.", "api-docs.")       # endpoints of the health check and the OpenAPI document
SECURITY_SCHEME = "bearerAuth"


def admin_only(func: Callable) -> Callable:
    """Mark a view method as needing an admin token."""
    setattr(func, ROLE_ATTRIBUTE, ADMIN)
    docs = getattr(func, "_apidoc", {})
    docs.setdefault("manual_doc", {})["x-required-role"] = ADMIN
    func._apidoc = docs  # type: ignore[attr-defined]
    return func


def required_role(method: str, view: Optional[Callable], open_reads: bool) -> Optional[str]:
    """``admin``, ``write``, ``read`` (a token of any role) or None (no token needed)."""
    view_class = getattr(view, "view_class", None)
    handler = getattr(view_class, "get" if method == "HEAD" else method.lower(), None) if view_class else view
    return getattr(handler, ROLE_ATTRIBUTE, None) or default_role(method, open_reads)


def default_role(method: str, open_reads: bool) -> Optional[str]:
    """Writes need a write token; reads none, or any token when reads are closed."""
    if method.upper() not in SAFE_METHODS:
        return WRITE
    return None if open_reads else READ


def enforce_tokens() -> None:
    """A ``before_request`` hook: 401 without a valid token where one is needed, 403 without the role."""
    if request.routing_exception is not None or request.endpoint is None:
        return                                  # 404 and 405 as usual
    if request.endpoint.startswith(ALWAYS_OPEN) or request.endpoint == "static":
        return
    role = required_role(request.method, current_app.view_functions.get(request.endpoint), settings().open_reads)
    if role is None:
        return
    principal = _principal()
    if role == ADMIN and principal.role != ADMIN:
        abort(403, message=f"this request needs an admin token; token {principal.name!r} has the role "
                           f"{principal.role} (vmemlab tokens create --role admin)")


def _principal() -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        _unauthorized("this request needs a token: send the header 'Authorization: Bearer <token>' "
                      "(create one with: vmemlab tokens create --name NAME)", None)
    if scheme.lower() != "bearer" or not token.strip():
        _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
    if request.method in SAFE_METHODS:      # one round trip, no transaction (service.api.reads)
        principal = read_again_once(lambda: authenticate(read_db(), token.strip()))
    else:
        principal = authenticate(db(), token.strip())
    if principal is None:
        _unauthorized("the bearer token is unknown or revoked", "invalid_token")
    return principal


def _unauthorized(message: str, error: Optional[str]) -> None:
    challenge = 'Bearer realm="vmemlab"' + (f', error="{error}"' if error else "")
    abort(401, message=message, headers={"WWW-Authenticate": challenge})


def register_auth(app: Flask) -> None:
    app.before_request(enforce_tokens)


class TokenDocs(BasePlugin):
    """Documents every operation's token: security requirement, role, 401 and 403."""

    def __init__(self, open_reads: bool):
        self.open_reads = open_reads

    def operation_helper(self, path: Optional[str] = None, operations: Optional[dict] = None, **_: Any) -> None:
        if path and path.rstrip("/").endswith(("/health", "/openapi.json")):
            return
        for method, operation in (operations or {}).items():
            role = operation.get("x-required-role") or default_role(method, self.open_reads)
            if role is None:
                continue
            operation["x-required-role"] = role
            operation["security"] = [{SECURITY_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", "UNAUTHORIZED")
            if role == ADMIN:
                responses.setdefault("403", "FORBIDDEN")
