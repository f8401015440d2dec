"""Training: turn the model's five losses into weights, with everything a long run needs around it.

The loop is plain SGD on the sum of :class:`mrcnn_edu.model.MaskRCNN`'s losses (``rpn_objectness``,
``rpn_box``, ``classifier``, ``box_reg``, ``mask``), one step per batch of ``config.batch_size`` images::

    for step in range(start, config.steps):
        lr = lr_at(step, config)                         # warm-up, then cosine or step decay
        losses = model(images, targets)                  # dict of 5 scalars
        sum(losses.values()).backward()
        clip_grad_norm_(params, config.grad_clip)        # guards against rare huge gradients
        optimizer.step()                                 # SGD, momentum, weight decay

Around it: atomic ``last.pt`` checkpoints, then validation (COCO AP) and ``best.pt`` at each epoch end,
exact resumption, a progress bar, ``metrics.jsonl`` and ``loss_curve.png`` (and TensorBoard events, on
request), mixed precision on GPU, a wall-clock budget, multi-GPU data parallelism under ``torchrun``, and
faults that lose at most the step in flight: SIGTERM and Ctrl-C finish the step and save it, a data error or
a failed validation keeps every completed step, a save cut short by SIGKILL leaves nothing that piles up.

**Reproducibility.** Everything random is a pure function of ``config.seed`` and the step number, so that a
run stopped at any step and resumed gives the same losses as one that never stopped:

- data order: epoch ``e`` visits the training set in the order ``randperm(N)`` of a generator seeded from
  ``(seed, e)``, which also draws each item's horizontal flip (:func:`epoch_plan`); step ``s`` takes the
  ``batch_size`` items at positions ``s mod steps_per_epoch`` of that order (:func:`step_items`);
- sampling inside the model (which anchors and ROIs are trained on) draws from torch's global generator,
  which the loop re-seeds from ``(seed, step, rank)`` before every step;
- the learning rate is a pure function of the step (:func:`lr_at`), so the schedule needs no saved state.

A checkpoint therefore needs only the model, the optimizer (momentum buffers), the step, and (for fp16) the
gradient scaler. On CPU resumption is bit-exact; on GPU it is as exact as the kernels are deterministic.

**Matterport vs torchvision.** matterport trains with SGD (momentum 0.9, weight decay 1e-4 on the weights,
gradient clipping at norm 5, no warm-up, the rate lowered by hand between its "heads" and "all" stages).
torchvision's reference script uses SGD with a linear warm-up from 0.001 x lr over the first 1000 steps,
no clipping, and x0.1 decays at epochs 16 and 22 of 26; Detectron's "1x" COCO schedule decays at 60k and 80k
of 90k steps, i.e. at 2/3 and 8/9 of training, which is ``schedule="step"`` here. All of these are ``config``
values: ``warmup_steps``, ``schedule``, ``grad_clip``, ``lr``, ``momentum``, ``weight_decay``.

**Several GPUs.** Started by ``torchrun --nproc_per_node=G``, each process trains on ``batch_size / G``
images of every step (the same global batch as one process, split by rank), gradients are averaged by
``DistributedDataParallel``, and only rank 0 writes files, prints and validates.

Outputs in ``out_dir``: ``config.json``, ``metrics.jsonl`` (one JSON line per logged step:
``step, epoch, lr, <the 5 losses>, total, grad_norm, seconds``; one line per validation with
``"split": "val"``), ``loss_curve.png``, ``last.pt`` and ``best.pt`` (best segm AP; see
:mod:`mrcnn_edu.checkpoint` for their content), ``tensorboard/`` with ``tensorboard=True``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import (
    FORMAT,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import Config
from .data.transforms import collate, horizontal_flip
from .model import LOSS_NAMES, MaskRCNN

__all__ = [
    "train",
    "lr_at",
    "make_optimizer",
    "epoch_plan",
    "steps_per_epoch",
    "step_items",
    "train_step",
    "predict",
    "evaluate_model",
    "save_state",
    "plot_metrics",
    "WARMUP_START_FACTOR",
]

#: The warm-up starts at this fraction of ``config.lr`` (torchvision's reference scripts use 0.001).
WARMUP_START_FACTOR = 0.001


# ------------------------------------------------------------------------------------------ schedule


def lr_at(step: int, config: Config) -> float:
    """The learning rate of step ``step`` (0-based) of a run of ``config.steps`` steps.

    Warm-up: over the first ``config.warmup_steps`` steps the rate grows linearly from
    ``WARMUP_START_FACTOR * lr`` (step 0) to ``lr`` (step ``warmup_steps``). Decay, on top of it:

    - ``"cosine"``: ``lr * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 at the end of the warm-up to 1 at
      ``config.steps`` (so the last step runs at a small but non-zero rate);
    - ``"step"``: ``lr``, then ``0.1 * lr`` from step ``2/3 * steps`` and ``0.01 * lr`` from ``8/9 * steps``
      (Detectron's 1x schedule: 60k and 80k of 90k steps).
    """
    steps, warmup = config.steps, config.warmup_steps
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    warm = 1.0
    if step < warmup:
        warm = WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * step / warmup
    if config.schedule == "cosine":
        t = min(max(step - warmup, 0) / max(steps - warmup, 1), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * t))
    elif config.schedule == "step":
        decay = 1.0 if step < 2 * steps / 3 else 0.1 if step < 8 * steps / 9 else 0.01
    else:
        raise ValueError(f"config.schedule must be 'cosine' or 'step', got {config.schedule!r}")
    return config.lr * warm * decay


def make_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """``config.optimizer`` over the trainable parameters, with ``config.weight_decay``.

    ``"sgd"``: SGD with ``config.momentum``, as matterport and torchvision's reference train (weight decay on
    every trainable tensor, as torchvision; matterport skips the normalisation layers' gamma/beta, which
    frozen BN, the default of the large presets, does not train anyway). ``"adamw"``: Adam with decoupled
    weight decay (``momentum`` unused), the shapes recipe: per-parameter step sizes let a small network
    trained from scratch converge in far fewer steps. The rate is set before every step from :func:`lr_at`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr_at(0, config), weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=lr_at(0, config), momentum=config.momentum, weight_decay=config.weight_decay
    )


