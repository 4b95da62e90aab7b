"""`trim run | sweep | calibrate | metrics`: routing experiments from the shell, on the testbed (the comparisons,
`trim baselines | transfer | prm-noise`, are in `trim.comparison_cli` and share these options and checks).

Every path and number is checked before a model is loaded, so a typo costs a second, not a model load;
errors a user can cause are `CommandError`s, which the `trim` command prints as one line."""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from trim.policies import POLICIES
from trim.presets import PRESETS
from trim.testbed.oracle import KNOWING_PRMS
from trim.traces import runs_dir

SPLITS = ("train", "validation", "test", "shifted")
MODEL_ROLES = ("weak", "strong", "prm")


class CommandError(ValueError):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (and where to find the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def share(text: str) -> float:
    """A share of strong-only's tokens: above 0 (no budget is weak-only, which needs no calibration), at most 1."""
    value = fraction(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be above 0 (a share of strong-only's tokens), got {text}; "
                                         "a budget of 0 is weak-only: `trim run --policy weak-only`")
    return value


def _integer(minimum: int, what: str):
    """An argparse type for integers of at least `minimum`, named `what` in its error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


positive_int = _integer(1, "a positive integer")
count = _integer(0, "an integer >= 0")  # a count that may be zero


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=SPLITS, default="test", help="testbed split to solve (default: test)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="draw the testbed's splits with this seed (default 0, the shipped splits; another seed gives "
                        "fresh problems, e.g. to re-measure the shipped policies)")
    p.add_argument("--problems", type=positive_int, default=None, help="solve only the first N problems of the split")
    p.add_argument("--seed", type=int, default=0, help="the run's sampling seed (same seed, same traces)")
    p.add_argument("--max-steps", type=positive_int, default=30, help="stop a solution after this many steps")
    p.add_argument("--max-tokens", type=positive_int, default=4096,
                   help="stop a solution after this many decoded tokens")
    p.add_argument("--models", default=None,
                   help="folder with weak/, strong/ and prm/ model directories (default: the shipped testbed)")
    p.add_argument("--preset", choices=list(PRESETS), default="testbed",
                   help="model trio (default: testbed, on the CPU); the others need a GPU and vLLM, see chapter 7")
    p.add_argument("--dataset", default=None,
                   help="solve this benchmark's test split (e.g. math500) instead of a testbed split; real-model "
                        "presets only")
    p.add_argument("--testbed-prm", choices=["model", *KNOWING_PRMS], default="model",
                   help="testbed only: the trained PRM (default), the oracle, or an oracle that reports each step's "
                        "hidden state with the real PRM's per-state noise (trim.testbed.oracle)")
    p.add_argument("--policies", default=None,
                   help="folder of trained policies for --policy agg/seq and baselines (default: those trained "
                        "under the same --testbed-prm: data/policies, or data/policies/real-noise)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def policies_root(args) -> Path:
    """The trained policies a command reads: --policies, or those trained under the command's PRM."""
    from trim.policies.learned import policy_root

    if args.policies is None:
        return policy_root(args.testbed_prm)
    root = Path(args.policies).expanduser()
    if not root.is_dir():
        raise CommandError(f"--policies {args.policies}: no such folder; train policies into it with "
                           "`trim train-policy --out FOLDER`, or drop --policies for the shipped ones")
    return root


def pomdp_options(args) -> dict:
    """TRIM-POMDP's model for a command: the testbed's dynamics (or the release's Qwen pair on a real-model
    preset) and the observation model of the PRM the command scores with, unless --obs-model says."""
    real = args.testbed_prm == "real-noise" or args.preset != "testbed"
    return {"obs_model": args.obs_model or ("real" if real else "testbed"), "belief": getattr(args, "belief", "filter"),
            "dynamics": "testbed" if args.preset == "testbed" else "real"}


def _add_pomdp_options(p: argparse.ArgumentParser, belief: bool = True) -> None:
    p.add_argument("--obs-model", default=None,
                   help="TRIM-POMDP's observation model: testbed (the testbed PRM's), real (Qwen2.5-Math-PRM-7B's, "
                        "from the official release), or a model file (data/pomdp/README.md); default: the one "
                        "matching --testbed-prm / --preset")
    if not belief:   # a command that runs both beliefs
        return
    p.add_argument("--belief", choices=["filter", "release"], default="filter",
                   help="TRIM-POMDP's belief: a Bayes filter over the steps (default) or the release's one-shot "
                        "likelihood with its 0.4 gate")


def check_models(folder: str | None) -> Path:
    from trim.testbed import DATA_DIR

    path = Path(folder).expanduser() if folder else DATA_DIR
    missing = [role for role in MODEL_ROLES if not (path / role / "config.json").is_file()]
    if missing:
        raise CommandError(f"--models {path}: no model director{'y' if len(missing) == 1 else 'ies'} "
                           f"{', '.join(str(path / m) for m in missing)} (each needs a config.json); "
                           "pass a folder laid out like data/testbed/")
    unweighted = [role for role in MODEL_ROLES
                  if not any((path / role).glob("*.safetensors")) and not any((path / role).glob("*.bin"))]
    if unweighted:
        raise CommandError(f"--models {path}: no weights (*.safetensors) in "
                           f"{', '.join(str(path / m) for m in unweighted)}; pass a folder laid out like data/testbed/")
    return path


PROBE_BYTES = 1 << 16  # written and synced into --out before any model loads: a full disk shows up now


def _probe(folder: Path) -> None:
    with tempfile.TemporaryFile(dir=folder) as fh:
        fh.write(b"\0" * PROBE_BYTES)
        fh.flush()
        os.fsync(fh.fileno())


def check_out_dir(path: Path, option: str = "--out") -> Path:
    """A folder the run can write its traces into, created now; refused before any model loads."""
    if path.exists() and not path.is_dir():
        raise CommandError(f"{option} {path} is a file; pass a directory for the traces")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as error:
        raise CommandError(f"{option} {path} cannot be written ({error.strerror or error}); "
                           "pass a writable directory with free space") from None
    return path


def check_out_file(path: Path, option: str = "--out") -> Path:
    """A file the command can write at its end; refused before any model loads."""
    if path.is_dir():
        raise CommandError(f"{option} {path} is a directory; pass a file name")
    if not path.parent.is_dir():
        raise CommandError(f"{option} {path}: the folder {path.parent} does not exist; create it or pass another path")
    try:
        _probe(path.parent)
        if path.exists():
            with path.open("ab"):
                pass
    except OSError as error:
        raise CommandError(f"{option} {path} cannot be written ({error.strerror or error}); "
                           "pass a writable path with free space") from None
    return path


def check_trace(path: Path, expected: dict, problem_ids=None) -> None:
    """Before any model loads: the trace a run will append to can be opened, is not being written by
    another run, holds only sound records of this run's problems (`traces.scan`), and was written with the
    same problems and policy (the fields known without the models)."""
    from trim.traces import TraceError, check_problem_ids, describe_difference, scan

    if path.is_dir():
        raise CommandError(f"{path} is a directory, but the run writes its trace there; move it away")
    if not path.exists():
        return
    try:
        with path.open("rb+") as fh:
            try:
                import fcntl
            except ImportError:
                fcntl = None
            if fcntl is not None:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise CommandError(f"{path} is being written by another process (it holds the file's lock); "
                                       "wait for that run to finish, or pass another --out") from None
            lines = scan(path, fh.read())   # a partial last line is left for the run to repair
    except OSError as error:
        raise CommandError(f"{path} cannot be opened for appending ({error.strerror or error})") from None
    except TraceError as error:
        raise CommandError(str(error)) from None
    for number, _, _, record in lines[:1]:
        there = {key: record["settings"].get(key) for key in expected}
        if there != expected:
            raise CommandError(f"{path}:{number} was written with other settings: "
                               f"{describe_difference(there, expected, 'the file', 'this run')}; "
                               "pass another --out, or delete the file to start over")
    if problem_ids is not None:
        try:
            check_problem_ids(path, lines, problem_ids)
        except TraceError as error:
            raise CommandError(str(error)) from None


def _problems(args, split: str | None = None) -> list:
    from trim import testbed

    if args.dataset:
        from trim.data import load_dataset

        if args.preset == "testbed":
            raise CommandError(f"--dataset {args.dataset}: the testbed models solve only their own task; pick a "
                               "real-model --preset (e.g. colab-t4), or drop --dataset")
        problems = load_dataset(args.dataset, "test")[: args.problems]
    else:
        split = split or args.split
        problems = testbed.Splits(args.split_seed)[split][: args.problems]
    if not problems:
        raise CommandError(f"{args.dataset or split!r} gave no problems to solve")
    return problems


def _harness(args, trace_dir: Path, split: str | None = None, before_load=None):
    from trim import testbed
    from trim.engine import RunSettings
    from trim.experiment import Harness

    if args.testbed_prm != "model" and args.preset != "testbed":
        raise CommandError(f"--testbed-prm {args.testbed_prm} knows the testbed's task only; drop it, or use "
                           "--preset testbed")
    if args.models and args.preset != "testbed":
        raise CommandError(f"--models replaces the testbed's folder; it cannot be combined with --preset {args.preset}")
    models = check_models(args.models) if args.preset == "testbed" else None
    problems = _problems(args, split)
    trace_dir = check_out_dir(trace_dir)
    if before_load is not None:
        before_load(trace_dir, problems)
    # The run seed varies the samples; the generators keep seed 0 so that seed s reproduces `--seed s`.
    if args.preset == "testbed":
        tb = testbed.load(data_dir=models, split_seed=args.split_seed)
        weak, strong, prm = tb.weak, tb.strong, tb.prm
        if args.testbed_prm != "model":  # it must know every problem a command scores, routers' training included
            prm = KNOWING_PRMS[args.testbed_prm]([p for split in SPLITS for p in tb.splits[split]])
    else:
        from trim import presets

        weak, strong, prm = presets.load(args.preset)
    run = RunSettings(seed=args.seed, max_steps=args.max_steps, max_tokens=args.max_tokens)
    progress = False if args.quiet else None
    return Harness(weak, strong, prm, run, trace_dir=trace_dir, progress=progress), problems


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(frame.to_string())


def cmd_run(args) -> int:
    from trim.engine import problem_set
    from trim.experiment import trace_name
    from trim.metrics import summarize
    from trim.policies import make_policy

    spec = POLICIES[args.policy]
    policy = make_policy(args.policy, getattr(args, spec.knob) if spec.knob else None, seed=args.seed,
                         root=policies_root(args), **pomdp_options(args))
    out = Path(args.out) if args.out else runs_dir(args.split)

    def before_load(trace_dir: Path, problems: list) -> None:
        check_trace(trace_dir / trace_name(policy), {
            "policy": policy.name, "policy_class": type(policy).__name__, "policy_params": policy.params(),
            "seed": args.seed, "max_steps": args.max_steps, "max_tokens": args.max_tokens,
            "problems": problem_set(problems)}, {p.id for p in problems})

    harness, problems = _harness(args, out, before_load=before_load)
    records = harness.run(problems, policy)
    print(json.dumps({"policy": policy.name, **summarize(records), "traces": str(harness.trace_path(policy))},
                     indent=2))
    return 0


def cmd_sweep(args) -> int:
    from trim.metrics import frontier_table, pgr
    from trim.policies import RSD
    from trim.sweep import random_matched, threshold_grid

    out = Path(args.out) if args.out else runs_dir(args.split)
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

    out = Path(args.out) if args.out else runs_dir()
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


def _read_run(path: str) -> list[dict]:
    """One run's records, checked: every record summarizable, one setting, one record per problem, complete."""
    from trim.traces import NOT_A_RECORD, describe_difference, read_lines, record_fault

    file = Path(path)
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "is not a regular file" if file.exists() else "no such file"
        raise CommandError(f"{path}: {what}; pass JSONL trace files written by `trim run`")
    try:
        lines = read_lines(file)
    except OSError as error:
        raise CommandError(f"{path} cannot be read ({error.strerror or error})") from None
    if not lines:
        raise CommandError(f"{path} holds no traces")
    for number, record in lines:
        fault = record_fault(record)
        if fault is None:
            continue
        if fault == NOT_A_RECORD:
            raise CommandError(f"{path} is not a trace file (line {number} has no problem_id and settings); "
                               "pass JSONL files written by `trim run`")
        raise CommandError(f"{path}:{number} {fault}; is it a trace written by `trim run`?")
    first_number, first = lines[0]
    for number, record in lines[1:]:
        if record["settings"] != first["settings"]:
            difference = describe_difference(first["settings"], record["settings"], f"line {first_number}",
                                             f"line {number}")
            raise CommandError(f"{path}:{number} was written with other settings than line {first_number}: "
                               f"{difference}; a trace file holds one run")
    where = collections.defaultdict(list)
    for number, record in lines:
        where[record["problem_id"]].append(number)
    repeated = {pid: numbers for pid, numbers in where.items() if len(numbers) > 1}
    if repeated:
        pid, numbers = next(iter(repeated.items()))
        more = f", and {len(repeated) - 1} more repeated problem(s)" if len(repeated) > 1 else ""
        raise CommandError(f"{path} holds problem {pid!r} {len(numbers)} times (lines "
                           f"{', '.join(map(str, numbers[:4]))}){more}; a trace holds one record per problem: "
                           "was it written by two runs at once, or joined?")
    problems = first["settings"].get("problems")
    if isinstance(problems, dict) and isinstance(problems.get("count"), int) and problems["count"] != len(lines):
        raise CommandError(f"{path} holds {len(lines)} of the {problems['count']} problems its run was started on; "
                           "finish the run (rerun the same command) first")
    return [record for _, record in lines]


POLICY_FIELDS = ("policy", "policy_class", "policy_params")   # what may differ between runs compared


def _check_same_setup(files: dict[str, list[dict]]) -> None:
    """Every run over the same problems, with the same models, sampling, seed and limits."""
    from trim.traces import describe_difference

    (base_path, base), *others = files.items()
    base_ids = {r["problem_id"] for r in base}
    for path, records in others:
        ids = {r["problem_id"] for r in records}
        if ids != base_ids:
            only_a, only_b = sorted(map(str, base_ids - ids)), sorted(map(str, ids - base_ids))
            detail = "; ".join(f"{len(only)} only in {p} (e.g. {', '.join(only[:3])})"
                               for only, p in ((only_a, base_path), (only_b, path)) if only)
            raise CommandError(f"{base_path} and {path} cover different problems ({len(base_ids)} and {len(ids)} "
                               f"problems; {detail}); run every policy, the weak-only and strong-only endpoints "
                               "included, on the same problems")
    setup = {k: v for k, v in base[0]["settings"].items() if k not in POLICY_FIELDS}
    for path, records in others:
        other = {k: v for k, v in records[0]["settings"].items() if k not in POLICY_FIELDS}
        if other != setup:
            raise CommandError(f"{base_path} and {path} were run with different settings: "
                               f"{describe_difference(setup, other, base_path, path, limit=3)}; metrics compare "
                               "runs of one setup (same models, sampling, seed, limits and problems)")


def cmd_metrics(args) -> int:
    from trim.metrics import Endpoints, frontier_table, summarize

    runs, files = {}, {}
    for path in args.traces:
        records = _read_run(path)
        name = records[0]["settings"]["policy"]
        if name in runs:
            same = os.path.realpath(runs[name][0]) == os.path.realpath(path)
            raise CommandError(f"{path} is passed twice; pass each trace file once" if same else
                               f"{runs[name][0]} and {path} are both runs of {name}; pass one run per policy")
        files[path] = records
        runs[name] = (path, records[0]["settings"]["policy_class"], summarize(records))
    _check_same_setup(files)
    classes = {cls for _, cls, _ in runs.values()}
    if not {"WeakOnly", "StrongOnly"} <= classes:
        raise CommandError("metrics need the weak-only and strong-only traces among the files (run them with "
                           "`trim run --policy weak-only` and `--policy strong-only`)")
    weak = next(s for _, c, s in runs.values() if c == "WeakOnly")
    strong = next(s for _, c, s in runs.values() if c == "StrongOnly")
    ends = Endpoints(weak["accuracy"], strong["accuracy"], strong["strong_tokens"])
    families: dict[str, list] = {}
    for name, (_, cls, s) in runs.items():
        if cls not in ("WeakOnly", "StrongOnly"):
            families.setdefault(args.group and cls or name, []).append((s["strong_tokens"], s["accuracy"]))
    _print(pd.DataFrame({n: s for n, (_, _, s) in runs.items()}).T)
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
    _add_pomdp_options(p)
    p.add_argument("--out", default=None, help="trace directory (default: runs/<split>, under $TRIM_RUNS_DIR if set); "
                   "reruns resume")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="sweep TRIM-Thr's threshold: one table and an accuracy-vs-strong-tokens plot")
    _common(p)
    p.add_argument("--points", type=positive_int, default=21, help="thresholds evenly spaced on [0, 1] (default 21)")
    p.add_argument("--random-matched", type=count, default=5,
                   help="random-regeneration runs at TRIM-Thr's rates (default 5)")
    p.add_argument("--out", default=None, help="directory for traces, sweep.csv and sweep.png "
                   "(default: runs/<split>, under $TRIM_RUNS_DIR if set)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("calibrate", help="pick the threshold k that spends a target share of strong-only's tokens")
    _common(p)
    p.add_argument("--target-share", type=share, required=True,
                   help="strong tokens as a share of strong-only's, e.g. 0.3")
    p.add_argument("--calibration-split", choices=SPLITS, default="validation",
                   help="split to calibrate on (default: validation)")
    p.add_argument("--points", type=positive_int, default=21, help="grid of thresholds to interpolate (default 21)")
    p.add_argument("--out", default=None, help="trace directory (default: runs)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("metrics", help="PGR / CPT / dIBC / APGR table from trace files")
    p.add_argument("traces", nargs="+", help="JSONL trace files, including weak-only and strong-only")
    p.add_argument("--group", action="store_true", help="pool runs of the same policy class into one frontier")
    p.set_defaults(func=cmd_metrics)
