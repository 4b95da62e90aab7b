"""The hard time limit and the worker processes behind it.

sympy computes ``9^{9^{9}}`` in C while holding the GIL, so a limit enforced by a thread
never fires and freezes every other grading thread with it. Judging therefore runs in
worker processes that are killed on overrun; these tests hold that promise to account
with real runaway inputs while other threads keep grading.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from trim import grading
from trim.grading import grade, grading_stats, is_equivalent

REPO = Path(__file__).resolve().parents[1]
LIMIT = 2.0

# Answers a worker has to judge (none is token-identical to its gold), all right.
ORDINARY = [(r"\frac12", r"so \boxed{0.5}"), ("(1,2)", r"\boxed{(1, 2)}"), ("x^2+2x+1", r"\boxed{(x+1)^2}"),
            ("10,\\!080", r"\boxed{10080}"), ("1.24e-8", r"\boxed{1.24\times 10^{-8}}"), ("42", "#### 42.0")]

RUNAWAY = {
    "9^{9^{9}}": r"\boxed{9^{9^{9}}}",  # the power is computed in C: only a kill ends it
    "9^{9^{8}}": r"\boxed{9^{9^{8}}}",
    "500 nested \\left(": r"\boxed{" + r"\left(" * 500 + "1" + r"\right)" * 500 + "}",
    "1 MB boxed sum": r"\boxed{" + "1+" * 500_000 + "1}",
    "1 MB of text": "so on and on " * 80_000,
    "1 MB of open braces": r"\boxed{" + "{" * 1_000_000,
    "1 MB of dollar signs": "$" * 1_000_000,
}
# The same, handed over as the answer itself (is_equivalent), so that the worker gets them whole.
RUNAWAY_ANSWERS = {
    "1 MB answer": "1+" * 500_000 + "1",
    "a sum of 2,000 terms": "+".join(["x"] * 2000),
    "9^{9^{9}} as an answer": "9^{9^{9}}",
}


def _pool_ready() -> grading._Pool:
    """The pool, with every worker started (start-up is not part of any call's limit)."""
    assert is_equivalent("1", "1.0", timeout=60)
    pool = grading._pool()
    deadline = time.monotonic() + 120
    while len(pool._live) < pool.size and time.monotonic() < deadline:
        time.sleep(0.05)
    return pool


def test_runaway_answers_stop_at_the_limit_while_8_threads_grade():
    _pool_ready()
    stop = threading.Event()
    latencies: list[float] = []
    finished: list[float] = []  # when each ordinary call returned
    misjudged: list[tuple] = []

    def keep_grading():
        while not stop.is_set():
            for gold, solution in ORDINARY:
                start = time.monotonic()
                result = grade(gold, solution, timeout=60)  # generous: machine load must not fail them
                latencies.append(time.monotonic() - start)
                finished.append(time.monotonic())
                if not result.correct:
                    misjudged.append((gold, solution, result))

    threads = [threading.Thread(target=keep_grading) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        timeouts_before = grading_stats()["timeout"]
        report, windows = [], []
        # Each runaway call is timed with the pool whole, as in a run where they are rare: a
        # killed worker takes a second or more to replace (several on a loaded machine), and a
        # burst of runaways faster than that queues behind the restarts.
        for name, solution in RUNAWAY.items():
            _pool_ready()
            start = time.monotonic()
            result = grade("1", solution, timeout=LIMIT)
            elapsed = time.monotonic() - start
            report.append((name, result.status, round(elapsed, 2)))
            windows.append((name, start, start + elapsed))
        for name, answer in RUNAWAY_ANSWERS.items():
            _pool_ready()
            start = time.monotonic()
            verdict = is_equivalent("1", answer, timeout=LIMIT)
            elapsed = time.monotonic() - start
            report.append((name, verdict, round(elapsed, 2)))
            windows.append((name, start, start + elapsed))
            assert verdict is False and elapsed <= LIMIT + 1, (name, elapsed)
            assert not result.correct, (name, result)
            assert elapsed <= LIMIT + 1, (name, elapsed, result.status)
        timeouts = grading_stats()["timeout"] - timeouts_before
    finally:
        stop.set()
        for t in threads:
            t.join()
    print("runaway answers:", report)
    statuses = dict((name, status) for name, status, _ in report)
    assert statuses["9^{9^{9}}"] == "timeout" and timeouts >= 1  # judged wrong and counted
    assert misjudged == []
    # The others carried on: ordinary calls kept returning while each power tower ran its
    # full limit, and none waited for long (the bound is loose for a loaded 2-core machine).
    for name, start, end in windows:
        if end - start >= LIMIT:
            assert any(start < t < end for t in finished), f"no ordinary call finished during {name}"
    assert max(latencies) < 2 * LIMIT, sorted(latencies)[-5:]


def test_timeout_is_wrong_and_counted():
    _pool_ready()
    grading.reset_grading_stats()
    result = grade("1", r"\boxed{9^{9^{9}}}", timeout=1.0)
    assert result == grading.Grade("9^{9^{9}}", False, "timeout")
    assert grading_stats() == {"timeout": 1}
    assert is_equivalent(r"\frac12", "0.5", timeout=60)  # the pool carries on


def test_grade_many_times_out_one_pair_and_judges_the_rest():
    golds = ["1", "2", "3", "4"]
    solutions = [r"\boxed{1}", r"\boxed{9^{9^{9}}}", r"\boxed{3.0}", r"\boxed{5}"]
    start = time.monotonic()
    statuses = [g.status for g in grading.grade_many(golds, solutions, workers=1, timeout=LIMIT)]
    assert statuses == ["correct", "timeout", "correct", "wrong"]
    assert time.monotonic() - start < LIMIT + 10


def test_answer_that_kills_its_workers_is_a_parse_error_and_they_are_replaced():
    """A worker that dies under a pair (here: killed from outside, as a segfault or the OOM killer
    would) gets the pair retried once on a fresh worker; a second death makes it a parse_error."""
    pool = _pool_ready()
    before = {w.proc.pid for w in pool._live}
    done = threading.Event()

    def kill_busy_workers():
        while not done.is_set():
            time.sleep(0.3)
            for worker in list(pool._live):
                if worker not in pool._idle and worker.proc.poll() is None:
                    os.kill(worker.proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_busy_workers)
    killer.start()
    try:
        start = time.monotonic()
        result = grade("1", r"\boxed{9^{9^{9}}}", timeout=60)
    finally:
        done.set()
        killer.join()
    assert result.status == "parse_error" and time.monotonic() - start < 30
    assert is_equivalent(r"\frac12", "0.5", timeout=60)
    assert {w.proc.pid for w in pool._live}.isdisjoint(before) or len(pool._live) < len(before) + 2


def test_worker_that_died_while_idle_is_replaced():
    pool = _pool_ready()
    for worker in list(pool._live):
        os.kill(worker.proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert is_equivalent(r"\frac12", "0.5", timeout=60)
    assert grade("(1,2)", r"\boxed{(2,1)}", timeout=60).status == "wrong"


def test_extraction_stays_linear_on_huge_text():
    for text in ["$" * 1_000_000, "{" * 1_000_000, r"\boxed{" * 140_000, "####" * 250_000,
                 "the answer is " * 70_000, "1 " + "ab " * 300_000, "\\" * 1_000_000]:
        start = time.monotonic()
        answer = grading.extract_answer(text)
        grading._precheck("1", answer)
        assert time.monotonic() - start < 1.0, text[:20]  # about 0.3 s at worst on an idle core


def _run_script(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=180)


def test_script_without_main_guard_leaves_no_processes():
    # A plain script (no `if __name__ == "__main__"`), as a user writes one; at exit the
    # workers go with it, including one that is busy on a runaway answer.
    done = _run_script("""
        import threading
        from trim import grading
        print(grading.grade("1/2", r"\\boxed{0.5}").status)
        threading.Thread(target=grading.grade, args=("1", r"\\boxed{9^{9^{9}}}"), kwargs={"timeout": 60},
                         daemon=True).start()
        import time; time.sleep(1)
        print(*sorted(w.proc.pid for w in grading._pool()._live))
    """)
    assert done.returncode == 0, done.stderr
    status, pids = done.stdout.splitlines()
    assert status == "correct"
    pids = [int(p) for p in pids.split()]
    assert pids
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_running, pids)):
        time.sleep(0.1)
    assert [pid for pid in pids if _running(pid)] == [], "grading workers outlived their parent"


def _running(pid: int) -> bool:
    """Alive and not a zombie (in a container nobody may reap an orphan's corpse)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_forked_child_grades_with_its_own_workers():
    _pool_ready()
    pid = os.fork()
    if pid == 0:  # child: the parent's workers are not ours; a fresh pool must start
        ok = False
        try:
            ok = grade(r"\frac12", r"\boxed{0.5}", timeout=60).correct and grading._pool() is not None
            grading._shutdown()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert is_equivalent(r"\frac12", "0.5", timeout=60)  # and the parent's pool is untouched


def test_a_killed_parents_busy_workers_die_within_a_second():
    # SIGKILL leaves no atexit: the workers must notice by themselves, even one that is busy judging a
    # runaway answer (it reads its stdin only between pairs, and its own alarm is 2 x 60 + 10 s away).
    done = _run_script("""
        import os, signal, threading, time
        from trim import grading
        print(grading.grade("1/2", r"\\boxed{0.5}").status, flush=True)
        threading.Thread(target=grading.grade, args=("1", r"\\boxed{9^{9^{9}}}"), kwargs={"timeout": 60},
                         daemon=True).start()
        time.sleep(1)
        print(*sorted(w.proc.pid for w in grading._pool()._live), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert done.returncode == -signal.SIGKILL, done.stderr
    status, pids = done.stdout.splitlines()
    pids = [int(p) for p in pids.split()]
    assert status == "correct" and pids
    killed = time.monotonic()
    while time.monotonic() < killed + 5 and any(map(_running, pids)):
        time.sleep(0.05)
    assert [pid for pid in pids if _running(pid)] == [], "grading workers outlived their SIGKILLed parent"
    assert time.monotonic() - killed < 2
