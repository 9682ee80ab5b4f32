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
from diffaudit.figures import pair_image
from diffaudit.io import write_text
from diffaudit.layout import RunLayout
from diffaudit.model.shards import INDEX, KEY, load_samples
from diffaudit.study.records import StudyResults

COLUMNS = [  # (key, heading, kind, legend)
    ("pair", "generation | training image", "image", "Left: the generated picture. Right: the training picture it "
     "matched, at the same scale."),
    ("train_id", "training id", "text", "The matched training picture's id; rows are grouped by it."),
    ("generations", "generations of this image", "num", "How many confirmed generations of this arm and seed copy "
     "this training picture (the grouped view shows the closest one)."),
    ("arm", "arm", "text", "The model audited: 'base' has no fix; the others are the mitigations."),
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


def _png_uri(generated: np.ndarray, training: np.ndarray, scale: int = 4) -> str:
    buf = io.BytesIO()
    pair_image(generated, training, scale).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def extracted_pairs(res: StudyResults) -> list[dict]:
    """Every (generation, training image) pair the probe confirmed, in every arm and seed, with context."""
    layout = RunLayout(res.run)
    members = load_imagefolder(layout.data).split("member")
    rows = []
    for seed in res.seeds:
        detector = {}
        tiered = layout.tiered(seed) / "detector_scores.parquet"
        if tiered.exists():
            detector = pd.read_parquet(tiered).set_index("prompt")["detector_score"].to_dict()
        for arm in [r["arm"] for r in res.rows if r["seed"] == seed and r.get("kind") != "detection"]:
            folder = layout.extraction(seed, arm)
            pairs = pd.read_parquet(folder / "pairs.parquet")
            if pairs.empty:
                continue
            per_image = pairs["train_idx"].value_counts()
            per_prompt = pd.read_parquet(folder / "per_prompt.parquet").set_index("prompt")
            index = pd.read_parquet(folder / "samples" / INDEX)
            images, _ = load_samples(folder / "samples", pairs[KEY].merge(index, on=KEY, how="left"))
            for i, p in enumerate(pairs.itertuples()):
                info = per_prompt.loc[p.prompt]
                rows.append({
                    "pair": _png_uri(images[i], members.images[int(p.train_idx)]), "arm": arm,
                    "seed": seed, "prompt": p.prompt, "match": {"own": "its own image", "family": "a sibling",
                                                                "other": "another subject"}[p.kind],
                    "family": str(p.family), "distance": round(float(p.distance), 4),
                    "dup_count": int(info["dup_count"]), "dup_kind": str(info["dup_kind"]),
                    "clique": int(info["clique"]), "detector_score": round(float(detector[p.prompt]), 4)
                    if p.prompt in detector else None, "train_id": str(members.table["id"].iloc[int(p.train_idx)]),
                    "generations": int(per_image[p.train_idx]),
                })
    return rows


def write_viewer(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "viewer.html")
    rows = extracted_pairs(res)
    shown = {(r["arm"], r["seed"]) for r in rows}
    empty = [f"{r['arm']} (seed {r['seed']})" for r in res.rows
             if r.get("kind") != "detection" and (r["arm"], r["seed"]) not in shown]
    page = (Path(__file__).parent / "templates" / "viewer.html").read_text()
    title = f"diffaudit extraction viewer · run {res.record['hashes']['base_model'][:8]} · preset {res.preset}"
    def embed(value: object) -> str:  # JSON inside <script>: "</" must not close the element
        return json.dumps(value).replace("</", "<\\/")

    # Rows go in last, so text inside a prompt can never be taken for one of the placeholders.
    sampler = res.row("base").get("sampler", "the study's sampler")
    none = (f"No copies confirmed by the outsider's probe with {sampler} in: " + ", ".join(empty) + ". Other samplers "
            "and the owner's check can find copies there: the technical report lists every arm under every sampler."
            ) if empty else ""
    page = (page.replace("{{title}}", html.escape(title)).replace("{{no_copies}}", html.escape(none))
            .replace("/*COLUMNS*/[]", embed(COLUMNS))
            .replace("/*ROWS*/[]", embed(rows)))
    write_text(out, page)
    return out
