"""``vmemlab trace import``: an oracleGeneral file (written here with libCacheSim's documented
layout) replays in ``vmemlab mrc`` with libCacheSim's miss counts on the original ids; csv/text
columns import; a truncated binary or a bad csv row is an error that writes nothing."""
from __future__ import annotations

import json
import os

import libcachesim as lcs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask          # not the temporary file's 0600
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


def test_object_sizes_split_into_pages_of_each_objects_range(tmp_path, capsys):
    from service.tracetools.importers import split_into_pages

    # object 900: 10,000 bytes = 3 pages, then 1 byte = its first page; object 17: 0 bytes = 1 page;
    # object 900 at 4096 bytes exactly = 1 page
    source, out = tmp_path / "t.csv", tmp_path / "t.txt"
    source.write_text("lbn,size\n900,10000\n17,0\n900,1\n17,4097\n900,4096\n")
    assert main(["trace", "import", str(source), "--format", "csv", "--skip-header", "--column", "1",
                 "--object-size-column", "2", "--output", str(out)]) == 0
    assert "5 requests split into 4096-byte pages" in capsys.readouterr().out
    # 900 -> pages 0,1,2; 17 -> its own range, page 3 (and 4 when it grows to 2 pages)
    assert load_trace(out).tolist() == [0, 1, 2, 3, 0, 3, 4, 0]
    assert split_into_pages(np.array([5, 5]), np.array([8192, 8193]), 4096).tolist() == [0, 1, 0, 1, 2]
    assert split_into_pages(np.array([1, 2]), np.array([100, 100]), 64).tolist() == [0, 1, 2, 3]


def test_oracle_general_object_sizes(tmp_path, capsys):
    source, out = tmp_path / "t.bin", tmp_path / "t.txt"
    records = np.zeros(3, dtype=ORACLE_GENERAL)
    records["obj_id"] = [7, 8, 7]
    records["obj_size"] = [12288, 100, 5000]
    records.tofile(source)
    assert main(["trace", "import", str(source), "--format", "oracle-general", "--object-sizes",
                 "--output", str(out)]) == 0
    assert load_trace(out).tolist() == [0, 1, 2, 3, 0, 1]
    assert "6 references, 4 distinct pages" in capsys.readouterr().out
    # the default still ignores sizes: one page per request
    assert main(["trace", "import", str(source), "--format", "oracle-general", "--output", str(out)]) == 0
    assert load_trace(out).tolist() == [0, 1, 0]


def test_bad_object_sizes_name_the_line_and_write_nothing(tmp_path, capsys):
    source, out = tmp_path / "t.csv", tmp_path / "out" / "t.txt"
    out.parent.mkdir()
    source.write_text("1,4096\n2,big\n")
    assert main(["trace", "import", str(source), "--format", "csv", "--object-size-column", "2",
                 "--output", str(out)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["trace", "import", str(source), "--format", "csv", "--object-sizes", "--output", str(out)]) == 2
    assert "--object-size-column" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_a_split_too_large_for_memory_is_refused_before_it_is_built(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("service.tracetools.importers.MAX_SPLIT_REFERENCES", 1000)
    source, out = tmp_path / "big.csv", tmp_path / "out" / "t.txt"
    out.parent.mkdir()
    source.write_text("1,4096000\n2,4096\n")                    # 1,000 + 1 pages at 4 KiB
    assert main(["trace", "import", str(source), "--format", "csv", "--object-size-column", "2",
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1,001 page references" in err and "--page-size" in err and list(out.parent.iterdir()) == []
    assert main(["trace", "import", str(source), "--format", "csv", "--object-size-column", "2",
                 "--page-size", "65536", "--output", str(out)]) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20_000)), min_size=1, max_size=60),
       st.sampled_from([512, 4096]))
def test_split_counts_pages_per_request_and_per_object(requests, page_size):
    from service.tracetools.importers import split_into_pages

    objects = np.array([o for o, _ in requests])
    sizes = np.array([s for _, s in requests])
    refs = split_into_pages(objects, sizes, page_size)
    pages = [max(1, -(-s // page_size)) for s in sizes.tolist()]
    assert len(refs) == sum(pages)
    spans = {}
    for o, p in zip(objects.tolist(), pages):
        spans[o] = max(spans.get(o, 0), p)
    assert int(refs.max()) + 1 == sum(spans.values())       # each object its own range, never shared
    # a request touches p distinct pages, starting at its object's first page
    start = 0
    first_page = {}
    for o, p in zip(objects.tolist(), pages):
        run = refs[start:start + p].tolist()
        start += p
        assert len(set(run)) == p and first_page.setdefault(o, run[0]) == run[0]
