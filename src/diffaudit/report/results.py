"""Read a study's results once, in the shape the memo, report and viewer share. Nothing is recomputed
here beyond pooling seeds: every figure comes from the run's own files."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.errors import ConfigError


@dataclass(frozen=True)
class StudyResults:
    run: Path
    rows: list[dict]
    assumptions: list[dict]
    preset: str
    config: dict  # the preset as run, from run.json
    record: dict  # hashes and package versions
    calibration: dict  # the copy threshold and the nulls it was chosen against
    mia_controls: dict  # the attacks' positive control (with its exposure curve) and negative control
    dp_controls: dict  # per seed: the non-private fine-tune that checks the DP audit's power

    @classmethod
    def load(cls, run: Path) -> "StudyResults":
        run = Path(run)
        missing = [n for n in ("results.json", "assumptions.json", "run.json") if not (run / n).exists()]
        if missing:
            raise ConfigError(f"{run} is not a finished study run: missing {', '.join(missing)} "
                              "(run `diffaudit study` first)")
        results = json.loads((run / "results.json").read_text())
        record = json.loads((run / "run.json").read_text())
        return cls(run, results["rows"], json.loads((run / "assumptions.json").read_text()), results["preset"],
                   record["config"], record, results["calibration"], results.get("mia_controls", {}),
                   results.get("dp_controls", {}))

    @property
    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.rows})

    def arms(self) -> pd.DataFrame:
        """One row per arm, pooled over seeds: extraction rate (prompts that copied their own image / prompts
        attacked) with its exact interval and the seed spread; unique images and subjects (families) beside it,
        summed over seeds."""
        out = []
        for arm, group in pd.DataFrame([r for r in self.rows if r.get("kind") != "detection"]).groupby(
                "arm", sort=False):
            k, n = int(group["prompts_with_copy"].sum()), int(group["attacked_prompts"].sum())
            low, high = clopper_pearson(min(k, n), n)
            mia = [max(m.values(), key=lambda v: v["auc"]) for m in group.get("mia", pd.Series(dtype=object))
                   if isinstance(m, dict) and m]
            out.append({"arm": arm, "kind": group["kind"].iloc[0], "guidance": group["guidance"].iloc[0],
                        "extracted": k, "prompts": n, "rate": k / n, "ci_low": low, "ci_high": high,
                        "images": int(group["extracted_images"].sum()),
                        "families": int(group["extracted_families"].sum()),
                        "family_prompts": int(group["family_prompts"].sum()),
                        "seed_min": group["extraction_rate"].min(), "seed_max": group["extraction_rate"].max(),
                        "mia_auc": float(np.mean([m["auc"] for m in mia])) if mia else None,
                        "frechet_distance": group["frechet_distance"].mean(),
                        "heldout_loss": group["heldout_loss"].mean(), "seeds": len(group),
                        "train_seconds": group.get("train_seconds", pd.Series([0.0])).fillna(0).mean()})
        return pd.DataFrame(out)

    def row(self, arm: str, seed: int | None = None) -> dict:
        seed = self.seeds[0] if seed is None else seed
        return next(r for r in self.rows if r["arm"] == arm and r["seed"] == seed)


def bucket_start(label: str) -> int:
    """Lower bound of a duplication bucket label ("1", "2-3", ..., "64+"), for sorting."""
    return int(label.split("-")[0].rstrip("+"))


def by_dup(row: dict, key: str = "by_dup") -> pd.DataFrame:
    """A row's per-bucket rates in ladder order (they are stored in string order)."""
    frame = pd.DataFrame(row[key])
    return frame.sort_values("dup_bucket", key=lambda s: s.map(bucket_start)).reset_index(drop=True)
