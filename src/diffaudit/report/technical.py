"""`diffaudit report technical RUN`: the full technical report as one self-contained HTML file.

Everything a reviewer needs to check or reproduce the study: per-arm and per-bucket tables, paired tests,
membership-inference ROC summaries and curves, compute, configs, seeds, versions and the full assumptions
register. Images are embedded, so the file can be archived on its own.
"""

import base64
import html
import json
import tempfile
from pathlib import Path

import jinja2
import pandas as pd

from diffaudit.config import CARLINI_DELTA
from diffaudit.figures import delta_figure
from diffaudit.io import write_text
from diffaudit.layout import RunLayout
from diffaudit.study.audit_records import Interval, MiaRun, OracleBuckets, PairedAuc
from diffaudit.study.deletion_record import DeletionRecord, ForgetStudy, Judgement, Measures
from diffaudit.study.records import ALPHA, StudyResults, attack_settings, by_dup
from diffaudit.study.results_record import AuditRow

METHODS = [
    ("Extraction probe", "Carlini et al. 2023: for each attacked caption, N generations with seeds 0..N-1; a "
     "prompt is flagged when its generations contain a clique of pairwise tiled-RMS distance below the edge "
     "threshold; clique members are compared with the training set (faiss candidates, exact tiled distance). A "
     "prompt is extracted when a clique member lies within delta of the caption's own training image; copies of "
     "a near-duplicate sibling (same family) or of another subject are counted separately. The rate is prompts "
     "extracted / prompts attacked (exact interval); unique images and families are counted beside it. The "
     "oracle applies the same copy test to every generation, without the clique filter, and gives the true "
     "memorized set, so the probe's recall is measured."),
    ("Copy threshold", "One copy test (diffaudit.attacks.copies) for every caller. delta is calibrated before "
     "any arm runs: the base model generates N samples for never-trained, family-disjoint captions, and delta "
     f"is the largest grid value (up to Carlini's {CARLINI_DELTA}) at which the share of those captions with a "
     "sample within delta of their own unseen image (the model null) meets the target. The image null "
     "(never-trained images within delta of a member image) is reported beside it; families make it ~0 by "
     "construction."),
    ("Near-duplicate families", "Codepoint variants (skin tone, gender, hair) and images within the join "
     "threshold (connected components over the whole pool) form one family; splits take whole families."),
    ("Tiered detection", "A cheap memorization detector (Wen et al. 2024 text-conditional noise norm over the first "
     "sampling steps; Webster 2023's one-step x_0 scored by its agreement across seeds; or Jeon et al. 2025 "
     "sharpness) scores every prompt; only the top fraction goes to the full probe. Cost is counted in UNet "
     "evaluations, exactly, by a counter around the denoiser."),
    ("Membership inference", "Loss (Carlini et al. 2022 threshold on denoising error), PIA (Kong et al. 2024), "
     "SecMI (Duan et al. 2023), CLiD (Zhai et al. 2024) and, when shadows are trained, LiRA (Carlini et al. 2022). "
     "Members are unique training images with their most frequent caption; non-members a family-disjoint "
     "hold-out. A "
     "model-free classifier on pixels and caption embeddings checks the split is at chance (Dubiński et al. 2024)."),
    ("Paired test", "Arms are compared with the base model on the same prompts with an exact McNemar test "
     f"(binomial on the prompts whose outcome changed); 'changed beyond chance' means p < {ALPHA}."),
    ("Membership settings", "Published timesteps are for DDPM's linear schedule; each is matched to the audited "
     "model's schedule by noise level (alpha-bar). Each attack's timestep, direction and CLiD's alpha and scalers "
     "are chosen on a labelled tuning set whose near-duplicate families are disjoint from the scored samples."),
    ("DP audit", "Jagielski et al. 2020: Clopper-Pearson bounds on a membership test's TPR and FPR on the "
     "DP-protected calibration images give an empirical lower bound on epsilon; a non-private fine-tune checks "
     "that the audit could see a violation."),
    ("Intervals", "Rates: exact Clopper-Pearson 95%. AUC and TPR at fixed FPR: percentile bootstrap 95%, members "
     "and non-members resampled separately. Attack against attack: paired bootstrap of the AUC difference."),
    ("Utility", "Held-out denoising loss on the non-member split, and a Fréchet distance between generated and "
     "real glyphs in the features of an autoencoder trained only on OpenMoji glyphs outside every split."),
]



