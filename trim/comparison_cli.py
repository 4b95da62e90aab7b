"""`trim baselines | transfer | prm-noise`: every router and policy compared, on one split or carried to
another (`trim.comparison`), and the step-level policies under a noisier PRM.

The shared options, checks and the harness come from `trim.routing_cli`, so a flag means the same here."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from trim.routing_cli import (
    SPLITS,
    CommandError,
    _add_pomdp_options,
    _common,
    _harness,
    _integer,
    _plot_curves,
    _print,
    _problems,
    check_out_dir,
    fraction,
    policies_root,
    pomdp_options,
    positive_int,
    runs_dir,
)

# The query-level routers fit classifiers and densities on labelled problems: below these, their fits fail.
router_train_problems = _integer(20, "at least 20 (the routers' classifiers and densities need that many)")
router_validation_problems = _integer(10, "at least 10 (the routers tune their thresholds on them)")

PAPER_RATIOS = {"TRIM-Thr": "4.75 / 0.95 = 5.0", "TRIM-Agg": "5.67 / 0.95 = 6.0", "TRIM-POMDP": "5.86 / 0.95 = 6.2"}


def pomdp_model(args):
    """The routing POMDP model a command plans with (`pomdp_options`): what these commands solve."""
    from trim.pomdp.model import routing_model

    options = pomdp_options(args)
    return routing_model(options["obs_model"], options["dynamics"])


def _comparison(args, harness, problems: list, ks: dict | None = None):
    """`compare_all` of `problems` through `harness`, the routers fit on the testbed's train/validation."""
    from trim import testbed
    from trim.comparison import compare_all
    from trim.policies.learned import KINDS, shipped_lambdas

    model, root = pomdp_model(args), policies_root(args)
    splits = testbed.Splits(args.split_seed)
    train = splits["train"][: args.train_problems]
    validation = splits["validation"][: args.validation_problems]
    if not any(shipped_lambdas(kind, root) for kind in KINDS):
        print(f"no TRIM-Agg or TRIM-Seq policies under {root} (trained under this --testbed-prm): "
              "they are left out; train them with `trim train-policy`, or pass --policies", file=sys.stderr)
    return compare_all(harness, problems, train, validation, model, root, args.points, ks)


def _testbed_only(args, command: str) -> None:
    if args.dataset or args.preset != "testbed":
        raise CommandError(f"{command} fits the query-level routers on the testbed's train and validation splits: "
                           "drop --dataset and --preset")


def _ratios(table: pd.DataFrame) -> None:
    from trim.baselines import best_query_router

    best = best_query_router(table)
    for family in ("TRIM-Thr", "TRIM-Agg", "TRIM-Seq", "TRIM-POMDP"):
        if family in table.index:
            print(f"dIBC({family}) / dIBC(best query-level: {best}) = {table.loc[family, 'dIBC']:.2f} / "
                  f"{table.loc[best, 'dIBC']:.2f} = {table.loc[family, 'dIBC'] / table.loc[best, 'dIBC']:.1f} "
                  f"(paper, MATH-500: {PAPER_RATIOS.get(family, 'not reported')})")
    print("(the paper's dIBC averages over its own frontier, so compare the ratios, not the dIBC values)")


def cmd_baselines(args) -> int:
    _testbed_only(args, "baselines")
    out = Path(args.out) if args.out else runs_dir(args.split)
    harness, problems = _harness(args, out)
    result = _comparison(args, harness, problems)
    _print(result.table)
    print(f"\nweak-only {result.ends.weak_accuracy:.3f}, strong-only {result.ends.strong_accuracy:.3f} "
          f"at {result.ends.strong_cost:.1f} strong tokens/query")
    _ratios(result.table)
    result.table.to_csv(out / "baselines.csv")
    result.points.to_csv(out / "curves.csv", index=False)   # every point of every curve, with its knob
    families = {name: frame for name, frame in result.points.groupby("family", sort=False)
                if name not in ("weak-only", "strong-only")}
    _plot_curves(families, result.ends, out / "baselines.png", f"testbed {args.split} split")
    print(f"table: {out / 'baselines.csv'}   points: {out / 'curves.csv'}   plot: {out / 'baselines.png'}")
    return 0


