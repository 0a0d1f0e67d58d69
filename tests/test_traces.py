"""Loading recorded page-reference traces: formats, dense ids, and errors that name the line."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from service.engine import traces
from service.engine.traces import TraceError, load_trace, renumber_dense, trace_stats

DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, content: bytes, name: str = "trace.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def first_reference_order(raw) -> list[int]:
    """The obvious renumbering, one reference at a time: the reference the fast one must match."""
    seen: dict[int, int] = {}
    return [seen.setdefault(int(x), len(seen)) for x in raw]


# --- formats ---------------------------------------------------------------------------------

def test_text_trace_is_renumbered_densely_in_order_of_first_reference(tmp_path):
    ids = load_trace(write(tmp_path, b"500\n7\n500\n123456789012\n7\n"))
    assert ids.dtype == np.int32
    assert ids.tolist() == [0, 1, 0, 2, 1]


def test_gzip_is_recognised_by_its_magic_bytes_not_its_name(tmp_path):
    compressed = write(tmp_path, gzip.compress(b"3\n1\n3\n"), name="looks_plain.txt")
    plain = write(tmp_path, b"3\n1\n3\n", name="looks_compressed.gz")
    assert load_trace(compressed).tolist() == [0, 1, 0]
    assert load_trace(plain).tolist() == [0, 1, 0]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.uint64])
def test_npy_of_any_integer_dtype(tmp_path, dtype):
    path = tmp_path / "trace.npy"
    np.save(path, np.array([9, 4, 9, 2], dtype=dtype))
    assert load_trace(path).tolist() == [0, 1, 0, 2]


def test_npy_is_recognised_without_its_extension(tmp_path):
    path = tmp_path / "trace.npy"
    np.save(path, np.array([1, 1, 0]))
    renamed = path.rename(tmp_path / "trace.data")
    assert load_trace(renamed).tolist() == [0, 0, 1]


@pytest.mark.parametrize("content", [
    b"4\n5\n4",                # no final newline
    b"4\n5\n4\n\n\n",          # trailing blank lines
    b"4\r\n5\r\n4\r\n",        # CRLF
    b" 4\n5 \n\t4\n",          # spaces around numbers
    b"004\n5\n4\n",            # leading zeros are still the same number
])
def test_tolerated_text_variations(tmp_path, content):
    assert load_trace(write(tmp_path, content)).tolist() == [0, 1, 0]


def test_already_dense_trace_is_returned_as_is(tmp_path):
    assert load_trace(write(tmp_path, b"0\n1\n0\n2\n1\n3\n")).tolist() == [0, 1, 0, 2, 1, 3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1) | st.integers(0, 20), min_size=1, max_size=300))
def test_renumbering_matches_the_one_reference_at_a_time_definition(raw):
    assert renumber_dense(np.array(raw, dtype=np.uint64)).tolist() == first_reference_order(raw)


def test_trace_stats(tmp_path):
    ids = load_trace(write(tmp_path, b"8\n8\n3\n8\n5\n"))
    assert trace_stats(ids) == {"refs": 5, "footprint": 3}
    assert trace_stats(np.array([10**12, 5, 10**12])) == {"refs": 3, "footprint": 2}


@pytest.mark.parametrize("name", ["lackey_sort", "lackey_sort_instr_data", "lackey_cc1"])
def test_shared_lackey_traces(name):
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    path = DATA / f"{name}.txt.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected["trace_gz_sha256"]
    ids = load_trace(path)
    assert trace_stats(ids) == {"refs": expected["n_refs"], "footprint": expected["distinct_ids"]}
    assert ids[0] == 0 and ids.max() == expected["distinct_ids"] - 1


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, line, words", [
    (b"1\n2\nabc\n4\n", 3, "'abc' is not a non-negative integer"),
    (b"1\n-7\n", 2, "negative id '-7'"),
    (b"1\n2.5\n", 2, "'2.5' is not a non-negative integer"),
    (b"1\n+3\n", 2, "'+3' is not a non-negative integer"),
    (b"1\n2\n\n3\n", 3, "blank line"),
    (b"\n1\n", 1, "blank line"),
    (b"1\n \t\n3\n", 2, "blank line"),
    (b"1\n2 3\n", 2, "'2 3' holds more than one value"),
    (b"1\n99999999999999999999\n", 2, "larger than the largest supported id"),
    (b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16\nx17\n", 17, "'x17'"),
])
def test_bad_line_is_named_by_number(tmp_path, content, line, words):
    path = write(tmp_path, content)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert caught.value.line == line
    assert words in caught.value.message
    assert str(caught.value).startswith(f"{path} line {line}: ")


def test_bad_line_in_gzip_is_named_by_number(tmp_path):
    with pytest.raises(TraceError) as caught:
        load_trace(write(tmp_path, gzip.compress(b"1\n2\nthree\n"), name="t.gz"))
    assert caught.value.line == 3


def test_first_of_several_problems_is_reported(tmp_path):
    with pytest.raises(TraceError) as caught:
        load_trace(write(tmp_path, b"1\n2 3\n4\n\nabc\n"))
    assert caught.value.line == 2


def test_int64_max_itself_is_a_valid_id(tmp_path):
    assert load_trace(write(tmp_path, b"9223372036854775807\n1\n")).tolist() == [0, 1]


@pytest.mark.parametrize("content", [b"", b"\n", b"\n\n  \n"])
def test_empty_trace(tmp_path, content):
    with pytest.raises(TraceError, match="empty trace") as caught:
        load_trace(write(tmp_path, content))
    assert caught.value.line is None


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nowhere.txt")


def test_directory(tmp_path):
    with pytest.raises(TraceError, match="is a directory"):
        load_trace(tmp_path)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(b"1\n2\n" * 1000)
    with pytest.raises(TraceError, match="not a valid gzip file"):
        load_trace(write(tmp_path, data[: len(data) // 2]))


@pytest.mark.parametrize("array, words", [
    (np.array([1.0, 2.0]), "must hold integers"),
    (np.array([True, False]), "must hold integers"),
    (np.array([[1, 2], [3, 4]]), "must be a 1-D array"),
    (np.array(5), "must be a 1-D array"),
    (np.array([3, -1, 2]), "element 1: negative id -1"),
    (np.array([], dtype=np.int64), "empty trace"),
])
def test_bad_npy(tmp_path, array, words):
    path = tmp_path / "trace.npy"
    np.save(path, array)
    with pytest.raises(TraceError, match=words) as caught:
        load_trace(path)
    assert caught.value.line is None


def test_npy_of_objects_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "trace.npy"
    np.save(path, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(TraceError, match="not a readable .npy file"):
        load_trace(path)


def test_npz_archive_is_refused(tmp_path):
    path = tmp_path / "trace.npz"
    np.savez(path, ids=np.arange(3))
    with pytest.raises(TraceError, match="npz"):
        load_trace(path)


def test_too_many_distinct_ids(tmp_path, monkeypatch):
    # 2**31 distinct ids need 16 GB; the limit is the same code path at any size
    monkeypatch.setattr(traces, "MAX_DISTINCT_IDS", 3)
    with pytest.raises(TraceError, match="4 distinct ids"):
        load_trace(write(tmp_path, b"0\n1\n2\n3\n"))
    with pytest.raises(TraceError, match="4 distinct ids"):
        load_trace(write(tmp_path, b"9\n1\n7\n3\n"))


def test_trace_error_is_a_value_error():
    err = TraceError("t.txt", 17, "'abc' is not a non-negative integer")
    assert isinstance(err, ValueError)
    assert str(err) == "t.txt line 17: 'abc' is not a non-negative integer"
    assert str(TraceError("t.txt", None, "empty trace")) == "t.txt: empty trace"