P_COLUMNS = ("p_value", "p", "holm_p")


def _num(x: float | None, missing: str = "n/a", form: str = ".3g") -> str:
    """Three significant digits (or `form`, e.g. three decimals for AUCs); null (strict JSON's NaN) and NaN as
    `missing`."""
    return missing if x is None or x != x else format(x, form)


def _p(x: float | None) -> str:
    return "n/a" if x is None or x != x else "p < 0.001" if x < 0.001 else f"p = {x:.3f}"


def _cell(column: str, x: object) -> object:
    """A table cell as a reader wants it: p-values as p < 0.001, floats to 3 significant digits, no NaN."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return x
    if column in P_COLUMNS:
        return _p(float(x))
    return _num(x, "–") if isinstance(x, float) else x


def _uri(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.exists() else None


def _table(frame: pd.DataFrame) -> str:
    """An HTML table: lower interval bounds before upper ones, numbers formatted by `_cell`, in a box that scrolls
    sideways on its own so the page stays within its width."""
    order = list(frame.columns)
    for low, high in (("ci_low", "ci_high"), ("auc_low", "auc_high")):
        if low in order and high in order and order.index(high) < order.index(low):
            order.remove(low)
            order.insert(order.index(high), low)
    shown = pd.DataFrame({c: [_cell(str(c), x) for x in frame[c]] for c in order}, columns=order)
    return '<div class="wide">' + shown.to_html(index=False, na_rep="–", border=0, classes="t", escape=True) + "</div>"


def _record(record: dict) -> str:
    """A nested record (a report, the config, the package versions) as a two-column table instead of raw JSON."""
    def flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
        rows = []
        for k, v in d.items():
            if isinstance(v, dict):
                rows += flat(v, f"{prefix}{k}.")
            else:
                shown = ", ".join(str(_cell(k, x)) for x in v) if isinstance(v, list) else v
                rows.append((f"{prefix}{k}", shown))
        return rows

    return _table(pd.DataFrame([{"setting": k, "value": _cell(k, v)} for k, v in flat(record)]))


def _mia_table(row: AuditRow, run: Path) -> pd.DataFrame:
    path = RunLayout(run).mia(row.seed, row.arm) / "summary.json"
    summary = MiaRun.model_validate(json.loads(path.read_text()))
    out = []
    for attack, res in summary.attacks.items():
        for subset, r in (("all", res.all), ("singleton_members", res.singleton_members)):
            if r is None:
                continue
            out.append({"attack": attack, "members": subset, "n": f"{r.members}+{r.nonmembers}",
                        "AUC": r.auc, "AUC 95% CI": _ci(r.auc_ci),
                        "TPR@1%FPR": r.tpr_at_1pct_fpr, "TPR@1%FPR 95% CI": _ci(r.tpr_at_1pct_fpr_ci),
                        "AUC - loss [95% CI]": _paired(summary.paired.get(f"{attack} - loss")),
                        "chosen on tuning set": _choice(res.choice),
                        "UNet queries/sample": res.queries_per_sample})
    return pd.DataFrame(out)


def _ci(pair: Interval | list[float | None]) -> str:
    return "n/a" if None in pair else "{:.3f}–{:.3f}".format(*pair)


def _paired(p: PairedAuc | None) -> str:
    if p is None or p.difference is None or None in p.ci or p.p_value is None:
        return "–"
    return f"{p.difference:+.3f} [{p.ci[0]:+.3f}, {p.ci[1]:+.3f}], p = {p.p_value:.3g}"


def _choice(choice: dict) -> str:
    """An attack's settings as scored: tuned ones, or the paper's."""
    shown = attack_settings(choice)
    return ("tuned: " if choice.get("tuned") else "paper: ") + ", ".join(f"{k}={v}" for k, v in shown.items())


def _mia_controls(res: StudyResults) -> str:
    """Positive control with its exposure curve, and negative control: whether the attacks can be trusted."""
    pos, neg = res.mia_controls.positive, res.mia_controls.negative
    text = ""
    if pos is not None:
        v = pos.verdict
        passed = [n for n, ok in v.passed.items() if ok]
        failed = [n for n, ok in v.passed.items() if not ok]
        text += (f"<h4>Positive control: preset '{pos.preset}'</h4><p>{pos.members} member images, no planted "
                 f"duplicates, {pos.train_steps} steps of {pos.batch_size} ({pos.epochs:.0f} epochs per "
                 f"image), the audited architecture. The bar: every attack's AUC lower 95% bound &ge; "
                 f"{v.bar.every_attack_auc_lower_bound}, the best AUC &ge; {v.bar.best_auc} and TPR@1%FPR &ge; "
                 f"{v.bar.best_tpr_at_1pct_fpr}. Attacks that pass: {', '.join(passed) or 'none'}; that fail: "
                 f"{', '.join(failed) or 'none'}. Scored in the reverse of the published direction (chosen on the "
                 f"tuning set): {', '.join(n for n, d in v.direction.items() if d == 'reversed') or 'none'}. Best: "
                 f"{v.best} (AUC {_num(v.best_auc, form='.3f')}, TPR@1%FPR {_num(v.best_tpr_at_1pct_fpr, form='.3f')}"
                 + (", i.e. at zero false positives: fewer than 100 non-members" if v.best_tpr_is_zero_fp else "")
                 + f"; bar {'met' if v.best_passed else 'NOT met'}).</p>")
        final = pos.final
        text += _table(pd.DataFrame([{"attack": a, "AUC": r.all.auc, "AUC 95% CI": _ci(r.all.auc_ci),
                                      "TPR@1%FPR": r.all.tpr_at_1pct_fpr,
                                      "AUC - loss [95% CI]": _paired(final.paired.get(f"{a} - loss")),
                                      "chosen on tuning set": _choice(r.choice)}
                                     for a, r in final.attacks.items()]))
        exposure = pd.DataFrame([p.model_dump() for p in pos.exposure])
        wide = exposure.pivot_table(index=["step", "epochs", "relative_loss_gap"], columns="attack",
                                    values=["auc", "tpr_at_1pct_fpr"]).reset_index()
        wide.columns = [" ".join(str(c) for c in col if c) for col in wide.columns]
        text += ("<h4>Exposure: AUC and TPR@1%FPR against epochs per image (snapshots of the positive control's "
                 "run; relative loss gap = held-out minus member loss, over held-out)</h4>" + _table(wide))
        figure = _uri(RunLayout(res.run).mia_controls / pos.figure)
        text += f'<img src="{figure}" alt="exposure curve" width="520">' if figure else ""
    if neg is not None:
        text += (f"<h4>Negative control: never-trained halves on the base model</h4><p>{neg.per_side} vs "
                 f"{neg.per_side} held-out images in family-disjoint halves (settings tuned on "
                 f"{neg.tune_per_side} per side, as for real members). Every 99% interval must cover 0.5: "
                 f"{'passed' if neg.passed else 'FAILED'}.</p>")
        text += _table(pd.DataFrame([{"attack": a, "AUC": r.auc, "AUC 99% CI": _ci(r.auc_ci_99),
                                      "covers 0.5": r.covers_half, "chosen on tuning set": _choice(r.choice)}
                                     for a, r in neg.attacks.items()]))
    return text or "<p>No controls were run (membership.control_preset unset).</p>"


def _dp_audit(res: StudyResults) -> str:
    """Empirical epsilon of every DP arm and of the non-private control, beside the theoretical one."""
    audits = [(r.arm, r.seed, r.dp_audit) for r in res.audited() if r.dp_audit is not None]
    sanity = res.findings.dp_power.sanity_test
    audits += [("dp-nonprivate (control)", int(seed), c.dp_audit) for seed, c in res.dp_controls.items()]
    rows = [{"arm": arm, "seed": seed, "theoretical epsilon": a.theoretical_epsilon, "delta": a.delta,
             "test": test + (" (reported)" if test == a.chosen_test else " (sanity)" if test == sanity else ""),
             "AUC": t.auc, "AUC 95% CI": _ci(t.auc_ci), "TPR": t.tpr, "FPR": t.fpr,
             "measured on": f"{t.measured_members}+{t.measured_heldout}",
             "bound on selection half": t.selection_bound, "empirical epsilon (95%)": t.epsilon_lower_bound}
            for arm, seed, a in audits for test, t in a.tests.items()]
    if not rows:
        return "<p>No DP arm was run.</p>"
    text = ("<p>Calibration images (the data DP protects) against family-disjoint held-out images. The test and its "
            "threshold are chosen on half of the families; the Clopper-Pearson bounds on TPR and FPR are measured on "
            "the other half, and the empirical epsilon is the largest value they rule out. The base model's loss "
            "(it saw neither side) is a sanity check for a shift between the splits, not a DP test. Each image is "
            "treated as an independent trial although the splits are fixed, not drawn per image: the bound is an "
            "estimate, not a proof.</p>")
    for seed, power in res.findings.dp_power.seeds.items():
        eps1 = power.smallest_theoretical
        text += (f"<p>Power check (seed {seed}): the non-private fine-tune reaches an empirical epsilon of "
                 f"{power.empirical_epsilon:.2f}; " + (f"above the smallest theoretical epsilon ({eps1:g}), so the "
                 "audit can see a violation of that size." if power.has_power else
                 f"not above the smallest theoretical epsilon ({eps1}): this audit has NO power to show that bound "
                 "is violated, and its results below say nothing either way.") + "</p>")
    return text + _table(pd.DataFrame(rows))


def _by_delta(row: AuditRow) -> pd.DataFrame:
    probe = pd.DataFrame([r.model_dump() for r in row.extraction_by_delta]).set_index("delta")
    oracle = pd.DataFrame([r.model_dump() for r in row.oracle_by_delta]).set_index("delta")
    return pd.DataFrame({"delta": probe.index, "probe prompts": probe["hits"].to_numpy(),
                         "probe rate": probe["rate"].to_numpy(), "probe 95% CI": [
                             f"{lo:.3f}–{hi:.3f}" for lo, hi in zip(probe["ci_low"], probe["ci_high"], strict=True)],
                         "oracle prompts": oracle["hits"].to_numpy(), "oracle rate": oracle["rate"].to_numpy(),
                         "oracle 95% CI": [f"{lo:.3f}–{hi:.3f}"
                                           for lo, hi in zip(oracle["ci_low"], oracle["ci_high"], strict=True)]})


def _adaptive(res: StudyResults) -> str:
    """Per arm and probe: static, probe-alone and attacker (static OR probe) rates, the Holm-adjusted McNemar test,
    and the embedding search's negative control."""
    cells = res.findings.adaptive
    if not cells:
        return "<p>No adaptive probes were run (adaptive.probes is empty, or no attacked caption was duplicated "\
               "enough).</p>"
    family = [c for c in cells if c.p_value is not None]
    text = (f"<p>Targets: the attacked captions whose image has at least {res.config.adaptive.min_dup} "
            "copies, with the static probe's number of generations per caption. The probe alone is compared with the "
            f"static probe on the same targets (exact McNemar), Holm-adjusted over the {len(family)} comparisons of "
            "mitigated arms whose probe differs from the static query; undone when p &lt; "
            f"{ALPHA} and more captions started than stopped copying. 'static OR probe' (an attacker who keeps both) "
            "is descriptive: a second try of any kind adds copies by chance.</p>")
    text += _table(pd.DataFrame([{
        "arm": c.arm, "probe": c.probe, "access": c.access, "targets": c.targets,
        "static": c.static_rate, "static 95% CI": _ci(c.static_ci), "probe alone": c.alone_rate,
        "probe 95% CI": _ci(c.alone_ci), "stopped / started": f"{c.stopped} / {c.started}",
        "p (Holm)": _p(c.p_value), "verdict": c.verdict, "static OR probe": c.union_rate,
        "UNet evaluations": c.unet_evaluations} for c in cells]))
    control = res.adaptive_control
    if control:
        search, plain = control.search, control.text
        text += (f"<p>Negative control of the embedding search: on {search.n} never-trained captions, "
                 f"{search.hits} had a generation within delta of their own never-seen image "
                 f"({_num(search.rate)}, 95% CI {_ci([search.ci_low, search.ci_high])}), against "
                 f"{plain.hits} with plain text ({_num(plain.rate)}); the bar is rate &le; {control.target:g} "
                 f"and upper bound &le; {control.bound:g}: "
                 + ("passed" if control.passed else "FAILED (the search invents copies; its rates are not evidence)")
                 + ".</p>")
    return text


