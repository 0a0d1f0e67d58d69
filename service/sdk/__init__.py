"""What a policy author imports: the contract, the views it reads, the decisions it returns."""
from .decisions import VICTIM_STRATEGIES, Admission, Decisions, HostDecision, VMDecision
from .policy import Policy, PolicyParameterError
from .views import GuestReport, HostView, MemorySettings, VMView

PAGES_PER_MB = 256      # the engine's 4 KiB pages per MB, for rates a policy states in pages

__all__ = [
    "PAGES_PER_MB", "Admission", "Decisions", "GuestReport", "HostDecision", "HostView", "MemorySettings",
    "Policy", "PolicyParameterError", "VICTIM_STRATEGIES", "VMDecision", "VMView",
]
