"""Tests of mrcnn_edu.config: presets validate; command-line overrides are typed and checked per field."""

from __future__ import annotations

from dataclasses import fields

import pytest

from mrcnn_edu.config import CHOICES, PRESETS, Config, field_rule


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name):
    assert PRESETS[name].validate() is PRESETS[name]


def test_override_reads_each_value_as_its_fields_type():
    c = Config().override(
        "lr=1", "steps=20", "resize_mode=minmax", "name='my run'", "aligned=false",
        "anchor_scales=[4, 8, 16, 32, 64]", "trainable_stages=None",
        "class_names=('background', 'a', 'b', 'c')",
    )  # fmt: skip
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert c.steps == 20 and c.resize_mode == "minmax" and c.name == "my run" and c.aligned is False
    assert c.anchor_scales == (4, 8, 16, 32, 64) and c.trainable_stages is None
    assert c.class_names == ("background", "a", "b", "c")


@pytest.mark.parametrize(
    ("assignment", "match"),
    [
        ("lr=abc", r"config\.lr must be a number > 0, got 'abc'"),
        ("lr=-1", r"config\.lr must be a number > 0, got -1"),
        ("steps=1.5", r"config\.steps must be an integer >= 1, got 1\.5"),
        ("batch_size=0", r"config\.batch_size must be an integer >= 1"),
        # reported under its own name (it used to fail later as detect()'s "score_threshold")
        ("detection_min_confidence=2", r"detection_min_confidence must be a number in \[0, 1\], got 2"),
        ("detection_nms_threshold=nan", r"config\.detection_nms_threshold"),
        ("amp=fp8", r"config\.amp must be one of none, bf16, fp16, got 'fp8'"),
        ("resize_mode=huge", r"config\.resize_mode must be one of square"),
        ("backbone=resnet152", r"config\.backbone must be one of .*resnet50"),
        ("aligned=yes", r"config\.aligned must be True or False"),
        ("anchor_scales=(8, 16)", r"config\.anchor_scales must be a tuple of 5 positive numbers"),
        ("num_classes=1", r"config\.num_classes must be an integer >= 2"),
        ("num_classes=6", r"config\.class_names must have num_classes=6 names"),
        ("category_ids=(1, 1, 2)", r"config\.category_ids must be a tuple of integers"),
        ("category_ids=(1, 2)", r"config\.category_ids must have num_classes - 1 = 3 ids"),
        ("trainable_stages=7", r"config\.trainable_stages must be None or an integer in 0\.\.5"),
        ("no_such_field=1", r"unknown config field 'no_such_field'"),
        ("detection_min_confidenc=0.5", r"did you mean 'detection_min_confidence'"),
        ("lr", r"field=value"),
    ],
)
def test_bad_overrides_name_the_field_and_what_it_accepts(assignment, match):
    with pytest.raises(ValueError, match=match):
        Config().override(assignment)


def test_validate_catches_what_replace_let_through():
    with pytest.raises(ValueError, match=r"config\.schedule must be one of cosine, step"):
        Config().replace(schedule="linear").validate()
    assert Config().replace(num_classes=6, class_names=(), category_ids=()).validate().num_classes == 6


def test_every_field_has_a_rule_that_its_default_satisfies():
    for f in fields(Config):
        assert field_rule(f.name)
    for name, options in CHOICES.items():
        assert getattr(Config(), name) in options
