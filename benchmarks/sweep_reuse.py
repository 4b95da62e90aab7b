"""What a 21-point TRIM-Thr sweep costs relative to one run, with the shared generation/PRM caches.

    python benchmarks/sweep_reuse.py [--problems 200] [--points 21]
"""


from _common import Timer, cold, load, parse_args

from trim.engine import run_policy
from trim.experiment import Harness
from trim.policies import Threshold
from trim.sweep import threshold_grid


def main():
    args = parse_args(__doc__, 200, k=False, points=21)
    tb, problems = load(args.problems)
    with Timer() as one:
        single = run_policy(problems, Threshold(0.5), tb.weak, tb.strong, tb.prm)
    single_tokens = sum(r["weak_tokens"] + r["strong_tokens"] for r in single)
    cold(tb)  # the sweep starts as cold as the run did
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    with Timer() as sweep:
        table = harness.sweep(problems, threshold_grid(args.points))
    decoded = harness.weak.decoded_tokens + harness.strong.decoded_tokens
    uncached = float((table["weak_tokens"] + table["strong_tokens"]).sum() * len(problems))
    print(f"one TRIM-Thr run: {one.seconds:.1f} s, {single_tokens} tokens decoded")
    print(f"{args.points}-point sweep with shared caches: {sweep.seconds:.1f} s, {decoded} tokens decoded "
          f"(without the cache: {uncached:.0f} tokens)")
    print(f"sweep cost / one run: {sweep.seconds / one.seconds:.2f}x wall time, "
          f"{decoded / single_tokens:.2f}x decoded tokens (vs {args.points}x without reuse)")
    print(harness.cache_report())


if __name__ == "__main__":
    main()
