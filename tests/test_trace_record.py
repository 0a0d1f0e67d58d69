"""``vmemlab trace record``: a real program under valgrind's lackey becomes a dense trace that is
stable across runs and that ``vmemlab mrc`` replays exactly as libCacheSim does; a command that
does not exist or fails writes nothing."""
from __future__ import annotations

import json
import shutil

import libcachesim as lcs
import numpy as np
import pytest

from service.cli import main
from service.engine.traces import load_trace
from service.tracetools import lackey

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None,
                                reason="valgrind is not installed (apt-get install valgrind; .ci/run installs it)")


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    rng = np.random.default_rng(5)
    vocab = [f"w{i:05d}x" for i in range(3000)]
    lines = [" ".join(rng.choice(vocab, size=rng.integers(2, 6))) for _ in range(2500)]
    path = tmp_path_factory.mktemp("rec") / "words.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def two_recordings(words, tmp_path_factory):
    folder = tmp_path_factory.mktemp("out")
    runs = []
    for k in range(2):
        out = folder / f"sort{k}.txt"
        code = main(["trace", "record", "--quiet", "--output", str(out), "--", "sort", "--parallel=1", str(words)])
        assert code == 0
        runs.append(out)
    return runs


def test_recording_is_stable_across_runs(two_recordings, capsys):
    a, b = (load_trace(p) for p in two_recordings)
    assert len(a) > 100_000
    assert abs(len(a) - len(b)) <= 0.01 * len(a)
    assert abs(int(a.max()) - int(b.max())) <= max(3, 0.02 * int(a.max()))
    assert a[0] == 0 and int(a.max()) + 1 == len(np.unique(a))     # dense, numbered by first touch


def _libcachesim_misses(ids: np.ndarray, policy: str, size: int) -> int:
    cache = lcs.LRU(size) if policy == "lru" else lcs.FIFO(size) if policy == "fifo" else lcs.Clock(size)
    req = lcs.Request()
    req.obj_size = 1
    misses = 0
    for page in ids.tolist():
        req.obj_id = page
        misses += not cache.get(req)
    return misses


@pytest.mark.parametrize("policy", ["lru", "clock"])
def test_mrc_on_the_recording_agrees_with_libcachesim(two_recordings, policy, capsys):
    path = two_recordings[0]
    ids = load_trace(path)
    footprint = int(ids.max()) + 1
    sizes = [max(1, footprint // 20), footprint // 4]
    assert main(["mrc", str(path), "--replacement", policy, "--frames", ",".join(map(str, sizes)), "--json"]) == 0
    got = [r["misses"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert got == [_libcachesim_misses(ids, policy, n) for n in sizes]


def test_summary_and_instructions(words, tmp_path, capsys):
    out = tmp_path / "instr.txt"
    assert main(["trace", "record", "--instructions", "--page-size", "8192", "--output", str(out),
                 "--", "sort", str(words)]) == 0
    captured = capsys.readouterr()
    assert "references" in captured.out and "distinct pages" in captured.out and "MB" in captured.out
    assert "instructions and data" in captured.out and "recording:" in captured.err
    assert len(load_trace(out)) > 0


def test_command_not_found_writes_nothing(tmp_path, capsys):
    out = tmp_path / "t.txt"
    assert main(["trace", "record", "--output", str(out), "--", "no-such-command-vmemlab"]) == 2
    assert "no-such-command-vmemlab: command not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failing_command_writes_nothing(tmp_path, capsys):
    out = tmp_path / "t.txt"
    assert main(["trace", "record", "--quiet", "--output", str(out), "--", "sort", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "exited with status 2" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_valgrind_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(lackey.shutil, "which", lambda name: None if name == "valgrind" else real(name))
    assert main(["trace", "record", "--output", str(tmp_path / "t.txt"), "--", "true"]) == 2
    assert "apt-get install valgrind" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_no_command(tmp_path, capsys):
    assert main(["trace", "record", "--output", str(tmp_path / "t.txt")]) == 2
    assert "after --" in capsys.readouterr().err