def _forget_rows(forget: ForgetStudy) -> list[dict]:
    """One row per model of the deletion: the original(s), the reference, each method, the control retrain."""
    def row(model: str, m: Measures, record: DeletionRecord | None = None, judged: Judgement | None = None,
            seconds: float | None = None, share: float | None = None) -> dict:
        c, p, mia = m.copies, m.paraphrase_copies, m.membership
        membership = judged.checks.get("membership") if judged else None
        return {"model": model, "hash": m.model_hash[:12],
                "captions copying": f"{c.captions_with_copy}/{c.captions}", "copy rate": c.rate,
                "95% CI": _ci(c.ci), "pictures copied": f"{c.pictures_copied}/{c.pictures}",
                "paraphrases copying": f"{p.captions_with_copy}/{p.captions}",
                "MIA AUC vs never-trained": mia.auc, "AUC 95% CI": _ci(mia.auc_ci),
                "mean percentile": mia.mean_percentile,
                "vs reference (Mann-Whitney)": _p(membership.p) if membership else "–",
                "held-out loss": m.heldout_loss, "Fréchet": m.frechet_distance,
                "neighbours' loss": m.neighbour_loss,
                "seconds": record.seconds if record else seconds,
                "retrained share": record.retrained_share if record else share,
                "verdict": judged.verdict if judged else "–"}

    first = forget.first
    rows = [row("original (nothing forgotten)", first.measures["original"], None, first.original_against_reference),
            row("reference: retrain without the rows", first.measures["reference"], seconds=forget.reference_seconds,
                share=1.0)]
    for name, r in forget.methods.items():
        if r.verification.verdict == "reference":
            continue  # the retrain reference itself
        if r.sharding_cost is not None:  # a method with its own original, trained sharded
            rows.append(row(f"{name.upper()}: sharded original (nothing forgotten)", r.measures["original"], None,
                            r.original_against_reference))
        rows.append(row(f"{name}: {r.title}", r.measures["unlearned"], r, r.verification))
    if forget.control is not None:
        c = forget.control
        rows.append(row("control: retrain, next seed", c.measures["unlearned"], c, c.verification))
    return rows


