"""SQLAlchemy models. The tables themselves come only from the Alembic migrations."""
from .base import Base, UTCDateTime, utcnow
from .catalog import Host, PluginRegistration, Trace, VMTemplate
from .experiments import Experiment, ExperimentTemplate, ExperimentTrace
from .runs import FINISHED, METRIC_COLUMNS, Run, RunSeries, RunStatus
from .studies import CapacityProbe, CapacitySearch, Sweep, SweepPoint
from .tokens import ApiToken

__all__ = [
    "ApiToken", "Base", "CapacityProbe", "CapacitySearch", "Experiment", "ExperimentTemplate", "ExperimentTrace", "FINISHED", "Host", "METRIC_COLUMNS",
    "PluginRegistration", "Run", "RunSeries", "RunStatus", "Sweep", "SweepPoint", "Trace", "UTCDateTime", "VMTemplate", "utcnow",
]
