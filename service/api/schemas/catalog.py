"""Hosts and VM templates: a name, a description and a ``spec`` in the scenario format."""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ...catalog import validate_host_spec, validate_vm_template_spec
from ...scenario import ROOT, DeviceSchema, HostSchema as HostSpecSchema, ScenarioValidationError, VMSchema
from ..common import QuerySchema
from .results import AsStored

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


class VMTemplateSpecSchema(VMSchema):
    """The VM object as a template documents it: the name is optional, since each experiment
    names its VMs. For the OpenAPI document only: templates are checked by the catalog."""
    name = fields.String(validate=validate.Length(min=1, max=100))


# the documented shape of each spec (components of the OpenAPI document, registered by the app)
SPEC_COMPONENTS = {"Device": DeviceSchema, "HostSpec": HostSpecSchema, "VMTemplateSpec": VMTemplateSpecSchema}


def _spec(check: Callable[[Any], Any], what: str, component: str, **kwargs: Any) -> fields.Dict:
    # loaded as a plain object and checked by the catalog, so that errors read spec.<path>;
    # documented with the scenario format's own schema, so that clients and fuzzers see its fields
    return fields.Dict(validate=_spec_check(check), **kwargs, metadata={
        "description": f"the scenario format's {what}", "allOf": [{"$ref": f"#/components/schemas/{component}"}]})


class _PatchSchema(Schema):
    openapi_extra = {"minProperties": 1}
    name = fields.String(validate=NAME)
    description = fields.String(validate=DESCRIPTION)

    @validates_schema
    def _something(self, data: dict, **_: Any) -> None:
        if not data:
            raise ValidationError("give at least one of name, description, spec")


class HostBodySchema(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=DESCRIPTION)
    spec = _spec(validate_host_spec, "host object", "HostSpec", required=True)


class HostPatchSchema(_PatchSchema):
    spec = _spec(validate_host_spec, "host object", "HostSpec")


class VMTemplateBodySchema(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=DESCRIPTION)
    spec = _spec(validate_vm_template_spec, "VM object, its name optional", "VMTemplateSpec", required=True)


class VMTemplatePatchSchema(_PatchSchema):
    spec = _spec(validate_vm_template_spec, "VM object, its name optional", "VMTemplateSpec")


class SpecItemSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    description = fields.String()
    version = fields.Integer(metadata={"description": "goes up on every update; the ETag follows it"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class HostSchema(SpecItemSchema):
    spec = AsStored(HostSpecSchema, metadata={"description": "the host object as given"})


class VMTemplateSchema(SpecItemSchema):
    spec = AsStored(VMTemplateSpecSchema, metadata={"description": "the VM object as given"})


class SpecItemQuerySchema(QuerySchema):
    name = fields.String(metadata={"description": "exact name"})
    name_contains = fields.String(validate=validate.Length(min=1, max=200),
                                  metadata={"description": "part of the name, any case"})
