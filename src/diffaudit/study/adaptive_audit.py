"""Static against adaptive extraction, per arm: does a mitigation still hold when the attacker tries harder?

Targets are the attacked captions whose picture has at least `adaptive.min_dup` copies, where the base
model copies most (so a probe that beats a fix has room to show it). Each probe's generations go
through the static probe's own extraction (clique filter, copy test against the target's own image, UNet counter)
with the same number of generations per caption, so the probe alone is compared with the static probe at the same
budget: a one-sided exact McNemar test, Holm-adjusted over the mitigated arms and probes in `study.findings`. What an
attacker who keeps both gets (static OR probe) is reported beside it, as a description, not tested: a second try
of any kind adds copies by chance. The embedding search gets a negative control: the same search on never-trained
captions, scored against their own never-seen pictures, must stay at the floor the copy threshold was chosen for.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.adaptive.embedding_search import search
from diffaudit.attacks.adaptive.registry import PROBES
from diffaudit.attacks.copies import model_null
from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.memorization import nonmember_prompts
from diffaudit.attacks.metrics import clopper_pearson, paired_change
from diffaudit.config import Preset, validated
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.arm import Arm
from diffaudit.model.generate import can_share, generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.progress import Progress
from diffaudit.study.extraction_audit import run_extraction


def adaptive_targets(prompts: pd.DataFrame, min_dup: int) -> pd.DataFrame:
    return prompts[prompts["dup_count"] >= min_dup].reset_index(drop=True)


def _rate(k: int, n: int) -> dict:
    low, high = clopper_pearson(k, n)
    return {"extracted": k, "targets": n, "rate": k / n if n else float("nan"), "ci_low": low, "ci_high": high}


def outcome(folder: Path, targets: pd.DataFrame) -> np.ndarray:
    """Per target caption, whether an extraction folder's probe got a copy of its own picture."""
    found = pd.read_parquet(folder / "per_prompt.parquet").set_index("prompt")["extracted"]
    return found.reindex(targets["prompt"]).fillna(False).to_numpy(bool)


def static_outcome(arm_folder: Path, targets: pd.DataFrame) -> dict:
    return _rate(int(outcome(arm_folder / "extraction", targets).sum()), len(targets))


def run_probe(name: str, arm: Arm, data: ImageDataset, folder: Path, targets: pd.DataFrame, preset: Preset,
              cfg: ExtractionConfig, shared: list[Path], progress: Progress | None = None) -> dict:
    """One probe against one arm (`folder` is the arm's). `shared` lists generation folders whose samples a text
    probe may reuse, the base's first; the arm's own static samples last, so a probe that sends exactly the static
    query is recognised as such (`same_as_static`: its result is the static one by construction)."""
    probe = PROBES[name]
    query = probe.query(arm, preset, data, targets["prompt"].tolist())
    sampling = validated(preset.sample, **query.sampling)  # the arm's sampling setting, when the probe keeps it
    reuse = next((f for f in shared if can_share(f, arm.pipe, sampling, query.conditioning)), None)
    own = folder / "extraction" / "samples"
    same = reuse == own and query.guidance == arm.guidance and query.sampling == arm.sampling
    ext = run_extraction(arm.pipe, data, folder / "adaptive" / name, targets, preset.extraction.samples_per_prompt,
                         query.guidance, sampling, cfg, progress, samples=reuse, conditioning=query.conditioning)
    before, alone = outcome(folder / "extraction", targets), outcome(folder / "adaptive" / name, targets)
    return {"title": probe.title, "access": probe.access, "guidance": query.guidance, "sampling": query.sampling,
            "conditioning": query.conditioning.name, "static": _rate(int(before.sum()), len(targets)),
            "alone": _rate(int(alone.sum()), len(targets)), "union": _rate(int((before | alone).sum()), len(targets)),
            **paired_change(before, alone), "same_as_static": bool(same),
            "unet_evaluations": ext["unet_evaluations"],
            "reused_samples": str(reuse.relative_to(folder.parent)) if reuse else None}


def search_negative_control(pipe: AuditPipeline, data: ImageDataset, folder: Path, preset: Preset, delta: float,
                            text_samples: Path, progress: Progress | None = None) -> dict:
    """The embedding search aimed at the calibration's never-trained captions: the share whose generations land
    within delta of their own never-seen picture, judged like the copy threshold's own null (rate <= null_target,
    upper 95% bound <= null_bound), beside the same captions with plain text (the calibration's samples)."""
    s = preset.calibration
    prompts, own = nonmember_prompts(data, s.null_prompts, seed=preset.data.seed)
    seeds = list(range(preset.extraction.samples_per_prompt))
    rates = {}
    for label, conditioning, samples in (("text", None, text_samples),
                                         ("embedding-search", search(preset), folder / "embedding-search")):
        rows = generate(pipe, prompts["prompt"].tolist(), seeds, [preset.sample.guidance], preset.sample, samples,
                        progress, conditioning=conditioning)
        images, index = load_samples(samples, rows, side=data.images.shape[1])
        rates[label] = {**model_null(images, index, own, (delta,))[0],
                        "unet_evaluations": int(np.sum(rows["unet_evals"]))}
    found = rates["embedding-search"]
    return {**rates, "target": s.null_target, "bound": s.null_bound,
            "passed": bool(found["rate"] <= s.null_target and found["ci_high"] <= s.null_bound)}
