"""Finding policies: every policy, built-in or third-party, is an entry point in the group
``vmemlab.policies`` of an installed distribution. Nothing else is ever imported by name."""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .sdk import Policy, PolicyParameterError

GROUP = "vmemlab.policies"
DEFAULT_POLICY = "static"       # the baseline: runs when no policy is named, compared against


class UnknownPolicyError(LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown policy {name!r}; installed: {', '.join(known) or 'none'}")
        self.name = name


class BrokenPolicyError(RuntimeError):
    pass


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    version: str
    distribution: str
    distribution_version: str
    entry_point: str
    summary: str
    trusts_guest: bool
    parameters: dict[str, Any]


_cache_lock = threading.Lock()
_cache: tuple[Any, dict[str, EntryPoint]] = (None, {})


def _search_path_state() -> tuple:
    """What the installed distributions are read from: the search path and each folder's
    modification time (installing or removing a distribution changes its folder's)."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def entry_points_by_name() -> dict[str, EntryPoint]:
    """The group's entry points by name. Reading them scans every installed distribution's
    metadata (about 10 ms), so the answer is kept until the search path or one of its folders
    changes."""
    global _cache
    key = _search_path_state()
    with _cache_lock:
        if _cache[0] == key:
            return dict(_cache[1])
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    with _cache_lock:
        _cache = (key, found)
    return dict(found)



# Trust levels as each policy class declared them when it was first loaded in this process, and
# the plugins whose import changed another class's (they stay broken until the process restarts).
_declared_trust: dict[type, object] = {Policy: False}
_tainted: dict[str, str] = {}
_load_lock = threading.RLock()


def restore_declared_trust() -> list[str]:
    """Put back the trust level every loaded policy class declared; the classes that had changed."""
    changed = []
    for cls, declared in _declared_trust.items():
        if vars(cls).get("trusts_guest", declared) is not declared:
            changed.append(f"{cls.__module__}.{cls.__qualname__}")
            cls.trusts_guest = declared          # put back what it declared
    return changed


def load_policy(name: str) -> type[Policy]:
    eps = entry_points_by_name()
    if name not in eps:
        raise UnknownPolicyError(name, sorted(eps))
    with _load_lock:
        if name in _tainted:
            raise BrokenPolicyError(_tainted[name])
        restore_declared_trust()          # undo what ran before (the engine undoes a hook's change itself)
        try:
            cls = eps[name].load()
        except Exception as exc:  # a broken third-party package must not look like "unknown"
            raise BrokenPolicyError(f"policy {name!r} ({eps[name].value}) failed to import: {exc}") from exc
        finally:
            # importing a plugin must not change what other policies declare (their trust level)
            changed = restore_declared_trust()
        if changed:
            _tainted[name] = (f"policy {name!r} ({eps[name].value}): importing it changed trusts_guest of "
                              f"{', '.join(changed)} (put back; the plugin stays refused until the process restarts)")
            raise BrokenPolicyError(_tainted[name])
        if isinstance(cls, type) and issubclass(cls, Policy):
            _declared_trust.setdefault(cls, vars(cls).get("trusts_guest", cls.trusts_guest))
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise BrokenPolicyError(f"entry point {name!r} ({eps[name].value}) is not a vmemlab Policy subclass")
    if cls.name != name:
        raise BrokenPolicyError(f"entry point {name!r} loads a policy that calls itself {cls.name!r}")
    return cls


@dataclass(frozen=True)
class BrokenPolicy:
    """An entry point in the group whose code does not load: listed, never run."""

    name: str
    entry_point: str
    distribution: str
    error: str


def broken_policies() -> list[BrokenPolicy]:
    out = []
    for name, ep in sorted(entry_points_by_name().items()):
        try:
            load_policy(name)
        except BrokenPolicyError as exc:
            out.append(BrokenPolicy(name, ep.value, ep.dist.name if ep.dist else "", str(exc)))
    return out


def installed_policies() -> list[PolicyInfo]:
    """Every policy that loads. One broken third-party package must not hide the others: those
    that fail to import are left out here and reported by ``broken_policies()``."""
    out = []
    for name, ep in sorted(entry_points_by_name().items()):
        try:
            cls = load_policy(name)
        except BrokenPolicyError:
            continue
        dist = ep.dist
        out.append(PolicyInfo(
            name=name, version=cls.version,
            distribution=dist.name if dist else "", distribution_version=dist.version if dist else "",
            entry_point=ep.value, summary=cls.summary, trusts_guest=cls.trusts_guest,
            parameters=cls.parameter_schema()))
    return out


def policy_event_problems(events: Any, chosen: list[dict]) -> dict[str, list[str]]:
    """A scenario's policy events checked against the policies run: each names an installed
    policy, and for every run of that policy its changes, merged over the run's parameters,
    validate against the policy's schema. ``{"policy_events[0].params.idle_tax_pct": [...]}``."""
    from .scenario import flatten_errors

    problems: dict[str, list[str]] = {}
    known = entry_points_by_name()
    for j, event in enumerate(events):
        if event.policy not in known:
            problems[f"policy_events[{j}].policy"] = [
                f"unknown policy {event.policy!r}; installed: {', '.join(sorted(known)) or 'none'}"]
            continue
        for choice in chosen:
            if choice["name"] != event.policy:
                continue
            try:
                cls = load_policy(event.policy)
                cls.load_params({**cls.load_params(choice.get("params")), **event.changes})
            except BrokenPolicyError as exc:
                problems.setdefault(f"policy_events[{j}].policy", []).append(str(exc))
            except PolicyParameterError as err:
                for path, messages in flatten_errors(err.messages, f"policy_events[{j}].params").items():
                    problems.setdefault(path, []).extend(m for m in messages if m not in problems.get(path, []))
    return problems
