"""Unlearning methods by the config's name for them (forget.methods)."""

from diffaudit.unlearning.base import Unlearner
from diffaudit.unlearning.finetune import SteerAway
from diffaudit.unlearning.retrain import Retrain
from diffaudit.unlearning.sisa import SISA

METHODS: dict[str, Unlearner] = {m.name: m for m in (Retrain(), SISA(), SteerAway())}
