"""Browser tests: Debian's chromium driven by Playwright's Python package (its own browser builds
are never downloaded: ``executable_path`` is the system's), against the real app served over HTTP
on a free port, with a real Celery worker, on the embedded default (SQLite, SQLite broker) in a
temporary data folder.

A failed test leaves a screenshot of its page in ``$VMEMLAB_SCREENSHOT_DIR`` (default
``var/test-screenshots``; .ci/run prints where)."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path(os.environ.get("VMEMLAB_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("VMEMLAB_SCREENSHOT_DIR", ROOT / "var" / "test-screenshots"))

from service import db  # noqa: E402
from service.auth import create_token  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.api.test_end_to_end import Http  # noqa: E402
from tests.service.test_worker import Workers, _environment  # noqa: E402


def small_scenario(name: str = "web-test", **top: Any) -> dict[str, Any]:
    """Two 256 MB VMs on a 512 MB host, 2 s simulated: static refuses the second (its overhead does
    not fit), the others run both."""
    vm = {"memory_mb": 256, "os_mb": 32, "replacement": "lru"}
    doc = {"name": name, "duration_s": 2.0, "epoch_s": 0.5, "seed": 3,
           "host": {"memory_mb": 512, "reserve_mb": 0, "vm_overhead_mb": 16, "swap_device": "ssd"},
           "vms": [{"name": "a", **vm, "workload": {"phases": [{"kind": "uniform", "footprint_mb": 160, "duration_s": 2}]}},
                   {"name": "b", **vm, "workload": {"phases": [{"kind": "zipf", "footprint_mb": 200, "duration_s": 2}]}}]}
    doc.update(top)
    return doc


@dataclass
class Stack:
    http: Http
    workers: Workers
    token: str           # an admin token
    write_token: str

    @property
    def url(self) -> str:
        return self.http.base

    def wait_finished(self, experiment_id: int, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.http.json("GET", f"/api/v1/experiments/{experiment_id}", 200)
            if current["status"] not in ("queued", "running"):
                return current
            if time.monotonic() > deadline:
                pytest.fail(f"experiment {experiment_id} did not finish: {current['runs']}\n{self.workers.output()}")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def stack(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The app over HTTP on a free port and one worker; only for browser tests (hence ``browser``:
    without chromium they skip before anything starts)."""
    from service.app import create_app

    tmp = tmp_path_factory.mktemp("web")
    env = _environment(VMEMLAB_DATA_DIR=str(tmp / "var"), VMEMLAB_HEARTBEAT_S="0.2", VMEMLAB_STALE_HEARTBEATS="150")
    settings = Settings.from_env(env)
    db.upgrade(settings.database_url)
    with db.session_scope(settings.database_url) as session:
        admin = create_token(session, "browser-admin", "admin")
        writer = create_token(session, "browser-writer", "write")
    workers = Workers(env, tmp)
    workers.start("web1")
    http = Http(create_app(settings), token=admin)
    try:
        yield Stack(http, workers, admin, writer)
    finally:
        http.close()
        workers.stop_all()
        db.dispose_engines()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright; the browser tests skip (saying why) where it is missing."""
    if not CHROMIUM.exists():
        # CI must prove the pages in a browser: there, a missing browser fails instead of skipping
        (pytest.fail if os.environ.get("VMEMLAB_REQUIRE_BROWSER") else pytest.skip)(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run installs it), "
                    "or set VMEMLAB_CHROMIUM to another chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: "
                                                                       "pip install -e '.[dev]'")
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield instance
        instance.close()


@pytest.fixture
def offline(browser: Any, stack: Stack) -> Iterator[tuple[Any, list[str]]]:
    """A fresh browser context (own cookies) that may reach only this machine: every other request
    is aborted and recorded, so a page that renders proves it needs nothing from the Internet."""
    context = browser.new_context()
    blocked: list[str] = []

    def route(r: Any) -> None:
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:", "about:")) or host in ("127.0.0.1", "localhost", "::1"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route(re.compile(".*"), route)
    context.set_default_timeout(20_000)
    yield context, blocked
    context.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, offline: tuple[Any, list[str]]) -> Iterator[Any]:
    context, _ = offline
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failed page: {path}")
        except Exception as exc:        # a crashed page must not hide the test's own failure
            print(f"no screenshot ({exc})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the test item, so the page fixture knows the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
