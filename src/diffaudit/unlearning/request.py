"""Which training rows a deletion request names: pictures (by row id or content hash), subjects, or a caption concept.

A picture is every row that carries its pixels (a duplicate kept under another id is the same picture), a subject
every row of its near-duplicate family, a concept every row whose caption contains the text. A request that
matches no training row is an error that names the key, never an empty deletion.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import ConfigError
from diffaudit.model.lineage import read_lineage


@dataclass(frozen=True)
class ForgetRequest:
    images: tuple[str, ...] = ()  # row ids or content hashes (sha256)
    families: tuple[str, ...] = ()
    caption_contains: str | None = None

    def __post_init__(self) -> None:
        if not (self.images or self.families or self.caption_contains):
            raise ConfigError("a deletion request needs --images, --family or --caption-contains")

    @property
    def kind(self) -> str:
        """A caption concept is verified with paraphrases too; pictures and subjects by their own captions."""
        return "concept" if self.caption_contains else "family" if self.families else "images"

    def rows(self, members: pd.DataFrame) -> np.ndarray:
        """Mask over `members` (a lineage or the member split's table) of every row the request names."""
        keep = np.zeros(len(members), dtype=bool)
        for key in self.images:
            hit = (members["id"] == key) | (members["sha256"] == key.lower())
            if not hit.any():
                raise ConfigError(f"--images {key!r}: no training row has this id or content hash")
            keep |= members["sha256"].isin(set(members.loc[hit, "sha256"])).to_numpy()
        for family in self.families:
            hit = (members["family"] == family).to_numpy()
            if not hit.any():
                raise ConfigError(f"--family {family!r}: no training row belongs to this subject")
            keep |= hit
        if self.caption_contains:
            hit = members["text"].str.contains(self.caption_contains, regex=False).to_numpy()
            if not hit.any():
                raise ConfigError(f"--caption-contains {self.caption_contains!r}: no training caption contains it")
            keep |= hit
        return keep

    def to_json(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


def as_held(model: Path, data: ImageDataset) -> tuple[ImageDataset, pd.DataFrame, set[str]]:
    """`data` as `model` holds it: without member rows deleted from it before (absent from its lineage, or steered
    away by a fine-tune, which its manifest lists), with its lineage and those earlier deletions."""
    trained = read_lineage(model, data.root)
    manifest = Path(model) / "training_manifest.json"
    earlier = set(json.loads(manifest.read_text()).get("unlearning", {}).get("forgotten_ids", [])
                  ) if manifest.exists() else set()
    ids = data.table["id"]
    gone = (data.table["split"] == "member") & (~ids.isin(trained["id"]) | ids.isin(earlier))
    return data.where(~gone.to_numpy()), trained, earlier


def retained(data: ImageDataset, forget_ids: set[str]) -> ImageDataset:
    """The dataset without the forgotten member rows (held-out splits unchanged, so audits still have them)."""
    gone = (data.table["split"] == "member") & data.table["id"].isin(forget_ids)
    return data.where(~gone.to_numpy())


def most_extracted_families(pairs: Path, members: pd.DataFrame, min_rows: int) -> tuple[str, ...]:
    """The study's request: whole families, ranked by how many generations copied one of their pictures in the base
    model's extraction audit (`pairs.parquet`), then by rows, until at least `min_rows` training rows are named."""
    copied = pd.read_parquet(pairs).query("kind == 'own'").groupby("family").size()
    ranked = pd.DataFrame({"rows": members.groupby("family").size()})
    ranked["copies"] = copied.reindex(ranked.index).fillna(0)
    ranked = ranked.reset_index().sort_values(["copies", "rows", "family"], ascending=[False, False, True])
    total = ranked["rows"].cumsum().to_numpy()
    k = int(np.searchsorted(total, min_rows)) + 1
    if total[-1] < min_rows:
        raise ConfigError(f"forget.min_rows={min_rows} exceeds the {total[-1]} training rows")
    return tuple(ranked["family"].head(k))
