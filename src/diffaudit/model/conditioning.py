"""What the UNet is conditioned on for each requested (prompt, seed): the caption's text embedding by default, or what
an adaptive attacker or an inference-time mitigation puts there instead.

A generation folder records its conditioning's `name` beside the model hash, so samples drawn under different
conditionings never mix, while the (prompt, seed, guidance) key still names the *target* caption: the copy test
then compares every generation with that caption's own training image, whatever text or embedding produced it.
Mitigations wrap the attacker's conditioning (`inner`), as a hosted service would transform whatever it is sent.
"""

import hashlib
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from diffaudit.model.device import host_randn, on_host
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.sample import initial_noise, make_scheduler


class Conditioning(ABC):
    name: str

    @abstractmethod
    def __call__(self, pipe: AuditPipeline, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """One embedding sequence per (prompt, seed), on the pipeline's device and dtype."""


def per_distinct(values: list[str], embed: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """`embed` each distinct value once (sorted, so the batch does not depend on request order), one row per value."""
    unique = sorted(set(values))
    lookup = {v: i for i, v in enumerate(unique)}
    return embed(unique)[[lookup[v] for v in values]]


class Typed(Conditioning):
    """Text a user types, per (prompt, seed), encoded by the pipeline: what a text-level setting can act on."""

    @abstractmethod
    def texts(self, prompts: list[str], seeds: list[int]) -> list[str]:
        """The text typed for each (prompt, seed)."""

    def __call__(self, pipe: AuditPipeline, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        return per_distinct(self.texts(prompts, seeds), pipe.encode_text)


def digest(value: object) -> str:
    """A short content hash for a conditioning's name, so two folders differ whenever what was sent differs."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def key_seed(prompt: str, seed: int, salt: int) -> int:
    """A per-(prompt, seed) random seed that does not depend on batching or request order."""
    return zlib.crc32(f"{salt}\x00{seed}\x00{prompt}".encode())


class Text(Typed):
    """The caption as written: the static probe and every ordinary generation."""

    name = "text"

    def texts(self, prompts: list[str], seeds: list[int]) -> list[str]:
        return list(prompts)


class Rewritten(Typed):
    """Other text for each target caption: seed s types `alternatives[prompt][s % k]` (a paraphrase probe)."""

    def __init__(self, alternatives: dict[str, list[str]], label: str):
        self.alternatives, self.name = alternatives, f"{label}[{digest(alternatives)}]"

    def texts(self, prompts: list[str], seeds: list[int]) -> list[str]:
        return [self.alternatives[p][s % len(self.alternatives[p])] for p, s in zip(prompts, seeds, strict=True)]


def unconditional_eps(pipe: AuditPipeline, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps(x_T, "") for each noise: it does not depend on the caption, so it is computed once per search."""
    with torch.no_grad():
        return pipe.denoiser(noise, t, pipe.encode_text([""]).expand(len(noise), -1, -1))


def text_guidance_norm(pipe: AuditPipeline, emb: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                       eps_u: torch.Tensor) -> torch.Tensor:
    """Wen et al. 2024's memorization signal, differentiable in `emb`: the mean over `noise` of
    ||eps(x_T, emb) - eps(x_T, "")|| at the first sampling step (`eps_u` from `unconditional_eps`)."""
    x, cond = noise.repeat(len(emb), 1, 1, 1), emb.repeat_interleave(len(noise), 0)
    eps_c = pipe.denoiser(x, t, cond)
    return (eps_c - eps_u.repeat(len(emb), 1, 1, 1)).flatten(1).norm(dim=1).reshape(len(emb), len(noise)).mean(1)


def optimise_embeddings(pipe: AuditPipeline, start: torch.Tensor, sign: float, steps: int, lr: float,
                        noises: int, sampling_steps: int, stop_below: float | None = None,
                        block: int = 32) -> torch.Tensor:
    """Adam on the text embeddings to raise (`sign` = +1) or lower (-1) the text-guidance norm, each row on its
    own (in fixed blocks of `block` rows, so a row's result does not depend on the rows after it). A row stops for
    good once its norm is at or below `stop_below`: it is no longer evaluated or moved. The UNet is frozen, and every
    evaluation is counted by the pipeline's one counter."""
    t = make_scheduler(pipe, "ddim", sampling_steps).timesteps[0]
    noise = initial_noise(pipe, list(range(noises)))
    eps_u = unconditional_eps(pipe, noise, t)
    frozen = [p for p in pipe.unet.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    out = []
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for i in range(0, len(start), block):
                emb = start[i: i + block].detach().clone().float().requires_grad_(True)
                opt = torch.optim.Adam([emb], lr=lr)
                stopped = torch.zeros(len(emb), dtype=torch.bool, device=emb.device)
                for _ in range(steps):
                    active = (~stopped).nonzero().flatten()
                    norm = text_guidance_norm(pipe, emb[active].to(pipe.dtype), noise, t, eps_u)
                    if stop_below is not None:
                        reached = norm.detach() <= stop_below
                        stopped[active[reached]] = True
                        active, norm = active[~reached], norm[~reached]
                    if len(active) == 0:
                        break
                    opt.zero_grad()
                    (-sign * norm.sum()).backward()
                    kept = emb.detach().clone()
                    opt.step()
                    with torch.no_grad():  # Adam's momentum would keep moving rows that already stopped
                        emb[stopped] = kept[stopped]
                out.append(emb.detach())
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return torch.cat(out).to(pipe.dtype)


class EmbeddingSearch(Conditioning):
    """White-box attack (after Wen et al. 2024 and "Finding Dori", 2025): start from the caption's embedding and
    climb the memorization signal for `steps` Adam steps, then sample from the result. It never sees the target
    image, so it can only find what the model already holds."""

    def __init__(self, steps: int, step_size: float = 0.02, noises: int = 2, sampling_steps: int = 25):
        self.steps, self.step_size, self.noises, self.sampling_steps = steps, step_size, noises, sampling_steps
        self.name = f"embedding-search(steps={steps},step={step_size:g}xstd,noises={noises})"

    def __call__(self, pipe: AuditPipeline, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """Adam's step is about its learning rate per coordinate whatever the gradient's scale, so the rate is set
        as `step_size` times the embeddings' standard deviation: the search stays near the caption it starts from
        (10 steps of 0.05, 1.1 standard deviations per coordinate, rewrote the embedding and lost every copy)."""
        def search(unique: list[str]) -> torch.Tensor:
            start = pipe.encode_text(unique)
            return optimise_embeddings(pipe, start, +1.0, self.steps, self.step_size * float(start.float().std()),
                                       self.noises, self.sampling_steps)

        return per_distinct(prompts, search)


class EmbeddingNoise(Conditioning):
    """Somepalli et al. 2023b's Gaussian noise on the text embedding at sampling, fresh per (prompt, seed)."""

    def __init__(self, inner: Conditioning, sigma: float):
        self.inner, self.sigma = inner, sigma
        self.name = f"embedding-noise(sigma={sigma:g})<{inner.name}>"

    def __call__(self, pipe: AuditPipeline, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        emb = self.inner(pipe, prompts, seeds)
        with on_host():
            noise = torch.stack([host_randn(emb.shape[1:], seed=key_seed(p, s, 1)) for p, s in
                                 zip(prompts, seeds, strict=True)])
        return emb + self.sigma * pipe.place(noise)


class RandomWords(Typed):
    """Somepalli et al. 2023b's random token insertion: `words` random vocabulary words at random places in the
    typed text, fresh per (prompt, seed). It acts on typed text only (`wrap_typed`)."""

    def __init__(self, inner: Conditioning, vocabulary: list[str], words: int):
        if not isinstance(inner, Typed):
            raise ValueError(f"random words act on typed text, not on {inner.name}")
        self.inner, self.vocabulary, self.words = inner, sorted(set(vocabulary)), words
        self.name = f"random-words(n={words},vocab={digest(self.vocabulary)})<{inner.name}>"

    @staticmethod
    def wrap_typed(inner: Conditioning, vocabulary: list[str], words: int) -> Conditioning:
        """The setting as a service applies it: to typed text; an attacker who sends embeddings passes unchanged."""
        return RandomWords(inner, vocabulary, words) if isinstance(inner, Typed) else inner

    def texts(self, prompts: list[str], seeds: list[int]) -> list[str]:
        typed = self.inner.texts(prompts, seeds)
        out = []
        for text, p, s in zip(typed, prompts, seeds, strict=True):
            rng, words = np.random.default_rng(key_seed(p, s, 2)), text.split()
            for _ in range(self.words):
                word = self.vocabulary[int(rng.integers(len(self.vocabulary)))]
                words.insert(int(rng.integers(0, len(words) + 1)), word)
            out.append(" ".join(words))
        return out


class NormMinimised(Conditioning):
    """Wen et al. 2024's inference-time mitigation: lower the text-guidance norm of whatever embedding arrives
    by Adam steps until it is below `threshold` (calibrated on never-trained captions), then sample."""

    def __init__(self, inner: Conditioning, threshold: float, steps: int, lr: float = 0.05, noises: int = 2,
                 sampling_steps: int = 25):
        self.inner, self.threshold, self.steps, self.lr = inner, threshold, steps, lr
        self.noises, self.sampling_steps = noises, sampling_steps
        self.name = f"norm-minimised(threshold={threshold:.4g},steps={steps},lr={lr:g})<{inner.name}>"

    def __call__(self, pipe: AuditPipeline, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        emb = self.inner(pipe, prompts, seeds)
        keys = [row.cpu().float().numpy().tobytes() for row in emb]  # one optimisation per distinct input
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        rows = sorted(set(first.values()))
        done = optimise_embeddings(pipe, emb[rows], -1.0, self.steps, self.lr, self.noises, self.sampling_steps,
                                   stop_below=self.threshold)
        where = {i: j for j, i in enumerate(rows)}
        return done[[where[first[k]] for k in keys]]
