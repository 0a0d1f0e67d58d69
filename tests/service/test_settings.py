"""Settings come from the environment in one place; the Celery app is built from them."""
from __future__ import annotations

import pytest

from service.celery_app import RUN_TASK, create_celery
from service.settings import Settings, SettingsError


def test_nothing_configured_means_everything_embedded_under_the_data_folder(tmp_path):
    s = Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path
    assert s.database_url == f"sqlite:///{tmp_path}/vmemlab.db"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert s.result_backend == f"db+sqlite:///{tmp_path}/results.db"
    assert s.trace_dir == tmp_path / "traces"
    assert s.embedded_broker and s.queue == "vmemlab"
    assert s.stale_after_s == s.heartbeat_s * s.stale_heartbeats


def test_the_full_stack_from_two_urls(tmp_path):
    s = Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u:p@db/vmemlab",
                           "REDIS_URL": "redis://redis:6379/0", "VMEMLAB_TRACE_DIR": str(tmp_path / "t"),
                           "VMEMLAB_HEARTBEAT_S": "2", "VMEMLAB_STALE_HEARTBEATS": "10",
                           "VMEMLAB_MAX_TRACE_BYTES": "1_000_000"})
    assert s.database_url == "postgresql://u:p@db/vmemlab"
    assert s.broker_url == s.result_backend == "redis://redis:6379/0" and not s.embedded_broker
    assert s.trace_dir == tmp_path / "t"
    assert (s.heartbeat_s, s.stale_after_s, s.max_trace_bytes) == (2.0, 20.0, 1_000_000)


def test_access_and_page_defaults_and_overrides():
    default = Settings.from_env({})
    assert default.open_reads and default.max_page_size == 100 and default.plugin_time_limit_s == 10.0
    assert default.max_attempts == 3
    closed = Settings.from_env({"VMEMLAB_OPEN_READS": "0", "VMEMLAB_MAX_PAGE_SIZE": "500",
                                "VMEMLAB_PLUGIN_TIME_LIMIT_S": "0", "VMEMLAB_REQUEUE_AFTER_S": "30"})
    assert not closed.open_reads and closed.max_page_size == 500
    assert (closed.plugin_time_limit_s, closed.requeue_after_s) == (0.0, 30.0)


@pytest.mark.parametrize("name, value", [("VMEMLAB_HEARTBEAT_S", "fast"), ("VMEMLAB_HEARTBEAT_S", "0"),
                                         ("VMEMLAB_STALE_HEARTBEATS", "1.5"), ("VMEMLAB_SQL_ECHO", "maybe"),
                                         ("VMEMLAB_MAX_PAGE_SIZE", "10001"), ("VMEMLAB_MAX_PAGE_SIZE", "0"),
                                         ("VMEMLAB_OPEN_READS", "perhaps"), ("VMEMLAB_PLUGIN_TIME_LIMIT_S", "-1"),
                                         ("VMEMLAB_PLUGIN_TIME_LIMIT_S", "30"), ("VMEMLAB_MAX_ATTEMPTS", "0")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_the_celery_app(tmp_path):
    embedded = create_celery(Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path / "var")}))
    assert (tmp_path / "var").is_dir()
    conf = embedded.conf
    assert conf.broker_url.startswith("sqla+sqlite:///") and conf.result_backend.startswith("db+sqlite:///")
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    full = create_celery(Settings.from_env({"VMEMLAB_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://r:6379/1",
                                            "VMEMLAB_QUEUE": "sims"}))
    assert full.conf.broker_url == "redis://r:6379/1" and full.conf.task_default_queue == "sims"

    from service.tasks import run_simulation
    assert run_simulation.name == RUN_TASK and run_simulation.acks_late and run_simulation.reject_on_worker_lost
