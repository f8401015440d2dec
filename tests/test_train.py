"""Tests of mrcnn_edu.train: schedule, data order, one SGD step, and the loop around it.

References: the schedule against hand-computed values; the loop against itself in a different life (a run
stopped by Ctrl-C or by a NaN and then resumed must log the same losses and end with the same weights as one
run straight through); DDP against the invariant that every rank holds the same weights after each step.
The model is the shapes preset shrunk to 64 x 64 images, few proposals and 16 ROIs, so a step takes a
fraction of a second on a CPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from mrcnn_edu import train as train_module
from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.config import Config
from mrcnn_edu.data import DataError, ShapesDataset, collate
from mrcnn_edu.model import LOSS_NAMES, MaskRCNN
from mrcnn_edu.train import (
    WARMUP_START_FACTOR,
    epoch_plan,
    lr_at,
    make_optimizer,
    step_items,
    steps_per_epoch,
    train,
    train_step,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to share across threads: on a busy CPU, one thread is ~5x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**changes) -> Config:
    base = dict(
        steps=4, batch_size=2, lr=0.01, warmup_steps=2, min_dim=64, max_dim=64,
        rpn_pre_nms_train=200, rpn_post_nms_train=50, rpn_pre_nms_test=200, rpn_post_nms_test=50,
        rois_per_image=16, add_gt_boxes=True,
    )  # fmt: skip
    base.update(changes)
    return Config.preset("shapes", **base)


def train_rows(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("split", "train") == "train"]


# ------------------------------------------------------------------------------------------ schedule


def test_lr_cosine_with_warmup_at_key_steps():
    c = Config(lr=0.1, steps=110, warmup_steps=10, schedule="cosine")
    assert lr_at(0, c) == pytest.approx(0.1 * WARMUP_START_FACTOR)  # warm-up start
    assert lr_at(5, c) == pytest.approx(0.1 * (0.001 + 0.999 * 0.5))  # half-way through the warm-up
    assert lr_at(10, c) == pytest.approx(0.1)  # end of warm-up: the full rate
    assert lr_at(60, c) == pytest.approx(0.05)  # half-way through the cosine
    assert lr_at(35, c) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    assert 0 < lr_at(109, c) < 1e-4  # the last step runs at a small, non-zero rate
    assert lr_at(110, c) == pytest.approx(0.0, abs=1e-15)
    rates = [lr_at(s, c) for s in range(110)]
    assert all(a < b for a, b in zip(rates[:10], rates[1:11], strict=True))  # warm-up increases
    assert all(a >= b for a, b in zip(rates[10:-1], rates[11:], strict=True))  # then never increases


def test_lr_step_schedule_decays_at_two_thirds_and_eight_ninths():
    c = Config(lr=0.02, steps=90, warmup_steps=0, schedule="step")
    assert [lr_at(s, c) for s in (0, 59, 60, 79, 80, 89)] == pytest.approx(
        [0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002]
    )
    warm = c.replace(warmup_steps=4)
    assert lr_at(0, warm) == pytest.approx(0.02 * WARMUP_START_FACTOR)
    assert lr_at(2, warm) == pytest.approx(0.02 * (0.001 + 0.999 / 2))
    assert lr_at(4, warm) == pytest.approx(0.02)


def test_lr_bad_arguments():
    with pytest.raises(ValueError, match="schedule"):
        lr_at(3, Config(schedule="linear"))
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, Config())


# ------------------------------------------------------------------------------------------ data order


def test_epoch_plan_is_a_seeded_permutation_with_flips():
    order, flip = epoch_plan(50, seed=3, epoch=2)
    assert sorted(order.tolist()) == list(range(50))
    assert flip.dtype == torch.bool and 10 < int(flip.sum()) < 40
    again = epoch_plan(50, seed=3, epoch=2)
    assert torch.equal(order, again[0]) and torch.equal(flip, again[1])
    assert not torch.equal(order, epoch_plan(50, seed=3, epoch=3)[0])
    assert not torch.equal(order, epoch_plan(50, seed=4, epoch=2)[0])


def test_step_items_cover_each_epoch_once_and_split_across_ranks():
    n, batch = 10, 4  # 2 steps per epoch; 2 items are left out of each epoch
    assert steps_per_epoch(n, batch) == 2
    epoch1 = step_items(2, n, batch, seed=0) + step_items(3, n, batch, seed=0)
    order, flip = epoch_plan(n, 0, 1)
    assert epoch1 == [(int(order[i]), bool(flip[i])) for i in range(8)]
    for step in range(5):
        whole = step_items(step, n, batch, seed=0)
        split = [step_items(step, n, batch, seed=0, rank=r, world_size=2) for r in range(2)]
        assert split[0] + split[1] == whole and len(split[0]) == 2
    with pytest.raises(ValueError, match="divisible"):
        step_items(0, n, batch, seed=0, world_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        steps_per_epoch(3, 4)


def test_flip_augmentation_mirrors_the_item():
    data = ShapesDataset(2, (64, 64), seed=1)
    image, target = data[1]
    flipped_image, flipped = train_module._FlippedView(data, augment=True)[(1, True)]
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))
    assert torch.equal(flipped["boxes"][:, 0], 64 - target["boxes"][:, 2])
    same_image, _ = train_module._FlippedView(data, augment=False)[(1, True)]
    assert torch.equal(same_image, image)


# ------------------------------------------------------------------------------------------ one step


def test_train_step_overfits_a_fixed_batch():
    config = tiny_config(steps=10_000, warmup_steps=0, lr=0.01)  # a nearly constant rate
    torch.manual_seed(0)
    model = MaskRCNN(config)
    optimizer = make_optimizer(model, config)
    images, targets = collate([ShapesDataset(2, (64, 64), seed=7)[i] for i in range(2)])
    totals = []
    for step in range(30):
        torch.manual_seed(step)
        out = train_step(model, images, targets, optimizer, step, config)
        assert set(out) == {*LOSS_NAMES, "total", "grad_norm", "lr"}
        assert out["total"] == pytest.approx(sum(out[k] for k in LOSS_NAMES), rel=1e-5)
        totals.append(out["total"])
    first, last = sum(totals[:3]) / 3, sum(totals[-3:]) / 3
    assert last < 0.4 * first, [round(t, 3) for t in totals]


# ------------------------------------------------------------------------------------------ the loop


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 steps (2 epochs of 4 images) without interruption: the reference for the resumption tests."""
    out = tmp_path_factory.mktemp("straight")
    summary = train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=out, log_every=1, progress=False)
    assert summary["stopped"] == "completed" and summary["steps"] == 4
    return train_rows(out), load_checkpoint(out / "last.pt")["model"]


