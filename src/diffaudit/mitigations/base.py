"""The interface every mitigation arm implements: configured variants, `apply` -> `Arm`, plain words for readers.

A mitigation never changes the base model or dataset in place: `apply` gets a fresh base from the context and
returns a new model (or the same weights with another sampling setting). The study loops over the registry
(`mitigations.registry`), and the memo and reports read each arm's `title` and `what` instead of its name.
"""

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.model.arm import Arm
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import Progress
from diffaudit.words import Description


@dataclass(frozen=True)
class Context:
    """What `apply` may use: the study's preset and data, a fresh base model, and training from scratch by the
    base recipe into a given folder (resumable from that folder's checkpoints)."""

    preset: Preset
    data: ImageDataset
    seed: int
    folder: Path  # the arm's own folder in the run
    base: Callable[[], AuditPipeline]
    retrain: Callable[[ImageDataset, Path], tuple[AuditPipeline, float]]
    progress: Progress | None = None
    # For choosing a setting without looking at the audited model: a base trained with another seed, and the study's
    # extraction probe (pipe, guidance, SampleConfig fields, folder) -> its summary.
    second_seed: int = 1
    second_base: Callable[[], AuditPipeline] | None = None
    copies: Callable[[AuditPipeline, float, dict, Path], dict] | None = None
    # Committed models beside the reference model (model.prepare.library) an arm may reuse when its inputs match.
    library: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Variant:
    """One arm a mitigation contributes: its name (the run folder's and the tables') and its setting, typed, so no
    code parses a setting back out of a name. `value` is the scale, epsilon or method the arm applies."""

    name: str
    value: float | str

    def as_record(self) -> dict:
        return {"name": self.name, "value": self.value}


def trainable_copy(pipe: AuditPipeline) -> AuditPipeline:
    """A full copy of `pipe` (networks and encoders), so training or moving it cannot touch the original."""
    return copy.deepcopy(pipe)


class Mitigation(ABC):
    kind: ClassVar[str]  # the row's `kind` in results.json and the config's name for it (study.mitigations)
    # Also measured under the study's reference samplers (how numbers moved from the clamped DDIM), as the base is:
    # for a mitigation that is itself a sampling setting.
    on_reference_samplers: ClassVar[bool] = False

    @abstractmethod
    def variants(self, preset: Preset) -> list[Variant]:
        """The arms this mitigation contributes under `preset` (e.g. one per guidance scale)."""

    @abstractmethod
    def apply(self, variant: Variant, ctx: Context) -> Arm:
        """Build the mitigated model for `variant` (resumably, in `ctx.folder`)."""

    def control_name(self, preset: Preset) -> str | None:
        """The name (folder and step) of this mitigation's positive control under `preset`, when it runs one."""
        return None

    def control(self, ctx: Context) -> dict:
        """The positive control of this mitigation's own audit, run at the study's first seed beside its arms and
        kept out of the comparison (DP: the fine-tune without clipping or noise must be caught)."""
        raise NotImplementedError(f"{self.kind} has no control")

    @abstractmethod
    def describe(self, variant: Variant, record: dict) -> Description:
        """Plain words for the memo, from the arm's own record (e.g. how many rows were removed)."""
