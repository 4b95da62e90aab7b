"""Wall time of every cell of every CPU chapter, against the per-cell limit of the book build.

Executes each chapter as `make book` does (nbclient, the book's kernel, from the repository root) and
prints its slowest cells, its total, and how many times the slowest cell fits in `_config.yml`'s
`execute.timeout`. Targets: no cell over 60 s, and a limit at least 5x the slowest cell.

    python benchmarks/cell_times.py [book/04_trim_thr.ipynb ...] [--write]

With `--write` the executed notebooks are saved in place (how the chapters' stored outputs are made).
"""

import argparse
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").is_file()]


def cell_times(path: Path, limit: int, write: bool = False) -> list[tuple[int, float, str]]:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=limit, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    times = []
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code" or "skip-execution" in cell.metadata.get("tags", []):
                continue
            start = time.perf_counter()
            client.execute_cell(cell, index)
            first_line = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
            times.append((index, time.perf_counter() - start, first_line))
    if write:
        nbformat.write(notebook, path)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapters to time (default: every chapter)")
    parser.add_argument("--write", action="store_true", help="save the executed notebooks in place")
    args = parser.parse_args()
    limit = int(yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]["timeout"])
    slowest_overall = 0.0
    for path in args.notebooks or chapters():
        times = cell_times(path, limit, args.write)
        slowest = max(times, key=lambda t: t[1])
        slowest_overall = max(slowest_overall, slowest[1])
        print(f"{path.name}: {sum(t for _, t, _ in times):.1f} s in {len(times)} cells; slowest: "
              + ", ".join(f"[{i}] {t:.1f} s ({src})" for i, t, src in sorted(times, key=lambda t: -t[1])[:3]))
    print(f"slowest cell {slowest_overall:.1f} s (target <= 60 s); per-cell limit {limit} s = "
          f"{limit / slowest_overall:.1f}x the slowest (target >= 5x)")


if __name__ == "__main__":
    main()