def assert_same_run(out_dir, straight_run):
    rows, weights = straight_run
    got = train_rows(out_dir)
    assert [r["step"] for r in got] == list(range(1, 5))  # every step logged exactly once
    for a, b in zip(got, rows, strict=True):
        for key in (*LOSS_NAMES, "total", "lr", "grad_norm"):
            assert a[key] == b[key], (a["step"], key)
    final = load_checkpoint(os.path.join(out_dir, "last.pt"))
    assert final["step"] == 4
    for name, tensor in weights.items():
        assert torch.equal(final["model"][name], tensor), name


def test_ctrl_c_saves_and_resume_gives_the_same_losses(tmp_path, monkeypatch, straight_run, capsys):
    real_step, calls = train_module.train_step, []

    def interrupted_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", interrupted_at_step_4)
    summary = train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, log_every=1, progress=False)
    assert summary["stopped"] == "interrupted" and summary["steps"] == 3  # mid-epoch
    assert "interrupted" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    monkeypatch.undo()

    summary = train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, resume=True, log_every=1,
                    progress=False)  # fmt: skip
    assert summary["stopped"] == "completed" and summary["steps"] == 4
    assert_same_run(tmp_path, straight_run)


def test_nan_loss_stops_keeps_last_good_checkpoint_then_resumes(tmp_path, monkeypatch, straight_run):
    real_forward, calls, saved = MaskRCNN.forward, [], {}

    def nan_at_step_4(self, images, targets=None):
        losses = real_forward(self, images, targets)
        if self.training:
            calls.append(1)
            if len(calls) == 4:
                saved["bytes"] = (tmp_path / "last.pt").read_bytes()  # written at the end of epoch 1
                losses["rpn_box"] = losses["rpn_box"] * float("nan")
        return losses

    monkeypatch.setattr(MaskRCNN, "forward", nan_at_step_4)
    with pytest.raises(FloatingPointError, match=r"loss 'rpn_box' is nan at step 4"):
        train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, log_every=1, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == saved["bytes"]  # not overwritten with the bad state
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert [r["step"] for r in train_rows(tmp_path)] == [1, 2, 3]
    monkeypatch.undo()

    # resuming from the last good checkpoint redoes step 3 (its log line is replaced, not duplicated)
    train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, resume=True, log_every=1,
          progress=False)  # fmt: skip
    assert_same_run(tmp_path, straight_run)


