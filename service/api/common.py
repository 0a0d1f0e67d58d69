"""What every blueprint shares: the request's database session, the settings and Celery app of the
running application, pagination of SQL queries, ETags from a row's version, and error helpers."""
from __future__ import annotations

import http
import logging
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, TypeVar

from apispec import BasePlugin
from celery import Celery
from flask import current_app, g, request
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest import Page, abort
from flask_smorest.exceptions import NotModified
from marshmallow import Schema, fields, pre_load, validate
from webargs.flaskparser import FlaskParser
from werkzeug.http import quote_etag
from werkzeug.routing import IntegerConverter
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from ..experiments import MAX_ID
from ..settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)


class OneSchemaParser(FlaskParser):
    """webargs makes a new instance of a schema given as a class on every request (flask-smorest's
    pagination parameters are one): a tenth of a millisecond per list request, deep-copying
    fields. Loading keeps no state on the schema, so one instance per class serves every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schemas: dict[type, Schema] = {}

    def _get_schema(self, argmap: Any, req: Any) -> Schema:
        if isinstance(argmap, type) and issubclass(argmap, Schema):
            schema = self._schemas.get(argmap)
            return schema if schema is not None else self._schemas.setdefault(argmap, argmap())
        return super()._get_schema(argmap, req)


class StrictParser(OneSchemaParser):
    """Query strings too refuse unknown parameters (webargs ignores them by default): a typo
    such as ``?stauts=failed`` is an error, not a filter silently left out."""

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None, "querystring": None}


# List pages: the schema lets page_size up to this; the running application's VMEMLAB_MAX_PAGE_SIZE
# (at most this) is what SQLPage enforces and what PageSizeDocs writes into the OpenAPI document.
PAGE_SIZE_CEILING = 10_000


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with the strict parser; every API blueprint is one."""

    ARGUMENTS_PARSER = StrictParser()
    PAGINATION_ARGUMENTS_PARSER = OneSchemaParser()
    DEFAULT_PAGINATION_PARAMETERS = {"page": 1, "page_size": 10, "max_page_size": PAGE_SIZE_CEILING}

    def _check_not_modified(self, etag: str) -> None:
        # a 304 carries the ETag the 200 would have (RFC 9110, 15.4.5): flask-smorest sends none
        if request.method in self.METHODS_CHECKING_NOT_MODIFIED and etag in request.if_none_match:
            not_modified = NotModified()
            not_modified.data = {"headers": {"ETag": quote_etag(etag)}}   # read by flask-smorest's handler
            raise not_modified


# Row ids are 32-bit (INTEGER primary keys on PostgreSQL): a larger id names nothing, and one past
# 64 bits would not even reach SQLite (OverflowError, a 500). Paths answer 404 for those (MAX_ID),
# query strings 422.


