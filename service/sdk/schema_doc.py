"""Describe a marshmallow schema as plain data, for listings and the API."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate


def describe_schema(schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fld in schema.fields.items():
        entry: dict[str, Any] = {"type": type(fld).__name__.lower()}
        if fld.load_default is not None and not callable(fld.load_default) and repr(fld.load_default) != "<marshmallow.missing>":
            entry["default"] = fld.load_default
        if isinstance(fld, fields.List) and hasattr(fld, "inner"):
            entry["items"] = type(fld.inner).__name__.lower()
        for v in fld.validators:
            if isinstance(v, validate.Range):
                if v.min is not None:
                    entry["min"] = v.min
                if v.max is not None:
                    entry["max"] = v.max
            elif isinstance(v, validate.OneOf):
                entry["choices"] = list(v.choices)
        if fld.metadata.get("description"):
            entry["description"] = fld.metadata["description"]
        out[name] = entry
    return out
