"""Lockstep batching against one problem at a time: the same TRIM-Thr run, two schedules. Target >= 6x (issue 14).

    python benchmarks/lockstep_speedup.py [--problems 256] [--k 0.5]
"""


from _common import Timer, cold, load, parse_args

from trim.engine import run_policy
from trim.policies import Threshold


def main():
    args = parse_args(__doc__, 256)
    tb, problems = load(args.problems)
    policy = Threshold(args.k)
    with Timer() as batched:
        lockstep = run_policy(problems, policy, tb.weak, tb.strong, tb.prm)
    cold(tb)
    with Timer() as serial:
        one_by_one = [run_policy([p], policy, tb.weak, tb.strong, tb.prm)[0] for p in problems]
    # Same texts and routing decisions (PRM scores agree to ~1e-7, float noise of the padding).
    route = lambda r: [(s["text"], s["model"]) for s in r["steps"]]  # noqa: E731
    same = sum(route(a) == route(b) for a, b in zip(lockstep, one_by_one))
    print(f"{len(problems)} problems, TRIM-Thr(k={args.k}): lockstep {batched.seconds:.1f} s, "
          f"one at a time {serial.seconds:.1f} s")
    print(f"identical traces: {same}/{len(problems)} (seeds are per prefix, so batching does not change results)")
    print(f"lockstep speed-up: {serial.seconds / batched.seconds:.1f}x (target >= 6x)")


if __name__ == "__main__":
    main()
