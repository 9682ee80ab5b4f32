"""`diffaudit report viewer RUN`: one static HTML page with every extracted pair of every arm.

The page needs no server and no network: pairs are embedded as data-URI images and a small script sorts
and filters the table in place, so it can be mailed or attached to an audit record as a single file.
"""

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.errors import ConfigError
from diffaudit.figures import pair_image
from diffaudit.io import write_text
from diffaudit.layout import RunLayout
from diffaudit.model.shards import INDEX, KEY, load_samples
from diffaudit.study.records import StudyResults

COLUMNS = [  # (key, heading, kind, legend)
    ("pair", "generation | training image", "image", "Left: the generated picture. Right: the training picture it "
     "matched, at the same scale."),
    ("train_id", "training id", "text", "The matched training picture's id; rows are grouped by it."),
    ("generations", "generations of this image", "num", "How many generations of this model and seed copy this "
     "training picture, in either view (the grouped view shows the closest one)."),
    ("arm", "fix", "text", "The model audited, named as in the memo: 'No fix' is the model as trained; the others "
     "are the fixes."),
    ("seed", "seed", "num", "The training seed of that model."),
    ("prompt", "prompt", "text", "The training caption the attacker typed."),
    ("match", "copy of", "text", "Its own image: the caption's own training picture. A sibling: a near-duplicate of "
     "it (same subject family). Another subject: a different family."),
    ("family", "subject (family)", "text", "The near-duplicate family (subject) of the matched picture."),
    ("distance", "tiled RMS distance", "num", "Largest per-tile root-mean-square pixel difference on [0, 1]; a copy "
     "is at most the study's delta."),
    ("dup_count", "copies in training set", "num", "How many times the caption's picture appears in the training set."),
    ("dup_kind", "duplication kind", "text", "How the copies were planted: same image and caption, same image with "
     "other captions, or the same caption on other images."),
    ("clique", "clique size", "num", "The largest group of this prompt's generations that are near-copies of each "
     "other (the probe's evidence of memorization)."),
    ("detector_score", "detector score", "num", "The cheap memorization detector's score for the prompt (tiered "
     "audit); higher means more likely memorized."),
]


BASE_NAME = "No fix (the model as trained)"
MATCH = {"own": "its own image", "family": "a sibling", "other": "another subject"}


def _png_uri(generated: np.ndarray, training: np.ndarray, scale: int = 4) -> str:
    buf = io.BytesIO()
    pair_image(generated, training, scale).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _keys(folder: Path, guidance: float) -> pd.DataFrame:
    """Every generation of an arm's extraction (a row of `matches.parquet`) with the key of its sample. The probe drew
    them prompt by prompt, seeds 0..N-1, at the arm's one guidance (`generate`'s request order); the probe's own pairs,
    which carry their seed, are checked against that order."""
    matches = pd.read_parquet(folder / "matches.parquet")
    keys = matches.assign(seed=matches.groupby("prompt", sort=False).cumcount(), guidance=float(guidance))
    pairs = pd.read_parquet(folder / "pairs.parquet")
    if not pairs.empty and (keys["seed"].to_numpy()[pairs["sample"].to_numpy(dtype=int)] != pairs["seed"]).any():
        raise ConfigError(f"{folder}: matches.parquet is not in the order its samples were drawn in")
    return keys


def extracted_pairs(res: StudyResults) -> list[dict]:
    """Every generation that copies a training picture, in every arm and seed, with context: those the outsider's
    probe confirmed (`outsider`) and those the owner's check finds within delta of their caption's own picture
    (`owner`); a generation can be both."""
    layout = RunLayout(res.run)
    members = load_imagefolder(layout.data).split("member")
    names = fix_names(res)
    rows = []
    for seed in res.seeds:
        detector = {}
        tiered = layout.tiered(seed) / "detector_scores.parquet"
        if tiered.exists():
            detector = pd.read_parquet(tiered).set_index("prompt")["detector_score"].to_dict()
        for row in [r for r in res.audited() if r.seed == seed]:
            folder = layout.extraction(seed, row.arm)
            keys = _keys(folder, row.guidance)
            found = {int(p.sample): {"train_idx": int(p.train_idx), "kind": p.kind, "distance": float(p.distance),
                                     "outsider": True, "owner": p.kind == "own"}
                     for p in pd.read_parquet(folder / "pairs.parquet").itertuples()}
            for m in keys[keys["kind"] == "own"].itertuples():
                found.setdefault(int(m.sample), {"train_idx": int(m.own_idx), "kind": "own",
                                                 "distance": float(m.own_distance), "outsider": False})["owner"] = True
            if not found:
                continue
            samples = sorted(found)
            images, _ = load_samples(folder / "samples",
                                     keys.iloc[samples][KEY].merge(pd.read_parquet(folder / "samples" / INDEX),
                                                                   on=KEY, how="left"))
            per_prompt = pd.read_parquet(folder / "per_prompt.parquet").set_index("prompt")
            per_image = pd.Series([found[i]["train_idx"] for i in samples]).value_counts()
            for image, sample in zip(images, samples, strict=True):
                f, prompt = found[sample], keys["prompt"].iloc[sample]
                info = per_prompt.loc[prompt]
                rows.append({
                    "pair": _png_uri(image, members.images[f["train_idx"]]), "arm": names.get(row.arm, row.arm),
                    "seed": seed, "prompt": prompt, "match": MATCH[f["kind"]],
                    "family": str(members.table["family"].iloc[f["train_idx"]]), "distance": round(f["distance"], 4),
                    "dup_count": int(info["dup_count"]), "dup_kind": str(info["dup_kind"]),
                    "clique": int(info["clique"]), "detector_score": round(float(detector[prompt]), 4)
                    if prompt in detector else None, "train_id": str(members.table["id"].iloc[f["train_idx"]]),
                    "generations": int(per_image[f["train_idx"]]), "outsider": f["outsider"], "owner": f["owner"],
                })
    return rows


def fix_names(res: StudyResults) -> dict[str, str]:
    """Each arm in the memo's words (the mitigation's own title), the base as the model with no fix."""
    return {"base": BASE_NAME} | {e.arm: e.description.title for e in res.effects()}


def write_viewer(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "viewer.html")
    rows = extracted_pairs(res)
    names = fix_names(res)
    confirmed = {(r["arm"], r["seed"]) for r in rows if r["outsider"]}
    empty = [f"{names.get(r.arm, r.arm)} (seed {r.seed})" for r in res.audited()
             if (names.get(r.arm, r.arm), r.seed) not in confirmed]
    page = (Path(__file__).parent / "templates" / "viewer.html").read_text()
    title = f"diffaudit extraction viewer · run {res.base_model[:8]} · preset {res.preset}"
    def embed(value: object) -> str:  # JSON inside <script>: "</" must not close the element
        return json.dumps(value).replace("</", "<\\/")

    # Rows go in last, so text inside a prompt can never be taken for one of the placeholders.
    sampler = res.row("base").sampler
    none = (f"No copies confirmed by the outsider's probe with {sampler} in: " + ", ".join(empty) + ". Switch to the "
            "owner's check to see the copies it finds there; the technical report lists every fix under every sampler."
            ) if empty else ""
    page = (page.replace("{{title}}", html.escape(title)).replace("{{no_copies}}", html.escape(none))
            .replace("/*COLUMNS*/[]", embed(COLUMNS))
            .replace("/*ROWS*/[]", embed(rows)))
    write_text(out, page)
    return out