def test_outputs_validation_and_best_checkpoint(tmp_path):
    config = tiny_config(steps=4, warmup_steps=0)
    summary = train(config, ShapesDataset(4, (64, 64)), val_set=ShapesDataset(2, (64, 64), seed=9),
                    out_dir=tmp_path, log_every=3, progress=False)  # fmt: skip
    assert summary["steps"] == 4 and summary["epochs"] == 2.0 and summary["images_per_second"] > 0
    assert isinstance(summary["model"], MaskRCNN)
    files = ["best.pt", "config.json", "last.pt", "loss_curve.png", "metrics.jsonl"]
    assert sorted(os.listdir(tmp_path)) == files

    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    train_lines = [r for r in records if "split" not in r]
    val_lines = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in train_lines] == [3, 4]  # every log_every steps, and the last
    assert set(train_lines[0]) == {"step", "epoch", "lr", *LOSS_NAMES, "total", "grad_norm", "seconds"}
    assert [(r["step"], r["epoch"]) for r in train_lines] == [(3, 2), (4, 2)]
    assert train_lines[0]["lr"] == pytest.approx(lr_at(2, config))
    assert [r["step"] for r in val_lines] == [2, 4]  # at each epoch end
    for r in val_lines:
        for key in ("segm_AP", "segm_AP50", "bbox_AP", "bbox_AP75", "voc_mAP50"):
            assert key in r and (r[key] is None or 0 <= r[key] <= 1)
        assert r["segm_APl"] is None  # no large objects in 64 x 64 images: undefined, written as null
    assert summary["val"]["segm"]["AP"] == pytest.approx(val_lines[-1]["segm_AP"])

    best_line = max(val_lines, key=lambda r: r["segm_AP"])  # the first of equal values
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == best_line["step"] and best["best_metric"] == pytest.approx(best_line["segm_AP"])
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 4 and last["epoch"] == 2
    assert Config.from_dict(last["config"]) == config
    assert Config.from_dict(json.loads((tmp_path / "config.json").read_text())) == config
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(FileExistsError, match="resume=True"):  # never silently overwrite a run
        train(config, ShapesDataset(4, (64, 64)), out_dir=tmp_path, progress=False)


