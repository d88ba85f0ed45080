"""Where the per-file work runs: worker processes on this machine, or a Dask cluster.

An audit of many files is a map and a reduce (pipeline.py): each file is read,
extracted and dissected on its own (the map, `pipeline._read_in_worker`, a pure
function of the file: it reads it and returns plain records), and the records are
then tracked file after file in this process (the reduce, which joins the IKE SAs that
cross file boundaries). An `Execution` runs the map and hands the results back in the
order the reduce asks for, whatever order they finish in, so the result is the same
however the files are spread: one process, N processes or a cluster of N workers.

- `LocalProcesses(jobs)`: a process pool on this machine (`--jobs N`), no Dask needed.
- `DaskCluster(address)`: a running Dask scheduler (`--cluster tcp://host:8786`), or
  a LocalCluster of N single-threaded workers that ikeaudit starts and closes
  (`--cluster local:N`). Dask is an optional extra (`pip install 'ikeaudit[cluster]'`).
  A worker lost mid-run has its tasks re-run by the scheduler elsewhere; as a task only
  reads its file and returns data, the re-run gives the same result.

Progress: `progress(bytes)` as files are read; `LocalProcesses` counts bytes as they
are read (a shared counter), a cluster counts each file's bytes when its task ends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import multiprocessing.context

INSTALL_HINT = "pip install 'ikeaudit[cluster]'"

Progress = Callable[[int], None]


class ExecutionError(Exception):
    """The execution asked for cannot be set up (no Dask, no scheduler); one line."""


class Execution:
    """Runs fn(*call) for each call, yielding the results in the order of `calls`."""

    dashboard: str | None = None  # a page showing the work, when there is one
    workers: int = 1

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], progress: Progress | None = None,
            done_bytes: Callable[[Any], int] | None = None) -> Iterator[Any]:  # fmt: skip
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Execution:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- this machine

_worker_progress: Any = None  # a shared counter of bytes read, in worker processes


class LocalProcesses(Execution):
    """`jobs` worker processes of this machine."""

    def __init__(self, jobs: int) -> None:
        self.workers = jobs

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], progress: Progress | None = None,
            done_bytes: Callable[[Any], int] | None = None) -> Iterator[Any]:  # fmt: skip
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # here: --jobs 1 needs no pool

        context = process_context()
        counter = context.Value("q", 0, lock=True) if progress is not None else None
        with ProcessPoolExecutor(max_workers=max(1, min(self.workers, len(calls))), mp_context=context,
                                 initializer=_init_worker, initargs=(counter,)) as pool:  # fmt: skip
            futures = [pool.submit(fn, *call) for call in calls]
            try:
                reported = 0
                for future in futures:
                    while not future.done():
                        wait([future], timeout=0.2, return_when=FIRST_COMPLETED)
                        reported = _forward(counter, progress, reported)
                    reported = _forward(counter, progress, reported)
                    yield future.result()
            finally:  # an error, or the caller stopped: do not run the calls still waiting
                for future in futures:
                    future.cancel()


def process_context() -> multiprocessing.context.BaseContext:
    # fork on Linux: workers start at once, with everything imported (elsewhere fork is
    # not safe with the system's libraries, and the platform's default is used).
    import multiprocessing  # here: one process needs none of it

    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def _forward(counter, progress: Progress | None, reported: int) -> int:
    if counter is None or progress is None:
        return reported
    done = counter.value
    if done > reported:
        progress(done - reported)
    return done


def _init_worker(counter) -> None:
    global _worker_progress
    _worker_progress = counter


def _count_progress(done: int) -> None:
    with _worker_progress.get_lock():
        _worker_progress.value += done


def worker_progress() -> Progress | None:
    """In a LocalProcesses worker, the callable that counts bytes read; else None."""
    return _count_progress if _worker_progress is not None else None


# ---------------------------------------------------------------------------- Dask


def parse_cluster(value: str) -> tuple[str, int | None]:
    """--cluster ADDRESS or local:N -> ("address", None) or ("local", N); ValueError if neither."""
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{value!r}: expected local:N with N a number of workers (1 or more)")
        return "local", int(count)
    if value == "local":
        raise ValueError("'local': expected local:N with N a number of workers, e.g. local:4")
    if "://" not in value and ":" not in value:
        raise ValueError(f"{value!r}: expected a scheduler address (tcp://host:8786) or local:N")
    return value, None


class DaskCluster(Execution):
    """The map on a Dask cluster: a running scheduler, or a LocalCluster started here."""

    def __init__(self, spec: str, *, timeout: float = 30.0) -> None:
        address, local_workers = parse_cluster(spec)  # ValueError: the caller's mistake
        try:
            import distributed
        except ImportError:
            raise ExecutionError(f"--cluster needs Dask: {INSTALL_HINT}") from None
        self._cluster = None
        try:
            if local_workers is not None:
                self._cluster = distributed.LocalCluster(
                    n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                    silence_logs=50)  # logging.CRITICAL: the terminal is for the audit
                self.client = distributed.Client(self._cluster, timeout=timeout)
            else:
                self.client = distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ExecutionError(f"--cluster {spec}: cannot reach the Dask scheduler: {exc}") from None
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        self.dashboard = _dashboard(self.client)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], progress: Progress | None = None,
            done_bytes: Callable[[Any], int] | None = None) -> Iterator[Any]:  # fmt: skip
        from distributed import KilledWorker, as_completed

        # pure=False: a file may change between two runs on a long-lived cluster, so a
        # result is never taken from an earlier run's memory.
        futures = [self.client.submit(fn, *call, pure=False, retries=0) for call in calls]
        position = {future.key: index for index, future in enumerate(futures)}
        done: dict[int, Any] = {}
        following = 0
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()  # raises the task's error
                except ImportError as exc:
                    raise ExecutionError(f"a Dask worker cannot run ikeaudit ({exc}): install the same ikeaudit "
                                         "version on the workers") from None
                except KilledWorker as exc:
                    raise ExecutionError(f"Dask gave up a task after its workers died several times ({exc}): "
                                         "see the workers' logs (memory limit?)") from None
                done[position[future.key]] = result
                if progress is not None and done_bytes is not None:
                    progress(done_bytes(result))
                while following in done:
                    yield done.pop(following)
                    following += 1
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _dashboard(client) -> str | None:
    # The scheduler serves the dashboard only with bokeh installed where it runs.
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return None
    return client.dashboard_link


__all__ = ["DaskCluster", "Execution", "ExecutionError", "INSTALL_HINT", "LocalProcesses",
           "parse_cluster", "process_context", "worker_progress"]
