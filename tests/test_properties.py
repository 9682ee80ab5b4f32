"""Property-based checks (Hypothesis, derandomized): generated configs, captions, images and files either load
correctly or are refused with the library's own one-line error, never a raw exception.

CI draws `FEW` examples per property; the slow-marked variants draw `MANY`.
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from diffaudit.config import PRESETS, load_preset
from diffaudit.data.imagefolder import MIN_SOURCE_SIDE, caption_problem, load_imagefolder
from diffaudit.errors import ConfigError, DatasetError
from diffaudit.study.runner import check_names

FEW, MANY = 100, 1000
SIZES = [FEW, pytest.param(MANY, marks=pytest.mark.slow)]


def _check(prop, n: int) -> None:
    settings(max_examples=n, derandomize=True, deadline=None, database=None,
             suppress_health_check=[HealthCheck.too_slow])(prop)()


FIELDS = {section: list(type(getattr(PRESETS["tiny"], section)).model_fields)
          for section in ("data", "model", "train", "sample", "study", "extraction", "calibration", "membership",
                          "triage", "guidance", "dedup", "adaptive")}
VALUES = st.one_of(
    st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=8), st.lists(st.one_of(st.integers(-5, 100), st.floats(-1, 50), st.text(max_size=6)),
                                  max_size=4))


@st.composite
def overrides(draw: st.DrawFn) -> dict:
    out: dict = {}
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([*FIELDS, "bogus"]))
        field = draw(st.sampled_from([*FIELDS.get(section, []), "bogus_field"]))
        out.setdefault(section, {})[field] = draw(VALUES)
    return out


@pytest.mark.parametrize("n", SIZES)
def test_any_config_is_valid_or_a_config_error(n: int) -> None:
    @given(overrides())
    def prop(layer: dict) -> None:
        try:
            preset = load_preset("tiny", overrides=layer)
            check_names(preset)
        except ConfigError as exc:
            assert "\n" not in str(exc)
            return
        t, d = preset.train, preset.data
        assert t.steps >= 1 and t.batch_size >= 1 and 0 < t.lr <= 1 and 0 <= t.caption_dropout <= 1
        assert preset.sample.steps >= 1 and 0 <= preset.sample.guidance <= 100
        assert preset.extraction.samples_per_prompt >= 2 and 0 < preset.calibration.delta < float("inf")
        assert preset.membership.per_side >= 2
        assert d.resolution >= MIN_SOURCE_SIDE and d.n_member >= 1

    _check(prop, n)


@pytest.fixture(scope="module")
def one_row(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one")
    Image.new("RGB", (16, 16), (10, 20, 30)).save(folder / "a.png")
    return folder


def _meta(folder: Path, row: dict) -> None:
    (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n")


@pytest.mark.parametrize("n", SIZES)
def test_any_caption_loads_verbatim_or_is_named(one_row: Path, n: int) -> None:
    @given(st.one_of(st.text(), st.text(alphabet=st.characters(codec="utf-8")), st.integers(), st.none()))
    def prop(caption: object) -> None:
        _meta(one_row, {"file_name": "a.png", "text": caption})
        try:
            data = load_imagefolder(one_row)
        except DatasetError as exc:
            assert "row 1" in str(exc) and caption_problem(caption) is not None
            return
        assert caption_problem(caption) is None and data.texts == [caption]

    _check(prop, n)


# Every mode Pillow can write losslessly to TIFF, with what the loader must make of it.
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "I", "I;16", "I;16B", "F", "CMYK", "YCbCr", "LAB"]


@st.composite
def images(draw: st.DrawFn) -> tuple[str, np.ndarray, int]:
    mode = draw(st.sampled_from(MODES))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31))
    return mode, np.random.default_rng(seed).integers(0, 2**16, (h, w, 4)), min(w, h)


def _image(mode: str, raw: np.ndarray) -> Image.Image:
    bands = len(Image.new(mode, (1, 1)).getbands())
    if mode in ("I", "I;16", "I;16B"):
        return Image.fromarray(raw[..., 0].astype(np.uint16)).convert(mode) if mode != "I" else \
            Image.fromarray(raw[..., 0].astype(np.int32))
    if mode == "F":
        return Image.fromarray(raw[..., 0].astype(np.float32))
    planes = (raw[..., :bands] % 256).astype(np.uint8)
    base = Image.fromarray(planes[..., 0]) if bands == 1 else Image.merge(
        mode, [Image.fromarray(planes[..., i]) for i in range(bands)])
    return base.convert(mode) if base.mode != mode else base


@pytest.mark.parametrize("n", SIZES)
def test_any_image_mode_is_mapped_to_rgb_or_refused(one_row: Path, n: int) -> None:
    @given(images())
    def prop(case: tuple[str, np.ndarray, int]) -> None:
        mode, raw, side = case
        try:
            im = _image(mode, raw)
        except (ValueError, TypeError):
            assume(False)
        im.save(one_row / "x.tiff")
        _meta(one_row, {"file_name": "x.tiff", "text": "a glyph"})
        try:
            data = load_imagefolder(one_row, resolution=8)
        except DatasetError as exc:
            assert "row 1" in str(exc)
            assert side < MIN_SOURCE_SIDE or im.mode == "F", f"mode {im.mode} {im.size} refused: {exc}"
            return
        assert side >= MIN_SOURCE_SIDE and im.mode != "F"
        assert data.images.shape == (1, 8, 8, 3) and data.images.dtype == np.uint8

    _check(prop, n)


@pytest.mark.parametrize("n", SIZES)
def test_exact_greyscale_values_survive(one_row: Path, n: int) -> None:
    @given(st.integers(0, 255), st.integers(0, 65535))
    def prop(grey: int, deep: int) -> None:
        _meta(one_row, {"file_name": "g.png", "text": "a glyph"})
        Image.new("L", (9, 9), grey).save(one_row / "g.png")
        assert (load_imagefolder(one_row).images == grey).all()
        Image.fromarray(np.full((9, 9), deep, np.uint16)).save(one_row / "g.png")
        assert (load_imagefolder(one_row).images == round(deep / 65535 * 255)).all()

    _check(prop, n)


@pytest.mark.parametrize("n", SIZES)
def test_any_bytes_as_an_image_are_named_or_intact(one_row: Path, n: int) -> None:
    png = io.BytesIO()
    Image.new("RGB", (16, 16)).save(png, "PNG")

    @given(st.one_of(st.binary(max_size=300), st.integers(0, len(png.getvalue()) - 1).map(
        lambda k: png.getvalue()[:k]), st.binary(min_size=1, max_size=8).map(lambda b: png.getvalue()[:60] + b)))
    def prop(blob: bytes) -> None:
        (one_row / "b.png").write_bytes(blob)
        _meta(one_row, {"file_name": "b.png", "text": "a glyph"})
        try:
            data = load_imagefolder(one_row)
        except DatasetError as exc:
            assert "row 1 (id 'b')" in str(exc)
            return
        # Accepted only when every pixel chunk arrived checksummed (e.g. just the end marker's CRC is cut).
        assert blob[:60] == png.getvalue()[:60] and (data.images == 0).all()

    _check(prop, n)
