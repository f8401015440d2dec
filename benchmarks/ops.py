"""Speed of the core operators, side by side with compiled references, in one run.

    python benchmarks/ops.py [--repeats N] [--only nms|roi_align] [--threads T]

Runs the cases of ``bench_nms.run`` (RPN NMS, 6000 boxes) and ``bench_roi_align.run`` (box-head RoIAlign on
P2, 1000 boxes), with onnxruntime's compiled CPU kernels (``mrcnn_edu.references``) as the reference and
torchvision and CUDA rows where they are available; first checks that the implementations agree
(``check_agreement``), then prints one markdown table, with the CPU threads of every row, and each CPU
row's time relative to onnxruntime's. Timings are medians over repeats after a warm-up.

--threads sets torch's and onnxruntime's CPU threads (default 1: onnxruntime's NonMaxSuppression is
single-threaded, and on a busy machine one thread gives the steadiest figures; 0 keeps torch's setting).
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

OPS = {"nms": bench_nms, "roi_align": bench_roi_align}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    from mrcnn_edu._tv import torchvision_ops

    if torchvision_ops() is not None:
        import torchvision

        tv = f"torchvision {torchvision.__version__} (its compiled kernels)"
    else:
        tv = "torchvision's compiled kernels do not load here (no torchvision rows)"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}; {tv}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per row (median reported)")
    parser.add_argument("--only", choices=sorted(OPS), help="run one operator's case (default: all)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch / onnxruntime CPU threads (0: torch's setting)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 0:
        parser.error("--repeats must be >= 1 and --threads >= 0")
    ops = [args.only] if args.only else list(OPS)

    print(f"machine: {machine()}\n")
    with bench_nms.torch_threads(args.threads):
        for op in ops:
            print(OPS[op].check_agreement())
    rows = [row for op in ops for row in OPS[op].run(repeats=args.repeats, threads=args.threads)]
    print()
    print("| op | impl | device | threads | case | ms |")
    print("|---|---|---|---:|---|---:|")
    for r in rows:
        print(f"| {r['op']} | {r['impl']} | {r['device']} | {r['threads']} | {r['case']} | {r['ms']:.1f} |")
    print()
    for op in ops:
        for prefix in ("onnxruntime", "torchvision"):
            ref = [r for r in rows if r["op"] == op and r["device"] == "cpu" and r["impl"].startswith(prefix)]
            if not ref:
                continue
            for r in rows:
                if r["op"] == op and r["device"] == "cpu" and not r["impl"].startswith(prefix):
                    print(f"{op}: {r['impl']} / {ref[0]['impl']} = {r['ms'] / ref[0]['ms']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
