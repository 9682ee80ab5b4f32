"""The embedded dataset of a config: OpenMoji glyphs one per picture, or compositional scenes of them."""

from pathlib import Path

from diffaudit.config import DataConfig
from diffaudit.data.openmoji import build_openmoji, plan_rows
from diffaudit.data.scenes import plan_scenes
from diffaudit.progress import Progress


def build_dataset(out: Path, cfg: DataConfig, progress: Progress, force: bool = False) -> Path:
    return build_openmoji(out, cfg, progress, force, plan=plan_scenes if cfg.scenes is not None else plan_rows)