class IdConverter(IntegerConverter):
    """``<int:...>`` in every URL: a non-negative integer up to MAX_ID (documented as the maximum)."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def id_field(**kwargs: Any) -> fields.Integer:
    """A row id in a query string: 1 to MAX_ID."""
    return fields.Integer(validate=validate.Range(min=1, max=MAX_ID), **kwargs)


@dataclass(frozen=True)
class AppState:
    """What create_app puts in ``app.extensions["vmemlab"]``."""

    settings: Settings
    sessions: sessionmaker[Session]
    celery: Celery
    # sessions for the hot reads: autocommit, no pre-ping (service.api.reads)
    reads: Optional[sessionmaker[Session]] = None


def state() -> AppState:
    return current_app.extensions["vmemlab"]


def settings() -> Settings:
    return state().settings


def celery() -> Celery:
    return state().celery


def db() -> Session:
    """The request's session, opened on first use and closed (rolled back if not committed) when
    the request ends."""
    if "db_session" not in g:
        g.db_session = state().sessions()
    return g.db_session


def read_db() -> Session:
    """The request's session for reads (service.api.reads): each statement on its own, one round
    trip each. Only in views decorated with ``retrying_reads``; never for writes."""
    if "read_session" not in g:
        reads = state().reads
        g.read_session = reads() if reads is not None else db()
    return g.read_session


def close_db(_exc: Optional[BaseException] = None) -> None:
    for name in ("read_session", "db_session"):
        session = g.pop(name, None)
        if session is not None:
            try:
                session.close()
            except Exception:       # a connection that broke mid-request: the pool drops it; the answer is sent
                log.warning("closing the request's database session failed", exc_info=True)


def get_or_404(model: type[T], ident: Any, what: str, session: Optional[Session] = None) -> T:
    obj = (session or db()).get(model, ident)
    if obj is None:
        abort(404, message=f"no {what} with id {ident}")
    return obj


def invalid(location: str, errors: dict[str, list[str]], message: Optional[str] = None) -> NoReturn:
    """422 naming every field: ``errors`` maps field paths (``vms[1].memory_mb``) to messages."""
    abort(422, message=message or f"invalid {location}: {', '.join(errors)}", errors={location: errors})


def documented_errors(blp: Blueprint, *codes: int) -> Callable:
    """Document error statuses of a view with the one error shape."""
    def decorator(func: Callable) -> Callable:
        for code in codes:
            func = blp.alt_response(code, response=http.HTTPStatus(code).name)(func)
        return func
    return decorator


# --- ETags -----------------------------------------------------------------------------------------

def etag_of(obj: Any) -> dict[str, Any]:
    """An item's ETag is its id and version: every update bumps the version (SQLAlchemy's
    optimistic locking), so a stale copy never matches."""
    return {"id": obj.id, "version": obj.version}


# --- pagination ------------------------------------------------------------------------------------

class Listing:
    """A SELECT to page through; the views return one and SQLPage runs it."""

    def __init__(self, statement: Select):
        self.statement = statement


class SQLPage(Page):
    """Pages of a Listing: a COUNT for the total and OFFSET/LIMIT for the items, in the request's
    session or ``session``. (One query with ``count(*) OVER ()`` saves a round trip but makes
    PostgreSQL build every matching row: slower already at 1,000 runs.)"""

    def __init__(self, collection: Any, page_params: Any, session: Optional[Session] = None):
        limit = settings().max_page_size
        if page_params.page_size > limit:
            invalid("query", {"page_size": [f"must be at most {limit} (VMEMLAB_MAX_PAGE_SIZE)"]})
        self.session = session
        super().__init__(collection, page_params)

    @property
    def items(self) -> list[Any]:
        return [row[0] for row in self.rows]

    @property
    def rows(self) -> list[Any]:
        """The page's rows with every column the statement selects."""
        p = self.page_params
        if p.first_item > MAX_ID * p.page_size:
            return []       # past any table's rows, and an OFFSET too large for the database to take
        return list((self.session or db()).execute(self.collection.statement.offset(p.first_item).limit(p.page_size)))

    @property
    def item_count(self) -> int:
        counted = self.collection.statement.order_by(None).subquery()
        return (self.session or db()).scalar(select(func.count()).select_from(counted))


class LimitDocs(BasePlugin):
    """Documents the running application's limits: its page size limit in every ``page_size``
    parameter, and 413 on every operation that takes a request body."""

    def __init__(self, max_page_size: int):
        self.max_page_size = max_page_size

    def operation_helper(self, path: Optional[str] = None, operations: Optional[dict] = None, **_: Any) -> None:
        for operation in (operations or {}).values():
            if "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("413", "REQUEST_ENTITY_TOO_LARGE")
            for parameter in operation.get("parameters", []):
                if isinstance(parameter, dict) and parameter.get("name") == "page_size":
                    parameter.setdefault("schema", {})["maximum"] = self.max_page_size


class SchemaExtras(BasePlugin):
    """Adds a schema class's ``openapi_extra`` to its component: what marshmallow checks in code
    but apispec cannot read, such as a PATCH body needing at least one field (``minProperties``).

    And a nullable nested object is written ``allOf: [ref], nullable: true``: apispec writes
    ``anyOf: [ref, {type: object, nullable: true}]``, which lets any object through and gives
    generated clients a second, untyped model."""

    def schema_helper(self, name: str, definition: dict, **kwargs: Any) -> Optional[dict]:
        for prop in definition.get("properties", {}).values():
            choices = prop.get("anyOf") if isinstance(prop, dict) else None
            if choices and len(choices) == 2 and "$ref" in choices[0] and choices[1] == ANY_OBJECT_OR_NULL:
                del prop["anyOf"]
                prop.update(allOf=[choices[0]], nullable=True)
        schema = kwargs.get("schema")
        extra = getattr(schema if isinstance(schema, type) else type(schema), "openapi_extra", None)
        return {**definition, **extra} if extra else None


ANY_OBJECT_OR_NULL = {"type": "object", "nullable": True}


class QuerySchema(Schema):
    """Query strings: unknown parameters are refused like unknown body fields, except the
    pagination parameters, which @blp.paginate reads."""

    @pre_load
    def _without_pagination(self, data: Any, **_: Any) -> dict[str, Any]:
        return {key: data[key] for key in data if key not in ("page", "page_size")}
