"""Unlearning methods by the config's name for them (forget.methods)."""

from diffaudit.registry import Registry
from diffaudit.unlearning.base import Unlearner
from diffaudit.unlearning.finetune import SteerAway
from diffaudit.unlearning.retrain import Retrain
from diffaudit.unlearning.sisa import SISA

UNLEARNERS: Registry[Unlearner] = Registry("unlearning method", "forget.methods",
                                          {m.name: m for m in (Retrain(), SISA(), SteerAway())})
