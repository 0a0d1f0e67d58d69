"""An uploaded trace carries its analysis: the LRU miss-ratio curve (downsampled), working sets,
reuse-distance histogram and method; the item shows it, the list leaves it out, and a trace stored
before the analysis existed answers null until it is uploaded again."""
from __future__ import annotations

import json

import numpy as np
from sqlalchemy import update

from service import db
from service.engine.stack_distance import distance_histogram, lru_misses
from service.engine.traces import load_trace
from service.models import Trace
from service.tracetools.analysis import MAX_POINTS, curve_sizes
from tests.conftest import DATA, ROOT

from .helpers import write_trace


def test_upload_stores_the_curve_and_the_item_shows_it(api, tmp_path):
    path = write_trace(tmp_path / "hot.txt.gz", pages=3000, refs=20000)
    created = api.client.post("/api/v1/traces?name=hot", data=path.read_bytes(),
                              content_type="application/octet-stream")
    assert created.status_code == 201
    analysis = created.get_json()["analysis"]
    assert analysis["method"] == "exact" and analysis["sampling_rate"] is None
    assert (analysis["references"], analysis["footprint_pages"], analysis["cold_misses"]) == (20000, 3000, 3000)

    curve = analysis["curve"]
    assert 2 <= len(curve) <= MAX_POINTS
    assert curve[0]["frames"] == 1 and curve[-1]["frames"] == 3000
    ratios = [p["miss_ratio"] for p in curve]
    assert ratios == sorted(ratios, reverse=True)
    exact = lru_misses(distance_histogram(load_trace(path)))
    for point in curve:
        assert point["miss_ratio"] == round(int(exact[point["frames"]]) / 20000, 6)
        assert point["mb"] == round(point["frames"] / 256, 3)

    assert [w["share"] for w in analysis["working_set"]] == ["90%", "95%", "99%"]
    assert analysis["working_set"][0]["pages"] <= 300       # 90 %: the hot tenth
    assert sum(b["references"] for b in analysis["reuse_histogram"]) == 20000
    assert analysis["reuse_histogram"][-1]["cold"] is True

    item = api.get(f"/api/v1/traces/{created.get_json()['id']}").get_json()
    assert item["analysis"] == analysis
    assert "analysis" not in api.get("/api/v1/traces").get_json()[0]


def test_a_trace_without_analysis_answers_null_until_uploaded_again(api, settings, tmp_path):
    raw = write_trace(tmp_path / "old.txt.gz", pages=500, refs=4000).read_bytes()
    trace_id = api.client.post("/api/v1/traces?name=old", data=raw,
                               content_type="application/octet-stream").get_json()["id"]
    with db.session_scope(settings.database_url) as session:    # as a row from before 0008
        session.execute(update(Trace).where(Trace.id == trace_id).values(analysis=None))
    assert api.get(f"/api/v1/traces/{trace_id}").get_json()["analysis"] is None

    again = api.client.post("/api/v1/traces?name=old", data=raw, content_type="application/octet-stream")
    assert again.status_code == 200 and again.get_json()["analysis"]["footprint_pages"] == 500
    assert api.get(f"/api/v1/traces/{trace_id}").get_json()["analysis"]["method"] == "exact"


def test_curve_sizes_stay_few_and_cover_both_ends():
    assert curve_sizes(5).tolist() == [1, 2, 3, 4, 5]
    sizes = curve_sizes(265_873)
    assert len(sizes) <= MAX_POINTS and sizes[0] == 1 and sizes[-1] == 265_873
    assert np.all(np.diff(sizes) > 0)
    assert (sizes <= 100).sum() >= 25           # the small caches keep their detail


def test_the_walkthroughs_service_scenario_is_accepted(api):
    """docs/traces.md step 5: the example scenario with its trace path replaced by the uploaded
    trace's id (the page's sed line) makes an experiment that uses the trace."""
    trace = api.client.post("/api/v1/traces?name=sort", data=(DATA / "lackey_sort.txt.gz").read_bytes(),
                            content_type="application/octet-stream").get_json()
    text = (ROOT / "examples" / "traces" / "sort-two-vms.json").read_text()
    text = text.replace('"trace": "sort.txt"', f'"trace_id": {trace["id"]}')
    created = api.client.post("/api/v1/experiments", json=json.loads(text))
    assert created.status_code == 201, created.get_json()
    assert api.get(f"/api/v1/traces/{trace['id']}").get_json()["ref_count"] == 1


def test_a_trace_above_the_limit_stores_the_sampled_curve(api, tmp_path, monkeypatch):
    monkeypatch.setattr("service.engine.stack_distance.SAMPLE_ABOVE_REFS", 10_000)
    monkeypatch.setattr("service.engine.shards.MIN_SAMPLED_PAGES", 100)
    path = write_trace(tmp_path / "big.txt.gz", pages=20000, refs=60000)
    analysis = api.client.post("/api/v1/traces?name=big", data=path.read_bytes(),
                               content_type="application/octet-stream").get_json()["analysis"]
    assert analysis["method"] == "shards" and analysis["sampling_rate"] == 0.01 and analysis["resolution_pages"] == 100
    ratios = [p["miss_ratio"] for p in analysis["curve"]]
    assert ratios == sorted(ratios, reverse=True) and 0 <= ratios[-1] <= ratios[0] <= 1
    exact = lru_misses(distance_histogram(load_trace(path)))
    error = np.mean([abs(p["miss_ratio"] - exact[p["frames"]] / 60000) for p in analysis["curve"]])
    assert error < 0.05
    trace_id = api.get("/api/v1/traces?name=big").get_json()[0]["id"]
    page = " ".join(api.get(f"/traces/{trace_id}").get_data(as_text=True).split())
    assert "cannot tell sizes below 100 pages apart" in page and "(not resolved)" in page
    assert "shards" in api.get("/traces").get_data(as_text=True)          # the list's method, read alone
