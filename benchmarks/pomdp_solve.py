"""How long TRIM-POMDP takes to solve one lambda (issue: at most 10 s on a 2-core machine).

    python benchmarks/pomdp_solve.py

Solves the shipped testbed model from scratch (no cache) for each belief rule's observation model: the
release's joint (lowest earlier score, r_t) cells and the filter's r_t cells, at the policy's grid."""

import time

from trim.pomdp.model import shipped
from trim.pomdp.solver import SimplexGrid, solve_finite

if __name__ == "__main__":
    model = shipped("testbed")
    for observation in ("score", "joint"):
        for resolution in (20, 40):
            grid = SimplexGrid(3, resolution)
            start = time.perf_counter()
            solve_finite(grid, model.stages(0.004, observation))
            seconds = time.perf_counter() - start
            print(f"{observation:5s} observations, grid {resolution:2d} ({len(grid)} beliefs), "
                  f"{model.max_steps} steps: {seconds:5.2f} s  ({seconds / 10:.0%} of the 10 s target)")
