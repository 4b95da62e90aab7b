"""The book's recurring figures: accuracy against strong tokens, a PRM's quality at a glance, and accuracy at
a budget (a static figure, and an ipywidgets explorer)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from trim.metrics import Endpoints

LINE_STYLES = ("-", (0, (5, 2)), (0, (3, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "D", "^", "v", "P")


def accuracy_cost(curves: Mapping[str, pd.DataFrame], ends: Endpoints, ax=None, title: str | None = None,
                  highlight: tuple[str, ...] = ("TRIM", "RSD")):
    """Accuracy against strong tokens per query, one line per policy family, with both endpoints.

    Each table needs columns `strong_tokens` and `accuracy`; families whose names start with one of
    `highlight` are drawn bold; empty tables are left out. The dashed line is the cost-blind mix of
    weak-only and strong-only."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for index, (name, table) in enumerate(curves.items()):
        if table.empty:
            continue
        ordered = table.sort_values("strong_tokens")
        bold = name.startswith(highlight)
        # Colour and line style both change from one family to the next, so that two curves that run on top
        # of each other (a router and its variant) stay told apart.
        style = dict(color=f"C{index % 10}", lw=2.4 if bold else 1.3, label=name)
        if len(ordered) > 3:
            ax.plot(ordered["strong_tokens"], ordered["accuracy"], ls=LINE_STYLES[index % len(LINE_STYLES)],
                    **style)
        else:
            ax.plot(ordered["strong_tokens"], ordered["accuracy"], MARKERS[index % len(MARKERS)], ls="none",
                    ms=6, **style)
    ax.plot([0, ends.strong_cost], [ends.weak_accuracy, ends.strong_accuracy], "k--", lw=1,
            label="weak-only to strong-only")
    ax.plot([0, ends.strong_cost], [ends.weak_accuracy, ends.strong_accuracy], "ks", ms=5)
    ax.set_xlabel("strong tokens per query")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.figure.tight_layout()
    return ax


def prm_quality(steps: pd.DataFrame, label: str = "on_track"):
    """Three panels for a table of PRM scores (`score`) and exact labels (`label`): the ROC of flagging
    wrong steps, a reliability diagram, and the score histograms of right and wrong steps."""
    import matplotlib.pyplot as plt

    from trim.prm_quality import auroc, reliability, roc_points

    scores, labels = steps["score"].to_numpy(float), steps[label].to_numpy(bool)
    good, bad = {"on_track": ("on track", "gone wrong")}.get(label, ("correct", "wrong"))
    # Two rows, so that the figure stays legible in a book's text column.
    fig = plt.figure(figsize=(8.5, 6.6))
    grid = fig.add_gridspec(2, 2)
    roc_ax, rel_ax, hist_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    roc = roc_points(scores, labels)
    roc_ax.plot(roc["fpr"], roc["tpr"], lw=2)
    roc_ax.plot([0, 1], [0, 1], "k:", lw=1)
    roc_ax.set(xlabel="right steps flagged (FPR)", ylabel="wrong steps flagged (TPR)",
               title=f"ROC, AUROC {auroc(scores, labels):.3f}")
    rel = reliability(scores, labels)
    rel_ax.plot([0, 1], [0, 1], "k:", lw=1)
    rel_ax.plot(rel["mean_score"], rel["correct_share"], "o-")
    rel_ax.set(xlabel="mean PRM score in bin", ylabel=f"share of steps {good}", title="calibration",
               xlim=(0, 1), ylim=(0, 1))
    bins = np.linspace(0, 1, 21)
    hist_ax.hist(scores[labels], bins=bins, alpha=0.6, label=good)
    hist_ax.hist(scores[~labels], bins=bins, alpha=0.6, label=bad)
    hist_ax.set(xlabel="PRM score", ylabel="steps", title="score histograms", yscale="log")
    hist_ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# Corners of the belief triangle over (S0, S1, S2): S0 bottom left, S2 bottom right, S1 on top.
SIMPLEX_CORNERS = np.array([[0.0, 0.0], [0.5, np.sqrt(3) / 2], [1.0, 0.0]])


