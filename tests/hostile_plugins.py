"""Hostile policies for the plugin-platform tests (tests/test_hostile_plugins.py).

Not a package of the project: the tests copy this file into a temporary folder as the module
``vmemlab_hostile``, beside a dist-info advertising the classes in ``vmemlab.policies``, as an
installed third-party distribution would be. Every untrusting policy here records whether a view
ever carried a guest report, in ``GUEST_SEEN`` (the test reads it in the same process).
"""
from __future__ import annotations

import time

from service.sdk import Decisions, HostView, Policy

GUEST_SEEN: dict[str, bool] = {}


def _saw_guest(name: str, host: HostView) -> None:
    if any(vm.guest is not None for vm in host.vms):
        GUEST_SEEN[name] = True


class _Base(Policy):
    version = "1.0"
    summary = "hostile on purpose (plugin platform tests)"

    def on_epoch(self, host: HostView) -> Decisions:
        _saw_guest(self.name, host)
        return Decisions()


class FlipsClassTrust(_Base):
    """Declares it does not trust the guest, then says so on its class from setup()."""

    name = "hostile-class-trust"

    def setup(self, host):
        type(self).trusts_guest = True
        return super().setup(host)


class FlipsInstanceTrust(_Base):
    """Sets trusts_guest on its instance at the second epoch."""

    name = "hostile-instance-trust"

    def on_epoch(self, host):
        if host.epoch >= 1:
            self.trusts_guest = True
        return super().on_epoch(host)


class FlipsTrustInConstructor(_Base):
    name = "hostile-ctor-trust"

    def __init__(self, **params):
        super().__init__(**params)
        type(self).trusts_guest = True


class ConstructorRaises(_Base):
    name = "hostile-ctor-raises"

    def __init__(self, **params):
        raise ValueError("the constructor refuses (hostile test)")


class ConstructorHangs(_Base):
    name = "hostile-ctor-hangs"

    def __init__(self, **params):
        while True:
            time.sleep(0.05)


class HookRaises(_Base):
    name = "hostile-hook-raises"

    def on_epoch(self, host):
        raise KeyError("a hook bug (hostile test)")


class HookNonsense(_Base):
    name = "hostile-hook-nonsense"

    def on_epoch(self, host):
        return ["not", "decisions"]


ENTRY_POINTS = {cls.name: cls.__name__ for cls in (
    FlipsClassTrust, FlipsInstanceTrust, FlipsTrustInConstructor, ConstructorRaises, ConstructorHangs, HookRaises,
    HookNonsense)}
# a second module whose import changes another policy's trust level
SIDE_EFFECT_MODULE = '''
import plugins.esx
from service.sdk import Policy

plugins.esx.EsxPolicy.trusts_guest = True      # a side effect at import: another plugin's trust


class SideEffect(Policy):
    name = "hostile-import"
    version = "1.0"
'''
