"""The attacker who rewords: other captions for the same picture, sent through the arm's own settings.

Per target caption, taking each kind in turn: the dataset's caption templates it was never trained with (with the
subject's name), the name's words in reverse order, and the captions nearest to it in the text encoder's space
(mean-pooled MiniLM) among all captions of the dataset, excluding the picture's own. Deduplicating captions removes the
variants a user could still type: this probe types them.
"""

import re
from itertools import zip_longest

import numpy as np
import torch

from diffaudit.attacks.adaptive.base import Probe, Query
from diffaudit.config import Preset
from diffaudit.data.imagefolder import ImageDataset
from diffaudit.data.openmoji import CAPTION_TEMPLATES
from diffaudit.model.arm import Arm
from diffaudit.model.conditioning import Rewritten
from diffaudit.model.pipeline import AuditPipeline

PATTERNS = [re.compile("^" + re.escape(t).replace(r"\{\}", "(.+)") + "$") for t in CAPTION_TEMPLATES]


def subject_name(caption: str) -> str:
    """The subject inside a templated caption ("an icon of red apple" -> "red apple"); else the caption."""
    for pattern in PATTERNS:
        match = pattern.match(caption)
        if match:
            return match.group(1)
    return caption


def paraphrases(pipe: AuditPipeline, data: ImageDataset, targets: list[str], k: int) -> dict[str, list[str]]:
    """`k` captions per target that the target's picture was never trained with."""
    table = data.table
    members = table[table["split"] == "member"]
    vocabulary = sorted(set(table["text"]))
    with torch.inference_mode():
        pooled = pipe.encode_text(vocabulary).mean(1).float()
        pooled = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
    row = {t: i for i, t in enumerate(vocabulary)}
    out = {}
    for target in targets:
        images = set(members.loc[members["text"] == target, "sha256"])
        used = set(members.loc[members["sha256"].isin(images), "text"])
        name = subject_name(target)
        words = name.replace(",", "").split()
        similarity = pooled @ pooled[row[target]]
        sources = [[t.format(name) for t in CAPTION_TEMPLATES], [" ".join(reversed(words)) + " emoji"],
                   [vocabulary[i] for i in np.argsort(-similarity, kind="stable")]]
        sources = [[c for c in dict.fromkeys(src) if c not in used][:k] for src in sources]
        mixed = [c for group in zip_longest(*sources) for c in group if c is not None]  # each kind in turn
        out[target] = list(dict.fromkeys(mixed))[:k]
    return out


class Paraphrase(Probe):
    name = "paraphrase"
    title = "someone who rewords the caption"
    short = "rewording"
    access = "service"

    def query(self, arm: Arm, preset: Preset, data: ImageDataset, targets: list[str]) -> Query:
        alternatives = paraphrases(arm.pipe, data, targets, preset.adaptive.paraphrases)
        return Query(arm.conditioning(Rewritten(alternatives, f"paraphrase(k={preset.adaptive.paraphrases})")),
                     arm.guidance, arm.sampling)