def belief_simplex(beliefs: np.ndarray, values: np.ndarray, ax=None, title: str | None = None, **contour):
    """A function of the belief over (S0, S1, S2) drawn on the triangle: filled contours of `values` at
    `beliefs` (N, 3), each corner labelled with its state. Extra keywords go to `tricontourf`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.6))
    xy = np.asarray(beliefs) @ SIMPLEX_CORNERS
    image = ax.tricontourf(xy[:, 0], xy[:, 1], values, **contour)
    ax.plot(*np.vstack([SIMPLEX_CORNERS, SIMPLEX_CORNERS[:1]]).T, color="black", lw=0.8)
    offsets = ((-0.06, -0.07), (-0.03, 0.03), (0.0, -0.07))
    for (x, y), state, offset in zip(SIMPLEX_CORNERS, ("S0", "S1", "S2"), offsets):
        ax.annotate(state, (x + offset[0], y + offset[1]), fontsize=9)
    ax.set(aspect="equal", xlim=(-0.1, 1.1), ylim=(-0.12, 0.95), xticks=[], yticks=[])
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return image


def accuracy_at_budgets(points: pd.DataFrame, budgets, families=None, ax=None, title: str | None = None):
    """Each family's best accuracy at each strong-token budget (a share of strong-only's tokens), from its
    frontier: the static face of `budget_explorer`. `points` is a curves table (`trim.comparison`)."""
    import matplotlib.pyplot as plt

    from trim.comparison import accuracy_at, endpoints_of

    ends = endpoints_of(points)
    table = pd.DataFrame({share: accuracy_at(points, share * ends.strong_cost, families) for share in budgets})
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for index, (name, row) in enumerate(table.iterrows()):
        ax.plot(100 * np.asarray(budgets), row.to_numpy(), marker=MARKERS[index % len(MARKERS)],
                ls=LINE_STYLES[index % len(LINE_STYLES)], color=f"C{index % 10}", label=name, lw=1.5)
    ax.axhline(ends.strong_accuracy, color="k", lw=0.8, ls=":", label="strong-only")
    ax.axhline(ends.weak_accuracy, color="grey", lw=0.8, ls=":", label="weak-only")
    ax.set_xlabel("budget: strong tokens per query, % of strong-only's")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.figure.tight_layout()
    return ax


def budget_explorer(splits: Mapping[str, pd.DataFrame] | pd.DataFrame, families=None):
    """An ipywidgets explorer: pick a budget (and a split) and see each policy's accuracy as bars.

    `splits` is one split's points table (`trim.comparison`) or a mapping from split name to one. In a live
    kernel (Jupyter, Colab) it returns the widget; without ipywidgets it raises ImportError, and the built
    book shows `accuracy_at_budgets` instead (a static page cannot run a slider)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from trim.comparison import accuracy_at, endpoints_of, family_names

    splits = {"": splits} if isinstance(splits, pd.DataFrame) else dict(splits)
    # One colour per family, whatever the budget: a bar keeps its colour as the ranking changes.
    names = list(dict.fromkeys(f for data in splits.values() for f in family_names(data, families)))
    colour = {name: f"C{i % 10}" for i, name in enumerate(names)}

    def show(split: str, share: float):
        data = splits[split]
        ends = endpoints_of(data)
        accuracy = accuracy_at(data, share / 100 * ends.strong_cost, families).sort_values()
        _, ax = plt.subplots(figsize=(7, 0.32 * len(accuracy) + 1.2))
        ax.barh(accuracy.index, accuracy.to_numpy(), color=[colour[name] for name in accuracy.index])
        ax.axvline(ends.strong_accuracy, color="k", lw=0.8, ls=":")
        ax.axvline(ends.weak_accuracy, color="grey", lw=0.8, ls=":")
        ax.set_xlim(ends.weak_accuracy - 0.05, max(ends.strong_accuracy, accuracy.max()) + 0.03)
        ax.set_xlabel(f"accuracy at {share:.0f}% of strong-only's tokens ({share / 100 * ends.strong_cost:.0f} per "
                      "query); dotted: weak-only, strong-only")
        plt.show()

    return widgets.interactive(show, split=widgets.Dropdown(options=list(splits), description="split"),
                               share=widgets.FloatSlider(value=20, min=2, max=100, step=1, description="budget %",
                                                         continuous_update=False))
