"""The wall time users see: ``vmemlab simulate scenarios/seed.json`` (six policies, 120 simulated
seconds) as a subprocess, at ``--jobs 1`` and ``--jobs 2``, as ``make compare`` runs it."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VMEMLAB = ROOT / ".venv" / "bin" / "vmemlab"
SEED = ROOT / "scenarios" / "seed.json"
DONE = re.compile(r"^\[(?P<policy>[^\]]+)\] done in (?P<s>[0-9.]+) s", re.M)


def has_jobs_option() -> bool:
    out = subprocess.run([str(VMEMLAB), "simulate", "--help"], capture_output=True, text=True, timeout=120)
    return "--jobs" in out.stdout


def _simulate(scenario: Path, jobs: int | None) -> dict:
    cmd = [str(VMEMLAB), "simulate", str(scenario)] + ([] if jobs is None else ["--jobs", str(jobs)])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd[1:])} exited with {proc.returncode}:\n{tail}")
    per_policy = {m["policy"]: float(m["s"]) for m in DONE.finditer(proc.stderr)}
    shown = ["vmemlab", "simulate", str(scenario.relative_to(ROOT)) if scenario.is_relative_to(ROOT) else scenario.name]
    return {"command": " ".join(shown + cmd[3:]), "wall_s": wall, "stdout": proc.stdout,
            "per_policy_s": per_policy}


def warm_up() -> float:
    """The seed's six policies for 3 simulated seconds, not timed as a figure: numba compiles (or
    loads from its cache) the code of every mechanism the policies use, so that neither timed run
    pays for it. Returns its wall time."""
    scenario = json.loads(SEED.read_text())
    scenario["duration_s"] = 3
    with tempfile.TemporaryDirectory(prefix="vmemlab-bench-") as tmp:
        path = Path(tmp) / "seed-warm.json"
        path.write_text(json.dumps(scenario))
        return _simulate(path, None)["wall_s"]


def seed_wall_times() -> dict:
    """Wall time of the seed comparison at --jobs 1 and --jobs 2 (None where not available)."""
    jobs_ok = has_jobs_option()
    out: dict = {"jobs_option": jobs_ok, "warm_up_s": warm_up()}
    one = _simulate(SEED, 1 if jobs_ok else None)
    out["jobs1"] = {k: v for k, v in one.items() if k != "stdout"}
    if jobs_ok:
        two = _simulate(SEED, 2)
        out["jobs2"] = {k: v for k, v in two.items() if k != "stdout"}
        out["same_output"] = one["stdout"] == two["stdout"]
    else:
        out["jobs2"] = None
        out["same_output"] = None
    return out
