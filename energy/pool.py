"""Per-structure evaluations in worker processes that survive crashes and hangs.

An *evaluator* is any picklable callable ``task -> result`` (a tblite single point, an MMFF energy,
a GNN forward pass). :class:`ProcessPool` sends it once to each of a fixed number of worker
processes, where it lives for the pool's lifetime (so an evaluator may keep caches, e.g. one tblite
calculator per molecule), and feeds the workers one task at a time:

- a task that raises comes back as :class:`TaskFailure` with the exception as its reason;
- a task whose worker dies (segfault, ``SIGKILL``, ``os._exit``) or that runs past ``timeout_s``
  (its worker is killed) comes back as :class:`TaskFailure`; that one worker is replaced, and every
  other task of the batch is still evaluated and returned.

Workers are started with ``spawn`` (or ``forkserver``), never ``fork``: forking a process whose
torch/OpenMP thread pools already run is unsafe. Each worker limits OpenMP/BLAS/torch to
``threads_per_worker`` threads (default 1) so ``workers`` processes use ``workers`` cores.

:class:`InProcess` runs the same evaluator in the calling process with the same outcome types
(exceptions become failures) but no isolation: a crash takes the caller down and nothing times out.

Example::

    with ProcessPool(evaluator, PoolConfig(workers=2, timeout_s=60)) as pool:
        outcomes = pool.map(tasks)  # one result or TaskFailure per task, in order
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import pickle
import signal
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, Generic, NoReturn, Protocol, TypeVar, cast

__all__ = ["Executor", "InProcess", "PoolConfig", "ProcessPool", "TaskFailure", "WorkerStartupError", "call_evaluator"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)

SCHEDULES = ("dynamic", "static")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task that produced no result, and why."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """Worker-process settings.

    Attributes:
        workers: number of worker processes (>= 1).
        timeout_s: wall-clock limit per task in seconds, from the moment it is sent to a worker;
            ``None`` for none.
        start_method: ``"spawn"`` or ``"forkserver"`` (``"fork"`` is refused, see the module docstring).
        startup_timeout_s: how long a new worker may take to import its evaluator's modules.
        threads_per_worker: OpenMP/BLAS/torch threads in each worker.
        schedule: ``"dynamic"``: the next free worker takes the next task (best balance when tasks
            differ in cost); ``"static"``: task ``i`` of every :meth:`ProcessPool.map` goes to worker
            ``i % workers``, so each worker sees the same sequence of tasks on every run and an evaluator
            with caches (warm-started SCF) gives bit-identical results run after run.
    """

    workers: int = 1
    timeout_s: float | None = 120.0
    start_method: str = "spawn"
    startup_timeout_s: float = 300.0
    threads_per_worker: int = 1
    schedule: str = "dynamic"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {self.timeout_s}")
        if self.start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {self.start_method!r}")
        if not self.startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s must be > 0, got {self.startup_timeout_s}")
        if self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {self.threads_per_worker}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")


class Executor(Protocol[T_contra, R]):
    """Runs an evaluator over tasks: one result or :class:`TaskFailure` per task, in task order."""

    def map(self, tasks: Sequence[T_contra]) -> list[R | TaskFailure]: ...

    def close(self) -> None: ...

    @property
    def worker_pids(self) -> list[int]: ...


def call_evaluator(evaluator: Callable[[T], R], task: T) -> R | TaskFailure:
    """``evaluator(task)``, an exception turned into a :class:`TaskFailure` naming it."""
    try:
        return evaluator(task)
    except Exception as exc:
        return TaskFailure(f"{type(exc).__name__}: {exc}")


class InProcess(Generic[T, R]):
    """The evaluator called in this process, task after task (no isolation, no timeout)."""

    def __init__(self, evaluator: Callable[[T], R]) -> None:
        self._evaluator = evaluator

    def map(self, tasks: Sequence[T]) -> list[R | TaskFailure]:
        return [call_evaluator(self._evaluator, task) for task in tasks]

    def close(self) -> None:
        pass

    @property
    def worker_pids(self) -> list[int]:
        """No worker processes: ``[]``."""
        return []


@dataclass(eq=False)
class _Worker:
    """Parent-side handle of one worker process (mutable bookkeeping, private to the pool)."""

    process: BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    task: int | None = None
    deadline: float = math.inf


class WorkerStartupError(RuntimeError):
    """A worker could not load the evaluator (a configuration problem, not a per-task failure)."""


class ProcessPool(Generic[T, R]):
    """A fixed number of worker processes, each holding its own copy of ``evaluator``.

    Workers start on the first :meth:`map` and live until :meth:`close` (or garbage collection,
    or interpreter exit). Not thread-safe: one :meth:`map` at a time.
    """

    def __init__(self, evaluator: Callable[[T], R], config: PoolConfig) -> None:
        try:
            self._payload = pickle.dumps(evaluator)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"the evaluator must be picklable to run in worker processes: {exc}") from exc
        self.config = config
        self._context = cast(SpawnContext | ForkServerContext, multiprocessing.get_context(config.start_method))
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (empty before the first :meth:`map`)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def __enter__(self) -> ProcessPool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (they are restarted by the next :meth:`map`)."""
        _shutdown(self._workers)

    def map(self, tasks: Sequence[T]) -> list[R | TaskFailure]:
        """One result or :class:`TaskFailure` per task, in order.

        Raises:
            WorkerStartupError: a worker could not load the evaluator or died while starting.
        """
        if not tasks:
            return []
        try:
            return self._run(tasks)
        except BaseException:
            # Tasks may still be in flight; stale results must never reach a later map().
            self.close()
            raise

    def _run(self, tasks: Sequence[T]) -> list[R | TaskFailure]:
        for k, w in enumerate(self._workers):
            if not w.process.is_alive():  # died while idle: replace it before it is handed a task
                log.warning("an idle worker died (%s); replacing it", _exit_description(w.process.exitcode))
                _kill(w)
                w.conn.close()
                self._workers[k] = self._start_worker()
        while len(self._workers) < self.config.workers:
            self._workers.append(self._start_worker())
        count = len(self._workers)
        if self.config.schedule == "static":
            queues = [deque(range(k, len(tasks), count)) for k in range(count)]
        else:
            shared = deque(range(len(tasks)))
            queues = [shared] * count
        outcomes: dict[int, R | TaskFailure] = {}
        while len(outcomes) < len(tasks):
            for w, queue in zip(self._workers, queues, strict=True):
                if w.ready and w.task is None and queue:
                    self._dispatch(w, queue.popleft(), tasks)
            wait(self._waitables(), timeout=self._next_deadline())
            for k, w in enumerate(self._workers):
                if not self._poll(w, outcomes):
                    self._workers[k] = self._start_worker()
        return [outcomes[i] for i in range(len(tasks))]

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_conn, self._payload, self.config.threads_per_worker),
            daemon=True,
            name="energy-pool-worker",
        )
        process.start()
        child_conn.close()
        return _Worker(process=process, conn=parent_conn, started=time.monotonic())

    def _dispatch(self, w: _Worker, index: int, tasks: Sequence[T]) -> None:
        w.task = index
        w.deadline = math.inf if self.config.timeout_s is None else time.monotonic() + self.config.timeout_s
        try:
            w.conn.send((index, tasks[index]))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker died; _poll sees it and reports the task as lost with that worker

    def _waitables(self) -> list[Any]:
        return [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        deadlines = [w.deadline for w in self._workers if w.task is not None]
        deadlines += [w.started + self.config.startup_timeout_s for w in self._workers if not w.ready]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _poll(self, w: _Worker, outcomes: dict[int, R | TaskFailure]) -> bool:
        """Collect what ``w`` sent; ``False`` if it is dead or hung and was killed (then replace it)."""
        hung_up = False
        try:
            while w.conn.poll():
                self._receive(w, w.conn.recv(), outcomes)
        except (EOFError, OSError):
            hung_up = True  # its end of the pipe closed: the process is gone or going
        if hung_up or not w.process.is_alive():
            w.process.join(timeout=5.0)
            _kill(w)
            self._lose(w, outcomes, f"worker process died ({_exit_description(w.process.exitcode)})")
            return False
        now = time.monotonic()
        if w.task is not None and now > w.deadline:
            _kill(w)
            self._lose(w, outcomes, f"timed out after {self.config.timeout_s} s (worker killed and replaced)")
            return False
        if not w.ready and now > w.started + self.config.startup_timeout_s:
            _kill(w)
            raise WorkerStartupError(f"a worker did not start within {self.config.startup_timeout_s} s")
        return True

    def _receive(self, w: _Worker, message: tuple[Any, ...], outcomes: dict[int, R | TaskFailure]) -> None:
        kind = message[0]
        if kind == "ready":
            w.ready = True
        elif kind == "startup-error":
            raise WorkerStartupError(f"a worker could not load the evaluator: {message[1]}")
        elif kind == "result":
            _, index, outcome = message
            if index == w.task:
                outcomes[index] = outcome
                w.task, w.deadline = None, math.inf

    def _lose(self, w: _Worker, outcomes: dict[int, R | TaskFailure], reason: str) -> None:
        w.conn.close()
        if not w.ready:
            raise WorkerStartupError(f"a worker died while loading the evaluator: {reason}")
        if w.task is not None:
            log.warning("task %d: %s", w.task, reason)
            outcomes[w.task] = TaskFailure(reason)
        else:
            log.warning("idle %s; replacing it", reason)


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _kill(w: _Worker) -> None:
    if w.process.is_alive():
        w.process.kill()
    w.process.join(timeout=5.0)


def _shutdown(workers: list[_Worker]) -> None:
    """Ask idle workers to exit, kill the rest; empties ``workers`` in place."""
    for w in workers:
        if not w.conn.closed:
            try:
                w.conn.send(None)
            except OSError:
                pass
    deadline = time.monotonic() + 2.0
    for w in workers:
        w.process.join(timeout=max(0.0, deadline - time.monotonic()))
        _kill(w)
        if not w.conn.closed:
            w.conn.close()
    workers.clear()


def _limit_threads(threads: int) -> None:
    """Cap OpenMP/BLAS/torch threads in this (worker) process.

    Environment variables cover libraries loaded from now on; libraries the spawn bootstrap already
    loaded (re-importing the parent's ``__main__`` may load torch or an OpenMP runtime) are capped
    through their runtime calls.
    """
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    for path in _loaded_libraries("libgomp"):
        try:
            ctypes.CDLL(path).omp_set_num_threads(ctypes.c_int(threads))
        except (OSError, AttributeError):
            log.debug("could not set OpenMP threads through %s", path)


def _loaded_libraries(fragment: str) -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if fragment in line and "/" in line}
    except OSError:
        return []
    return sorted(paths)


def _leave() -> NoReturn:
    """A worker told to stop exits at once, without the interpreter's teardown: with torch loaded that teardown
    (its C++ static destructors) outlasts the 2 s :func:`_shutdown` waits, after which the worker was killed anyway;
    a worker holds nothing that needs it (results went back through the pipe)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker_main(conn: Connection, payload: bytes, threads: int) -> None:
    """A worker's life: load the evaluator, then answer ``(index, task)`` messages until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _limit_threads(threads)
    try:
        evaluator = pickle.loads(payload)
    except BaseException as exc:
        conn.send(("startup-error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            _leave()
        index, task = message
        outcome = call_evaluator(evaluator, task)
        try:
            conn.send(("result", index, outcome))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send(("result", index, TaskFailure(f"the result could not be sent back: {exc}")))