# ------------------------------------------------------------------------------------------ data order


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    """Full batches in one pass over ``num_items`` items (the last partial batch is dropped)."""
    if batch_size < 1 or num_items < batch_size:
        raise ValueError(
            f"the training set must hold at least batch_size={batch_size} items, got {num_items}"
        )
    return num_items // batch_size


def epoch_plan(num_items: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The visiting order of epoch ``epoch`` and each visit's flip: ``(order [N] int64, flip [N] bool)``.

    A pure function of ``(seed, epoch)``: the same on every process and after a restart.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=g)
    flip = torch.rand(num_items, generator=g) < 0.5
    return order, flip


def step_items(
    step: int, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, bool]]:
    """``(dataset index, flip)`` of the items that process ``rank`` of ``world_size`` trains on at ``step``.

    The global batch of ``batch_size`` items is cut into ``world_size`` equal consecutive parts.
    """
    per_epoch = steps_per_epoch(num_items, batch_size)
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes {world_size}")
    order, flip = epoch_plan(num_items, seed, step // per_epoch)
    local = batch_size // world_size
    start = (step % per_epoch) * batch_size + rank * local
    return [(int(order[i]), bool(flip[i])) for i in range(start, start + local)]


class _FlippedView(torch.utils.data.Dataset):
    """Index with ``(index, flip)``: the data set's item, mirrored when ``flip`` (and augmentation is on)."""

    def __init__(self, dataset, augment: bool):
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, flip = key
        image, target = self.dataset[index]
        return horizontal_flip(image, target) if flip and self.augment else (image, target)


class _StepBatches:
    """Batch sampler: the items of steps ``start .. stop - 1`` for one process (see :func:`step_items`)."""

    def __init__(self, start: int, stop: int, num_items: int, batch_size: int, seed: int, proc: _Process):
        self.start, self.stop = start, stop
        self.args = (num_items, batch_size, seed, proc.rank, proc.world_size)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield step_items(step, *self.args)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 1009 + rank) % (2**63)


