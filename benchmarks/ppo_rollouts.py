"""Rollouts for PPO: episodes per second of a stochastic policy on train problems, cold and warm.

A PPO iteration runs the current policy, which samples its decisions, over training problems. Here the
policy regenerates each step with probability 0.3 (`RandomRegeneration`, a new seed each pass, as a
changing policy draws new decisions). The first pass starts with empty caches (cold); later passes meet
the prefixes earlier passes wrote (warm): a step after a prefix already seen is never decoded again, and
on this task correct steps, whoever writes them, lead to the same prefixes. Target: at least 40 episodes
per second warm, so that a TRIM-Agg training run (about 24,000 episodes) fits in 10 minutes.

    python benchmarks/ppo_rollouts.py [--problems 2000] [--passes 3] [--rate 0.3]
"""

from _common import Timer, load, parse_args

from trim.experiment import Harness
from trim.policies import RandomRegeneration


def main():
    args = parse_args(__doc__, 2000, k=False, passes=3, rate=0.3)
    tb, problems = load(args.problems, split="train")
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    rates = []
    for seed in range(args.passes):
        before = (harness.weak.misses, harness.strong.misses, harness.prm.misses)
        with Timer() as t:
            records = harness.run(problems, RandomRegeneration(args.rate, seed=seed))
        misses = [now - then for now, then in zip((harness.weak.misses, harness.strong.misses, harness.prm.misses),
                                                  before)]
        rates.append(len(records) / t.seconds)
        print(f"pass {seed + 1} ({'cold' if seed == 0 else 'warm'}, policy seed {seed}): {len(records)} episodes in "
              f"{t.seconds:.1f} s = {rates[-1]:.1f} episodes/s; new weak steps {misses[0]}, strong {misses[1]}, "
              f"PRM calls {misses[2]}")
    with Timer() as t:
        harness.run(problems, RandomRegeneration(args.rate, seed=args.passes - 1))
    print(f"the last pass again (every step cached): {len(problems) / t.seconds:.1f} episodes/s")
    print(f"episodes per second: cold {rates[0]:.1f}, warm {rates[-1]:.1f} (target >= 40 warm)")
    print(harness.cache_report())


if __name__ == "__main__":
    main()
