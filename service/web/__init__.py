"""The web front for people: server-rendered pages (Jinja2 templates, one small stylesheet, no
script and nothing from another site) over the same database and code as the API.

- ``/``: the history of experiments, sweeps and capacity searches (service.web.history);
- ``/create``: a scenario pasted or uploaded, policies picked with their parameters, posted to the
  API itself (service.web.create), then ``/experiments/<id>/progress`` until the runs end;
- ``/compare?runs=1,2``: any runs side by side with overlaid charts (service.web.compare);
- ``/plugins``: the registry, with an admin's actions (service.web.plugins);
- ``/traces`` and ``/traces/<id>``: uploaded traces, each with its LRU miss-ratio curve charted
  (service.web.traces);
- ``/sign-in``: the token, kept in the session cookie for the browser session (service.web.auth).

The report pages (``/experiments/<id>/report`` ...) stay in service.api.report; these pages link
to them. ``register_web`` also serves Swagger UI's files from the installed ``flask-swagger-ui``
distribution, so that ``/api/v1/docs`` renders without Internet access.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Optional

from flask import Blueprint, Flask, render_template, send_from_directory

from ..settings import DEFAULT_DOCS_UI_URL, Settings

web = Blueprint("web", __name__, template_folder="templates", static_folder="static",
                static_url_path="/web/static")

@web.errorhandler(404)
def not_found(error: Any) -> tuple[str, int]:
    """A person's page answers a person: HTML, not the API's JSON."""
    return render_template("error.html", heading="Not found", message=getattr(error, "description", "")), 404


# imported for their routes on ``web``
from . import auth, compare, create, history, plugins, traces  # noqa: E402,F401


def register_web(app: Flask) -> None:
    """Add the pages, the session's key and the local Swagger UI files to the app."""
    settings: Settings = app.extensions["vmemlab"].settings
    app.secret_key = settings.secret_key or stored_secret(settings.data_dir)
    # a session cookie (no expiry: gone when the browser closes), never sent by another site's form
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.register_blueprint(web)
    # first of all hooks: the API's token check must see the session's token on these pages
    app.before_request_funcs.setdefault(None, []).insert(0, auth.before_web_request)
    app.jinja_env.globals.update(csrf_token=auth.csrf_token, here=auth.here)
    folder = swagger_ui_folder()
    if folder is not None:
        # an endpoint of the docs blueprint, so it is as open as the docs page itself
        app.add_url_rule(DEFAULT_DOCS_UI_URL + "<path:filename>", endpoint="api-docs.swagger_ui_files",
                         view_func=lambda filename: send_from_directory(folder, filename, max_age=3600))


def swagger_ui_folder() -> Optional[Path]:
    """The swagger-ui-dist files that the flask-swagger-ui distribution installs, if it is installed."""
    try:
        import flask_swagger_ui
    except ImportError:
        return None
    folder = Path(flask_swagger_ui.__file__).parent / "dist"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def docs_ui_renders(settings: Settings) -> bool:
    """Whether ``/api/v1/docs`` will show: no docs page when off; with the default, only if the
    local files are installed; any other URL is the operator's choice, taken on trust."""
    if not settings.docs_ui_url:
        return False
    return settings.docs_ui_url != DEFAULT_DOCS_UI_URL or swagger_ui_folder() is not None


def stored_secret(data_dir: Path) -> str:
    """The key kept in ``<data_dir>/secret_key``, made on first use. Every gunicorn worker reads
    the same file, so a cookie signed by one is good in all; O_EXCL makes two starting at once
    agree on one key."""
    path = Path(data_dir) / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except PermissionError:
        # still serve; a key of this process alone only signs a person out when another answers
        logging.getLogger(__name__).warning("cannot write %s: set VMEMLAB_SECRET_KEY so that every API process "
                                            "accepts the same session cookies", path)
        return secrets.token_urlsafe(48)
    except FileExistsError:
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.02)        # the other process is writing it
        raise RuntimeError(f"{path} is empty: delete it, or set VMEMLAB_SECRET_KEY")
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