# ------------------------------------------------------------------------------------------ one step


def _autocast(amp: str, device: torch.device):
    """bf16 or fp16 autocast on CUDA; a no-op otherwise."""
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _grad_scaler():
    """fp16 loss scaling (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before)."""
    return torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler()


def train_step(
    model: torch.nn.Module,
    images: list[torch.Tensor],
    targets: list[dict],
    optimizer: torch.optim.Optimizer,
    step: int,
    config: Config,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One SGD step on one batch; returns the losses (``LOSS_NAMES`` + ``total``), ``grad_norm`` and ``lr``.

    images, targets: as for ``model(images, targets)``, already on the model's device.
    scaler: a ``GradScaler`` for fp16 training (it skips steps with non-finite gradients and adapts its
        scale); None otherwise.
    Raises FloatingPointError naming the loss if a loss is NaN or infinite (before any weight changes),
    and, without a scaler, if the gradient norm is.
    """
    lr = lr_at(step, config)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    with _autocast(config.amp, device):
        losses = model(images, targets)
    total = sum(losses.values())
    (scaler.scale(total) if scaler is not None else total).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else math.inf)

    # One device -> host copy per step for everything we check and log.
    names = list(losses) + ["total"]
    values = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float(),
                                                                          norm.float()]).tolist()  # fmt: skip
    result = dict(zip(names, values[:-1], strict=True))
    for name, value in result.items():
        if not math.isfinite(value):
            raise FloatingPointError(f"loss {name!r} is {value} at step {step + 1}")
    result["grad_norm"] = values[-1]
    if scaler is not None:
        scaler.step(optimizer)  # skipped by the scaler if the (unscaled) gradients are not finite
        scaler.update()
    elif not math.isfinite(values[-1]):
        raise FloatingPointError(f"gradient norm is {values[-1]} at step {step + 1} (the losses were finite)")
    else:
        optimizer.step()
    result["lr"] = lr
    return result


# ------------------------------------------------------------------------------------------ validation


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    def move(v):
        return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

    return images, [{k: move(v) for k, v in t.items()} for t in targets]


@torch.no_grad()
def predict(model: MaskRCNN, dataset, batch_size: int = 2, device=None) -> tuple[list[dict], list[dict]]:
    """Run ``model`` in eval mode over ``dataset``; returns ``(predictions, targets)`` on the CPU.

    Prediction masks are thresholded at 0.5 into bool ``[N, 1, H, W]`` (what COCO evaluation does with them
    anyway) to keep memory low. The model is put back in its previous mode.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions, targets = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            images, batch_targets = collate([dataset[i] for i in range(start, stop)])
            for out in model([im.to(device) for im in images]):
                out = {k: v.cpu() for k, v in out.items()}
                out["masks"] = out["masks"] >= 0.5
                predictions.append(out)
            targets.extend(batch_targets)
    finally:
        model.train(was_training)
    return predictions, targets


def evaluate_model(model: MaskRCNN, dataset, batch_size: int = 2, device=None) -> dict:
    """COCO AP of ``model`` on ``dataset``: ``{"bbox": {...}, "segm": {...}, "voc_mAP50": float}``.

    ``bbox`` and ``segm`` hold :func:`mrcnn_edu.evaluate.coco_evaluate`'s numbers (AP, AP50, ..., NaN where
    undefined); ``voc_mAP50`` is matterport's per-image mask mAP at IoU 0.5 (:func:`mean_voc_ap`).
    """
    from .evaluate import coco_evaluate, mean_voc_ap

    predictions, targets = predict(model, dataset, batch_size=batch_size, device=device)
    result = coco_evaluate(predictions, targets, class_names=getattr(dataset, "class_names", None))
    result["voc_mAP50"] = mean_voc_ap(predictions, targets)
    return result


# ------------------------------------------------------------------------------------------ files


def save_state(
    path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Config,
    step: int,
    epoch: int,
    best_metric: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    seconds: float = 0.0,
) -> Path:
    """Write a training checkpoint atomically (see :mod:`mrcnn_edu.checkpoint`); returns its path.

    step: steps completed; epoch: epochs completed; seconds: training time so far.
    """
    model = model.module if isinstance(model, DistributedDataParallel) else model
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "config": config.to_dict(),
        "best_metric": best_metric,
        "seconds": float(seconds),
        "rng": rng_state(),
    }
    return save_checkpoint(path, state)


