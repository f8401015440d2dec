"""The GPU check: everything a GPU machine should confirm about mrcnn_edu, in one run of a few minutes.

    python benchmarks/gpu_check.py                          # on a GPU machine: every section, report in runs/
    python benchmarks/gpu_check.py --only ops,shapes        # rerun some sections
    python benchmarks/gpu_check.py --device cpu --tiny      # dry run on the CPU (the test suite runs this)

It installs nothing and downloads nothing: it reads the versions of what the machine has (PyTorch,
torchvision, whether torchvision's compiled kernels load), and a section whose requirement is missing is
reported as skipped with the reason. Sections, each in its own subprocess with its own time limit (so one
crash or hang costs that section only, and peak GPU memory is per section):

- ``env``: versions, GPU, memory.
- ``ops``: ``mrcnn_edu.ops`` against torchvision's kernels on the device: roi_align (forward and gradient of
  the features), roi_pool, nms and batched_nms keep sets, in float32, float16 and bfloat16; and their times.
- ``tests``: the test suite's CUDA and torchvision tests (pytest ``-k "cuda or torchvision"``), among them the
  parity of the whole model with torchvision's on the device.
- ``shapes``: the shapes demo recipe trained on the device (bf16 autocast on a GPU), then mask AP@0.5 on the
  100 held-out images, and its wall time.
- ``train``: R50-FPN training images/s with bf16 autocast, next to torchvision's ``maskrcnn_resnet50_fpn``
  with the same weights, recipe (frozen BatchNorm, stem and layer1 frozen), images and targets.
- ``infer``: inference latency at batch 1 and 8 at 800/1333, same weights, both models.
- ``ddp``: ``torchrun --nproc_per_node 1 -m mrcnn_edu train``, a few steps (NCCL on a GPU, gloo on the CPU).

Writes ``report.json`` (every figure, with the versions) and ``summary.md`` (one table) to ``--out``, and
prints the table. Exit status 0 when every section passed or was skipped, 1 otherwise. ``--tiny`` shrinks
every size and step count so the whole check runs on a CPU in about a minute; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SECTIONS = ("env", "ops", "tests", "shapes", "train", "infer", "ddp")
EXTRA_SECTIONS = ("profile",)  # run only when named in --only
# seconds per section on a GPU machine; --tiny runs on a CPU get the same limits
LIMITS = {
    "profile": 120,
    "env": 45,
    "ops": 75,
    "tests": 150,
    "shapes": 120,
    "train": 90,
    "infer": 75,
    "ddp": 75,
}


class Skip(Exception):
    """A section that cannot run here (a missing requirement); its message says why."""


# ------------------------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _torchvision():
    """``(torchvision, kernels)`` or Skip: ``kernels`` is "compiled" or "onnxruntime" (CPU forward only)."""
    try:
        from mrcnn_edu.references import import_torchvision

        return import_torchvision()
    except ImportError as e:
        raise Skip(f"torchvision is not importable here ({e})") from None


# ------------------------------------------------------------------------------------------ sections


def section_env(device: torch.device, tiny: bool) -> dict:
    row = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        tv, kernels = _torchvision()
        row.update(torchvision=tv.__version__, torchvision_kernels=kernels)
    except Skip as e:
        row.update(torchvision=None, torchvision_kernels=str(e))
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        row.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
    return row


def _random_rois(gen, n: int, images: int, size: float, device) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size * 0.8
    wh = torch.rand(n, 2, generator=gen) * size * 0.3 + 2
    index = torch.randint(0, images, (n, 1), generator=gen).float()
    return torch.cat([index, xy, xy + wh], dim=1).to(device)


def _random_boxes(gen, n: int, size: float, device) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.exp(torch.rand(n, 2, generator=gen) * 3.5 + 2.5)  # 12 to 400 px: float16 areas overflow
    return torch.cat([xy, xy + wh], 1).to(device)


@contextlib.contextmanager
def _pure_torch():
    """Our own PyTorch code paths, not the hand-off to torchvision's kernels that CUDA calls normally take."""
    from mrcnn_edu import nms, roi_align

    saved = nms.torchvision_ops, roi_align.torchvision_ops
    nms.torchvision_ops = roi_align.torchvision_ops = lambda: None
    try:
        yield
    finally:
        nms.torchvision_ops, roi_align.torchvision_ops = saved


