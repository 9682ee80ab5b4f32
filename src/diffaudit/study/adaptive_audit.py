"""Static against adaptive extraction, per arm: does a mitigation still hold when the attacker tries harder?

Targets are the attacked captions whose picture has at least `study.adaptive_min_dup` copies, where the static
probe found copies on the base model (so a probe that beats a fix has room to show it). Each probe's generations go
through the static probe's own extraction (clique filter, copy test against the target's own image, UNet counter).
The attacker keeps what works: the adaptive outcome of a caption is static OR probe, and an exact McNemar test
against the static outcome (Holm-adjusted over every arm and probe, in `study.findings`) says whether the probe
raised extraction beyond chance. The embedding search gets a negative control: the same search on never-trained
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
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.mitigations.base import Arm
from diffaudit.model.generate import can_share, generate, load_samples
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import Progress
from diffaudit.study.extraction_audit import run_extraction


def adaptive_targets(prompts: pd.DataFrame, min_dup: int) -> pd.DataFrame:
    return prompts[prompts["dup_count"] >= min_dup].reset_index(drop=True)


def _rate(k: int, n: int) -> dict:
    low, high = clopper_pearson(k, n)
    return {"extracted": k, "targets": n, "rate": k / n if n else float("nan"), "ci_low": low, "ci_high": high}


def run_adaptive(arm: Arm, data: ImageDataset, folder: Path, targets: pd.DataFrame, static: pd.Series,
                 preset: Preset, cfg: ExtractionConfig, shared: list[Path], progress: Progress | None = None) -> dict:
    """Every configured probe against one arm. `static` is the arm's own per-prompt outcome; `shared` lists
    generation folders whose samples a text probe may reuse (the arm's own, the base's)."""
    s = preset.study
    before = static.reindex(targets["prompt"]).fillna(False).to_numpy(bool)
    out = {"targets": len(targets), "min_dup": s.adaptive_min_dup, "static": _rate(int(before.sum()), len(targets)),
           "probes": {}}
    for name in s.adaptive_probes:
        probe = PROBES[name]
        query = probe.query(arm, preset, data, targets["prompt"].tolist())
        reuse = next((f for f in shared if can_share(f, arm.pipe, preset.sample, query.conditioning)), None)
        ext = run_extraction(arm.pipe, data, folder / name, targets, s.samples_per_prompt, query.guidance,
                             preset.sample, cfg, progress, samples=reuse, conditioning=query.conditioning)
        found = pd.read_parquet(folder / name / "per_prompt.parquet").set_index("prompt")["extracted"]
        alone = found.reindex(targets["prompt"]).fillna(False).to_numpy(bool)
        union = before | alone
        out["probes"][name] = {
            "title": probe.title, "access": probe.access, "guidance": query.guidance,
            "conditioning": query.conditioning.name, "alone": _rate(int(alone.sum()), len(targets)),
            "adaptive": _rate(int(union.sum()), len(targets)), **paired_change(before, union),
            "unet_evaluations": ext["unet_evaluations"],
            "reused_samples": str(reuse.relative_to(folder.parents[1])) if reuse else None}
    return out


def search_negative_control(pipe: AuditPipeline, data: ImageDataset, folder: Path, preset: Preset, n: int,
                            delta: float, progress: Progress | None = None) -> dict:
    """The embedding search aimed at never-trained captions: the share whose generations land within delta of their
    own never-seen picture, beside the same captions' share with plain text (the calibration's model null)."""
    prompts, own = nonmember_prompts(data, n, seed=preset.data.seed)
    seeds = list(range(preset.study.samples_per_prompt))
    rates = {}
    for label, conditioning in (("text", None), ("embedding-search", search(preset))):
        samples = folder / label / "samples"
        rows = generate(pipe, prompts["prompt"].tolist(), seeds, [preset.sample.guidance], preset.sample, samples,
                        progress, conditioning=conditioning)
        images, index = load_samples(samples, rows, side=data.images.shape[1])
        rates[label] = {**model_null(images, index, own, (delta,))[0],
                        "unet_evaluations": int(np.sum(rows["unet_evals"]))}
    bound = preset.study.null_bound
    return {**rates, "bound": bound, "passed": rates["embedding-search"]["rate"] <= bound}
