"""What a policy author imports: the contract, the views it reads, the decisions it returns."""
from .decisions import VICTIM_STRATEGIES, Admission, Decisions, HostDecision, VMDecision
from .policy import Policy, PolicyParameterError
from .views import GuestReport, HostView, MemorySettings, VMView

__all__ = [
    "Admission", "Decisions", "GuestReport", "HostDecision", "HostView", "MemorySettings",
    "Policy", "PolicyParameterError", "VICTIM_STRATEGIES", "VMDecision", "VMView",
]