def _compare_ops(ops, tv, x32, rois32, boxes, groups, dtype, backward: bool) -> dict:
    """Our operators on ``dtype`` inputs against torchvision's in float32 on the same rounded inputs."""
    x, rois, boxes = x32.to(dtype), rois32.to(dtype), boxes.to(dtype)
    out = {}
    for aligned in (False, True):
        ours = ops.roi_align(x, rois, 7, 0.25, 2, aligned)
        ref = tv.ops.roi_align(x.float(), rois.float(), 7, 0.25, 2, aligned)
        out[f"roi_align_aligned={aligned}_max_diff"] = float((ours.float() - ref).abs().max())
    if backward:  # fresh leaves (x.float() of a float32 x would be x itself, shared by both)
        xg, xr = (x.detach().float().clone().requires_grad_() for _ in range(2))
        ops.roi_align(xg.to(dtype), rois, 7, 0.25, 2, False).float().square().sum().backward()
        tv.ops.roi_align(xr, rois.float(), 7, 0.25, 2, False).square().sum().backward()
        out["roi_align_grad_max_rel_diff"] = float((xg.grad - xr.grad).abs().max() / xr.grad.abs().max())
        ref = tv.ops.roi_pool(x.float(), rois.float(), 7, 0.25)
        out["roi_pool_max_diff"] = float((ops.roi_pool(x, rois, 7, 0.25).float() - ref).abs().max())
    # scores k / 256: distinct and exact in every dtype, so no tie makes the two orders differ
    scores = (torch.randperm(len(boxes), generator=torch.Generator().manual_seed(1)) + 1).to(
        boxes.device
    ) / 256
    scores = scores.to(dtype)
    keep = ops.nms(boxes, scores, 0.5).tolist()
    out["nms_kept"] = len(keep)
    out["nms_same_keep"] = keep == tv.ops.nms(boxes.float(), scores.float(), 0.5).tolist()
    keep = ops.batched_nms(boxes, scores, groups, 0.5).tolist()
    ref = tv.ops.batched_nms(boxes.float(), scores.float(), groups, 0.5).tolist()
    out["batched_nms_same_keep"] = keep == ref
    return out


