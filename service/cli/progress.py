"""Progress on stderr: drawn with rich on a terminal, plain lines in a pipe or a log file.

A terminal gets a live display that rich redraws in place and fits to the terminal's width, read
again at every redraw (a line wider than the terminal wraps, and ``\\r`` then returns only to the
start of its last row: every rewrite left a new line behind on an 80-column terminal). A pipe or a
log gets one line per 10% and one when a run ends, with no control characters, so logs stay
readable and greppable.
"""
from __future__ import annotations

import time
from typing import Sequence, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Column

from ..client import FINISHED as FINISHED_STATUSES


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:          # a closed stream
        return False


def _live(stream: TextIO, label_width: int) -> Progress:
    """A rich Progress on ``stream``, one row per task: label, bar, status. Redrawn only when
    told (no refresh thread: the engine's loop holds the GIL for long stretches anyway)."""
    console = Console(file=stream, force_terminal=True, highlight=False, emoji=False, soft_wrap=False)
    # on a narrow terminal the bar shrinks and goes first, then the label and the status are cut
    # (with an ellipsis): a row never wraps
    return Progress(
        TextColumn("{task.description}", markup=False,
                   table_column=Column(no_wrap=True, overflow="ellipsis", min_width=6,
                                       max_width=min(max(label_width, 6), 32))),
        BarColumn(bar_width=24, table_column=Column(ratio=1)),
        TextColumn("{task.fields[status]}", markup=False,
                   table_column=Column(no_wrap=True, overflow="ellipsis", min_width=15)),
        console=console, auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=False,
    )


class ProgressLine:
    """The progress of one simulation: ``[esx] ━━━━╺━━━━━  42%`` redrawn once per percent on a
    terminal; on a pipe or a log file, ``[esx]  40%`` one line per 10%."""

    def __init__(self, label: str, stream: TextIO, enabled: bool = True, interactive: bool | None = None):
        self.label, self.stream, self.enabled = label, stream, enabled
        self.shown = -1
        self.started = time.monotonic()
        # several processes writing to one terminal cannot each redraw "their" line
        self.interactive = _is_terminal(stream) if interactive is None else interactive
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, fraction: float) -> None:
        percent = int(min(max(fraction, 0.0), 1.0) * 100)
        step = 1 if self.interactive else 10
        if not self.enabled or (percent < self.shown + step and self.shown >= 0):
            return
        self.shown = percent
        if self.interactive:
            self._draw(percent, f"{percent:3d}%")
        elif percent < 100:
            self.stream.write(f"[{self.label}] {percent:3d}%\n")
            self.stream.flush()

    def _draw(self, percent: int, status: str) -> None:
        if self._progress is None:
            self._progress = _live(self.stream, len(self.label) + 2)
            self._task = self._progress.add_task(f"[{self.label}]", total=100, completed=percent, status=status)
            self._progress.start()          # draws it
            return
        assert self._task is not None
        self._progress.update(self._task, completed=percent, status=status)
        self._progress.refresh()

    def finish(self) -> None:
        if not self.enabled:
            return
        done = f"done in {time.monotonic() - self.started:.1f} s"
        if self.interactive:
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, completed=100, status=done)   # stop() draws it
            else:
                self._draw(100, done)
            self._stop()
        else:
            self.stream.write(f"[{self.label}] {done}\n")
            self.stream.flush()

    def abandon(self) -> None:
        """End the display, so that an error message does not start in the middle of it."""
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class RunsProgress:
    """The progress of several runs on stderr: on a terminal a row per run, redrawn in place; on a
    pipe, a line per run at each 10% and when it finishes. Call ``end()`` whatever happens (a
    ``finally``): it leaves the display and shows the cursor again."""

    def __init__(self, ids: Sequence[int], names: dict[int, str], stream: TextIO, enabled: bool = True):
        self.ids, self.names, self.stream, self.enabled = list(ids), names, stream, enabled
        self.state: dict[int, tuple[str, int]] = {i: ("queued", 0) for i in ids}
        self.shown: dict[int, tuple[str, int]] = {}
        self.started: dict[int, float] = {}
        self.interactive = _is_terminal(stream)
        self._progress: Progress | None = None
        self._tasks: dict[int, TaskID] = {}

    def update(self, run_id: int, run: dict) -> None:
        status = str(run.get("status") or "?")
        try:
            percent = int(min(max(float(run.get("progress") or 0.0), 0.0), 1.0) * 100)
        except (TypeError, ValueError):
            percent = 0
        if status == "running":
            self.started.setdefault(run_id, time.monotonic())
        self.state[run_id] = (status, percent)
        if not self.enabled:
            return
        if self.interactive:
            self._draw(run_id, run, status, percent)
        else:
            self._line(run_id, run, status, percent)

    def _draw(self, run_id: int, run: dict, status: str, percent: int) -> None:
        if self._progress is None:
            labels = [f"[{self.names.get(i, str(i))}]" for i in self.ids]
            self._progress = _live(self.stream, max(map(len, labels)))
            for i, label in zip(self.ids, labels):
                # a task's clock starts when its run starts running, not when it was queued
                self._tasks[i] = self._progress.add_task(label, total=100, status="queued", start=False)
            self._progress.start()
        task = self._tasks[run_id]
        if status == "running" or status in FINISHED_STATUSES:
            self._progress.start_task(task)
        if status == "running":
            text = f"{percent:3d}%"
        elif status == "succeeded":
            text, percent = f"done{self._took(run_id, run)}", 100
        elif status in FINISHED_STATUSES:
            text = f"{status}{self._took(run_id, run)}"
        else:
            text = status
        self._progress.update(task, completed=percent, status=text)
        if status in FINISHED_STATUSES:
            self._progress.stop_task(task)
        self._progress.refresh()

    def _line(self, run_id: int, run: dict, status: str, percent: int) -> None:
        before = self.shown.get(run_id)
        label = self.names.get(run_id, str(run_id))
        if status in FINISHED_STATUSES:
            if before is None or before[0] != status:
                self.stream.write(f"[{label}] {status}{self._took(run_id, run)}\n")
        elif status == "running":
            if before is None or before[0] != "running" or percent >= before[1] + 10:
                self.stream.write(f"[{label}] {percent:3d}%\n")
            else:
                return
        elif before is None or before[0] != status:
            self.stream.write(f"[{label}] {status}\n")
        else:
            return
        self.shown[run_id] = (status, percent)
        self.stream.flush()

    def _took(self, run_id: int, run: dict) -> str:
        wall = run.get("wall_s")
        if isinstance(wall, (int, float)):
            return f" in {wall:.1f} s"
        if run_id in self.started:
            return f" in {time.monotonic() - self.started[run_id]:.1f} s"
        return ""

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
