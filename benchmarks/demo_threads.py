"""Training speed of the shapes model by thread setting, with the machine idle and with a core kept busy.

    python benchmarks/demo_threads.py                  # 1 and 2 threads, idle and busy, 30 timed steps each
    python benchmarks/demo_threads.py --steps 10 --settings 1 2 2:passive

A setting is ``THREADS`` or ``THREADS:passive`` (``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads sleep at once
at a barrier instead of spinning first). ``mrcnn-edu demo`` uses :func:`mrcnn_edu.demo.training_threads`;
this measures the choice. "busy" runs one CPU-burning process (a Python busy loop) beside the training, as
any other job on the machine would. Each measurement is a fresh process training the ``shapes`` preset from
the same seed on the same images (generated beforehand), ``--warmup`` untimed steps, then the median of
``--steps``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORKER = """
import json, statistics, sys, time, torch
from mrcnn_edu.config import Config
from mrcnn_edu.data import ShapesDataset
from mrcnn_edu.data.transforms import collate
from mrcnn_edu.model import MaskRCNN
from mrcnn_edu.train import make_optimizer
warmup, steps = int(sys.argv[1]), int(sys.argv[2])
config = Config.preset("shapes")
data = ShapesDataset(config.batch_size * 8, (128, 128), seed=1)
batches = [collate([data[i] for i in range(b * 8, b * 8 + 8)]) for b in range(8)]
torch.manual_seed(0)
model = MaskRCNN(config).train()
opt = make_optimizer(model, config)
times = []
for i in range(warmup + steps):
    images, targets = batches[i % 8]
    t = time.perf_counter()
    loss = sum(model(images, targets).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "s_per_step": statistics.median(times[warmup:])}))
"""


def measure(setting: str, busy: bool, warmup: int, steps: int) -> float:
    threads, _, policy = setting.partition(":")
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": ROOT}
    env.pop("OMP_WAIT_POLICY", None)
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        out = subprocess.run([sys.executable, "-c", _WORKER, str(warmup), str(steps)], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])["s_per_step"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=["1", "2"], help="THREADS or THREADS:passive")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs; shapes preset, batch 8, 128x128; median of {args.steps} steps")
    print("| setting | idle s/step | one core busy s/step | busy / idle |")
    print("|---|---:|---:|---:|")
    for setting in args.settings:
        idle = measure(setting, False, args.warmup, args.steps)
        busy = measure(setting, True, args.warmup, args.steps)
        print(f"| {setting} | {idle:.3f} | {busy:.3f} | {busy / idle:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
