"""The token of a person using the pages: asked for once, kept in Flask's signed session cookie
(a browser-session cookie: it goes when the browser closes), and handed to the API's own check.

Flask's session cookie is signed, not encrypted: anyone who sees the cookie (a proxy's log, a
shared machine) could read what is in it. The token is therefore kept encrypted (Fernet, from the
``cryptography`` package, with a key derived from the app's secret key by HKDF), so the cookie
gives away no token. The cookie itself still signs its holder in to this server: it is good for
``TOKEN_TTL_S`` after signing in, and revoking the token ends it at once.

The API's ``before_request`` hook (service.api.auth) wants an ``Authorization`` header on every
write, and on reads when reads are closed. A browser's form cannot send one, so the hook here runs
first on the pages' endpoints: it checks the session's token (or the one being signed in with)
and puts it in the request's header; the API's check then judges it as it judges any client's.
Every form also carries a per-session CSRF token, since the cookie alone would let another site's
page post with it.
"""
from __future__ import annotations

import base64
import secrets
from typing import Optional
from urllib.parse import urlsplit

from flask import (current_app, flash, g, redirect, render_template, request, send_from_directory, session,
                   url_for)
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from werkzeug.wrappers import Response

from ..api.common import db, settings
from ..auth import ADMIN, Principal, authenticate
from . import web


# how long a sign-in lasts in a browser that stays open (the cookie itself goes when it closes)
TOKEN_TTL_S = 12 * 3600


def _fernet() -> Fernet:
    # a key of its own, derived, so that the signing key is never used to encrypt as well
    secret = current_app.secret_key
    secret = secret if isinstance(secret, bytes) else str(secret).encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"vmemlab web token").derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def _kept_token() -> Optional[str]:
    sealed = session.get("token")
    if not sealed:
        return None
    try:
        # a cookie copied off a machine works for TOKEN_TTL_S at most (Fernet keeps the time it
        # was sealed), not until the token is revoked
        return _fernet().decrypt(sealed.encode(), ttl=TOKEN_TTL_S).decode()
    except (InvalidToken, ValueError):
        # expired, sealed under another secret key (rotated), or not sealed at all (an older cookie)
        session.pop("token", None)
        return None


def _keep_token(token: str) -> None:
    session["token"] = _fernet().encrypt(token.encode()).decode()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def principal() -> Optional[Principal]:
    """Who is signed in on this request (checked by before_web_request), or None."""
    return g.get("web_principal")


def is_admin() -> bool:
    who = principal()
    return who is not None and who.role == ADMIN


def _safe_next(target: Optional[str]) -> str:
    """Only a path of this site: a sign-in link must not send anyone elsewhere."""
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.history")
    return target


def here() -> str:
    """This page's address with its query: where signing in comes back to (a shared /compare?runs=...)."""
    return request.full_path.rstrip("?")


def before_web_request() -> Optional[Response]:
    endpoint = request.endpoint or ""
    # the report pages (service.api.report) are read by the same people: the session's token too
    if not endpoint.startswith(("web.", "report.")):
        return None
    if endpoint == "web.static":
        # the stylesheet is public even when reads need a token (the API's check would refuse it)
        return send_from_directory(web.static_folder, request.view_args["filename"])
    kept = token = _kept_token()
    if request.method == "POST":
        expected = session.get("csrf")
        # SameSite=Lax: a form posted from another site arrives without the session, so without it
        if not expected or not secrets.compare_digest(request.form.get("csrf", "").encode(), expected.encode()):
            return _sign_in_page("The form had expired (or came from another site): sign in again.", 400)
        typed = request.form.get("token", "").strip()
        token = typed or token          # the sign-in page, or a form's token field when signed out
        if not token:
            flash("Writing needs a token: sign in first.")
            return redirect(url_for("web.sign_in", next=request.referrer and urlsplit(request.referrer).path))
    if token:
        who = authenticate(db(), token)
        if who is None:
            session.pop("token", None)
            if request.method == "POST" or not settings().open_reads:
                return _sign_in_page("That token is unknown or revoked.", 401)
            flash("The token this browser held is unknown or revoked now: signed out.", "error")
            return None
        g.web_principal = who
        request.environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        if token != kept:          # sealed again only when it changes (each sealing differs)
            _keep_token(token)
    elif not settings().open_reads:
        return _sign_in_page("Reading needs a token on this server: sign in.", 401)
    return None


def _sign_in_page(error: Optional[str], status: int) -> Response:
    response = current_app.make_response(render_template(
        "sign_in.html", error=error, next=_safe_next(request.values.get("next") or here())))
    response.status_code = status
    return response


@web.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if request.method == "GET":
        return render_template("sign_in.html", error=None, next=_safe_next(request.args.get("next")))
    who = principal()          # the token was checked and kept before this view ran
    flash(f"Signed in with token {who.name!r} ({who.role}); it is kept until the browser closes (12 hours at most).")
    return redirect(_safe_next(request.form.get("next")))


@web.post("/sign-out")
def sign_out():
    session.clear()
    flash("Signed out: this browser no longer holds the token.")
    return redirect(url_for("web.history"))
