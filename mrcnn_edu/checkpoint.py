"""Checkpoints: save a training state atomically and load it back safely.

A checkpoint is one ``torch.save`` file holding a plain dict (see :func:`save_checkpoint`). Two things make it
safe to rely on during a long run:

- **Atomic writes.** The state is written to a temporary file in the same folder, flushed and ``fsync``-ed,
  then renamed over the target with ``os.replace`` (atomic on POSIX and Windows). A crash, a full disk or a
  Ctrl-C during the save leaves the previous checkpoint untouched, never a half-written one. Only SIGKILL (or
  a power cut) can leave the temporary file itself behind, ``.last.pt.<random>.tmp``, as big as a
  checkpoint: :func:`remove_stale_temporaries` deletes them (training calls it when it starts).
- **Safe loads.** :func:`load_checkpoint` uses ``torch.load(weights_only=True)``, which refuses to run
  arbitrary pickled code, so a checkpoint holds only tensors and plain Python values (dicts, lists, tuples,
  numbers, strings, None). The config is therefore stored as a dict (``Config.to_dict``) and rebuilt
  with ``Config.from_dict``.

The training loop (``mrcnn_edu.train``) stores::

    {"format": FORMAT, "model": model state dict, "optimizer": optimizer state dict,
     "scaler": GradScaler state dict or None, "step": steps done, "epoch": epochs started,
     "config": config.to_dict(), "best_metric": float or None, "rng": rng_state()}
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "rng_state",
    "set_rng_state",
]

#: Written into every checkpoint so that a later version can recognise (and convert) old files.
FORMAT = "mrcnn_edu.checkpoint/1"


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (a dict of tensors and plain values) to ``path`` atomically; returns the path.

    The parent folder is created if needed. On any failure the temporary file is removed and the error is
    re-raised; a file already at ``path`` is left as it was.
    """
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(folder) -> list[tuple[Path, int]]:
    """Delete the temporary files that :func:`save_checkpoint` left in ``folder`` when it was killed.

    Only names it creates are touched (``.<name>.pt.<random>.tmp``). Call it when no save is running in that
    folder (a training run calls it at its start). Returns ``(path, size in bytes)`` of each file removed.
    """
    folder = Path(folder)
    removed = []
    for path in sorted(folder.glob(".*.pt.*.tmp")) if folder.is_dir() else []:
        size = path.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append((path, size))
    return removed


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    map_location: where tensors go (``"cpu"`` by default; e.g. ``"cuda"``).
    Raises FileNotFoundError naming the file if it does not exist, and ValueError naming it if it is
    truncated, corrupt, or not a dict (not a valid checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except Exception as e:  # a damaged file makes the unpickler fail in many ways (EOF, zip, index errors)
        raise ValueError(
            f"{str(path)!r} is not a valid checkpoint (truncated or corrupt file?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(state, dict):
        raise ValueError(
            f"{str(path)!r} is not a valid checkpoint: it holds a {type(state).__name__}, not a dict"
        )
    return state


# ------------------------------------------------------------------------------------------ config


# ------------------------------------------------------------------------------------------ random state


def rng_state() -> dict:
    """The random states of torch (CPU, and every CUDA device if initialised), Python and numpy.

    Only tensors and plain values, so it survives ``weights_only`` loading.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only for the devices present)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[: torch.cuda.device_count()]])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


# ------------------------------------------------------------------------------------------ helpers


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
