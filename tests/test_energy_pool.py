"""energy.pool: results in order, exceptions/crashes/timeouts become failures, the rest survives."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from energy.pool import InProcess, PoolConfig, ProcessPool, TaskFailure, WorkerStartupError


class ScriptedEvaluator:
    """A test-only evaluator: squares numbers, or misbehaves as the task says.

    Tasks are ``(kind, value)``; it counts its own calls, so a test can see that state lives on
    inside a worker between tasks.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, task: tuple[str, int]) -> object:
        kind, value = task
        self.calls += 1
        if kind == "square":
            return value * value
        if kind == "raise":
            raise ValueError(f"bad value {value}")
        if kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "exit":
            os._exit(value)
        if kind == "sleep":
            time.sleep(value)
            return value
        if kind == "pid":
            return os.getpid()
        if kind == "calls":
            return self.calls
        if kind == "threads":
            import torch

            return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
        raise AssertionError(f"unknown task kind {kind}")


class FailsToLoad:
    """Pickles fine, but cannot be unpickled (as if a worker lacked a module)."""

    def __call__(self, task: object) -> object:
        return task

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse_to_load, ())


def _refuse_to_load() -> None:
    raise ImportError("no module named 'missing_engine'")


def squares(values: range) -> list[tuple[str, int]]:
    return [("square", v) for v in values]


@pytest.fixture
def pool2() -> Iterator[ProcessPool[tuple[str, int], object]]:
    with ProcessPool(ScriptedEvaluator(), PoolConfig(workers=2, timeout_s=60.0)) as pool:
        yield pool


def test_results_come_back_in_task_order(pool2: ProcessPool[tuple[str, int], object]) -> None:
    assert pool2.map(squares(range(25))) == [v * v for v in range(25)]
    assert len(pool2.worker_pids) == 2
    assert os.getpid() not in pool2.worker_pids


@pytest.mark.parametrize("executor", ["in-process", "pool"])
def test_an_exception_fails_only_its_task(executor: str) -> None:
    tasks = [("square", 2), ("raise", 5), ("square", 3)]
    if executor == "in-process":
        outcomes = InProcess(ScriptedEvaluator()).map(tasks)
    else:
        with ProcessPool(ScriptedEvaluator(), PoolConfig(workers=1)) as pool:
            outcomes = pool.map(tasks)
    assert outcomes == [4, TaskFailure("ValueError: bad value 5"), 9]


def test_a_crashed_worker_fails_only_its_task_and_is_replaced(pool2: ProcessPool[tuple[str, int], object]) -> None:
    tasks = [*squares(range(4)), ("sigkill", 0), *squares(range(4, 8)), ("exit", 3), *squares(range(8, 12))]
    outcomes = pool2.map(tasks)
    failures = {i: o for i, o in enumerate(outcomes) if isinstance(o, TaskFailure)}
    assert sorted(failures) == [4, 9]
    assert "killed by SIGKILL" in failures[4].reason
    assert "exit code 3" in failures[9].reason
    assert [o for o in outcomes if not isinstance(o, TaskFailure)] == [v * v for v in range(12)]
    # the pool is whole again and keeps working
    assert len(pool2.worker_pids) == 2
    assert pool2.map(squares(range(6))) == [v * v for v in range(6)]


def test_a_worker_that_died_while_idle_is_replaced_before_the_next_batch() -> None:
    with ProcessPool(ScriptedEvaluator(), PoolConfig(workers=1)) as pool:
        [pid] = pool.map([("pid", 0)])
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pool.worker_pids == [pid] and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.map(squares(range(3))) == [0, 1, 4]  # nothing lost to the dead worker
        assert pool.worker_pids != [pid]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_hung_task_times_out_and_the_rest_is_evaluated() -> None:
    with ProcessPool(ScriptedEvaluator(), PoolConfig(workers=1, timeout_s=1.0)) as pool:
        start = time.monotonic()
        outcomes = pool.map([("square", 2), ("sleep", 120), ("square", 3)])
        elapsed = time.monotonic() - start
        first_pid = pool.worker_pids
        assert pool.map([("square", 4)]) == [16]
        assert pool.worker_pids == first_pid  # the replacement keeps serving
    assert outcomes[0] == 4 and outcomes[2] == 9
    assert isinstance(outcomes[1], TaskFailure) and "timed out after 1.0 s" in outcomes[1].reason
    assert elapsed < 60  # killed at the timeout, not waited out (the task sleeps 120 s)


def test_a_static_schedule_sends_task_i_to_worker_i_mod_n_even_when_one_is_slow() -> None:
    tasks = [("sleep", 1), ("pid", 0), ("pid", 0), ("pid", 0), ("pid", 0), ("pid", 0)]
    with ProcessPool(ScriptedEvaluator(), PoolConfig(workers=2, schedule="static")) as pool:
        pool.map([("square", 0)] * 2)  # both workers up
        outcomes = pool.map(tasks)
    pids = outcomes[1:]
    assert len(set(pids)) == 2
    assert pids[0] == pids[2] == pids[4] and pids[1] == pids[3]  # tasks 1, 3, 5 -> worker 1; 2, 4 -> worker 0
    assert outcomes[0] == 1


def test_each_worker_keeps_its_evaluator_state_between_tasks_and_calls() -> None:
    evaluator = ScriptedEvaluator()
    evaluator.calls = 100  # the parent's state does not matter: workers count their own calls
    with ProcessPool(evaluator, PoolConfig(workers=1)) as pool:
        assert pool.map([("calls", 0)] * 3) == [101, 102, 103]
        assert pool.map([("calls", 0)] * 2) == [104, 105]
    assert evaluator.calls == 100


@pytest.mark.slow
def test_workers_run_single_threaded() -> None:
    """torch (imported by the task, after the worker capped threads) sees one thread, not the machine's cores."""
    with ProcessPool(ScriptedEvaluator(), PoolConfig(workers=1)) as pool:
        assert pool.map([("threads", 0)]) == [("1", 1)]


def test_an_empty_batch_starts_no_workers() -> None:
    pool = ProcessPool(ScriptedEvaluator(), PoolConfig(workers=2))
    assert pool.map([]) == []
    assert pool.worker_pids == []


def test_an_evaluator_workers_cannot_load_is_a_clear_error() -> None:
    pool = ProcessPool(FailsToLoad(), PoolConfig(workers=1))
    with pytest.raises(WorkerStartupError, match="missing_engine"):
        pool.map([1, 2])
    assert pool.worker_pids == []  # closed, nothing left running


def test_an_unpicklable_evaluator_is_refused_up_front() -> None:
    with pytest.raises(TypeError, match="picklable"):
        ProcessPool(lambda task: task, PoolConfig(workers=1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"start_method": "fork"}, "spawn"),
        ({"threads_per_worker": 0}, "threads_per_worker"),
        ({"schedule": "round-robin"}, "schedule"),
    ],
)
def test_bad_pool_config_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolConfig(**options)  # type: ignore[arg-type]
