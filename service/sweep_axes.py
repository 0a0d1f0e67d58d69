"""Sweep axes: what a sweep varies, named by a path into its document, and the points they span.

A sweep's document is an experiment document (the scenario format plus ``policies``). An axis is
a path into it and the values it takes there::

    host.memory_mb                              a field
    vms[web].count                              the VM entry named web (or vms[0], by position)
    vms[sql].workload.phases[0].footprint_mb    lists of unnamed things by position
    policies[esx].params.idle_tax_pct           the policy named esx; its params may be new

Every container on the path must exist; the last key of an object may be new (a field left to
its default). Values are a list, or ``start``/``stop``/``step`` (stop included when the steps
land on it). The points are the cartesian product of the axes, the first axis varying slowest.

No Flask, Celery or database: the CLI sweeps offline with this, the service stores the points.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

MAX_VALUES = 10_000          # of one axis, before any limit on the sweep's points

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])*)")
_SELECTOR = re.compile(r"\[([^\[\]]*)\]")
_DIGITS = re.compile(r"[0-9]{1,9}")


class AxisError(ValueError):
    """An axis that names nothing, or a value that cannot go where it names."""

    def __str__(self) -> str:
        # point_document adds the axis's position as a second argument: the message stays args[0]
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Axis:
    path: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        parse_path(self.path)
        if not self.values:
            raise AxisError("an axis needs at least one value")


def parse_path(path: str) -> list[str | int]:
    """``vms[web].count`` -> ``["vms", "web", "count"]``; a bracketed number is a position."""
    if not isinstance(path, str) or not path or len(path) > 500:
        raise AxisError("a path is a non-empty string such as host.memory_mb or vms[web].count")
    steps: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise AxisError(f"{path!r}: cannot read {segment!r}; write KEY, KEY[NAME] or KEY[INDEX] between dots")
        steps.append(match.group(1))
        for selector in _SELECTOR.findall(match.group(2)):
            if not selector:
                raise AxisError(f"{path!r}: empty brackets; name an entry ([web]) or a position ([0])")
            steps.append(int(selector) if _DIGITS.fullmatch(selector) else selector)
    return steps


def set_at(document: dict, path: str, value: Any) -> None:
    """Put ``value`` at ``path`` in ``document`` (changed in place). AxisError if the path names
    nothing there."""
    steps = parse_path(path)
    node: Any = document
    walked = ""
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if isinstance(step, str) and isinstance(node, dict):
            if last:
                node[step] = copy.deepcopy(value)
                return
            if step not in node:
                if step == "params" and "name" in node:        # a policy given without parameters
                    node["params"] = {}
                else:
                    raise AxisError(f"{path!r}: {_where(walked)} has no {step!r}")
            walked = f"{walked}.{step}" if walked else step
            node = node[step]
        elif isinstance(node, list):
            index = _entry(node, step, path, walked)
            walked = f"{walked}[{step}]"
            if last:
                node[index] = copy.deepcopy(value)
                return
            node = node[index]
        else:
            kind = "an object" if isinstance(node, dict) else type(node).__name__
            raise AxisError(f"{path!r}: {_where(walked)} is {kind}, not what {step!r} looks into")


def _entry(items: list, step: str | int, path: str, walked: str) -> int:
    if isinstance(step, int):
        if step >= len(items):
            raise AxisError(f"{path!r}: {_where(walked)} has {len(items)} entries, no [{step}]")
        return step
    named = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get("name") == step]
    if not named:
        names = [item.get("name") for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]
        known = f" (entries: {', '.join(names)})" if names else ""
        raise AxisError(f"{path!r}: no entry named {step!r} in {_where(walked)}{known}; a VM with count is "
                        "one entry, named as in the document")
    return named[0]


def _where(walked: str) -> str:
    return walked or "the document"


def axis_from_json(item: Any) -> Axis:
    """``{"path": P, "values": [...]}`` or ``{"path": P, "start": a, "stop": b, "step": c}``."""
    if not isinstance(item, dict):
        raise AxisError('an axis is an object: {"path": ..., "values": [...]} or {"path", "start", "stop", "step"}')
    unknown = set(item) - {"path", "values", "start", "stop", "step"}
    if unknown:
        raise AxisError(f"unknown keys {', '.join(sorted(map(str, unknown)))}; an axis has path and values, or "
                        "path, start, stop and step")
    path = item.get("path")
    parse_path(path)
    ranged = {"start", "stop", "step"} & set(item)
    if "values" in item:
        if ranged:
            raise AxisError("give values or start/stop/step, not both")
        values = item["values"]
        if not isinstance(values, list) or not values:
            raise AxisError("values must be a non-empty list")
        if len(values) > MAX_VALUES:
            raise AxisError(f"at most {MAX_VALUES} values on one axis")
        return Axis(path, tuple(values))
    if ranged != {"start", "stop", "step"}:
        raise AxisError("give values, or all of start, stop and step")
    return Axis(path, value_range(item["start"], item["stop"], item["step"]))


def value_range(start: Any, stop: Any, step: Any) -> tuple[Any, ...]:
    """start, start + step, ... up to stop (included when a step lands on it); integers stay
    integers."""
    numbers = (start, stop, step)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in numbers):
        raise AxisError("start, stop and step must be finite numbers")
    if step <= 0:
        raise AxisError("step must be positive")
    if stop < start:
        raise AxisError("stop must be at least start")
    steps = (stop - start) / step
    if not math.isfinite(steps):            # the span overflowed: far more than MAX_VALUES
        raise AxisError(f"more than {MAX_VALUES} values; at most {MAX_VALUES} on one axis")
    count = math.floor(steps + 1e-9) + 1
    if count > MAX_VALUES:
        raise AxisError(f"{count} values; at most {MAX_VALUES} on one axis")
    if all(isinstance(v, int) for v in numbers):
        return tuple(start + k * step for k in range(count))
    return tuple(round(start + k * step, 12) for k in range(count))


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:             # an integer beyond any float
        return False


def axis_from_text(text: str) -> Axis:
    """The CLI's ``PATH=V1,V2,...`` or ``PATH=START:STOP:STEP``; each value is read as JSON
    (numbers, true, "quoted") and otherwise kept as text."""
    path, sep, values = text.partition("=")
    if not sep or not values:
        raise AxisError(f"{text!r}: write PATH=V1,V2,... or PATH=START:STOP:STEP")
    parts = values.split(":")
    if len(parts) == 3 and all(_is_number(p) for p in parts):
        return Axis(path.strip(), value_range(*(json.loads(p) for p in parts)))
    return Axis(path.strip(), tuple(_json_or_text(v.strip()) for v in values.split(",")))


def _is_number(text: str) -> bool:
    value = _json_or_text(text.strip())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def point_count(axes: Sequence[Axis]) -> int:
    return math.prod(len(axis.values) for axis in axes)


def points(axes: Sequence[Axis]) -> Iterator[tuple[Any, ...]]:
    """Each point's values, one per axis; the first axis varies slowest."""
    return itertools.product(*(axis.values for axis in axes))