def test_time_budget_stops_early_with_a_checkpoint(tmp_path, capsys):
    data = ShapesDataset(4, (64, 64))
    summary = train(tiny_config(), data, out_dir=tmp_path, max_minutes=0, progress=True)
    assert summary["stopped"] == "time_limit" and summary["steps"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert [r["step"] for r in train_rows(tmp_path)] == [1]  # the last step is always logged
    printed = capsys.readouterr()
    assert "time budget" in printed.out
    if importlib.util.find_spec("tqdm") is None:  # the plain-print fallback of the progress bar
        assert "step 1 epoch 1 lr" in printed.out

    # resuming with a changed config is allowed, and said
    with pytest.warns(UserWarning, match=r"changed config \(steps: 4 -> 2\)"):
        summary = train(tiny_config(steps=2), data, out_dir=tmp_path, resume=True, progress=False)
    assert summary["stopped"] == "completed" and summary["steps"] == 2
    assert (tmp_path / "loss_curve.png").exists()


def test_bad_arguments(tmp_path):
    data = ShapesDataset(4, (64, 64))
    with pytest.raises(ValueError, match="config.steps"):
        train(tiny_config(steps=0), data, out_dir=tmp_path)
    with pytest.raises(ValueError, match="config.amp"):
        train(tiny_config(amp="fp8"), data, out_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size=8"):
        train(tiny_config(batch_size=8), data, out_dir=tmp_path)
    with pytest.raises(ValueError, match="log_every"):
        train(tiny_config(), data, out_dir=tmp_path, log_every=0)
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(tiny_config(), data, out_dir=tmp_path, resume=True)


# ------------------------------------------------------------------------------------------ DDP


def _ddp_worker(rank: int, world: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    torch.set_num_threads(1)
    summary = train(tiny_config(steps=2), ShapesDataset(4, (64, 64)), out_dir=os.path.join(out_dir, "run"),
                    device="cpu", log_every=1, progress=False)  # fmt: skip
    params = {n: p.detach().clone() for n, p in summary["model"].named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_two_gloo_processes_keep_identical_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 150
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the DDP workers did not finish in time")

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(tiny_config().seed)
    initial = dict(MaskRCNN(tiny_config()).named_parameters())
    changed = 0
    for name, p0 in ranks[0].items():
        assert torch.equal(p0, ranks[1][name]), name  # gradients were averaged across the ranks
        changed += not torch.equal(p0, initial[name])
    assert changed > len(initial) // 2  # and they did train
    assert [r["step"] for r in train_rows(tmp_path / "run")] == [1, 2]  # one writer: rank 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2


# ------------------------------------------------------------------------------------------ faults


class _FailingAfter(torch.utils.data.Dataset):
    """A data set whose reads raise DataError after ``ok`` successful ones (a missing or corrupt file)."""

    def __init__(self, dataset, ok: int):
        self.dataset, self.ok, self.reads = dataset, ok, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads += 1
        if self.reads > self.ok:
            raise DataError(f"image file 'x/{index}.png' could not be read")
        return self.dataset[index]


def test_a_failed_validation_never_loses_the_epoch(tmp_path, capsys):
    val = _FailingAfter(ShapesDataset(2, (64, 64), seed=9), ok=0)
    with pytest.raises(DataError, match="could not be read"):
        train(tiny_config(), ShapesDataset(4, (64, 64)), val_set=val, out_dir=tmp_path, log_every=1,
              progress=False)  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2  # saved before validating
    assert "validation at step 2 failed" in capsys.readouterr().out


def test_a_data_error_saves_the_last_completed_step(tmp_path, straight_run, capsys):
    with pytest.raises(DataError, match="could not be read"):  # 2 items per step: step 3 cannot load
        train(tiny_config(), _FailingAfter(ShapesDataset(4, (64, 64)), ok=5), out_dir=tmp_path, log_every=1,
              progress=False)  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert "saved step 2" in capsys.readouterr().out
    train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, resume=True, log_every=1,
          progress=False)  # fmt: skip
    assert_same_run(tmp_path, straight_run)


@pytest.mark.parametrize(
    ("signum", "stopped"), [(signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupted")]
)
def test_a_signal_finishes_the_step_saves_and_resumes_exactly(
    tmp_path, monkeypatch, straight_run, signum, stopped, capsys
):
    real_step, calls = train_module.train_step, []

    def signalled_during_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)  # as `kill` or a scheduler would; the handler runs right here
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", signalled_during_step_3)
    before = signal.getsignal(signum)
    summary = train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, log_every=1, progress=False)
    assert signal.getsignal(signum) is before  # the handler is put back
    assert summary["stopped"] == stopped and summary["steps"] == 3  # step 3 was finished, then saved
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert f"{stopped}: saved step 3" in capsys.readouterr().out
    monkeypatch.undo()
    train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, resume=True, log_every=1,
          progress=False)  # fmt: skip
    assert_same_run(tmp_path, straight_run)


def test_a_signal_during_validation_stops_it_at_once(tmp_path, monkeypatch):
    def validation_killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler should have stopped validation")

    monkeypatch.setattr(train_module, "evaluate_model", validation_killed)
    summary = train(tiny_config(), ShapesDataset(4, (64, 64)), val_set=ShapesDataset(2, (64, 64), seed=9),
                    out_dir=tmp_path, log_every=1, progress=False)  # fmt: skip
    assert summary["stopped"] == "terminated" and summary["steps"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_stale_temporary_checkpoints_are_removed(tmp_path, capsys):
    # SIGKILL during a save leaves the temporary file of save_checkpoint behind (hundreds of MB each)
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / ".last.pt.k2j3h4.tmp", tmp_path / ".best.pt.x9y8z7.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    (tmp_path / "notes.tmp").write_text("not ours")
    train(tiny_config(steps=2), ShapesDataset(4, (64, 64)), out_dir=tmp_path, progress=False)
    assert not any(p.exists() for p in stale) and (tmp_path / "notes.tmp").exists()
    assert "removed 2 unfinished checkpoint files" in capsys.readouterr().out
    stale[0].write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning, match="changed config"):
        train(tiny_config(steps=3), ShapesDataset(4, (64, 64)), out_dir=tmp_path, resume=True, progress=False)
    assert not stale[0].exists()


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    data = ShapesDataset(4, (64, 64))
    train(tiny_config(steps=2), data, out_dir=tmp_path, log_every=1, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "epoch": 2, "lr": 0.0')  # killed in the middle of a write
    with pytest.warns(UserWarning, match="changed config"):
        train(tiny_config(steps=3), data, out_dir=tmp_path, resume=True, log_every=1, progress=False)
    assert [r["step"] for r in train_rows(tmp_path)] == [1, 2, 3]
    assert "torn last line" in capsys.readouterr().out
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, "{not json")
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl.*line 2"), pytest.warns(UserWarning):
        train(tiny_config(steps=4), data, out_dir=tmp_path, resume=True, progress=False)


def test_the_data_must_have_the_configs_classes(tmp_path):
    class Named(torch.utils.data.Dataset):
        def __init__(self, names):
            self.inner, self.class_names, self.num_classes = ShapesDataset(4, (64, 64)), names, len(names)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.inner[i]

    with pytest.raises(ValueError, match=r"train_set has 3 classes.*num_classes=4"):
        train(tiny_config(), Named(("background", "cat", "dog")), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"train_set.*class_names.*'cat'"):
        train(tiny_config(), Named(("background", "cat", "dog", "bird")), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"val_set.*class_names"):
        train(tiny_config(), ShapesDataset(4, (64, 64)), val_set=Named(("background", "a", "b", "c")),
              out_dir=tmp_path, progress=False)  # fmt: skip


def test_tensorboard_logs_beside_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logging is optional")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config(), ShapesDataset(4, (64, 64)), val_set=ShapesDataset(2, (64, 64), seed=9),
          out_dir=tmp_path, log_every=1, progress=False, tensorboard=True)  # fmt: skip
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    total = events.Scalars("loss/total")
    assert [e.step for e in total] == [1, 2, 3, 4]
    assert [e.value for e in total] == pytest.approx([r["total"] for r in train_rows(tmp_path)], rel=1e-6)
    assert [e.step for e in events.Scalars("val/segm_AP50")] == [2, 4]


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match="pip install tensorboard"):
        train(tiny_config(), ShapesDataset(4, (64, 64)), out_dir=tmp_path, progress=False, tensorboard=True)
    assert not (tmp_path / "last.pt").exists()
