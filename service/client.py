"""A small HTTP client of the vmemlab API, on the standard library's urllib only: what
``vmemlab submit`` and ``vmemlab up --submit`` use, bench/api.py's model of a client, and a
notebook's (``runs``, ``series``, ``comparison``, ``sweep_table`` give pandas DataFrames with
``frame=True``; docs/notebook.md).

Every failure is an ``APIError`` whose ``lines`` are ready to print as ``error:`` lines: the
server's validation errors one per field (``vms[0].memory_mb: ...``), or why the server could
not be reached.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterable, Optional

API_PREFIX = "/api/v1"
FINISHED = ("succeeded", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:8000"


class APIError(Exception):
    """A request that failed: ``status`` is the HTTP status (None if there was no answer)."""

    def __init__(self, lines: Iterable[str], status: Optional[int] = None, body: Any = None):
        self.lines = list(lines) or ["request failed"]
        self.status = status
        self.body = body
        super().__init__("\n".join(self.lines))

    @property
    def client_error(self) -> bool:
        """The request itself was wrong (4xx): the user's mistake, not the server's."""
        return self.status is not None and 400 <= self.status < 500


class APIUnreachable(APIError):
    """No HTTP answer at all: connection refused, timeout, name not found."""


def normalize_base_url(url: str) -> str:
    """``127.0.0.1:8000`` or ``http://host:8000/`` -> ``http://host:8000`` (no API prefix)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    path = parsed.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def error_lines(body: Any) -> list[str]:
    """The messages of an error body, one line per problem, whatever its shape: flask-smorest's
    ``{"errors": {"json": {"vms": {"0": {"memory_mb": [...]}}}}}``, a flat ``{"errors":
    {"vms[0].memory_mb": [...]}}``, or a plain ``{"message": "..."}``."""
    if not isinstance(body, dict):
        return [str(body).strip()] if body not in (None, "") else []
    errors = body.get("errors")
    lines: list[str] = []
    if errors:
        if isinstance(errors, dict) and set(errors) <= {"json", "query", "headers", "files", "form", "path"}:
            if len(errors) == 1:                 # where the problem was found: not part of its path
                errors = next(iter(errors.values()))
        lines = [f"{path}: {message}" if path else message for path, message in _flatten(errors, "")]
    if not lines and body.get("message"):
        lines = [str(body["message"])]
    return lines


def _flatten(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out = []
        for key, sub in value.items():
            key = str(key)
            if key == "_schema":
                sub_path = path
            elif key.isdigit():
                sub_path = f"{path}[{key}]"
            else:
                sub_path = f"{path}.{key}" if path else key
            out += _flatten(sub, sub_path)
        return out
    if isinstance(value, list):
        return [item for sub in value for item in _flatten(sub, path)]
    return [(path, str(value))]


class _KeepTokenAtHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never sends the bearer token to another host or port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_KeepTokenAtHome())