def _forget(res: StudyResults) -> str:
    """The deletion request: who was forgotten, how each method did against the reference, the controls."""
    forget = res.forget
    if forget is None:
        return "<p>No deletion request was run (forget.in_study is false).</p>"
    first = forget.first
    proto = first.protocol
    t = proto.thresholds
    text = (f"<p>Request: forget the subject(s) {', '.join(html.escape(f) for f in first.families)} "
            f"({first.rows} training rows, {first.pictures} pictures, {first.captions} captions), the base "
            "model's most copied until at least "
            f"{t['min_rows']} rows. Dataset {first.data_before} before, {first.data_after} after. Each model "
            f"draws {proto.samples_per_caption} samples for every forgotten caption at guidance "
            f"{proto.guidance:g} and again through {proto.paraphrases_per_caption} paraphrases; a copy is a "
            f"sample within delta = {proto.delta:g} of a forgotten picture. Membership: {t['attack']} at its "
            f"paper's settings on the {proto.pairs} distinct (picture, caption) pairs, each ranked among the "
            f"same model's {proto.never_trained_rows} never-trained images. Utility: held-out loss, Fréchet "
            f"distance of {proto.utility_prompts} held-out captions' samples, and the denoising loss of the "
            f"{proto.neighbours} retained pictures nearest the forgotten ones (collateral damage).</p>"
            f"<p>Pass, by the thresholds of the run's config, recorded in run.json before any step (hash "
            f"{proto.thresholds_hash}): copy rates at most the "
            f"reference's + {t['copy_margin']:g}; membership percentiles not distinguishable from the reference's "
            f"(two-sided Mann-Whitney, p &ge; {t['alpha']:g}: less member-like is over-forgetting, itself a "
            f"signal); each utility number at most the reference's × {1 + t['utility_margin']:g}. A failed "
            "verification falls back to retraining.</p>")
    failed = first.original_against_reference
    text += ("<p>Positive control: the original, nothing forgotten, "
             + ("fails as it must (" + ", ".join(failed.failed) + ")" if failed.verdict == "fail" else
                "PASSES: the protocol cannot tell it from the reference, so a pass below proves nothing")
             + ".")
    if forget.control is not None:
        c = forget.control.verification
        text += (" Negative control: a retrain with the next seed " +
                 ("passes, as a faithful deletion must." if c.passed else
                  "FAILS (" + ", ".join(c.failed) + "): the thresholds flag a faithful deletion, so a fail "
                  "below is not evidence on its own."))
    text += "</p>" + _table(pd.DataFrame(_forget_rows(forget)))
    sisa = next((r for r in forget.methods.values() if r.sharding_cost), None)  # a method with a sharded original
    if sisa is not None:
        text += ("<p>SISA's price before any deletion: the sharded ensemble against the unsharded model: "
                 + "; ".join(f"{k.replace('_', ' ')} {_num(v.sharded)} against {_num(v.unsharded)}"
                             for k, v in sisa.sharding_cost.items()) + ".")
        record = sisa.method_record
        if record["stages_retrained"] == record["stages"]:
            text += (" This request touched the first slice of every shard, so SISA retrained everything: its model is "
                     "a sharded retrain from scratch, and where it differs from the unsharded reference it measures "
                     "sharding, not data left behind.")
        share = sisa.single_subject_share
        if share:
            text += (f" This request retrained {record['stages_retrained']} of {record['stages']} stages; forgetting "
                     f"one subject alone would retrain {share.mean:.0%} of them on average over the {share.subjects} "
                     f"subjects (from {share.min:.0%} to {share.max:.0%}), by where the plan put it.")
        text += "</p>"
    return text


