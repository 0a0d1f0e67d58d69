"""Resource limits of an experiment: what one submitted document may make the workers do.

``check_limits`` runs in ``service.experiments.create_experiment`` on the validated Scenario,
before anything is stored; a document over a limit is refused with ScenarioValidationError
naming the field, the limit, its value and the variable that sets it (the API answers 422).
``vmemlab simulate`` (local use) applies none of them.

The limits (``service.settings``):

- ``VMEMLAB_MAX_VMS``: VMs in the scenario (``vms``);
- ``VMEMLAB_MAX_DURATION_S``: simulated seconds (``duration_s``);
- ``VMEMLAB_MAX_EPOCHS``: ``duration_s / epoch_s`` (``epoch_s``): every epoch costs a policy
  call and a row of series;
- ``VMEMLAB_MAX_REFS``: an upper estimate of the page references of the whole run, all VMs
  together (``(document)``): each phase runs until its ``refs``, its ``duration_s``, the end of
  its trace (length x loops) or the end of the run, at one reference per ``compute_ns`` of
  simulated time (faults only slow it down, so this over-estimates);
- ``VMEMLAB_MAX_SIM_MEMORY_MB``: the engine state the simulation would allocate
  (``(document)``): 18 bytes per guest frame, 4 per guest page and 4 per reference of each
  trace phase (service.engine.layout).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from .engine.config import Phase, Scenario, VM
from .engine.layout import BOOT_COMPUTE_NS, mb_to_pages, phase_pages
from .scenario import ROOT, ScenarioValidationError
from .settings import Settings

BYTES_PER_FRAME = 18        # frame_page, lru_prev, lru_next, fifo (int32) + host_state, flags (uint8)
BYTES_PER_PAGE = 4          # page_table (int32)
BYTES_PER_TRACE_REF = 4     # the trace's dense ids (int32), once per trace phase

# (vm index, phase index) -> (references, distinct pages) of the trace a trace phase replays;
# None when unknown (its references are then bounded by time and refs only, its pages not counted)
TraceSizes = Callable[[int, int], Optional[tuple[int, int]]]


def check_vm_count(count: int, settings: Settings) -> None:
    """The cheap check, on the raw document before it is validated: too many VMs."""
    if count > settings.max_vms:
        raise ScenarioValidationError({"vms": [_vms_message(count, settings)]})


def check_limits(scenario: Scenario, settings: Settings, trace_sizes: Optional[TraceSizes] = None) -> None:
    """Raise ScenarioValidationError for every limit ``scenario`` is over (see module docstring)."""
    sizes = trace_sizes or (lambda i, j: None)
    errors: dict[str, list[str]] = {}
    if len(scenario.vms) > settings.max_vms:
        errors["vms"] = [_vms_message(len(scenario.vms), settings)]
    if scenario.duration_s > settings.max_duration_s:
        errors["duration_s"] = [f"{_num(settings.max_duration_s)} s at most (VMEMLAB_MAX_DURATION_S), "
                                f"got {_num(scenario.duration_s)} s"]
    epochs = scenario.duration_s / scenario.epoch_s
    if epochs > settings.max_epochs:
        errors["epoch_s"] = [f"the run would have {_num(epochs)} epochs (duration_s / epoch_s); the limit is "
                             f"{_num(settings.max_epochs)} (VMEMLAB_MAX_EPOCHS)"]
    whole = []
    refs = estimate_refs(scenario, sizes)
    if refs > settings.max_refs:
        whole.append(f"the run would simulate about {_num(refs)} references; the limit is "
                     f"{_num(settings.max_refs)} (VMEMLAB_MAX_REFS)")
    memory_mb = estimate_memory_bytes(scenario, sizes) / 2**20
    if memory_mb > settings.max_sim_memory_mb:
        whole.append(f"the simulation would need about {_num(memory_mb)} MB of engine state; the limit is "
                     f"{_num(settings.max_sim_memory_mb)} MB (VMEMLAB_MAX_SIM_MEMORY_MB)")
    if whole:
        errors[ROOT] = whole
    if errors:
        raise ScenarioValidationError(errors)


# --- estimates ---------------------------------------------------------------------------------

def estimate_refs(scenario: Scenario, trace_sizes: Optional[TraceSizes] = None) -> float:
    """Upper estimate of the page references the whole run makes, all VMs together."""
    sizes = trace_sizes or (lambda i, j: None)
    return sum(_vm_refs(scenario, i, vm, sizes) for i, vm in enumerate(scenario.vms))


def estimate_memory_bytes(scenario: Scenario, trace_sizes: Optional[TraceSizes] = None) -> int:
    """Bytes of per-frame, per-page and trace arrays the engine would allocate (layout.build)."""
    sizes = trace_sizes or (lambda i, j: None)
    frames = pages = trace_refs = 0
    for i, vm in enumerate(scenario.vms):
        frames += mb_to_pages(vm.frames_mb)
        os_pages = mb_to_pages(vm.os_mb)
        npages = os_pages
        for j, phase in enumerate(vm.phases):
            size = sizes(i, j) if phase.kind == "trace" else None
            trace_refs += size[0] if size is not None else 0
            spanned = phase_pages(phase, size[1] if size is not None else 0)
            npages = max(npages, os_pages + mb_to_pages(phase.offset_mb) + spanned)
        pages += max(npages, 1)
    return BYTES_PER_FRAME * frames + BYTES_PER_PAGE * pages + BYTES_PER_TRACE_REF * trace_refs


def _vm_refs(scenario: Scenario, i: int, vm: VM, sizes: TraceSizes) -> float:
    """The VM's phases in order from time 0 (after its boot), each until its first bound; looped
    when the workload repeats or an event restarts the VM (phases then start over)."""
    run_ns = scenario.duration_s * 1e9
    boot = mb_to_pages(vm.os_mb)
    left_ns = run_ns - boot * BOOT_COMPUTE_NS
    if left_ns <= 0:
        return min(boot, run_ns / BOOT_COMPUTE_NS)
    steps = [_phase_step(phase, sizes(i, j) if phase.kind == "trace" else None, run_ns)
             for j, phase in enumerate(vm.phases)]
    cycle_ns = sum(t for t, _ in steps)
    cycle_refs = sum(r for _, r in steps)
    loops = vm.repeat or any(ev.action == "restart" for ev in vm.events)
    total = float(boot)
    if loops and cycle_ns > 0:
        whole = math.floor(left_ns / cycle_ns)
        total += whole * cycle_refs
        left_ns -= whole * cycle_ns
    for time_ns, refs in steps:
        if left_ns <= 0:
            break
        if time_ns <= left_ns:
            total += refs
        else:
            total += refs * left_ns / time_ns
        left_ns -= time_ns
    return total


def _phase_step(phase: Phase, size: Optional[tuple[int, int]], run_ns: float) -> tuple[float, float]:
    """(simulated ns, references) of one pass through a phase, at most the whole run."""
    time_ns = run_ns if phase.duration_s is None else min(run_ns, phase.duration_s * 1e9)
    if phase.kind == "idle":
        return time_ns, 0.0
    cap = math.inf if phase.refs is None else float(phase.refs)
    if phase.kind == "trace" and size is not None:
        cap = min(cap, float(size[0]) * max(1, phase.trace_loops))
    refs = min(cap, time_ns / phase.compute_ns)
    return refs * phase.compute_ns, refs


def _vms_message(count: int, settings: Settings) -> str:
    return f"{settings.max_vms} VMs at most (VMEMLAB_MAX_VMS), got {count}"


def _num(value: float) -> str:
    """A count or size as a person reads it: 300, 86400, 12.5, 7.2e10."""
    if value >= 1e7:
        return f"{value:.3g}".replace("e+", "e")
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"
