"""Estimates with uncertainty: every number carries n, a 95 % bootstrap CI and a p-value.

The CI resamples the unit that repeats: rows by default (``scipy.stats.bootstrap``, BCa when
n >= 10, else percentile), or whole groups when ``groups`` is given (a cluster bootstrap,
percentile; ``n`` then counts groups). The value and, without groups, the p-value come from
scipy's estimator and test; with groups the p-value is the two-sided cluster-bootstrap one.
NaN rows are dropped before counting n; with n < 3 the value is still given, CI and p are NaN.

Example:
    >>> est = pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], n_resamples=200)
    >>> est.n, round(est.value, 2)
    (5, 0.8)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ArrayLike = Sequence[float] | np.ndarray
BCA_MIN_N = 10  # below this the BCa acceleration is too noisy: percentile CIs instead
NAN = float("nan")


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    return f"{v:.2g}" if 0 < abs(v) < 0.01 else f"{v:.2f}"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % CI ``[low, high]``, sample size ``n`` (resampled units),
    p-value ``p`` (NaN if none) and ``method`` (how all of them were computed)."""

    value: float
    low: float
    high: float
    n: int
    p: float
    method: str

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        """Flat ``metrics.json`` keys: ``prefix``, ``prefix/ci_low``, ``/ci_high``, ``/n``, ``/p``."""
        return {
            prefix: self.value,
            f"{prefix}/ci_low": self.low,
            f"{prefix}/ci_high": self.high,
            f"{prefix}/n": self.n,
            f"{prefix}/p": self.p,
        }

    def __str__(self) -> str:
        p = "nan" if not math.isfinite(self.p) else f"{self.p:.2g}"
        return f"{_num(self.value)} [{_num(self.low)}, {_num(self.high)}], n = {self.n}, p = {p}"