def _delta_figure(res: StudyResults, row: AuditRow) -> str:
    """The base arm's probe and oracle rates against delta beside the never-trained null, as an embedded figure."""
    curves = {"black-box probe": [r.model_dump() for r in row.extraction_by_delta],
              "oracle (owner)": [r.model_dump() for r in row.oracle_by_delta],
              "never-trained captions (null)": [r.model_dump() for r in res.calibration.model_null_by_delta]}
    with tempfile.TemporaryDirectory() as tmp:
        uri = _uri(delta_figure(curves, row.delta, Path(tmp) / "delta.png"))
    return f'<img src="{uri}" alt="extraction rate against the copy threshold delta" width="520">'


def _calibration(res: StudyResults) -> str:
    cal = res.calibration
    null = cal.model_null
    manifest = RunLayout(res.run).data / "manifest.json"
    families = json.loads(manifest.read_text()).get("families", {}) if manifest.exists() else {}
    following = cal.caption_following_nonmember
    text = (f"<p>delta = {cal.delta:g} ({'calibrated' if cal.calibrated else 'fixed by the config'}; cap "
            f"{cal.cap:g}; target model null &le; {cal.target:.0%}, upper bound &le; {cal.bound:.0%}: "
            f"{'met' if cal.met else 'NOT met'}). Model null at delta: {null.hits} of {null.n} never-trained "
            f"captions ({null.rate:.3f}, 95% CI {null.ci_low:.3f}–{null.ci_high:.3f}), "
            f"{cal.samples_per_prompt} samples each at guidance {cal.guidance:g}, model "
            f"{cal.model_hash[:12]}. Image null (never-trained images within delta of a member): "
            + ", ".join(f"{v:.3f} at {k}" for k, v in cal.image_null.items()) + ".</p>")
    if families:
        text += (f"<p>Families: {families['families']} over {families['distinct_renders']} distinct renders, joined "
                 f"at {families['family_join']:g}, the largest {families['largest_family']} images. An IID split of "
                 f"the same pool would put {families['iid_false_copy_rate']:.1%} of the non-members within "
                 f"{families['family_join']:g} of a member; the family-disjoint split "
                 f"{families['false_copy_rate']:.1%}.</p>")
    text += (f"<p>Caption following on never-trained captions: same-seed/other-caption RMS "
             f"{following.same_seed_other_caption:.3f} over same-caption/other-seed "
             f"{following.same_caption_other_seed:.3f} = {following.ratio:.2f} (&ge; 1: the caption decides "
             "the picture more than the seed).</p>")
    return text + _table(pd.DataFrame([r.model_dump() for r in cal.model_null_by_delta]))


