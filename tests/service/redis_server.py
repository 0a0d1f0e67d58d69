"""A throwaway redis-server for the tests that stop a broker (test_faults_broker, test_broker_loss,
test_machines): the shared Redis on 6379 is never stopped."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from tests.helpers import free_port


class RedisServer:
    """A throwaway redis-server without persistence: stopping it loses every message."""

    def __init__(self, logs: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.logs = logs
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        redis = pytest.importorskip("redis")
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        log = open(self.logs / "redis.log", "ab")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail("the throwaway redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
