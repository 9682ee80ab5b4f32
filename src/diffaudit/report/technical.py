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
     "threshold; clique members are matched to their nearest training image (faiss, then exact tiled distance) "
     "and a training image counts as extracted when a member lies within delta of it. The oracle compares every "
     "generation with the whole training set (no clique filter) and gives the true memorized set, so the probe's "
     "recall is measured; the filter's own precision is flagged-and-memorized / flagged (per-prompt table)."),
    ("Tiered detection", "A one-step memorization detector (Wen et al. 2024 text-conditional noise norm, or "
     "Webster 2023 edge consistency) scores every prompt; only the top fraction goes to the full probe. Cost is "
     "counted in UNet evaluations, exactly, by a counter around the denoiser."),
    ("Membership inference", "Loss (Carlini et al. 2022 threshold on denoising error), PIA (Kong et al. 2024), "
     "SecMI (Duan et al. 2023), CLiD (Zhai et al. 2024) and, when shadows are trained, LiRA (Carlini et al. 2022). "
     "Members are unique training images with their most frequent caption; non-members an IID hold-out. A "
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


def write_technical(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "technical_report.html")
    sections = []
    arms = res.arms()
    sections.append(("Extraction before and after each mitigation (pooled over seeds)", _table(arms)))
    sections.append(("Paired comparison with the base model", _table(pd.DataFrame(
        [e.__dict__ | {"verdict": e.verdict} for e in arm_effects(res)]))))
    per_seed = pd.read_parquet(res.run / "comparison.parquet")
    sections.append(("Every arm and seed", _table(per_seed)))
    for row in [r for r in res.rows if r.get("kind") != "detection"]:
        summary = json.loads((res.run / f"seed{row['seed']}" / row["arm"] / "extraction" / "summary.json").read_text())
        buckets = by_dup(summary).merge(by_dup(summary, "oracle_by_dup"), on="dup_bucket", suffixes=("", "_oracle"))
        body = (f"<p>Probe precision {_num(row['probe_precision'])}, recall {_num(row['probe_recall'])} against "
                f"the oracle "
                f"({row['oracle_memorized_prompts']} memorized prompts); guidance {row['guidance']:g}; "
                f"{row['extraction_unet_evals']} UNet evaluations; model {row['model_hash'][:12]}.</p>"
                + _table(buckets))
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
