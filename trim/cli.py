"""The `trim` command. Each subcommand lives in the module it drives and registers itself here."""

from __future__ import annotations

import argparse
import sys

from trim import __version__, comparison_cli, routing_cli


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="list the benchmark sets, where each is found and how many problems load")
    p.add_argument("--data-dir", default=None,
                   help="look only in this folder (<name>/<split>.jsonl); default: $TRIM_DATA_DIR, "
                        "then the sets shipped in data/benchmarks")

    def run(args):  # local files only, never the hub
        from pathlib import Path

        from trim import data

        if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
            raise routing_cli.CommandError(f"--data-dir {args.data_dir}: no such folder; pass a folder laid out "
                                           "<name>/<split>.jsonl, or drop the option for the shipped sets")

        rows = [(name, split, data.locate(name, split, args.data_dir),
                 lambda n=name, s=split: data.load_dataset(n, s, data_dir=args.data_dir, source="local"))
                for name in data.DATASETS for split in data.splits_of(name)]
        rows += [("processbench", split, data.locate_processbench(split, args.data_dir),
                  lambda s=split: data.load_processbench(s, data_dir=args.data_dir))
                 for split in data.PROCESSBENCH_SPLITS]
        print(f"{'set':16s} {'split':13s} {'rows':>5s}  found in")
        for name, split, found, load in rows:
            if found is not None:
                print(f"{name:16s} {split:13s} {len(load()):5d}  {found[0]:14s} {found[1]}")
                continue
            if args.data_dir is not None:
                why = f"not in --data-dir {args.data_dir}"
            elif name in data.NOT_SHIPPED:
                why = (f"not available (set {data.ENV_VAR} to a folder holding it, or load it from "
                       f"the hub; not shipped, for licence reasons)")
            else:
                why = (f"not available (the shipped copy is missing; set {data.ENV_VAR} to a folder "
                       f"holding it)")
            print(f"{name:16s} {split:13s} {'-':>5s}  {why}")

    p.set_defaults(func=run)


def _add_grade(sub) -> None:
    p = sub.add_parser("grade", help="judge a predicted answer or solution against a gold answer")
    p.add_argument("gold", help="the gold answer, e.g. '\\frac{1}{2}'")
    p.add_argument("prediction", help="a predicted answer or a whole solution ending in \\boxed{...}")

    def run(args):
        from trim.grading import grade

        result = grade(args.gold, args.prediction)
        print(f"{result.status}: extracted {result.extracted!r}")
        return 0 if result.correct else 1

    p.set_defaults(func=run)


def _add_testbed(sub) -> None:
    p = sub.add_parser("testbed", help="the CPU testbed: calibration report of the shipped models")
    tsub = p.add_subparsers(dest="testbed_command", required=True)
    report = tsub.add_parser("report", help="measure the weak/strong models and the PRM against the real ones")
    from trim.testbed.report import add_arguments

    add_arguments(report)

    def run(args):
        from pathlib import Path

        from trim.testbed.report import main as report_main

        routing_cli.check_models(None)
        if args.out:  # checked before the models load: the file is written at the end
            routing_cli.check_out_file(Path(args.out).expanduser())
        return report_main(args)

    report.set_defaults(func=run)