def point_document(document: dict, axes: Sequence[Axis], values: Sequence[Any]) -> dict:
    """A copy of ``document`` with each axis set to its value. AxisError (with the axis's
    position in ``args[1]``) if one names nothing."""
    result = copy.deepcopy(document)
    for i, (axis, value) in enumerate(zip(axes, values)):
        try:
            set_at(result, axis.path, value)
        except AxisError as exc:
            raise AxisError(str(exc), i) from None
    return result


def indexed_path(document: dict, path: str) -> str:
    """``vms[web].count`` -> ``vms[1].count`` in ``document``: how validation names the field the
    axis sets; "" if the path names no entry there."""
    node: Any = document
    out = ""
    for step in parse_path(path):
        if isinstance(node, list):
            index = step if isinstance(step, int) else next(
                (i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == step), None)
            if index is None or index >= len(node):
                return ""
            out, node = f"{out}[{index}]", node[index]
        elif isinstance(node, dict):
            out = f"{out}.{step}" if out else str(step)
            node = node.get(step)
        else:
            return out
    return out


def blamed_axis(document: dict, axes: Sequence[Axis], field: str) -> Optional[int]:
    """The axis whose value a validation problem at ``field`` of the point's ``document`` is
    about: the field lies under the axis's path, or is the object holding it. None if none is."""
    for i, axis in enumerate(axes):
        path = indexed_path(document, axis.path)
        if path and (field == path or field.startswith((path + ".", path + "[")) or path.startswith(field + ".")):
            return i
    return None


def point_label(axes: Sequence[Axis], values: Sequence[Any]) -> str:
    """``host.memory_mb=6144, vms[web].count=3``: a point in words."""
    return ", ".join(f"{axis.path}={json.dumps(value)}" for axis, value in zip(axes, values))
