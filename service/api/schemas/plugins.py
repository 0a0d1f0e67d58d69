"""The plugin registry: policies installed as entry points in the group ``vmemlab.policies``."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ...registry import STATUSES
from ...sdk.policy import NAME_PATTERN
from ..common import QuerySchema

# An entry point's name as a policy is named (service.sdk.policy.NAME_PATTERN, the one rule): never a
# module path (no ":", "." or "/").
ENTRY_POINT_NAME = validate.Regexp(
    rf"^{NAME_PATTERN.pattern}$",
    error="must be the name of an entry point in the group vmemlab.policies (letters, digits, '-' and '_'), "
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
    enabled = fields.Boolean(metadata={"description": "whether experiments may use it (status enabled)"})
    status = fields.String(metadata={"description": "enabled, available (installed, not registered), disabled, "
                                                    "version_changed (installed version not approved), broken "
                                                    "(does not load) or missing (no longer installed)"})
    reason = fields.String(metadata={"description": "why it has this status and what to do; empty when enabled"})
    approved_version = fields.String(allow_none=True, metadata={"description": "the version an admin approved"})
    builtin = fields.Boolean(metadata={"description": "ships with vmemlab"})
    installed = fields.Boolean(metadata={"description": "whether an installed distribution still provides it"})
    registered_at = fields.DateTime()
    updated_at = fields.DateTime()
    runs_by_version = fields.List(fields.Dict(), metadata={
        "description": "GET /plugins/NAME only: per version the number of runs that used it, the first and last "
                       "run id and a link to the runs"})


class PluginRegisterSchema(Schema):
    name = fields.String(required=True, validate=ENTRY_POINT_NAME)
    enabled = fields.Boolean(metadata={"description": "default true: approve and enable the installed version; "
                                                     "false records it disabled"})


class PluginPatchSchema(Schema):
    enabled = fields.Boolean(required=True)


class PluginQuerySchema(QuerySchema):
    enabled = fields.Boolean()
    installed = fields.Boolean()
    status = fields.String(validate=validate.OneOf(STATUSES))
