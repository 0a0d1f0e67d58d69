"""``/api/v1/plugins``: the plugin registry (service.registry).

Policies are installed Python distributions advertising an entry point in the group
``vmemlab.policies``. Listing shows every one of them with its status: ``enabled`` (experiments may
use it), ``available`` (installed, not registered), ``disabled``, ``version_changed`` (the installed
version is not the approved one), ``broken`` (it does not load) or ``missing``. Registering names
an installed entry point and approves its installed version: no code is ever uploaded, and nothing
is imported but the entry point that an installed distribution advertises under that name.
"""
from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import registry
from ..models import Run
from .. import policies
from ..policies import GROUP
from .auth import admin_only
from .common import Blueprint, db, documented_errors, invalid, settings
from .schemas.plugins import PluginPatchSchema, PluginQuerySchema, PluginRegisterSchema, PluginSchema

blp = Blueprint("plugins", __name__, description="Policies installed as entry points in the group vmemlab.policies.")


def _entries() -> list[registry.Listing]:
    """The registry brought up to date with what is installed. Two requests doing it at once: the
    loser reads the winner's rows."""
    try:
        entries = registry.listing(db(), settings().plugins_auto_enable)
        db().commit()
        return entries
    except IntegrityError:
        db().rollback()
        return registry.listing(db(), settings().plugins_auto_enable)


def _shown(entry: registry.Listing, with_runs: bool = False) -> dict[str, Any]:
    row = entry.row
    shown: dict[str, Any] = {"name": entry.name, "status": entry.status, "reason": entry.reason,
                             "installed": entry.installed, "builtin": entry.builtin,
                             "entry_point": entry.entry_point, "distribution": entry.distribution,
                             "enabled": entry.status == "enabled"}
    if row is not None:
        shown.update(version=row.version, approved_version=row.approved_version,
                     distribution_version=row.distribution_version, summary=row.summary,
                     trusts_guest=row.trusts_guest, parameters=row.parameters,
                     registered_at=row.registered_at, updated_at=row.updated_at)
    if with_runs:
        shown["runs_by_version"] = _runs_by_version(entry.name)
    return shown


def _runs_by_version(name: str) -> list[dict[str, Any]]:
    """Which runs used which version of the plugin: a result can be traced to its code."""
    counts = db().execute(
        select(Run.policy_version, func.count(Run.id), func.min(Run.id), func.max(Run.id))
        .where(Run.policy_name == name).group_by(Run.policy_version).order_by(func.min(Run.id))).all()
    return [{"version": version, "runs": count, "first_run_id": first, "last_run_id": last,
             "runs_url": url_for("runs.Runs", policy=name, plugin_version=version)}
            for version, count, first, last in counts]


def _entry(name: str) -> registry.Listing:
    entry = next((e for e in _entries() if e.name == name), None)
    if entry is None:
        abort(404, message=f"no plugin named {name!r}; installed: {', '.join(sorted(policies.entry_points_by_name()))}. "
                           f"{registry.RESTART_HINT.capitalize()}")
    return entry


def _restated(entry: registry.Listing) -> registry.Listing:
    """The entry after an admin changed its row: installed and loading, as it was just found."""
    entry.status, entry.reason = registry.status(entry.row, True, None)
    return entry


def _not_installed(name: str) -> None:
    invalid("json", {"name": [f"no installed distribution advertises a policy named {name!r} in the entry-point "
                              f"group {GROUP}; install its package first (installed: "
                              f"{', '.join(sorted(policies.entry_points_by_name())) or 'none'}); {registry.RESTART_HINT}"]})


@blp.route("")
class Plugins(MethodView):
    @blp.arguments(PluginQuerySchema, location="query")
    @blp.response(200, PluginSchema(many=True))
    @blp.doc(summary="List every policy plugin", description="Every installed policy and every registration, "
             "with status (enabled, available, disabled, version_changed, broken, missing), the reason for it, "
             "version, distribution and parameter schema. Only enabled plugins may be used in experiments.")
    def get(self, args: dict) -> list[dict[str, Any]]:
        shown = [_shown(e) for e in _entries()]
        for key in ("enabled", "installed", "status"):
            if key in args:
                shown = [s for s in shown if s[key] == args[key]]
        return shown

    @blp.arguments(PluginRegisterSchema)
    @blp.response(201, PluginSchema)
    @blp.alt_response(200, schema=PluginSchema, description="it was registered in this version already", success=True)
    @blp.doc(summary="Register an installed policy by its entry-point name",
             description="Approves the installed version of the policy, so experiments may use it (201; 200 if it "
                         "was enabled in this version already). The name must be advertised by an installed "
                         "distribution in the entry-point group vmemlab.policies and load (422 otherwise, with the "
                         "reason); import paths are refused. `enabled: false` records it disabled. Needs an admin "
                         "token.")
    @admin_only
    def post(self, data: dict):
        name = data["name"]
        if name not in policies.entry_points_by_name():
            _not_installed(name)
        entry = _entry(name)
        if entry.status == "broken" or entry.row is None:
            invalid("json", {"name": [f"plugin {name!r} cannot be registered: it does not load: {entry.reason}"]})
        row = entry.row
        created = row.approved_version != row.version       # not registered in this version before
        if data.get("enabled", True):
            registry.approve(row)
        else:
            row.enabled = False
            row.approved_version = row.version
        db().commit()
        return (_shown(_restated(entry)), 201 if created else 200,
                {"Location": url_for(".PluginItem", name=name)})


@blp.route("/<string:name>")
class PluginItem(MethodView):
    @blp.response(200, PluginSchema)
    @documented_errors(blp, 404, 422)
    @blp.doc(summary="Get a plugin", description="Its status and, in runs_by_version, which runs used which "
             "version of it.")
    def get(self, name: str) -> dict[str, Any]:
        return _shown(_entry(name), with_runs=True)

    @blp.arguments(PluginPatchSchema)
    @blp.response(200, PluginSchema)
    @documented_errors(blp, 404, 422)
    @blp.doc(summary="Enable or disable a plugin", description="Enabling approves the installed version. Runs "
             "already queued keep running; new experiments naming a plugin that is not enabled are refused. "
             "Needs an admin token.")
    @admin_only
    def patch(self, data: dict, name: str) -> dict[str, Any]:
        entry = _entry(name)
        if entry.row is None or entry.status in ("broken", "missing"):
            invalid("json", {"enabled": [f"plugin {name!r} is {entry.status}: {entry.reason}"]})
        if data["enabled"]:
            registry.approve(entry.row)
        else:
            entry.row.enabled = False
        db().commit()
        return _shown(_restated(entry), with_runs=True)

