"""Generation on Ray against the same generation in one process, and the cost of a Carlini-scale audit.

1. Throughput: `generate` into a fresh folder, timed end to end (a Ray run includes starting its workers and
   shipping them the pipeline), for W = 1, 2, ... workers of 1 torch thread each, against the local run with W torch
   threads on the same cores. Reported per W: images/s of both, their ratio, and Ray's scaling efficiency
   (images/s with W workers over W/W0 times images/s with the fewest, W0). Variants run interleaved within each
   repeat; the median and range over repeats are reported. Each Ray run's folder is compared byte for byte with a local
   1-thread run. Run it alone on the machine.
2. Projection: UNet evaluations, images and device-hours for 350,000 prompts x 500 generations (Carlini et al.
   2023's scale), with and without the tiered detector. Per-sample and per-prompt evaluation counts are read from
   the one UNet counter (a generation of the quick model; the detector's declared cost, which tests hold to the
   counter); the rate is a Stable Diffusion v1 UNet (diffusers' default UNet2DConditionModel, 768-d text, 64x64
   latents, random weights: speed does not depend on them) timed on this machine's device in float32. Left out:
   VAE decoding and the neighbour search, and the step count is the study's (DDIM-25), not Stable Diffusion's 50.

Usage: python benchmarks/scale.py --model models/quick [--workers 1 2] [--prompts 24] [--seeds 16] [--repeats 3]
"""

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from diffaudit import backend
from diffaudit.attacks.detect import DETECTORS
from diffaudit.config import CARLINI_SAMPLES, PRESETS, SD_DEFAULT_GUIDANCE, UNET_ROWS, RuntimeConfig, TriageConfig
from diffaudit.model.generate import generate
from diffaudit.model.pipeline import AuditPipeline
from diffaudit.model.shards import load_samples
from diffaudit.scale.ray_pool import connect

CARLINI_PROMPTS = 350_000  # Carlini et al. 2023 §4.2: the 350,000 most duplicated LAION captions


def timed_run(pipe: AuditPipeline, prompts: list[str], seeds: int, guidance: float, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    generate(pipe, prompts, list(range(seeds)), [guidance], PRESETS["quick"].sample, out)
    return len(prompts) * seeds / (time.perf_counter() - start)


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def throughput(pipe: AuditPipeline, workers: list[int], prompts: list[str], seeds: int, guidance: float,
               repeats: int, scratch: Path) -> list[dict]:
    import ray

    ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False)
    torch.set_num_threads(1)
    timed_run(pipe, prompts, seeds, guidance, scratch / "reference")  # the bytes every Ray run must match
    runs: dict[tuple[str, int], list[float]] = {}
    same: dict[int, bool] = {}
    for _ in range(repeats):
        for w in workers:
            torch.set_num_threads(w)
            runs.setdefault(("local", w), []).append(timed_run(pipe, prompts, seeds, guidance, scratch / "local"))
            torch.set_num_threads(1)
            pool = connect(RuntimeConfig(ray="local", ray_cpus=1, ray_workers=w, device=pipe.device.type,
                                         ray_gpus=int(pipe.device.type == "cuda")))
            with backend.using(pool):
                runs.setdefault(("ray", w), []).append(timed_run(pipe, prompts, seeds, guidance, scratch / "ray"))
            same[w] = same.get(w, True) and same_bytes(scratch / "reference", scratch / "ray")
    ray.shutdown()
    rows = []
    for w in workers:
        local, on_ray, one = runs[("local", w)], runs[("ray", w)], runs[("ray", workers[0])]
        ratio = [r / lo for r, lo in zip(on_ray, local, strict=True)]
        scaling = [r / (w / workers[0] * o) for r, o in zip(on_ray, one, strict=True)]
        rows.append({"workers": w, "local_img_s": local, "ray_img_s": on_ray, "ray_over_local": ratio,
                     "scaling_efficiency": scaling, "same_bytes_as_local_1_thread": same[w]})
    return rows


def per_sample_evals(pipe: AuditPipeline, guidance: float, scratch: Path) -> int:
    """UNet evaluations per generated image, from the counter, with the study's sampler and steps."""
    out = scratch / "count"
    generate(pipe, ["a red heart"], [0, 1], [guidance], PRESETS["quick"].sample, out)
    evals = load_samples(out)[1]["unet_evals"]
    assert evals.nunique() == 1, evals
    return int(evals.iloc[0])


