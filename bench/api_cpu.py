"""Where a phase's CPU went: the API server's processes and PostgreSQL's, read from /proc (Linux).

The figures are CPU milliseconds per answered request, so they do not depend on how busy the
machine was with other things: two runs of bench/api.py on one machine compare by them even when
their requests/s differ (a shared 2-core machine's throughput varies by 1.5x from hour to hour).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used so far) of every process we may read."""
    found: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:             # gone meanwhile
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        # fields[0] is field 3 of proc(5): state; ppid is field 4, utime 14, stime 15
        found[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) * TICK_S)
    return found


class CpuMeter:
    """CPU used between ``start()`` and ``stop()`` by the process tree of ``root_pid`` (without
    the Celery worker: it is idle in the read phases) and by every ``postgres`` process."""

    def __init__(self, root_pid: Optional[int]):
        self.root_pid = root_pid
        self._before: dict[int, float] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        procs = _processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        server: dict[int, float] = {}
        todo = [self.root_pid] if self.root_pid in procs else []
        while todo:
            pid = todo.pop()
            if "celery" in _cmdline(pid):
                continue
            server[pid] = procs[pid][2]
            todo += children.get(pid, [])
        postgres = {pid: cpu for pid, (_, name, cpu) in procs.items() if name.startswith("postgres")}
        return {"server": server, "postgres": postgres}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds used since start(), by ``server`` and ``postgres`` (processes that started
        meanwhile count from 0; those that ended are missing)."""
        after = self._sample()
        return {what: sum(cpu - self._before[what].get(pid, 0.0) for pid, cpu in after[what].items())
                for what in after}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
