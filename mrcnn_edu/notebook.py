"""What the teaching notebooks share: fast mode, a batch of shapes, and a trained shapes model (cached).

``MRCNN_EDU_FAST=1`` in the environment turns on fast mode (the test suite executes every notebook that way):
tiny training budgets, so a notebook finishes in seconds; the numbers it shows are then those of a barely
trained model. The cache of trained models is ``$MRCNN_EDU_CACHE`` (default ``~/.cache/mrcnn_edu``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .checkpoint import load_checkpoint
from .config import Config
from .data import ShapesDataset
from .model import MaskRCNN

__all__ = ["FAST", "cache_dir", "shapes_batch", "shapes_config", "shapes_model"]

#: True when the environment asks for fast mode (``MRCNN_EDU_FAST`` set to anything but "" or "0").
FAST = os.environ.get("MRCNN_EDU_FAST", "") not in ("", "0")


def cache_dir() -> Path:
    return Path(os.environ.get("MRCNN_EDU_CACHE", Path.home() / ".cache" / "mrcnn_edu"))


def shapes_batch(n: int = 4, size: int = 128, seed: int = 1000) -> tuple[list, list]:
    """``n`` held-out shapes images (seed 1000 is never trained on) as ``(images, targets)`` lists."""
    data = ShapesDataset(n, (size, size), seed=seed)
    items = [data[i] for i in range(n)]
    return [im for im, _ in items], [t for _, t in items]


def shapes_config(**changes) -> Config:
    """The ``shapes`` preset, with a short schedule in fast mode."""
    if FAST:
        changes = {"steps": 20, "warmup_steps": 5, **changes}
    return Config.preset("shapes", **changes)


def shapes_model(minutes: float = 8.0, **changes) -> MaskRCNN:
    """An eval-mode MaskRCNN trained on generated shapes, from the cache or trained now (then cached).

    Training runs until ``config.steps`` (1500 steps of the shapes preset reach a mask AP@0.5 around 0.93
    on held-out shapes in about 7 minutes on 2 CPU cores; see docs/benchmarks.md) or until ``minutes`` have
    passed; an unfinished cached run is continued by the next call, so the model improves until it is done.
    """
    from .train import train

    config = shapes_config(**changes)
    out = cache_dir() / ("shapes-fast" if FAST else "shapes")
    last = out / "last.pt"
    resume = False
    if last.is_file():
        try:
            state = load_checkpoint(last)
            same = Config.from_dict(state["config"]) == config
        except (ValueError, KeyError, TypeError):
            same = False  # a cache written by another version of the package
        if same and state["step"] >= config.steps:
            model = MaskRCNN(config)
            model.load_state_dict(state["model"])
            return model.eval()
        if same:
            resume = True
        else:
            shutil.rmtree(out)
    size = (config.max_dim, config.max_dim)
    data = ShapesDataset(config.steps * config.batch_size, size, seed=config.seed + 1)
    limit = None if FAST else minutes
    summary = train(config, data, out_dir=out, resume=resume, max_minutes=limit, progress=not FAST)
    return summary["model"].eval()
