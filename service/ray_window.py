"""The Ray window that generation and the audit share: a sharded job's tasks submitted a few at
a time, never a list of all of them, so the driver's memory does not grow with the job.

    task = remote_task(ray, shard_task, max_retries, gpus=0)
    peaks = run_window(ray, lambda shard: task.remote(..., shard), todo, max_in_flight, on_result)

A task returns a tuple whose last two fields are its worker's pid and peak resident memory
(`peak_rss_bytes`); `run_window` collects the peak per worker and hands the rest to
`on_result(item, result)`. A UserError raised inside a task (bad input found by a worker) is
raised again as itself, one line as in process; anything else propagates as Ray raises it.
"""

from __future__ import annotations

import resource
import sys
from typing import Callable, Iterator

from service.errors import UserError

DEFAULT_TASK_RETRIES = 3  # a task whose worker or node is lost runs again, up to this many times


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. Linux: VmHWM, because ru_maxrss carries over the
    parent's peak across fork + exec (a driver started from a big process would look big)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def remote_task(ray, function: Callable, max_retries: int = DEFAULT_TASK_RETRIES, gpus: float = 0):
    """`function` as a Ray task of one CPU (and `gpus` GPUs) with one framework thread, retried
    on failure, its exceptions included."""
    from service.ray_cluster import thread_env

    return ray.remote(function).options(
        num_cpus=1, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True,
        runtime_env={"env_vars": thread_env(1)},
    )


def run_window(ray, submit: Callable, items: Iterator, max_in_flight: int,
               on_result: Callable[[object, tuple], None]) -> dict[int, int]:
    """Submit `submit(item)` for the items in turn, at most `max_in_flight` at a time, and
    `on_result(item, result)` as each finishes (result: the task's tuple without its pid and peak
    memory). Returns {worker pid: peak resident bytes}."""
    pending: dict = {}
    peaks: dict[int, int] = {}
    items = iter(items)
    while True:
        while len(pending) < max_in_flight:
            item = next(items, None)
            if item is None:
                break
            pending[submit(item)] = item
        if not pending:
            return peaks
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            item = pending.pop(ref)
            try:
                *result, pid, peak = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, UserError):
                    raise e.cause from None
                raise
            peaks[pid] = max(peaks.get(pid, 0), peak)
            on_result(item, tuple(result))