def _summary(res: StudyResults) -> str:
    """The findings in a paragraph, from the stored rows and findings alone."""
    base = res.row("base")
    b = res.pooled("base")
    lowered = [e for e in res.effects() if e.lowered]
    mia = res.strongest(base) if base.mia else None
    text = (f"<p>Preset {html.escape(res.preset)}, seeds {', '.join(map(str, res.seeds))}, delta "
            f"{base.delta:g}. With no fix, the black-box probe extracted {b.extracted} of {b.prompts} "
            f"attacked captions ({b.rate:.1%}, 95% CI {b.ci_low:.1%}–{b.ci_high:.1%}): {b.images} images "
            f"of {b.families} subjects; the owner's direct check (oracle) found {base.oracle_memorized_prompts} "
            f"captions copying their own image ({base.oracle_rate:.1%}, 95% CI {base.oracle_ci[0]:.1%}–"
            f"{base.oracle_ci[1]:.1%}).")
    if mia:
        judged = res.membership(base)
        said = (f"detectable ({html.escape(str(judged.by))}'s AUC interval lies above 0.5)" if judged.detectable
                else "not clearly detectable (no attack's AUC interval lies wholly above 0.5)")
        text += (f" Membership was {said}; the strongest attack by AUC, {html.escape(mia[0])}, had AUC "
                 f"{mia[1].auc:.3f} ({_ci(mia[1].auc_ci)}; white-box access).")
    text += (" Fixes that lowered the pictures copied (owner's check, picture-paired exact McNemar, Holm-adjusted) "
             "under every default sampler and replicate seed, and that no probe undid: "
             + ("; ".join(f"{html.escape(e.description.title)}: {e.base_owner_pictures} to {e.owner_pictures} of "
                          f"{e.pictures} pictures ({_p(e.p_value)})" for e in lowered) or "none") + ". ")
    others = [e for e in res.effects() if not e.lowered]
    text += ("Not a fix under that rule: " + "; ".join(
        f"{html.escape(e.description.title)} ({html.escape(e.verdict)}"
        + (f"; newly copies {len(e.started_pictures)} picture(s)" if e.started_pictures else "") + ")"
        for e in others) + ".</p>") if others else "</p>"
    return text + _samplers(res)


