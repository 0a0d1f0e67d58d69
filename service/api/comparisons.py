"""``/api/v1/comparisons``: any runs side by side, across experiments and time, with deltas
against a baseline run."""
from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import select

from ..models import Run
from ..policies import DEFAULT_POLICY
from ..runs import compare
from .common import Blueprint, invalid, read_db
from .reads import retrying_reads
from .schemas.results import ComparisonSchema
from .schemas.runs import ComparisonsQuerySchema

blp = Blueprint("comparisons", __name__, description="Runs side by side across experiments and time.")


@blp.route("")
class Comparisons(MethodView):
    @blp.arguments(ComparisonsQuerySchema, location="query")
    @blp.response(200, ComparisonSchema)
    @blp.doc(summary="Compare runs",
             description="`?runs=1&runs=5&runs=9&baseline_run=5` (or `runs=1,5,9`): every run in the order given, "
             "deltas and ratios against the baseline run (default: the first succeeded run of `baseline`, "
             "static unless given). `same_configuration` says whether all had the same fingerprint. "
             "A run given twice is compared once.")
    @retrying_reads
    def get(self, args: dict) -> dict:
        ids = list(dict.fromkeys(args["runs"]))
        found = {run.id: run for run in read_db().scalars(select(Run).where(Run.id.in_(ids)))}
        missing = [i for i in ids if i not in found]
        if missing:
            invalid("query", {"runs": [f"no run with id {', '.join(map(str, missing))}"]})
        baseline_run = args.get("baseline_run")
        if baseline_run is not None and baseline_run not in found:
            invalid("query", {"baseline_run": [f"run {baseline_run} is not among the runs compared"]})
        return compare([found[i] for i in ids], baseline_policy=args.get("baseline", DEFAULT_POLICY),
                       baseline_run_id=baseline_run)
