"""Small builders shared by the engine tests, and a free port for the service tests."""
from __future__ import annotations

import socket

from service.engine import Host, Scenario, VM
from service.sdk import Decisions, HostDecision, Policy


def vm(name="vm", memory_mb=256, os_mb=32, phases=(), **kw) -> VM:
    return VM(name=name, memory_mb=memory_mb, os_mb=os_mb, phases=tuple(phases), **kw)


def scenario(vms, host_mb=1024, duration_s=2.0, epoch_s=0.5, seed=1, **host_kw) -> Scenario:
    return Scenario(host=Host(memory_mb=host_mb, **host_kw), vms=tuple(vms), duration_s=duration_s,
                    epoch_s=epoch_s, seed=seed)


def free_port() -> int:
    """A TCP port on the loopback nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FixedPolicy(Policy):
    """Applies the same decisions every epoch: a test harness for the engine's mechanisms."""

    name = "fixed"

    def __init__(self, host: HostDecision | None = None, per_vm: dict | None = None, trusts_guest=False, **_):
        super().__init__()
        self._host = host or HostDecision()
        self._per_vm = per_vm or {}

    def setup(self, host):
        return HostDecision(sharing_salted=self._host.sharing_salted)

    def on_epoch(self, host):
        d = Decisions(host=HostDecision(sharing_pages_per_s=self._host.sharing_pages_per_s,
                                        sharing_scan=self._host.sharing_scan))
        for v in host.vms:
            if v.name in self._per_vm:
                d.vms[v.name] = self._per_vm[v.name]
        return d


def install_test_distribution(folder, distribution: str, modules: dict[str, str], entry_points: dict[str, str]):
    """Lay out ``folder`` as an installed distribution would be: the ``modules`` (name -> source)
    and a dist-info whose entry_points.txt advertises ``entry_points`` (policy name ->
    ``module:Class``) in the group vmemlab.policies. Put ``folder`` on sys.path (or a worker's
    PYTHONPATH) and the policies are found like any installed plugin's."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)
    info = folder / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[vmemlab.policies]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items()))
    return folder
