"""Training one lambda, from cold caches: wall time of a full TRIM-Agg or TRIM-Seq training on this machine.

The shipped policies (data/policies/) were trained with `python -m trim.ppo`, every lambda in one process,
where later trainings meet the steps earlier ones decoded. This script trains one policy alone, as a user
training a new lambda would, into a scratch folder, with the shipped settings. Target: at most 10 minutes
per lambda on a 2-core machine.

    python benchmarks/train_time.py [--kind agg] [--lam 0.004] [--batches 100] [--problems 200]
"""

import tempfile

from _common import Timer, parse_args

from trim import testbed
from trim.experiment import Harness
from trim.policies.learned import KINDS
from trim.ppo import EngineEnvironment, PPOConfig, train


def main():
    args = parse_args(__doc__, 200, k=False, kind="agg", lam=0.004, batches=PPOConfig.batches)
    tb = testbed.load(seed=0)
    harness = Harness(tb.weak, tb.strong, tb.prm, progress=False)
    config = PPOConfig(lam=args.lam, batches=args.batches)
    environment = EngineEnvironment(harness, tb.splits["train"], tb.splits["validation"][: args.problems], config)
    with tempfile.TemporaryDirectory() as out, Timer() as t:
        record = train(KINDS[args.kind].new(args.lam), environment, config, out=out, progress=False)
    chosen = record["chosen"]
    print(f"{args.kind} lambda={args.lam}: {config.batches} batches of {config.batch_problems} problems, validation "
          f"on {args.problems} every {config.validate_every}: {t.seconds:.0f} s = {t.seconds / 60:.1f} min "
          f"(target <= 10 min); chosen at batch {chosen['batch']}, validation accuracy {chosen['accuracy']:.3f}, "
          f"strong tokens {chosen['strong_tokens']:.1f}")
    print(harness.cache_report())


if __name__ == "__main__":
    main()
