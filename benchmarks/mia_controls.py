"""Can the membership attacks be trusted? The positive control (the `overfit` preset: 64 images, 200 epochs, the
quick model's architecture) with its exposure curve, and LiRA with target-recipe shadows on the same regime.

Targets (issue 13): every attack's AUC lower 95% bound >= 0.8 on the positive control, the best AUC >= 0.95 and
TPR@1%FPR >= 0.3; LiRA's leave-one-shadow-out AUC well above chance. The negative control runs inside every study
(results.json: mia_controls.negative). Usage:
    python benchmarks/mia_controls.py [--out runs/mia-controls] [--shadows 16]
A finished positive control in OUT/positive (e.g. a study's mia-controls/positive) is reused, not retrained.
`--diagnose-secmi` prints why SecMI points the wrong way on the control model (issue 13's "find out why").
"""

import argparse
import json
from pathlib import Path

from rich.console import Console

from diffaudit.config import PRESETS
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.io import jsonable, write_json
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import make_progress
from diffaudit.study.mia_audit import run_mia, train_shadows
from diffaudit.study.mia_controls import positive_control


def diagnose_secmi(out: Path, console: Console) -> None:
    """SecMI starts from the DDIM inversion of x_0, which uses the model's own noise prediction at t = 0. A memorized
    image gets a near-zero prediction there, so its inverted x_t carries almost no noise: an input the model never
    trained on. Compare SecMI as published with the same one-step error from a genuinely noised x_t."""
    import torch
    from scipy.stats import spearmanr

    from diffaudit.attacks.metrics import auc
    from diffaudit.attacks.mia.common import matched_timestep, noised, per_sample, query_batch
    from diffaudit.attacks.mia.secmi import SecMI, ddim_move
    from diffaudit.study.mia_audit import evaluation_set

    pipe = AuditPipeline.from_pretrained(out / "positive" / "train" / "model")
    images, table = evaluation_set(load_imagefolder(out / "positive" / "data"), 48)
    batch, labels = query_batch(pipe, images, table["text"].tolist()), table["label"].to_numpy()
    with torch.inference_mode():
        norm0 = per_sample(pipe.denoiser(batch.latents, 0, batch.cond)).numpy()
        console.print(f"||eps_0||^2: members {norm0[labels == 1].mean():.4f}, non-members "
                      f"{norm0[labels == 0].mean():.4f} (AUC of -||eps_0||: {auc(labels, -norm0):.3f})")
        for t in (20, 50, 100, 200):
            secmi = SecMI(t=t).score(pipe, batch)
            hi, lo = matched_timestep(pipe, t), matched_timestep(pipe, round(t * 0.9))
            noise = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(0))
            x = noised(pipe, batch.latents, noise, lo)
            back = ddim_move(pipe, ddim_move(pipe, x, lo, hi, batch.cond), hi, lo, batch.cond)
            console.print(f"t={t}: SecMI AUC {auc(labels, secmi):.3f}; Spearman(error, ||eps_0||) "
                          f"{spearmanr(-secmi, norm0).statistic:.2f}; from a noised start "
                          f"{auc(labels, -per_sample(back - x).numpy()):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/mia-controls"))
    parser.add_argument("--preset", default="overfit")
    parser.add_argument("--shadows", type=int, default=16, help="LiRA shadow models (0: skip LiRA)")
    parser.add_argument("--attacks", nargs="+", default=["loss", "pia", "secmi", "clid"])
    parser.add_argument("--diagnose-secmi", action="store_true")
    args = parser.parse_args()
    console, preset = Console(width=150), PRESETS[args.preset]
    with make_progress(console) as progress:
        control = positive_control(preset, args.attacks, args.out / "positive", progress)
        lira = None
        if args.shadows:
            data = load_imagefolder(args.out / "positive" / "data")
            target = AuditPipeline.from_pretrained(args.out / "positive" / "train" / "model")
            shadows = train_shadows(data, preset, args.shadows, args.out / "shadows", progress)
            lira = run_mia(target, data, args.out / "lira", [*args.attacks, "lira-online", "lira-offline"],
                           preset.membership.per_side, shadows, progress, tune_per_side=preset.membership.tune_per_side)
    write_json(args.out / "benchmark.json", jsonable({"positive": control, "lira": lira}))
    console.print(f"\npositive control '{preset.name}': {control['members']} images, {control['epochs']:.0f} epochs, "
                  f"model {control['final']['model_hash']}, dataset {control['final']['dataset_version']}")
    for name, r in control["final"]["attacks"].items():
        a = r["all"]
        console.print(f"  {name:8s} AUC {a['auc']:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}]  TPR@1%FPR "
                      f"{a['tpr_at_1pct_fpr']:.3f}  {json.dumps(r['choice'])}")
    console.print(f"verdict: {json.dumps(control['verdict'])}")
    for key, p in control["final"]["paired"].items():
        console.print(f"  {key}: {p['difference']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] p={p['p_value']:.3g}")
    console.print("exposure (AUC by epochs per image):")
    for row in control["exposure"]:
        console.print(f"  step {row['step']:4d} epochs {row['epochs']:6.1f} {row['attack']:8s} AUC {row['auc']:.3f} "
                      f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}] TPR@1% {row['tpr_at_1pct_fpr']:.3f} "
                      f"loss gap {row['relative_loss_gap']:+.1%}")
    if lira:
        for name in ("lira-online", "lira-offline"):
            r = lira["attacks"][name]
            a = r["all"]
            console.print(f"{name}: AUC {a['auc']:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}] TPR@1%FPR "
                          f"{a['tpr_at_1pct_fpr']:.3f}; leave-one-shadow-out AUC mean "
                          f"{r['leave_one_shadow_out']['mean']:.3f}, min {r['leave_one_shadow_out']['min']:.3f}")
    if args.diagnose_secmi:
        diagnose_secmi(args.out, console)


if __name__ == "__main__":
    main()
