"""The scenario format's building blocks: JSON-strict fields (a number written as a string, or 1
for true, is a mistake in a document) and marshmallow's nested error messages flattened to paths
as a user reads them."""
from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

ROOT = "(document)"      # the path of a problem that belongs to the document as a whole
MAX_MB = 2**24                      # 16 TB, beyond any real host


class _Float(fields.Float):
    def _validated(self, value: Any) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class _Integer(fields.Integer):
    def __init__(self, **kwargs: Any):
        super().__init__(strict=True, **kwargs)


class _Boolean(fields.Boolean):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _positive(high: float) -> validate.Range:
    """0 < value <= high"""
    return validate.Range(min=0, max=high, min_inclusive=False)


def _fraction() -> _Float:
    return _Float(validate=validate.Range(0.0, 1.0))


def _megabytes(low: int = 1, **kwargs: Any) -> _Integer:
    return _Integer(validate=validate.Range(low, MAX_MB), **kwargs)


def _device_name(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=64), **kwargs)



def flatten_errors(messages: Any, path: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error messages to ``{"vms[1].workload.phases[0].kind": [...]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, sub in messages.items():
            if key == "_schema":
                sub_path = path
            elif isinstance(key, int):
                sub_path = f"{path}[{key}]"
            else:
                sub_path = f"{path}.{key}" if path else str(key)
            for p, msgs in flatten_errors(sub, sub_path).items():
                out.setdefault(p, []).extend(msgs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[path or ROOT] = list(messages)
    elif isinstance(messages, list):
        for sub in messages:
            for p, msgs in flatten_errors(sub, path).items():
                out.setdefault(p, []).extend(msgs)
    else:
        out[path or ROOT] = [str(messages)]
    return out
