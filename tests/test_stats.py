"""personavec.io.stats: values and p-values agree with scipy, CIs cover, clusters are resampled."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from personavec.io.stats import Estimate, auc, mean_ci, mean_diff, pearson, proportion, spearman

RNG = np.random.default_rng(123)
X = RNG.normal(size=40)
Y = 0.6 * X + RNG.normal(size=40)


@pytest.mark.parametrize("fn,ref", [(pearson, sps.pearsonr), (spearman, sps.spearmanr)])
def test_correlations_match_scipy_after_dropping_nan(fn, ref):
    x, y = X.copy(), Y.copy()
    x[3], y[7] = np.nan, np.nan
    est = fn(x, y, n_resamples=500)
    keep = ~(np.isnan(x) | np.isnan(y))
    expected = ref(x[keep], y[keep])
    assert est.n == 38
    assert est.value == pytest.approx(expected.statistic)
    assert est.p == pytest.approx(expected.pvalue)
    assert est.low < est.value < est.high
    assert "BCa" in est.method


def test_auc_matches_sklearn_and_mannwhitneyu():
    from sklearn.metrics import roc_auc_score

    labels = X > 0.3
    scores = np.round(Y, 1)  # ties
    est = auc(scores, labels, n_resamples=500)
    assert est.value == pytest.approx(roc_auc_score(labels, scores))
    u = sps.mannwhitneyu(scores[labels], scores[~labels], alternative="two-sided")
    assert est.p == pytest.approx(u.pvalue)
    assert est.n == 40 and est.low < est.value < est.high


def test_auc_stratified_ci_with_rare_positives():
    labels = np.zeros(40, bool)
    labels[:3] = True  # an unstratified resample would often have no positive at all
    est = auc(X + 2 * labels, labels, n_resamples=500)
    assert math.isfinite(est.low) and math.isfinite(est.high)
    assert est.high <= 1.0


def test_mean_diff_welch_and_paired_match_scipy():
    a, b = X + 0.5, Y[:30]
    est = mean_diff(a, b, n_resamples=500)
    assert est.value == pytest.approx(a.mean() - b.mean())
    assert est.p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert est.n == 70 and "Welch" in est.method
    est = mean_diff(X, Y, paired=True, n_resamples=500)
    assert est.value == pytest.approx((X - Y).mean())
    assert est.p == pytest.approx(sps.ttest_rel(X, Y).pvalue)
    assert est.n == 40 and "paired" in est.method


def test_mean_ci_p_against_zero():
    est = mean_ci(X + 1, n_resamples=500)
    assert est.value == pytest.approx(X.mean() + 1)
    assert est.p == pytest.approx(sps.ttest_1samp(X + 1, 0).pvalue)
    assert est.low > 0


def test_ci_coverage_simulated():
    rng = np.random.default_rng(0)
    mean_hits = corr_hits = 0
    sims = 150
    for i in range(sims):
        x = rng.exponential(size=30)  # skewed: true mean 1
        m = mean_ci(x, seed=i, n_resamples=400)
        mean_hits += m.low <= 1 <= m.high
        u = rng.normal(size=(30, 2))
        e = pearson(u[:, 0], 0.5 * u[:, 0] + math.sqrt(0.75) * u[:, 1], seed=i, n_resamples=400)
        corr_hits += e.low <= 0.5 <= e.high
    assert 0.85 <= mean_hits / sims <= 0.99
    assert 0.85 <= corr_hits / sims <= 0.99


def test_cluster_bootstrap_covers_where_rows_do_not():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(10), 10)
    row_hits = cluster_hits = 0
    sims = 100
    for i in range(sims):
        x = np.repeat(rng.normal(size=10), 10) + 0.3 * rng.normal(size=100)  # true mean 0
        rows = mean_ci(x, seed=i, n_resamples=300)
        clus = mean_ci(x, groups=groups, seed=i, n_resamples=300)
        row_hits += rows.low <= 0 <= rows.high
        cluster_hits += clus.low <= 0 <= clus.high
        assert clus.n == 10 and rows.n == 100
    assert row_hits / sims < 0.6
    assert cluster_hits / sims > 0.8


def test_grouped_estimates_have_group_n_and_bootstrap_p():
    groups = np.arange(40) // 4
    for est in (
        pearson(X, Y, groups, n_resamples=300),
        spearman(X, Y, groups, n_resamples=300),
        auc(Y, X > 0, groups, n_resamples=300),
        mean_diff(X, Y, groups=np.r_[groups, groups], n_resamples=300),
        mean_diff(X, Y, paired=True, groups=groups, n_resamples=300),
    ):
        assert est.n == 10, est.method
        assert "cluster" in est.method and 0 < est.p <= 1
        assert est.low <= est.value <= est.high
    assert pearson(X, Y, groups, n_resamples=300).p < 0.05  # a clear effect
    assert pearson(X, RNG.normal(size=40), groups, n_resamples=300).p > 0.01


def test_deterministic_by_seed():
    a = pearson(X, Y, n_resamples=300)
    assert a == pearson(X, Y, n_resamples=300)
    assert (a.low, a.high) != (pearson(X, Y, seed=1, n_resamples=300).low, a.high)


def test_small_n_percentile_then_no_ci():
    est = pearson(X[:6], Y[:6], n_resamples=300)
    assert "percentile" in est.method and math.isfinite(est.low)
    est = pearson([1.0, 2.0, np.nan], [2.0, 5.0, 1.0])
    assert est.n == 2 and est.value == pytest.approx(1.0)
    assert math.isnan(est.low) and math.isnan(est.high) and math.isnan(est.p)
    for est in (mean_ci([]), mean_ci([np.nan, 1.0]), auc([1, 2, 3], [1, 1, 1])):
        assert math.isnan(est.low) and math.isnan(est.p)
    assert mean_ci([np.nan, 1.0]).value == 1.0
    assert math.isnan(auc([1, 2, 3], [1, 1, 1]).value)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        pearson([1, 2, 3], [1, 2])


def test_as_dict_and_str():
    est = Estimate(0.912, 0.641, 0.98, 9, 0.00063, "x")
    assert est.as_dict("r") == {
        "r": 0.912,
        "r/ci_low": 0.641,
        "r/ci_high": 0.98,
        "r/n": 9,
        "r/p": 0.00063,
    }
    assert str(est) == "0.91 [0.64, 0.98], n = 9, p = 0.00063"


def test_proportion_exact_ci_and_binomial_p():
    est = proportion(15, 32, 0.25)
    ref = sps.binomtest(15, 32, 0.25)
    ci = ref.proportion_ci(method="exact")
    assert est.value == 15 / 32 and est.n == 32
    assert (est.low, est.high, est.p) == pytest.approx((ci.low, ci.high, ref.pvalue))
    assert est.low > 0.25  # 15 of 32 is above chance at 5 %
    assert proportion(8, 32, 0.25).p == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k=5, n=4"):
        proportion(5, 4)
