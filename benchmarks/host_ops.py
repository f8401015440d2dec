"""Operator calls the host issues in one R50-FPN training step, ours and torchvision's, by stage.

    PYTHONPATH=. /work/venv-tv/bin/python benchmarks/host_ops.py            # both models (compiled kernels)
    python benchmarks/host_ops.py --batches 2 8                             # ours only, where torchvision's
                                                                            # kernels do not load

On a GPU each operator call costs the host some microseconds (Python, dispatch, a kernel launch) whatever
the tensor sizes; a step whose host work outlasts its GPU work leaves the GPU waiting. This counts the calls
of one training step (forward with the losses, backward, SGD step), the recipe of ``gpu_check.py``'s
``train`` section (``torchvision`` preset, torchvision's ``maskrcnn_resnet50_fpn`` with the same state dict),
on small images so that it runs in seconds on a CPU: the count does not depend on the image size.

Counted: ATen and torchvision operators called from Python (not those an operator calls inside itself).
Ours is attributed to the stage function ``model.py`` called (as in ``host_syncs.py``); the calls inside
``nms``, ``batched_nms`` and ``roi_align`` are listed apart, because on a GPU those hand their work to
torchvision's kernels (a few calls per image) where on the CPU they run this package's own code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile, record_function

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mrcnn_edu.data import ShapesDataset  # noqa: E402

#: The operators a GPU hands to torchvision's kernels (mrcnn_edu.nms, mrcnn_edu.roi_align).
DISPATCHED = {"nms": "mrcnn_edu.nms", "batched_nms": "mrcnn_edu.nms", "roi_align": "mrcnn_edu.roi_align"}
CALLERS = ("mrcnn_edu.proposals", "mrcnn_edu.detection", "mrcnn_edu.roi_align", "mrcnn_edu.nms")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _label_dispatched() -> None:
    """Wrap the dispatched operators, where they are defined and where they were imported, in ranges."""
    for name, home in DISPATCHED.items():
        original = getattr(sys.modules[home], name)

        def labelled(*args, _fn=original, _name=name, **kwargs):
            with record_function("stage: on a GPU, torchvision's " + _name):
                return _fn(*args, **kwargs)

        for module in CALLERS:
            if getattr(sys.modules[module], name, None) is original:
                setattr(sys.modules[module], name, labelled)


def _stage(event) -> str:
    inner = None
    while event is not None:
        if event.name.startswith("stage: on a GPU"):
            return event.name[len("stage: "):]
        if inner is None and event.name.startswith("stage: "):
            inner = event.name[len("stage: "):]
        event = event.cpu_parent
    return inner or "rest (backbone, heads, optimizer, model.py)"


def count_ops(model, images, targets) -> Counter:
    """Operator calls made from Python in the second training step, by stage."""
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step():
        loss = sum(model(images, [dict(t) for t in targets]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    found: Counter = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        is_op = event.name.startswith(("aten::", "torchvision::"))
        if is_op and (parent is None or not parent.name.startswith(("aten::", "torchvision::"))):
            found[_stage(event)] += 1
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[2, 8])
    p.add_argument("--size", type=int, nargs=2, default=[128, 160], help="image height and width")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    gpu_check, host_syncs = _script("gpu_check"), _script("host_syncs")
    host_syncs._label_stages()
    _label_dispatched()
    _, kernels = gpu_check._torchvision()
    print(f"operator calls per training step (forward, losses, backward, SGD); torch {torch.__version__}, "
          f"torchvision kernels: {kernels}; images {args.size[0]}x{args.size[1]}")  # fmt: skip
    for batch in args.batches:
        items = [ShapesDataset(batch, tuple(args.size), seed=0)[i] for i in range(batch)]
        images, targets = [im for im, _ in items], [t for _, t in items]
        ours, theirs = gpu_check._same_recipe_pair(torch.device("cpu"), min(args.size), max(args.size))
        found = count_ops(ours, images, targets)
        outside = sum(n for s, n in found.items() if not s.startswith("on a GPU"))
        total = sum(found.values())
        print(f"\nbatch {batch}: mrcnn_edu {total} calls, {outside} outside the dispatched ones")
        for stage, n in found.most_common():
            print(f"  {stage:48s} {n:6d}")
        if kernels == "compiled":
            print(f"batch {batch}: torchvision {sum(count_ops(theirs, images, targets).values())} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
