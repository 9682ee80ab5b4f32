"""Near misses of the copy test per extraction folder, under the issue's rule (Gu ratio <= 0.2) and without the
ratio (nearest training picture is the caption's own, delta <= distance < 2 delta); grids of the second kind."""
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
from diffaudit.attacks.copies import MISS_FACTOR, near_misses, saturation
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.figures import pairs_grid
from diffaudit.model.shards import load_samples
run = Path(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
delta = json.loads((run / "steps" / "calibration.json").read_text())["delta"]
members = load_imagefolder(run / "data").split("member")
rows = []
for ext in sorted(run.glob("seed0/*/extraction")) + sorted(run.glob("seed0/*/sampler-*/extraction")):
    if "tiered" in str(ext) or "choice" in str(ext):
        continue
    m = pd.read_parquet(ext / "matches.parquet")
    strict = near_misses(m, delta)
    loose = ((m["kind"] != "own") & (m["own_distance"] >= delta) & (m["own_distance"] < MISS_FACTOR * delta)
             & (m["nearest_idx"] == m["own_idx"]))
    name = str(ext.relative_to(run / "seed0")).replace("/extraction", "").replace("/", "_")
    miss = m[loose].sort_values("own_distance")
    sat = float("nan")
    if len(miss):
        images, _ = load_samples(ext / "samples", side=members.images.shape[1])
        index = pd.read_parquet(ext / "samples" / "index.parquet")
        gens = images[miss["sample"].to_numpy()] if len(images) == len(m) else None
        if gens is not None:
            refs = members.images[miss["own_idx"].to_numpy()]
            sat = float(saturation(gens, refs).mean())
            pairs_grid(gens[:60], refs[:60], out / f"near-misses_{name}.png", columns=6)
    rows.append({"extraction": name, "generations": len(m), "copies": int((m["kind"] == "own").sum()),
                 "near_misses_gu_0.2": int(strict.sum()), "near_misses_nearest_own": int(loose.sum()),
                 "captions_with_only_near_misses": int(len(set(miss["prompt"]) - set(m.loc[m["kind"] == "own", "prompt"]))),
                 "saturated_share": round(sat, 3)})
cols = list(rows[0])
print("| " + " | ".join(cols) + " |"); print("|" + "---|" * len(cols))
for r in rows: print("| " + " | ".join(str(r[c]) for c in cols) + " |")
