"""``vmemlab submit`` against a fake API (a few lines of http.server): what it sends, how it waits
and prints the comparison, how it reports errors; and the HTTP client's helpers (base URLs, error
lines, never sending its token to another host on a redirect).
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from service.client import Client, error_lines, normalize_base_url
from tests.helpers import free_port
from tests.test_cli import run
from tests.test_cli_service import tiny, write_json

class FakeAPI:
    """Just enough of the API for ``submit``: POST experiments, GET runs, the report page."""

    def __init__(self, handler: Callable[[str, str, Any], tuple[int, Any]]):
        self.requests: list[tuple[str, str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((method, self.path, body))
                status, payload = handler(method, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def summary(policy: str, slowdown: float) -> dict:
    return {"policy": policy, "policy_version": "1.0.0", "slowdown": slowdown, "fairness": 1.0,
            "engine_version": "0.1.0", "host": {"peak_used_mb": 400.0},
            "vms": [{"name": "a", "state": "ran", "slowdown": slowdown, "refs_done": 1000}]}


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeAPI]]:
    made: list[FakeAPI] = []

    def make(handler):
        api = FakeAPI(handler)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def happy_handler(fail: str | None = None):
    polls: dict[int, int] = {}
    runs: dict[int, str] = {}

    def handler(method, path, body):
        if method == "POST" and path == "/api/v1/experiments":
            names = [p["name"] for p in body.get("policies", [])] or ["static"]
            for i, name in enumerate(names):
                runs[10 + i] = name
            return 201, {"id": 7, "name": body.get("name"), "runs": [
                {"id": 10 + i, "policy": name, "status": "queued", "progress": 0.0} for i, name in enumerate(names)]}
        match = re.fullmatch(r"/api/v1/runs/(\d+)", path)
        if method == "GET" and match:
            run_id = int(match.group(1))
            polls[run_id] = polls.get(run_id, 0) + 1
            name = runs[run_id]
            if polls[run_id] < 3:
                return 200, {"id": run_id, "policy": name, "status": "running", "progress": 0.3 * polls[run_id]}
            if name == fail:
                return 200, {"id": run_id, "policy": name, "status": "failed", "progress": 0.5,
                             "error": f"policy {name!r} raised ValueError: boom"}
            return 200, {"id": run_id, "policy": name, "status": "succeeded", "progress": 1.0,
                         "summary": summary(name, 1.0 + run_id / 10)}
        return 404, {"code": 404, "message": "not found"}

    return handler


def test_submit_waits_and_prints_the_comparison(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler())
    path = write_json(tmp_path / "s.json", tiny(("static", "esx", "kvm")))
    code, out, err = run(capsys, "submit", path, "--url", api.url, "--policy", "static", "--policy",
                         "overcommit", "--param", "overcommit.compression=true", "--wait", "--poll", "0.01")
    assert code == 0, err
    method, target, body = api.requests[0]
    assert (method, target) == ("POST", "/api/v1/experiments")
    # --policy replaces the scenario's list; --param sets a parameter of one of them
    assert body["policies"] == [{"name": "static", "params": {}},
                                {"name": "overcommit", "params": {"compression": True}}]
    assert body["vms"] == tiny()["vms"]
    assert "experiment 7: 2 runs: static (run 10), overcommit (run 11)" in out
    assert "Scenario 'tiny': 2 VMs on a 512 MB host, 2 s simulated, seed 3 (experiment 7)" in out
    assert re.search(r"^a\s+static\s+ran\s+2\.00x", out, re.M) and re.search(r"^a\s+overcommit\s+ran\s+2\.10x", out, re.M)
    assert out.rstrip().endswith(f"report: {api.url}/experiments/7/report")
    # progress on stderr, a line per run at each step on a pipe
    assert "[static]  30%" in err and "[overcommit] succeeded" in err


def test_submit_without_wait_prints_ids_and_report(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler())
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url + "/api/v1/")
    assert code == 0, err
    assert out == ("experiment 7: 2 runs: static (run 10), overcommit (run 11)\n"
                   f"report: {api.url}/experiments/7/report\n")
    assert [r[0] for r in api.requests] == ["POST"]
    assert api.requests[0][2]["policies"] == tiny()["policies"]    # the scenario's own list, untouched


def test_submit_json_output(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler())
    code, out, _ = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url,
                       "--wait", "--json", "--quiet", "--poll", "0.01")
    assert code == 0
    summaries = json.loads(out[out.index("["):out.rindex("]") + 1])
    assert [s["policy"] for s in summaries] == ["static", "overcommit"]


def test_submit_reports_a_failed_run(fake_api, tmp_path, capsys):
    api = fake_api(happy_handler(fail="overcommit"))
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url,
                         "--wait", "--quiet", "--poll", "0.01")
    assert code == 1
    assert "error: run 11 (overcommit) failed: policy 'overcommit' raised ValueError: boom" in err
    assert re.search(r"^a\s+static\s+ran", out, re.M) and "report: " in out


def test_submit_shows_validation_errors_one_per_line(fake_api, tmp_path, capsys):
    api = fake_api(lambda method, path, body: (422, {
        "code": 422, "status": "Unprocessable Entity",
        "errors": {"json": {"vms": {"0": {"memory_mb": ["Must be at least 1."]}},
                            "policies": {"1": {"name": ["unknown policy 'nosuch'"]}}}}}))
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url, "--wait")
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: vms[0].memory_mb: Must be at least 1.",
                                "error: policies[1].name: unknown policy 'nosuch'"]


def test_submit_server_error_is_exit_1(fake_api, tmp_path, capsys):
    api = fake_api(lambda method, path, body: (500, {"message": "Internal Server Error"}))
    code, _, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", api.url)
    assert code == 1 and err.startswith(f"error: POST {api.url}/api/v1/experiments: 500") and "Traceback" not in err


def test_submit_unreachable_server(tmp_path, capsys):
    port = free_port()                      # nothing listens there
    code, out, err = run(capsys, "submit", write_json(tmp_path / "s.json", tiny()), "--url", f"127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err == (f"error: cannot reach the vmemlab API at http://127.0.0.1:{port}: connection refused "
                   "(is `vmemlab serve` or `vmemlab up` running?)\n")


@pytest.mark.parametrize("content, words", [
    (None, "nowhere.json: no such file"),
    ("{'duration_s': 1}", "invalid JSON at line 1 column 2"),
    ("[1, 2]", "a scenario must be a JSON object"),
])
def test_submit_file_mistakes(tmp_path, capsys, content, words):
    path = tmp_path / "nowhere.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run(capsys, "submit", str(path), "--url", "http://127.0.0.1:9")
    assert code == 2 and err.startswith("error: ") and words in err


def test_submit_bad_param_and_url(tmp_path, capsys):
    path = write_json(tmp_path / "s.json", tiny())
    code, _, err = run(capsys, "submit", path, "--param", "esx.idle_tax_pct=0")
    assert code == 2 and "policy 'esx' is not among the policies run" in err
    code, _, err = run(capsys, "submit", path, "--url", "ftp://example.org")
    assert code == 2 and "error: --url: " in err


def test_client_helpers():
    assert normalize_base_url("127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert normalize_base_url("http://h:1/api/v1/") == "http://h:1"
    assert normalize_base_url("https://h/prefix/") == "https://h/prefix"
    assert Client("h:1").report_url(3) == "http://h:1/experiments/3/report"
    assert error_lines({"errors": {"vms[0].memory_mb": ["too big"]}}) == ["vms[0].memory_mb: too big"]
    assert error_lines({"message": "no experiment 9"}) == ["no experiment 9"]
    assert error_lines({"errors": {"json": {"_schema": ["an experiment must be a JSON object"]}}}) == [
        "an experiment must be a JSON object"]


def test_the_client_never_sends_its_token_to_another_host_on_a_redirect():
    seen: list[tuple[int, Any]] = []

    def server(handler_get):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                handler_get(self)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def answer(request):
        seen.append((request.server.server_port, request.headers.get("Authorization")))
        if request.path.endswith("/runs/1"):        # a second hop, on the other host
            request.send_response(302)
            request.send_header("Location", f"http://127.0.0.1:{request.server.server_port}/api/v1/runs/2")
            request.end_headers()
            return
        body = b'{"id": 2}'
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    other = server(answer)

    def redirect_away(request):
        seen.append((request.server.server_port, request.headers.get("Authorization")))
        request.send_response(302)
        request.send_header("Location", f"http://127.0.0.1:{other.server_port}/api/v1/runs/1")
        request.end_headers()

    first = server(redirect_away)
    try:
        assert Client(f"127.0.0.1:{first.server_port}", token="vml_secret").run(1) == {"id": 2}
    finally:
        first.shutdown()
        other.shutdown()
    assert seen == [(first.server_port, "Bearer vml_secret"), (other.server_port, None), (other.server_port, None)]
