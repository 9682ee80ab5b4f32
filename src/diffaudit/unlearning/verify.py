"""Did the deletion work? Extraction, membership and utility of a model, judged against the retrain reference.

A `Verifier` is fixed once per request (the forgotten pictures, their captions and paraphrases, the never-trained
rows, the utility prompts, the forgotten pictures' nearest retained neighbours) and applied to every model alike:
the original, each unlearned model, the reference, and the protocol's control. `judge` compares one model with the
reference by the thresholds in `ForgetConfig`, fixed before the run.

Units. Copies are counted per caption (any of its generations within delta of a forgotten picture) and per
forgotten picture. Membership is scored per distinct (picture, caption) pair, not per row: rows repeating a pair are
the same query and would only inflate the count. Each score is ranked against the same model's never-trained
images (its percentile), so two models are compared on how member-like the pairs look to each, not on their raw
losses, which differ between any two trainings.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from diffaudit.attacks.adaptive.paraphrase import paraphrases
from diffaudit.attacks.copies import closest
from diffaudit.attacks.metrics import clopper_pearson, roc_summary
from diffaudit.attacks.mia.common import query_batch
from diffaudit.attacks.mia.loss import denoising_loss
from diffaudit.attacks.mia.tuning import paper_default
from diffaudit.config import UTILITY, ForgetConfig, Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.io import write_json
from diffaudit.measure.distance import copy_distance
from diffaudit.model.conditioning import Conditioning, Rewritten, Text
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress
from diffaudit.quality import UtilityProbe

UTILITY_TIMESTEPS = tuple(range(50, 1000, 100))  # as the study's held-out loss


@dataclass
class Verifier:
    preset: Preset
    delta: float
    guidance: float
    forgotten: ImageDataset  # one row per distinct (picture, caption) pair of the forgotten rows
    pictures: np.ndarray  # the distinct forgotten pictures
    captions: list[str]
    alternatives: dict[str, list[str]]  # paraphrases per caption, none of them trained with its picture
    nonmembers: ImageDataset
    neighbours: ImageDataset
    utility: UtilityProbe
    folder: Path
    progress: Progress | None = None

    @classmethod
    def build(cls, original: AuditPipeline, data: ImageDataset, forget_ids: frozenset[str], preset: Preset,
              delta: float, guidance: float, folder: Path, progress: Progress | None = None) -> "Verifier":
        members = data.split("member")
        gone = members.table["id"].isin(forget_ids).to_numpy()
        pairs = members.where(gone)
        pairs = pairs.where(~pairs.table.duplicated(["sha256", "text"]).to_numpy())
        first = ~pairs.table["sha256"].duplicated().to_numpy()
        pictures = pairs.images[first]
        kept = members.where(~gone)
        kept = kept.where(~kept.table["sha256"].duplicated().to_numpy())
        nearest = copy_distance(kept.images[:, None], pictures[None]).min(1)
        neighbours = kept.where(np.isin(np.arange(len(kept)), np.argsort(nearest, kind="stable")[
            :preset.forget.neighbours]))
        captions = sorted(set(pairs.texts))
        held_out = data.split("nonmember")
        utility = UtilityProbe.build(data, preset.sample.steps, preset.sample.sampler,
                                     prompts=preset.forget.utility_prompts)
        return cls(preset, delta, guidance, pairs, pictures, captions,
                   paraphrases(original, data, captions, preset.adaptive.paraphrases), held_out, neighbours, utility,
                   Path(folder), progress)

    def _copies(self, pipe: AuditPipeline, conditioning: Conditioning) -> dict:
        """Per caption: does any of its generations copy a forgotten picture (within delta)?"""
        n = self.preset.extraction.samples_per_prompt
        out = self.folder / "samples" / pipe.model_hash() / conditioning.name.split("[")[0]
        rows = generate(pipe, self.captions, list(range(n)), [self.guidance], self.preset.sample, out, self.progress,
                        conditioning=conditioning)
        images, index = load_samples(out, rows, side=self.pictures.shape[1])
        which, dist = closest(images, self.pictures, np.arange(len(self.pictures)))
        copy = dist < self.delta
        per_caption = index.assign(copy=copy).groupby("prompt")["copy"].any()
        k, total = int(per_caption.sum()), len(per_caption)
        low, high = clopper_pearson(k, total)
        return {"captions": total, "captions_with_copy": k, "rate": k / total, "ci": [low, high],
                "generations": len(images), "generations_copying": int(copy.sum()),
                "pictures_copied": len(np.unique(which[copy])), "pictures": len(self.pictures),
                "unet_evaluations": int(index["unet_evals"].sum())}

    def _membership(self, pipe: AuditPipeline) -> dict:
        attack = paper_default(self.preset.forget.attack)
        scores = attack.score(pipe, query_batch(pipe, self.forgotten.images, self.forgotten.texts))
        null = attack.score(pipe, query_batch(pipe, self.nonmembers.images, self.nonmembers.texts))
        # Percentile among never-trained images (ties count half): 0.5 looks like a never-trained picture.
        pct = ((null[None] < scores[:, None]).mean(1) + 0.5 * (null[None] == scores[:, None]).mean(1))
        labels = np.r_[np.ones(len(scores)), np.zeros(len(null))]
        roc = roc_summary(labels, np.r_[scores, null])
        # Pairs of one picture move together: the per-picture means show how many independent units there are.
        by_picture = pd.Series(pct).groupby(self.forgotten.table["sha256"].to_numpy(), sort=False).agg(["size", "mean"])
        return {"attack": self.preset.forget.attack, "settings": attack.choice, "pairs": len(scores),
                "nonmembers": len(null), "auc": roc["auc"], "auc_ci": roc["auc_ci"],
                "mean_percentile": float(pct.mean()), "percentiles": pct.tolist(),
                "by_picture": [{"sha256": k[:16], "pairs": int(r["size"]), "mean_percentile": float(r["mean"])}
                               for k, r in by_picture.iterrows()]}

    @property
    def protocol(self) -> str:
        """What a measurement depends on besides the model: measurements are kept under model and protocol."""
        key = {"delta": self.delta, "guidance": self.guidance, "samples": self.preset.extraction.samples_per_prompt,
               "paraphrases": self.alternatives, "pairs": sorted(map(list, zip(self.forgotten.table["sha256"],
                                                                                 self.forgotten.texts, strict=True))),
               "attack": self.preset.forget.attack, "sample": self.preset.sample.model_dump(),
               "utility": len(self.utility.held_out), "neighbours": sorted(self.neighbours.table["sha256"])}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def measure(self, pipe: AuditPipeline) -> dict:
        """Every number of the protocol for one model; kept per model hash, so a model verified for several
        methods (the original, the reference) is measured once."""
        path = self.folder / "measures" / f"{pipe.model_hash()}-{self.protocol}.json"
        if path.exists():
            return json.loads(path.read_text())
        k = self.preset.adaptive.paraphrases
        neighbours = query_batch(pipe, self.neighbours.images, self.neighbours.texts)
        result = {
            "model_hash": pipe.model_hash(),
            "copies": self._copies(pipe, Text()),
            "paraphrase_copies": self._copies(pipe, Rewritten(self.alternatives, f"paraphrase(k={k})")),
            "membership": self._membership(pipe),
            "neighbour_loss": float(denoising_loss(pipe, neighbours, UTILITY_TIMESTEPS, draws=1).mean()),
            "neighbours": len(self.neighbours),
            **self.utility.measure(pipe, self.guidance),
        }
        write_json(path, result)
        return result




def judge(model: dict, reference: dict, cfg: ForgetConfig) -> dict:
    """Pass/fail of one model against the reference, check by check, by thresholds fixed before the run."""
    checks = {}
    for key in ("copies", "paraphrase_copies"):
        limit = reference[key]["rate"] + cfg.copy_margin
        checks[key] = {"value": model[key]["rate"], "limit": limit, "passed": model[key]["rate"] <= limit + 1e-12}
    mine, ref = np.array(model["membership"]["percentiles"]), np.array(reference["membership"]["percentiles"])
    p = 1.0 if np.array_equal(mine, ref) else float(mannwhitneyu(mine, ref, alternative="two-sided").pvalue)
    direction = ("not distinguishable from the reference" if p >= cfg.alpha else
                 "more member-like than the reference (under-forgotten)" if mine.mean() > ref.mean() else
                 "less member-like than the reference (over-forgotten)")
    checks["membership"] = {"test": "Mann-Whitney U, two-sided, on percentiles among never-trained images; unit: "
                                    "the (picture, caption) pair, so it speaks for these pictures only",
                            "pictures": len(model["membership"].get("by_picture", [])),
                            "p": p, "alpha": cfg.alpha, "direction": direction, "passed": p >= cfg.alpha}
    for key in UTILITY:
        limit = reference[key] * (1 + cfg.utility_margin)
        checks[key] = {"value": model[key], "limit": limit, "passed": model[key] <= limit}
    passed = all(c["passed"] for c in checks.values())
    return {"checks": checks, "passed": passed, "verdict": "pass" if passed else "fail",
            "failed": [k for k, c in checks.items() if not c["passed"]],
            "fallback": "none needed" if passed else "retrain without the data (the reference)"}
