"""Figures with their uncertainty: bars with 95 % CIs and n, scatters with a fit line and r.

The notebooks draw every figure through these helpers so colours, error bars and labels stay the
same everywhere: one colour per trait (:data:`TRAIT_COLOURS`), CIs as error bars, n on the bars
or in the title. Tables of estimates come from :func:`estimate_table` or :func:`ci_table`
(columns ``value, low, high, n``), the shape every bar helper reads.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"run": ["a"] * 4 + ["b"] * 4, "q": list("wxyz") * 2,
    ...                    "score": [1, 2, 3, 4, 5, 6, 7, 8]})
    >>> table = ci_table(df, "run", "score", groups="q", n_resamples=200)
    >>> list(table.columns)
    ['run', 'value', 'low', 'high', 'n']
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from personavec.io.stats import Estimate, mean_ci, mean_diff

TRAIT_COLOURS: dict[str, str] = {
    "pirate": "tab:brown",
    "enthusiastic": "tab:orange",
    "evil": "tab:red",
    "sycophantic": "tab:purple",
    "hallucinating": "tab:cyan",
    "humorous": "tab:olive",
    "impolite": "tab:pink",
    "apathetic": "tab:gray",
    "optimistic": "tab:green",
    "mistakes": "tab:blue",
}
"""One fixed colour per trait (and for the ``mistakes`` datasets), shared by every notebook."""

LEVEL_COLOURS: dict[str, str] = {"normal": "#c6dbef", "I": "#6baed6", "II": "#08519c"}
"""Dataset levels from no trait data (``normal``) to all trait data (``II``)."""

CONDITION_COLOURS: dict[str, str] = {
    "base": "tab:gray",
    "none": "tab:red",
    "post-hoc": "tab:blue",
    "preventative": "tab:green",
}
"""Mitigation conditions (notebook 03)."""

FILTER_COLOURS: dict[str, str] = {
    "unfiltered": "tab:gray",
    "projection": "tab:green",
    "judge": "tab:orange",
    "random": "tab:blue",
}
"""Data filters (notebook 04)."""

SCORER_COLOURS: dict[str, str] = {
    "projection difference": "tab:green",
    "raw projection": "tab:olive",
    "judge": "tab:orange",
}
"""Sample scorers (notebook 04)."""

_CYCLE = ["tab:blue", "tab:green", "tab:purple", "tab:olive", "tab:cyan", "tab:pink"]


def trait_colour(trait: str) -> str:
    """The trait's colour from :data:`TRAIT_COLOURS`, or a stable one from a fallback cycle."""
    if trait in TRAIT_COLOURS:
        return TRAIT_COLOURS[trait]
    return _CYCLE[sum(map(ord, trait)) % len(_CYCLE)]


def model_title(model_name: str) -> str:
    """The model's real name for titles: ``embedded`` is SmolLM2-135M-Instruct; a hub id or
    path gives its last component."""
    if model_name == "embedded":
        return "SmolLM2-135M-Instruct"
    return str(model_name).rstrip("/").rsplit("/", 1)[-1]


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.2f}"


def estimate_label(est: Estimate, name: str = "r") -> str:
    """``"r = 0.91 [0.64, 0.98], n = 9"``: an estimate for a title or legend."""
    return f"{name} = {_fmt(est.value)} [{_fmt(est.low)}, {_fmt(est.high)}], n = {est.n}"


def estimate_table(estimates: Mapping[Any, Estimate], names: Sequence[str]) -> pd.DataFrame:
    """One row per estimate, keyed by ``names`` (the parts of each mapping key, a tuple when
    there are several), with columns ``value, low, high, n, p``."""
    rows = []
    for key, est in estimates.items():
        parts = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(names, parts, strict=True)), "value": est.value, "low": est.low,
                     "high": est.high, "n": est.n, "p": est.p})  # fmt: skip
    return pd.DataFrame(rows)


def mean_cis(
    df: pd.DataFrame,
    by: str | Sequence[str],
    value: str,
    *,
    groups: str | None = None,
    seed: int = 0,
    n_resamples: int = 2000,
) -> dict[Any, Estimate]:
    """The mean of ``value`` per ``by`` group with a 95 % bootstrap CI (:func:`stats.mean_ci`,
    resampling whole ``groups``, e.g. the question, when given), keyed by the group (a tuple
    when ``by`` has several columns), in the order the groups first appear."""
    keys = [by] if isinstance(by, str) else list(by)
    out = {}
    for key, part in df.groupby(keys, sort=False):
        g = part[groups] if groups is not None else None
        est = mean_ci(part[value], g, seed=seed, n_resamples=n_resamples)
        key = key if isinstance(key, tuple) else (key,)
        out[key if len(keys) > 1 else key[0]] = est
    return out


