"""A person's tasks in a real browser (Debian's chromium, no network beyond this machine): create
an experiment through the form and watch it finish, see a validation error next to its field,
compare two runs picked in the history, read the report of a refused VM, register a plugin, and
read the API docs."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.api.helpers import write_trace

from .conftest import Stack, small_scenario

try:
    from playwright.sync_api import expect
except ImportError:         # the browser fixture skips these tests, saying why
    expect = None


@pytest.fixture(scope="module")
def finished(stack: Stack) -> dict[str, Any]:
    """An experiment posted over the API (static and esx) and run to its end by the worker."""
    created = stack.http.json("POST", "/api/v1/experiments", 201,
                              small_scenario("refusal", policies=[{"name": "static"}, {"name": "esx"}]))
    done = stack.wait_finished(created["id"])
    assert done["status"] == "succeeded", (done, stack.workers.output())
    return done


def sign_in(page: Any, stack: Stack, token: str) -> None:
    page.goto(f"{stack.url}/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who")).to_contain_text("Signed in")


def test_create_through_the_form_and_watch_it_finish(stack: Stack, page: Any, offline):
    page.goto(f"{stack.url}/create")
    expect(page.get_by_role("heading", name="Create an experiment", level=1)).to_be_visible()
    page.get_by_label("Scenario JSON").fill(json.dumps(small_scenario("from-the-form"), indent=2))
    page.locator("input[name=policy][value=static]").check()
    page.locator("input[name=policy][value=esx]").check()
    page.get_by_text("Parameters of esx").click()
    page.locator("[id='param.esx.idle_tax_pct']").fill("50")
    page.get_by_label("A write token").fill(stack.write_token)        # asked once, as the form is sent
    page.get_by_role("button", name="Create and run").click()

    expect(page).to_have_url(re.compile(r"/experiments/\d+/progress$"))
    expect(page.locator(".flash")).to_contain_text("2 run(s) queued")
    experiment_id = int(re.search(r"/experiments/(\d+)/", page.url).group(1))
    # the page reloads itself every 2 s until every run has ended
    expect(page.locator("#answer")).to_contain_text("On this 512 MB host with 2 VMs", timeout=180_000)
    expect(page.locator("td.status.succeeded")).to_have_count(2)
    stored = stack.http.json("GET", f"/api/v1/experiments/{experiment_id}", 200)
    esx = next(r for r in stored["runs"] if r["policy_name"] == "esx")
    esx = stack.http.json("GET", f"/api/v1/runs/{esx['id']}", 200)
    assert esx["params"]["idle_tax_pct"] == 50.0 and esx["status"] == "succeeded"

    # the token was kept for the session: the next page knows who is signed in
    page.goto(f"{stack.url}/")
    expect(page.locator(".who")).to_contain_text("browser-writer (write)")
    row = page.locator("tr", has_text="from-the-form")
    expect(row.locator(".status")).to_have_text("succeeded")
    row.get_by_role("link", name="from-the-form").click()
    expect(page).to_have_url(re.compile(rf"/experiments/{experiment_id}/report$"))
    assert not offline[1], offline[1]


def test_validation_error_next_to_its_field(stack: Stack, page: Any):
    sign_in(page, stack, stack.write_token)
    bad = small_scenario("bad")
    bad["vms"][1]["memory_mb"] = -5
    page.goto(f"{stack.url}/create")
    page.get_by_label("Scenario JSON").fill(json.dumps(bad))
    page.get_by_role("button", name="Create and run").click()

    errors = page.locator("#scenario-errors")
    expect(errors).to_contain_text("vms[1].memory_mb")
    expect(page.locator("#error-summary")).to_contain_text("1 problem")
    # next to the field: the textarea names the list as its description and follows it in the form
    textarea = page.get_by_label("Scenario JSON")
    expect(textarea).to_have_attribute("aria-invalid", "true")
    expect(textarea).to_have_attribute("aria-describedby", "scenario-errors")
    assert page.locator(".field.invalid #scenario + #scenario-errors").count() == 1
    assert json.loads(textarea.input_value())["vms"][1]["memory_mb"] == -5      # what was typed is kept
    assert stack.http.json("GET", "/api/v1/experiments?name=bad", 200) == []


def test_compare_two_runs_from_the_history(stack: Stack, page: Any, finished: dict[str, Any]):
    static, esx = (r["id"] for r in finished["runs"])
    page.goto(f"{stack.url}/?name=refusal")
    row = page.locator("tr", has_text="refusal")
    expect(row.locator(".answer-cell")).to_contain_text("static runs 1 of 2")
    row.locator(f"input[name=runs][value='{static}']").check()
    row.locator(f"input[name=runs][value='{esx}']").check()
    page.get_by_role("button", name="Compare the runs ticked").click()

    expect(page).to_have_url(re.compile(rf"/compare\?runs={static}%2C{esx}$|/compare\?runs={static},{esx}$"))
    table = page.locator("table.comparison tbody tr")
    expect(table).to_have_count(2)
    expect(table.nth(0)).to_have_class(re.compile("base"))          # static is the baseline
    expect(page.locator(".charts svg")).to_have_count(4)
    expect(page.locator(".charts svg title").first).to_contain_text("Slowdown")
    shared = page.locator("#share-url").get_attribute("href")
    page.goto(shared)                                               # the address alone is the comparison
    expect(page.locator("table.comparison tbody tr")).to_have_count(2)


def test_report_of_a_refused_vm(stack: Stack, page: Any, finished: dict[str, Any]):
    static = finished["runs"][0]
    page.goto(f"{stack.url}/experiments/{finished['id']}/report")
    expect(page.locator("p.answer")).to_contain_text("static runs 1 of 2")
    section = page.locator(f"h2#run-{static['id']} ~ p.refused").first
    expect(section).to_contain_text("VM b was refused")
    expect(section).to_contain_text("needs")                       # the engine's reason, as the CLI prints it
    charts = page.locator(f"h2#run-{static['id']} ~ div.charts").first
    titles = charts.locator("svg title").evaluate_all("els => els.map(e => e.textContent)")
    assert titles == ["Host memory (MB over s)", "VM a memory (MB over s)"], titles    # no empty chart for b
    host_chart = page.locator("svg", has=page.locator("title", has_text="Host memory")).first
    expect(host_chart).to_contain_text("host memory 512 MB")         # the line at host memory


def test_register_a_plugin_as_admin(stack: Stack, page: Any):
    page.goto(f"{stack.url}/plugins")
    row = page.locator("#plugin-fair-balloon")
    expect(row.locator(".status")).to_have_text("available")
    expect(row.get_by_role("button")).to_have_count(0)              # not signed in: no actions
    sign_in(page, stack, stack.token)
    page.goto(f"{stack.url}/plugins")
    row.get_by_role("button", name="Register").click()
    expect(page.locator(".flash")).to_contain_text("fair-balloon: enabled")
    expect(page.locator("#plugin-fair-balloon .status")).to_have_text("enabled")
    page.locator("#plugin-fair-balloon").get_by_role("button", name="Disable").click()
    expect(page.locator("#plugin-fair-balloon .status")).to_have_text("disabled")


def test_a_trace_page_charts_its_curve(stack: Stack, page: Any, tmp_path):
    raw = write_trace(tmp_path / "loop.txt.gz", pages=2000, refs=12000).read_bytes()
    trace = stack.http.json("POST", "/api/v1/traces?name=browser-loop", 201, data=raw,
                            headers={"Content-Type": "application/octet-stream"})
    page.goto(f"{stack.url}/traces")
    page.get_by_role("link", name="browser-loop").click()
    expect(page).to_have_url(re.compile(rf"/traces/{trace['id']}$"))
    curve = page.locator("svg", has=page.locator("title", has_text="LRU miss-ratio curve of browser-loop")).first
    expect(curve).to_be_visible()
    assert curve.bounding_box()["width"] > 200                        # drawn, not an empty box
    expect(curve.locator("polyline").first).to_be_attached()
    expect(page.locator("p.answer")).to_contain_text("Exact LRU curve")
    expect(page.locator("table.comparison tbody tr").first).to_be_visible()


def test_docs_render_without_network(stack: Stack, page: Any, offline):
    page.goto(f"{stack.url}/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("vmemlab", timeout=30_000)
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/experiments").first).to_be_visible()
    scripts = page.locator("script[src]").evaluate_all("els => els.map(e => e.src)")
    assert scripts and all(s.startswith(stack.url) for s in scripts), scripts
