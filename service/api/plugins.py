"""``/api/v1/plugins``: the plugin registry.

Policies are installed Python distributions advertising an entry point in the group
``vmemlab.policies``; the registry lists them (listing synchronises it with what is installed), and
remembers which are enabled. Registering names an installed entry point: no code is ever uploaded,
and nothing is imported but the entry point that an installed distribution advertises under that
name. Experiments naming a disabled plugin are refused (422).
"""
from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..catalog import sync_plugins
from ..models import PluginRegistration
from ..policies import GROUP, BrokenPolicyError, entry_points_by_name
from .auth import admin_only
from .common import Blueprint, db, documented_errors, invalid
from .schemas.plugins import PluginPatchSchema, PluginQuerySchema, PluginRegisterSchema, PluginSchema

blp = Blueprint("plugins", __name__, description="Policies installed as entry points in the group vmemlab.policies.")


def installed_names() -> set[str]:
    """Names advertised in the group, read from the installed distributions' metadata (no import)."""
    return set(entry_points_by_name())


def _sync() -> list[PluginRegistration]:
    """Bring the registry up to date with the installed policies, and return every registration
    with ``installed`` set. Two requests doing it at once: the loser reads the winner's rows."""
    try:
        rows = sync_plugins(db())
        db().commit()
    except BrokenPolicyError as exc:
        db().rollback()
        abort(500, message=f"an installed plugin cannot be loaded: {exc}")
    except IntegrityError:
        db().rollback()
        rows = list(db().scalars(select(PluginRegistration).order_by(PluginRegistration.name)))
    names = installed_names()
    for row in rows:
        row.installed = row.name in names
    return rows


def _registration(name: str) -> PluginRegistration:
    row = next((r for r in _sync() if r.name == name), None)
    if row is None:
        abort(404, message=f"no plugin named {name!r}; installed: {', '.join(sorted(installed_names()))}")
    return row


@blp.route("")
class Plugins(MethodView):
    @blp.arguments(PluginQuerySchema, location="query")
    @blp.response(200, PluginSchema(many=True))
    @blp.doc(summary="List every policy plugin", description="Every installed policy, with version, "
             "distribution, parameter schema and whether experiments may use it.")
    def get(self, args: dict) -> list[PluginRegistration]:
        rows = _sync()
        for key in ("enabled", "installed"):
            if key in args:
                rows = [r for r in rows if getattr(r, key) == args[key]]
        return rows

    @blp.arguments(PluginRegisterSchema)
    @blp.response(201, PluginSchema)
    @blp.alt_response(200, schema=PluginSchema, description="it was registered already", success=True)
    @blp.doc(summary="Register an installed policy by its entry-point name",
             description="The name must be advertised by an installed distribution in the entry-point group "
                         "vmemlab.policies (422 otherwise); import paths are refused. Needs an admin token.")
    @admin_only
    def post(self, data: dict):
        name = data["name"]
        if name not in installed_names():
            invalid("json", {"name": [f"no installed distribution advertises a policy named {name!r} in the "
                                      f"entry-point group {GROUP}; install its package first (installed: "
                                      f"{', '.join(sorted(installed_names()))})"]})
        known = db().scalar(select(PluginRegistration.id).where(PluginRegistration.name == name)) is not None
        row = _registration(name)
        if "enabled" in data:
            row.enabled = data["enabled"]
            db().commit()
        return row, 200 if known else 201, {"Location": url_for(".PluginItem", name=name)}


@blp.route("/<string:name>")
class PluginItem(MethodView):
    @blp.response(200, PluginSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Get a plugin")
    def get(self, name: str) -> PluginRegistration:
        return _registration(name)

    @blp.arguments(PluginPatchSchema)
    @blp.response(200, PluginSchema)
    @documented_errors(blp, 404)
    @blp.doc(summary="Enable or disable a plugin", description="Runs already queued keep running; new "
             "experiments naming a disabled plugin are refused. Needs an admin token.")
    @admin_only
    def patch(self, data: dict, name: str) -> PluginRegistration:
        row = _registration(name)
        row.enabled = data["enabled"]
        db().commit()
        return row
