"""The progress display fits the terminal: on an 80-column terminal no line it draws is wider than
80 characters (a wider one wraps, and every redraw then left a new line behind)."""
from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from service.cli.progress import ProgressLine, RunsProgress

ROOT = Path(__file__).parent.parent
# the seed's policies and a third party's long name, as `vmemlab up --submit` shows them
POLICIES = ["static", "overcommit", "esx", "dynamic-memory", "smart-paging", "kvm",
            "acme-memory-broker-with-a-very-long-plugin-name"]
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen_lines(raw: str) -> list[str]:
    """What each write leaves on a row: escape sequences removed, split at every return and newline."""
    return re.split(r"[\r\n]", _CONTROL.sub("", raw))


def assert_fits(raw: str, columns: int) -> None:
    lines = screen_lines(raw)
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, f"{len(too_wide)} lines wider than {columns}: {too_wide[:3]}"
    assert any(line.strip() for line in lines), "nothing was drawn"


@pytest.fixture
def eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")


def test_several_runs_at_80_columns(eighty_columns):
    stream = _Terminal()
    ids = list(range(1, len(POLICIES) + 1))
    progress = RunsProgress(ids, dict(zip(ids, POLICIES)), stream)
    for run_id in ids:
        progress.update(run_id, {"status": "queued"})
    for step in range(0, 101, 5):
        for run_id in ids:
            if run_id % 3 == 0 and step > 50:
                progress.update(run_id, {"status": "failed", "wall_s": 1234.5})
            else:
                status = "succeeded" if step == 100 else "running"
                progress.update(run_id, {"status": status, "progress": step / 100, "wall_s": 98765.4})
    progress.end()
    raw = stream.getvalue()
    assert_fits(raw, 80)
    final = [line for line in screen_lines(raw)[-len(ids) - 1:] if line.strip()]
    assert len(final) == len(ids)                       # a row per run, its last state
    assert final[0].startswith("[static]") and "done in 98765.4 s" in final[0]
    assert "failed" in final[2] and "[acme-memory-broker" in final[-1] and "…" in final[-1]
    assert raw.endswith("\x1b[?25h")                    # the cursor is shown again


def test_one_run_at_80_columns_with_a_long_label(eighty_columns):
    stream = _Terminal()
    progress = ProgressLine("sweep 12345: " + "x" * 120, stream)
    for step in range(201):
        progress(step / 200)
    progress.finish()
    assert_fits(stream.getvalue(), 80)


def test_an_abandoned_display_ends_its_line_and_shows_the_cursor(eighty_columns):
    stream = _Terminal()
    progress = ProgressLine("esx", stream)
    progress(0.4)
    progress.abandon()
    assert stream.getvalue().endswith("\n\x1b[?25h")


def test_narrow_terminals_too(monkeypatch):
    for columns in (40, 60, 100):
        monkeypatch.setenv("COLUMNS", str(columns))
        stream = _Terminal()
        progress = RunsProgress([1, 2], {1: POLICIES[-1], 2: "esx"}, stream)
        progress.update(1, {"status": "running", "progress": 0.5})
        progress.update(2, {"status": "succeeded", "wall_s": 3.0})
        progress.end()
        assert_fits(stream.getvalue(), columns)


def test_a_pipe_gets_plain_lines():
    stream = io.StringIO()
    progress = RunsProgress([1], {1: "esx"}, stream)
    progress.update(1, {"status": "running", "progress": 0.5})
    progress.update(1, {"status": "succeeded", "wall_s": 3.0})
    progress.end()
    assert stream.getvalue() == "[esx]  50%\n[esx] succeeded in 3.0 s\n"


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:          # EIO: the child closed the terminal
            if exc.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_simulate_on_a_real_80_column_terminal(tmp_path: Path):
    """`vmemlab simulate` in a pseudo-terminal of 80 columns: rich reads the width from the
    terminal itself (no COLUMNS), and the progress lines fit."""
    scenario = {"name": "tiny", "duration_s": 3, "epoch_s": 0.25, "host": {"memory_mb": 1024},
                "vms": [{"name": "app", "memory_mb": 512, "os_mb": 64,
                         "workload": {"phases": [{"kind": "uniform", "duration_s": 3, "footprint_mb": 64}]}}]}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "simulate", str(path), "--jobs", "1",
         "--policy", "static", "--policy", "dynamic-memory"],
        cwd=ROOT, env=env, stdin=follower, stdout=subprocess.DEVNULL, stderr=follower, close_fds=True)
    os.close(follower)
    try:
        raw = _read_all(leader).decode("utf-8", "replace")
    finally:
        os.close(leader)
        code = proc.wait(timeout=300)
    assert code == 0, raw
    assert "\x1b[" in raw, "no live display: the terminal was not seen as one"
    assert_fits(raw, 80)
    plain = [line for line in screen_lines(raw) if line.strip()]
    assert any(line.startswith("[static]") and "done in" in line for line in plain), plain[-4:]
    assert any(line.startswith("[dynamic-memory]") and "done in" in line for line in plain), plain[-4:]
