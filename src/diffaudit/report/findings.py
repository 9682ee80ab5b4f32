"""What a study showed, as decisions drawn from its numbers: which mitigation changed extraction beyond
chance (exact paired test on the same prompts), at what utility cost, and whether copying rises with
duplication. The memo's sentences are written from these, so no sentence can claim more than they show."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from diffaudit.attacks.metrics import paired_change
from diffaudit.report.results import StudyResults

ALPHA = 0.05  # significance level for "changed beyond chance"


@dataclass(frozen=True)
class ArmEffect:
    arm: str
    kind: str
    rate: float
    ci_low: float
    ci_high: float
    extracted: int
    prompts: int
    stopped: int  # prompts extracted before, not after
    started: int  # prompts extracted after, not before
    p_value: float
    frechet_change: float  # relative to the base model; + is worse quality
    loss_change: float
    train_seconds: float

    @property
    def verdict(self) -> str:
        if self.p_value >= ALPHA:
            return "no clear change"
        return "fewer copies" if self.stopped > self.started else "more copies"


def _extracted(run: Path, seed: int, arm: str) -> pd.Series:
    table = pd.read_parquet(run / f"seed{seed}" / arm / "extraction" / "per_prompt.parquet")
    return table.set_index("prompt")["extracted"]


def arm_effects(res: StudyResults) -> list[ArmEffect]:
    """Every mitigation arm against the base model, paired prompt by prompt over all seeds."""
    arms = res.arms().set_index("arm")
    base = arms.loc["base"]
    out = []
    for arm, row in arms.drop(index="base").iterrows():
        before, after = [], []
        for seed in res.seeds:
            pair = pd.concat([_extracted(res.run, seed, "base"), _extracted(res.run, seed, arm)], axis=1,
                             join="inner")
            before.append(pair.iloc[:, 0].to_numpy())
            after.append(pair.iloc[:, 1].to_numpy())
        test = paired_change(np.concatenate(before), np.concatenate(after))
        out.append(ArmEffect(
            arm=str(arm), kind=row["kind"], rate=row["rate"], ci_low=row["ci_low"], ci_high=row["ci_high"],
            extracted=int(row["extracted"]), prompts=int(row["prompts"]), stopped=test["stopped"],
            started=test["started"], p_value=test["p_value"],
            frechet_change=row["frechet_distance"] / base["frechet_distance"] - 1,
            loss_change=row["heldout_loss"] / base["heldout_loss"] - 1, train_seconds=float(row["train_seconds"])))
    return out


def best_arm(effects: list[ArmEffect]) -> ArmEffect | None:
    """The arm with the lowest extraction rate among those that reduced it beyond chance; ties go to the
    smaller quality cost."""
    working = [e for e in effects if e.verdict == "fewer copies"]
    return min(working, key=lambda e: (e.rate, e.frechet_change), default=None)


def duplication_trend(run: Path, seed: int, buckets: pd.DataFrame) -> dict | None:
    """Do captions that gave a copy have more-duplicated pictures than those that did not? A Mann-Whitney
    test on the base model's per-prompt copy counts (all prompts, not just two buckets); `clear` when p < ALPHA.
    The most- and least-duplicated buckets are returned for the sentence that illustrates it."""
    per_prompt = pd.read_parquet(run / f"seed{seed}" / "base" / "extraction" / "per_prompt.parquet")
    hit, miss = per_prompt.loc[per_prompt["extracted"], "dup_count"], per_prompt.loc[~per_prompt["extracted"],
                                                                                       "dup_count"]
    if len(buckets) < 2 or hit.empty or miss.empty:
        return None
    test = mannwhitneyu(hit, miss, alternative="two-sided")
    return {"low": buckets.iloc[0].to_dict(), "high": buckets.iloc[-1].to_dict(), "p_value": float(test.pvalue),
            "clear": bool(test.pvalue < ALPHA), "rises": bool(hit.mean() > miss.mean())}
