"""Paired comparisons of two cells' runs, and Holm's adjustment across contrasts.

Runs are paired by run index: the same seed gives run i the same scene and the same fault
decisions in every cell. Methods (all from statsmodels and scipy):

* yes/no outcomes (a violation family affected the run; the task passed): the difference in
  proportions with Newcombe's hybrid score interval (``confint_proportions_2indep``,
  ``method="newcomb"``), and McNemar's exact test on the discordant pairs. Newcombe's interval
  treats the two samples as independent, which for positively correlated pairs (the usual case
  here) makes it conservative: at least as wide as a paired interval. statsmodels has no paired
  Newcombe interval, and the test is the paired one.
* counts and means (calls per run, mean call latency): the mean paired difference with a
  percentile bootstrap interval over pairs (``scipy.stats.bootstrap``, ``paired=True``), and a
  paired permutation test (``scipy.stats.permutation_test``, ``permutation_type="samples"``: the
  sign of each pair's difference is exchanged, exactly when there are few pairs).
* latency cost (mean call latency per run): the ratio of the treatment's mean to the baseline's with a paired
  percentile bootstrap interval, and a paired permutation test of the log ratio.
* per-call latency quantiles of one cell (median, p90): the sample quantile with the distribution-free
  order-statistic interval (``scipy.stats.quantile_test(...).confidence_interval``).
* Holm's step-down adjustment (``multipletests``, ``method="holm"``) across the contrasts of an
  experiment, separately for each outcome: each outcome is its own family of hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = ["NEWCOMBE", "Comparison", "compare_binary", "compare_numeric", "compare_ratio", "holm", "quantile_interval"]

NEWCOMBE = "newcombe (hybrid score, unpaired; conservative for pairs)"
MCNEMAR = "mcnemar exact"
BOOTSTRAP = "paired bootstrap (percentile)"
PERMUTATION = "paired permutation"
RESAMPLES = 9999


@dataclass(frozen=True)
class Comparison:
    """The treatment cells' runs against the baseline cells' runs, pair by pair."""

    measure: Literal["proportion", "mean", "ratio"]
    pairs: int
    """Pairs compared (pairs where either side is undefined, e.g. an unchecked task, are left out)."""
    treatment: float
    baseline: float
    difference: float
    """treatment - baseline (a ratio: treatment / baseline)."""
    low: float
    high: float
    p_value: float
    interval: str
    test: str
    treatment_only: int | None = None
    """Yes/no outcomes: pairs where only the treatment run has it (a discordant pair)."""
    baseline_only: int | None = None
    """Yes/no outcomes: pairs where only the baseline run has it."""


def compare_binary(
    treatment: npt.NDArray[np.bool_], baseline: npt.NDArray[np.bool_], *, confidence: float
) -> Comparison | None:
    """Paired yes/no outcomes: difference in proportions (Newcombe) and McNemar's exact test; None with no pairs."""
    # statsmodels is imported where it is used: it takes a second, which no other testbed command should pay.
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import confint_proportions_2indep

    pairs = len(treatment)
    if pairs == 0:
        return None
    hits_t, hits_b = int(treatment.sum()), int(baseline.sum())
    low, high = confint_proportions_2indep(
        hits_t, pairs, hits_b, pairs, method="newcomb", compare="diff", alpha=1.0 - confidence
    )
    t_only = int((treatment & ~baseline).sum())
    b_only = int((~treatment & baseline).sum())
    both = int((treatment & baseline).sum())
    table = [[both, t_only], [b_only, pairs - both - t_only - b_only]]
    return Comparison(
        measure="proportion",
        pairs=pairs,
        treatment=hits_t / pairs,
        baseline=hits_b / pairs,
        difference=(hits_t - hits_b) / pairs,
        low=float(low),
        high=float(high),
        p_value=float(mcnemar(table, exact=True).pvalue),
        interval=NEWCOMBE,
        test=MCNEMAR,
        treatment_only=t_only,
        baseline_only=b_only,
    )