def _r(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis`` (vectorized; NaN for a constant input)."""
    x = x - x.mean(axis, keepdims=True)
    y = y - y.mean(axis, keepdims=True)
    with np.errstate(all="ignore"):
        return (x * y).sum(axis) / np.sqrt((x * x).sum(axis) * (y * y).sum(axis))


def _rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _r(sps.rankdata(x, axis=axis), sps.rankdata(y, axis=axis), axis)


def _auc(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(pos > neg) + P(tie) / 2 from ranks (vectorized)."""
    n1, n0 = pos.shape[axis], neg.shape[axis]
    ranks = sps.rankdata(np.concatenate([pos, neg], axis=axis), axis=axis)
    u = np.take(ranks, np.arange(n1), axis=axis).sum(axis) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


def _clean(*arrays: ArrayLike, groups: ArrayLike | None = None) -> list[np.ndarray | None]:
    """``arrays`` as floats and ``groups`` as given, with every row where any array is NaN
    dropped (so n is counted after dropping); the last item is ``groups`` (or None)."""
    arrs = [np.asarray(a, dtype=float) for a in arrays]
    g = None if groups is None else np.asarray(groups)
    lengths = {len(a) for a in arrs} | ({len(g)} if g is not None else set())
    if len(lengths) > 1:
        raise ValueError(f"inputs differ in length: {sorted(lengths)}")
    keep = ~np.any([np.isnan(a) for a in arrs], axis=0)
    return [a[keep] for a in arrs] + [None if g is None else g[keep]]


def _boot(stat: Callable, samples: tuple[np.ndarray, ...], paired: bool, seed: int, reps: int):
    """(low, high, method) from ``scipy.stats.bootstrap``; percentile of the finite resamples
    when BCa is skipped (n < BCA_MIN_N) or fails."""
    method = "BCa" if min(len(s) for s in samples) >= BCA_MIN_N else "percentile"
    res = None
    for m in dict.fromkeys([method, "percentile"]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = sps.bootstrap(
                    samples, stat, n_resamples=reps, vectorized=True, paired=paired,
                    method=m, rng=np.random.default_rng(seed),
                )  # fmt: skip
            break
        except Exception:  # noqa: BLE001 - e.g. BCa on degenerate data: try percentile
            continue
    if res is None:
        return NAN, NAN, "bootstrap failed"
    low, high = (float(v) for v in res.confidence_interval)
    if math.isfinite(low) and math.isfinite(high):
        return low, high, f"{m} bootstrap"
    dist = np.asarray(res.bootstrap_distribution, float)
    if not np.isfinite(dist).any():
        return NAN, NAN, "bootstrap failed"
    low, high = np.nanpercentile(dist, [2.5, 97.5])
    why = "BCa failed" if method == "BCa" else "non-finite resamples dropped"
    return float(low), float(high), f"percentile bootstrap ({why})"


def _cluster(stat: Callable, arrays: tuple[np.ndarray, ...], groups: np.ndarray, null: float,
             seed: int, reps: int):  # fmt: skip
    """(low, high, p, method) from resampling whole groups with replacement (percentile CI,
    two-sided bootstrap p against ``null``)."""
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    picks = np.random.default_rng(seed).integers(0, len(members), (reps, len(members)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        dist = np.array(
            [float(stat(*(a[np.concatenate([members[g] for g in row])] for a in arrays)))
             for row in picks]
        )  # fmt: skip
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return NAN, NAN, NAN, "cluster bootstrap failed"
    low, high = np.percentile(dist, [2.5, 97.5])
    tail = min((dist <= null).sum(), (dist >= null).sum())
    p = min(1.0, 2 * (tail + 1) / (dist.size + 1))
    return float(low), float(high), p, f"cluster percentile bootstrap over {len(members)} groups"


def _finish(value, p, n, rows, name, test, boot, cluster, groups, null, seed, reps, ok=True):
    """The Estimate: CI from ``_boot(*boot)`` or, with groups, CI and p from
    ``_cluster(*cluster)``. No CI or p when n < 3, no value, or not ``ok``."""
    value = float(value) if value is not None and math.isfinite(value) else NAN
    base = f"{name}; n = {n} {'groups' if groups is not None else 'rows'}"
    if groups is not None:
        base += f" ({rows} rows)"
    if n < 3 or not ok or not math.isfinite(value):
        return Estimate(value, NAN, NAN, n, NAN, f"{base}; too few values for a CI or p")
    if groups is None:
        low, high, how = _boot(*boot, seed, reps)
        return Estimate(value, low, high, n, float(p), f"{base}; {how}; p: {test}")
    low, high, p, how = _cluster(*cluster, groups, null, seed, reps)
    return Estimate(value, low, high, n, p, f"{base}; {how}; p: cluster bootstrap vs {null:g}")


def _corr(x, y, groups, seed, n_resamples, name: str) -> Estimate:
    x, y, g = _clean(x, y, groups=groups)
    fn, vec = (sps.pearsonr, _r) if name == "pearson" else (sps.spearmanr, _rho)
    value = p = NAN
    if len(x) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fn(x, y)
        value, p = float(res.statistic), float(res.pvalue)
    n = len(x) if g is None else len(np.unique(g))
    boot, cluster = (vec, (x, y), True), (vec, (x, y))
    test = f"scipy {fn.__name__}"
    return _finish(value, p, n, len(x), name, test, boot, cluster, g, 0.0, seed, n_resamples)


def pearson(x: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None, *, seed: int = 0,
            n_resamples: int = 2000) -> Estimate:  # fmt: skip
    """Pearson r with a paired bootstrap CI (rows, or whole ``groups``); p from ``pearsonr``."""
    return _corr(x, y, groups, seed, n_resamples, "pearson")


def spearman(x: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None, *, seed: int = 0,
             n_resamples: int = 2000) -> Estimate:  # fmt: skip
    """Spearman rho with a paired bootstrap CI (rows, or whole ``groups``); p from ``spearmanr``."""
    return _corr(x, y, groups, seed, n_resamples, "spearman")


def auc(scores: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, *, seed: int = 0,
        n_resamples: int = 2000) -> Estimate:  # fmt: skip
    """ROC AUC of ``scores`` for truthy ``labels`` (Mann-Whitney U / (n1 n0)); p from the
    two-sided ``mannwhitneyu``; CI resamples positives and negatives separately (stratified),
    or whole ``groups``. n counts rows (or groups); NaN scores or labels are dropped."""
    s, lab, g = _clean(scores, labels, groups=groups)
    lab = lab.astype(bool)
    pos, neg = s[lab], s[~lab]
    value = p = NAN
    if len(pos) and len(neg):
        value = float(_auc(pos, neg))
        p = float(sps.mannwhitneyu(pos, neg, alternative="two-sided").pvalue)
    n = len(s) if g is None else len(np.unique(g))

    def rows_auc(sc, lb):
        return _auc(sc[lb], sc[~lb]) if lb.any() and (~lb).any() else NAN

    boot, cluster = (_auc, (pos, neg), False), (rows_auc, (s, lab))
    ok = min(len(pos), len(neg)) >= 2  # a class of one point: no stratified bootstrap
    test = "two-sided mannwhitneyu"
    return _finish(value, p, n, len(s), "ROC AUC", test, boot, cluster, g, 0.5, seed,
                   n_resamples, ok)  # fmt: skip


def proportion(k: int, n: int, null: float = 0.5) -> Estimate:
    """``k`` successes in ``n`` trials: the share, its exact (Clopper-Pearson) 95 % CI and the
    two-sided binomial test against ``null`` (``scipy.stats.binomtest``)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"proportion needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    test = sps.binomtest(int(k), int(n), null)
    ci = test.proportion_ci(0.95, method="exact")
    return Estimate(k / n, ci.low, ci.high, n, test.pvalue, f"binomial vs {null:g}")


def mean_diff(a: ArrayLike, b: ArrayLike, paired: bool = False,
              groups: ArrayLike | None = None, *, seed: int = 0,
              n_resamples: int = 2000) -> Estimate:  # fmt: skip
    """mean(a) - mean(b). Unpaired: Welch t-test, bootstrap resampling each sample; paired:
    paired t-test, bootstrap over pairs. ``groups`` labels the rows of ``a`` (paired) or of
    ``concat(a, b)`` (unpaired) and resamples whole groups. n: pairs, a + b rows, or groups."""
    if paired:
        a, b, g = _clean(a, b, groups=groups)
        est = mean_ci(a - b, g, seed=seed, n_resamples=n_resamples)  # t on a - b == ttest_rel
        method = est.method.replace("mean;", "paired mean difference;", 1)
        return Estimate(est.value, est.low, est.high, est.n, est.p,
                        method.replace("one-sample t-test vs 0", "paired t-test"))  # fmt: skip
    a_arr, b_arr = np.asarray(a, float), np.asarray(b, float)
    vals = np.concatenate([a_arr, b_arr])
    in_b = np.r_[np.zeros(len(a_arr), bool), np.ones(len(b_arr), bool)]
    vals, in_b, g = _clean(vals, in_b, groups=groups)
    in_b = in_b.astype(bool)
    xa, xb = vals[~in_b], vals[in_b]
    value = xa.mean() - xb.mean() if len(xa) and len(xb) else NAN
    p = NAN
    if min(len(xa), len(xb)) >= 2:
        p = float(sps.ttest_ind(xa, xb, equal_var=False).pvalue)
    n = len(vals) if g is None else len(np.unique(g))

    def diff(x, y, axis=-1):
        return x.mean(axis) - y.mean(axis)

    def rows_diff(v, ib):
        return v[~ib].mean() - v[ib].mean() if ib.any() and (~ib).any() else NAN

    boot, cluster = (diff, (xa, xb), False), (rows_diff, (vals, in_b))
    return _finish(value, p, n, len(vals), "mean difference", "Welch t-test", boot, cluster, g,
                   0.0, seed, n_resamples, min(len(xa), len(xb)) >= 2)  # fmt: skip


def mean_ci(x: ArrayLike, groups: ArrayLike | None = None, *, seed: int = 0,
            n_resamples: int = 2000) -> Estimate:  # fmt: skip
    """A mean with a bootstrap CI (rows, or whole ``groups``); p: one-sample t-test vs 0."""
    x, g = _clean(x, groups=groups)
    value = float(x.mean()) if len(x) else NAN
    p = float(sps.ttest_1samp(x, 0.0).pvalue) if len(x) >= 3 else NAN
    n = len(x) if g is None else len(np.unique(g))

    boot = (lambda v, axis=-1: v.mean(axis), (x,), False)
    test = "one-sample t-test vs 0"
    return _finish(value, p, n, len(x), "mean", test, boot, (np.mean, (x,)), g, 0.0, seed,
                   n_resamples)  # fmt: skip
