"""The embedded (SQLite) broker's queue, declared by several processes starting at once: kombu
declares it with a SELECT, then an INSERT, and the loser of that race used to fail (a worker
started beside the API then never consumed: its runs stayed queued)."""
from __future__ import annotations

import multiprocessing
from pathlib import Path


def _start(data_dir: str, barrier) -> None:
    from service.celery_app import create_celery
    from service.settings import Settings

    barrier.wait()                      # every process declares the queue at the same moment
    app = create_celery(Settings.from_env({"VMEMLAB_DATA_DIR": data_dir}))
    with app.connection_for_write() as connection:
        connection.default_channel.queue_declare(queue="vmemlab")


def test_processes_starting_together_all_get_the_queue(tmp_path: Path):
    context = multiprocessing.get_context("spawn")
    for round_ in range(4):
        folder = tmp_path / str(round_)
        barrier = context.Barrier(3)
        processes = [context.Process(target=_start, args=(str(folder), barrier)) for _ in range(3)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0, 0, 0], round_
