"""Rates with exact confidence intervals: every rate diffaudit reports carries one."""

import numpy as np
import pandas as pd
from scipy.stats import binomtest, bootstrap
from sklearn.metrics import roc_auc_score, roc_curve


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


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    """True-positive rate at a false-positive rate, read off the ROC curve (Carlini et al. S&P 2022 report
    low-FPR operating points because average-case AUC hides the attacks that matter)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[np.searchsorted(fpr, fpr_target, side="right") - 1])


def roc_summary(labels: np.ndarray, scores: np.ndarray, resamples: int = 300, seed: int = 0) -> dict:
    """AUC, TPR@1%FPR and TPR@0.1%FPR, each with a percentile-bootstrap 95% interval (scipy)."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    stats = {"auc": lambda y, s: roc_auc_score(y, s), "tpr_at_1pct_fpr": lambda y, s: tpr_at_fpr(y, s, 0.01),
             "tpr_at_0.1pct_fpr": lambda y, s: tpr_at_fpr(y, s, 0.001)}
    out: dict = {"members": int(labels.sum()), "nonmembers": int((1 - labels).sum())}
    for name, fn in stats.items():
        def guarded(y: np.ndarray, s: np.ndarray, fn=fn) -> float:
            return fn(y, s) if 0 < y.sum() < len(y) else np.nan  # a resample with one class has no ROC

        ci = bootstrap((labels, scores), guarded, paired=True, vectorized=False, n_resamples=resamples,
                       method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        out[name] = float(fn(labels, scores))
        out[f"{name}_ci"] = [float(ci.low), float(ci.high)]
    return out


def paired_change(before: np.ndarray, after: np.ndarray) -> dict:
    """Exact McNemar test on the same prompts before and after a mitigation: only prompts whose outcome
    changed carry information, and under "no effect" each change is equally likely in either direction."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    fewer, more = int((before & ~after).sum()), int((~before & after).sum())
    p = binomtest(fewer, fewer + more).pvalue if fewer + more else 1.0
    return {"stopped": fewer, "started": more, "p_value": float(p)}