def _samplers(res: StudyResults) -> str:
    """Every (arm, sampler, seed) measured: owner's and outsider's counts in captions and pictures with intervals,
    the setting's own null and whether the copy test is valid there, and the copy test's near misses."""
    cells = res.findings.cells
    if not cells:
        return ""
    rows = []
    for c in cells:
        row = next((r for r in [*res.audited(), *res.sampler_rows] if r.arm == c.arm and r.seed == c.seed
                    and r.sampler == c.sampler), None)
        misses = row.near_misses.model_dump() if row is not None else {}
        rows.append({"arm": c.arm, "sampler": c.sampler, "seed": c.seed, "setting": c.setting,
                     "owner captions": f"{c.owner_prompts}/{c.prompts} ({_ci(c.owner_ci)})",
                     "owner pictures": f"{c.owner_pictures}/{c.pictures} ({_ci(c.owner_picture_ci)})",
                     "outsider captions": f"{c.outsider_prompts}/{c.prompts} ({_ci(c.outsider_ci)})",
                     "outsider pictures": f"{c.outsider_pictures}/{c.pictures}",
                     "null": f"{c.null.hits}/{c.null.n}" if c.null else "–",
                     "copy test valid": c.null.valid if c.null else "–",
                     "near misses": misses.get("generations", "–"),
                     "saturated share": misses.get("saturated_share", float("nan")),
                     "quality distance": c.frechet_distance})
    switched = pd.DataFrame([s.model_dump() for s in res.findings.switch_sampler])
    probe = "<h3>Switch the sampler (an attacker with the weights)</h3>" + _table(switched) if len(switched) else ""
    return "<h3>Every arm under every sampler and seed</h3>" + _table(pd.DataFrame(rows)) + probe


