"""The interface every unlearning method implements: a job (original model, data, rows to forget) -> a new model.

A method never touches the original's folder: it writes its model to `job.out / "model"` and says what it cost.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import UNet2DConditionModel

from diffaudit.config import Preset, TrainConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.errors import CheckpointError
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.progress import Progress
from diffaudit.unlearning.request import retained


@dataclass(frozen=True)
class ForgetJob:
    original: Path  # the model folder the request is made to (read only)
    data: ImageDataset  # the dataset it was trained on, every split
    forget_ids: frozenset[str]  # member row ids to forget
    preset: Preset
    out: Path  # the method's own folder
    progress: Progress | None = None
    seed: int | None = None  # another training seed than the original's (the protocol's control retrain)

    @property
    def manifest(self) -> dict:
        path = self.original / "training_manifest.json"
        if not path.exists():
            raise CheckpointError(f"{self.original} has no training manifest: its training recipe (steps, seed) is "
                                  "unknown, so no method can be held to the same budget")
        return json.loads(path.read_text())

    @property
    def train_cfg(self) -> TrainConfig:
        """The original's own recipe: every method is held to the same budget and seed."""
        cfg = TrainConfig(**self.manifest["train_config"])
        return cfg if self.seed is None else cfg.model_copy(update={"seed": self.seed})

    def remaining(self) -> ImageDataset:
        return retained(self.data, set(self.forget_ids))

    def load(self, folder: Path) -> AuditPipeline:
        return AuditPipeline.from_pretrained(folder, self.preset.runtime)


@dataclass(frozen=True)
class Forgotten:
    model: Path  # the unlearned model's folder
    seconds: float  # compute spent forgetting (training or fine-tuning), not counting verification
    record: dict  # what the method did, for the audit record


@dataclass(frozen=True)
class Origin:
    """What a method may need to build the model a deletion request is made to, when the study's base will not do
    (SISA needs one trained sharded): the base, its training seed, the study's preset and data, a folder of its own."""

    base: AuditPipeline
    base_folder: Path
    seed: int
    preset: Preset
    data: ImageDataset
    folder: Path
    progress: Progress | None = None


class Unlearner(ABC):
    name: ClassVar[str]
    title: ClassVar[str]  # plain words for readers
    is_reference: ClassVar[bool] = False  # its result is the protocol's reference itself (retrain)

    @abstractmethod
    def forget(self, job: ForgetJob) -> Forgotten:
        """A model without `job.forget_ids`, written under `job.out` (resumably)."""

    def original(self, origin: Origin) -> Path:
        """The model folder the request is made to: the study's base, unless the method needs its own."""
        return origin.base_folder

    def annotate(self, record: dict, original: Path, measure: Callable[[AuditPipeline], dict],
                 origin: Origin) -> dict:
        """What the method adds to its verified record (SISA: how its sharding cost quality); nothing by default."""
        return record


def fresh_like(pipe: AuditPipeline, seed: int) -> AuditPipeline:
    """A newly initialised model with `pipe`'s architecture, schedule and text encoder, initialised as
    `build_pipeline` would with `seed` (the same constructor arguments, under the same seed)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(pipe.unet.config)
    return AuditPipeline(unet, pipe.scheduler, pipe.encode_text, pipe.resolution, vae=pipe.vae, kind=pipe.kind,
                         text_config=pipe.text_config).to(pipe.device, pipe.dtype)