def ci_table(
    df: pd.DataFrame,
    by: str | Sequence[str],
    value: str,
    *,
    groups: str | None = None,
    seed: int = 0,
    n_resamples: int = 2000,
) -> pd.DataFrame:
    """:func:`mean_cis` as a table: columns ``by``, ``value``, ``low``, ``high``, ``n`` (units
    resampled)."""
    keys = [by] if isinstance(by, str) else list(by)
    est = mean_cis(df, keys, value, groups=groups, seed=seed, n_resamples=n_resamples)
    return estimate_table(est, keys).drop(columns="p")


def paired_diff(
    answers: pd.DataFrame,
    trait: str,
    run_a: str,
    run_b: str,
    value: str = "trait_score",
    *,
    seed: int = 0,
    n_resamples: int = 2000,
) -> Estimate:
    """Mean ``value`` of run ``run_a`` minus run ``run_b`` on ``trait``'s judged answers
    (``finetune_study(..., answers_out=...)``), paired by (question, sample); the CI resamples
    whole questions (:func:`stats.mean_diff`, ``paired=True``)."""
    mine = answers[(answers["trait"] == trait) & answers["run"].isin([run_a, run_b])]
    wide = mine.pivot_table(index=["question", "sample"], columns="run", values=value)
    wide = wide.reindex(columns=[run_a, run_b])
    questions = wide.index.get_level_values("question")
    return mean_diff(wide[run_a], wide[run_b], paired=True, groups=questions, seed=seed,
                     n_resamples=n_resamples)  # fmt: skip


def _yerr(table: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars from ``low``/``high`` (zero where the CI is missing)."""
    lo = (table["value"] - table["low"]).to_numpy(float)
    hi = (table["high"] - table["value"]).to_numpy(float)
    return np.nan_to_num(np.vstack([lo, hi]).clip(min=0))


def ci_bars(
    ax: Any,
    table: pd.DataFrame,
    x: str,
    hue: str | None = None,
    *,
    order: Sequence[Hashable] | None = None,
    hue_order: Sequence[Hashable] | None = None,
    colours: Mapping[Hashable, str] | Sequence[str] | None = None,
    reference: Estimate | Mapping[str, float] | float | None = None,
    reference_label: str = "base model",
    ylabel: str = "",
    title: str = "",
    show_n: bool = True,
) -> Any:
    """Bars of ``table["value"]`` with 95 % CI error bars, one per ``x`` (grouped by ``hue``).

    Args:
        ax: the matplotlib axes to draw on.
        table: rows with ``x`` (and ``hue``) columns and ``value, low, high, n``.
        x: column of the bar positions; hue: column of the bars within a position (a legend
            lists every level).
        order, hue_order: the levels to draw, in order (default: as they appear).
        colours: per hue level (or per ``x`` level without hue), a mapping or a list.
        reference: a horizontal reference (the base model): a number, or an
            :class:`Estimate` or a row with ``value, low, high`` (its CI drawn as a band).
        show_n: write ``n`` above each bar.

    Returns:
        ``ax``.
    """
    order = list(order) if order is not None else list(dict.fromkeys(table[x]))
    hues = [None] if hue is None else (list(hue_order or dict.fromkeys(table[hue])))
    width = 0.8 / len(hues)
    for i, h in enumerate(hues):
        part = table if h is None else table[table[hue] == h]
        part = part.set_index(x).reindex(order)
        key_levels = order if h is None else [h] * len(order)
        if isinstance(colours, Mapping):
            colour = [colours.get(k, "tab:gray") for k in key_levels]
        elif colours is not None:
            colour = list(colours)[: len(order)] if h is None else [list(colours)[i]] * len(order)
        else:
            colour = None
        pos = np.arange(len(order)) + (i - (len(hues) - 1) / 2) * width
        ax.bar(pos, part["value"], width * 0.95, yerr=_yerr(part), capsize=3, color=colour,
               label=None if h is None else str(h), edgecolor="black", linewidth=0.4)  # fmt: skip
        for px, (_, row) in zip(pos, part.iterrows(), strict=True):
            if show_n and math.isfinite(row["value"]):
                top = row["high"] if math.isfinite(row["high"]) else row["value"]
                ax.annotate(f"n={int(row['n'])}", (px, top), ha="center", va="bottom",
                            fontsize=6, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    if reference is not None:
        if isinstance(reference, Estimate):
            ref, low, high = reference.value, reference.low, reference.high
        elif isinstance(reference, Mapping | pd.Series):
            ref, low, high = (float(reference[k]) for k in ("value", "low", "high"))
        else:
            ref, low, high = float(reference), math.nan, math.nan
        ax.axhline(ref, color="black", ls="--", lw=0.9, label=reference_label)
        if math.isfinite(low) and math.isfinite(high):
            ax.axhspan(low, high, color="black", alpha=0.08, lw=0)
    ax.set_xticks(np.arange(len(order)), [str(o) for o in order], rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=title, xlabel="")
    ax.margins(y=0.08)  # room for the n labels
    if hue is not None or reference is not None:  # outside the axes: never over a bar
        ax.legend(fontsize=7, title=hue, title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))  # fmt: skip
    return ax


def scatter_fit(
    ax: Any,
    x: Sequence[float] | pd.Series,
    y: Sequence[float] | pd.Series,
    est: Estimate,
    *,
    labels: Sequence[str] | None = None,
    colour: str = "tab:blue",
    yerr: np.ndarray | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> Any:
    """A scatter of ``y`` on ``x`` with a least-squares line and ``est`` in the title
    (``"<title>\\nr = … [CI], n = …"``); ``labels`` annotate the points, ``yerr`` (2 × n, from
    :func:`ci_errors`) adds vertical CIs. Returns ``ax``."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    ax.errorbar(xs, ys, yerr=yerr, fmt="o", color=colour, ecolor=colour, elinewidth=0.8,
                capsize=2, markersize=5, alpha=0.9)  # fmt: skip
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.sum() >= 2 and np.ptp(xs[ok]) > 0:
        slope, icpt = np.polyfit(xs[ok], ys[ok], 1)
        grid = np.linspace(xs[ok].min(), xs[ok].max(), 50)
        ax.plot(grid, slope * grid + icpt, color=colour, lw=1, ls="--", label="least-squares fit")
    for lx, ly, text in zip(xs, ys, labels or [], strict=False):
        ax.annotate(str(text), (lx, ly), fontsize=6, xytext=(3, 3), textcoords="offset points")
    head = f"{title}\n" if title else ""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=head + estimate_label(est))
    return ax


