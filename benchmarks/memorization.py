"""Does the quick-preset model memorize, on the honest yardstick? Per exact copy count, the rate of captions
with a generation within the calibrated delta of their *own* training image (Clopper-Pearson 95%), the family
count and the family/other hits beside it; the model null delta was chosen against; and how well the model
follows its captions (same-seed/other-caption over same-caption/other-seed distance; >= 1: the caption decides).

Targets (issue 12): model null <= 2% (upper bound <= 4%); >= 50% of >= 32-copy images memorized; singletons
alone in their family <= 3% (upper 95% bound). Usage:
    python benchmarks/memorization.py [--run runs/demo] [--guidance 1 3] [--singletons 300]
With --run naming a finished study, its calibration samples (seed0/null/samples) are reused.
"""

import argparse
from pathlib import Path

from rich.console import Console

from diffaudit.config import load_preset
from diffaudit.demo import memorization_by_duplication
from diffaudit.model.prepare import prepare_data, prepare_model
from diffaudit.progress import make_progress


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--reference", type=Path, default=Path("models/quick"))
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--singletons", type=int, default=300)
    args = parser.parse_args()
    console = Console()
    fmt = {"float_format": lambda v: f"{v:.3f}", "index": False}
    for g in args.guidance:
        preset = load_preset(args.preset, overrides={"sample": {"guidance": g}})
        with make_progress(console) as progress:
            data = prepare_data(preset, args.run / "data", progress)
            pipe = prepare_model(preset, data, args.run / "train", args.reference, progress)
            shared = args.run / "seed0" / "null" / "samples" if g == preset.sample.guidance else None
            result = memorization_by_duplication(pipe, data, preset, args.run / f"memorization-g{g:g}", args.samples,
                                                 args.singletons, progress, null_samples=shared)
        cal, null = result.calibration, result.calibration["model_null"]
        console.print(f"\nguidance {g:g}, {preset.sample.sampler}-{preset.sample.steps}, seeds 0..{args.samples - 1},"
                      f" model {pipe.model_hash()}, dataset {data.version}")
        console.print(f"delta {cal['delta']:g} (cap {cal['cap']:g}); model null {null['hits']}/{null['n']} = "
                      f"{null['rate']:.3f} [{null['ci_low']:.3f}, {null['ci_high']:.3f}] "
                      f"{'MET' if cal['met'] else 'MISSED'}; image null {cal['image_null']}")
        console.print("model null by delta:")
        console.print(" ".join(f"{r['delta']:g}:{r['hits']}/{r['n']}" for r in cal["model_null_by_delta"]))
        console.print(result.rates.to_string(**fmt))
        console.print(result.headline.to_string(**fmt))
        head = result.headline.set_index("group")
        dup, single = head.loc["dup>=32"], head.loc["singleton"]
        console.print(f"target dup>=32 rate >= 0.50: {dup['rate']:.2f} [{dup['ci_low']:.2f}, {dup['ci_high']:.2f}] "
                      f"{'MET' if dup['rate'] >= 0.5 else 'MISSED'}; singletons upper bound <= 0.03: "
                      f"{single['rate']:.3f} [{single['ci_low']:.3f}, {single['ci_high']:.3f}] "
                      f"{'MET' if single['ci_high'] <= 0.03 else 'MISSED'}")
        for name, f in (("singleton", result.following), ("nonmember", cal["caption_following_nonmember"])):
            console.print(f"caption following ({name} captions): same seed/other caption "
                          f"{f['same_seed_other_caption']:.3f} / same caption/other seed "
                          f"{f['same_caption_other_seed']:.3f} = {f['ratio']:.2f}")
        console.print(f"sample grid: {result.grid}")


if __name__ == "__main__":
    main()
