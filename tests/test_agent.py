"""A real agent process (and its runner child) against a scripted broker on a real ROUTER."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from fake_broker import FakeBroker
from helpers import PYTHON, ReadyProcess, children_of, pid_alive, wait_for

from broker.bundle import bundle
from broker.jobs import new_job_id
from broker.protocol import TAG, Assign, Bye, Done, Failed, Ready, Release, Stop, encode


@pytest.fixture
def fake_broker(base_url: str) -> Iterator[FakeBroker]:
    broker = FakeBroker(base_url)
    yield broker
    broker.close()


@pytest.fixture
def start_agent(
    base_url: str, part_env: dict[str, str], processes: list[ReadyProcess]
) -> Callable[..., ReadyProcess]:
    def start(*extra: str) -> ReadyProcess:
        argv = [PYTHON, "-m", "workers.agent_cli", "--broker", base_url, "--tasks", "tasks", *extra]
        proc = ReadyProcess(argv, env={**part_env, "JOBCAST_LOG": "DEBUG"})  # logs each assignment
        processes.append(proc)
        return proc

    return start


@pytest.fixture
def agent(fake_broker: FakeBroker, start_agent: Callable[..., ReadyProcess]) -> ReadyProcess:
    proc = start_agent()
    fake_broker.expect(Ready)
    return proc


def runner_pid(agent: ReadyProcess) -> int:
    """The agent's one runner child (waits for it to exist)."""
    pids: list[int] = wait_for(lambda: [p for p in children_of(agent.pid) if pid_alive(p)])
    assert len(pids) == 1, pids
    return pids[0]


def assign(
    broker: FakeBroker, task: str, args: dict[str, object] | None = None, timeout_s: float | None = None
) -> str:
    job_id = new_job_id()
    payload = json.dumps(args or {}).encode()
    broker.send(Assign(id=job_id, task=task, attempt=1, args=payload, timeout_s=timeout_s))
    return job_id


def wait_assigned(agent: ReadyProcess, job_id: str) -> None:
    """Wait until the agent has logged the job's assignment (it is with the runner)."""
    wait_for(lambda: any(f"job {job_id} attempt 1 assigned" in x for x in agent.stderr_lines))


def wait_running(agent: ReadyProcess, job_id: str) -> None:
    """Wait until the runner has logged that it started the job (a Stop then finds it running)."""
    wait_for(lambda: any(f"job {job_id} attempt 1 running" in x for x in agent.stderr_lines))


def outcome(broker: FakeBroker, job_id: str, timeout_s: float = 5.0) -> Done | Failed:
    result: Done | Failed = broker.expect((Done, Failed), timeout_s, lambda m: m.id == job_id)
    return result


def assert_echo_works(broker: FakeBroker) -> None:
    done = broker.run("echo", b'{"again":true}')
    assert isinstance(done, Done) and json.loads(done.result) == {"again": True}


# --- the happy path ---------------------------------------------------------------------