def write_technical(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "technical_report.html")
    sections = [("Copy threshold and its nulls", _calibration(res)),
                ("Membership inference: positive and negative controls, exposure", _mia_controls(res)),
                ("DP fine-tuning: empirical against theoretical epsilon", _dp_audit(res))]
    arms = res.arms()
    pooled = " (pooled over seeds)" if len(res.seeds) > 1 else f" (seed {res.seeds[0]})"
    sections.insert(0, ("Summary", _summary(res)))
    sections.append((f"Extraction before and after each mitigation{pooled}", _table(arms)))
    sections.append(("Paired comparison with the base model", _table(pd.DataFrame(
        [{"arm": e.arm, "mitigation": e.description.title, "what changed": e.description.what}
         | {k: v for k, v in e.__dict__.items() if k not in ("arm", "description")} | {"verdict": e.verdict}
         for e in res.effects()]))))
    sections.append(("Static against adaptive extraction", _adaptive(res)))
    sections.append(("Deletion requests: forgetting and its verification", _forget(res)))
    per_seed = pd.read_parquet(RunLayout(res.run).comparison)
    sections.append(("Every arm and seed", _table(per_seed)))
    for row in res.audited():
        summary = RunLayout(res.run).extraction(row.seed, row.arm) / "summary.json"
        oracle = OracleBuckets.model_validate(json.loads(summary.read_text())).oracle_by_dup
        buckets = by_dup([b.model_dump() for b in row.by_dup]).merge(
            by_dup([b.model_dump() for b in oracle]), on="dup_bucket", suffixes=("", "_oracle"))
        body = (f"<p>At delta {row.delta:g}: {row.prompts_with_copy} of {row.attacked_prompts} prompts "
                f"copied their own image ({row.extracted_images} images, {row.extracted_families} families); "
                f"{row.family_prompts} prompts copied a near-duplicate sibling and {row.other_prompts} another "
                f"subject. Oracle: {row.oracle_memorized_prompts} prompts memorized "
                f"({_num(row.oracle_rate)}, 95% CI {_num(row.oracle_ci[0])}–{_num(row.oracle_ci[1])}), "
                f"{row.oracle_family_hit_prompts} more with a family hit only. Probe precision "
                f"{_num(row.probe_precision, 'n/a (no prompt flagged)')}, recall "
                f"{_num(row.probe_recall, 'n/a (nothing memorized)')} against the oracle; guidance "
                f"{row.guidance:g}; {row.extraction_unet_evals} UNet evaluations; model "
                f"{row.model_hash[:12]}.</p>" + _table(buckets)
                + "<h4>Sensitivity to delta (rate of prompts; probe and oracle)</h4>" + _table(_by_delta(row)))
        if row.arm == "base":
            body += _delta_figure(res, row)
            body += ("<h4>Probe recall against the oracle by generations per prompt N and clique size</h4>"
                     + _table(pd.DataFrame([p.model_dump() for p in row.probe_sweep])))
        if row.mia:
            roc = _uri(RunLayout(res.run).mia(row.seed, row.arm) / "roc.png")
            gap = row.mia_loss_gap
            body += (f"<p>Split check (model-free AUC): {row.split_check_auc:.3f}. Held-out loss gap: non-members "
                     f"{_num(gap.nonmember_loss)} vs members {_num(gap.member_loss)} ({gap.relative_gap:+.1%})."
                     "</p>") + _table(
                _mia_table(row, res.run)) + (f'<img src="{roc}" alt="ROC curves" width="420">' if roc else "")
        own = {k: v.model_dump(mode="json") for k, v in (("dp", row.dp), ("dp_audit", row.dp_audit)) if v is not None}
        for key, value in (own | row.extras).items():  # what the mitigation recorded of itself, as it is
            if isinstance(value, dict):
                body += f"<h4>{key} report</h4>" + _record(value)
        sections.append((f"Arm {row.arm} (seed {row.seed}): extraction by duplication bucket", body))
    for seed in res.seeds:
        if (tiered := res.tiered(seed)) is not None:
            sections.append((f"Tiered detection (seed {seed})", _record(tiered.model_dump())))
    sections.append(("Assumptions register", _table(pd.DataFrame(res.assumptions))))
    sections.append(("Configuration (preset as run)", _record(res.config.model_dump(mode="json"))))
    sections.append(("Hashes and package versions", _record({k: v for k, v in res.record.items() if k != "config"})))
    sections.append(("Methods", "".join(f"<h4>{html.escape(t)}</h4><p>{html.escape(d)}</p>" for t, d in METHODS)))
    template = jinja2.Environment(loader=jinja2.PackageLoader("diffaudit.report", "templates"),
                                  autoescape=jinja2.select_autoescape(["html"])).get_template("technical.html")
    page = template.render(title=f"diffaudit technical report · preset {res.preset} · seeds {res.seeds}",
                           run=str(res.run), sections=[(t, jinja2.utils.markupsafe.Markup(b)) for t, b in sections])
    write_text(out, page)
    return out
