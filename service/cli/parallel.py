"""Running independent simulations in parallel processes, for the commands that run many
(simulate's policies, a sweep's points, capacity searches): results in the order asked for, the
same whatever the number of processes, since each simulation is deterministic on its own."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence


class ProcessFailed(RuntimeError):
    """The process running a task died, or its result could not come back."""


def run_in_processes(func: Callable[..., Any], tasks: Sequence[tuple], jobs: int,
                     on_done: Callable[[int, Any, int], None] | None = None) -> list[Any]:
    """``func(*task)`` for each task: in this process when ``jobs`` <= 1, else in up to ``jobs``
    processes. ``on_done(index, result, finished_so_far)`` is called here as each ends; a task
    whose process died gives a ProcessFailed as its result, the others go on. A Ctrl-C starts
    nothing more and waits for what is running."""
    results: list[Any] = [None] * len(tasks)

    def done(index: int, result: Any, count: int) -> None:
        results[index] = result
        if on_done is not None:
            on_done(index, result, count)

    if jobs <= 1 or len(tasks) <= 1:
        for index, task in enumerate(tasks):
            done(index, func(*task), index + 1)
        return results
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)))
    try:
        futures = {pool.submit(func, *task): index for index, task in enumerate(tasks)}
        for count, future in enumerate(as_completed(futures), 1):
            try:
                result = future.result()
            except Exception as exc:       # BrokenProcessPool, or a result that did not pickle
                result = ProcessFailed(f"{type(exc).__name__}: {exc}")
            done(futures[future], result, count)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