def _add_train_policy(sub) -> None:
    from trim.policies import POLICIES

    p = sub.add_parser("train-policy", help="train TRIM-Agg / TRIM-Seq with PPO on the testbed, one policy per lambda "
                                            "(resumable: a rerun continues an unfinished training)")
    p.add_argument("--kind", nargs="+", required=True, choices=[n for n, s in POLICIES.items() if s.knob == "lam"],
                   help="agg (TRIM-Agg) and/or seq (TRIM-Seq)")
    p.add_argument("--lam", nargs="+", required=True, type=routing_cli.fraction,
                   help="prices of one strong token in right answers (lambda), one policy each, e.g. 0.002 0.008")
    p.add_argument("--out", default=None,
                   help="root folder: each policy goes to <out>/<kind>/lambda-<lam> (default: the shipped "
                        "data/policies, or data/policies/<name> with --testbed-prm <name>)")
    p.add_argument("--batches", type=routing_cli.positive_int, default=100, help="PPO updates (default 100)")
    p.add_argument("--validate-every", type=routing_cli.positive_int, default=20,
                   help="batches between validations and saved states (default 20)")
    p.add_argument("--train-problems", type=routing_cli.positive_int, default=20000,
                   help="the first N of the train split (default all 20,000)")
    p.add_argument("--validation-problems", type=routing_cli.positive_int, default=200,
                   help="the first N of the validation split, for choosing the checkpoint (default 200)")
    p.add_argument("--testbed-prm", choices=["model", "real-noise", "oracle"], default="model",
                   help="train under the testbed PRM (default), or one that reports each step's hidden state with "
                        "the real PRM's noise (real-noise) or exactly (oracle)")
    p.add_argument("--warm-start", action="store_true",
                   help="start each lambda from the policy of the lambda before it in --lam (list them in "
                        "increasing order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args):
        from trim.ppo import cmd_train_policy

        return cmd_train_policy(args)

    p.set_defaults(func=run)


def _add_pomdp_model(sub) -> None:
    p = sub.add_parser("pomdp-model", help="TRIM-POMDP's model files (data/pomdp): fit one on the testbed, or "
                                           "convert the official release's real-PRM tables")
    msub = p.add_subparsers(dest="pomdp_command", required=True)
    fit = msub.add_parser("fit", help="fit transitions, hazard, step lengths and the PRM's observation model on "
                                      "labelled testbed train steps")
    fit.add_argument("--problems", type=routing_cli.positive_int, default=1000, help="train problems (default 1000)")
    fit.add_argument("--testbed-prm", choices=["model", "real-noise"], default="model",
                     help="the PRM whose scores the observation model is fit on (default: the testbed PRM)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", required=True, help="the model file to write, e.g. data/pomdp/testbed.json")
    release = msub.add_parser("release", help="the real PRM's model from a checkout of github.com/Vansh28Kapoor/TRIM")
    release.add_argument("release_dir", help="the release's folder (it holds pomdp_data/)")
    release.add_argument("--out", required=True, help="the model file to write, e.g. data/pomdp/real.json")

    def run(args):
        from pathlib import Path

        from trim.pomdp import model

        out = routing_cli.check_out_file(Path(args.out).expanduser())
        if args.pomdp_command == "release":
            if not (Path(args.release_dir) / "pomdp_data").is_dir():
                raise routing_cli.CommandError(f"{args.release_dir} has no pomdp_data/ folder; pass a checkout of "
                                               "github.com/Vansh28Kapoor/TRIM")
            fitted = model.from_release(args.release_dir)
        else:
            from trim import testbed
            from trim.testbed.oracle import KNOWING_PRMS

            tb = testbed.load()
            problems = tb.splits["train"][: args.problems]
            prm = tb.prm if args.testbed_prm == "model" else KNOWING_PRMS[args.testbed_prm](problems)
            fitted = model.fit_testbed(tb, problems, prm=prm, seed=args.seed,
                                       name="testbed" if args.testbed_prm == "model" else f"testbed-{args.testbed_prm}")
        fitted.save(out)
        print(f"{fitted.name}: p_w {fitted.p_weak:.4f}, p_s {fitted.p_strong:.4f}, {fitted.max_steps} steps -> {out}")
        return 0

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = routing_cli.Parser(
        prog="trim", description="Targeted step-level routing (TRIM): run, sweep and measure routing policies.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    routing_cli.register(sub)
    comparison_cli.register(sub)
    for add in (_add_data, _add_grade, _add_testbed, _add_train_policy, _add_pomdp_model):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        # What is already on disk, and how to go on: traces are appended per finished problem, PPO saves
        # its state every --validate-every batches; the other commands write at their end, or nothing.
        traced = {"run", "sweep", "calibrate", "baselines", "transfer", "prm-noise"}
        if args.command in traced:
            where = args.out or ("runs/transfer" if args.command == "transfer" else "runs/<split>")
            where += "" if args.out else " (under $TRIM_RUNS_DIR if set)"
            said = (f"kept every finished problem, in the trace files under {where}; run the same command again "
                    "to resume")
        elif args.command == "train-policy":
            said = ("kept each policy's PPO state (state.pt, saved every --validate-every batches); run the same "
                    "command again to resume")
        else:
            said = "nothing was written; run the command again"
        print(f"trim {args.command}: interrupted; {said}", file=sys.stderr)
        return 130
    except Exception as error:
        # CommandError, TraceError and every bad-input error of the library are ValueErrors or OSErrors; a
        # backend that broke its protocol is the engine's BackendError. Each is one line, not a traceback.
        engine = sys.modules.get("trim.engine")
        if not (isinstance(error, (OSError, ValueError))
                or (engine is not None and isinstance(error, engine.BackendError))):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"trim {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
