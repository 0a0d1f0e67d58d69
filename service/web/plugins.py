"""``/plugins``: every policy plugin with its status (enabled, available, disabled,
version_changed, broken, missing) and why, versions, distribution, trust level and parameters.
With an admin token, buttons register, enable or disable one: each posts to the API's own
``/api/v1/plugins`` operations in-process, so the same checks apply."""

from __future__ import annotations

from urllib.parse import quote

from flask import flash, redirect, render_template, request, url_for

from .. import registry
from ..api.common import db, settings
from . import web
from .auth import is_admin, principal
from .common import call_api
from .forms import fields_of

# what an admin may do to a plugin in each status: (action, button text)
ACTIONS = {"available": [("register", "Register")], "version_changed": [("register", "Approve this version"),
                                                                         ("disable", "Disable")],
           "disabled": [("enable", "Enable")], "enabled": [("disable", "Disable")]}


@web.get("/plugins")
def plugins():
    entries = registry.listing(db(), settings().plugins_auto_enable)
    db().commit()
    shown = []
    for entry in entries:
        row = entry.row
        shown.append({"name": entry.name, "status": entry.status, "reason": entry.reason,
                      "builtin": entry.builtin, "distribution": entry.distribution, "entry_point": entry.entry_point,
                      "version": row.version if row else "-", "approved_version": row.approved_version if row else None,
                      "distribution_version": row.distribution_version if row else "",
                      "summary": row.summary if row else "", "trusts_guest": row.trusts_guest if row else None,
                      "fields": fields_of(entry.name, row.parameters or {}) if row else [],
                      "actions": ACTIONS.get(entry.status, [])})
    return render_template("plugins.html", plugins=shown, admin=is_admin(), signed_in=principal() is not None)


@web.post("/plugins/<string:name>")
def plugin_action(name: str):
    action = request.form.get("action", "")
    if action == "register":
        status, answer = call_api("POST", "/api/v1/plugins", {"name": name})
    elif action in ("enable", "disable"):
        status, answer = call_api("PATCH", f"/api/v1/plugins/{quote(name, safe='')}", {"enabled": action == "enable"})
    else:
        status, answer = 400, {"message": f"unknown action {action!r}"}
    answer = answer or {}
    if status in (200, 201):
        flash(f"Plugin {name}: {answer.get('status', 'done')}.")
    else:
        errors = "; ".join(m for messages in (answer.get("errors") or {}).get("json", {}).values() for m in messages)
        flash(f"Plugin {name}: the API answered {status}: {errors or answer.get('message', '')}", "error")
    return redirect(url_for("web.plugins"))
