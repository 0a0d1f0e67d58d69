"""The one-line answer that starts every report: which policy runs every VM, at what worst
slowdown, in words and figures. From engine summaries alone, so the CLI and the service say the
same thing."""
from __future__ import annotations

from typing import Any, Optional, Sequence


def host_size(memory_mb: float) -> str:
    """``6 GB`` for whole gigabytes, else ``6,000 MB``."""
    return f"{memory_mb / 1024:,g} GB" if memory_mb % 1024 == 0 else f"{memory_mb:,.0f} MB"


def runs_answer(host_memory_mb: float, vm_count: int,
                runs: Sequence[tuple[str, str, Optional[dict[str, Any]]]]) -> str:
    """``runs`` are ``(policy, status, summary)``; a summary's VMs give their state and slowdown.
    E.g. "On this 6 GB host with 2 VMs: static runs 1 of 2; esx runs all 2 at 1.77x worst
    slowdown; ... Lowest worst slowdown with every VM running: dynamic-memory."."""
    parts, best = [], None
    for policy, status, summary in runs:
        if status != "succeeded" or not summary:
            parts.append(f"{policy} {status}")
            continue
        vms = summary.get("vms", [])
        refused = sum(1 for vm in vms if vm.get("state") == "refused")
        slowdowns = [vm["slowdown"] for vm in vms if vm.get("slowdown") is not None and vm.get("state") != "refused"]
        worst = max(slowdowns, default=None)
        text = f"{policy} runs {vm_count - refused} of {vm_count}" if refused else f"{policy} runs all {vm_count}"
        if worst is not None:
            text += f" at {worst:.2f}x worst slowdown"
        parts.append(text)
        if not refused and worst is not None and (best is None or worst < best[1]):
            best = (policy, worst)
    verdict = f" Lowest worst slowdown with every VM running: {best[0]}." if best and len(parts) > 1 else ""
    plural = "s" if vm_count != 1 else ""
    return f"On this {host_size(host_memory_mb)} host with {vm_count} VM{plural}: {'; '.join(parts)}.{verdict}"


def summaries_answer(summaries: Sequence[dict[str, Any]]) -> Optional[str]:
    """The answer for the CLI's summaries (one per policy; a failed one carries ``error``)."""
    done = [s for s in summaries if not s.get("error") and s.get("host", {}).get("memory_mb")]
    if not done:
        return None
    return runs_answer(done[0]["host"]["memory_mb"], len(done[0].get("vms", [])),
                       [(str(s.get("policy")), "failed" if s.get("error") else "succeeded", s) for s in summaries])