def test_ready_announces_tasks_options_and_pid(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    ready = next(m for _, m in fake_broker.seen if isinstance(m, Ready))
    assert {"echo", "slow", "fail", "crash", "hang", "progress_n", "noop"} <= set(ready.tasks)
    assert ready.options is not None
    assert ready.options["fail"] == {"ttl_s": 86400.0, "timeout_s": None, "max_attempts": 1}
    assert ready.pid == agent.pid
    assert agent.ready_line.startswith("jobcast agent ready")


def test_echo_is_done_with_its_result_in_the_same_child(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    child = runner_pid(agent)
    done = fake_broker.run("echo", b'{"region":"eu","year":2026}')
    assert isinstance(done, Done)
    assert (done.attempt, json.loads(done.result)) == (1, {"region": "eu", "year": 2026})
    assert done.last is None
    assert_echo_works(fake_broker)
    assert runner_pid(agent) == child  # long-lived: never a process per job


def test_done_carries_the_last_progress(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    done = fake_broker.run("slow", b'{"seconds":0.2,"steps":4}')
    assert isinstance(done, Done)
    assert done.last == {"done": 4, "total": 4, "message": "step 4"}
    done = fake_broker.run("progress_n", b'{"n":10000}')
    assert isinstance(done, Done) and done.last is not None
    assert (json.loads(done.result), done.last["done"]) == (10000, 10000)


def test_a_raising_task_fails_retryably_with_its_traceback(
    agent: ReadyProcess, fake_broker: FakeBroker
) -> None:
    failed = fake_broker.run("fail")
    assert isinstance(failed, Failed) and failed.retry
    assert (failed.error["type"], failed.error["message"]) == ("ValueError", "boom")
    assert 'raise ValueError("boom")' in failed.error["traceback"]
    assert_echo_works(fake_broker)


@pytest.mark.parametrize(
    ("task", "args", "error_type", "text"),
    [
        ("no_such_task", b"{}", "UnknownTask", "no task named 'no_such_task'"),
        ("bad_result", b"{}", "BadResult", "JSON-serialisable"),
        ("echo", b"[1,2]", "BadArguments", "args must be a JSON object"),
    ],
)
def test_hopeless_failures_are_not_retried(
    agent: ReadyProcess, fake_broker: FakeBroker, task: str, args: bytes, error_type: str, text: str
) -> None:
    failed = fake_broker.run(task, args)
    assert isinstance(failed, Failed) and not failed.retry
    assert failed.error["type"] == error_type and text in failed.error["message"]
    assert_echo_works(fake_broker)


# --- the child dies, hangs or is cancelled ----------------------------------------------


def test_child_killed_mid_job_is_worker_lost_and_replaced(
    agent: ReadyProcess, fake_broker: FakeBroker
) -> None:
    child = runner_pid(agent)
    job_id = assign(fake_broker, "slow", {"seconds": 30, "steps": 300})
    wait_assigned(agent, job_id)
    os.kill(child, signal.SIGKILL)
    failed = outcome(fake_broker, job_id)
    assert isinstance(failed, Failed) and failed.retry
    assert failed.error["type"] == "WorkerLost"
    assert failed.error["message"] == "worker process killed by SIGKILL"
    assert_echo_works(fake_broker)
    assert runner_pid(agent) != child


def test_a_task_that_exits_is_worker_lost_with_its_code(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    failed = fake_broker.run("crash", b'{"how":"exit","code":3}')
    assert isinstance(failed, Failed) and failed.retry
    assert failed.error == {
        "type": "WorkerLost",
        "traceback": "",
        "message": "worker process exited with code 3",
    }
    assert_echo_works(fake_broker)


def test_timeout_kills_the_child(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    child = runner_pid(agent)
    started = time.monotonic()
    job_id = assign(fake_broker, "hang", timeout_s=0.5)
    failed = outcome(fake_broker, job_id)
    elapsed_s = time.monotonic() - started
    assert isinstance(failed, Failed) and failed.retry
    assert failed.error["type"] == "Timeout"
    assert "exceeded timeout of 0.5 s" in failed.error["message"]
    assert 0.5 <= elapsed_s < 3.0
    assert not pid_alive(child)
    assert_echo_works(fake_broker)


def test_stop_cancels_a_job_at_its_next_progress(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    child = runner_pid(agent)
    job_id = assign(fake_broker, "slow", {"seconds": 30, "steps": 300})
    fake_broker.send(Stop(id=job_id, attempt=2))  # another attempt: ignored
    fake_broker.send(Stop(id=job_id, attempt=1))
    failed = outcome(fake_broker, job_id)
    assert isinstance(failed, Failed) and not failed.retry
    assert failed.error == {"type": "JobCancelled", "message": "job was cancelled", "traceback": ""}
    assert runner_pid(agent) == child  # cooperative: no kill after the grace
    assert_echo_works(fake_broker)


def test_stop_kills_a_job_that_never_checks(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    child = runner_pid(agent)
    job_id = assign(fake_broker, "hang")
    wait_running(agent, job_id)
    started = time.monotonic()
    fake_broker.send(Stop(id=job_id, attempt=1))
    failed = outcome(fake_broker, job_id)
    assert isinstance(failed, Failed) and not failed.retry
    assert failed.error["type"] == "JobCancelled"
    assert 1.9 <= time.monotonic() - started < 4.0  # CANCEL_GRACE_S, then a kill
    assert not pid_alive(child)
    assert_echo_works(fake_broker)


def test_an_assign_past_prefetch_is_refused(
    fake_broker: FakeBroker, start_agent: Callable[..., ReadyProcess]
) -> None:
    agent = start_agent("--prefetch", "1")
    assert fake_broker.expect(Ready).prefetch == 1
    slow_id = assign(fake_broker, "slow", {"seconds": 30, "steps": 300})
    wait_assigned(agent, slow_id)
    busy = fake_broker.run("echo")
    assert isinstance(busy, Failed) and busy.retry and busy.error["type"] == "Busy"
    assert slow_id in busy.error["message"]
    fake_broker.send(Stop(id=slow_id, attempt=1))
    assert isinstance(outcome(fake_broker, slow_id), Failed)
    assert_echo_works(fake_broker)


# --- a slot that holds several jobs (prefetch) ----------------------------------------------


def ran(agent: ReadyProcess, job_id: str) -> bool:
    """Whether the runner logged that it started the job."""
    return any(f"job {job_id} attempt 1 running" in line for line in agent.stderr_lines)


def test_held_jobs_run_in_order_and_a_stopped_one_never_starts(
    agent: ReadyProcess, fake_broker: FakeBroker
) -> None:
    slow_id = assign(fake_broker, "slow", {"seconds": 0.6, "steps": 3})
    first, second = assign(fake_broker, "echo", {"n": 1}), assign(fake_broker, "echo", {"n": 2})
    wait_assigned(agent, second)
    fake_broker.send(Stop(id=first, attempt=1))
    cancelled = outcome(fake_broker, first)
    assert isinstance(cancelled, Failed) and cancelled.error["type"] == "JobCancelled"
    done = outcome(fake_broker, second)
    assert isinstance(done, Done) and json.loads(done.result) == {"n": 2}
    finished = [m.id for _, m in fake_broker.seen if isinstance(m, Done | Failed)]
    assert finished == [slow_id, first, second]  # in the order they were sent
    assert not ran(agent, first)


def test_a_bundle_of_assignments_runs_every_job_in_it(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    ready = next(m for _, m in fake_broker.seen if isinstance(m, Ready))
    assert ready.bundles  # the broker may send it bundles
    ids = [new_job_id() for _ in range(3)]
    messages = [encode(Assign(id=job_id, task="echo", attempt=1, args=b'{"n":%d}' % n))
                for n, job_id in enumerate(ids)]  # fmt: skip
    fake_broker.send_raw(bundle(messages))
    results = [outcome(fake_broker, job_id) for job_id in ids]
    assert [json.loads(r.result)["n"] for r in results if isinstance(r, Done)] == [0, 1, 2]
    tag, word, _header, lengths, body = bundle(messages[:2])
    fake_broker.send_raw([tag, word, b'{"frames":[4,4,4]}', lengths, body])  # counts one too many
    assert_echo_works(fake_broker)
    wait_for(lambda: any("dropped a bad bundle" in line for line in agent.stderr_lines))
    assert sum(f"job {ids[0]} attempt 1 running" in line for line in agent.stderr_lines) == 1  # not twice


def test_outcomes_read_in_batches_still_name_the_job_that_timed_out(
    agent: ReadyProcess, fake_broker: FakeBroker
) -> None:
    quick = [assign(fake_broker, "echo", {"n": n}) for n in range(8)]  # held behind each other
    hung = assign(fake_broker, "hang", timeout_s=0.5)
    last = assign(fake_broker, "echo", {"n": 99})
    assert [json.loads(r.result)["n"] for r in (outcome(fake_broker, job_id) for job_id in quick)
            if isinstance(r, Done)] == list(range(8))  # fmt: skip
    failed = outcome(fake_broker, hung)
    assert isinstance(failed, Failed) and failed.error["type"] == "Timeout"
    done = outcome(fake_broker, last)  # the next runner got it
    assert isinstance(done, Done) and json.loads(done.result) == {"n": 99}
    reported = [m.id for _, m in fake_broker.seen if isinstance(m, Done | Failed)]
    assert reported == [*quick, hung, last]  # each once, in order


def test_warm_shutdown_releases_the_jobs_not_started(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    slow_id = assign(fake_broker, "slow", {"seconds": 0.6, "steps": 3})
    waiting = [assign(fake_broker, "echo", {"n": n}) for n in range(3)]
    wait_assigned(agent, waiting[-1])
    wait_running(agent, slow_id)
    agent.signal(signal.SIGTERM)
    fake_broker.expect(Bye)
    assert isinstance(outcome(fake_broker, slow_id), Done)
    assert agent.wait(timeout_s=5) == 0
    released = [m.id for _, m in fake_broker.seen if isinstance(m, Release)]
    assert sorted(released) == sorted(waiting)
    assert not any(ran(agent, job_id) for job_id in waiting)


def test_a_crashed_runner_hands_the_jobs_waiting_to_the_next(
    agent: ReadyProcess, fake_broker: FakeBroker
) -> None:
    child = runner_pid(agent)
    crash_id = assign(fake_broker, "crash")
    echo_id = assign(fake_broker, "echo", {"after": "crash"})
    lost = outcome(fake_broker, crash_id)
    assert isinstance(lost, Failed) and lost.retry and lost.error["type"] == "WorkerLost"
    done = outcome(fake_broker, echo_id)
    assert isinstance(done, Done) and json.loads(done.result) == {"after": "crash"}
    assert runner_pid(agent) != child


# --- the broker goes away, or talks nonsense ----------------------------------------------


def test_a_silent_broker_is_left_and_rejoined(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    first = fake_broker.peer
    fake_broker.heartbeating = False
    fake_broker.expect(Ready, timeout_s=3.0)  # 3 missed heartbeats, a back-off, a new DEALER
    assert fake_broker.peer != first
    fake_broker.heartbeating = True
    assert_echo_works(fake_broker)


def test_bye_from_the_broker_means_reconnect(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    first = fake_broker.peer
    fake_broker.send(Bye())
    fake_broker.expect(Ready, timeout_s=3.0)
    assert fake_broker.peer != first
    assert_echo_works(fake_broker)


def test_junk_frames_do_not_crash_it(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    for frames in (
        [b"junk"],
        [TAG, b"NOPE", b"{}"],
        [TAG, b"ASSIGN", b"{not json"],
        [TAG, b"ASSIGN", b'{"id":1}'],
        [b"x"] * 9,
        [TAG, b"DONE", b"{}"],
    ):
        fake_broker.send_raw(frames)
    assert_echo_works(fake_broker)
    assert agent.proc.poll() is None
    wait_for(lambda: any("dropped a bad message" in line for line in agent.stderr_lines))


# --- shutdown -------------------------------------------------------------------------------


def test_warm_shutdown_says_bye_and_finishes_the_job(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    child = runner_pid(agent)
    job_id = assign(fake_broker, "slow", {"seconds": 0.6, "steps": 3})
    wait_assigned(agent, job_id)
    agent.signal(signal.SIGTERM)
    fake_broker.expect(Bye)
    assert isinstance(outcome(fake_broker, job_id), Done)
    assert agent.wait(timeout_s=5) == 0
    assert not pid_alive(child)


def test_second_signal_is_cold(agent: ReadyProcess, fake_broker: FakeBroker) -> None:
    child = runner_pid(agent)
    job_id = assign(fake_broker, "hang")
    wait_assigned(agent, job_id)
    agent.signal(signal.SIGTERM)
    fake_broker.expect(Bye)
    refused = fake_broker.run("echo")  # no new work while stopping
    assert isinstance(refused, Failed) and refused.error["type"] == "Busy"
    agent.signal(signal.SIGINT)
    failed = outcome(fake_broker, job_id)
    assert isinstance(failed, Failed) and failed.retry and failed.error["type"] == "WorkerLost"
    assert agent.wait(timeout_s=5) == 1
    wait_for(lambda: not pid_alive(child), timeout_s=3)


def test_missing_task_module_is_a_clear_error(base_url: str, part_env: dict[str, str]) -> None:
    import subprocess

    proc = subprocess.run(
        [PYTHON, "-m", "workers.agent_cli", "--broker", base_url, "--tasks", "no_such_tasks"],
        env={**os.environ, **part_env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "cannot import task module 'no_such_tasks'" in proc.stderr
