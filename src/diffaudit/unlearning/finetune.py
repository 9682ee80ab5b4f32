"""Approximate unlearning by fine-tuning: steer the forgotten captions away, keep the rest as it was.

Each step takes a batch of forgotten rows and one of retained rows. On the forgotten rows the model's prediction
for their caption is pulled towards a frozen copy's unconditional prediction minus `negative_guidance` times the
caption's effect (the negative-guidance objective of Gandikota et al. 2023, ESD); on the retained rows it keeps the
ordinary denoising loss, so the rest of the model is not dragged along. A few hundred steps: minutes, not a retrain.
Unlike ESD, which noises the model's own samples of a concept, the forgotten rows' own pictures are noised here: the
request names pictures, not a concept the model draws.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch

from diffaudit.io import write_json
from diffaudit.mitigations.base import trainable_copy
from diffaudit.model.device import host_randn, on_host
from diffaudit.model.lineage import write_lineage
from diffaudit.model.train import dataset_tensors, step_seed
from diffaudit.unlearning.base import ForgetJob, Forgotten, Unlearner


class SteerAway(Unlearner):
    name = "finetune"
    title = "Fine-tune the captions away"

    def forget(self, job: ForgetJob) -> Forgotten:
        model = job.out / "model"
        report = job.out / "finetune.json"
        if not report.exists():
            self._run(job, model)
        record = json.loads(report.read_text())
        return Forgotten(model, record["seconds"], record)

    def _run(self, job: ForgetJob, model: Path) -> None:
        cfg, train_cfg = job.preset.forget, job.train_cfg
        teacher = job.load(job.original)
        student = trainable_copy(teacher)
        members = job.data.split("member")
        x0, cond, uncond = dataset_tensors(student, members)
        gone = members.table["id"].isin(job.forget_ids).to_numpy()
        forget_idx, keep_idx = np.flatnonzero(gone), np.flatnonzero(~gone)
        unet = student.unet.train().requires_grad_(True)
        opt = torch.optim.AdamW(unet.parameters(), lr=cfg.finetune_lr, weight_decay=0.0)
        half = max(1, train_cfg.batch_size // 2)
        schedule = student.scheduler
        task = job.progress.add_task("unlearn: fine-tune", total=cfg.finetune_steps) if job.progress else None
        start = time.perf_counter()
        for step in range(cfg.finetune_steps):
            rng = np.random.default_rng([train_cfg.seed, 7919, step])
            gen = torch.Generator().manual_seed(step_seed(train_cfg.seed + 7919, step))
            f = torch.from_numpy(rng.choice(forget_idx, half, replace=len(forget_idx) < half))
            k = torch.from_numpy(rng.choice(keep_idx, half, replace=len(keep_idx) < half))
            drop = student.place(torch.from_numpy(rng.random(half) < train_cfg.caption_dropout))
            noise = student.place(host_randn((2 * half, *x0.shape[1:]), generator=gen))
            with on_host():
                t = torch.randint(0, schedule.config.num_train_timesteps, (2 * half,), generator=gen)
            t = student.place(t)
            idx = student.place(torch.cat([f, k]))
            noisy = schedule.add_noise(x0[idx], noise, t)
            c_forget = cond[student.place(f)]
            with torch.no_grad():
                eps_c = teacher.denoiser(noisy[:half], t[:half], c_forget)
                eps_u = teacher.denoiser(noisy[:half], t[:half], uncond.expand(half, -1, -1))
            target = eps_u - cfg.negative_guidance * (eps_c - eps_u)
            c_keep = torch.where(drop[:, None, None], uncond, cond[student.place(k)])
            pred = unet(noisy, t, encoder_hidden_states=torch.cat([c_forget, c_keep])).sample
            loss = (torch.nn.functional.mse_loss(pred[:half], target)
                    + torch.nn.functional.mse_loss(pred[half:], noise[half:]))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if task is not None:
                job.progress.advance(task)
        unet.eval().requires_grad_(False)
        student.save_pretrained(model)
        record = {"steps": cfg.finetune_steps, "lr": cfg.finetune_lr, "negative_guidance": cfg.negative_guidance,
                  "forget_rows": len(forget_idx), "retain_rows": len(keep_idx), "batch": 2 * half,
                  "seconds": round(time.perf_counter() - start, 1), "retrained_share": 0.0}
        # The forgotten rows did go into these weights (they were steered away afterwards): the lineage says so.
        write_lineage(model, members)
        earlier = job.manifest.get("unlearning", {}).get("forgotten_ids", [])
        write_json(model / "training_manifest.json", {
            **job.manifest, "model_hash": student.model_hash(),
            "unlearning": {"method": self.name, **record, "forgotten_ids": sorted({*earlier, *job.forget_ids})}})
        write_json(job.out / "finetune.json", record)