def sd_unet_rate(device: str, rows: int, calls: int = 3) -> float:
    """UNet evaluations per second of a Stable Diffusion v1 UNet (random weights) on `device`."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768).to(device).eval()
    x, c = torch.randn(rows, 4, 64, 64, device=device), torch.randn(rows, 77, 768, device=device)
    with torch.inference_mode():
        unet(x, 999, encoder_hidden_states=c)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            unet(x, 999, encoder_hidden_states=c)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return rows * calls / (time.perf_counter() - start)


def projection(per_sample: int, per_prompt_detector: int, confirm_fraction: float, rate: float) -> list[dict]:
    full_images = CARLINI_PROMPTS * CARLINI_SAMPLES
    confirmed = math.ceil(confirm_fraction * CARLINI_PROMPTS)
    rows = [{"audit": f"full probe: {CARLINI_PROMPTS:,} prompts x {CARLINI_SAMPLES} generations",
             "unet_evals": full_images * per_sample, "images": full_images}]
    tiered_evals = CARLINI_PROMPTS * per_prompt_detector + confirmed * CARLINI_SAMPLES * per_sample
    rows.append({"audit": f"tiered: detector on every prompt, full probe on the top {confirmed:,}",
                 "unet_evals": tiered_evals, "images": confirmed * CARLINI_SAMPLES})
    for r in rows:
        r["device_hours"] = r["unet_evals"] / rate / 3600
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/quick"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--guidance", type=float, default=SD_DEFAULT_GUIDANCE)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sd-rows", type=int, default=None,
                    help="UNet rows per timed call (default: 2, one guided sample, on the CPU; UNET_ROWS on a GPU)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    args = ap.parse_args()
    pipe = AuditPipeline.from_pretrained(args.model, RuntimeConfig(device=args.device))
    prompts = [f"emoji number {i}" for i in range(args.prompts)]
    result: dict = {"machine": {"cpus": os.cpu_count(), "device": args.device,
                                "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
                                else "CPU", "torch": torch.__version__},
                    "settings": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if not args.skip_throughput:
            result["throughput"] = throughput(pipe, args.workers, prompts, args.seeds, args.guidance, args.repeats,
                                              scratch)
            for r in result["throughput"]:
                print(f"{r['workers']} worker(s): local {statistics.median(r['local_img_s']):.2f} img/s, Ray "
                      f"{statistics.median(r['ray_img_s']):.2f} img/s, ratio "
                      f"{statistics.median(r['ray_over_local']):.3f} (range {min(r['ray_over_local']):.3f}-"
                      f"{max(r['ray_over_local']):.3f}), scaling {statistics.median(r['scaling_efficiency']):.3f}, "
                      f"same bytes {r['same_bytes_as_local_1_thread']}")
        torch.set_num_threads(os.cpu_count() or 1)
        per_sample = per_sample_evals(pipe, args.guidance, scratch)
    detector = DETECTORS[TriageConfig().detector]()
    rows = args.sd_rows or (UNET_ROWS if args.device.startswith("cuda") else 2)
    rate = sd_unet_rate(args.device, rows)
    result["projection"] = {"per_sample_unet_evals": per_sample, "detector": TriageConfig().detector,
                            "detector_unet_evals_per_prompt": detector.queries_per_prompt,
                            "confirm_fraction": TriageConfig().confirm_fraction,
                            "sd_unet_evals_per_s": rate, "sd_rows_per_call": rows,
                            "rows": projection(per_sample, detector.queries_per_prompt,
                                               TriageConfig().confirm_fraction, rate)}
    print(f"per sample {per_sample} UNet evals; detector {detector.queries_per_prompt} per prompt; SD v1 UNet "
          f"{rate:.3f} evals/s on {result['machine']['device_name']}")
    for r in result["projection"]["rows"]:
        print(f"{r['audit']}: {r['unet_evals']:.3e} UNet evals, {r['images']:.3e} images, "
              f"{r['device_hours']:.3e} device-hours")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
