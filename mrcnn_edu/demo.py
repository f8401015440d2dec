"""The shapes demo and the shapes model shipped inside the package: one recipe, trained from scratch.

Both train the ``shapes`` preset (a tiny ResNet + FPN on 128x128 generated squares, circles and triangles)
on :func:`shapes_splits`' training images and evaluate it on its 100 held-out images, which are never
trained on:

- ``mrcnn-edu demo`` (:func:`run_demo`) trains ``config.steps`` steps from scratch, a few minutes on a laptop
  CPU, and reports the mask AP. A fixed number of steps decides how long it trains (the progress bar gives
  an ETA), never a time budget, so a busy machine makes the demo slower, not worse; when training stops
  early anyway (Ctrl-C, SIGTERM), the demo says the model is undertrained and how to continue.
- :func:`build_shipped_model` (``make shapes-model``) trains the same recipe for longer and writes
  ``mrcnn_edu/weights/shapes.pt``: float16 weights with the config and the measured AP, a few MB inside the
  package, so every notebook shows a trained detector at once (:func:`load_shipped_model`).

Threads. On a 2-core machine torch's default of one thread per core is fast only while the machine is
otherwise idle: every parallel region waits for its slowest thread, so when another process keeps a core busy
each of the thousands of small operators of a step waits for the scheduler (measured: 6.15 s/step with 2
threads against 1.06 s/step with 1, under load). :func:`training_threads` is the policy used here: one
thread for the shapes model's small convolutions, whatever the machine does; docs/benchmarks.md has the
measurements, idle and with a core kept busy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config
from .data import ShapesDataset
from .model import MaskRCNN

__all__ = [
    "HELD_OUT_SEED",
    "SHIPPED_MODEL",
    "TRAIN_SEED",
    "build_shipped_model",
    "load_shipped_model",
    "shapes_splits",
    "training_threads",
]

#: Generator seeds of the training and held-out shapes, as offsets from ``config.seed`` (item ``i`` of a set
#: depends only on its seed and ``i``, so the held-out images are never among the training ones).
TRAIN_SEED, HELD_OUT_SEED = 1, 1000
#: The trained shapes model inside the package (written by :func:`build_shipped_model`).
SHIPPED_MODEL = Path(__file__).parent / "weights" / "shapes.pt"
#: ``format`` of that file.
SHIPPED_FORMAT = "mrcnn_edu.shipped/1"
#: Steps of the shipped model's training (the demo trains ``config.steps``, fewer).
SHIPPED_STEPS = 1500


def shapes_splits(config: Config, train_images: int = 4000, val_images: int = 100):
    """``(train_set, held_out_set)``: generated shapes at the preset's size (seeds: :data:`TRAIN_SEED`...)."""
    size = (config.max_dim, config.max_dim)
    return (
        ShapesDataset(train_images, size, seed=config.seed + TRAIN_SEED),
        ShapesDataset(val_images, size, seed=config.seed + HELD_OUT_SEED),
    )


def training_threads(requested: int | None = None) -> int:
    """Torch CPU threads to train the shapes model: ``requested`` if given, else 1 (see the module doc)."""
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be an int >= 1, got {requested!r}")
        return requested
    return 1


def load_shipped_model(path=None, device="cpu", **changes) -> MaskRCNN:
    """The shapes model shipped with the package, in eval mode, float32, on ``device``.

    changes: config fields to change, e.g. inference settings (``detection_min_confidence=0.5``); a field
        that changes the architecture fails to load, naming the tensors.
    The file is read with ``weights_only=True``; its ``metrics`` (held-out AP) and ``steps`` are in
    :func:`shipped_model_info`.
    """
    state = _read_shipped(path)
    model = MaskRCNN(Config.from_dict(state["config"]).replace(**changes))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})
    return model.to(device).eval()


def shipped_model_info(path=None) -> dict:
    """What the shipped file says of itself: ``steps``, ``metrics`` (held-out AP), ``log`` (the training run's
    ``metrics.jsonl`` rows: step, lr, the five losses, total, ...), ``command``, ``config``, ``torch``."""
    state = _read_shipped(path)
    return {k: state.get(k) for k in ("steps", "metrics", "log", "command", "config", "torch")}


def _read_shipped(path) -> dict:
    path = Path(path) if path is not None else SHIPPED_MODEL
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped shapes model {str(path)!r} is missing: rebuild it with `make shapes-model`"
        )
    state = load_checkpoint(path)
    if state.get("format") != SHIPPED_FORMAT:
        raise ValueError(f"{str(path)!r} is not a shipped model file (format {state.get('format')!r})")
    return state


def build_shipped_model(out=None, steps: int = SHIPPED_STEPS, work_dir=None, threads: int | None = None,
                        min_ap50: float = 0.9) -> dict:  # fmt: skip
    """Train the shapes recipe for ``steps`` steps, evaluate it, and write the shipped model file.

    out: the file (default :data:`SHIPPED_MODEL`), written atomically and only if the held-out mask AP@0.5
        of the float16 weights reaches ``min_ap50``.
    work_dir: the training run's folder (checkpoints; resumed if it holds an unfinished run of this recipe).
    Deterministic on one machine: one thread (unless ``threads`` says otherwise), seeded data and sampling.
    Returns ``{"path", "steps", "metrics"}``.
    """
    from .train import evaluate_model, train

    torch.set_num_threads(training_threads(threads))
    config = Config.preset("shapes", steps=steps)
    train_set, held_out = shapes_splits(config, train_images=4000)
    work = Path(work_dir) if work_dir is not None else Path("runs") / "shipped-shapes"
    resume = (work / "last.pt").is_file()
    summary = train(config, train_set, None, out_dir=work, resume=resume, device="cpu")
    if summary["stopped"] != "completed":
        raise RuntimeError(f"training stopped early ({summary['stopped']}) at step {summary['steps']}")
    half = {k: v.half() if v.is_floating_point() else v for k, v in summary["model"].state_dict().items()}
    model = MaskRCNN(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    result = evaluate_model(model.eval(), held_out, 8, torch.device("cpu"))
    metrics = {
        "held_out_images": len(held_out),
        "segm_AP50": result["segm"]["AP50"],
        "segm_AP": result["segm"]["AP"],
        "bbox_AP50": result["bbox"]["AP50"],
        "bbox_AP": result["bbox"]["AP"],
        "voc_mAP50": result["voc_mAP50"],
    }
    if not metrics["segm_AP50"] >= min_ap50:  # (NaN fails too)
        raise RuntimeError(f"mask AP50 {metrics['segm_AP50']:.3f} < {min_ap50}: the file was not written")
    # the run's training log (one row per logged step), for notebook 11's curves of the shipped model
    log = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
    path = Path(out) if out is not None else SHIPPED_MODEL
    save_checkpoint(path, {
        "format": SHIPPED_FORMAT, "model": half, "config": config.to_dict(), "steps": summary["steps"],
        "metrics": metrics,
        "log": log, "torch": str(torch.__version__),
        "command": f"make shapes-model (mrcnn_edu.demo.build_shipped_model(steps={steps}))",
    })  # fmt: skip
    return {"path": str(path), "steps": summary["steps"], "metrics": metrics}
