"""K shard UNets answering as one model: SISA's aggregation for a generative model (Bourtoule et al. 2021).

SISA classifiers vote; a denoiser has no label to vote on, so the shards' noise predictions are averaged at every
step (each shard trained apart on whole families of the data). Every audit then treats the ensemble like any UNet;
its cost is K evaluations per call, and `CountingDenoiser` counts it so.
"""

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import FrozenDict
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput


class ShardEnsemble(torch.nn.Module):
    def __init__(self, shards: list[UNet2DConditionModel]):
        super().__init__()
        self.shards = torch.nn.ModuleList(shards)

    @property
    def config(self) -> FrozenDict:
        """Every shard has the same architecture."""
        return self.shards[0].config

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    @property
    def members(self) -> int:
        """UNet evaluations per call."""
        return len(self.shards)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor,
                **kwargs: object) -> UNet2DConditionOutput:
        eps = [s(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample for s in self.shards]
        return UNet2DConditionOutput(sample=torch.stack(eps).mean(0))

    def save_pretrained(self, folder: Path, safe_serialization: bool = True) -> None:
        for k, shard in enumerate(self.shards):
            shard.save_pretrained(Path(folder) / f"shard-{k}", safe_serialization=safe_serialization)

    @classmethod
    def from_pretrained(cls, folder: Path, shards: int) -> "ShardEnsemble":
        return cls([UNet2DConditionModel.from_pretrained(Path(folder) / f"shard-{k}", use_safetensors=True).eval()
                    for k in range(shards)])
