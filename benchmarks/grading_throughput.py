"""Grading throughput with the hard time limit in place: 1,000 ordinary calls, target at most 10 s.

"Ordinary" is what the engine and the book grade: MATH-500 reference solutions against
their own gold (mostly the same string, so the in-process shortcut takes them) and
against another problem's gold (wrong, so a worker process judges them), GSM8K
"#### 1,234" endings, and OlympiadBench / Minerva golds rewritten with other spacing
or in scientific notation (right, but only math-verify can tell). Every pair is
distinct, and each run starts a fresh worker pool (empty parse caches); the pool's
start-up is timed apart, as it is paid once per process.

    python benchmarks/grading_throughput.py [--calls 1000] [--timeout 5]

Runs: one thread calling grade() 1,000 times; grade_many() over the 1,000; 8 threads
sharing the 1,000 grade() calls. Exits 1 if one of them is over the target. A last,
informative run sends all 1,000 to the workers, shortcut off: the worst case.
"""

import os
import random
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from _common import Timer, parse_args

from trim import grading
from trim.data import load_dataset

TARGET_S = 10.0


def data_dir() -> Path:
    path = Path(os.environ.get("TRIM_DATA_DIR") or "/work/shared/data")
    if not path.is_dir():
        sys.exit(f"benchmark data folder {path} does not exist; set TRIM_DATA_DIR")
    return path


def ordinary_calls(n: int) -> list[tuple[str, str, str]]:
    """(kind, gold, solution) for ``n`` distinct, realistic grading calls."""
    rng = random.Random(0)
    math500 = load_dataset("math500", "test", data_dir=data_dir(), source="local")
    gsm = load_dataset("gsm8k", "test", data_dir=data_dir(), source="local")
    other = (load_dataset("olympiadbench", "test", data_dir=data_dir(), source="local")
             + load_dataset("minerva_math", "test", data_dir=data_dir(), source="local"))
    calls = [("math500 own solution", p.answer, p.solution) for p in math500]
    shifted = math500[7:] + math500[:7]
    calls += [("math500 other solution", p.answer, q.solution) for p, q in zip(math500, shifted)]
    for p in gsm:
        calls.append(("gsm8k #### n,nnn", p.answer, f"So she pays {p.answer} in all.\n#### {float(p.answer):,.10g}"))
    for p in other:
        answer = re.sub(r"(\d)e([+-]?\d+)$", r"\1 \\times 10^{\2}", p.answer)  # Minerva's 1.24e-8
        answer = re.sub(r"\s*([,+])\s*", r"\1 ", answer)
        calls.append(("olympiad/minerva restyled", p.answer, f"The final answer is ${answer}$. I hope it is correct."))
    by_kind: dict[str, list] = {}
    for call in calls:
        by_kind.setdefault(call[0], []).append(call)
    share = {"math500 own solution": 0.3, "math500 other solution": 0.3, "gsm8k #### n,nnn": 0.2,
             "olympiad/minerva restyled": 0.2}
    chosen = []
    for kind, frac in share.items():
        chosen += rng.sample(by_kind[kind], round(n * frac))
    rng.shuffle(chosen)
    return chosen[:n]


def fresh_pool() -> float:
    """Replace the worker pool with a new one; seconds until it gives its first verdict."""
    if grading._POOL is not None:
        grading._POOL.close()
        grading._POOL = None
    with Timer() as t:
        grading.is_equivalent("1", "1.0")  # not the fast path: a worker has to answer
        pool = grading._pool()
        while len(pool._live) < pool.size:  # every worker up, so none starts during the timed run
            time.sleep(0.05)
    return t.seconds


def run_sequential(calls, timeout):
    return [grading.grade(g, s, timeout=timeout) for _, g, s in calls]


def run_grade_many(calls, timeout):
    return grading.grade_many([g for _, g, _ in calls], [s for _, _, s in calls], timeout=timeout)


def run_threads(calls, timeout, threads=8):
    results = [None] * len(calls)

    def work(k):
        for i in range(k, len(calls), threads):
            results[i] = grading.grade(calls[i][1], calls[i][2], timeout=timeout)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def main():
    args = parse_args(__doc__, 0, k=False, calls=1000, timeout=5.0)
    calls = ordinary_calls(args.calls)
    fast = sum(grading._precheck(g, grading.extract_answer(s)) == "correct" for _, g, s in calls)
    print(f"{len(calls)} distinct calls: {dict(Counter(k for k, _, _ in calls))}")
    print(f"in-process shortcut (identical answers): {fast}; judged by a worker process: {len(calls) - fast}")
    print(f"worker pool: {grading._default_pool_size()} processes ({grading._parallel_workers()} judging at once "
          f"in grade_many, one spare) on {os.cpu_count()} cores, "
          f"hard limit {args.timeout:g} s per call")
    over = False
    verdicts = None
    for name, run in (("grade() x N, one thread", run_sequential), ("grade_many(N)", run_grade_many),
                      ("grade() x N, 8 threads", run_threads)):
        start_s = fresh_pool()
        with Timer() as t:
            grades = run(calls, args.timeout)
        statuses = Counter(g.status for g in grades)
        if verdicts is not None and [g.status for g in grades] != verdicts:
            print(f"  WARNING: {name} gave other verdicts than the first run")
        verdicts = [g.status for g in grades]
        ok = t.seconds <= TARGET_S
        over |= not ok
        print(f"{name:28s} {t.seconds:6.2f} s  {len(calls) / t.seconds:7.0f} calls/s  "
              f"(pool start {start_s:.2f} s)  {dict(statuses)}  {'ok' if ok else 'OVER TARGET'}")
    start_s = fresh_pool()
    extracted = [grading.extract_answer(s) for _, _, s in calls]
    with Timer() as t:
        grading._judge_pairs([g for _, g, _ in calls], extracted, args.timeout,
                             workers=grading._parallel_workers(), fast_path=False)
    print(f"{'(all N by workers, no shortcut)':28s} {t.seconds:6.2f} s  {len(calls) / t.seconds:7.0f} calls/s  "
          f"(pool start {start_s:.2f} s)  informative: the worst case, not the target")
    by_kind = Counter((k, st) for (k, _, _), st in zip(calls, verdicts))
    for kind in dict.fromkeys(k for k, _, _ in calls):
        print(f"  {kind:28s} " + ", ".join(f"{st} {n}" for (k, st), n in sorted(by_kind.items()) if k == kind))
    print(f"target: {TARGET_S:g} s per {len(calls)} calls -> {'FAIL' if over else 'PASS'}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
