"""Host synchronisations per training step (and per inference call), counted with torch.profiler.

    python benchmarks/host_syncs.py         # shapes preset, batch 2 and 8, 4 and 91 classes, train and eval
    python benchmarks/host_syncs.py --batches 2 --classes 4 --only eval

On a GPU every operation whose *result size or value* the host must know waits for the GPU to finish all
the work queued so far: ``tensor.item()``, ``int(t)``, ``bool(t)`` / ``if t:``, ``t.tolist()``,
``torch.nonzero`` and boolean-mask indexing ``x[mask]`` (the output size depends on the data),
``torch.unique``, ``repeat_interleave`` without ``output_size``. Each such wait drains the GPU's queue and
leaves it idle while Python catches up, so a detector that does them per image, per pyramid level or per
class slows down as the batch or the class count grows. The same calls are visible on the CPU: this script
runs one training step (forward, backward, optimizer step) under ``torch.profiler`` and counts

- ``aten::_local_scalar_dense``: every scalar read (``item``, ``int``, ``float``, ``bool``, and the ones
  made inside ATen, e.g. by ``repeat_interleave`` without ``output_size``);
- ``aten::nonzero``: ``torch.nonzero`` and boolean-mask indexing;
- ``aten::_unique2`` / ``aten::unique_dim`` / ``aten::unique_consecutive``: ``torch.unique``;
- ``Tensor.tolist`` (no ATen op on the CPU; counted with a ``TorchFunctionMode``).

Copies of Python lists onto the device (``torch.tensor([...], device=...)``) are not counted. The counts
are a proxy (a CPU ``x[mask] = 0`` reads a scalar where CUDA calls ``nonzero``, ``masked_select`` reads two),
but each counted call is a place where CUDA waits. Each is attributed to the stage function that ``model.py``
called (a sync inside ``nms.py`` called by the proposal layer counts for the proposal layer), by wrapping
those functions in profiler ranges; "input checks" are the checks of the images and targets.

Images are generated shapes at the preset's size with random weights (what is counted does not depend on
the weights, except through how many boxes survive each step; the count is taken on the second step).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mrcnn_edu.config import Config  # noqa: E402
from mrcnn_edu.data import ShapesDataset  # noqa: E402
from mrcnn_edu.model import MaskRCNN  # noqa: E402

SYNC_OPS = {
    "aten::_local_scalar_dense": "scalar read",
    "aten::nonzero": "nonzero",
    "aten::_unique2": "unique",
    "aten::unique_dim": "unique",
    "aten::unique_consecutive": "unique",
}
#: What model.py calls, by the name it imports: each call is profiled as a range named after its stage.
STAGES = {
    "propose": "proposal layer",
    "rpn_targets_batch": "RPN targets",
    "detection_targets_batch": "detection targets",
    "pyramid_roi_align": "pyramid RoIAlign",
    "detect_batch": "detection layer",
    "rpn_targets": "RPN targets",
    "detection_targets": "detection targets",
    "detect": "detection layer",
    "paste_masks": "mask pasting",
    "pad_masks_and_snap_boxes": "mask pasting",
    "unmold_boxes": "mask pasting",
    "validate_targets": "input checks",
    "_check_images": "input checks",
}
LOSSES = ("rpn_objectness_loss", "rpn_box_loss", "classifier_loss", "box_loss", "mask_loss")


def _label_stages(set_attr=setattr) -> None:
    """Wrap the stage functions that model.py calls in ``record_function`` ranges (this process only;
    ``set_attr``: how, e.g. a test's ``monkeypatch.setattr``)."""
    import mrcnn_edu.losses
    import mrcnn_edu.model

    def labelled(fn, name):
        def call(*args, **kwargs):
            with record_function("stage: " + name):
                return fn(*args, **kwargs)

        return call

    for attr, name in STAGES.items():
        if hasattr(mrcnn_edu.model, attr):  # (an older model.py may call another set of names)
            set_attr(mrcnn_edu.model, attr, labelled(getattr(mrcnn_edu.model, attr), name))
    for attr in LOSSES:
        set_attr(mrcnn_edu.losses, attr, labelled(getattr(mrcnn_edu.losses, attr), "losses"))


def _stage_of(event) -> str:
    while event is not None:
        if event.name.startswith("stage: "):
            return event.name[len("stage: "):]
        event = event.cpu_parent
    return "rest (backbone, heads, model.py)"


class _CountToList(TorchFunctionMode):
    """Counts ``Tensor.tolist`` calls (a device-to-host copy that the CPU profiler does not show), each in
    the innermost profiled stage range open at the time."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.calls += 1
            with record_function("tolist"):
                return func(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def count_syncs(preset: str, batch: int, num_classes: int, train: bool, seed: int = 0) -> tuple[int, Counter]:
    """Host syncs of one training step (or one inference call): ``(total, by (stage, kind))``."""
    torch.manual_seed(seed)
    cfg = Config.preset(preset, num_classes=num_classes)
    if cfg.class_names and len(cfg.class_names) != num_classes:
        cfg = cfg.replace(class_names=())
    if not train:  # the detection layer's work grows with the candidates: let every class through
        cfg = cfg.replace(detection_min_confidence=0.0, detection_candidates="all")
    size = (cfg.min_dim, cfg.min_dim) if cfg.resize_mode == "square" else (cfg.min_dim, cfg.max_dim)
    data = ShapesDataset(batch, size, seed=seed)
    images, targets = zip(*(data[i] for i in range(batch)), strict=True)
    model = MaskRCNN(cfg)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        if train:
            model.train()
            loss = sum(model(list(images), list(targets)).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model(list(images))

    step()  # warm-up: anchors cached, lazy initialisation done
    counter = _CountToList()
    with profile(activities=[ProfilerActivity.CPU]) as prof, counter:
        step()
    found: Counter = Counter()
    for event in prof.events():
        kind = "tolist" if event.name == "tolist" else SYNC_OPS.get(event.name)
        if kind is not None:
            found[(_stage_of(event), kind)] += 1
    assert sum(n for (_, k), n in found.items() if k == "tolist") == counter.calls
    return sum(found.values()), found


INPUT_CHECKS = "input checks"


def _table(rows, title: str) -> None:
    """One table: per (batch, classes) the total and each kind, then each stage, then the verdict."""
    print(f"\n{title}")
    kinds = sorted({k for *_, found in rows for (_, k) in found})
    print(f"{'batch':>5} {'classes':>7} {'total':>6} {'stages':>6} " + " ".join(f"{k:>11}" for k in kinds))
    for batch, classes, total, found in rows:
        by_kind: Counter = Counter()
        for (_, k), n in found.items():
            by_kind[k] += n
        stages = total - sum(n for (s, _), n in found.items() if s == INPUT_CHECKS)
        kind_counts = " ".join(f"{by_kind[k]:>11}" for k in kinds)
        print(f"{batch:>5} {classes:>7} {total:>6} {stages:>6} {kind_counts}")
    columns = " ".join(f"{f'b{b} k{c}':>9}" for b, c, *_ in rows)
    print(f"{'by stage (the function model.py called)':>40} {columns}")
    for stage in sorted({s for *_, found in rows for (s, _) in found}):
        counts = [sum(n for (s, _), n in found.items() if s == stage) for *_, found in rows]
        print(f"{stage:>40} " + " ".join(f"{n:>9}" for n in counts))
    for label, exclude in (("every sync", None), ("the stages (all but the input checks)", INPUT_CHECKS)):
        totals = {sum(n for (s, _), n in found.items() if s != exclude) for *_, found in rows}
        verdict = f"yes, {totals.pop()}" if len(totals) == 1 else "NO"
        print(f"same count for every batch size and class count, {label}: {verdict}")


def _paste_as_on_a_gpu(set_attr=setattr) -> None:
    """Paste masks with the whole-image path that every device but the CPU takes. The CPU's per-box path
    reads each box's pixel range into Python (a few scalar reads per image, of CPU tensors: no device to
    wait for); counting it would report a cost that no GPU run has."""
    import mrcnn_edu.masks

    set_attr(mrcnn_edu.masks, "_paste_in_boxes", mrcnn_edu.masks._paste_full_image)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="shapes", help="Config preset (default %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=[2, 8])
    p.add_argument("--classes", type=int, nargs="+", default=[4, 91], help="num_classes, background included")
    p.add_argument("--only", choices=["train", "eval"], help="only the training step or the inference call")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    _label_stages()
    _paste_as_on_a_gpu()

    print(f"host syncs (aten::_local_scalar_dense, nonzero, unique, Tensor.tolist); preset {args.preset}; "
          f"torch {torch.__version__}")  # fmt: skip
    for mode in ("train", "eval"):
        if args.only not in (None, mode):
            continue
        rows = []
        for batch in args.batches:
            for classes in args.classes:
                total, found = count_syncs(args.preset, batch, classes, train=mode == "train")
                rows.append((batch, classes, total, found))
        title = {
            "train": "per training step (forward, backward, SGD step)",
            "eval": "per inference call (score threshold 0, all classes candidates; masks pasted as on GPUs)",
        }[mode]
        _table(rows, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