class Client:
    """The API at ``base_url`` (``http://host:port``; the ``/api/v1`` prefix is added here)."""

    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 30.0, token: Optional[str] = None):
        self.base_url = normalize_base_url(base_url)
        self.timeout = timeout
        self.token = token or None

    # --- plumbing ---------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    def api_url(self, path: str) -> str:
        return self.base_url + API_PREFIX + path

    def request(self, method: str, path: str, body: Any = None, *, api: bool = True,
                headers: Optional[dict[str, str]] = None, timeout: Optional[float] = None) -> Any:
        """Send a request; return the decoded JSON answer (None if empty). Raises APIError."""
        return self._exchange(method, path, body, api=api, headers=headers, timeout=timeout)[0]

    def _exchange(self, method: str, path: str, body: Any = None, *, api: bool = True,
                  headers: Optional[dict[str, str]] = None, timeout: Optional[float] = None) -> tuple[Any, Any]:
        """``request``, with the answer's headers."""
        url = self.api_url(path) if api else self.url(path)
        data = None
        all_headers = {"Accept": "application/json"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with _OPENER.open(request, timeout=timeout or self.timeout) as response:
                raw, answer_headers = response.read(), response.headers
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            decoded = _decode(raw)
            lines = error_lines(decoded) if exc.code < 500 else []
            if exc.code == 401:
                lines.append("give a token with --token or VMEMLAB_TOKEN (an admin makes one with "
                             "`vmemlab tokens create --name NAME`)" if not self.token else
                             "the token given (--token or VMEMLAB_TOKEN) is not accepted by this server")
            raise APIError(lines or [f"{method} {url}: {exc.code} {exc.reason}"], status=exc.code,
                           body=decoded) from None
        except urllib.error.URLError as exc:
            raise APIUnreachable([f"cannot reach the vmemlab API at {self.base_url}: {_reason(exc.reason)}"]) from None
        except (socket.timeout, TimeoutError):
            raise APIUnreachable([f"{method} {url}: no answer within {timeout or self.timeout:g} s"]) from None
        except (ConnectionError, OSError) as exc:
            raise APIUnreachable([f"cannot reach the vmemlab API at {self.base_url}: {_reason(exc)}"]) from None
        return (_decode(raw) if raw else None), answer_headers

    def text(self, path: str, *, api: bool = False) -> tuple[int, str, str]:
        """GET a page: ``(status, content type, text)``; raises APIError on an error status."""
        url = self.api_url(path) if api else self.url(path)
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=self.timeout) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read().decode()
        except urllib.error.HTTPError as exc:
            raise APIError([f"GET {url}: {exc.code} {exc.reason}"], status=exc.code) from None
        except urllib.error.URLError as exc:
            raise APIUnreachable([f"cannot reach the vmemlab API at {self.base_url}: {_reason(exc.reason)}"]) from None

    # --- resources --------------------------------------------------------------------------

    def health(self, timeout: Optional[float] = None) -> Any:
        return self.request("GET", "/health", timeout=timeout)

    def create_experiment(self, document: dict, idempotency_key: Optional[str] = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/experiments", document, headers=headers)

    def experiment(self, experiment_id: int) -> dict:
        return self.request("GET", f"/experiments/{int(experiment_id)}")

    def run(self, run_id: int) -> dict:
        return self.request("GET", f"/runs/{int(run_id)}")

    def comparison(self, experiment_id: int, *, frame: bool = False, baseline: Optional[str] = None) -> Any:
        """An experiment's runs compared (against ``baseline``, a policy name, if given); with
        ``frame=True`` a DataFrame, a row per run (service.client_frames)."""
        query = "?" + urllib.parse.urlencode({"baseline": baseline}) if baseline else ""
        answer = self.request("GET", f"/experiments/{int(experiment_id)}/comparison{query}")
        return _frames().comparison_frame(answer) if frame else answer

    def compare_runs(self, run_ids: Iterable[int], *, baseline_run: Optional[int] = None, frame: bool = False) -> Any:
        """Any runs compared, across experiments (``GET /comparisons``)."""
        params = [("runs", int(i)) for i in run_ids] + ([("baseline_run", int(baseline_run))] if baseline_run else [])
        answer = self.request("GET", "/comparisons?" + urllib.parse.urlencode(params))
        return _frames().comparison_frame(answer) if frame else answer

    # --- for notebooks: every page, and DataFrames on request (pandas: the extra `notebook`) ----

    def runs(self, *, frame: bool = False, page_size: int = 100, **filters: Any) -> Any:
        """Every run the filters match (``policy``, ``status``, ``experiment_id``, ``sort``... as
        ``GET /runs`` takes them), all pages; with ``frame=True`` a DataFrame, a row per run."""
        found: list = []
        page = 1
        while True:
            query = urllib.parse.urlencode({**filters, "page": page, "page_size": page_size}, doseq=True)
            items, headers = self._exchange("GET", f"/runs?{query}")
            found += items or []
            paging = _decode((headers.get("X-Pagination") or "").encode()) if headers else None
            next_page = paging.get("next_page") if isinstance(paging, dict) else None
            if not items or not next_page:
                break
            page = int(next_page)
        return _frames().runs_frame(found) if frame else found

    def series(self, run_id: int, *, frame: bool = False) -> Any:
        """A succeeded run's per-epoch series; with ``frame=True`` a DataFrame indexed by simulated
        time, columns (scope, field): ``host``, ``policy`` or a VM's name."""
        answer = self.request("GET", f"/runs/{int(run_id)}/series")
        return _frames().series_frame(answer) if frame else answer

    def sweep_table(self, sweep_id: int, *, frame: bool = False) -> Any:
        """A sweep's result rows (a point and policy each); with ``frame=True`` a DataFrame with a
        column per axis."""
        rows = self.sweep_results(self.sweep(sweep_id))
        return _frames().sweep_frame(rows) if frame else rows

    def report_url(self, experiment_id: int) -> str:
        return self.url(f"/experiments/{int(experiment_id)}/report")

    def create_sweep(self, body: dict, idempotency_key: Optional[str] = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/sweeps", body, headers=headers)

    def sweep(self, sweep_id: int) -> dict:
        return self.request("GET", f"/sweeps/{int(sweep_id)}")

    def sweep_results(self, sweep: dict) -> list:
        """A sweep's result rows, at the link its answer gives (else where the API keeps them);
        the rows whether the answer is their list or ``{"results": [...]}``."""
        link = (sweep.get("links") or {}).get("results")
        answer = self.follow(link) if link else self.request("GET", f"/sweeps/{int(sweep['id'])}/results")
        rows = answer.get("results") if isinstance(answer, dict) else answer
        return rows if isinstance(rows, list) else []

    def link_url(self, link: str) -> str:
        """The URL of a link an answer gave in its ``links``: a path from the server's root, or
        already absolute."""
        return link if "://" in link else self.url(link)

    def follow(self, link: str) -> Any:
        """GET a link an answer gave; only on this server, where the token may go."""
        if "://" in link:
            if not link.startswith(self.base_url + "/"):
                raise APIError([f"the API answered with a link to another server: {link}"])
            link = link[len(self.base_url):]
        return self.request("GET", link, api=False)

    def wait_until_up(self, timeout: float = 60.0, alive: Optional[Callable[[], bool]] = None,
                      interval: float = 0.2) -> None:
        """Poll the health endpoint until it answers 200. ``alive`` (if given) is asked between
        tries: when it returns False the wait is abandoned (the server process died)."""
        deadline = time.monotonic() + timeout
        last: Optional[APIError] = None
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise APIUnreachable(["the API process exited before it answered"] + (last.lines if last else []))
            try:
                self.health(timeout=2.0)
                return
            except APIError as exc:
                last = exc
            time.sleep(interval)
        raise APIUnreachable([f"the API at {self.base_url} did not answer within {timeout:g} s"]
                             + (last.lines if last else []))


def run_ids(experiment: dict) -> list[int]:
    """The run ids of an experiment as the API returns it (``runs``: objects with ``id``, or ids)."""
    ids = []
    for run in experiment.get("runs") or []:
        ids.append(int(run["id"] if isinstance(run, dict) else run))
    return ids


def _frames() -> Any:
    from . import client_frames

    client_frames.pandas()          # says what to install if pandas is missing
    return client_frames


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode(errors="replace")


def _reason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is `vmemlab serve` or `vmemlab up` running?)"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)