def _read_metrics(path: Path) -> tuple[list[dict], bool]:
    """The records of a ``metrics.jsonl`` and whether its last line was torn (a write cut short: not
    valid json and no newline after it; it is left out). Any other line that is not json is a ValueError
    naming the file and the line."""
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.split("\n")
    records, torn = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                torn = True
                continue
            raise ValueError(f"{str(path)!r} line {number} is not a json record: {line[:80]!r}") from None
    return records, torn


def _append_metrics(path: Path, record: dict) -> None:
    # NaN is not JSON: undefined values (e.g. APl on small images) are written as null
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with path.open("a") as f:
        f.write(json.dumps(clean) + "\n")


def _truncate_metrics(path: Path, step: int) -> bool:
    """On resume: drop lines logged after the checkpoint's step (they will be logged again) and a torn last
    line; returns whether there was a torn line."""
    records, torn = _read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    with path.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    return torn


def plot_metrics(metrics_path, png_path) -> Path:
    """Draw the loss curves (and validation AP, if any) of a ``metrics.jsonl`` into a PNG; returns its path.

    Uses matplotlib's object API (no pyplot), so it neither needs a display nor changes a notebook's backend.
    """
    from matplotlib.figure import Figure

    records, _ = _read_metrics(Path(metrics_path))
    train_rows = [r for r in records if r.get("split", "train") == "train"]
    val_rows = [r for r in records if r.get("split") == "val"]
    fig = Figure(figsize=(10, 4) if val_rows else (6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if val_rows else 1, squeeze=False)[0]
    steps = [r["step"] for r in train_rows]
    for name in (*LOSS_NAMES, "total"):
        values = [r.get(name) for r in train_rows]
        if any(v is not None for v in values):
            axes[0].plot(steps, [math.nan if v is None else v for v in values], label=name,
                         linewidth=2 if name == "total" else 1)  # fmt: skip
    axes[0].set(xlabel="step", ylabel="loss", title="training losses")
    if train_rows:
        axes[0].set_yscale("log")
        axes[0].legend(fontsize="small")
    if val_rows:
        for key in ("bbox_AP", "segm_AP", "segm_AP50"):
            values = [math.nan if r.get(key) is None else r[key] for r in val_rows]
            axes[1].plot([r["step"] for r in val_rows], values, "o-", label=key)
        axes[1].set(xlabel="step", ylabel="AP", title="validation", ylim=(0, 1))
        axes[1].legend(fontsize="small")
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    return png_path


# ------------------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class _Process:
    """Where this process stands in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def _processes(device):
    """Read torchrun's environment, pick the device, and join the process group when started by torchrun
    (one process included, so that ``--nproc_per_node 1`` runs the distributed code path), leaving it again
    at the end if this call joined it. Yields ``(process, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ  # torchrun sets both
    proc = _Process(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", proc.local_rank if world > 1 else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    joined = launched and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=proc.rank, world_size=world)
    try:
        yield proc, device
    finally:
        if joined:
            dist.destroy_process_group()


def _any_rank(flags: tuple[bool, ...], proc: _Process, device: torch.device) -> list[bool]:
    """Each flag True on every process if it is True on any (so that all stop at the same step); one
    all-reduce for all of them."""
    if proc.world_size == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


class _Reporter:
    """Progress bar (tqdm if installed, else printed lines) and messages; silent on ranks other than 0."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.enabled = enabled
        self.bar = None
        if enabled and start < total:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def step(self, record: dict | None) -> None:
        """One step done; ``record`` is the logged line (on logging steps) or None."""
        if self.bar is not None:
            self.bar.update(1)
            if record is not None:
                short = {"rpn_objectness": "rpn_obj", "classifier": "cls", "box_reg": "box"}
                self.bar.set_postfix({"loss": f"{record['total']:.3f}", "lr": f"{record['lr']:.2g}"}
                                     | {short.get(k, k): f"{record[k]:.3f}" for k in LOSS_NAMES})  # fmt: skip
        elif self.enabled and record is not None:
            parts = " ".join(f"{k} {record[k]:.4f}" for k in LOSS_NAMES)
            print(f"step {record['step']} epoch {record['epoch']} lr {record['lr']:.3g} "
                  f"loss {record['total']:.4f} ({parts}) {record['seconds']:.0f}s", flush=True)  # fmt: skip

    def say(self, message: str, always: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(message)
        elif self.enabled or always:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_classes(config: Config, train_set, val_set) -> None:
    """The data's classes (when a data set declares them, as CocoDataset does) are the config's."""
    for name, data in (("train_set", train_set), ("val_set", val_set)):
        count = getattr(data, "num_classes", None)
        if count is not None and count != config.num_classes:
            raise ValueError(
                f"{name} has {count} classes (background included) but "
                f"config.num_classes={config.num_classes}; take them from the data: "
                "config.replace(num_classes=data.num_classes, class_names=data.class_names)"
            )
        names = tuple(getattr(data, "class_names", None) or ())
        if names and config.class_names and names != tuple(config.class_names):
            raise ValueError(
                f"{name} class_names {names} differ from config.class_names {tuple(config.class_names)}: "
                "a label would be trained (or scored) under another class's name"
            )


class _Stopped(BaseException):
    """Raised by :class:`_StopSignals` where training must stop at once."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's pre-emption) while training runs.

    The first signal only records itself: the loop finishes the step in flight, saves it, and stops. During
    validation (``interruptible``) it stops at once, as does a second signal (the state of the last finished
    step is saved then too). The previous handlers are put back on exit. Outside the main thread (where Python
    cannot install handlers) nothing changes: Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self):
        self.received: int | None = None
        self.interruptible = False
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None or self.interruptible:
            raise _Stopped(signum)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _stop_reason(signum: int | None) -> str:
    return "terminated" if signum == signal.SIGTERM else "interrupted"


def _tensorboard_writer(out: Path, start: int):
    """A SummaryWriter in ``out/tensorboard`` that drops events after ``start`` (a resumed run logs them
    again); ValueError if the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except (ImportError, ModuleNotFoundError):
        raise ValueError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out / "tensorboard"), purge_step=start + 1 if start else None)


# ------------------------------------------------------------------------------------------ the loop


def train(
    config: Config,
    train_set,
    val_set=None,
    out_dir=None,
    resume: bool = False,
    device=None,
    log_every: int = 10,
    eval_every_epoch: bool = True,
    max_minutes: float | None = None,
    progress: bool = True,
    model: MaskRCNN | None = None,
    augment: bool = True,
    num_workers: int = 0,
    tensorboard: bool = False,
    resume_hint: str = "resume=True",
) -> dict:
    """Train a Mask R-CNN for ``config.steps`` steps; see the module docstring for what happens around it.

    config: the model and training settings (``batch_size, steps, lr, momentum, weight_decay, warmup_steps,
        schedule, grad_clip, amp, seed``), checked with ``config.validate()``. train_set / val_set: data sets
        of ``(image, target)`` items; where they declare ``num_classes`` / ``class_names`` (CocoDataset does),
        these must be the config's (ValueError otherwise: nothing is relabelled silently).
    out_dir: where the run's files go (default ``runs/<config.name>``). Starting afresh in a folder that
        already holds a run (``last.pt``) is refused: pass ``resume=True`` to continue it. Unfinished
        temporary checkpoint files that a killed save left there are removed (and reported).
    resume: continue from ``out_dir/last.pt``: weights, optimizer, step, and so the schedule and data order.
        A torn last line of ``metrics.jsonl`` (a write cut short) is dropped with a message.
    device: default ``cuda`` (this process's GPU under torchrun) if available, else ``cpu``.
    log_every: log (metrics.jsonl, progress bar) every this many steps, and the last step.
    eval_every_epoch: validate (if ``val_set``) at each epoch end; False validates only when training ends.
    max_minutes: wall-clock budget of this call; when spent, training stops early after saving and
        validating.
    progress: show a progress bar / log lines (tqdm if installed) and messages.
    model: start from this model (e.g. pretrained weights) instead of a new ``MaskRCNN(config)``.
    augment: random horizontal flips (seeded, see :func:`epoch_plan`).
    num_workers: DataLoader worker processes that load training items.
    tensorboard: also write the logged numbers as TensorBoard events to ``out_dir/tensorboard`` (needs the
        ``tensorboard`` package; ValueError before anything starts if it is missing).
    resume_hint: how messages say to continue a stopped run (the command line passes its own spelling).

    Faults lose at most the step in flight: ``last.pt`` is saved at every epoch end *before* validating (a
    validation that fails is reported and re-raised, the epoch kept); an error while loading training data
    saves the last completed step and re-raises; SIGTERM or Ctrl-C (SIGINT) finishes the current step, saves
    it and returns with ``stopped="terminated"`` / ``"interrupted"`` (during validation they stop it at once;
    a second signal stops at once too). A NaN or infinite loss raises FloatingPointError naming it, and
    ``last.pt`` keeps the last good epoch.
    Returns a summary: ``steps`` (completed), ``epochs``, ``stopped`` ("completed", "time_limit",
    "interrupted" or "terminated"), ``losses`` (last step's), ``val`` (last validation or None),
    ``best_metric``, ``seconds``, ``images_per_second`` (this call), ``out_dir``, ``last_checkpoint``,
    ``best_checkpoint`` (or None) and ``model`` (the trained model, unwrapped).
    """
    config.validate()
    if not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"log_every must be an int >= 1, got {log_every!r}")
    _check_classes(config, train_set, val_set)
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    if not resume and (out / "last.pt").exists():
        raise FileExistsError(
            f"{str(out)!r} already holds a run (last.pt); pass resume=True to continue it, "
            "or choose another out_dir"
        )
    steps_per_epoch(len(train_set), config.batch_size)  # checks the set holds one batch
    with _processes(device) as (proc, device):
        if config.batch_size % proc.world_size:
            raise ValueError(
                f"config.batch_size={config.batch_size} must be divisible by the {proc.world_size} processes"
            )
        writer = None
        if tensorboard and proc.is_main:
            start = load_checkpoint(out / "last.pt")["step"] if resume else 0
            writer = _tensorboard_writer(out, start)
        try:
            return _train_loop(config, train_set, val_set, out, resume, device, proc, log_every,
                               eval_every_epoch, max_minutes, progress, model, augment, num_workers,
                               writer, resume_hint)  # fmt: skip
        finally:
            if writer is not None:
                writer.close()


def _train_loop(config, train_set, val_set, out, resume, device, proc, log_every, eval_every_epoch,
                max_minutes, progress, model, augment, num_workers, writer, resume_hint):  # fmt: skip
    """:func:`train` once the arguments are checked and the processes are set up."""
    per_epoch = steps_per_epoch(len(train_set), config.batch_size)
    last_path, best_path, metrics_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    report = _Reporter(progress and proc.is_main, 0, 0)  # messages before the bar exists
    if proc.is_main:
        removed = remove_stale_temporaries(out)
        if removed:
            mib = sum(size for _, size in removed) / 2**20
            report.say(f"removed {len(removed)} unfinished checkpoint files left by an interrupted save "
                       f"({mib:.1f} MiB): {', '.join(p.name for p, _ in removed)}", always=True)  # fmt: skip
    # --- model, optimizer, and where to start
    torch.manual_seed(config.seed)  # the same initial weights on every process
    model = (model if model is not None else MaskRCNN(config)).to(device)
    optimizer = make_optimizer(model, config)
    scaler = _grad_scaler() if config.amp == "fp16" and device.type == "cuda" else None
    start, best_metric, seconds_before = 0, None, 0.0
    if resume:
        state = load_checkpoint(last_path, map_location=device)
        if _warn_config_changes(state["config"], config) and proc.is_main:
            (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, best_metric, seconds_before = state["step"], state["best_metric"], state.get("seconds", 0.0)
        set_rng_state(state["rng"])  # python / numpy, for data set transforms that use them
        if proc.is_main and _truncate_metrics(metrics_path, start):
            report.say(f"{metrics_path}: dropped a torn last line (a write cut short when the run was "
                       "killed)", always=True)  # fmt: skip
    elif proc.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        metrics_path.write_text("")
    distributed = dist.is_available() and dist.is_initialized()
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if distributed else model  # fmt: skip

    loader = torch.utils.data.DataLoader(
        _FlippedView(train_set, augment),
        batch_sampler=_StepBatches(start, config.steps, len(train_set), config.batch_size, config.seed, proc),
        collate_fn=collate, num_workers=num_workers, pin_memory=device.type == "cuda",
    )  # fmt: skip
    report = _Reporter(progress and proc.is_main, start, config.steps)
    if config.amp != "none" and device.type != "cuda":
        report.say(f"note: amp={config.amp!r} is ignored on {device.type}; training in float32")
    if resume:
        report.say(f"resuming {str(last_path)!r} at step {start} of {config.steps}")
    if distributed:
        report.say(f"DistributedDataParallel: {proc.world_size} process(es), {dist.get_backend()} backend")

    t0 = time.perf_counter()
    step, stopped, last_losses, last_val = start, "completed", None, None
    signals = _StopSignals()

    def save(path: Path) -> None:
        if proc.is_main:
            save_state(path, model, optimizer, config, step, step // per_epoch, best_metric, scaler,
                       seconds_before + time.perf_counter() - t0)  # fmt: skip

    def log(record: dict) -> None:
        _append_metrics(metrics_path, record)
        if writer is not None:
            prefix = "val/" if record.get("split") == "val" else "loss/"
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch", "split"):
                    name = key if key in ("lr", "grad_norm", "seconds") else prefix + key
                    writer.add_scalar(name, value, record["step"])
            writer.flush()

    def validate() -> None:
        """Evaluate on val_set, log it, keep best.pt (rank 0); a signal stops it at once."""
        nonlocal best_metric, last_val
        signals.interruptible = True
        try:
            last_val = evaluate_model(model, val_set, config.batch_size // proc.world_size, device)
        except Exception as err:
            report.say(f"validation at step {step} failed ({type(err).__name__}: {err}); last.pt holds step "
                       f"{step}: fix the validation data and resume", always=True)  # fmt: skip
            raise
        finally:
            signals.interruptible = False
        row = {"split": "val", "step": step, "epoch": math.ceil(step / per_epoch),
               "voc_mAP50": last_val["voc_mAP50"]}  # fmt: skip
        for kind in ("bbox", "segm"):
            row.update({f"{kind}_{k}": v for k, v in last_val[kind].items()})
        log(row)
        report.say(f"step {step}: val segm AP {row['segm_AP']:.4f}, bbox AP {row['bbox_AP']:.4f}")
        if math.isfinite(row["segm_AP"]) and (best_metric is None or row["segm_AP"] > best_metric):
            best_metric = row["segm_AP"]
            save(best_path)

    def end_of_epoch(with_validation: bool) -> None:
        """Save last.pt, validate, redraw the curves (rank 0); the other processes wait."""
        if proc.is_main:
            save(last_path)  # first: a failed or interrupted validation never loses the epoch
            if with_validation and val_set is not None and signals.received is None:
                validate()
                save(last_path)  # with the new best_metric
            plot_metrics(metrics_path, out / "loss_curve.png")
        if proc.world_size > 1:
            dist.barrier()

    net.train()  # (validation puts the model back in train mode when it is done)
    batches = iter(loader)
    with signals:
        try:
            while True:
                try:
                    images, targets = next(batches)
                except StopIteration:
                    break
                except Exception:  # a data error: keep every completed step, then let the error speak
                    if step > start:
                        save(last_path)
                    kept = f"saved step {step} to {str(last_path)!r}" if step else "no step was completed"
                    report.say(f"loading the data of step {step + 1} failed: {kept}", always=True)
                    raise
                images, targets = _to_device(images, targets, device)
                torch.manual_seed(_step_seed(config.seed, step, proc.rank))  # the model's sampling this step
                last_losses = train_step(net, images, targets, optimizer, step, config, scaler)
                step += 1  # steps completed
                spent = max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes
                out_of_time, signalled = _any_rank((spent, signals.received is not None), proc, device)

                record = None
                last = step == config.steps or out_of_time or signalled
                if proc.is_main and (step % log_every == 0 or last):
                    record = {"step": step, "epoch": math.ceil(step / per_epoch), "lr": last_losses["lr"],
                              **{k: last_losses[k] for k in (*LOSS_NAMES, "total", "grad_norm")},
                              "seconds": round(seconds_before + time.perf_counter() - t0, 3)}  # fmt: skip
                    log(record)
                report.step(record)
                if step % per_epoch == 0 or last:
                    end_of_epoch(with_validation=eval_every_epoch or step == config.steps or out_of_time)
                if signalled:
                    stopped = _stop_reason(signals.received)
                    report.say(f"{stopped}: saved step {step} to {str(last_path)!r}; continue with "
                               f"{resume_hint}", always=True)  # fmt: skip
                    break
                if out_of_time and step < config.steps:
                    stopped = "time_limit"
                    report.say(f"time budget of {max_minutes} min spent: stopped at step {step}; "
                               f"continue with {resume_hint}", always=True)  # fmt: skip
                    break
        except (KeyboardInterrupt, _Stopped) as stop:
            stopped = _stop_reason(getattr(stop, "signum", None))
            if proc.is_main:
                save(last_path)
                plot_metrics(metrics_path, out / "loss_curve.png")
            report.say(f"{stopped}: saved step {step} to {str(last_path)!r}; continue with {resume_hint}",
                       always=True)  # fmt: skip
        finally:
            report.close()

    elapsed = time.perf_counter() - t0
    return {
        "steps": step,
        "epochs": step / per_epoch,
        "stopped": stopped,
        "losses": last_losses,
        "val": last_val,
        "best_metric": best_metric,
        "seconds": seconds_before + elapsed,
        "images_per_second": (step - start) * config.batch_size / elapsed if elapsed > 0 else math.nan,
        "out_dir": str(out),
        "last_checkpoint": str(last_path),
        "best_checkpoint": str(best_path) if best_path.exists() else None,
        "model": model,
    }


def _warn_config_changes(saved: dict, config: Config) -> bool:
    """Warn (UserWarning) if a resumed run's config differs from its checkpoint's; return whether it does."""
    changed = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
    if changed:
        old = Config.from_dict(saved)
        details = ", ".join(f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}" for k in changed)
        warnings.warn(f"resuming with a changed config ({details})", UserWarning, stacklevel=3)
    return bool(changed)