def _roi_pool_diagnosis(ops, tv, x, rois) -> dict:
    """roi_pool on the device against the same call on the CPU, ours and torchvision's, and the worst bin."""
    from mrcnn_edu.roi_align import roi_pool_bins

    x, rois = x.detach(), rois.detach()
    ours, theirs = ops.roi_pool(x, rois, 7, 0.25), tv.ops.roi_pool(x, rois, 7, 0.25)
    ours_cpu = ops.roi_pool(x.cpu(), rois.cpu(), 7, 0.25)
    theirs_cpu = tv.ops.roi_pool(x.cpu(), rois.cpu(), 7, 0.25)
    gap = (ours - theirs).abs()
    k, c, ph, pw = (int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
    return {
        "ours_device_vs_cpu": float((ours.cpu() - ours_cpu).abs().max()),
        "torchvision_device_vs_cpu": float((theirs.cpu() - theirs_cpu).abs().max()),
        "ours_cpu_vs_torchvision_cpu": float((ours_cpu - theirs_cpu).abs().max()),
        "rois_differing": int((gap.flatten(1).amax(1) > 1e-6).sum()),
        "worst": {
            "roi": rois[k].tolist(),
            "channel_bin": [c, ph, pw],
            "ours": float(ours[k, c, ph, pw]),
            "torchvision": float(theirs[k, c, ph, pw]),
            "ours_cpu": float(ours_cpu[k, c, ph, pw]),
            "bin_cells": roi_pool_bins(rois[k, 1:].cpu(), 7, tuple(x.shape[-2:]), 0.25)[ph, pw].tolist(),
        },
    }


def section_ops(device: torch.device, tiny: bool) -> dict:
    """Our operators next to torchvision's on the device, per dtype: max differences, keep sets, times.

    Twice: as the package runs them (on CUDA, roi_align and nms hand work to torchvision's kernels when
    those load) and with our own PyTorch code (what runs where torchvision is not installed).
    """
    from mrcnn_edu import ops

    tv, kernels = _torchvision()
    if kernels != "compiled" and device.type == "cuda":
        raise Skip(f"torchvision's CUDA kernels do not load here (its ops run on {kernels})")
    # onnxruntime's kernels (a CPU dry run) have no backward and take float32 only
    dtypes = ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16"))[
        : 3 if kernels == "compiled" else 1
    ]
    gen = torch.Generator().manual_seed(0)
    channels, fmap, n_rois = (16, 16, 50) if tiny else (256, 64, 1000)
    x32 = torch.randn(2, channels, fmap, fmap, generator=gen).to(device)
    rois32 = _random_rois(gen, n_rois, 2, fmap * 4.0, device)
    boxes256 = _random_boxes(gen, 256, 800.0, device)
    groups = torch.randint(0, 5, (256,), generator=gen).to(device)
    # float32: to round-off; half types: rounding of the output (values of a few units)
    tolerance = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
    row = {}
    for path, context in (("dispatch", contextlib.nullcontext), ("pure", _pure_torch)):
        with context():
            for dtype, tag in dtypes:
                try:
                    out = _compare_ops(ops, tv, x32, rois32, boxes256, groups, dtype, kernels == "compiled")
                    diffs = [v for k, v in out.items() if "diff" in k]
                    out["ok"] = (
                        out["nms_same_keep"]
                        and out["batched_nms_same_keep"]
                        and max(diffs) <= tolerance[dtype]
                    )
                except Exception as e:  # a dtype a kernel refuses is a finding, not the end of the section
                    out = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
                row[f"{path}_{tag}"] = out
            if device.type == "cuda" and kernels == "compiled":  # where a CUDA roi_pool differs, and whose
                row[f"{path}_roi_pool_diagnosis"] = _roi_pool_diagnosis(ops, tv, x32, rois32)
            # a large float32 NMS, as the proposal layer runs it: 6000 boxes, IoU 0.7
            boxes = _random_boxes(gen, 600 if tiny else 6000, 1333.0, device)
            scores = torch.rand(len(boxes), generator=gen).to(device)
            keep, ref = ops.nms(boxes, scores, 0.7), tv.ops.nms(boxes, scores, 0.7)
            row[f"{path}_nms6000_same_keep"] = keep.tolist() == ref.tolist()
            repeats = 3 if tiny else 20
            row[f"{path}_ms"] = {
                "roi_align": 1e3
                * _median_seconds(lambda: ops.roi_align(x32, rois32, 7, 0.25, 2), device, repeats),
                "nms6000": 1e3
                * _median_seconds(lambda b=boxes, s=scores: ops.nms(b, s, 0.7), device, repeats),
            }
    row["reference"] = f"torchvision {tv.__version__} on {kernels} kernels"
    row["torchvision_ms"] = {
        "roi_align": 1e3
        * _median_seconds(lambda: tv.ops.roi_align(x32, rois32, 7, 0.25, 2), device, 3 if tiny else 20),
        "nms6000": 1e3 * _median_seconds(lambda: tv.ops.nms(boxes, scores, 0.7), device, 3 if tiny else 20),
    }
    row["ok"] = all(v["ok"] for k, v in row.items() if isinstance(v, dict) and "ok" in v) and all(
        v for k, v in row.items() if k.endswith("same_keep")
    )
    return row


def section_tests(device: torch.device, tiny: bool) -> dict:
    """The suite's CUDA and torchvision tests (the parity of the whole model on the device among them)."""
    if device.type != "cuda" and not tiny:
        raise Skip("the CUDA tests need a GPU")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "cuda or torchvision",
        "--deselect",
        "tests/test_torchvision_parity.py::test_outputs_match_torchvision[cpu]",
        "tests",
    ]
    if tiny:  # the dry run checks that the command is sound, on one small file
        cmd[-1] = "tests/test_anchors.py"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 5 or "no tests ran" in (lines[-1] if lines else ""):
        return {"ok": True, "summary": lines[-1] if lines else "", "note": "no test selected"}
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    if done.returncode:  # the whole report of the failures, for the record
        (Path(os.environ.get("GPU_CHECK_OUT", ".")) / "tests_pytest.txt").write_text(
            done.stdout + done.stderr
        )
    return {
        "ok": done.returncode == 0,
        "summary": lines[-1] if lines else done.stderr[-500:],
        "failures": failures,
        "tail": "\n".join(lines[-40:]) if done.returncode else "",
    }


