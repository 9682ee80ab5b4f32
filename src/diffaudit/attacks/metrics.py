"""Rates with exact confidence intervals: every rate diffaudit reports carries one."""

import pandas as pd
from scipy.stats import binomtest


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (Clopper & Pearson 1934); (0, 1) when there were no trials."""
    if trials == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def rate_table(frame: pd.DataFrame, by: list[str], hit: str = "hit") -> pd.DataFrame:
    """One row per group: n, hits, rate and its 95% Clopper-Pearson interval."""
    rows = []
    for key, group in frame.groupby(by, sort=True):
        k, n = int(group[hit].sum()), len(group)
        low, high = clopper_pearson(k, n)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)), "prompts": n,
                     "hits": k, "rate": k / n, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)
