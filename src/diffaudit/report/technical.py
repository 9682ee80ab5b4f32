"""`diffaudit report technical RUN`: the full technical report as one self-contained HTML file.

Everything a reviewer needs to check or reproduce the study: per-arm and per-bucket tables, paired tests,
membership-inference ROC summaries and curves, compute, configs, seeds, versions and the full assumptions
register. Images are embedded, so the file can be archived on its own.
"""

import base64
import html
import json
from pathlib import Path

import jinja2
import pandas as pd

from diffaudit.io import write_text
from diffaudit.report.findings import ALPHA, arm_effects
from diffaudit.report.results import StudyResults, by_dup

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
     "is the largest grid value (up to Carlini's 0.15) at which the share of those captions with a sample within "
     "delta of their own unseen image (the model null) meets the target. The image null (never-trained images "
     "within delta of a member image) is reported beside it; families make it ~0 by construction."),
    ("Near-duplicate families", "Codepoint variants (skin tone, gender, hair) and images within the join "
     "threshold (connected components over the whole pool) form one family; splits take whole families."),
    ("Tiered detection", "A one-step memorization detector (Wen et al. 2024 text-conditional noise norm, or "
     "Webster 2023 edge consistency) scores every prompt; only the top fraction goes to the full probe. Cost is "
     "counted in UNet evaluations, exactly, by a counter around the denoiser."),
    ("Membership inference", "Loss (Carlini et al. 2022 threshold on denoising error), PIA (Kong et al. 2024), "
     "SecMI (Duan et al. 2023), CLiD (Zhai et al. 2024) and, when shadows are trained, LiRA (Carlini et al. 2022). "
     "Members are unique training images with their most frequent caption; non-members a family-disjoint "
     "hold-out. A "
     "model-free classifier on pixels and caption embeddings checks the split is at chance (Dubiński et al. 2024)."),
    ("Paired test", "Arms are compared with the base model on the same prompts with an exact McNemar test "
     f"(binomial on the prompts whose outcome changed); 'changed beyond chance' means p < {ALPHA}."),
    ("Intervals", "Rates: exact Clopper-Pearson 95%. AUC and TPR at fixed FPR: percentile bootstrap 95% (scipy)."),
    ("Utility", "Held-out denoising loss on the non-member split, and a Fréchet distance between generated and "
     "real glyphs in the features of an autoencoder trained only on OpenMoji glyphs outside every split."),
]



def _num(x: float | None) -> str:
    """Three significant digits; null (strict JSON's NaN) as n/a."""
    return "n/a" if x is None else f"{x:.3g}"

def _uri(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.exists() else None


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="–", border=0, classes="t")


def _mia_table(row: dict, run: Path) -> pd.DataFrame:
    summary = json.loads((run / f"seed{row['seed']}" / row["arm"] / "mia" / "summary.json").read_text())
    out = []
    for attack, res in summary["attacks"].items():
        for subset in ("all", "singleton_members"):
            r = res[subset]
            out.append({"attack": attack, "members": subset, "n": f"{r['members']}+{r['nonmembers']}",
                        "AUC": r["auc"], "AUC 95% CI": "{:.3f}–{:.3f}".format(*r["auc_ci"]),
                        "TPR@1%FPR": r["tpr_at_1pct_fpr"], "TPR@0.1%FPR": r["tpr_at_0.1pct_fpr"],
                        "UNet queries/sample": res["queries_per_sample"]})
    return pd.DataFrame(out)


def _by_delta(row: dict) -> pd.DataFrame:
    probe = pd.DataFrame(row["extraction_by_delta"]).set_index("delta")
    oracle = pd.DataFrame(row["oracle_by_delta"]).set_index("delta")
    return pd.DataFrame({"delta": probe.index, "probe prompts": probe["hits"].to_numpy(),
                         "probe rate": probe["rate"].to_numpy(), "probe 95% CI": [
                             f"{lo:.3f}–{hi:.3f}" for lo, hi in zip(probe["ci_low"], probe["ci_high"], strict=True)],
                         "oracle prompts": oracle["hits"].to_numpy(), "oracle rate": oracle["rate"].to_numpy(),
                         "oracle 95% CI": [f"{lo:.3f}–{hi:.3f}"
                                           for lo, hi in zip(oracle["ci_low"], oracle["ci_high"], strict=True)]})


