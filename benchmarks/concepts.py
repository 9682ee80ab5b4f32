"""Does the model under audit generalize as well as memorize? One preset per run, side by side in the results page.

For a preset (quick: one OpenMoji picture per concept; scenes: compositional scenes, each glyph in many pictures):
the model (the reference when it matches, else trained here: its training seconds are the budget), then at guidance 1
under the headline sampler
- memorization by copy count and the model null (`demo.memorization_by_duplication`: own-picture copy rate for >= 32
  copies and for singletons, delta calibrated on never-trained captions), its caption-following ratio on singletons;
- for scenes, the concept hit rate: a classifier trained on fresh renders (`concepts.py`; its own top-1 accuracy
  reported) says which glyph a generation holds, and a hit is a top glyph the caption names; separately for unseen
  combinations of seen glyphs and for unseen glyphs, with chance beside each; and the caption-following ratio on the
  same captions, on whole pictures and on their glyph layer (the background, which the caption names, set to grey).
Targets (issue 34): concept hit >= 50% top-1 and caption following >= 1.0 at guidance 1, while >= 50% of >= 32-copy
scenes are still extracted and the model null stays <= 2%.
With --also-guidance G, the concept measures again at scale G on the first 100 captions of each group: a diagnostic of
whether the conditioning exists but is weak at guidance 1.
Usage: python benchmarks/concepts.py --preset scenes --run runs/scenes [--reference MODEL] [--samples 8]
       [--also-guidance 3]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.attacks.memorization import caption_following
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.concepts import glyph_layer, train_classifier
from diffaudit.config import load_preset
from diffaudit.data.openmoji import named_glyphs
from diffaudit.demo import memorization_by_duplication
from diffaudit.figures import sample_grid
from diffaudit.model.generate import generate
from diffaudit.model.prepare import prepare_data, prepare_model, trained_folder
from diffaudit.model.shards import load_samples
from diffaudit.progress import make_progress

DIAGNOSTIC_CAPTIONS = 100


def concept_hits(pipe: object, data: object, preset: object, run: Path, samples: int, progress: object,
                 also_guidance: tuple[float, ...] = ()) -> dict:
    """Concept hit rate and caption following on the never-trained scenes, by whether their glyphs were seen; with
    `also_guidance`, the same on the first `DIAGNOSTIC_CAPTIONS` captions at each other scale (does stronger guidance
    bring out a conditioning that guidance 1 leaves weak?)."""
    manifest = json.loads((Path(data.root) / "manifest.json").read_text())["families"]
    by_code = {g.code: g for g in named_glyphs()}
    codes = manifest["scene_glyphs"] + manifest["unseen_glyphs"]
    cfg = preset.data.scenes
    classifier = train_classifier([by_code[c] for c in codes], preset.data.resolution, cfg.glyph_px)
    table = data.table[data.table["split"] == "nonmember"].drop_duplicates("text")
    named = table.set_index("text")["emoji"].str.split("_").str[1].str.split("+")
    unseen = set(manifest["unseen_glyphs"])
    groups = {"unseen combination of seen glyphs": [t for t, g in named.items() if not set(g) & unseen],
              "unseen glyph": [t for t, g in named.items() if set(g) & unseen]}
    out = {"classifier_top1": classifier.accuracy, "classes": len(codes)}
    # With other scales, guidance 1 again on the same first captions, so the diagnostic compares like with like.
    settings = [(preset.sample.guidance, None)] + [(g, DIAGNOSTIC_CAPTIONS) for g in
                                                   ((preset.sample.guidance, *also_guidance) if also_guidance else ())]
    for name, captions in groups.items():
        for guidance, limit in settings:
            shown = captions[:limit]
            rows = generate(pipe, shown, list(range(samples)), [guidance], preset.sample, run / "concepts" / "samples",
                            progress)
            images, index = load_samples(run / "concepts" / "samples", rows)
            hits = classifier.hits(images, [named[p] for p in index["prompt"]])
            low, high = clopper_pearson(int(hits.sum()), len(hits))
            chance = float(np.mean([len(named[p]) for p in index["prompt"]]) / len(codes))
            key = name if limit is None else f"{name}, guidance {guidance:g} (first {limit} captions)"
            out[key] = {"captions": len(shown), "generations": len(hits), "guidance": guidance,
                        "hit_rate": float(hits.mean()), "ci": [low, high], "chance": chance,
                        "caption_following": caption_following(images, index),
                        "caption_following_glyphs": caption_following(glyph_layer(images), index)}
            suffix = "" if limit is None else f"-g{guidance:g}"
            sample_grid(images, index, {}, shown[:12], run / "concepts" / f"grid-{name.split()[1]}{suffix}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="scenes")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--singletons", type=int, default=300)
    parser.add_argument("--also-guidance", type=float, nargs="*", default=[],
                        help="also measure concepts at these scales (first 100 captions of each group)")
    args = parser.parse_args()
    preset = load_preset(args.preset)
    with make_progress() as progress:
        data = prepare_data(preset, args.run / "data", progress)
        pipe = prepare_model(preset, data, args.run / "train", args.reference, progress)
        memo = memorization_by_duplication(pipe, data, preset, args.run / "memorization", args.samples,
                                           args.singletons, progress)
        concepts = concept_hits(pipe, data, preset, args.run, args.samples, progress, tuple(args.also_guidance)) \
            if preset.data.scenes else None
    folder = trained_folder(preset, data, args.run / "train", args.reference)
    manifest = json.loads((folder / "training_manifest.json").read_text())
    by_group = pd.DataFrame(memo.headline).set_index("group")
    result = {"preset": args.preset, "resolution": preset.data.resolution, "model_hash": pipe.model_hash(),
              "training_seconds": manifest["seconds"], "training_steps": manifest["steps"],
              "null": memo.calibration["model_null"], "delta": memo.calibration["delta"],
              "memorized_dup32": by_group.loc["dup>=32"].to_dict(), "memorized_singleton":
              by_group.loc["singleton"].to_dict(), "caption_following_singletons": memo.following, "concepts": concepts}
    (args.run / "concepts.json").write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
