"""docker-compose.yml's monitoring pieces, read against what the code does (Docker does not run in
the tests): the optional Flower service and the metrics folder the API and the workers share."""
from __future__ import annotations

from pathlib import Path

import pytest

from service.serving import METRICS_DIR_ENV, celery_worker_argv

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_flower_is_optional_and_watches_the_workers_broker(compose):
    services = compose["services"]
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]
    # a default `docker compose up` must not need it
    for name, service in services.items():
        if name != "flower":
            assert "flower" not in (service.get("depends_on") or {}), name
            assert not service.get("profiles"), name
    command = flower["command"]
    assert command[0] == "celery" and "flower" in command
    broker = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--broker="))
    assert broker == services["worker"]["environment"]["REDIS_URL"]
    assert "--port=5555" in command and flower["ports"] == ["127.0.0.1:5555:5555"]
    assert set(flower["depends_on"]) <= set(services)


def test_api_and_workers_share_the_metrics_folder(compose):
    services = compose["services"]
    api, worker = services["api"], services["worker"]
    folder = api["environment"][METRICS_DIR_ENV]
    assert worker["environment"][METRICS_DIR_ENV] == folder
    mounts = {volume.split(":")[1] for volume in api["volumes"]} & {volume.split(":")[1] for volume in worker["volumes"]}
    assert any(folder.startswith(mount.rstrip("/") + "/") for mount in mounts), (folder, mounts)


def test_the_worker_loads_the_metrics_module():
    assert "--include=service.prometheus" in celery_worker_argv(None, "info")
