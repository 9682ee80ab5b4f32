"""Evidence that an audit runs on an accelerator and gives the same answers there: one script, one JSON.

Steps, in priority order, each timed and written to OUT/evidence.json as soon as it ends (a run cut short keeps
what it finished; steps past --budget-s are skipped and listed):
1. the same seeds on CPU float32 and on the device in float32 / bfloat16 / float16: largest pixel difference;
2. sampling images/s and training steps/s, CPU against the device (same model, same process);
3. the base model trained on the device, killed half-way and resumed (`train(stop_after=...)`);
4. guidance arms: the copy threshold calibrated on never-trained captions, then extraction at each guidance;
5. a DP arm: DP-SGD fine-tune (Opacus on the device) and its extraction;
6. membership inference (loss, PIA, SecMI, CLiD) on the device-trained base;
7. extraction verdicts of the reference model in float32 against half precision on the same prompts and seeds.
Usage: python benchmarks/device_evidence.py --data DATA --reference models/quick --out OUT [--device cuda]
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffaudit.attacks.extraction import ExtractionConfig
from diffaudit.config import PRESETS, RuntimeConfig, validated
from diffaudit.data.imagefolder import load_imagefolder
from diffaudit.mitigations.dp_finetune import DPConfig, dp_finetune
from diffaudit.model.pipeline import AuditPipeline, build_pipeline
from diffaudit.model.sample import sample
from diffaudit.model.train import train
from diffaudit.study.calibration import calibrate_copy_test
from diffaudit.study.extraction_audit import most_duplicated_prompts, run_extraction
from diffaudit.study.mia_audit import run_mia


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reference", type=Path, default=Path("models/quick"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", nargs="+", help="run only these steps")
    parser.add_argument("--record", type=Path, help="where the JSON goes (default OUT/evidence.json)")
    parser.add_argument("--batch-size", type=int, default=1024, help="UNet rows per call on the device")
    parser.add_argument("--budget-s", type=float, default=420)
    parser.add_argument("--preset", default="quick", help="tiny: a seconds-long smoke test of this script on CPU")
    parser.add_argument("--images", type=int, default=4096, help="images per device throughput measurement")
    args = parser.parse_args()
    args.record = args.record or args.out / "evidence.json"
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    quick = PRESETS[args.preset]
    data = load_imagefolder(args.data)
    gpu = RuntimeConfig(device=args.device, dtype="float32")
    half = "bfloat16" if args.device == "cpu" else "float16"  # CPU has no float16 kernels (smoke tests only)
    record: dict = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "skipped": [],
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "dataset_version": data.version, "preset": args.preset, "seed": 0}

    def step(name: str, fn: Callable[[], dict]) -> None:
        if time.perf_counter() - began > args.budget_s:
            record["skipped"].append(name)
            return
        start = time.perf_counter()
        record[name] = {**fn(), "seconds": round(time.perf_counter() - start, 1)}
        args.record.write_text(json.dumps(record, indent=2, default=str))
        print(name, json.dumps(record[name], default=str)[:600], flush=True)

    prompts = most_duplicated_prompts(data, quick.extraction.prompts_top)
    text = prompts["prompt"].tolist()
    grid = [text[i % len(text)] for i in range(128)]  # 128 samples, prompts repeated with distinct seeds

    def same_seeds() -> dict:
        cpu = AuditPipeline.from_pretrained(args.reference, RuntimeConfig(device="cpu"))
        base = sample(cpu, cpu.encode_text(grid), list(range(128)), 3.0, quick.sample.steps)
        out = {}
        for dtype in dict.fromkeys(("float32", "bfloat16", half)):
            dev = AuditPipeline.from_pretrained(args.reference, RuntimeConfig(device=args.device, dtype=dtype))
            images = sample(dev, dev.encode_text(grid), list(range(128)), 3.0, quick.sample.steps)
            diff = np.abs(images.astype(int) - base.astype(int))
            out[dtype] = {"max_abs_diff_255": int(diff.max()), "mean_abs_diff_255": float(diff.mean()),
                          "share_of_pixels_equal": float((diff == 0).mean())}
        return {"images": 128, "guidance": 3.0, "against": "CPU float32, same seeds", **out}

    def throughput() -> dict:
        out = {}
        for name, runtime, rows in (("cpu", RuntimeConfig(device="cpu"), quick.sample.batch_size),
                                    ("device-float32", gpu, args.batch_size),
                                    ("device-bfloat16", RuntimeConfig(device=args.device, dtype="bfloat16"),
                                     args.batch_size)):
            pipe = AuditPipeline.from_pretrained(args.reference, runtime)
            n = 256 if name == "cpu" else args.images
            cond = pipe.encode_text([text[i % len(text)] for i in range(n)])
            sample(pipe, cond[:rows], list(range(rows)), 3.0, quick.sample.steps, batch_size=rows)  # warm-up
            _, seconds = timed(lambda p=pipe, c=cond, r=rows, n=n: sample(p, c, list(range(n)), 3.0,
                                                                           quick.sample.steps, batch_size=r))
            out[name] = {"images_per_s": round(n / seconds, 1), "unet_rows_per_call": rows, "images": n}
        out["device_over_cpu"] = round(out["device-float32"]["images_per_s"] / out["cpu"]["images_per_s"], 1)
        return {"sampler": f"DDIM-{quick.sample.steps}, guidance 3", **out}

    def base_training() -> dict:
        fresh = build_pipeline(quick.model, quick.data.resolution, seed=0, runtime=gpu)
        half = quick.train.steps // 2
        _, first = timed(lambda: train(fresh, data, quick.train, args.out / "base", stop_after=half))
        resumed = build_pipeline(quick.model, quick.data.resolution, seed=0, runtime=gpu)
        _, second = timed(lambda: train(resumed, data, quick.train, args.out / "base"))
        manifest = json.loads((args.out / "base" / "model" / "training_manifest.json").read_text())
        return {"steps": quick.train.steps, "killed_at": half, "steps_per_s": round(quick.train.steps /
                                                                                  (first + second), 1),
                "model_hash": manifest["model_hash"], "reference_hash_cpu": json.loads(
                    (args.reference / "training_manifest.json").read_text())["model_hash"]}

    probe_cfg = {}

    def guidance_arms() -> dict:
        pipe = AuditPipeline.from_pretrained(args.out / "base" / "model", gpu)
        sample_cfg = validated(quick.sample, batch_size=args.batch_size)
        preset = quick.model_copy(update={"sample": sample_cfg})
        calibration = calibrate_copy_test(pipe, data, preset, args.out / "null")
        probe_cfg["cfg"] = ExtractionConfig.at(calibration["delta"], quick.extraction)
        arms = {}
        for g in quick.guidance.sweep:
            s = run_extraction(pipe, data, args.out / f"guidance-{g:g}", prompts,
                               quick.extraction.samples_per_prompt, g, sample_cfg, probe_cfg["cfg"])
            arms[f"{g:g}"] = {k: s[k] for k in ("prompts_with_copy", "attacked_prompts", "rate", "ci_low", "ci_high",
                                                "extracted_images", "extracted_families", "oracle_rate")}
        return {"delta": calibration["delta"], "model_null": calibration["model_null"], "arms": arms}

    def dp_arm() -> dict:
        pipe = AuditPipeline.from_pretrained(args.out / "base" / "model", gpu)
        s, dp = quick.extraction, quick.dp
        cfg = DPConfig(epsilon=8.0, delta=dp.delta, steps=dp.steps, expected_batch=dp.expected_batch,
                       multiplicity=dp.multiplicity, lr=dp.lr, seed=0)
        pipe, report = dp_finetune(pipe, data.split("calibration"), cfg, args.out / "dp-eps8")
        ext = run_extraction(pipe, data, args.out / "dp-eps8" / "extraction", prompts, s.samples_per_prompt, 1.0,
                             validated(quick.sample, batch_size=args.batch_size),
                             probe_cfg.get("cfg", ExtractionConfig()))
        return {"epsilon_spent": report["epsilon_spent"], "dp_seconds": report["seconds"],
                **{k: ext[k] for k in ("prompts_with_copy", "attacked_prompts", "rate", "ci_low", "ci_high")}}

    def membership() -> dict:
        pipe = AuditPipeline.from_pretrained(args.out / "base" / "model", gpu)
        s = run_mia(pipe, data, args.out / "mia", list(quick.membership.attacks), quick.membership.per_side,
                    tune_per_side=quick.membership.tune_per_side)
        return {name: {"auc": r["all"]["auc"], "auc_ci": r["all"]["auc_ci"]} for name, r in s["attacks"].items()}

    def verdicts() -> dict:
        out = {}
        for dtype in ("float32", half):
            pipe = AuditPipeline.from_pretrained(args.reference, RuntimeConfig(device=args.device, dtype=dtype))
            run_extraction(pipe, data, args.out / f"verdict-{dtype}", prompts, quick.extraction.samples_per_prompt, 1.0,
                           validated(quick.sample, batch_size=args.batch_size), ExtractionConfig())
            out[dtype] = pd.read_parquet(args.out / f"verdict-{dtype}" / "per_prompt.parquet").set_index("prompt")
        agree = {col: float((out["float32"][col] == out[half][col].reindex(out["float32"].index)).mean())
                 for col in ("extracted", "memorized")}
        return {"prompts": len(out["float32"]), "half": half, "agreement": agree,
                "float32_extracted": int(out["float32"]["extracted"].sum()),
                "half_extracted": int(out[half]["extracted"].sum())}

    for name, fn in (("same_seeds", same_seeds), ("throughput", throughput), ("base_training", base_training),
                     ("guidance_arms", guidance_arms), ("dp_arm", dp_arm), ("membership", membership),
                     ("verdicts", verdicts)):
        if not args.only or name in args.only:
            step(name, fn)
    record["total_seconds"] = round(time.perf_counter() - began, 1)
    record["host"] = os.uname().nodename
    args.record.write_text(json.dumps(record, indent=2, default=str))
    print("done", record["total_seconds"], "s; skipped", record["skipped"])


if __name__ == "__main__":
    main()
