"""Trace uploads: streamed to the trace folder, checksummed, measured, stored once per content;
too large (413) or unreadable (422) uploads leave nothing behind; a trace in use is not deleted."""
from __future__ import annotations

import hashlib
import io

from .helpers import error_fields, experiment, write_trace


def _trace_files(settings) -> list[str]:
    return sorted(p.name for p in settings.trace_dir.iterdir())


def test_upload_as_body_and_as_form(api, settings, tmp_path):
    path = write_trace(tmp_path / "hot.txt.gz", pages=3000, refs=20000)
    raw = path.read_bytes()
    created = api.client.post("/api/v1/traces?name=hot", data=raw, content_type="application/octet-stream")
    assert created.status_code == 201, created.get_json()
    trace = created.get_json()
    assert trace["sha256"] == hashlib.sha256(raw).hexdigest() and trace["format"] == "gzip"
    assert (trace["length"], trace["footprint_pages"], trace["size_bytes"]) == (20000, 3000, len(raw))
    assert trace["ref_count"] == 0 and trace["footprint_mb"] > 11
    assert _trace_files(settings) == [trace["sha256"]]

    # the same content again, as a form: stored once, 200 with the first record
    again = api.client.post("/api/v1/traces", data={"file": (io.BytesIO(raw), "hot-again.txt.gz")},
                            content_type="multipart/form-data")
    assert again.status_code == 200 and again.get_json()["id"] == trace["id"]

    text = write_trace(tmp_path / "plain.txt", pages=100, refs=500, compress=False)
    form = api.client.post("/api/v1/traces", data={"file": (open(text, "rb"), "plain.txt"), "name": "plain"},
                           content_type="multipart/form-data")
    assert form.status_code == 201 and form.get_json()["name"] == "plain" and form.get_json()["format"] == "text"

    assert [t["name"] for t in api.get("/api/v1/traces").get_json()] == ["hot", "plain"]
    assert [t["id"] for t in api.get(f"/api/v1/traces?sha256={trace['sha256']}").get_json()] == [trace["id"]]
    assert api.get(f"/api/v1/traces/{trace['id']}").get_json() == trace
    assert api.delete(f"/api/v1/traces/{form.get_json()['id']}").status_code == 204
    assert _trace_files(settings) == [trace["sha256"]]


def test_real_trace(api):
    from tests.conftest import DATA

    raw = (DATA / "lackey_sort_instr_data.txt.gz").read_bytes()
    created = api.client.post("/api/v1/traces?name=sort", data=raw, content_type="application/octet-stream")
    assert created.status_code == 201
    assert (created.get_json()["length"], created.get_json()["footprint_pages"]) == (20_000_000, 986)


def test_too_large_or_unreadable_uploads_store_nothing(api, make_app, counts, settings, tmp_path):
    raw = write_trace(tmp_path / "t.gz", pages=2000, refs=30000).read_bytes()
    small = make_app(max_trace_bytes=len(raw) - 1).test_client()
    before = counts()
    body = small.post("/api/v1/traces?name=big", data=raw, content_type="application/octet-stream")
    assert body.status_code == 413 and body.get_json()["message"]
    form = small.post("/api/v1/traces", data={"file": (io.BytesIO(raw), "big.gz")}, content_type="multipart/form-data")
    assert form.status_code == 413
    # no Content-Length (chunked): the limit is checked while streaming
    streamed = small.post("/api/v1/traces?name=big", input_stream=io.BytesIO(raw),
                          headers={"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"},
                          environ_overrides={"wsgi.input_terminated": True})
    assert streamed.status_code == 413
    unreadable = api.client.post("/api/v1/traces?name=junk", data=b"1\n2\nthree\n", content_type="text/plain")
    assert unreadable.status_code == 422 and "line 3" in unreadable.get_json()["message"]
    assert counts() == before and _trace_files(settings) == []

    nameless = api.client.post("/api/v1/traces", data=raw, content_type="application/octet-stream")
    assert nameless.status_code == 422 and "name" in error_fields(nameless, "query")
    no_file = api.client.post("/api/v1/traces", data={"name": "x"}, content_type="multipart/form-data")
    assert no_file.status_code == 422 and "file" in error_fields(no_file, "files")
    extra = api.client.post("/api/v1/traces", data={"file": (io.BytesIO(raw), "t.gz"), "owner": "me"},
                            content_type="multipart/form-data")
    assert extra.status_code == 422 and "owner" in error_fields(extra, "files")
    assert counts() == before and _trace_files(settings) == []


def test_a_trace_in_use_is_not_deleted(api, settings, counts, tmp_path):
    raw = write_trace(tmp_path / "t.gz").read_bytes()
    trace = api.client.post("/api/v1/traces?name=t", data=raw, content_type="application/octet-stream").get_json()
    exp = api.create("/api/v1/experiments", experiment(trace_id=trace["id"]))
    assert exp["trace_ids"] == [trace["id"]]
    assert api.get(f"/api/v1/traces/{trace['id']}").get_json()["ref_count"] == 1
    before = counts()
    refused = api.delete(f"/api/v1/traces/{trace['id']}")
    assert refused.status_code == 409 and "used by 1 experiment" in refused.get_json()["message"]
    assert counts() == before and _trace_files(settings) == [trace["sha256"]]

    assert api.delete(f"/api/v1/experiments/{exp['id']}").status_code == 204
    assert api.get(f"/api/v1/traces/{trace['id']}").get_json()["ref_count"] == 0
    assert api.delete(f"/api/v1/traces/{trace['id']}").status_code == 204
    assert _trace_files(settings) == []
