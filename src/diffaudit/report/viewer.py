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
from diffaudit.model.generate import INDEX, KEY, load_samples
from diffaudit.report.results import StudyResults

COLUMNS = [  # (key, heading, kind)
    ("pair", "generation | training image", "image"), ("arm", "arm", "text"), ("seed", "seed", "num"),
    ("prompt", "prompt", "text"), ("match", "copy of", "text"), ("family", "subject (family)", "text"),
    ("distance", "tiled RMS distance", "num"),
    ("dup_count", "copies in training set", "num"), ("dup_kind", "duplication kind", "text"),
    ("clique", "clique size", "num"), ("detector_score", "detector score", "num"), ("train_id", "training id", "text"),
]


def _png_uri(generated: np.ndarray, training: np.ndarray, scale: int = 4) -> str:
    buf = io.BytesIO()
    pair_image(generated, training, scale).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def extracted_pairs(res: StudyResults) -> list[dict]:
    """Every (generation, training image) pair the probe confirmed, in every arm and seed, with context."""
    members = load_imagefolder(res.run / "data").split("member")
    rows = []
    for seed in res.seeds:
        detector = {}
        tiered = res.run / f"seed{seed}" / "tiered" / "detector_scores.parquet"
        if tiered.exists():
            detector = pd.read_parquet(tiered).set_index("prompt")["detector_score"].to_dict()
        for arm in [r["arm"] for r in res.rows if r["seed"] == seed and r.get("kind") != "detection"]:
            folder = res.run / f"seed{seed}" / arm / "extraction"
            pairs = pd.read_parquet(folder / "pairs.parquet")
            if pairs.empty:
                continue
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
                })
    return rows


def write_viewer(run: Path, out: Path | None = None) -> Path:
    res = StudyResults.load(run)
    out = Path(out or Path(run) / "viewer.html")
    rows = extracted_pairs(res)
    page = (Path(__file__).parent / "templates" / "viewer.html").read_text()
    title = f"diffaudit extraction viewer · run {res.record['hashes']['base_model'][:8]} · preset {res.preset}"
    def embed(value: object) -> str:  # JSON inside <script>: "</" must not close the element
        return json.dumps(value).replace("</", "<\\/")

    # Rows go in last, so text inside a prompt can never be taken for one of the placeholders.
    page = (page.replace("{{title}}", html.escape(title)).replace("/*COLUMNS*/[]", embed(COLUMNS))
            .replace("/*ROWS*/[]", embed(rows)))
    write_text(out, page)
    return out
