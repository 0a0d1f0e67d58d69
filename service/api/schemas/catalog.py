"""Hosts and VM templates: a name, a description and a ``spec`` in the scenario format."""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ...catalog import validate_host_spec, validate_vm_template_spec
from ...scenario import ROOT, ScenarioValidationError
from ..common import QuerySchema

NAME = validate.Length(min=1, max=200)
DESCRIPTION = validate.Length(max=10_000)


def _spec_check(check: Callable[[Any], Any]) -> Callable[[Any], None]:
    """A field validator from a service.catalog check: its errors end up under ``spec.<path>``."""

    def validator(value: Any) -> None:
        try:
            check(value)
        except ScenarioValidationError as exc:
            errors = dict(exc.errors)
            whole = errors.pop(ROOT, None)
            if whole and not errors:
                raise ValidationError(whole) from None
            if whole:
                errors["_schema"] = whole
            raise ValidationError(errors) from None

    return validator


def _spec(check: Callable[[Any], Any], what: str, **kwargs: Any) -> fields.Dict:
    return fields.Dict(validate=_spec_check(check), metadata={"description": f"the scenario format's {what}"},
                       **kwargs)


class _PatchSchema(Schema):
    name = fields.String(validate=NAME)
    description = fields.String(validate=DESCRIPTION)

    @validates_schema
    def _something(self, data: dict, **_: Any) -> None:
        if not data:
            raise ValidationError("give at least one of name, description, spec")


class HostBodySchema(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=DESCRIPTION)
    spec = _spec(validate_host_spec, "host object", required=True)


class HostPatchSchema(_PatchSchema):
    spec = _spec(validate_host_spec, "host object")


class VMTemplateBodySchema(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=DESCRIPTION)
    spec = _spec(validate_vm_template_spec, "VM object, its name optional", required=True)


class VMTemplatePatchSchema(_PatchSchema):
    spec = _spec(validate_vm_template_spec, "VM object, its name optional")


class SpecItemSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    description = fields.String()
    spec = fields.Dict()
    version = fields.Integer(metadata={"description": "goes up on every update; the ETag follows it"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class HostSchema(SpecItemSchema):
    pass


class VMTemplateSchema(SpecItemSchema):
    pass


class SpecItemQuerySchema(QuerySchema):
    name = fields.String(metadata={"description": "exact name"})
    name_contains = fields.String(validate=validate.Length(min=1, max=200),
                                  metadata={"description": "part of the name, any case"})
