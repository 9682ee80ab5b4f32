"""Does the quick-preset model memorize? Rate, per duplication count, of captions whose generations come
within RMS 0.15 of their own training image (Clopper-Pearson 95% intervals), at one or more guidance scales.

Target (issue 3): with 16 generations per caption, >= 50% of captions of images duplicated >= 32 times,
and <= 2% of singletons. Usage: python benchmarks/memorization.py [--run runs/demo] [--guidance 1 3]
"""

import argparse
from pathlib import Path

from rich.console import Console

from diffaudit.config import load_preset
from diffaudit.demo import memorization_by_duplication, prepare_data, prepare_model
from diffaudit.progress import make_progress


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--reference", type=Path, default=Path("models/quick"))
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--singletons", type=int, default=100)
    args = parser.parse_args()
    console = Console()
    for g in args.guidance:
        preset = load_preset(args.preset, overrides={"sample": {"guidance": g}})
        with make_progress(console) as progress:
            data = prepare_data(preset, args.run / "data", progress)
            pipe = prepare_model(preset, data, args.run / "train", args.reference, progress)
            result = memorization_by_duplication(pipe, data, preset, args.run / f"memorization-g{g:g}", args.samples,
                                                 args.singletons, progress)
        console.print(f"\nguidance {g:g}, {preset.sample.sampler}-{preset.sample.steps}, seeds 0..{args.samples - 1},"
                      f" model {pipe.model_hash()}")
        console.print(result.rates.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        console.print(result.headline.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        head = result.headline.set_index("group")
        dup, single = head.loc["dup>=32"], head.loc["singleton"]
        dup_met = "MET" if dup["rate"] >= 0.5 else "MISSED"
        single_met = "MET" if single["rate"] <= 0.02 else "MISSED"
        console.print(f"target dup>=32 rate >= 0.50: {dup['rate']:.2f} [{dup['ci_low']:.2f}, {dup['ci_high']:.2f}] "
                      f"{dup_met}; singletons <= 0.02: {single['rate']:.2f} "
                      f"[{single['ci_low']:.2f}, {single['ci_high']:.2f}] {single_met}")


if __name__ == "__main__":
    main()
