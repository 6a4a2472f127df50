"""Confidence intervals for the two kinds of rate the testbed reports."""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided confidence interval, in the unit the function states."""

    estimate: float
    low: float
    high: float

    def scaled(self, factor: float) -> Interval:
        """The same interval multiplied by ``factor`` (e.g. 100 for a proportion shown per 100)."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a binomial proportion ``k / n`` (as a proportion in [0, 1]).

    Args:
        k: successes (here: runs with at least one occurrence).
        n: trials (runs); must be at least 1.
        confidence: two-sided confidence level.

    Raises:
        ValueError: ``n < 1``, ``k`` outside ``[0, n]`` or a confidence outside (0, 1).
    """
    _check_confidence(confidence)
    if n < 1:
        raise ValueError(f"a proportion needs at least one trial, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"successes must lie in [0, {n}], got k={k}")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high))


def poisson_interval(count: int, exposure: float, confidence: float = 0.95, *, per: float = 100.0) -> Interval:
    """Exact (chi-square, Garwood) interval of a Poisson rate, scaled per ``per`` units of exposure.

    With the default ``per=100`` and exposure counted in executions, the result is
    occurrences per 100 executions.

    Args:
        count: events observed (here: violation occurrences).
        exposure: units observed (here: executed calls); must be positive.
        confidence: two-sided confidence level.
        per: the scale of the reported rate.

    Raises:
        ValueError: a negative count, a non-positive exposure or a confidence outside (0, 1).
    """
    _check_confidence(confidence)
    if count < 0:
        raise ValueError(f"a count cannot be negative, got {count}")
    if exposure <= 0:
        raise ValueError(f"a rate needs a positive exposure, got {exposure}")
    alpha = 1.0 - confidence
    low = 0.0 if count == 0 else float(stats.chi2.ppf(alpha / 2, 2 * count)) / 2
    high = float(stats.chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2
    scale = per / exposure
    return Interval(count * scale, low * scale, high * scale)