def _mean_difference(
    treatment: npt.NDArray[np.float64], baseline: npt.NDArray[np.float64], axis: int = -1
) -> npt.NDArray[np.float64]:
    return np.asarray(np.mean(treatment - baseline, axis=axis), dtype=np.float64)


def compare_numeric(
    treatment: npt.NDArray[np.float64],
    baseline: npt.NDArray[np.float64],
    *,
    confidence: float,
    rng: np.random.Generator,
) -> Comparison | None:
    """Paired numbers: mean difference, paired bootstrap interval and paired permutation test; None with no pairs."""
    pairs = len(treatment)
    if pairs == 0:
        return None
    difference = float(np.mean(treatment - baseline))
    if pairs == 1 or np.ptp(treatment - baseline) == 0.0:
        low = high = difference  # every pair differs alike: nothing to resample
    else:
        interval = stats.bootstrap(
            (treatment, baseline),
            _mean_difference,
            paired=True,
            vectorized=True,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            method="percentile",
            rng=rng,
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    test = stats.permutation_test(
        (treatment, baseline),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="two-sided",
        rng=rng,
    )
    return Comparison(
        measure="mean",
        pairs=pairs,
        treatment=float(np.mean(treatment)),
        baseline=float(np.mean(baseline)),
        difference=difference,
        low=low,
        high=high,
        p_value=min(1.0, float(test.pvalue)),
        interval=BOOTSTRAP,
        test=PERMUTATION,
    )


def _log_ratio(
    treatment: npt.NDArray[np.float64], baseline: npt.NDArray[np.float64], axis: int = -1
) -> npt.NDArray[np.float64]:
    return np.asarray(np.log(np.mean(treatment, axis=axis)) - np.log(np.mean(baseline, axis=axis)), dtype=np.float64)


def _ratio(
    treatment: npt.NDArray[np.float64], baseline: npt.NDArray[np.float64], axis: int = -1
) -> npt.NDArray[np.float64]:
    return np.asarray(np.mean(treatment, axis=axis) / np.mean(baseline, axis=axis), dtype=np.float64)


def compare_ratio(
    treatment: npt.NDArray[np.float64],
    baseline: npt.NDArray[np.float64],
    *,
    confidence: float,
    rng: np.random.Generator,
) -> Comparison | None:
    """Paired positive numbers (e.g. mean call latency per run): the ratio of means treatment / baseline, its
    paired bootstrap interval and a paired permutation test of the log ratio; None without two positive pairs."""
    positive = (treatment > 0) & (baseline > 0)
    treatment, baseline = treatment[positive], baseline[positive]
    pairs = len(treatment)
    if pairs < 2:
        return None
    ratio = float(_ratio(treatment, baseline))
    if np.ptp(treatment / baseline) == 0.0:
        low = high = ratio
    else:
        interval = stats.bootstrap(
            (treatment, baseline),
            _ratio,
            paired=True,
            vectorized=True,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            method="percentile",
            rng=rng,
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    test = stats.permutation_test(
        (treatment, baseline),
        _log_ratio,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="two-sided",
        rng=rng,
    )
    return Comparison(
        measure="ratio",
        pairs=pairs,
        treatment=float(np.mean(treatment)),
        baseline=float(np.mean(baseline)),
        difference=ratio,
        low=low,
        high=high,
        p_value=min(1.0, float(test.pvalue)),
        interval=BOOTSTRAP,
        test=f"{PERMUTATION} (log ratio)",
    )


def quantile_interval(
    values: npt.NDArray[np.float64], quantile: float, *, confidence: float
) -> tuple[float | None, float | None, float | None]:
    """The sample ``quantile`` of ``values`` with its order-statistic interval; a bound too few values can give is
    None (e.g. the upper bound of a p90 of five values), and all three are None without values."""
    if len(values) == 0:
        return None, None, None
    estimate = float(np.quantile(values, quantile))
    interval = stats.quantile_test(values, q=estimate, p=quantile).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    return estimate, (None if np.isnan(low) else low), (None if np.isnan(high) else high)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the same order (one family of hypotheses)."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return []
    adjusted = multipletests(p_values, method="holm")[1]
    return [float(value) for value in adjusted]
