"""What a mitigation costs in quality, measured without Inception or CLIP weights (none are available offline).

1. Held-out denoising loss on the non-member split: does the model still model unseen data?
2. Fréchet distance between generations for held-out captions and the held-out images themselves, in the
   feature space of a small autoencoder trained only on images that no model under audit ever saw
   (OpenMoji glyphs left out of every split; for a user dataset or scenes, its non-member split).
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import linalg

from diffaudit.attacks.mia.common import query_batch
from diffaudit.attacks.mia.loss import denoising_loss
from diffaudit.config import SampleConfig
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.data.openmoji import distinct_renders, named_glyphs
from diffaudit.model.conditioning import Conditioning
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import sample


class FeatureEncoder(torch.nn.Module):
    """Conv encoder half of an autoencoder; its bottleneck is the feature space for the Fréchet distance."""

    def __init__(self, side: int, dim: int = 64):
        super().__init__()
        self.encode = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, 2, 1), torch.nn.SiLU(), torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.SiLU(),
            torch.nn.Flatten(), torch.nn.Linear(64 * (side // 4) ** 2, dim))
        self.decode = torch.nn.Sequential(
            torch.nn.Linear(dim, 64 * (side // 4) ** 2), torch.nn.Unflatten(1, (64, side // 4, side // 4)),
            torch.nn.SiLU(), torch.nn.ConvTranspose2d(64, 32, 4, 2, 1), torch.nn.SiLU(),
            torch.nn.ConvTranspose2d(32, 3, 4, 2, 1))

    @torch.inference_mode()
    def features(self, images: np.ndarray) -> np.ndarray:
        return self.encode(_to_tensor(images)).numpy()


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def held_out_images(data: ImageDataset, limit: int = 3000, seed: int = 0) -> np.ndarray:
    """OpenMoji glyphs used by no split of `data` (the embedded default); otherwise (a user's data, or scenes, which
    single glyphs on white would not resemble) its non-member split."""
    if "emoji" not in data.table.columns or data.table["emoji"].str.contains("_").any():
        return data.split("nonmember").images
    used = set(data.table["emoji"]) | set(data.table["sha256"])
    glyphs = [g for g in named_glyphs() if g.code not in used]
    side = data.images.shape[1]
    out = [p for _, p in distinct_renders(glyphs, side, np.random.default_rng(seed))][:limit]
    return np.stack(out)


def train_encoder(images: np.ndarray, steps: int = 400, seed: int = 0) -> FeatureEncoder:
    """Autoencoder on held-out images, seeded; a few hundred steps suffice at emoji scale."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = FeatureEncoder(images.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = _to_tensor(images)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = x[rng.choice(len(x), min(128, len(x)), replace=False)]
        loss = torch.nn.functional.mse_loss(model.decode(model.encode(batch)), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


@dataclass
class UtilityProbe:
    """Fixed once per study (encoder, prompts, seeds), then applied to every arm alike."""

    encoder: FeatureEncoder
    real_features: np.ndarray
    held_out: ImageDataset
    steps: int
    sampler: str
    losses: dict[str, tuple[float, int]] = field(default_factory=dict)  # model hash -> (loss, its evaluations)

    @classmethod
    def build(cls, data: ImageDataset, steps: int, sampler: str, seed: int = 0,
              prompts: int | None = None) -> "UtilityProbe":
        """On the first `prompts` held-out rows (all of them by default)."""
        encoder = train_encoder(held_out_images(data, seed=seed), seed=seed)
        held_out = data.split("nonmember")
        held_out = held_out.where(np.arange(len(held_out)) < (prompts or len(held_out)))
        return cls(encoder, encoder.features(held_out.images), held_out, steps, sampler)

    def measure(self, pipe: AuditPipeline, guidance: float, conditioning: Conditioning | None = None,
                sampling: SampleConfig | None = None) -> dict:
        """Held-out loss and Fréchet distance of held-out captions' samples, drawn through `conditioning` (an
        inference-time setting) when one is given, with `sampling`'s sampler (the probe's own by default)."""
        sampling = sampling or SampleConfig(sampler=self.sampler, steps=self.steps)
        batch = query_batch(pipe, self.held_out.images, self.held_out.texts)
        key = pipe.model_hash()  # the loss depends on the model only: guidance arms reuse the base's
        if key not in self.losses:
            with pipe.denoiser.counting() as spent:
                loss = float(denoising_loss(pipe, batch, tuple(range(50, 1000, 100)), draws=1).mean())
            self.losses[key] = (loss, spent.evaluations)
        loss, loss_evals = self.losses[key]
        seeds = list(range(len(self.held_out)))
        with pipe.denoiser.counting() as spent:
            cond = batch.cond if conditioning is None else conditioning(pipe, list(self.held_out.texts), seeds)
            generated = sample(pipe, cond, seeds, guidance, sampling.steps, sampling.sampler,
                               guidance_start=sampling.guidance_start, early_guidance=sampling.early_guidance)
        fd = frechet_distance(self.encoder.features(generated), self.real_features)
        # The cost of this measurement, whether or not the loss was computed just now (as the tiered audit
        # counts reused samples at what they cost to draw).
        return {"heldout_loss": loss, "frechet_distance": fd, "utility_prompts": len(seeds),
                "utility_unet_evaluations": spent.evaluations + loss_evals}
