"""Does a generation draw the concepts its caption names? A small classifier says which glyphs a picture holds.

Generalization (drawing "a cat" in a new picture) and memorization (drawing this training picture) are different
things (Carlini et al. 2023; Somepalli et al. 2023); the copy test measures the second, this the first. The classifier
is trained on fresh renders only (the scene renderer with new layouts and colours, never a training picture), so it
cannot have learnt a training picture either, and its own accuracy on further fresh renders is reported with it.
"""

from dataclasses import dataclass

import numpy as np
import torch

from diffaudit.data.openmoji import Glyph, glyph_font
from diffaudit.data.scenes import PALETTE, RELATIONS, draw_scene, glyph_sprite, layout


class GlyphNet(torch.nn.Module):
    """Three convolutions and a linear read-out: one logit per glyph (multi-label: a scene holds one or two)."""

    def __init__(self, glyphs: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.SiLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 96, 3, padding=1), torch.nn.SiLU(), torch.nn.AdaptiveMaxPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(96, glyphs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class ConceptClassifier:
    codes: list[str]  # glyph code per output
    net: GlyphNet
    accuracy: float  # top-1 on fresh single-glyph renders, measured after training

    @torch.inference_mode()
    def scores(self, images: np.ndarray) -> np.ndarray:
        """Per image and glyph, the classifier's logit."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        return torch.cat([self.net(b) for b in x.split(512)]).numpy()

    def hits(self, images: np.ndarray, named: list[list[str]]) -> np.ndarray:
        """Per image: is the classifier's top glyph one its caption names?"""
        top = np.asarray(self.codes)[self.scores(images).argmax(1)]
        return np.array([t in n for t, n in zip(top, named, strict=True)])


def glyph_layer(images: np.ndarray, tolerance: float = 0.12) -> np.ndarray:
    """`images` with each one's background (the median colour of its border; scenes are drawn on one named colour)
    set to mid grey, so a caption-following ratio computed on them says whether the caption decides the *glyphs*,
    not only the background colour it names. `tolerance`: RMS distance on [0,1] pixels within which a pixel counts as
    background."""
    x = images.astype(np.float32) / 255
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    background = np.median(border, axis=1)[:, None, None, :]
    near = np.sqrt(((x - background) ** 2).mean(-1, keepdims=True)) <= tolerance
    return (np.where(near, 0.5, x) * 255).round().astype(np.uint8)


def fresh_scenes(glyphs: list[Glyph], n: int, resolution: int, glyph_px: tuple[int, int], two_share: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` new renders (random glyphs, layouts and colours) and their multi-hot labels."""
    font = glyph_font()
    sprites = [glyph_sprite(g, font) for g in glyphs]
    images, labels = [], np.zeros((n, len(glyphs)), dtype=np.float32)
    for k in range(n):
        two = rng.random() < two_share
        idx = [int(i) for i in rng.choice(len(glyphs), 2 if two else 1, replace=False)]
        relation = str(rng.choice(list(RELATIONS))) if two else None
        sizes, places = layout(len(idx), relation, glyph_px, resolution, rng)
        images.append(draw_scene([sprites[i] for i in idx], sizes, places, str(rng.choice(list(PALETTE))),
                                 resolution))
        labels[k, idx] = 1
    return np.stack(images), labels


def train_classifier(glyphs: list[Glyph], resolution: int, glyph_px: tuple[int, int], steps: int = 1500,
                     batch: int = 128, seed: int = 0) -> ConceptClassifier:
    """Fit on fresh renders (half of them two-glyph scenes), then measure top-1 on fresh single-glyph renders."""
    rng = np.random.default_rng(seed)
    images, labels = fresh_scenes(glyphs, max(1, steps * batch // 8), resolution, glyph_px, 0.5, rng)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = GlyphNet(len(glyphs))
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = torch.from_numpy(labels)
        for _ in range(steps):
            pick = torch.from_numpy(rng.integers(0, len(x), batch))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[pick]), y[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    test, truth = fresh_scenes(glyphs, 20 * len(glyphs), resolution, glyph_px, 0.0, rng)
    classifier = ConceptClassifier([g.code for g in glyphs], net, 0.0)
    classifier.accuracy = float((classifier.scores(test).argmax(1) == truth.argmax(1)).mean())
    return classifier
