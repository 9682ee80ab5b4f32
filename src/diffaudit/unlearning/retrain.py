"""The gold standard: train again from scratch without the forgotten rows, by the original's recipe and seed."""

import json

from diffaudit.model.train import train
from diffaudit.unlearning.base import ForgetJob, Forgotten, Unlearner, fresh_like


class Retrain(Unlearner):
    name = "retrain"
    title = "Retrain without the data"
    is_reference = True

    def forget(self, job: ForgetJob) -> Forgotten:
        manifest = job.out / "model" / "training_manifest.json"
        cfg = job.train_cfg
        if not manifest.exists():
            train(fresh_like(job.load(job.original), cfg.seed), job.remaining(), cfg, job.out, job.progress)
        seconds = json.loads(manifest.read_text())["seconds"]
        return Forgotten(job.out / "model", seconds, {"steps": cfg.steps, "seed": cfg.seed, "retrained_share": 1.0})