def cmd_transfer(args) -> int:
    """The comparison on each of --splits, every knob fit on train/validation: does routing transfer?"""
    from trim import testbed
    from trim.comparison import calibrated_thresholds

    _testbed_only(args, "transfer")
    out = Path(args.out) if args.out else runs_dir("transfer")
    # One load of the models and one cache for every split: the routers' labels (weak-only and strong-only
    # on train and validation) are decoded once; each split's traces go to a folder of its own.
    harness, _ = _harness(args, out / "validation", split="validation")
    splits = testbed.Splits(args.split_seed)
    ks = calibrated_thresholds(harness, splits["validation"][: args.validation_problems], points=args.points)
    print("TRIM-Thr calibrated on validation: " + ", ".join(f"{share:.0%} -> k = {k:.3f}" for share, k in ks.items()))
    tables, points, calibration = [], [], []
    for split in args.splits:
        result = _comparison(args, harness.with_prm(None, check_out_dir(out / split)), _problems(args, split), ks)
        tables.append(result.table.assign(split=split).reset_index().set_index(["split", "policy"]))
        points.append(result.points.assign(split=split))
        calibrated = result.points[result.points["family"] == "TRIM-Thr (k calibrated on validation)"]
        calibration.append(pd.DataFrame({"split": split, "target_share": calibrated["target_share"],
                                         "k": calibrated["k"],
                                         "reached_share": calibrated["strong_tokens"] / result.ends.strong_cost,
                                         "accuracy": calibrated["accuracy"]}))
        print(f"\n== {split}: weak-only {result.ends.weak_accuracy:.3f}, strong-only {result.ends.strong_accuracy:.3f}"
              f" at {result.ends.strong_cost:.1f} strong tokens/query")
        _print(result.table)
        _ratios(result.table)
    table, curve_points, shares = pd.concat(tables), pd.concat(points, ignore_index=True), pd.concat(calibration)
    print("\nbudget calibration: the share of strong-only's tokens each calibrated k reaches")
    _print(shares.set_index(["split", "target_share"]))
    table.to_csv(out / "transfer.csv")
    curve_points.to_csv(out / "transfer_curves.csv", index=False)
    shares.to_csv(out / "calibration_transfer.csv", index=False)
    print(f"tables: {out / 'transfer.csv'}, {out / 'calibration_transfer.csv'}   points: {out / 'transfer_curves.csv'}")
    return 0


def cmd_prm_noise(args) -> int:
    from trim import testbed
    from trim.sweep import prm_noise_sweeps
    from trim.testbed import evaluate

    if args.preset != "testbed" or args.testbed_prm != "model":
        raise CommandError("prm-noise blends noise into the testbed PRM's scores and refits on labelled testbed "
                           "steps: drop --preset and --testbed-prm")
    out = Path(args.out) if args.out else runs_dir(args.split, "prm-noise")
    model, root = pomdp_model(args), policies_root(args)
    harness, problems = _harness(args, out)
    # Labelled solutions of the harness's own weak model, for the POMDP's refit observation model.
    train = testbed.Splits(args.split_seed)["train"][: args.sample_problems]
    samples = evaluate.sample_solutions(harness.weak.generator, train, seed=args.seed)
    table = prm_noise_sweeps(harness, problems, args.strengths, model, samples, root, seed=args.seed)
    _print(table)
    table.to_csv(out / "prm_noise.csv")
    print(f"table: {out / 'prm_noise.csv'}")
    return 0


def _router_options(p) -> None:
    p.add_argument("--train-problems", type=router_train_problems, default=2000,
                   help="training problems for the routers' labels")
    p.add_argument("--validation-problems", type=router_validation_problems, default=500,
                   help="validation problems for tuning (and for TRIM-Thr's budget calibration)")
    p.add_argument("--points", type=positive_int, default=21, help="TRIM-Thr thresholds on [0, 1] (default 21)")
    _add_pomdp_options(p, belief=False)


def register(sub) -> None:
    p = sub.add_parser("baselines", help="every policy family on one split: query-level routers (RouteLLM, AutoMix), "
                       "TRIM-Thr (swept and calibrated), RSD, the confidence router, TRIM-Agg/Seq, TRIM-POMDP and "
                       "the oracle router: table, points and plot")
    _common(p)
    _router_options(p)
    p.add_argument("--out", default=None, help="directory for traces, baselines.csv, curves.csv and baselines.png")
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("transfer", help="the baselines comparison on several splits (default test and shifted), "
                       "every router and knob fit on train/validation, and where TRIM-Thr's calibrated budgets land")
    _common(p)
    _router_options(p)
    p.add_argument("--splits", nargs="+", choices=[s for s in SPLITS if s not in ("train", "validation")],
                   default=["test", "shifted"], help="splits to evaluate on (default: test shifted)")
    p.add_argument("--out", default=None, help="directory for traces, transfer.csv, transfer_curves.csv and "
                   "calibration_transfer.csv (default: runs/transfer)")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("prm-noise", help="TRIM-Thr, TRIM-Agg and TRIM-POMDP as the PRM's scores are blended with "
                                         "uniform noise (the POMDP's observation model refit at each strength)")
    _common(p)
    p.add_argument("--strengths", nargs="+", type=fraction, default=[0.0, 0.25, 0.5, 0.75],
                   help="noise strengths in [0, 1]: r' = (1 - s) r + s u (default 0 0.25 0.5 0.75)")
    p.add_argument("--sample-problems", type=positive_int, default=300,
                   help="train problems whose labelled weak solutions refit the POMDP's observation model")
    _add_pomdp_options(p, belief=False)
    p.add_argument("--out", default=None, help="directory for traces and prm_noise.csv")
    p.set_defaults(func=cmd_prm_noise)
