"""What the teaching notebooks share: the shipped shapes model, a batch of held-out shapes, the notebooks.

Every notebook that looks at a trained detector uses :func:`shapes_model`, the model shipped inside the
package (:mod:`mrcnn_edu.demo`: the shapes recipe trained from scratch, mask AP@0.5 above 0.9 on the held-out
shapes), so a student sees a trained model at once and every notebook shows the same one. Training itself
is the subject of notebook 11 (a short run of a fixed number of steps) and of ``mrcnn-edu demo``.

:func:`course_source` finds the notebooks (inside an installed package, or in a clone), and
:func:`copy_course` copies them out for a student (``mrcnn-edu notebooks DIR``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .config import Config
from .data import ShapesDataset
from .demo import HELD_OUT_SEED, load_shipped_model
from .model import MaskRCNN

__all__ = [
    "cache_dir",
    "copy_course",
    "course_source",
    "shapes_batch",
    "shapes_config",
    "shapes_model",
]

def cache_dir() -> Path:
    """Where a notebook looks for files you put there yourself, e.g. torchvision's COCO weights (notebook 13):
    ``$MRCNN_EDU_CACHE``, default ``~/.cache/mrcnn_edu``."""
    return Path(os.environ.get("MRCNN_EDU_CACHE", Path.home() / ".cache" / "mrcnn_edu"))


def shapes_batch(n: int = 4, size: int = 128, seed: int = HELD_OUT_SEED) -> tuple[list, list]:
    """``n`` held-out shapes images (the demo evaluates on them; never trained on): ``(images, targets)``."""
    data = ShapesDataset(n, (size, size), seed=seed)
    items = [data[i] for i in range(n)]
    return [im for im, _ in items], [t for _, t in items]


def shapes_config(**changes) -> Config:
    """The ``shapes`` preset: the configuration of :func:`shapes_model` (``changes`` applied)."""
    return Config.preset("shapes", **changes)


def shapes_model(**changes) -> MaskRCNN:
    """The shapes model shipped with the package, in eval mode, loaded in a fraction of a second.

    changes: inference settings to use instead of the shipped config's, e.g.
        ``shapes_model(detection_min_confidence=0.3)``.
    """
    return load_shipped_model(**changes)


def course_source() -> Path:
    """The folder of the course notebooks: inside the installed package, else the clone's ``notebooks/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_notebooks", here.parent / "notebooks"):
        if (candidate / "00_quickstart.ipynb").is_file():
            return candidate
    raise FileNotFoundError(f"no course notebooks next to {here} (a broken installation?)")


def copy_course(dest, instructor: bool = False) -> list[Path]:
    """Copy the stage notebooks and the exercise notebooks into ``dest``; returns the files written.

    dest: a folder, created if needed; a notebook already there is never overwritten (FileExistsError
        naming it, before anything is copied), so a student's work is safe.
    instructor: the exercises' instructor versions (with solutions) instead of the student versions.
    Layout: ``dest/NN_stage.ipynb`` and ``dest/exercises/NN_name.ipynb`` (+ the teachers' README with
    ``instructor``).
    """
    source = course_source()
    exercises = source / "exercises" / ("instructor" if instructor else "student")
    plan = [(p, Path(dest) / p.name) for p in sorted(source.glob("*.ipynb"))]
    plan += [(p, Path(dest) / "exercises" / p.name) for p in sorted(exercises.glob("*.ipynb"))]
    if instructor and (source / "exercises" / "README.md").is_file():
        plan.append((source / "exercises" / "README.md", Path(dest) / "exercises" / "README.md"))
    existing = [str(target) for _, target in plan if target.exists()]
    if existing:
        raise FileExistsError(
            f"{existing[0]!r} already exists ({len(existing)} of the files): nothing copied"
        )
    for src, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return [target for _, target in plan]
