"""Compositional scenes from OpenMoji: one or two glyphs at random positions and sizes on a background colour the
caption names ("cat face to the left of deciduous tree, on blue"), so every concept is drawn in many pictures.

OpenMoji draws each concept once, so a model trained on it can only copy a concept's one picture or fail to draw it;
it cannot show that it *generalizes*. Here each seen glyph appears in many member scenes; the nonmember split holds
scenes of glyph pairs no member scene shows (unseen combinations of seen glyphs) and scenes of glyphs held out of
training altogether (unseen glyphs). A scene's family is its glyphs and relation axis (same glyphs, left/right or
above/below), so splits are family-disjoint. LAION-like duplication is planted as exact copies of chosen member
scenes at the config's copy counts, each with a caption no other scene has.
"""

from collections import Counter
from itertools import combinations

import numpy as np
from PIL import Image, ImageDraw

from diffaudit.config import DataConfig, SceneConfig
from diffaudit.data.families import near_copies
from diffaudit.data.openmoji import Glyph, PlannedRow, glyph_font, named_glyphs
from diffaudit.errors import DatasetError
from diffaudit.progress import Progress

# Background colours the caption names; far apart in RGB so a colour is never ambiguous at low resolution.
PALETTE = {"white": (255, 255, 255), "black": (20, 20, 20), "red": (220, 40, 40), "green": (40, 170, 70),
           "blue": (40, 80, 220), "yellow": (240, 220, 40), "purple": (140, 60, 180), "orange": (245, 140, 30)}
RELATIONS = {"to the left of": "h", "above": "v"}  # a relation and its axis (the family ignores the order)
GLYPH_RENDER = 128


def scene_glyphs(cfg: SceneConfig, rng: np.random.Generator) -> list[Glyph]:
    """Single-codepoint glyphs with short names (no flags, skin tones or keycaps), each rendering to something
    visible; a seeded random choice of `glyphs + unseen_glyphs`."""
    pool = [g for g in named_glyphs() if "-" not in g.code and len(g.name.split()) <= 3
            and not any(w in g.name for w in ("flag", "keycap", "skin tone", "button", "sign", "symbol"))]
    if len(pool) < cfg.glyphs + cfg.unseen_glyphs:
        raise DatasetError(f"only {len(pool)} OpenMoji glyphs qualify for scenes; the config asks "
                           f"{cfg.glyphs + cfg.unseen_glyphs}")
    return [pool[i] for i in rng.permutation(len(pool))[: cfg.glyphs + cfg.unseen_glyphs]]


def glyph_sprite(glyph: Glyph, font: object) -> Image.Image:
    """The glyph in colour on a transparent canvas, cropped to what it draws."""
    canvas = Image.new("RGBA", (GLYPH_RENDER, GLYPH_RENDER), (0, 0, 0, 0))
    chars = "".join(chr(int(h, 16)) for h in glyph.code.split("-"))
    ImageDraw.Draw(canvas).text((GLYPH_RENDER / 2, GLYPH_RENDER / 2), chars, font=font, embedded_color=True,
                                anchor="mm")
    return canvas.crop(canvas.getbbox())


def draw_scene(sprites: list[Image.Image], sizes: list[int], places: list[tuple[int, int]], colour: str,
               resolution: int) -> np.ndarray:
    """Sprites pasted at `places` (top-left) and `sizes` (the longer side) on a `colour` background."""
    scene = Image.new("RGBA", (resolution, resolution), (*PALETTE[colour], 255))
    for sprite, size, place in zip(sprites, sizes, places, strict=True):
        scale = size / max(sprite.size)
        small = sprite.resize((max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))),
                              Image.Resampling.LANCZOS)
        scene.alpha_composite(small, place)
    return np.asarray(scene.convert("RGB"), dtype=np.uint8)


def layout(n: int, relation: str | None, glyph_px: tuple[int, int], resolution: int, rng: np.random.Generator
           ) -> tuple[list[int], list[tuple[int, int]]]:
    """Sizes and top-left corners: one glyph anywhere; two glyphs apart along the relation's axis."""
    sizes = [int(rng.integers(glyph_px[0], glyph_px[1] + 1)) for _ in range(n)]
    if n == 1:
        return sizes, [(int(rng.integers(0, resolution - sizes[0] + 1)), int(rng.integers(0, resolution - sizes[0]
                                                                                              + 1)))]
    first_end = int(rng.integers(sizes[0], resolution - sizes[1] + 1))  # where the first glyph ends on the axis
    along = [first_end - sizes[0], int(rng.integers(first_end, resolution - sizes[1] + 1))]
    across = [int(rng.integers(0, resolution - s + 1)) for s in sizes]
    axis = RELATIONS[relation]
    return sizes, [(a, c) if axis == "h" else (c, a) for a, c in zip(along, across, strict=True)]


def _caption(names: list[str], relation: str | None, colour: str) -> str:
    return f"{names[0]} {relation} {names[1]}, on {colour}" if relation else f"{names[0]}, on {colour}"


