"""Does a faster sampler keep the extraction verdicts? A solver at fewer steps is only a speed-up if it finds
the copies the study's sampler finds: on the same prompts, seeds, guidance and threshold, the share of the
reference's extracted prompts the candidate also extracts must be >= 95% (and the oracle's, for the record).

The reference is an extraction folder of a study run (`--run`): every arm whose summary has the requested
guidance, the model's text conditioning and the study's sampler. The candidate's samples go to `--out`
(content-keyed, so a rerun reuses them).
Usage: python benchmarks/sampler_verdicts.py --run runs/quick4 --model models/quick --sampler unipc --steps 10
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.attacks.metrics import clopper_pearson
from diffaudit.config import SampleConfig
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import make_progress
from diffaudit.study.extraction_audit import run_extraction


def references(run: Path, model_hash: str, guidance: float) -> Path:
    """The extraction folder of the study arm that sampled this model at this guidance with its own text."""
    for summary in sorted(run.glob("seed*/*/extraction/summary.json")):
        s = json.loads(summary.read_text())
        if s["model_hash"] == model_hash and s["guidance"] == guidance and s.get("conditioning", "text") == "text":
            return summary.parent
    raise SystemExit(f"no extraction of model {model_hash} at guidance {guidance:g} under {run}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--out", type=Path, default=Path("runs/sampler-verdicts"))
    args = parser.parse_args()
    pipe = AuditPipeline.from_pretrained(args.model)
    data = load_imagefolder(args.run / "data")
    print("| guidance | reference | candidate | reference extracted | kept [95% CI] | new | oracle: reference, "
          "candidate, kept |")
    print("|---|---|---|---|---|---|---|")
    for g in args.guidance:
        ref_dir = references(args.run, pipe.model_hash(), g)
        ref = json.loads((ref_dir / "summary.json").read_text())
        ref_prompts = pd.read_parquet(ref_dir / "per_prompt.parquet")
        cfg = ExtractionConfig(**{k: ref["assumptions"][k] for k in ("delta", "edge_threshold", "min_clique",
                                                                     "clique_fraction")})
        out = args.out / f"{args.sampler}{args.steps}-g{g:g}"
        with make_progress() as progress:
            run_extraction(pipe, data, out, ref_prompts[["prompt", "dup_count", "caption_count", "dup_kind"]], ref[
                "samples_per_prompt"], g, SampleConfig(sampler=args.sampler, steps=args.steps), cfg, progress)
        cand = pd.read_parquet(out / "per_prompt.parquet").set_index("prompt").reindex(ref_prompts["prompt"])
        ref_prompts = ref_prompts.set_index("prompt")
        line = []
        for col in ("extracted", "memorized"):
            pos = ref_prompts[col]
            kept = int((pos & cand[col]).sum())
            line.append((int(pos.sum()), kept, int((~pos & cand[col]).sum()), int(cand[col].sum())))
        (n, kept, new, _), (on, okept, _, ocand) = line
        lo, hi = clopper_pearson(kept, n) if n else (float("nan"), float("nan"))
        print(f"| {g:g} | {ref['sampler']}-{ref['steps']} | {args.sampler}-{args.steps} | {n} | {kept}/{n} = "
              f"{kept / max(n, 1):.0%} [{lo:.0%}, {hi:.0%}] | {new} | {on}, {ocand}, {okept} |", flush=True)


if __name__ == "__main__":
    main()
