"""The API's answers as pandas DataFrames, for notebooks (``Client.runs(frame=True)`` and the like).

pandas is an optional dependency (``pip install 'vmemlab[notebook]'``): it is imported only when a
frame is asked for, so ``vmemlab submit`` and the rest of the client stay on the standard library.
Timestamps become timezone-aware datetimes; metrics are columns of their own, named as in the API.
"""
from __future__ import annotations

from typing import Any, Iterable

RUN_COLUMNS = ("id", "experiment_id", "policy_name", "policy_version", "status", "progress", "seed", "params",
               "created_at", "started_at", "finished_at", "wall_s", "worker", "attempts", "error", "engine_version",
               "fingerprint")
TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")


def pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("DataFrames need pandas: pip install 'vmemlab[notebook]' (or pip install pandas)") from None
    return pd


def _times(frame: Any) -> Any:
    pd = pandas()
    for column in TIMES:
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def runs_frame(runs: Iterable[dict]) -> Any:
    """One row per run, indexed by run id: its fields, then one column per summary metric."""
    pd = pandas()
    rows = []
    for run in runs:
        row = {key: run.get(key) for key in RUN_COLUMNS if key in run}
        row.update(run.get("metrics") or {})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    return _times(frame).set_index("id").rename_axis("run_id")


def series_frame(answer: dict) -> Any:
    """A run's per-epoch series, indexed by simulated time: columns (scope, field) where scope is
    ``host``, a VM's name or ``policy``, so ``frame["host"]["used_mb"]`` is one line and
    ``frame.xs("resident_mb", axis=1, level="field")`` every VM's."""
    pd = pandas()
    series = answer.get("series") if "series" in answer else answer
    time_s = list(series.get("time_s") or [])
    columns: dict[tuple[str, str], list] = {}
    for field, values in (series.get("host") or {}).items():
        columns[("host", field)] = values
    if series.get("host_state") is not None:
        columns[("host", "state")] = series["host_state"]
    for vm, fields in (series.get("vms") or {}).items():
        for field, values in fields.items():
            columns[(vm, field)] = values
    # a policy's own series: per VM (ESX's target_mb, Dynamic Memory's pressure) they join the VM's
    # columns (``policy_`` before a name the engine's series already use), else scope "policy"
    for name, values in (series.get("policy") or {}).items():
        if isinstance(values, dict):
            for field, per_epoch in values.items():
                key = (name, field) if (name, field) not in columns else (name, f"policy_{field}")
                columns[key] = per_epoch
        else:
            columns[("policy", name)] = values
    index = pd.Index(time_s, name="time_s")
    frame = pd.DataFrame({key: list(values) for key, values in columns.items()}, index=index)
    frame.columns = pd.MultiIndex.from_tuples(list(columns), names=["scope", "field"])
    return frame


def comparison_frame(answer: dict) -> Any:
    """One row per compared run, indexed by run id: policy, status, whether it is the baseline, each
    metric, and each metric's ratio to the baseline (``slowdown_ratio``)."""
    pd = pandas()
    metrics = list(answer.get("metrics") or [])
    rows = []
    for run in answer.get("runs") or []:
        row = {"run_id": run.get("run_id"), "experiment_id": run.get("experiment_id"), "policy": run.get("policy"),
               "policy_version": run.get("policy_version"), "status": run.get("status"),
               "is_baseline": bool(run.get("is_baseline"))}
        values, ratios = run.get("metrics") or {}, run.get("ratios") or {}
        row.update({m: values.get(m) for m in metrics})
        row.update({f"{m}_ratio": ratios.get(m) for m in metrics})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["run_id", "policy", "status", "is_baseline", *metrics])
    return frame.set_index("run_id")


def sweep_frame(rows: Iterable[dict]) -> Any:
    """A sweep's table: one row per point and policy, a column per axis (named by its path), then
    policy, status, run and each metric."""
    pd = pandas()
    out = []
    for row in rows:
        record = dict(row.get("point") or {})
        record.update({"policy": row.get("policy"), "policy_version": row.get("policy_version"),
                       "status": row.get("status"), "run_id": row.get("run_id"),
                       "experiment_id": row.get("experiment_id")})
        record.update(row.get("metrics") or {})
        if row.get("error"):
            record["error"] = row["error"]
        out.append(record)
    return pd.DataFrame(out)
