"""The assumptions register: every threshold, split and threat-model choice behind a result, as data.

It is written once, before any mitigation arm runs, and printed in every report, so a reader can see
exactly what "extracted" or "member" meant for the numbers beside it.
"""

import json

from diffaudit.attacks.metrics import BOOTSTRAP_RESAMPLES, MIN_NONMEMBERS_PER_MILLE
from diffaudit.attacks.mia import access
from diffaudit.config import CARLINI_DELTA, Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.pipeline import AuditPipeline


def register(preset: Preset, data: ImageDataset, pipe: AuditPipeline, calibration: dict) -> list[dict]:
    s, dp = preset.study, preset.dp
    probe, cal, mia = preset.extraction, preset.calibration, preset.membership
    guide, dedup, adv = preset.guidance, preset.dedup, preset.adaptive
    null = calibration["model_null"]
    iid = _manifest(data).get("families", {}).get("iid_false_copy_rate")
    splits = data.table["split"].value_counts().to_dict()
    params = sum(p.numel() for p in pipe.unet.parameters())
    rows = [
        ("threat model", "Extraction attacker", "Black-box: can prompt the model and see images; knows (or guesses) "
         "training captions; uses the training set only to confirm candidate copies, as Carlini et al. did.",
         "Carlini et al. 2023 §4"),
        ("threat model", "Membership attacker", "White-box: reads the model's noise predictions for an (image, "
         "caption) pair; per attack, " + "; ".join(f"{a}: {access(a).removeprefix('white-box: ')}"
                                                   for a in mia.attacks) + ". LiRA also knows the training recipe "
         "and trains shadow models. None of this is available to a user of a hosted image generator.",
         "Carlini et al. 2022; Duan et al. 2023; Kong et al. 2024; Zhai et al. 2024"),
        ("extraction", "What counts as extracted", f"A generation within tiled-RMS distance delta = "
         f"{calibration['delta']:g} (max over 4x4 tiles, pixels in [0,1]) of the prompt's own training image; "
         "copies of a near-duplicate sibling (same family) or of another subject are counted separately.",
         f"Carlini et al. 2023 §4.2 (delta = {CARLINI_DELTA})" + (", lowered by calibration"
                                                                   if calibration["delta"] < cal.delta else "")),
        ("extraction", "Copy threshold calibration", (f"delta is the largest value up to {cal.delta:g} at which the "
         f"model null stays <= {cal.null_target:.0%} (upper 95% bound <= {cal.null_bound:.0%})" if cal.calibrate else
         "delta is fixed by the config (calibration.calibrate = false), not calibrated") + ": at delta = "
         f"{calibration['delta']:g}, {null['hits']} of {null['n']} never-trained captions ({null['rate']:.1%}, 95% CI "
         f"{null['ci_low']:.1%}-{null['ci_high']:.1%}) had a generation within delta of their own unseen image"
         + ("" if calibration["met"] else f"; the null target is NOT met ({calibration['reason']})") + ".",
         "diffaudit; thresholds calibrated on never-trained data"),
        ("extraction", "Image null", "Never-trained images within delta of some member image: "
         + ", ".join(f"{v:.1%} at {k}" for k, v in calibration["image_null"].items())
         + (f" (family-disjoint splits; an IID split of the same pool gives {iid:.1%} at "
            f"{preset.data.family_join:g})" if iid is not None else "") + ".", "Carlini et al. 2023; diffaudit"),
        ("extraction", "Clique filter", f"A prompt is flagged when >= max({probe.min_clique}, ceil(N*10/500)) of its "
         f"N = {probe.samples_per_prompt} generations are pairwise within {probe.edge_threshold}.",
         "Carlini et al. 2023: ~10 of 500; floor of 3 is ours"),
        ("extraction", "Prompts attacked", f"The {probe.prompts_top} most-duplicated training captions.",
         "Carlini et al. 2023 attacked the 350k most-duplicated LAION captions"),
        ("extraction", "Sampling", f"Headline: {s.samplers[0].name} with {s.samplers[0].steps} steps, guidance "
         f"{preset.sample.guidance:g}, seeds 0..{probe.samples_per_prompt - 1} per prompt. Every arm is also measured "
         f"with {', '.join(x.key for x in s.samplers[1:]) or 'no other sampler'} (a verdict must hold under each); "
         f"the base and guidance arms also with {', '.join(x.key for x in s.reference_samplers) or 'nothing else'}, "
         "outside the verdicts. Membership scores do not sample and are measured once.",
         "deployed pipelines: DDIM without the x0 clamp, DPM-Solver++ (diffusers defaults)"),
        ("extraction", "Copy test per setting", f"Delta is calibrated once at the headline setting; every other "
         f"(sampler, guidance) setting gets its own model null on {cal.setting_null_prompts} never-trained captions, "
         f"and a setting whose upper 95% bound exceeds {cal.null_bound:.1%} is not judged.", "diffaudit"),
        ("verdicts", "What counts as a fix", "The owner's check (every generation against the caption's own "
         "picture), paired by picture, exact McNemar per sampler, Holm over the arms; fewer under every default "
         f"sampler, not the other way at any replicate seed ({', '.join(map(str, s.seeds[1:])) or 'none'}), undone by "
         "no probe. The outsider's clique-filtered count is reported beside it.", "diffaudit; Carlini et al. 2023"),
        ("splits", "Member / non-member", f"Splits are family-disjoint: whole near-duplicate families (codepoint "
         f"variants joined with images within {preset.data.family_join:g}) go to one split, in seeded random order: "
         f"{splits}. A model-free classifier checks the split is at chance.", "Dubiński et al. 2024; diffaudit"),
        ("membership", "Evaluation set", f"{mia.per_side} unique member images vs {mia.per_side} "
         "non-members; members carry their most frequent training caption. Deduplicated arms score the members "
         "they kept.", "diffaudit"),
        ("membership", "Settings chosen without the evaluation labels", (
            f"Timesteps are the papers' (DDPM linear; Stable Diffusion's for CLiD) matched to this model's schedule "
            f"by noise level. Each attack's timestep, direction and (CLiD) alpha and scalers are chosen on "
            f"{mia.tune_per_side} labelled members and non-members per side whose near-duplicate families are "
            "disjoint from the scored samples; the choice is recorded beside each AUC and, per arm, at the end of "
            "this register. A direction is reversed only when the tuning AUC's upper 95% bound is below 0.5."
            if mia.tune_per_side else "Timesteps are the papers' matched to this model's schedule by noise level; "
            "directions as published; no tuning."),
         "Kong et al. 2024; Duan et al. 2023; Zhai et al. 2024"),
        ("membership", "Controls", (f"Positive control: the '{mia.control_preset}' preset (few images seen hundreds "
         "of times, same architecture) must be found by every attack. " if mia.control_preset else
         "No positive control configured. ") + "Negative control: two family-disjoint halves of never-trained "
         "images must score at chance (99% interval covers 0.5).", "diffaudit"),
        ("model scale", "Miniature model", f"{params / 1e6:.1f} M-parameter pixel-space UNet at "
         f"{pipe.resolution}x{pipe.resolution}, MiniLM text encoder, trained on {int(splits.get('member', 0))} "
         "rows. Stable Diffusion v1 has ~860 M UNet parameters, 512x512 latents and ~2 B LAION images: "
         "rates here are not rates for a production model.", "Rombach et al. 2022"),
        ("mitigation", "Deduplication", f"Caption dedup by {', '.join(dedup.methods)}; image dedup as a "
         "comparison arm; retrained with the same steps and seed.", "Carlini et al. 2023; Webster et al. 2023"),
        ("mitigation", "Guidance", f"Scales {list(guide.sweep)} applied to the base model at sampling.",
         "Ho & Salimans 2022"),
        ("mitigation", "DP fine-tuning scope", f"DP-SGD on the calibration split only (epsilons {list(dp.epsilons)}, "
         f"delta = {dp.delta:g}, {dp.steps} steps). The guarantee covers the calibration data, not the original "
         "training set; it is audited on calibration images vs held-out images (empirical epsilon, Clopper-Pearson)"
         + (", with a non-private fine-tune as the audit's positive control." if dp.control else "."),
         "Dockhorn et al. 2023; Jagielski et al. 2020; Opacus"),
        ("mitigation", "Inference-time settings", f"Embedding noise of {preset.inference.noise_scale:g} x the "
         f"caption embeddings' standard deviation; {preset.inference.random_words} random training-vocabulary words "
         "inserted; the text-guidance norm lowered by Adam steps until below the "
         f"{preset.inference.norm_quantile:.0%} quantile of never-trained (calibration) captions' norms. All drawn "
         "fresh per generation, applied to whatever a user sends; void for anyone holding the weights.",
         "Somepalli et al. 2023b; Wen et al. 2024"),
        ("threat model", "Adaptive attacker", (f"Probes {', '.join(adv.probes)} on the attacked captions "
         f"whose image has >= {adv.min_dup} copies: the weights holder samples at guidance "
         f"{preset.sample.guidance:g} with no inference-time setting; the paraphraser types {adv.paraphrases} other "
         f"captions per target through the arm's settings; the embedding search takes {adv.search_steps} Adam steps "
         f"of {adv.search_step:g} x the embeddings' standard deviation up the text-guidance norm (white-box), never "
         "seeing the target image. The attacker keeps what works: "
         "adaptive = static OR probe, tested against static by exact McNemar, Holm-adjusted over arms and probes."
         if adv.probes else "No adaptive probes configured."), "Wen et al. 2024; Somepalli et al. 2023b"),
        ("utility", "Quality measures", "Held-out denoising loss on the non-member split and a Fréchet distance in "
         "the features of an autoencoder trained only on OpenMoji glyphs outside every split.", "diffaudit"),
        ("statistics", "Intervals", f"Rates: exact Clopper-Pearson 95%; AUC and TPR: percentile bootstrap 95% "
         f"({BOOTSTRAP_RESAMPLES} resamples, members and non-members resampled separately); attack vs attack: paired "
         f"bootstrap of the AUC difference; TPR at 0.1% FPR only with >= {MIN_NONMEMBERS_PER_MILLE} non-members.",
         "Clopper & Pearson 1934"),
    ]
    return [{"category": c, "item": i, "statement": st, "source": src} for c, i, st, src in rows]


def _manifest(data: ImageDataset) -> dict:
    """The dataset's own manifest (diffaudit-built datasets have one; a user's may not)."""
    path = data.root / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}
