"""Tests of mrcnn_edu.checkpoint: atomic saves, safe loads with clear errors, config and RNG round trips."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from mrcnn_edu import checkpoint
from mrcnn_edu.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mrcnn_edu.config import PRESETS, Config


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3, 2), value)}, "step": 7, "best_metric": None, "name": "x"}


def test_save_then_load_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "a.pt", _state(1.5))  # creates the folder
    state = load_checkpoint(path)
    assert state["step"] == 7 and state["best_metric"] is None and state["name"] == "x"
    assert torch.equal(state["model"]["w"], torch.full((3, 2), 1.5))
    assert os.listdir(tmp_path / "sub") == ["a.pt"]  # no temporary file left


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", _state(1.0))
    before = path.read_bytes()

    # 1. the state cannot be serialised (torch.save fails half-way through writing)
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "bad": Unpicklable()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]

    # 2. the process is interrupted just before the rename
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2.0))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3, 2), 1.0))


def test_save_rejects_non_dict(tmp_path):
    with pytest.raises(ValueError, match="state"):
        save_checkpoint(tmp_path / "a.pt", [1, 2])


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.9])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, keep):
    good = save_checkpoint(tmp_path / "good.pt", _state(3.0)).read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good[: int(keep * len(good)) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match=r"bad\.pt.*not a valid checkpoint"):
        load_checkpoint(bad)


def test_garbage_and_non_dict_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.pt.*not a valid checkpoint"):
        load_checkpoint(garbage)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ValueError, match=r"tensor\.pt.*not a valid checkpoint.*Tensor"):
        load_checkpoint(tensor_only)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"obj": Config()}, path)  # a dataclass instance: needs arbitrary unpickling
    with pytest.raises(ValueError, match=r"unsafe\.pt.*not a valid checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing_here\.pt"):
        load_checkpoint(tmp_path / "nothing_here.pt")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trip_through_a_checkpoint_and_json(tmp_path, name):
    config = Config.preset(name, seed=5, anchor_ratios=(0.5, 1.0, 2.0, 3.0))
    d = config.to_dict()
    assert isinstance(d["anchor_scales"], list)  # plain values only
    save_checkpoint(tmp_path / "c.pt", {"config": d})
    assert Config.from_dict(load_checkpoint(tmp_path / "c.pt")["config"]) == config
    assert Config.from_dict(json.loads(json.dumps(d))) == config


def test_config_from_dict_old_and_new_fields():
    d = Config(lr=0.5).to_dict()
    del d["seed"]  # a checkpoint from before the field existed: default
    d["field_from_the_future"] = 3
    with pytest.warns(UserWarning, match="field_from_the_future"):
        config = Config.from_dict(d)
    assert config.lr == 0.5 and config.seed == Config().seed
    with pytest.raises(ValueError, match="config"):
        Config.from_dict([1, 2])


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "r.pt", {"rng": rng_state()})

    def draws():
        return torch.rand(4).tolist(), random.random(), np.random.normal(size=3).tolist()

    expected = draws()
    draws()  # move every generator on
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert draws() == expected


def test_remove_stale_temporaries_finds_what_a_killed_save_leaves(tmp_path, monkeypatch):
    # A SIGKILL between writing and renaming: no cleanup runs (here: the cleanup is switched off)
    def killed(src, dst):
        raise RuntimeError("killed")

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    monkeypatch.setattr(checkpoint.os, "unlink", lambda path: None)
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "last.pt", _state(1.0))
    monkeypatch.undo()
    (left,) = os.listdir(tmp_path)
    (tmp_path / "keep.tmp").write_text("not a checkpoint's")
    removed = checkpoint.remove_stale_temporaries(tmp_path)
    assert [p.name for p, _ in removed] == [left] and removed[0][1] > 0
    assert os.listdir(tmp_path) == ["keep.tmp"]
    assert checkpoint.remove_stale_temporaries(tmp_path / "missing") == []
