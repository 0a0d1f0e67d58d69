"""The vmemlab command line: output a planner can read, and user mistakes as ``error:`` lines with
exit status 2, never a traceback."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
import pytest

from service.cli import ProgressLine, format_simulation, frames_for, main, parse_frames

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def tiny_scenario(**vm_changes) -> dict:
    vm = {"name": "app", "memory_mb": 512, "os_mb": 64,
          "workload": {"phases": [{"kind": "uniform", "duration_s": 1, "footprint_mb": 64}]}}
    vm.update(vm_changes)
    return {"name": "tiny", "duration_s": 1, "host": {"memory_mb": 1024}, "vms": [vm]}


def write_json(tmp_path: Path, doc, name: str = "scenario.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *expected: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    for words in expected:
        assert words in err, err


# --- simulate: mistakes ------------------------------------------------------------------------

def test_bad_scenario(tmp_path, capsys):
    path = write_json(tmp_path, tiny_scenario(memory_mb=4096, weight=-1))
    code, out, err = run(capsys, "simulate", path)
    assert_user_error(code, err, "error: vms[0].weight: ")
    assert out == ""


def test_scenario_cross_field_rule(tmp_path, capsys):
    path = write_json(tmp_path, tiny_scenario(memory_mb=4096))
    code, _, err = run(capsys, "simulate", path)
    assert_user_error(code, err, "error: vms[0].memory_mb: VM 'app' needs up to 4096 MB")


def test_missing_scenario_file(tmp_path, capsys):
    code, _, err = run(capsys, "simulate", str(tmp_path / "nowhere.json"))
    assert_user_error(code, err, "nowhere.json: no such file")


def test_scenario_that_is_not_json(tmp_path, capsys):
    path = tmp_path / "scenario.json"
    path.write_text("{'duration_s': 1}")
    code, _, err = run(capsys, "simulate", str(path))
    assert_user_error(code, err, "invalid JSON at line 1 column 2")


def test_unknown_policy(tmp_path, capsys):
    code, _, err = run(capsys, "simulate", write_json(tmp_path, tiny_scenario()), "--policy", "nosuch")
    assert_user_error(code, err, "error: unknown policy 'nosuch'; installed: ", "static")


def test_unknown_policy_named_in_the_scenario(tmp_path, capsys):
    doc = dict(tiny_scenario(), policies=[{"name": "nosuch"}])
    code, _, err = run(capsys, "simulate", write_json(tmp_path, doc))
    assert_user_error(code, err, "unknown policy 'nosuch'")


def test_every_policy_problem_is_reported_before_any_run(tmp_path, capsys):
    code, _, err = run(capsys, "simulate", write_json(tmp_path, tiny_scenario()),
                       "--policy", "nosuch", "--policy", "static", "--policy", "other",
                       "--param", "static.colour=\"blue\"")
    assert_user_error(code, err, "'nosuch'", "'other'", "policy 'static': parameter colour: Unknown field.")
    assert len(err.strip().splitlines()) == 3


@pytest.mark.parametrize("param, words", [
    ("static", "--param 'static': expected POLICY.KEY=VALUE"),
    ("static.=1", "expected POLICY.KEY=VALUE"),
    ("esx.idle_tax=0.5", "policy 'esx' is not among the policies run (static)"),
])
def test_bad_param(tmp_path, capsys, param, words):
    code, _, err = run(capsys, "simulate", write_json(tmp_path, tiny_scenario()), "--param", param)
    assert_user_error(code, err, words)


def test_argparse_mistakes_exit_2(capsys):
    assert main(["mrc", "trace.txt", "--frames", "8"]) == 2          # no --replacement
    assert main(["mrc", "t", "--replacement", "lfu", "--frames", "8"]) == 2
    assert main([]) == 2
    assert "Traceback" not in capsys.readouterr().err


# --- simulate: a real run and its report -----------------------------------------------------

def test_simulate_end_to_end(tmp_path, capsys):
    doc = tiny_scenario()
    doc["vms"].append({"name": "big", "memory_mb": 900, "os_mb": 64})
    path = write_json(tmp_path, doc)

    code, out, err = run(capsys, "simulate", path, "--json", "--quiet")
    assert code == 0 and err == ""
    [summary] = json.loads(out)
    assert summary["policy"] == "static"
    assert [vm["name"] for vm in summary["vms"]] == ["app", "big"]

    code, out, err = run(capsys, "simulate", path)
    assert code == 0
    assert "Scenario 'tiny': 2 VMs on a 1,024 MB host, 1 s simulated, seed 0" in out
    assert "[static]   0%" in err and "done in" in err


def test_simulate_series_and_policy_events(tmp_path, capsys):
    doc = tiny_scenario()
    doc["duration_s"] = 3
    doc["policy_events"] = [{"at_s": 2, "policy": "esx", "params": {"idle_tax_pct": 90}}]
    path = write_json(tmp_path, doc)
    code, out, err = run(capsys, "simulate", path, "--policy", "esx", "--json", "--series", "--quiet")
    assert code == 0, err
    [result] = json.loads(out)
    assert len(result["series"]["time_s"]) == 3 and "allocated_mb" in result["series"]["vms"]["app"]
    assert any(e["event"] == "parameters" for e in result["events"])
    assert any("idle_tax_pct 75.0 -> 90" in note for note in result["notes"])
    assert {"allocated_end_mb", "allocated_last_minute_mb", "guaranteed_mb"} <= set(result["vms"][0])

    code, _, err = run(capsys, "simulate", path, "--series")
    assert_user_error(code, err, "--series needs --json")
    doc["policy_events"][0]["params"] = {"idle_tax_pct": 500}
    code, _, err = run(capsys, "simulate", write_json(tmp_path, doc), "--policy", "esx")
    assert_user_error(code, err, "policy_events[0].params.idle_tax_pct")


def summary(policy: str, slowdowns: dict, **host) -> dict:
    """A hand-made RunResult.summary, as the engine documents it."""
    vms = []
    for i, (name, slowdown) in enumerate(slowdowns.items()):
        vms.append({
            "name": name, "state": "ran" if slowdown is not None else "refused", "slowdown": slowdown,
            "refs_done": 1234567 * (i + 1) if slowdown is not None else 0,
            "faults": {"host_swap_in": 10 * i, "host_swap_out": 20 * i, "guest_pagefile_read": 3000,
                       "guest_page_out": 4000, "double_paging": 5 * i, "cow_break": 1, "zero_fill": 2},
            "peak_resident_mb": 1024.25, "host_swapped_peak_mb": 12.5, "ballooned_peak_mb": 256.0,
            "guest_paged_peak_mb": 0.0, "stall_s": 1.5, "blocked_s": 0.0,
        })
    ran = [s for s in slowdowns.values() if s is not None]
    return {
        "policy": policy, "policy_version": "1.2.0", "engine_version": "0.1.0", "seed": 3,
        "duration_s": 60.0, "slowdown": sum(ran) / len(ran), "fairness": 0.987654,
        "vms": vms,
        "host": {"peak_used_mb": 15000.0, "mean_used_mb": 12000.5, "sharing_saved_mb_mean": 812.3,
                 "host_swap_peak_mb": 512.0, "smart_paging_peak_mb": 0.0, "overcommit_ratio": 1.5, **host},
    }


def test_comparison_report():
    text = format_simulation([summary("esx", {"web": 1.3214, "db": None}),
                              summary("dynamic-memory", {"web": 1.05, "db": 2.5}, overcommit_ratio=1.25)],
                             "Scenario 'x': 2 VMs")
    lines = text.splitlines()
    assert lines[0] == "Scenario 'x': 2 VMs"
    header = next(line for line in lines if line.startswith("VM "))
    for title in ("policy", "state", "slowdown", "refs", "resident", "host-swapped", "ballooned", "guest-paged"):
        assert title in header
    rows = [line.split() for line in lines if line.startswith(("web ", "db "))]
    # the policies of one VM sit next to each other, in the order they ran
    assert [(r[0], r[1]) for r in rows] == [("web", "esx"), ("web", "dynamic-memory"),
                                            ("db", "esx"), ("db", "dynamic-memory")]
    assert rows[0][2:6] == ["ran", "1.32x", "1,234,567", "0"]
    assert rows[2][2:4] == ["refused", "-"]
    assert rows[3][4] == "2,469,134"
    assert "1,024.2" in lines[lines.index(next(line for line in lines if line.startswith("web ")))]

    host_rows = [line for line in lines if line.startswith(("esx ", "dynamic-memory "))]
    assert len(host_rows) == 2
    assert "1 ran, 1 refused" in host_rows[0] and "2 ran" in host_rows[1]
    for value in ("15,000.0", "12,000.5", "512.0", "812.3", "1.50", "0.988"):
        assert value in host_rows[0]
    assert "1.25" in host_rows[1]
    assert "engine 0.1.0" in lines[-1]


def test_report_columns_line_up():
    text = format_simulation([summary("esx", {"a-long-vm-name": 12.0, "b": 1.0})])
    table = [line for line in text.splitlines() if line.startswith(("VM ", "a-long", "b "))]
    ends = {len(line) for line in table}
    assert len(ends) == 1, table          # right-aligned last column: every row ends at one place


def test_report_tolerates_missing_values():
    bare = {"policy": "x", "vms": [{"name": "v", "state": "blocked"}], "host": {}}
    text = format_simulation([bare])
    assert "v   x       blocked" in text and "1 blocked" in text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_updates_at_most_once_per_percent():
    stream = _Terminal()
    progress = ProgressLine("esx", stream)
    for step in range(5001):
        progress(step / 5000)
    progress.finish()
    text = stream.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    frames = plain.split("\r")
    assert [f for f in frames if f.strip().endswith("%")] == [f for f in frames if "%" in f]
    assert len([f for f in frames if "%" in f]) == 101          # 0..100 %, each drawn once (by rich)
    assert plain.endswith("\n") and frames[-1].startswith("[esx]") and frames[-1].rstrip().endswith(" s")
    assert "done in" in frames[-1] and "\n" not in plain[:-1]


def test_progress_in_a_log_is_one_line_per_ten_percent():
    stream = io.StringIO()
    progress = ProgressLine("esx", stream)
    for step in range(5001):
        progress(step / 5000)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines == [f"[esx] {p:3d}%" for p in range(0, 100, 10)] + [lines[-1]]
    assert lines[-1].startswith("[esx] done in ") and "\r" not in stream.getvalue()


def test_quiet_progress_writes_nothing():
    stream = io.StringIO()
    progress = ProgressLine("esx", stream, enabled=False)
    progress(0.5)
    progress.finish()
    assert stream.getvalue() == ""


# --- mrc ---------------------------------------------------------------------------------------

def reference_misses(ids, replacement: str, frames: int) -> int:
    """Textbook LRU, FIFO and CLOCK, one reference at a time. CLOCK as libCacheSim has it (and
    shared/traces/README.md): a page enters with its bit clear, a hit sets it, the hand clears set
    bits and evicts the first clear one, i.e. FIFO with a second chance."""
    misses = 0
    if replacement == "clock":
        ring: deque = deque()
        referenced: dict = {}
        for page in ids:
            if page in referenced:
                referenced[page] = True
                continue
            misses += 1
            if len(ring) == frames:
                while referenced[ring[0]]:
                    referenced[ring[0]] = False
                    ring.rotate(-1)
                del referenced[ring.popleft()]
            ring.append(page)
            referenced[page] = False
    elif replacement == "lru":
        cache: OrderedDict = OrderedDict()
        for page in ids:
            if page in cache:
                cache.move_to_end(page)
                continue
            misses += 1
            if len(cache) == frames:
                cache.popitem(last=False)
            cache[page] = True
    else:
        queue: deque = deque()
        resident: set = set()
        for page in ids:
            if page in resident:
                continue
            misses += 1
            if len(queue) == frames:
                resident.discard(queue.popleft())
            queue.append(page)
            resident.add(page)
    return misses


@pytest.mark.parametrize("replacement", ["lru", "fifo", "clock"])
def test_mrc_counts_misses(tmp_path, capsys, replacement):
    rng = np.random.default_rng(5)
    ids = (rng.zipf(1.3, size=4000) % 60).tolist()
    path = tmp_path / "trace.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    code, out, err = run(capsys, "mrc", str(path), "--replacement", replacement, "--frames", "4,16,64", "--json")
    assert code == 0, err
    report = json.loads(out)
    footprint = len(set(ids))
    assert (report["references"], report["footprint"], report["replacement"]) == (4000, footprint, replacement)
    assert [r["frames"] for r in report["results"]] == [4, 16, 64]
    for result in report["results"]:
        assert result["misses"] == reference_misses(ids, replacement, result["frames"])
        assert result["miss_ratio"] == result["misses"] / 4000
    assert report["results"][-1]["misses"] == footprint       # everything fits: cold misses only


def test_mrc_table(tmp_path, capsys):
    path = tmp_path / "trace.txt"
    path.write_text("1\n2\n1\n3\n1\n2\n" * 50)
    code, out, _ = run(capsys, "mrc", str(path), "--replacement", "lru", "--frames", "50%,3")
    assert code == 0
    lines = out.splitlines()
    assert "300 references, 3 distinct pages; LRU" in lines[0]
    assert lines[-2].split() == ["1", "300", str(reference_misses([1, 2, 1, 3, 1, 2] * 50, "lru", 1)),
                                 f"{reference_misses([1, 2, 1, 3, 1, 2] * 50, 'lru', 1) / 300:.6f}"]
    assert lines[-1].split()[:3] == ["3", "300", "3"]


@pytest.mark.parametrize("name", ["lackey_sort", "lackey_sort_instr_data", "lackey_cc1"])
def test_percent_frames_follow_the_expected_results_rule(name):
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    for result in expected["results"]:
        [(kind, value)] = parse_frames(f"{result['cache_frac'] * 100:g}%")
        assert frames_for([(kind, value)], expected["distinct_ids"]) == [result["cache_size"]]


def test_tiny_percentages_give_at_least_one_frame():
    assert frames_for(parse_frames("0.001%,100%,250"), 937) == [1, 937, 250]


def test_malformed_trace(tmp_path, capsys):
    path = tmp_path / "trace.txt"
    path.write_text("1\n2\nabc\n")
    code, out, err = run(capsys, "mrc", str(path), "--replacement", "lru", "--frames", "4")
    assert_user_error(code, err, f"error: {path} line 3: 'abc' is not a non-negative integer")
    assert out == ""


def test_missing_trace(tmp_path, capsys):
    code, _, err = run(capsys, "mrc", str(tmp_path / "gone.txt"), "--replacement", "lru", "--frames", "4")
    assert_user_error(code, err, "gone.txt: no such file")


def test_bad_frames_are_reported_before_reading_the_trace(tmp_path, capsys):
    code, _, err = run(capsys, "mrc", str(tmp_path / "gone.txt"), "--replacement", "lru", "--frames", "0,x,-5%,8")
    assert_user_error(code, err, "'0'", "'x'", "'-5%'")
    assert len(err.strip().splitlines()) == 3 and "no such file" not in err


# --- plugins -----------------------------------------------------------------------------------

def test_plugins(capsys):
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    assert "\nstatic 1.0.0" in "\n" + out and "trusts the guest: no" in out

    code, out, _ = run(capsys, "plugins", "--json")
    listing = json.loads(out)
    static = next(p for p in listing if p["name"] == "static")
    assert {"version", "distribution", "trusts_guest", "summary", "parameters"} <= set(static)


# --- as a program ------------------------------------------------------------------------------

def test_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "service.cli", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("simulate", "mrc", "plugins"):
        assert command in done.stdout


def test_user_error_as_a_module_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "service.cli", "mrc", str(tmp_path / "none"),
                           "--replacement", "fifo", "--frames", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_simulate_runs_policies_in_parallel_with_the_same_results(tmp_path, capfd):
    """--jobs 2 runs the policies in two processes: the summaries are exactly those of --jobs 1,
    in the order asked for; progress comes from the pool's processes (captured at the file
    descriptor)."""
    doc = tiny_scenario(memory_mb=768)
    doc["vms"].append({**doc["vms"][0], "name": "db"})
    path = write_json(tmp_path, doc)
    policies = ["--policy", "static", "--policy", "esx", "--policy", "dynamic-memory", "--policy", "kvm"]
    code, one, _ = run(capfd, "simulate", path, *policies, "--json", "--jobs", "1")
    assert code == 0
    code, two, err = run(capfd, "simulate", path, *policies, "--json", "--jobs", "2")
    assert code == 0, err
    assert json.loads(two) == json.loads(one)
    assert [s["policy"] for s in json.loads(two)] == ["static", "esx", "dynamic-memory", "kvm"]
    assert "[esx] done in" in err and "[kvm] done in" in err
    code, table, _ = run(capfd, "simulate", path, *policies, "--jobs", "2", "--quiet")
    assert code == 0 and table.splitlines()[2].startswith("On this 1 GB host with 2 VMs: static runs 1 of 2")
