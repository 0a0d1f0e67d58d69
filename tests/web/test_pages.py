"""The pages without a browser (Flask's test client): what the browser tests do not reach, such as
a parameter's error placed next to its input, the CSRF check, closed reads, the history's
filters, the docs' local files and the session's key."""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from service import db
from service.app import create_app
from service.auth import create_token
from service.settings import DEFAULT_DOCS_UI_URL, Settings
from service.web import docs_ui_renders, stored_secret
from service.web.forms import place_errors, read_params

from .conftest import small_scenario


@pytest.fixture
def site(tmp_path: Path):
    def make(**env: str) -> tuple[Any, str]:
        settings = Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path / "var"), **env})
        db.upgrade(settings.database_url)
        with db.session_scope(settings.database_url) as session:
            token = create_token(session, "page-tests", "admin")
        return create_app(settings).test_client(), token
    yield make
    db.dispose_engines()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_a_parameter_error_is_shown_next_to_its_input(site):
    client, token = site()
    csrf = csrf_of(client.get("/create").get_data(as_text=True))
    answer = client.post("/create", data={"csrf": csrf, "token": token, "scenario": json.dumps(small_scenario()),
                                          "policy": ["esx", "static"], "param.esx.idle_tax_pct": "150"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    errors = re.search(r'<ul class="field-errors" id="param.esx.idle_tax_pct-error".*?</ul>', page, re.S)
    assert errors and "policies[0].params.idle_tax_pct" in errors.group(0)
    assert 'aria-describedby="param.esx.idle_tax_pct-error"' in page and 'value="150"' in page


def test_forms_send_what_changed_and_sort_errors_to_fields():
    schema = {"ratio": {"type": "float", "default": 0.5}, "n": {"type": "integer", "default": 3},
              "on": {"type": "boolean", "default": True}, "how": {"type": "string", "default": "a"}}
    assert read_params({"param.p.ratio": "0.5", "param.p.n": "3", "param.p.on": "on", "param.p.how": "a"}, "p",
                       schema) == {}
    assert read_params({"param.p.ratio": "x", "param.p.n": "4", "param.p.how": "b"}, "p", schema) == \
        {"ratio": "x", "n": 4, "on": False, "how": "b"}
    placed = place_errors({"vms[0].memory_mb": ["too small"], "policies[1].params.n": ["too big"],
                           "policies[0].name": ["disabled"]}, ["q", "p"])
    assert placed == {"scenario": [("vms[0].memory_mb", "too small")], "param.p.n": [("policies[1].params.n", "too big")],
                      "policies": [("policies[0].name", "disabled")]}


def test_forms_need_the_session_csrf_token_and_a_valid_token(site):
    client, token = site()
    client.get("/create")
    refused = client.post("/create", data={"csrf": "forged", "token": token, "scenario": "{}"})
    assert refused.status_code == 400 and "Sign in" in refused.get_data(as_text=True)
    csrf = csrf_of(client.get("/sign-in").get_data(as_text=True))
    wrong = client.post("/sign-in", data={"csrf": csrf, "token": "vml_nope"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.get_data(as_text=True)
    assert client.post("/sign-in", data={"csrf": csrf, "token": token, "next": "//evil.example/"}).headers[
        "Location"] == "/"
    assert "Signed in: page-tests (admin)" in client.get("/").get_data(as_text=True)
    cookie = client.get_cookie("session")
    assert cookie.expires is None and cookie.http_only and cookie.same_site == "Lax"     # the browser session only
    # signed is not secret: what the cookie holds, read without the server's key, is no usable token
    payload = cookie.value.lstrip(".").split(".")[0]
    readable = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    held = json.loads(zlib.decompress(readable) if cookie.value.startswith(".") else readable)
    assert token not in cookie.value and token not in json.dumps(held) and held["token"]


def test_a_sign_in_lasts_its_time_and_no_longer(site, monkeypatch):
    client, token = site(VMEMLAB_OPEN_READS="0")
    csrf = csrf_of(client.get("/sign-in").get_data(as_text=True))
    assert client.post("/sign-in", data={"csrf": csrf, "token": token}).status_code == 302
    assert client.get("/plugins").status_code == 200
    monkeypatch.setattr("service.web.auth.TOKEN_TTL_S", -1)          # as if the time had passed
    expired = client.get("/plugins")
    assert expired.status_code == 401 and "Reading needs a token" in expired.get_data(as_text=True)


def test_closed_reads_ask_for_a_token_first(site):
    client, token = site(VMEMLAB_OPEN_READS="0")
    assert client.get("/api/v1/runs").status_code == 401
    first = client.get("/")
    assert first.status_code == 401 and "Reading needs a token" in first.get_data(as_text=True)
    assert client.get("/web/static/style.css").status_code == 200
    csrf = csrf_of(first.get_data(as_text=True))
    assert client.post("/sign-in", data={"csrf": csrf, "token": token, "next": "/plugins"}).status_code == 302
    assert client.get("/plugins").status_code == 200


def test_history_lists_filters_and_pages(site):
    client, token = site()
    headers = {"Authorization": f"Bearer {token}"}
    for name in ("alpha", "beta", "alphabet"):
        assert client.post("/api/v1/experiments", json=small_scenario(name, policies=[{"name": "static"}]),
                           headers=headers).status_code == 201
    sweep = client.post("/api/v1/sweeps", headers=headers, json={
        "name": "by-host", "scenario": small_scenario(), "axes": [{"path": "host.memory_mb", "values": [512, 768]}]})
    search = client.post("/api/v1/capacity-searches", headers=headers, json={
        "vm": "b", "scenario": small_scenario(), "sla": {"max_slowdown": 1.5}, "max_count": 4})
    assert sweep.status_code == 202 and search.status_code == 202, (sweep.get_json(), search.get_json())
    page = client.get("/").get_data(as_text=True)
    assert re.findall(r'<th scope="row"><a href="(/[\w/-]+)">', page) == [
        "/capacity-searches/1/report", "/sweeps/1/report"] + [f"/experiments/{i}/report" for i in (3, 2, 1)]
    assert "Sweep of host.memory_mb over 2 points" in page and "copies of b that fit" in page
    assert [m for m in re.findall(r'<a href="/experiments/\d+/report">(\w+)</a>', page)] == ["alphabet", "beta", "alpha"]
    assert "by-host" in client.get("/?status=queued").get_data(as_text=True)
    assert "On this 512 MB host with 2 VMs: static queued." in page
    alpha = client.get("/?name=ALPHA&status=queued&policy=static").get_data(as_text=True)
    assert re.findall(r'<a href="/experiments/\d+/report">(\w+)</a>', alpha) == ["alphabet", "alpha"]
    assert ">alpha<" not in client.get("/?status=succeeded").get_data(as_text=True)
    assert "0 found" in client.get("/?until=2000-01-01").get_data(as_text=True)
    assert client.get("/compare?runs=1&runs=2").headers["Location"] == "/compare?runs=1,2"
    missing = client.get("/compare?runs=1,99,x").get_data(as_text=True)
    assert "no run with id 99" in missing and "&#39;x&#39; is not a run id" in missing


def test_history_pages_keep_their_filters_and_dates_bound_both_ways(site, monkeypatch):
    monkeypatch.setattr("service.web.history.PAGE_SIZE", 2)
    client, token = site()
    headers = {"Authorization": f"Bearer {token}"}
    for name in ("p1", "p2", "p3", "p4", "p5", "other"):
        assert client.post("/api/v1/experiments", json=small_scenario(name, policies=[{"name": "static"}]),
                           headers=headers).status_code == 201

    def names(url: str) -> list[str]:
        return re.findall(r'<a href="/experiments/\d+/report">(\w+)</a>', client.get(url).get_data(as_text=True))

    first = client.get("/?name=p").get_data(as_text=True)
    assert "5 found; page 1 of 3" in first and 'rel="prev"' not in first
    older = re.search(r'<a href="([^"]+)" rel="next">', first).group(1).replace("&amp;", "&")
    assert "name=p" in older and "page=2" in older
    assert names("/?name=p") == ["p5", "p4"] and names(older) == ["p3", "p2"] and names("/?name=p&page=3") == ["p1"]
    last = client.get("/?name=p&page=3").get_data(as_text=True)
    assert 'rel="next"' not in last and 'rel="prev"' in last
    assert names("/?name=p&page=99") == []                     # past the end: an empty page, not an error
    today = dt.date.today()
    assert len(names(f"/?since={today - dt.timedelta(days=1)}")) == 2 and names(f"/?since={today + dt.timedelta(days=2)}") == []
    assert names(f"/?name=p&since={today - dt.timedelta(days=1)}&until={today + dt.timedelta(days=1)}") == ["p5", "p4"]
    assert "0 found" in client.get(f"/?since={today + dt.timedelta(days=2)}&until={today}").get_data(as_text=True)
    assert "6 found" in client.get("/?since=not-a-date").get_data(as_text=True)     # ignored, not a 500


def test_docs_ui_is_served_from_installed_files(site):
    client, _ = site()
    page = client.get("/api/v1/docs").get_data(as_text=True)
    assert f'src="{DEFAULT_DOCS_UI_URL}swagger-ui-bundle.js"' in page and "//cdn" not in page
    bundle = client.get(f"{DEFAULT_DOCS_UI_URL}swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 100_000
    assert docs_ui_renders(Settings.from_env({})) and not docs_ui_renders(Settings.from_env({"VMEMLAB_DOCS_UI_URL": "off"}))


def test_the_session_key_is_made_once_and_kept(tmp_path: Path):
    key = stored_secret(tmp_path)
    assert len(key) > 40 and stored_secret(tmp_path) == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_bar_chart_labels_start_inside_the_chart() -> None:
    """A long label (a run and its policy on the compare page) is not cut at the chart's left edge."""
    from service.charts import bar_chart, text_width
    label = "run 12345 dynamic-memory (third-party-policy 1.0)"
    svg = bar_chart("Worst slowdown", [(label, 1.5), ("run 2 static", 1.0)], unit="x")
    right_edge = float(re.search(r'<text x="([0-9.]+)"[^>]*text-anchor="end">' + re.escape(label), svg).group(1))
    assert right_edge - text_width(label, 11) >= 0
    width = float(re.search(r'<svg [^>]*width="([0-9.]+)"', svg).group(1))
    bars = [float(w) + float(x) for x, w in re.findall(r'<rect x="([0-9.]+)" [^>]*width="([0-9.]+)"', svg)]
    assert bars and max(bars) <= width


def test_a_form_from_another_site_is_refused(site):
    """A cross-site form arrives without the session cookie (SameSite=Lax): no session, no form."""
    client, token = site()
    stranger = create_app(client.application.extensions["vmemlab"].settings).test_client()
    for csrf in ("-", "", "anything"):
        answer = stranger.post("/sign-in", data={"csrf": csrf, "token": token})
        assert answer.status_code == 400, csrf
        assert "Signed in" not in stranger.get("/").get_data(as_text=True)


def test_odd_numbers_and_dates_are_not_errors(site):
    client, _ = site()
    for url in ("/?page=%C2%B2", "/?page=-1", "/?page=99999999999999999999", "/?until=9999-12-31",
                "/?since=9999-12-31", "/compare?runs=%C2%B2", "/compare?runs=1&baseline_run=%C2%B2"):
        assert client.get(url).status_code == 200, url


def test_compare_says_which_run_ids_it_could_not_read(site):
    client, _ = site()
    answer = client.get("/compare?runs=1&runs=abc")
    assert answer.status_code == 200 and "&#39;abc&#39; is not a run id" in answer.get_data(as_text=True)


def test_closed_reads_the_reports_follow_the_session(site):
    client, token = site(VMEMLAB_OPEN_READS="0")
    headers = {"Authorization": f"Bearer {token}"}
    experiment = client.post("/api/v1/experiments", json=small_scenario(policies=[{"name": "static"}]),
                             headers=headers).get_json()
    report = f"/experiments/{experiment['id']}/report"
    asked = client.get(report + "?x=1")
    assert asked.status_code == 401 and f'value="{report}?x=1"' in asked.get_data(as_text=True)
    csrf = csrf_of(asked.get_data(as_text=True))
    assert client.post("/sign-in", data={"csrf": csrf, "token": token, "next": report}).status_code == 302
    assert client.get(report).status_code == 200


def test_a_page_that_is_not_there_answers_in_html(site):
    client, _ = site()
    answer = client.get("/experiments/999/progress")
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "There is no experiment 999." in answer.get_data(as_text=True)