def section_shapes(device: torch.device, tiny: bool) -> dict:
    """The demo's recipe on the device: train, then mask AP@0.5 on the 100 held-out images."""
    from mrcnn_edu.config import Config
    from mrcnn_edu.demo import shapes_splits
    from mrcnn_edu.train import evaluate_model, train

    amp = "bf16" if device.type == "cuda" else "none"
    changes = {"amp": amp, **({"steps": 4, "batch_size": 2, "warmup_steps": 1} if tiny else {})}
    config = Config.preset("shapes", **changes)
    train_set, val_set = shapes_splits(config, val_images=4 if tiny else 100)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        # generating images on the CPU holds so small a model back: worker processes on a GPU machine
        workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
        summary = train(
            config, train_set, None, out_dir=out, device=device, progress=False, num_workers=workers
        )
        _sync(device)
        seconds = time.perf_counter() - start
    model = summary["model"].eval()
    start = time.perf_counter()
    result = evaluate_model(model, val_set, 8, device)
    ap50 = result["segm"]["AP50"]
    return {
        "ok": tiny or ap50 >= 0.9,
        "steps": summary["steps"],
        "batch": config.batch_size,
        "amp": amp,
        "train_seconds": seconds,
        "eval_seconds": time.perf_counter() - start,
        "mask_AP50": ap50,
        "bbox_AP50": result["bbox"]["AP50"],
        "images_per_second": summary["images_per_second"],
        "peak_gpu_mib": _peak_mib(device),
    }


def _same_recipe_pair(device: torch.device, min_size: int, max_size: int):
    """torchvision's ``maskrcnn_resnet50_fpn`` and ours with one state dict, both in train mode, same recipe.

    torchvision's COCO_V1 structure (frozen BatchNorm) with its default for a pretrained backbone, three
    trainable stages (layer2-4; the stem and layer1 frozen), which is what the ``torchvision`` preset does.
    """
    from mrcnn_edu.config import Config
    from mrcnn_edu.pretrained import load_torchvision_maskrcnn
    from mrcnn_edu.references import seeded_torchvision_maskrcnn

    theirs = seeded_torchvision_maskrcnn(seed=0)
    theirs.transform.min_size, theirs.transform.max_size = (min_size,), max_size
    for name, p in theirs.backbone.body.named_parameters():
        p.requires_grad_(name.startswith(("layer2", "layer3", "layer4")))
    config = Config.preset("torchvision", min_dim=min_size, max_dim=max_size)
    ours = load_torchvision_maskrcnn(theirs.state_dict(), config=config, device=device)
    return ours, theirs.to(device)


