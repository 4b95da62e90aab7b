"""`trim run | sweep | calibrate | baselines | metrics`: routing experiments from the shell, on the testbed.

Every path and number is checked before a model is loaded, so a typo costs a second, not a model load;
errors a user can cause are `CommandError`s, which the `trim` command prints as one line."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from trim.policies import POLICIES

SPLITS = ("train", "validation", "test", "shifted")
MODEL_ROLES = ("weak", "strong", "prm")


class CommandError(ValueError):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=SPLITS, default="test", help="testbed split to solve (default: test)")
    p.add_argument("--problems", type=positive_int, default=None, help="solve only the first N problems of the split")
    p.add_argument("--seed", type=int, default=0, help="the run's sampling seed (same seed, same traces)")
    p.add_argument("--max-steps", type=positive_int, default=30, help="stop a solution after this many steps")
    p.add_argument("--max-tokens", type=positive_int, default=4096,
                   help="stop a solution after this many decoded tokens")
    p.add_argument("--models", default=None,
                   help="folder with weak/, strong/ and prm/ model directories (default: the shipped testbed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def check_models(folder: str | None) -> Path:
    from trim.testbed import DATA_DIR

    path = Path(folder).expanduser() if folder else DATA_DIR
    missing = [role for role in MODEL_ROLES if not (path / role / "config.json").is_file()]
    if missing:
        raise CommandError(f"--models {path}: no model director{'y' if len(missing) == 1 else 'ies'} "
                           f"{', '.join(str(path / m) for m in missing)} (each needs a config.json); "
                           "pass a folder laid out like data/testbed/")
    return path


def check_out_dir(path: Path) -> Path:
    """A folder the run can write its traces into, created now; refused before any model loads."""
    if path.exists() and not path.is_dir():
        raise CommandError(f"--out {path} is a file; pass a directory for the traces")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise CommandError(f"--out {path} cannot be written ({error.strerror or error}); "
                           "pass a writable directory") from None
    return path


def _harness(args, trace_dir: Path, split: str | None = None):
    from trim import testbed
    from trim.engine import RunSettings
    from trim.experiment import Harness

    models = check_models(args.models)
    split = split or args.split
    problems = testbed.Splits()[split][: args.problems]
    if not problems:
        raise CommandError(f"split {split!r} gave no problems to solve")
    trace_dir = check_out_dir(trace_dir)
    # The run seed varies the samples; the generators keep seed 0 so that seed s reproduces `--seed s`.
    tb = testbed.load(data_dir=models)
    run = RunSettings(seed=args.seed, max_steps=args.max_steps, max_tokens=args.max_tokens)
    progress = False if args.quiet else None
    return Harness(tb.weak, tb.strong, tb.prm, run, trace_dir=trace_dir, progress=progress), problems


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(frame.to_string())


def cmd_run(args) -> int:
    from trim.metrics import summarize
    from trim.policies import make_policy

    spec = POLICIES[args.policy]
    policy = make_policy(args.policy, getattr(args, spec.knob) if spec.knob else None, seed=args.seed)
    out = Path(args.out or f"runs/{args.split}")
    harness, problems = _harness(args, out)
    records = harness.run(problems, policy)
    print(json.dumps({"policy": policy.name, **summarize(records), "traces": str(harness.trace_path(policy))},
                     indent=2))
    return 0


def cmd_sweep(args) -> int:
    from trim.metrics import frontier_table, pgr
    from trim.policies import RSD
    from trim.sweep import random_matched, threshold_grid

    out = Path(args.out or f"runs/{args.split}")
    harness, problems = _harness(args, out)
    ends, _, _ = harness.endpoints(problems)
    table = harness.sweep(problems, threshold_grid(args.points))
    rsd = harness.sweep(problems, [RSD()])
    random = random_matched(harness, problems, table, runs=args.random_matched, seed=args.seed)
    table["PGR"] = [pgr(a, ends) for a in table["accuracy"]]
    _print(table[["policy", "k", "accuracy", "strong_tokens", "weak_tokens", "discarded_tokens",
                  "regenerated_share", "PGR"]])
    print()
    _print(pd.concat([rsd, random])[["policy", "accuracy", "strong_tokens", "regenerated_share"]])
    print()
    curves = {"TRIM-Thr (k swept)": table, "RSD (k = 0.7)": rsd, "random regeneration (matched rate)": random}
    _print(frontier_table(curves, ends))
    _plot_curves(curves, ends, out / "sweep.png", f"testbed {args.split} split")
    table.to_csv(out / "sweep.csv", index=False)
    print(f"\nplot: {out / 'sweep.png'}   table: {out / 'sweep.csv'}")
    print(harness.cache_report())
    return 0


def cmd_calibrate(args) -> int:
    from trim.metrics import summarize
    from trim.policies import Threshold
    from trim.sweep import calibrate_threshold

    out = Path(args.out or "runs")
    harness, calibration = _harness(args, out / args.calibration_split, split=args.calibration_split)
    result = calibrate_threshold(harness, calibration, args.target_share, points=args.points)
    test_harness, problems = _harness(args, out / args.split)
    ends, _, _ = test_harness.endpoints(problems)
    reached = summarize(test_harness.run(problems, Threshold(result["k"])))
    print(json.dumps({"k": result["k"], "target_share": args.target_share,
                      f"share_on_{args.calibration_split}": result["calibration_share"],
                      f"share_on_{args.split}": reached["strong_tokens"] / ends.strong_cost,
                      f"accuracy_on_{args.split}": reached["accuracy"]}, indent=2))
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
    splits = testbed.Splits()
    train = splits["train"][: args.train_problems]
    validation = splits["validation"][: args.validation_problems]
    thr = harness.sweep(problems, threshold_grid(args.points))
    rsd = harness.sweep(problems, [RSD()])
    table, curves = compare(harness, train, validation, problems, {"TRIM-Thr": thr, "RSD": rsd})
    ends, weak, strong = harness.endpoints(problems)
    _print(table)
    query = table.drop(index=["TRIM-Thr", "RSD", "random"], errors="ignore")
    best = query["dIBC"].idxmax()
    ratio = table.loc["TRIM-Thr", "dIBC"] / query.loc[best, "dIBC"]
    print(f"\nweak-only {weak['accuracy']:.3f}, strong-only {strong['accuracy']:.3f} "
          f"at {ends.strong_cost:.1f} strong tokens/query")
    print(f"dIBC(TRIM-Thr) / dIBC(best query-level: {best}) = {table.loc['TRIM-Thr', 'dIBC']:.2f} / "
          f"{query.loc[best, 'dIBC']:.2f} = {ratio:.1f} (paper, MATH-500: 4.75 / 0.95 = 5.0)")
    table.to_csv(out / "baselines.csv")
    _plot_curves({"TRIM-Thr": thr, "RSD": rsd, **curves}, ends, out / "baselines.png", f"testbed {args.split} split")
    print(f"table: {out / 'baselines.csv'}   plot: {out / 'baselines.png'}")
    return 0


def _read_run(path: str) -> list[dict]:
    from trim.traces import read_traces

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{path}: {'is a directory' if file.is_dir() else 'no such file'}; "
                           "pass JSONL trace files written by `trim run`")
    records = read_traces(file)
    if not records:
        raise CommandError(f"{path} holds no traces")
    if not all(isinstance(r, dict) and "settings" in r and "problem_id" in r for r in records):
        raise CommandError(f"{path} is not a trace file (records need problem_id and settings); "
                           "pass JSONL files written by `trim run`")
    return records


def cmd_metrics(args) -> int:
    from trim.metrics import Endpoints, frontier_table, summarize

    runs = {}
    for path in args.traces:
        records = _read_run(path)
        runs[records[0]["settings"]["policy"]] = (records[0]["settings"]["policy_class"], summarize(records))
    classes = {cls for cls, _ in runs.values()}
    if not {"WeakOnly", "StrongOnly"} <= classes:
        raise CommandError("metrics need the weak-only and strong-only traces among the files (run them with "
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
    p.add_argument("--policy", choices=list(POLICIES), default="thr",
                   help="; ".join(f"{name}: {spec.help}" for name, spec in POLICIES.items()))
    for knob, default in {spec.knob: spec.default for spec in POLICIES.values() if spec.knob}.items():
        users = ", ".join(name for name, spec in POLICIES.items() if spec.knob == knob)
        p.add_argument(f"--{knob}", type=fraction, default=default,
                       help=f"value in [0, 1] for policy {users} (default {default})")
    p.add_argument("--out", default=None, help="trace directory (default: runs/<split>); reruns resume")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="sweep TRIM-Thr's threshold: one table and an accuracy-vs-strong-tokens plot")
    _common(p)
    p.add_argument("--points", type=positive_int, default=21, help="thresholds evenly spaced on [0, 1] (default 21)")
    p.add_argument("--random-matched", type=int, default=5,
                   help="random-regeneration runs at TRIM-Thr's rates (default 5)")
    p.add_argument("--out", default=None, help="directory for traces, sweep.csv and sweep.png (default: runs/<split>)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("calibrate", help="pick the threshold k that spends a target share of strong-only's tokens")
    _common(p)
    p.add_argument("--target-share", type=fraction, required=True,
                   help="strong tokens as a share of strong-only's, e.g. 0.3")
    p.add_argument("--calibration-split", choices=SPLITS, default="validation",
                   help="split to calibrate on (default: validation)")
    p.add_argument("--points", type=positive_int, default=21, help="grid of thresholds to interpolate (default 21)")
    p.add_argument("--out", default=None, help="trace directory (default: runs)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("baselines", help="query-level routers (RouteLLM, AutoMix) beside TRIM-Thr: table and plot")
    _common(p)
    p.add_argument("--train-problems", type=positive_int, default=2000,
                   help="training problems for the routers' labels")
    p.add_argument("--validation-problems", type=positive_int, default=500, help="validation problems for tuning")
    p.add_argument("--points", type=positive_int, default=21, help="TRIM-Thr thresholds on [0, 1] (default 21)")
    p.add_argument("--out", default=None, help="directory for traces, baselines.csv and baselines.png")
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("metrics", help="PGR / CPT / dIBC / APGR table from trace files")
    p.add_argument("traces", nargs="+", help="JSONL trace files, including weak-only and strong-only")
    p.add_argument("--group", action="store_true", help="pool runs of the same policy class into one frontier")
    p.set_defaults(func=cmd_metrics)
