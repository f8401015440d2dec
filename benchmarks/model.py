"""Speed and memory of the whole model: training iterations/s and inference ms/image per preset.

    python benchmarks/model.py                       # shapes and coco presets on the CPU
    python benchmarks/model.py --presets shapes --steps 20
    python benchmarks/model.py --device cuda --amp bf16 --torchvision   # GPU: coco 800x1333 vs torchvision

Each (preset, device) case runs in its own subprocess so that its peak memory (max RSS on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU) is its own. Images are generated shapes at the preset's size
(800x1333 for coco), with random weights: speed does not depend on what the weights are. With
``--torchvision`` (GPU machines, where torchvision's ops load) torchvision's ``maskrcnn_resnet50_fpn`` runs
in the same process on the same images at the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mrcnn_edu.config import Config  # noqa: E402
from mrcnn_edu.data import ShapesDataset  # noqa: E402
from mrcnn_edu.model import MaskRCNN  # noqa: E402

IMAGE_SIZE = {"shapes": (128, 128), "matterport": (1024, 1024), "coco": (800, 1333)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, repeats):
    fn()  # warm-up (also builds cached anchors)
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _autocast(device, amp):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def run_case(preset: str, device: str, batch_size: int, steps: int, amp: str, with_torchvision: bool) -> dict:
    device = torch.device(device)
    cfg = Config.preset(preset)
    h, w = IMAGE_SIZE[preset]
    data = ShapesDataset(batch_size, (h, w), seed=0)
    items = [data[i] for i in range(batch_size)]
    images = [im.to(device) for im, _ in items]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for _, t in items]
    torch.manual_seed(0)
    model = MaskRCNN(cfg).to(device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def train_step(m=model, o=opt):
        m.train()
        with _autocast(device, amp):
            loss = sum(m(images, targets).values())
        o.zero_grad()
        loss.backward()
        o.step()

    def infer(m=model):
        m.eval()
        with torch.no_grad(), _autocast(device, amp):
            m(images)

    row = {"preset": preset, "device": str(device), "amp": amp, "batch": batch_size, "image": f"{h}x{w}"}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row["train_s_per_iter"] = _timed(train_step, device, steps)
    row["train_images_per_s"] = batch_size / row["train_s_per_iter"]
    row["infer_ms_per_image"] = 1000 * _timed(infer, device, steps) / batch_size
    if device.type == "cuda":
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        2**20 if sys.platform == "darwin" else 2**10
    )

    if with_torchvision:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=cfg.num_classes).to(
            device
        )
        tv_opt = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row["tv_train_s_per_iter"] = _timed(lambda: train_step(tv, tv_opt), device, steps)
        row["tv_train_images_per_s"] = batch_size / row["tv_train_s_per_iter"]
        row["tv_infer_ms_per_image"] = 1000 * _timed(lambda: infer(tv), device, steps) / batch_size
        if device.type == "cuda":
            row["tv_peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["shapes", "coco"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=None, help="timed repeats (default 10 shapes, 2 otherwise)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 8 shapes, 2 otherwise)")
    p.add_argument("--torchvision", action="store_true", help="also time torchvision's maskrcnn_resnet50_fpn")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case and print its JSON row
    args = p.parse_args(argv)

    if args.case:
        preset = args.case
        row = run_case(preset, args.device, args.batch, args.steps, args.amp, args.torchvision)
        print(json.dumps(row))
        return 0

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    rows = []
    for preset in args.presets:
        small = preset == "shapes"
        cmd = [sys.executable, os.path.abspath(__file__), "--case", preset, "--device", args.device,
               "--amp", args.amp, "--steps", str(args.steps or (10 if small else 2)),
               "--batch", str(args.batch or (8 if small else 2))]  # fmt: skip
        if args.torchvision:
            cmd.append("--torchvision")
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{preset}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