def ci_errors(table: pd.DataFrame) -> np.ndarray:
    """The 2 × n asymmetric error-bar array of a ``value, low, high`` table (for ``yerr``)."""
    return _yerr(table)


def coef_curves(
    ax: Any,
    table: pd.DataFrame,
    *,
    hue: str = "layer",
    colour: str = "tab:blue",
    highlight: Hashable | None = None,
    baseline: float = 0.0,
    baseline_label: str = "unsteered",
    ylabel: str = "",
    title: str = "",
) -> Any:
    """A steering dose-response panel: the mean ``value`` against ``coef`` with its 95 % CI as a
    band, one line per ``hue`` level (e.g. the layer), all in one ``colour`` (the trait's).

    Args:
        ax: the matplotlib axes to draw on.
        table: rows with ``coef``, ``hue`` and ``value, low, high, n`` (e.g. from
            :func:`ci_table`).
        highlight: the ``hue`` level drawn bold and marked "(selected)" in the legend; the
            other levels are thin lines with their own markers.
        baseline: the coefficient of the unsteered run, shared by every line: drawn once as a
            dashed horizontal line with its CI band and ``baseline_label``.

    Returns:
        ``ax``; the legend gives each line's n (units per point, a range where it varies).
    """
    others = iter(["s", "^", "v", "D", "P", "X"] * 4)  # markers of the other lines
    for level, part in table.groupby(hue, sort=True):
        part = part.sort_values("coef")
        lo, hi = int(part["n"].min()), int(part["n"].max())
        chosen = level == highlight
        n = f"{lo}–{hi}" if hi > lo else str(lo)
        label = f"{hue} {level}{' (selected)' if chosen else ''}, n={n}"
        ax.plot(part["coef"], part["value"], marker="o" if chosen else next(others), color=colour,
                lw=2.2 if chosen else 0.9, alpha=1.0 if chosen else 0.55, label=label)  # fmt: skip
        ax.fill_between(part["coef"], part["low"], part["high"], color=colour,
                        alpha=0.18 if chosen else 0.07, lw=0)  # fmt: skip
    base = table[table["coef"] == baseline]
    if len(base):
        row = base.iloc[0]
        ax.axhline(row["value"], color="black", ls="--", lw=0.9,
                   label=f"{baseline_label} (coef {baseline:g}), n={int(row['n'])}")  # fmt: skip
        if math.isfinite(row["low"]):
            ax.axhspan(row["low"], row["high"], color="black", alpha=0.06, lw=0)
    ax.set_xticks(sorted(table["coef"].unique()))
    ax.set(xlabel="steering coefficient", ylabel=ylabel, title=title, ylim=(0, 100))
    ax.legend(fontsize=7)
    return ax


