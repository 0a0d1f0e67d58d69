"""The plugin registry: policies installed as entry points in the group ``vmemlab.policies``."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..common import QuerySchema

# An entry point's name as a policy is named: never a module path (no ":" and no "/").
ENTRY_POINT_NAME = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
    error="must be the name of an entry point in the group vmemlab.policies (letters, digits, '.', '-', '_'), "
          "not an import path")


class PluginSchema(Schema):
    name = fields.String()
    version = fields.String()
    distribution = fields.String()
    distribution_version = fields.String()
    entry_point = fields.String(metadata={"description": "module:attribute the entry point loads"})
    summary = fields.String()
    trusts_guest = fields.Boolean()
    parameters = fields.Dict(metadata={"description": "each parameter: type, default, bounds, description"})
    enabled = fields.Boolean()
    installed = fields.Boolean(metadata={"description": "whether an installed distribution still provides it"})
    registered_at = fields.DateTime()
    updated_at = fields.DateTime()


class PluginRegisterSchema(Schema):
    name = fields.String(required=True, validate=ENTRY_POINT_NAME)
    enabled = fields.Boolean(metadata={"description": "default: enabled when new, unchanged otherwise"})


class PluginPatchSchema(Schema):
    enabled = fields.Boolean(required=True)


class PluginQuerySchema(QuerySchema):
    enabled = fields.Boolean()
    installed = fields.Boolean()