def _calibration(res: StudyResults) -> str:
    cal = res.calibration
    null = cal["model_null"]
    manifest = res.run / "data" / "manifest.json"
    families = json.loads(manifest.read_text()).get("families", {}) if manifest.exists() else {}
    following = cal["caption_following_nonmember"]
    text = (f"<p>delta = {cal['delta']:g} ({'calibrated' if cal['calibrated'] else 'fixed by the config'}; cap "
            f"{cal['cap']:g}; target model null &le; {cal['target']:.0%}, upper bound &le; {cal['bound']:.0%}: "
            f"{'met' if cal['met'] else 'NOT met'}). Model null at delta: {null['hits']} of {null['n']} never-trained "
            f"captions ({null['rate']:.3f}, 95% CI {null['ci_low']:.3f}–{null['ci_high']:.3f}), "
            f"{cal['samples_per_prompt']} samples each at guidance {cal['guidance']:g}, model "
            f"{cal['model_hash'][:12]}. Image null (never-trained images within delta of a member): "
            + ", ".join(f"{v:.3f} at {k}" for k, v in cal["image_null"].items()) + ".</p>")
    if families:
        text += (f"<p>Families: {families['families']} over {families['distinct_renders']} distinct renders, joined "
                 f"at {families['family_join']:g}, the largest {families['largest_family']} images. An IID split of "
                 f"the same pool would put {families['iid_false_copy_rate']:.1%} of the non-members within "
                 f"{families['family_join']:g} of a member; the family-disjoint split "
                 f"{families['false_copy_rate']:.1%}.</p>")
    text += (f"<p>Caption following on never-trained captions: same-seed/other-caption RMS "
             f"{following['same_seed_other_caption']:.3f} over same-caption/other-seed "
             f"{following['same_caption_other_seed']:.3f} = {following['ratio']:.2f} (&ge; 1: the caption decides "
             "the picture more than the seed).</p>")
    return text + _table(pd.DataFrame(cal["model_null_by_delta"]))


def write_technical(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "technical_report.html")
    sections = [("Copy threshold and its nulls", _calibration(res))]
    arms = res.arms()
    sections.append(("Extraction before and after each mitigation (pooled over seeds)", _table(arms)))
    sections.append(("Paired comparison with the base model", _table(pd.DataFrame(
        [e.__dict__ | {"verdict": e.verdict} for e in arm_effects(res)]))))
    per_seed = pd.read_parquet(res.run / "comparison.parquet")
    sections.append(("Every arm and seed", _table(per_seed)))
    for row in [r for r in res.rows if r.get("kind") != "detection"]:
        summary = json.loads((res.run / f"seed{row['seed']}" / row["arm"] / "extraction" / "summary.json").read_text())
        buckets = by_dup(summary).merge(by_dup(summary, "oracle_by_dup"), on="dup_bucket", suffixes=("", "_oracle"))
        body = (f"<p>At delta {row['delta']:g}: {row['prompts_with_copy']} of {row['attacked_prompts']} prompts "
                f"copied their own image ({row['extracted_images']} images, {row['extracted_families']} families); "
                f"{row['family_prompts']} prompts copied a near-duplicate sibling and {row['other_prompts']} another "
                f"subject. Oracle: {row['oracle_memorized_prompts']} prompts memorized "
                f"({_num(row['oracle_rate'])}, 95% CI {_num(row['oracle_ci'][0])}–{_num(row['oracle_ci'][1])}), "
                f"{row['oracle_family_hit_prompts']} more with a family hit only. Probe precision "
                f"{_num(row['probe_precision'])}, recall {_num(row['probe_recall'])} against the oracle; guidance "
                f"{row['guidance']:g}; {row['extraction_unet_evals']} UNet evaluations; model "
                f"{row['model_hash'][:12]}.</p>" + _table(buckets)
                + "<h4>Sensitivity to delta (rate of prompts; probe and oracle)</h4>" + _table(_by_delta(row)))
        if row["arm"] == "base":
            body += ("<h4>Probe recall against the oracle by generations per prompt N and clique size</h4>"
                     + _table(pd.DataFrame(row["probe_sweep"])))
        if row.get("mia"):
            roc = _uri(res.run / f"seed{row['seed']}" / row["arm"] / "mia" / "roc.png")
            body += f"<p>Split check (model-free AUC): {row['split_check_auc']:.3f}</p>" + _table(
                _mia_table(row, res.run)) + (f'<img src="{roc}" alt="ROC curves" width="420">' if roc else "")
        for key in ("dedup", "dp"):
            if key in row:
                body += f"<h4>{key} report</h4><pre>{html.escape(json.dumps(row[key], indent=2))}</pre>"
        sections.append((f"Arm {row['arm']} (seed {row['seed']}): extraction by duplication bucket", body))
    for row in [r for r in res.rows if r.get("kind") == "detection"]:
        dump = html.escape(json.dumps(row, indent=2))
        sections.append((f"Tiered detection (seed {row['seed']})", f"<pre>{dump}</pre>"))
    sections.append(("Assumptions register", _table(pd.DataFrame(res.assumptions))))
    sections.append(("Configuration (preset as run)", f"<pre>{html.escape(json.dumps(res.config, indent=2))}</pre>"))
    record = {k: v for k, v in res.record.items() if k != "config"}
    sections.append(("Hashes and package versions", f"<pre>{html.escape(json.dumps(record, indent=2))}</pre>"))
    sections.append(("Methods", "".join(f"<h4>{html.escape(t)}</h4><p>{html.escape(d)}</p>" for t, d in METHODS)))
    template = jinja2.Environment(loader=jinja2.PackageLoader("diffaudit.report", "templates"),
                                  autoescape=jinja2.select_autoescape(["html"])).get_template("technical.html")
    page = template.render(title=f"diffaudit technical report · preset {res.preset} · seeds {res.seeds}",
                           run=str(res.run), sections=[(t, jinja2.utils.markupsafe.Markup(b)) for t, b in sections])
    write_text(out, page)
    return out
