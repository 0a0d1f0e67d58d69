"""``/api/v1/hosts``: hosts an experiment can name by ``host_id``."""
from __future__ import annotations

from sqlalchemy import func, select

from ..models import Experiment, Host
from .common import db
from .schemas.catalog import HostBodySchema, HostPatchSchema, HostSchema
from .spec_items import spec_item_blueprint


def _experiments_using(host: Host) -> int:
    return db().scalar(select(func.count()).select_from(Experiment).where(Experiment.host_id == host.id))


blp = spec_item_blueprint(
    name="hosts", what="host", model=Host, id_arg="host_id", body=HostBodySchema, patch_schema=HostPatchSchema,
    response=HostSchema, users=_experiments_using,
    description="Hosts in the scenario format (memory, reserve, devices, costs) that experiments name by host_id.")
