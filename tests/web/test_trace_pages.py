"""The trace pages (Flask's test client): the list links each uploaded trace, and a trace's page
charts its LRU miss-ratio curve as inline SVG with a title and units; a trace stored before the
analysis existed says how to get one."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import update

from service import db
from service.app import create_app
from service.auth import create_token
from service.models import Trace
from service.settings import Settings
from tests.api.helpers import write_trace


@pytest.fixture
def site(tmp_path: Path):
    settings = Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path / "var")})
    db.upgrade(settings.database_url)
    with db.session_scope(settings.database_url) as session:
        token = create_token(session, "trace-pages", "admin")
    yield create_app(settings).test_client(), {"Authorization": f"Bearer {token}"}, settings
    db.dispose_engines()


def test_trace_list_and_page_chart_the_curve(site, tmp_path):
    client, headers, settings = site
    assert "No trace uploaded yet" in client.get("/traces").get_data(as_text=True)
    raw = write_trace(tmp_path / "hot.txt.gz", pages=3000, refs=20000).read_bytes()
    trace = client.post("/api/v1/traces?name=hot-loop", data=raw, headers=headers,
                        content_type="application/octet-stream").get_json()

    listing = client.get("/traces").get_data(as_text=True)
    assert f'href="/traces/{trace["id"]}">hot-loop</a>' in listing and "20,000" in listing and "exact" in listing
    assert 'href="/traces">Traces</a>' in listing          # in the navigation

    answer = client.get(f"/traces/{trace['id']}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    svg = re.search(r"<svg .*?</svg>", page, re.S).group(0)
    assert "<title>LRU miss-ratio curve of hot-loop (miss ratio over MB of cache)</title>" in svg
    assert "<polyline" in svg and "MB of cache" in svg and "//" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert "Exact LRU curve" in page and "90% of the reusable hits need" in page
    assert "Reuse (stack) distance" in page and "first reference" in page
    assert "<script" not in page
    assert client.get("/traces/999").status_code == 404

    with db.session_scope(settings.database_url) as session:
        session.execute(update(Trace).values(analysis=None))
    old = client.get(f"/traces/{trace['id']}").get_data(as_text=True)
    assert "upload the same file again" in old and "<svg" not in old
    assert "not analysed" in client.get("/traces").get_data(as_text=True)