def section_train(device: torch.device, tiny: bool) -> dict:
    """R50-FPN training steps: ours and torchvision's, alternating, same weights, data and recipe."""
    from mrcnn_edu.data import ShapesDataset

    amp = "bf16" if device.type == "cuda" else "none"
    batch, size, repeats = (1, (128, 160), 2) if tiny else (8, (800, 1333), 10)
    items = [ShapesDataset(batch, size, seed=0)[i] for i in range(batch)]
    images = [im.to(device) for im, _ in items]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in items]
    ours, theirs = _same_recipe_pair(device, min(size), max(size))
    tv, kernels = _torchvision()
    models = {"mrcnn_edu": ours} if kernels != "compiled" else {"mrcnn_edu": ours, "torchvision": theirs}
    row = {"batch": batch, "image": f"{size[0]}x{size[1]}", "amp": amp}
    for label, model in models.items():
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def step(model=model, opt=opt):
            with _autocast(device, amp):
                loss = sum(model(images, [dict(t) for t in targets]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = _median_seconds(step, device, repeats, warmup=2)
        row[label] = {
            "s_per_step": seconds,
            "images_per_second": batch / seconds,
            "peak_gpu_mib": _peak_mib(device),
        }
    if "torchvision" in models:
        row["ratio_images_per_s"] = (
            row["mrcnn_edu"]["images_per_second"] / row["torchvision"]["images_per_second"]
        )
    else:
        row["torchvision"] = f"skipped: its {kernels} kernels have no backward here"
    row["ok"] = True  # a speed figure: the report compares it with the target, no pass/fail
    return row


def section_infer(device: torch.device, tiny: bool) -> dict:
    """Inference latency at batch 1 and 8, same weights, fp32 and bf16 autocast, both models."""
    from mrcnn_edu.data.photos import load_photo, photo_names

    tv, kernels = _torchvision()
    size = (160, 200) if tiny else (800, 1333)
    ours, theirs = _same_recipe_pair(device, *size)
    ours.eval()
    theirs.eval()
    photos = [load_photo(name).to(device) for name in photo_names()[: 1 if tiny else None]]
    amps = ("none",) if device.type != "cuda" else ("none", "bf16")
    row = {"image": f"min {size[0]} / max {size[1]}", "torchvision_kernels": kernels}
    for amp in amps:
        for batch in (1,) if tiny else (1, 8):
            images = (photos * batch)[:batch]
            for label, model in (("mrcnn_edu", ours), ("torchvision", theirs)):

                def run(model=model, images=images, amp=amp):
                    with torch.no_grad(), _autocast(device, amp):
                        return model(images)

                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds = _median_seconds(run, device, 1 if tiny else 10, warmup=0 if tiny else 1)
                row[f"{label}_{amp}_batch{batch}_ms"] = 1e3 * seconds
                row[f"{label}_{amp}_batch{batch}_detections"] = sum(len(r["boxes"]) for r in run())
                if device.type == "cuda":
                    row[f"{label}_{amp}_batch{batch}_peak_gpu_mib"] = _peak_mib(device)
            row[f"ratio_{amp}_batch{batch}"] = (
                row[f"mrcnn_edu_{amp}_batch{batch}_ms"] / row[f"torchvision_{amp}_batch{batch}_ms"]
            )
    row["ok"] = True
    return row


def section_ddp(device: torch.device, tiny: bool) -> dict:
    """``torchrun --nproc_per_node 1 -m mrcnn_edu train``: the distributed code path, end to end."""
    from mrcnn_edu.checkpoint import load_checkpoint

    steps = 2 if tiny else 20
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "1",
            "-m",
            "mrcnn_edu",
            "train",
            "--preset",
            "shapes",
            "--out",
            f"{out}/run",
            "--val-images",
            "4",
            "--set",
            f"steps={steps}",
            "--set",
            "batch_size=2",
            "--set",
            "warmup_steps=1",
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
        seconds = time.perf_counter() - start
        saved = Path(out, "run", "last.pt")
        step = load_checkpoint(saved)["step"] if saved.is_file() else None
    ddp = "DistributedDataParallel" in done.stdout + done.stderr
    return {
        "ok": done.returncode == 0 and step == steps and ddp,
        "returncode": done.returncode,
        "saved_step": step,
        "seconds": seconds,
        "backend": "nccl" if device.type == "cuda" else "gloo",
        "tail": (done.stdout + done.stderr)[-1500:] if done.returncode else "",
    }


def section_profile(device: torch.device, tiny: bool) -> dict:
    """Where a training step's time goes (run it with ``--only profile``): the operators with the most device
    time and the host synchronisations, for the shapes preset (batch 8, 128 px) and for R50-FPN (bf16,
    800x1333), ours and torchvision's; the tables go to ``profile.txt`` beside the report."""
    from torch.profiler import ProfilerActivity, profile

    from mrcnn_edu.config import Config
    from mrcnn_edu.data import ShapesDataset
    from mrcnn_edu.model import MaskRCNN

    amp = "bf16" if device.type == "cuda" else "none"
    shapes = Config.preset("shapes")
    size, batch = ((128, 160), 1) if tiny else ((800, 1333), 8)
    ours, theirs = _same_recipe_pair(device, min(size), max(size))
    torch.manual_seed(0)
    cases = {
        "shapes_mrcnn_edu": (MaskRCNN(shapes).to(device), (128, 128), 8),
        "r50_mrcnn_edu": (ours, size, batch),
    }
    if _torchvision()[1] == "compiled":
        cases["r50_torchvision"] = (theirs, size, batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    syncs = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "aten::_local_scalar_dense", "aten::nonzero")
    row, tables = {}, []
    for name, (model, image_size, n) in cases.items():
        items = [ShapesDataset(n, image_size, seed=0)[i] for i in range(n)]
        images = [im.to(device) for im, _ in items]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in items]
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step(model=model, opt=opt, images=images, targets=targets):
            with _autocast(device, amp):
                loss = sum(model(images, [dict(t) for t in targets]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        seconds = _median_seconds(step, device, 3, warmup=2)
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            _sync(device)
        events = prof.key_averages()
        counts = {k: sum(e.count for e in events if e.key == k) / 3 for k in syncs}
        row[name] = {"s_per_step": seconds, "per_step": counts}
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        try:
            table = events.table(sort_by=key, row_limit=25)
        except (AttributeError, KeyError, ValueError):
            table = events.table(sort_by="self_cuda_time_total", row_limit=25)
        tables.append(f"== {name}: {seconds * 1e3:.1f} ms/step; per step: {counts}\n{table}\n")
    (Path(os.environ.get("GPU_CHECK_OUT", ".")) / "profile.txt").write_text("\n".join(tables))
    return row


# ------------------------------------------------------------------------------------------- driver


def run_section(name: str, device: torch.device, tiny: bool) -> dict:
    """One section in this process: ``{"status": "ok" | "failed" | "skipped", ...figures}``."""
    start = time.perf_counter()
    try:
        row = globals()[f"section_{name}"](device, tiny)
        status = "ok" if row.pop("ok", True) else "failed"
    except Skip as e:
        row, status = {"reason": str(e)}, "skipped"
    except Exception:  # a crash is this section's result, reported with its traceback
        row, status = {"error": traceback.format_exc(limit=-8)}, "failed"
    return {"status": status, **row, "seconds": round(time.perf_counter() - start, 1)}


def _one_line(name: str, row: dict) -> str:
    if row["status"] == "skipped":
        return row["reason"]
    if "error" in row:
        return " ".join(row["error"].split())[-300:]
    pick = {
        "env": lambda r: (
            f"{r.get('gpu', r['device'])}, torch {r['torch']}, torchvision {r['torchvision']} "
            f"({r['torchvision_kernels']})"
        ),
        "ops": lambda r: "; ".join(
            f"{k}: " + ("ok" if v.get("ok") else "FAILED")
            for k, v in r.items()
            if isinstance(v, dict) and "ok" in v
        ),
        "tests": lambda r: r["summary"],
        "shapes": lambda r: (
            f"mask AP50 {r['mask_AP50']:.3f} after {r['steps']} steps in {r['train_seconds']:.0f} s"
        ),
        "train": lambda r: (
            f"{r['mrcnn_edu']['images_per_second']:.1f} img/s ours"
            + (
                f", {r['torchvision']['images_per_second']:.1f} torchvision"
                if isinstance(r["torchvision"], dict)
                else ""
            )
        ),
        "infer": lambda r: (
            ", ".join(f"{k[6:]} {v:.2f}" for k, v in r.items() if k.startswith("ratio_"))
            + " (ours / tv time)"
        ),
        "ddp": lambda r: f"{r['backend']}, saved step {r['saved_step']}",
        "profile": lambda r: ", ".join(
            f"{k} {v['s_per_step'] * 1e3:.0f} ms/step" for k, v in r.items() if isinstance(v, dict)
        ),
    }
    try:
        return pick[name](row)
    except (KeyError, TypeError):  # a failed section may lack a figure
        return json.dumps({k: v for k, v in row.items() if k not in ("status", "seconds")})[:300]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument(
        "--tiny", action="store_true", help="tiny sizes and step counts: a dry run of every section"
    )
    p.add_argument("--only", help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    p.add_argument("--out", default="runs/gpu_check", help="folder for report.json and summary.md")
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section, print its JSON
    args = p.parse_args(argv)
    device = torch.device(args.device)

    if args.section:
        print("GPU_CHECK_ROW " + json.dumps(run_section(args.section, device, args.tiny)), flush=True)
        return 0

    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS) - set(EXTRA_SECTIONS))
    if unknown:
        print(
            f"gpu_check: --only: unknown section(s) {unknown}; choose from {list(SECTIONS)}", file=sys.stderr
        )
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: --device cuda, but torch sees no GPU (use --device cpu --tiny for a dry run)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["GPU_CHECK_OUT"] = str(out)  # (sections in subprocesses write their long logs there)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "tiny": args.tiny,
        "sections": {},
    }
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--device", args.device]
        try:
            done = subprocess.run(
                cmd + (["--tiny"] if args.tiny else []),
                capture_output=True,
                text=True,
                timeout=LIMITS[name],
                cwd=ROOT,
            )
            rows = [line for line in done.stdout.splitlines() if line.startswith("GPU_CHECK_ROW ")]
            row = (
                json.loads(rows[-1][len("GPU_CHECK_ROW ") :])
                if rows
                else {
                    "status": "failed",
                    "error": f"exit {done.returncode}: {(done.stdout + done.stderr)[-2000:]}",
                }
            )
        except subprocess.TimeoutExpired:
            row = {"status": "failed", "error": f"over its {LIMITS[name]} s limit"}
        report["sections"][name] = row
        print(
            f"{name:>7}: {row['status']:<7} {row.get('seconds', '-')!s:>6} s  {_one_line(name, row)}",
            flush=True,
        )
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")  # after each section
    lines = ["| section | status | seconds | result |", "|---|---|---:|---|"]
    for name, row in report["sections"].items():
        lines.append(f"| {name} | {row['status']} | {row.get('seconds', '-')} | {_one_line(name, row)} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"gpu_check: report {out / 'report.json'}, table {out / 'summary.md'}")
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
