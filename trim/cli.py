"""The `trim` command. Each subcommand lives in the module it drives and registers itself here."""

from __future__ import annotations

import argparse
import sys

from trim import __version__


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="list the benchmark sets and how many problems load from the data folder")
    p.add_argument("--data-dir", default=None, help="folder laid out like ../shared/data (default: $TRIM_DATA_DIR)")

    def run(args):
        from trim.data import DATASETS, load_dataset, splits_of

        for name in DATASETS:
            for split in splits_of(name):
                problems = load_dataset(name, split, data_dir=args.data_dir, source="local")
                print(f"{name:16s} {split:6s} {len(problems):5d}")

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
    report = tsub.add_parser("report", help="measure the weak/strong models and the PRM on the test split")
    report.add_argument("--problems", type=int, default=1000, help="test problems to measure (default 1000)")
    report.add_argument("--seed", type=int, default=0, help="sampling seed")
    report.add_argument("--out", default=None, help="also write the tables as JSON to this file")

    def run(args):
        from trim.testbed.report import main as report_main

        return report_main(args)

    report.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trim", description="Targeted step-level routing (TRIM): run, sweep and measure routing policies.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from trim import routing_cli

    routing_cli.register(sub)
    for add in (_add_data, _add_grade, _add_testbed):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError) as error:
        print(f"trim {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
