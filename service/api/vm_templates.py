"""``/api/v1/vm-templates``: VM configurations an experiment's VMs start from (``template_id``)."""
from __future__ import annotations

from sqlalchemy import func, select

from ..models import ExperimentTemplate, VMTemplate
from .common import db
from .schemas.catalog import VMTemplateBodySchema, VMTemplatePatchSchema, VMTemplateSchema
from .spec_items import spec_item_blueprint


def _experiments_using(template: VMTemplate) -> int:
    return db().scalar(select(func.count()).select_from(ExperimentTemplate)
                       .where(ExperimentTemplate.template_id == template.id))


blp = spec_item_blueprint(
    name="vm-templates", what="VM template", model=VMTemplate, id_arg="template_id", body=VMTemplateBodySchema,
    patch_schema=VMTemplatePatchSchema, response=VMTemplateSchema, users=_experiments_using,
    description="VM configurations in the scenario format, without a name: an experiment's VM "
                "{\"template_id\": 5, \"name\": \"web1\", ...} takes the template's fields, then its own.")
