"""Policy parameter forms, generated from each plugin's parameter schema (``Policy.parameter_schema``:
per parameter its ``type`` float, integer, boolean or string, ``default``, ``min``/``max``,
``choices`` and ``description``), and the values a submitted form gives back.

A value is sent only when it differs from the default, so an experiment's ``params`` say what the
person changed. Text that is not a number is sent as it is: the API's validation names it
(``policies[1].params.idle_tax_pct``) and the page shows that message next to the input.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

SCENARIO = "scenario"       # the form field every path outside the policies' parameters belongs to
POLICIES = "policies"


def input_name(policy: str, key: str) -> str:
    return f"param.{policy}.{key}"


def fields_of(policy: str, schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per parameter: what the template needs to draw its input."""
    out = []
    for key, spec in schema.items():
        kind = spec.get("type", "string")
        field = {"key": key, "name": input_name(policy, key), "kind": kind, "default": spec.get("default"),
                 "min": spec.get("min"), "max": spec.get("max"), "choices": spec.get("choices"),
                 "description": spec.get("description", ""), "step": "1" if kind == "integer" else "any"}
        bounds = []
        if field["min"] is not None:
            bounds.append(f"at least {field['min']:g}")
        if field["max"] is not None:
            bounds.append(f"at most {field['max']:g}")
        field["range"] = ", ".join(bounds)
        out.append(field)
    return out


def read_params(form: Mapping[str, str], policy: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``policy`` that the form changed from their defaults."""
    params: dict[str, Any] = {}
    for key, spec in schema.items():
        name, kind, default = input_name(policy, key), spec.get("type", "string"), spec.get("default")
        if kind == "boolean":
            value: Any = name in form
        else:
            text = (form.get(name) or "").strip()
            if text == "":
                continue
            value = _number(text, kind)
        if value != default or type(value) is not type(default):
            params[key] = value
    return params


def _number(text: str, kind: str) -> Any:
    try:
        if kind == "integer":
            return int(text)
        if kind == "float":
            return float(text) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text) else text
    except ValueError:
        pass
    return text


def place_errors(errors: Mapping[str, list[str]], chosen: list[str]) -> dict[str, list[tuple[str, str]]]:
    """The API's 422 field paths sorted to the form's fields: ``policies[i].params.KEY`` to that
    input of the i-th policy picked, other ``policies`` paths to the policy list, every other path
    to the scenario. Each entry is (path, message), so the page can say which part of the
    document a message is about."""
    placed: dict[str, list[tuple[str, str]]] = {}
    for path, messages in errors.items():
        target = SCENARIO
        match = re.match(r"policies\[(\d+)\](?:\.params\.([^.\[]+))?", path)
        if match and chosen:
            index, key = int(match.group(1)), match.group(2)
            if index < len(chosen):
                target = input_name(chosen[index], key) if key else POLICIES
            else:
                target = POLICIES
        elif path.startswith("policies"):
            target = SCENARIO           # the document's own list of policies
        for message in messages if isinstance(messages, list) else [str(messages)]:
            placed.setdefault(target, []).append((path, message))
    return placed
