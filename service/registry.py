"""The plugin registry: which installed policies experiments may use.

Installing a distribution makes its policy *available*, nothing more: a third-party policy is
usable only once an admin registers it (``POST /api/v1/plugins``), and only in the version the
admin approved. The built-in policies ship with the service and are enabled from the start.
``VMEMLAB_PLUGINS_AUTO_ENABLE`` chooses otherwise: ``builtin`` (default), ``all`` (every installed
policy, every version, as before approvals existed) or ``none`` (a closed deployment: an admin
approves even the built-ins).

A registration's status, computed from the row and what is installed now:

- ``enabled``: experiments may use it;
- ``available``: installed, never approved;
- ``disabled``: an admin turned it off;
- ``version_changed``: enabled, but the installed version is not the one approved;
- ``broken``: its entry point does not load (the import error's first line is the reason);
- ``missing``: registered once, no installed distribution provides it any more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import PluginRegistration
from . import policies

BUILTIN_DISTRIBUTION = "vmemlab"
AUTO_ENABLE = ("builtin", "all", "none")
STATUSES = ("enabled", "available", "disabled", "version_changed", "broken", "missing")
RESTART_HINT = ("a package installed while the service runs is found at the next request, but one installed "
                "in editable mode or upgraded in place needs the API and every worker restarted")


@dataclass
class Listing:
    """One entry of the registry as the API shows it: the row (None for a broken plugin that was
    never registered) and what is true of it now."""

    name: str
    row: Optional[PluginRegistration]
    status: str
    reason: str
    installed: bool
    builtin: bool
    entry_point: str = ""
    distribution: str = ""


def auto_approves(setting: str, distribution: str) -> bool:
    return setting == "all" or (setting == "builtin" and distribution == BUILTIN_DISTRIBUTION)


def sync(session: Session, auto_enable: str) -> list[PluginRegistration]:
    """Record every installed policy that loads: a new one is enabled only if ``auto_enable``
    approves it; a known one gets its version, distribution and parameters refreshed, and its new
    version approved only if ``auto_enable`` approves it (otherwise it shows as version_changed).
    Registrations whose entry point is gone stay, so runs that used them keep their meaning."""
    rows = {r.name: r for r in session.scalars(select(PluginRegistration))}
    for info in policies.installed_policies():
        auto = auto_approves(auto_enable, info.distribution)
        row = rows.get(info.name)
        if row is None:
            row = rows[info.name] = PluginRegistration(name=info.name, enabled=auto,
                                                       approved_version=info.version if auto else None)
            session.add(row)
        elif auto and row.enabled and row.approved_version != info.version:
            row.approved_version = info.version
        for key in ("version", "distribution", "distribution_version", "entry_point", "summary", "trusts_guest",
                    "parameters"):
            if getattr(row, key) != getattr(info, key):
                setattr(row, key, getattr(info, key))
    session.flush()
    return sorted(rows.values(), key=lambda r: r.name)


def status(row: PluginRegistration, installed: bool, broken_reason: Optional[str],
           version: Optional[str] = None) -> tuple[str, str]:
    """(status, reason) of a registration, for the installed ``version`` (default the one the row
    last saw); the reason says what to do about it."""
    version = row.version if version is None else version
    if broken_reason is not None:
        return "broken", broken_reason
    if not installed:
        return "missing", "no installed distribution provides it any more; runs that used it keep their results"
    if row.approved_version is None and not row.enabled:
        return "available", (f"installed ({row.distribution} {row.distribution_version}) but not registered: an admin "
                             "registers it with POST /api/v1/plugins before experiments may use it")
    if not row.enabled:
        return "disabled", "disabled by an admin (PATCH /api/v1/plugins/NAME {\"enabled\": true} enables it)"
    if row.approved_version != version:
        return "version_changed", (f"version {version} is installed but version {row.approved_version} was approved: "
                                   "an admin approves the new version with POST /api/v1/plugins")
    return "enabled", ""


def listing(session: Session, auto_enable: str) -> list[Listing]:
    """Every registration and every broken entry point, with its status, by name."""
    rows = sync(session, auto_enable)
    installed = set(policies.entry_points_by_name())
    broken = {b.name: b for b in policies.broken_policies()}
    out = []
    for row in rows:
        fault = broken.get(row.name)
        state, reason = status(row, row.name in installed, None if fault is None else _broken_reason(fault.error))
        out.append(Listing(row.name, row, state, reason, row.name in installed,
                           row.distribution == BUILTIN_DISTRIBUTION, row.entry_point, row.distribution))
    for name, fault in broken.items():
        if name not in {r.name for r in rows}:
            out.append(Listing(name, None, "broken", _broken_reason(fault.error), True,
                               fault.distribution == BUILTIN_DISTRIBUTION, fault.entry_point, fault.distribution))
    return sorted(out, key=lambda entry: entry.name)


def approve(row: PluginRegistration) -> None:
    """Enable the plugin in its installed version."""
    row.enabled = True
    row.approved_version = row.version


def refusal(session: Session, name: str, version: str, distribution: str, auto_enable: str) -> Optional[str]:
    """Why an experiment may not use the policy ``name`` installed in ``version``; None if it may.
    Reads the registry without writing it: what the next listing would record (a policy not yet
    listed, a new version the setting approves) is judged as that listing would judge it."""
    row = session.scalar(select(PluginRegistration).where(PluginRegistration.name == name))
    auto = auto_approves(auto_enable, distribution)
    if row is None:
        row = PluginRegistration(name=name, version=version, distribution=distribution, distribution_version="",
                                 enabled=auto, approved_version=version if auto else None)
    elif auto and row.enabled:
        return None
    state, reason = status(row, True, None, version)
    return None if state == "enabled" else f"policy {name!r} is {state}: {reason}"


def _broken_reason(error: str) -> str:
    first = error.strip().splitlines()[0] if error.strip() else "it does not load"
    return f"{first} ({RESTART_HINT})"
