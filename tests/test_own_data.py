"""Your own data, end to end, as a user runs it from a shell (issue 12's "done when").

Export shapes as COCO under a category set of our own (cat 5, dog 17, bird 90); train with ``--train-coco``
alone; stop the run with SIGTERM, as ``kill`` or a scheduler would; continue it with ``--out --resume`` and
nothing else; the losses must be those of a run that never stopped, and ``predict`` must name the classes of
the data. The interrupted and resumed runs are real processes (``python -m mrcnn_edu``), so the signal, the
exit statuses and the restored settings are those a shell sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.cli import main

ROOT = Path(__file__).parent.parent
TINY = [
    "min_dim=64", "max_dim=64", "steps=12", "batch_size=2", "warmup_steps=2", "rpn_pre_nms_train=200",
    "rpn_post_nms_train=50", "rpn_pre_nms_test=200", "rpn_post_nms_test=50", "rois_per_image=16",
    "mask_conv_channels=16", "box_representation=64", "detection_min_confidence=0.0",
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mrcnn_edu", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _losses(run_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = ("rpn_objectness", "rpn_box", "classifier", "box_reg", "mask", "total", "lr", "grad_norm")
    return [(r["step"], *(r[k] for k in keys)) for r in rows if "split" not in r]


def test_export_train_sigterm_resume_predict(tmp_path):
    data = tmp_path / "data"
    assert main(["export-shapes", "--out", str(data), "--num-images", "8", "--image-size", "64",
                 "--categories", "5:cat,17:dog,90:bird"]) == 0  # fmt: skip
    train = ["train", "--train-coco", str(data / "annotations" / "instances_train.json"), "--log-every", "1",
             "--threads", "1", "--no-tensorboard", *[a for s in TINY for a in ("--set", s)]]  # fmt: skip

    threads = torch.get_num_threads()
    try:  # the run that never stops, for reference (in this process, one thread as the others)
        assert main([*train, "--out", str(tmp_path / "straight")]) == 0
    finally:
        torch.set_num_threads(threads)

    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(*train, "--out", str(run)), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline, metrics = time.monotonic() + 120, run / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):  # 2 steps done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)  # 128 + SIGTERM: stopped, not finished
    stopped_at = load_checkpoint(run / "last.pt")["step"]
    assert 2 <= stopped_at < 12, out
    assert f"terminated (SIGTERM) at step {stopped_at} of 12" in out
    assert f"mrcnn-edu train --out {run} --resume" in out

    resumed = subprocess.run(_cli("train", "--out", str(run), "--resume"), env=_env(), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "finished at step 12 of 12" in resumed.stdout
    assert _losses(run) == _losses(tmp_path / "straight")  # every step, every loss, bit for bit
    assert [r[0] for r in _losses(run)] == list(range(1, 13))

    image = data / "train" / "000000.png"
    # a barely trained model: every class of every box competes (not only the argmax), to see names at all
    assert main(["predict", "--checkpoint", str(run / "last.pt"), str(image), "--out", str(tmp_path / "p"),
                 "--score-threshold", "0", "--set", "detection_candidates=all"]) == 0  # fmt: skip
    found = json.loads((tmp_path / "p" / "000000_detections.json").read_text())
    assert found and {d["name"] for d in found} <= {"cat", "dog", "bird"}
