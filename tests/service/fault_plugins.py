"""Misbehaving policies for the fault tests (tests/service/test_faults.py).

Not a package of the project: the tests copy this file into a temporary folder as the module
``vmemlab_fault_plugins``, beside a ``vmemlab_fault_plugins-1.0.dist-info`` that advertises the
classes in the entry-point group ``vmemlab.policies``, and put that folder on the path of the
process that should see them, exactly as an installed third-party distribution would be seen.
"""
from __future__ import annotations

import signal
import time

from service.sdk import Admission, Decisions, Policy

FOREVER_S = 3600.0


class _Base(Policy):
    version = "1.0"
    summary = "misbehaves on purpose (fault tests)"


class Raises(_Base):
    """on_epoch raises at the second epoch."""

    name = "fault-raises"

    def on_epoch(self, host):
        if host.epoch >= 1:
            raise RuntimeError("a plugin bug (fault test)")
        return Decisions()


class Nonsense(_Base):
    """on_epoch returns something that is not Decisions."""

    name = "fault-nonsense"

    def on_epoch(self, host):
        return {"vms": "all of them", "balloon_mb": -1}


class Hangs(_Base):
    """on_epoch never returns: a pure Python loop that even swallows ordinary exceptions."""

    name = "fault-hangs"

    def on_epoch(self, host):
        while True:
            try:
                while True:
                    pass
            except Exception:   # noqa: BLE001 - a plugin that tries to survive everything
                continue


class Sleeps(_Base):
    """admit blocks in a C call (time.sleep)."""

    name = "fault-sleeps"

    def admit(self, host, vm, restart):
        time.sleep(FOREVER_S)
        return Admission(True)


class Stuck(_Base):
    """on_epoch blocks the signals the hook timer and Celery's soft time limit use, then sleeps:
    only killing its process stops it."""

    name = "fault-stuck"

    def on_epoch(self, host):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
        time.sleep(FOREVER_S)
        return Decisions()


class FlipsTrust(_Base):
    """Does not trust the guest, then says on its class that it does (at the second epoch)."""

    name = "fault-trust"

    def on_epoch(self, host):
        if any(vm.guest is not None for vm in host.vms):
            raise AssertionError("a guest report reached a policy that does not trust the guest")
        if host.epoch >= 1:
            type(self).trusts_guest = True
        return Decisions()


ENTRY_POINTS = {cls.name: cls.__name__ for cls in (Raises, Nonsense, Hangs, Sleeps, Stuck, FlipsTrust)}
