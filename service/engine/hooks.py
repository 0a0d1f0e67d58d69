"""Calling a policy's hooks: the error that fails a run naming the policy, and the wall-time limit
on each hook call."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from ..sdk import Policy


class PolicyError(RuntimeError):
    """The policy did something the engine cannot accept: the run fails, naming the policy."""

    def __init__(self, policy: str, message: str):
        super().__init__(f"policy {policy!r}: {message}")
        self.policy = policy


class RunCancelled(RuntimeError):
    pass


class _HookTimeout(BaseException):
    """Raised by the SIGALRM handler inside a hook that ran too long. A BaseException, so that a
    plugin's ``except Exception`` cannot swallow it; the engine turns it into a PolicyError."""


class HookTimer:
    """Calls policy hooks with a wall-time limit per call.

    In the main thread of a process with ``setitimer`` (a Celery prefork pool process, the CLI),
    an ITIMER_REAL timer and a SIGALRM handler interrupt a hook that overruns, even one stuck in a
    loop or a sleep; the previous SIGALRM handler and timer are restored after every call (a timer
    that was running goes on with the time left). Elsewhere (another thread) no signal can be
    used: the call is timed and fails after it returns. Either way the run fails with a
    PolicyError naming the policy, the hook and the limit. ``limit_s`` None or 0: no limit.
    """

    def __init__(self, policy: str, limit_s: Optional[float], after: Optional[Callable[[str], None]] = None):
        self.policy = policy
        self.limit_s = float(limit_s) if limit_s and limit_s > 0 else None
        self.after = after          # called with the hook's name after every call that returns

    def call(self, hook: str, fn: Callable[..., Any], *args: Any) -> Any:
        result = self._timed(hook, fn, args)
        if self.after is not None:
            self.after(hook)
        return result

    def _timed(self, hook: str, fn: Callable[..., Any], args: tuple) -> Any:
        if self.limit_s is None:
            return fn(*args)
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            return self._with_alarm(hook, fn, args)
        start = time.monotonic()
        result = fn(*args)
        if time.monotonic() - start > self.limit_s:
            raise self._error(hook)
        return result

    def _with_alarm(self, hook: str, fn: Callable[..., Any], args: tuple) -> Any:
        def alarm(_signum: int, _frame: Any) -> None:
            raise _HookTimeout()

        previous = signal.signal(signal.SIGALRM, alarm)
        start = time.monotonic()
        old_delay, old_interval = 0.0, 0.0
        try:
            try:
                old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, self.limit_s)
                result = fn(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if time.monotonic() - start > self.limit_s:     # a hook that replaced our handler
                raise _HookTimeout()
            return result
        except _HookTimeout:
            raise self._error(hook) from None
        finally:
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
            if old_delay > 0:       # someone else's timer: let it run for the time it had left
                left = max(old_delay - (time.monotonic() - start), 1e-6)
                signal.setitimer(signal.ITIMER_REAL, left, old_interval)

    def _error(self, hook: str) -> PolicyError:
        return PolicyError(self.policy, f"{hook}() ran longer than the plugin hook time limit of {self.limit_s:g} s")


def describe_failure(exc: BaseException, cls: type["Policy"]) -> str:
    """An error message that names the plugin, and where in its code it failed if it did."""
    from ..sdk import PolicyParameterError

    if isinstance(exc, (PolicyError, PolicyParameterError)):
        return f"{exc} (plugin {cls.name} {cls.version})"
    text = f"{type(exc).__name__}: {exc}"
    modules = {c.__module__ for c in cls.__mro__ if c.__module__ and not c.__module__.startswith(("service.", "builtins"))}
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if any(_same_module(f.filename, m) for m in modules)]
    if frames:
        where = frames[-1]
        return (f"policy {cls.name!r} {cls.version} raised {text} "
                f"({os.path.basename(where.filename)}:{where.lineno} in {where.name})")
    return f"{text} (while running policy {cls.name!r} {cls.version})"


def _same_module(filename: str, module: str) -> bool:
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None)
    return path is not None and os.path.abspath(path) == os.path.abspath(filename)
