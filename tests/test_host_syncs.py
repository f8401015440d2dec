"""The host synchronisations of a training step and of an inference call do not grow with the batch or the
class count (issue 15): counted with benchmarks/host_syncs.py, which docs/benchmarks.md reports.

A count, not a time: it is the same on any machine. Every stage counts, the checks of the inputs too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "host_syncs.py"


@pytest.fixture
def syncs(monkeypatch):
    spec = importlib.util.spec_from_file_location("host_syncs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._label_stages(monkeypatch.setattr)
    module._paste_as_on_a_gpu(monkeypatch.setattr)

    def stages(batch: int, classes: int, train: bool) -> dict:
        _, found = module.count_syncs("shapes", batch, classes, train=train)
        by_stage: dict = {}
        for (stage, _kind), n in found.items():
            by_stage[stage] = by_stage.get(stage, 0) + n
        return by_stage

    return stages


@pytest.mark.parametrize("train", [True, False], ids=["training step", "inference call"])
def test_syncs_do_not_grow_with_the_batch_or_the_classes(syncs, train):
    one = syncs(1, 4, train)
    assert one and sum(one.values()) > 0  # the counting works: the proposal layer alone syncs
    assert syncs(3, 4, train) == one, "a stage syncs per image"
    assert syncs(1, 12, train) == one, "a stage syncs per class"


def test_host_ops_benchmark_counts_every_stage():
    # benchmarks/host_ops.py (docs/benchmarks.md's GPU section), on one small image: it runs and attributes
    # the calls to the stages
    command = [sys.executable, str(SCRIPT.parent / "host_ops.py"), "--batches", "1", "--size", "64", "80"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("detection targets", "RPN targets", "proposal layer", "on a GPU, torchvision's roi_align"):
        assert stage in done.stdout, done.stdout