def layer_coef_heatmap(
    ax: Any,
    table: pd.DataFrame,
    *,
    cmap: str = "Reds",
    label: str = "",
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 100.0,
) -> Any:
    """A layer × coefficient heatmap of ``table["value"]`` (rows with ``layer``, ``coef``),
    each cell annotated, with a colourbar labelled ``label``. Returns ``ax``."""
    grid = table.pivot_table(index="layer", columns="coef", values="value", dropna=False)
    im = ax.imshow(grid.to_numpy(float), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for (r, c), v in np.ndenumerate(grid.to_numpy(float)):
        if math.isfinite(v):
            dark = (v - vmin) / (vmax - vmin) > 0.6
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set(xlabel="steering coefficient", ylabel="layer", title=title)
    ax.figure.colorbar(im, ax=ax, label=label)
    return ax


def mitigation_bars(
    ax: Any,
    table: pd.DataFrame,
    *,
    colour: str = "tab:blue",
    measures: Sequence[str] = ("trait score", "coherence"),
    reference: str = "none",
    mark: str = "ablate",
    collapse: float = 25.0,
    ylabel: str = "score (0-100)",
    title: str = "",
) -> Any:
    """Trait score beside coherence for each mitigation ``condition`` (bars with 95 % CIs and n),
    the trait in ``colour`` and coherence in grey. The ``mark`` condition is shaded and labelled
    with its coherence next to the ``reference`` condition's; "coherence collapses" is added when
    it lies ``collapse`` points or more below it.

    Args:
        table: rows with ``condition``, ``measure`` (the levels in ``measures``) and
            ``value, low, high, n``.

    Returns:
        ``ax``.
    """
    order = list(dict.fromkeys(table["condition"]))
    ci_bars(ax, table, "condition", "measure", order=order, hue_order=list(measures),
            colours=[colour, "0.7"], ylabel=ylabel, title=title)  # fmt: skip
    coh = table[table["measure"] == measures[-1]].set_index("condition")["value"]
    if mark in order and reference in coh.index:
        x, ref, val = order.index(mark), coh[reference], coh[mark]
        ax.axvspan(x - 0.45, x + 0.45, color="tab:red", alpha=0.08, lw=0)
        text = f"{measures[-1]} {ref:.0f} → {val:.0f}"
        if ref - val >= collapse:
            text += f"\n{measures[-1]} collapses"
        ax.annotate(text, (x, 104), ha="center", va="bottom", fontsize=7, color="tab:red")
    ax.set_ylim(0, 125)
    return ax


def mitigation_sweep(
    ax: Any, table: pd.DataFrame, runs: Mapping[str, str], *, ylabel: str = "", title: str = ""
) -> Any:
    """One line per mitigation (``post-hoc <c>``/``preventative <c>`` conditions of ``table``)
    against |coefficient|, both starting at ``none`` (|c| = 0); ``base`` is a dashed line with its
    CI band. ``table``: ``condition, value, low, high, n`` rows; ``runs``: condition -> run."""
    rows = table.set_index("condition")
    if "base" in rows.index:
        base = rows.loc["base"]
        ax.axhline(base["value"], color=CONDITION_COLOURS["base"], ls="--", lw=1, label="base")
        ax.axhspan(base["low"], base["high"], color=CONDITION_COLOURS["base"], alpha=0.12, lw=0)
    for kind in ("post-hoc", "preventative"):
        conds = ["none", *(c for c in runs if c.startswith(kind + " "))]
        part = rows.loc[[c for c in conds if c in rows.index]].reset_index()
        x = [0.0 if c == "none" else abs(float(c.split()[-1])) for c in part["condition"]]
        ax.errorbar(x, part["value"], yerr=_yerr(part), marker="o", capsize=3,
                    color=CONDITION_COLOURS[kind], label=kind)  # fmt: skip
    ax.set(xlabel="|coefficient| (0: finetuned, no steering)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return ax
