"""The one app factory: ``create_app()`` builds the Flask application of the HTTP API and the
report pages from service.settings.

Run it with any WSGI server, e.g. ``flask --app service.app run`` for a quick look. Every request
gets its own database session, closed (and rolled back, unless the view committed) when the
request ends. The Celery app made here only sends tasks: workers run ``service.celery_app``
(``celery -A service.celery_app worker``) and need no Flask.
"""
from __future__ import annotations

from typing import Optional

from celery import Celery
from flask import Flask

from . import db
from .api import blueprints
from .api.auth import SECURITY_SCHEME, TokenDocs, register_auth
from .api.common import AppState, IdConverter, LimitDocs, SchemaExtras, close_db
from .api.finished import BodyCache
from .api.links import LinkDocs
from .api.reads import read_sessions
from .api.response_cache import CachedReads, ResponseCache
from .api.operations import OperationIds
from .api.errors import VmemlabApi, register_error_handlers
from .api.storable import register_storable_check
from .api.report import blp as report_blp
from .api.schemas.experiments import ExperimentDocumentSchema
from .api.schemas.catalog import SPEC_COMPONENTS
from .celery_app import create_celery
from .change_feed import feed_for
from .engine import ENGINE_VERSION
from .prometheus import observe_request, register_metrics
from .settings import Settings, get_settings
from .web import register_web

API_PREFIX = "/api/v1"
PUBLISH_TIMEOUT_S = 3.0


def create_app(settings: Optional[Settings] = None) -> Flask:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = Flask("service")
    app.url_map.converters["int"] = IdConverter     # ids past what the database holds: 404, not 500
    app.config.update(
        API_TITLE="vmemlab",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        PROPAGATE_EXCEPTIONS=False,        # even under a debugger: errors are answered as JSON
        API_SPEC_OPTIONS={"info": {"description": f"vmemlab: virtualization-host memory policies compared "
                                                  f"(engine {ENGINE_VERSION}). Writes need a bearer token "
                                                  "(vmemlab tokens create), plugin administration an admin token. "
                                                  "Errors: code, status, message, errors by location and field path."}},
    )
    if settings.docs_ui_url:
        app.config.update(OPENAPI_SWAGGER_UI_PATH="docs", OPENAPI_SWAGGER_UI_URL=settings.docs_ui_url)

    celery = celery_init_app(app, settings)
    sessions = db.session_factory(settings.database_url)
    app.extensions["vmemlab"] = AppState(settings=settings, sessions=sessions, celery=celery,
                                         reads=read_sessions(settings.database_url))
    app.extensions["vmemlab.bodies"] = BodyCache()     # finished results' JSON (service.api.finished)
    app.teardown_appcontext(close_db)

    api = VmemlabApi(app, spec_kwargs={"extra_plugins": [TokenDocs(settings.open_reads),
                                                                LimitDocs(settings.max_page_size), LinkDocs(),
                                                                SchemaExtras(), OperationIds()]})
    api.spec.components.security_scheme(SECURITY_SCHEME, {
        "type": "http", "scheme": "bearer",
        "description": "A token from `vmemlab tokens create`: every write needs one, plugin registration an admin one."})
    api.spec.components.schema("ExperimentDocument", schema=ExperimentDocumentSchema)
    for name, component in SPEC_COMPONENTS.items():
        api.spec.components.schema(name, schema=component)
    for blp, prefix in blueprints():
        api.register_blueprint(blp, url_prefix=prefix)
    app.register_blueprint(report_blp)
    register_web(app)                # the pages for people: /, /create, /compare, /plugins
    register_metrics(app)            # GET /metrics; its request hooks first, so a 401 is timed too
    register_error_handlers(app)
    register_auth(app)
    register_storable_check(app)     # after auth: a request without a token is a 401 first
    feed = feed_for(db.get_engine(settings.database_url)) if settings.change_feed else None
    app.extensions["vmemlab.feed"] = feed
    if feed is not None:             # PostgreSQL: whole answers kept while nothing they show changes
        cache = app.extensions["vmemlab.answers"] = ResponseCache(feed)
        app.wsgi_app = CachedReads(app.wsgi_app, cache, settings.open_reads, observe_request)  # type: ignore[method-assign]
    return app


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """The Celery app the API sends run tasks with (``AppState.celery``). Publishing
    gives up after a few seconds when the broker is down, so that a request fails with 503
    instead of hanging. The API never waits for task results (runs write theirs to the database),
    so this app has no result backend."""
    celery = create_celery(settings)
    celery.conf.update(
        result_backend="disabled",
        broker_connection_timeout=PUBLISH_TIMEOUT_S,
        broker_connection_retry=False,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.25,
                                   "interval_max": 0.5},
    )
    if not settings.embedded_broker:
        celery.conf.broker_transport_options = {**celery.conf.broker_transport_options,
                                                "socket_connect_timeout": PUBLISH_TIMEOUT_S,
                                                "socket_timeout": PUBLISH_TIMEOUT_S}
        celery.conf.redis_socket_connect_timeout = PUBLISH_TIMEOUT_S
    return celery
