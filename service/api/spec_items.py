"""The shape hosts and VM templates share: named documents in the scenario format, created,
listed, read, replaced (PUT), patched and deleted, with ETags against lost updates.

ETag policy: every item has a ``version`` that goes up on each update; its ETag is derived from
id and version. PUT, PATCH and DELETE *require* ``If-Match`` (428 without it, 412 when it does not
match the current version), and a write that loses a race to another one after the check is
refused with 412 as well (SQLAlchemy's optimistic locking on ``version``).
"""
from __future__ import annotations

from typing import Any, Callable

from flask import url_for
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from .common import Blueprint, Listing, SQLPage, db, documented_errors, etag_of, get_or_404
from .schemas.catalog import SpecItemQuerySchema


def spec_item_blueprint(*, name: str, what: str, model: type, id_arg: str, body: type[Schema],
                        patch_schema: type[Schema], response: type[Schema], users: Callable[[Any], int],
                        description: str) -> Blueprint:
    """A blueprint for ``model`` under the URL prefix it is registered with. ``users(item)`` is the
    number of experiments using the item; an item in use is not deleted (409)."""
    blp = Blueprint(name, name, description=description)
    plural = f"{what}s"

    @blp.route("")
    class Collection(MethodView):
        @blp.arguments(SpecItemQuerySchema, location="query")
        @blp.response(200, response(many=True))
        @blp.paginate(SQLPage)
        @blp.doc(summary=f"List {plural}", description="Sorted by id; filter by exact name or part of it.")
        def get(self, args: dict) -> Listing:
            statement = select(model).order_by(model.id)
            if "name" in args:
                statement = statement.where(model.name == args["name"])
            if "name_contains" in args:
                statement = statement.where(func.lower(model.name).contains(args["name_contains"].lower(),
                                                                             autoescape=True))
            return Listing(statement)

        @blp.etag
        @blp.arguments(body)
        @blp.response(201, response)
        @documented_errors(blp, 409)
        @blp.doc(summary=f"Create a {what}")
        def post(self, data: dict):
            item = model(**data)
            _unique_name(model, what, data["name"])
            _flush(item, what)
            db().commit()
            blp.set_etag(etag_of(item))
            return item, 201, {"Location": url_for(f".{name}_item", **{id_arg: item.id})}

    @blp.route(f"/<int:{id_arg}>", endpoint=f"{name}_item")
    class Item(MethodView):
        @blp.etag
        @blp.response(200, response)
        @documented_errors(blp, 404)
        @blp.doc(summary=f"Get a {what}")
        def get(self, **ids: int):
            item = get_or_404(model, ids[id_arg], what)
            blp.set_etag(etag_of(item))
            return item

        @blp.etag
        @blp.arguments(body)
        @blp.response(200, response)
        @documented_errors(blp, 404, 409)
        @blp.doc(summary=f"Replace a {what}", description="Needs If-Match with the ETag last read.")
        def put(self, data: dict, **ids: int):
            return _update(blp, model, what, ids[id_arg], data)

        @blp.etag
        @blp.arguments(patch_schema)
        @blp.response(200, response)
        @documented_errors(blp, 404, 409)
        @blp.doc(summary=f"Change some fields of a {what}", description="Needs If-Match with the ETag last read.")
        def patch(self, data: dict, **ids: int):
            return _update(blp, model, what, ids[id_arg], data)

        @blp.etag
        @blp.response(204)
        @documented_errors(blp, 404, 409)
        @blp.doc(summary=f"Delete a {what}",
                 description="Needs If-Match. Refused (409) while an experiment uses it: delete those first.")
        def delete(self, **ids: int) -> None:
            item = get_or_404(model, ids[id_arg], what)
            blp.check_etag(etag_of(item))
            count = users(item)
            if count:
                abort(409, message=f"{what} {item.id} ({item.name}) is used by {count} experiment(s); "
                                   "delete them first")
            db().delete(item)
            _flush(item, what)
            db().commit()

    return blp


def _update(blp: Blueprint, model: type, what: str, ident: int, data: dict):
    item = get_or_404(model, ident, what)
    blp.check_etag(etag_of(item))
    if "name" in data and data["name"] != item.name:
        _unique_name(model, what, data["name"])
    for key, value in data.items():
        setattr(item, key, value)
    _flush(item, what)
    db().commit()
    blp.set_etag(etag_of(item))
    return item


def _unique_name(model: type, what: str, name: str) -> None:
    other = db().scalar(select(model.id).where(model.name == name))
    if other is not None:
        abort(409, message=f"a {what} named {name!r} already exists (id {other})")


def _flush(item: Any, what: str) -> None:
    """Write now, turning a lost race into the status the client needs."""
    session = db()
    if item not in session:
        session.add(item)
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        abort(412, message=f"the {what} was changed by another request; read it again and retry")
    except IntegrityError:
        session.rollback()
        abort(409, message=f"the {what} conflicts with a stored one (its name is taken, or it is in use)")
