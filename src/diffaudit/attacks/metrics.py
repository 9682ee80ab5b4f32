"""Rates with exact confidence intervals: every rate diffaudit reports carries one."""

import numpy as np
import pandas as pd
from scipy.stats import binomtest, rankdata


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


# Resamples of every bootstrap interval: 2,000 keep the Monte-Carlo error of a 95% percentile bound near 0.005.
BOOTSTRAP_RESAMPLES = 2000
# TPR at 0.1% FPR is reported only with this many non-members: with fewer it is the TPR at zero false positives.
MIN_NONMEMBERS_PER_MILLE = 1000


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    """True-positive rate at a false-positive rate, read off the ROC curve (Carlini et al. S&P 2022 report
    low-FPR operating points because average-case AUC hides the attacks that matter)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    return float(_tpr_at(scores[labels][None], scores[~labels][None], fpr_target)[0])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: sklearn's value, without its input checks (hot in bootstraps)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    return float(_auc(scores[labels][None], scores[~labels][None])[0])


def _auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Row-wise AUC (Mann-Whitney, ties counted half) of member and non-member score matrices."""
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    n1, n0 = pos.shape[1], neg.shape[1]
    return (ranks[:, :n1].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _tpr_at(pos: np.ndarray, neg: np.ndarray, fpr_target: float) -> np.ndarray:
    """Row-wise TPR at the strictest threshold that lets at most fpr_target of the non-members through (the
    ROC curve's operating point at that FPR)."""
    m = int(np.floor(fpr_target * neg.shape[1] + 1e-9))
    if m >= neg.shape[1]:
        return np.ones(len(pos))
    cut = np.sort(neg, axis=1)[:, neg.shape[1] - 1 - m]
    return (pos > cut[:, None]).mean(1)


def _resampled(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    return values[rng.integers(0, len(values), (resamples, len(values)))]


def _family_resamples(scores: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
                      resamples: int) -> list[np.ndarray]:
    """Bootstrap samples of one class that draw whole families with replacement (a cluster bootstrap)."""
    names, index = np.unique(groups, return_inverse=True)
    parts = [scores[index == k] for k in range(len(names))]
    return [np.concatenate([parts[k] for k in rng.integers(0, len(parts), len(parts))]) for _ in range(resamples)]


def roc_summary(labels: np.ndarray, scores: np.ndarray, seed: int = 0, confidence: float = 0.95,
                resamples: int = BOOTSTRAP_RESAMPLES, groups: np.ndarray | None = None) -> dict:
    """AUC and TPR@1%FPR (and TPR@0.1%FPR with enough non-members), each with a percentile-bootstrap interval
    that resamples members and non-members separately (the class sizes are fixed by the design). With `groups`
    (near-duplicate families) whole families are resampled: siblings are not independent draws, and an interval
    that treats them as such is too narrow (on the quick model's never-trained halves, sample-level 99% intervals
    excluded 0.5 for three of four attacks)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):  # one class only: there is no ROC
        return {"members": len(pos), "nonmembers": len(neg), "auc": np.nan, "auc_ci": [np.nan, np.nan],
                "tpr_at_1pct_fpr": np.nan, "tpr_at_1pct_fpr_ci": [np.nan, np.nan]}
    rng = np.random.default_rng(seed)
    stats = {"auc": _auc, "tpr_at_1pct_fpr": lambda p, n: _tpr_at(p, n, 0.01)}
    if len(neg) >= MIN_NONMEMBERS_PER_MILLE:
        stats["tpr_at_0.1pct_fpr"] = lambda p, n: _tpr_at(p, n, 0.001)
    tail = 100 * (1 - confidence) / 2
    # With fewer than 100 non-members, "TPR at 1% FPR" is the TPR at zero false positives: say so beside it.
    out: dict = {"members": len(pos), "nonmembers": len(neg), "confidence": confidence,
                 "interval": f"stratified percentile {'family ' if groups is not None else ''}bootstrap, "
                             f"{resamples} resamples",
                 "tpr_at_1pct_fpr_is_zero_fp": len(neg) < 100}
    if groups is None:
        boot_pos, boot_neg = _resampled(pos, rng, resamples), _resampled(neg, rng, resamples)
    else:
        groups = np.asarray(groups)
        boot_pos = _family_resamples(pos, groups[labels], rng, resamples)
        boot_neg = _family_resamples(neg, groups[~labels], rng, resamples)
    for name, fn in stats.items():
        if groups is None:
            draws = fn(boot_pos, boot_neg)
        else:  # resamples differ in length: one at a time
            draws = np.array([fn(p[None], n[None])[0] for p, n in zip(boot_pos, boot_neg, strict=True)])
        out[name] = float(fn(pos[None], neg[None])[0])
        out[f"{name}_ci"] = [float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))]
    return out


def paired_auc_difference(labels: np.ndarray, first: np.ndarray, second: np.ndarray, seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES, groups: np.ndarray | None = None) -> dict:
    """AUC(first) - AUC(second) on the same samples, with a stratified paired-bootstrap 95% interval and a
    two-sided bootstrap p-value: resampling the samples once for both attacks keeps their correlation, which
    comparing two separate intervals ignores. With `groups`, whole families are resampled."""
    labels = np.asarray(labels, bool)
    a, b = np.asarray(first, float), np.asarray(second, float)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if groups is None:
        ip, ineg = _resampled(pos, rng, resamples), _resampled(neg, rng, resamples)
        diff = _auc(a[ip], a[ineg]) - _auc(b[ip], b[ineg])
    else:
        groups = np.asarray(groups)
        ips = _family_resamples(pos, groups[pos], rng, resamples)
        inegs = _family_resamples(neg, groups[neg], rng, resamples)
        diff = np.array([_auc(a[i][None], a[j][None])[0] - _auc(b[i][None], b[j][None])[0]
                         for i, j in zip(ips, inegs, strict=True)])
    point = float(_auc(a[pos][None], a[neg][None])[0] - _auc(b[pos][None], b[neg][None])[0])
    # (k + 1) / (B + 1): a bootstrap p-value is never exactly 0 (Davison & Hinkley 1997)
    p = min(1.0, 2 * (min((diff <= 0).sum(), (diff >= 0).sum()) + 1) / (resamples + 1))
    return {"difference": point, "ci": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
            "p_value": float(p), "samples": len(labels)}


def paired_change(before: np.ndarray, after: np.ndarray) -> dict:
    """Exact McNemar test on the same prompts before and after a mitigation: only prompts whose outcome
    changed carry information, and under "no effect" each change is equally likely in either direction."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    fewer, more = int((before & ~after).sum()), int((~before & after).sum())
    return {"stopped": fewer, "started": more, "p_value": mcnemar_p(fewer, more)}


def mcnemar_p(fewer: int, more: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value from the discordant counts alone (what pooled seeds keep); `alternative="less"` asks
    only whether fewer < more (a probe that found more), so a probe that found less is not a rise."""
    return float(binomtest(fewer, fewer + more, alternative=alternative).pvalue) if fewer + more else 1.0


def strongest_attack(attacks: dict[str, dict] | None, by: str = "auc") -> tuple[str | None, dict]:
    """The membership attack with the highest `by` (AUC, or e.g. TPR at 1% FPR) and its summary; (None, {}) when no
    attack ran. The one rule every table, finding and report uses."""
    return max((attacks or {}).items(), key=lambda kv: kv[1][by], default=(None, {}))
