"""Speed of the core operators, side by side with compiled references, in one run.

    python benchmarks/ops.py [--repeats N]

Runs ``bench_nms.run`` and ``bench_roi_align.run`` (onnxruntime's compiled CPU kernels as the reference;
torchvision and CUDA rows where they are available) and prints one markdown table plus the ratios that
docs/benchmarks.md records. Timings are medians over repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_nms  # noqa: E402
import bench_roi_align  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {gpu}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per row (median reported)")
    args = parser.parse_args(argv)
    rows = bench_nms.run(repeats=args.repeats) + bench_roi_align.run(repeats=args.repeats)
    print(f"machine: {machine()}\n")
    print("| op | impl | device | case | ms |")
    print("|---|---|---|---|---:|")
    for r in rows:
        print(f"| {r['op']} | {r['impl']} | {r['device']} | {r['case']} | {r['ms']:.1f} |")
    print()
    for op in ("nms", "roi_align"):
        ref = [r for r in rows if r["op"] == op and r["impl"].startswith("onnxruntime")]
        if not ref:
            continue
        for r in rows:
            if r["op"] == op and r["device"] == "cpu" and not r["impl"].startswith("onnxruntime"):
                print(f"{op}: {r['impl']} / onnxruntime = {r['ms'] / ref[0]['ms']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
