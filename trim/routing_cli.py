"""`trim run | sweep | calibrate | metrics`: routing experiments from the shell, on the testbed by default."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

SPLITS = ("train", "validation", "test", "shifted")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=SPLITS, default="test", help="testbed split to solve (default: test)")
    p.add_argument("--problems", type=_positive, default=None, help="solve only the first N problems of the split")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same traces)")
    p.add_argument("--max-steps", type=_positive, default=30, help="stop a solution after this many steps")
    p.add_argument("--max-tokens", type=_positive, default=4096, help="stop a solution after this many decoded tokens")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _harness(args, trace_dir):
    from trim import testbed
    from trim.engine import RunSettings
    from trim.sweep import Harness

    tb = testbed.load(seed=args.seed)
    problems = tb.splits[args.split][: args.problems]
    run = RunSettings(seed=args.seed, max_steps=args.max_steps, max_tokens=args.max_tokens)
    return Harness(tb.weak, tb.strong, tb.prm, run, trace_dir=trace_dir, progress=False if args.quiet else None), problems


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(frame.to_string())


def cmd_run(args) -> int:
    from trim.metrics import summarize
    from trim.policies import make_policy

    value = args.k if args.policy == "thr" else args.rate
    policy = make_policy(args.policy, value, seed=args.seed)
    out = Path(args.out or f"runs/{args.split}")
    harness, problems = _harness(args, out)
    records = harness.run(problems, policy)
    print(json.dumps({"policy": policy.name, **summarize(records), "traces": str(out)}, indent=2))
    return 0


def cmd_sweep(args) -> int:
    from trim.metrics import frontier_table, pgr
    from trim.policies import RSD
    from trim.sweep import random_matched, threshold_grid

    out = Path(args.out or f"runs/{args.split}")
    harness, problems = _harness(args, out)
    ends, weak, strong = harness.endpoints(problems)
    table = harness.sweep(problems, threshold_grid(args.points))
    rsd = harness.sweep(problems, [RSD()])
    random = random_matched(harness, problems, table, runs=args.random_matched, seed=args.seed)
    table["PGR"] = [pgr(a, ends) for a in table["accuracy"]]
    _print(table[["policy", "k", "accuracy", "strong_tokens", "weak_tokens", "discarded_tokens", "regenerated_share", "PGR"]])
    print()
    _print(pd.concat([rsd, random])[["policy", "accuracy", "strong_tokens", "regenerated_share"]])
    print()
    _print(frontier_table({"TRIM-Thr": table, "RSD (k=0.7)": rsd, "random (matched rate)": random}, ends))
    curves = {"TRIM-Thr (k swept)": table, "RSD (k = 0.7)": rsd, "random regeneration (matched rate)": random}
    _plot_curves(curves, ends, out / "sweep.png", f"testbed {args.split} split")
    table.to_csv(out / "sweep.csv", index=False)
    print(f"\nplot: {out / 'sweep.png'}   table: {out / 'sweep.csv'}")
    print(f"cache: weak {harness.weak.hits} hits / {harness.weak.misses} misses, strong {harness.strong.hits} / "
          f"{harness.strong.misses}, PRM {harness.prm.hits} / {harness.prm.misses}")
    return 0


def cmd_calibrate(args) -> int:
    from trim.metrics import summarize
    from trim.policies import Threshold
    from trim.sweep import calibrate_threshold

    out = Path(args.out or "runs")
    split, args.split = args.split, args.calibration_split
    harness, calibration = _harness(args, out / args.calibration_split)
    result = calibrate_threshold(harness, calibration, args.target_share, points=args.points)
    args.split = split
    test_harness, problems = _harness(args, out / split)
    ends, _, _ = test_harness.endpoints(problems)
    reached = summarize(test_harness.run(problems, Threshold(result["k"])))
    print(json.dumps({"k": result["k"], "target_share": args.target_share,
                      f"share_on_{args.calibration_split}": result["calibration_share"],
                      f"share_on_{split}": reached["strong_tokens"] / ends.strong_cost,
                      f"accuracy_on_{split}": reached["accuracy"]}, indent=2))
    return 0


def _plot_curves(curves: dict, ends, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from trim.plots import accuracy_cost

    accuracy_cost(curves, ends, title=title).figure.savefig(path, dpi=120)


def cmd_baselines(args) -> int:
    from trim import testbed
    from trim.baselines import compare
    from trim.policies import RSD
    from trim.sweep import threshold_grid

    out = Path(args.out or f"runs/{args.split}")
    harness, problems = _harness(args, out)
    tb_splits = testbed.Splits()
    train = tb_splits["train"][: args.train_problems]
    validation = tb_splits["validation"][: args.validation_problems]
    thr = harness.sweep(problems, threshold_grid(args.points))
    rsd = harness.sweep(problems, [RSD()])
    table, curves = compare(harness, train, validation, problems, {"TRIM-Thr": thr, "RSD": rsd})
    ends, weak, strong = harness.endpoints(problems)
    _print(table)
    query = table.drop(index=["TRIM-Thr", "RSD", "random"], errors="ignore")
    best = query["dIBC"].idxmax()
    print(f"\nweak-only {weak['accuracy']:.3f}, strong-only {strong['accuracy']:.3f} at {ends.strong_cost:.1f} strong tokens/query")
    print(f"dIBC(TRIM-Thr) / dIBC(best query-level: {best}) = {table.loc['TRIM-Thr', 'dIBC']:.2f} / "
          f"{query.loc[best, 'dIBC']:.2f} = {table.loc['TRIM-Thr', 'dIBC'] / query.loc[best, 'dIBC']:.1f} "
          "(paper, MATH-500: 4.75 / 0.95 = 5.0)")
    table.to_csv(out / "baselines.csv")
    _plot_curves({"TRIM-Thr": thr, "RSD": rsd, **curves}, ends, out / "baselines.png", f"testbed {args.split} split")
    print(f"table: {out / 'baselines.csv'}   plot: {out / 'baselines.png'}")
    return 0


def cmd_metrics(args) -> int:
    from trim.metrics import Endpoints, frontier_table, summarize
    from trim.traces import read_traces

    runs = {}
    for path in args.traces:
        records = read_traces(path)
        if not records:
            raise ValueError(f"{path} holds no traces")
        runs[records[0]["settings"]["policy"]] = (records[0]["settings"]["policy_class"], summarize(records))
    classes = {cls for cls, _ in runs.values()}
    if not {"WeakOnly", "StrongOnly"} <= classes:
        raise ValueError("metrics need the weak-only and strong-only traces among the files (run them with "
                         "`trim run --policy weak-only` and `--policy strong-only`)")
    weak = next(s for c, s in runs.values() if c == "WeakOnly")
    strong = next(s for c, s in runs.values() if c == "StrongOnly")
    ends = Endpoints(weak["accuracy"], strong["accuracy"], strong["strong_tokens"])
    families: dict[str, list] = {}
    for name, (cls, s) in runs.items():
        if cls not in ("WeakOnly", "StrongOnly"):
            families.setdefault(args.group and cls or name, []).append((s["strong_tokens"], s["accuracy"]))
    _print(pd.DataFrame({n: s for n, (_, s) in runs.items()}).T)
    print()
    _print(frontier_table(families, ends))
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run one policy over a testbed split, writing traces (JSONL)")
    _common(p)
    p.add_argument("--policy", choices=["weak-only", "strong-only", "thr", "rsd", "random"], default="thr",
                   help="routing policy (default: thr)")
    p.add_argument("--k", type=_fraction, default=0.5, help="TRIM-Thr threshold in [0, 1] (default 0.5)")
    p.add_argument("--rate", type=_fraction, default=0.2, help="regeneration rate of the random policy")
    p.add_argument("--out", default=None, help="trace directory (default: runs/<split>); reruns resume")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="sweep TRIM-Thr's threshold: one table and an accuracy-vs-strong-tokens plot")
    _common(p)
    p.add_argument("--points", type=_positive, default=21, help="thresholds evenly spaced on [0, 1] (default 21)")
    p.add_argument("--random-matched", type=int, default=5, help="random-regeneration runs at TRIM-Thr's rates (default 5)")
    p.add_argument("--out", default=None, help="directory for traces, sweep.csv and sweep.png (default: runs/<split>)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("calibrate", help="pick the threshold k that spends a target share of strong-only's tokens")
    _common(p)
    p.add_argument("--target-share", type=_fraction, required=True, help="strong tokens as a share of strong-only's, e.g. 0.3")
    p.add_argument("--calibration-split", choices=SPLITS, default="validation", help="split to calibrate on (default: validation)")
    p.add_argument("--points", type=_positive, default=21, help="grid of thresholds to interpolate (default 21)")
    p.add_argument("--out", default=None, help="trace directory (default: runs)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("baselines", help="query-level routers (RouteLLM, AutoMix) beside TRIM-Thr: table and plot")
    _common(p)
    p.add_argument("--train-problems", type=_positive, default=2000, help="training problems for the routers' labels")
    p.add_argument("--validation-problems", type=_positive, default=500, help="validation problems for tuning")
    p.add_argument("--points", type=_positive, default=21, help="TRIM-Thr thresholds on [0, 1] (default 21)")
    p.add_argument("--out", default=None, help="directory for traces, baselines.csv and baselines.png")
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("metrics", help="PGR / CPT / dIBC / APGR table from trace files")
    p.add_argument("traces", nargs="+", help="JSONL trace files, including weak-only and strong-only")
    p.add_argument("--group", action="store_true", help="pool runs of the same policy class into one frontier")
    p.set_defaults(func=cmd_metrics)
