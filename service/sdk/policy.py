"""The policy contract.

A policy is a class with a name, a version and a marshmallow schema for its parameters. The engine
calls its hooks at admission (a VM starts or restarts), when a VM stops, once per epoch, and, only
if the policy chose the ``plugin`` victim strategy, to pick host-swap victims in a batch. Hooks
read views (``service.sdk.views``) and return decisions (``service.sdk.decisions``); nothing here
ever runs once per memory reference.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar, Mapping

import numpy as np
from marshmallow import Schema, ValidationError

from .decisions import Admission, Decisions, HostDecision
from .views import HostView, VMView


#: The one rule for a policy's name: letters, digits, '-' and '_', starting with a letter or digit.
#: It is an entry-point name, the NAME in ``--param NAME.key=value`` (so no '.') and a URL segment.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class PolicyParameterError(ValueError):
    """Parameters that do not fit the policy's schema; ``messages`` is marshmallow's field map."""

    def __init__(self, policy: str, messages: Any):
        super().__init__(f"policy {policy!r}: invalid parameters: {messages}")
        self.policy = policy
        self.messages = messages


class Policy:
    """Base class of every memory-management policy, built-in or third-party."""

    #: Unique name, used in scenarios, the CLI and the API.
    name: ClassVar[str] = ""
    #: The plugin's version; a run records it and refuses a worker with another one.
    version: ClassVar[str] = "0"
    #: Whether the policy reads guest reports (committed memory). If False its views omit them.
    trusts_guest: ClassVar[bool] = False
    #: One line for listings.
    summary: ClassVar[str] = ""

    class Params(Schema):
        """The policy's parameters; subclasses declare fields with real defaults and ranges."""

    def __init__(self, **params: Any):
        self.params = params

    @classmethod
    def load_params(cls, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``params`` as ``Params`` loads them (defaults filled in, unknown keys rejected);
        PolicyParameterError naming every problem if they do not load."""
        try:
            return cls.Params().load(dict(params or {}))
        except ValidationError as err:
            raise PolicyParameterError(cls.name, err.messages) from None

    @classmethod
    def create(cls, params: Mapping[str, Any] | None = None) -> "Policy":
        """Validate ``params`` against ``Params`` (``load_params``) and build the policy."""
        return cls(**cls.load_params(params))

    @classmethod
    def parameter_schema(cls) -> dict[str, Any]:
        """The parameters as a JSON-friendly description: name -> type, default, range."""
        from .schema_doc import describe_schema
        return describe_schema(cls.Params())

    # --- hooks -------------------------------------------------------------------------------

    def setup(self, host: HostView) -> HostDecision:
        """Called once before the first epoch, with every VM off. Host-wide settings that cannot
        change during a run (sharing salting) are fixed here."""
        return HostDecision()

    def admit(self, host: HostView, vm: VMView, restart: bool) -> Admission:
        """A VM starts (``restart`` False) or restarts. Refuse it, or say with how much memory it
        boots. Default: admit with its startup memory."""
        return Admission(admit=True)

    def on_stop(self, host: HostView, vm: VMView) -> None:
        """A VM has stopped and its memory is free again."""

    def on_epoch(self, host: HostView) -> Decisions:
        """Once per epoch (default 1 s): read the host and return decisions."""
        return Decisions()

    def update_params(self, params: dict[str, Any]) -> None:
        """A scenario's policy event changed parameters mid-run; ``params`` is the whole, validated
        set. The default replaces ``self.params``: a policy that reads ``self.params`` each epoch
        needs nothing more, one that derived state from them in ``__init__`` updates it here."""
        self.params = params

    def select_victims(self, host: HostView, vm: VMView, candidates: np.ndarray, count: int) -> np.ndarray:
        """Pick up to ``count`` host-swap victims among ``candidates`` (guest frame numbers backed
        by private host RAM). Called only for VMs whose victim strategy is ``plugin``."""
        return candidates[:count]
