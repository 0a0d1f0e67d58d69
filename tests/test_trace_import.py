"""``vmemlab trace import``: an oracleGeneral file (written here with libCacheSim's documented
layout) replays in ``vmemlab mrc`` with libCacheSim's miss counts on the original ids; csv/text
columns import; a truncated binary or a bad csv row is an error that writes nothing."""
from __future__ import annotations

import json

import libcachesim as lcs
import numpy as np
import pytest

from service.cli import main
from service.engine.traces import load_trace
from service.tracetools.importers import ORACLE_GENERAL


def _oracle_general(path, obj_ids):
    records = np.zeros(len(obj_ids), dtype=ORACLE_GENERAL)
    records["timestamp"] = np.arange(len(obj_ids))
    records["obj_id"] = obj_ids
    records["obj_size"] = 4096
    records["next_access_vtime"] = -1
    records.tofile(path)


def _libcachesim(obj_ids, policy, size):
    cache = {"lru": lcs.LRU, "fifo": lcs.FIFO, "clock": lcs.Clock}[policy](size)
    req = lcs.Request()
    req.obj_size = 1
    misses = 0
    for obj in obj_ids.tolist():
        req.obj_id = obj
        misses += not cache.get(req)
    return misses


@pytest.fixture(scope="module")
def original():
    rng = np.random.default_rng(11)
    ranks = rng.zipf(1.3, 40_000) % 3000
    # sparse 64-bit ids, as block addresses or hashes are
    return (ranks.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(0xABCDEF)


@pytest.mark.parametrize("policy", ["lru", "fifo", "clock"])
def test_oracle_general_import_matches_libcachesim(original, tmp_path, capsys, policy):
    source, out = tmp_path / "t.oracleGeneral.bin", tmp_path / "t.txt"
    _oracle_general(source, original)
    assert main(["trace", "import", str(source), "--format", "oracle-general", "--output", str(out)]) == 0
    assert "40,000 references" in capsys.readouterr().out
    distinct = len(np.unique(original))
    sizes = [1, distinct // 20, distinct // 4]
    assert main(["mrc", str(out), "--replacement", policy, "--frames", ",".join(map(str, sizes)), "--json"]) == 0
    got = [r["misses"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert got == [_libcachesim(original, policy, n) for n in sizes]


def test_truncated_binary_is_an_error_and_writes_nothing(original, tmp_path, capsys):
    source, out = tmp_path / "t.bin", tmp_path / "out" / "t.txt"
    out.parent.mkdir()
    _oracle_general(source, original[:10])
    source.write_bytes(source.read_bytes()[:-5])
    assert main(["trace", "import", str(source), "--format", "oracle-general", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "request 10 is incomplete" in err
    assert list(out.parent.iterdir()) == []


def test_csv_column_and_text(tmp_path, capsys):
    source, out = tmp_path / "t.csv", tmp_path / "t.txt"
    source.write_text("time,op,lbn\n1,r,900\n2,w,17\n3,r,900\n\n4,r,0x1f\n")
    assert main(["trace", "import", str(source), "--format", "csv", "--column", "3", "--skip-header",
                 "--output", str(out)]) == 0
    assert load_trace(out).tolist() == [0, 1, 0, 2]
    text = tmp_path / "t.log"
    text.write_text("a 5\nb 6\n  c   5  \n")
    assert main(["trace", "import", str(text), "--format", "text", "--column", "2", "--output", str(out)]) == 0
    assert load_trace(out).tolist() == [0, 1, 0]
    assert "3 references, 2 distinct pages" in capsys.readouterr().out


def test_csv_bad_row_names_its_line_and_writes_nothing(tmp_path, capsys):
    source, out = tmp_path / "t.csv", tmp_path / "out" / "t.txt"
    out.parent.mkdir()
    source.write_text("1,r,900\n2,w,17\n3,r\n4,r,5\n")
    assert main(["trace", "import", str(source), "--format", "csv", "--column", "3", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "--column 3 is missing" in err
    assert list(out.parent.iterdir()) == []


def test_missing_input(tmp_path, capsys):
    assert main(["trace", "import", str(tmp_path / "none.csv"), "--format", "csv",
                 "--output", str(tmp_path / "o.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["trace", "import", str(tmp_path / "none.bin"), "--format", "oracle-general",
                 "--output", str(tmp_path / "o.txt")]) == 2
    assert list(tmp_path.iterdir()) == []