def plan_scenes(cfg: DataConfig, progress: Progress) -> tuple[list[PlannedRow], dict]:
    """Every row of the scene dataset (members expanded by the duplication plan) and its statistics."""
    scenes_cfg = cfg.scenes
    assert scenes_cfg is not None
    rng = np.random.default_rng(cfg.seed)
    task = progress.add_task("compose scenes", total=None)
    glyphs = scene_glyphs(scenes_cfg, rng)
    font = glyph_font()
    sprites = {g.code: glyph_sprite(g, font) for g in glyphs}
    seen, unseen = glyphs[: scenes_cfg.glyphs], glyphs[scenes_cfg.glyphs:]
    pairs = list(combinations(range(len(seen)), 2))
    families = [(p, axis) for p in pairs for axis in ("h", "v")]
    order = rng.permutation(len(families))
    # Unseen combinations of seen glyphs: half for the nonmember split, half for calibration (no family in two splits).
    held_out = [families[i] for i in order[: 2 * scenes_cfg.heldout_families]]
    held, held_cal = set(held_out[::2]), set(held_out[1::2])
    numbered = iter(range(10**6))

    def scene(idx: list[int], pool: list[Glyph], relation: str | None, split: str) -> PlannedRow:
        names = [pool[i].name for i in idx]
        colour = str(rng.choice(list(PALETTE)))
        text = _caption(names, relation, colour)
        sizes, places = layout(len(idx), relation, scenes_cfg.glyph_px, cfg.resolution, rng)
        pixels = draw_scene([sprites[pool[i].code] for i in idx], sizes, places, colour, cfg.resolution)
        code = f"s{next(numbered):05d}_" + "+".join(pool[i].code for i in idx)  # row ids stay unique
        family = "+".join(sorted(pool[i].code for i in idx)) + (f"-{RELATIONS[relation]}" if relation else "")
        return PlannedRow(Glyph(code, " and ".join(names)), pixels, text, split, family)

    def random_scene(pool: list[Glyph], allowed: object, split: str) -> PlannedRow:
        while True:
            if rng.random() < scenes_cfg.two_glyph_share:
                i, j = (int(k) for k in rng.choice(len(pool), 2, replace=False))
                relation = str(rng.choice(list(RELATIONS)))
                key = ((min(i, j), max(i, j)), RELATIONS[relation])
                if allowed(key):
                    return scene([i, j], pool, relation, split)
            elif allowed(None):
                return scene([int(rng.integers(len(pool)))], pool, None, split)

    members = []
    while min(_appearances(members, seen)) < scenes_cfg.scenes_per_glyph:
        members.append(random_scene(seen, lambda key: key not in held and key not in held_cal, "member"))
    nonmember = [random_scene(seen, lambda key: key in held, "nonmember") for _ in range(scenes_cfg.heldout_scenes)]
    nonmember += [random_scene(unseen, lambda key: True, "nonmember") for _ in range(scenes_cfg.unseen_scenes)]
    calibration = [random_scene(seen, lambda key: key in held_cal, "calibration") for _ in range(cfg.n_calibration)]
    # A planted scene's caption names it alone (a caption shared by several scenes would make each the "own" picture
    # of a generation); its glyphs keep appearing, freshly laid out, in other scenes.
    texts = Counter(r.text for r in members + nonmember + calibration)
    unique = iter([r for r in members if texts[r.text] == 1])
    planted = []
    for count in cfg.exact_counts:
        for copy_set in range(cfg.exact_per_count):
            original = next(unique, None)
            if original is None:
                raise DatasetError("too few member scenes with a caption of their own to plant the duplication plan")
            original.dup_kind, original.dup_group = "exact", f"exact-{count:03d}-{copy_set}"
            planted += [PlannedRow(original.glyph, original.pixels, original.text, "member", original.family, "exact",
                             original.dup_group, c) for c in range(1, count)]
    rows = nonmember + calibration + members + planted
    progress.update(task, total=len(rows), completed=len(rows))
    member_px = np.stack([r.pixels for r in members])
    stats = {"scene_glyphs": [g.code for g in seen], "unseen_glyphs": [g.code for g in unseen],
             "heldout_families": len(held) + len(held_cal), "member_scenes": len(members),
             "glyph_appearances_min": int(min(_appearances(members, seen))),
             "families": len({r.family for r in rows}), "distinct_renders": len(members) + len(nonmember)
             + len(calibration),
             "false_copy_rate": float(near_copies(np.stack([r.pixels for r in nonmember]), member_px,
                                                  cfg.family_join).mean())}
    return rows, stats


def _appearances(rows: list[PlannedRow], seen: list[Glyph]) -> list[int]:
    """How many of `rows` draw each seen glyph."""
    count = dict.fromkeys((g.code for g in seen), 0)
    for r in rows:
        for code in r.glyph.code.split("_", 1)[1].split("+"):
            count[code] += 1
    return list(count.values())
