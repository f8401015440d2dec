"""Tests for mrcnn_edu.matching: IoU matching (hand-built matrices, a plain-Python reference) and sampling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_edu.boxes import box_iou
from mrcnn_edu.matching import BACKGROUND, IGNORE, match_by_iou, sample_balanced, sample_balanced_batch

FAST = settings(max_examples=60, deadline=None)


def _match_reference(iou: list[list[float]], pos: float, neg: float, low_quality: bool) -> list[int]:
    """Plain-Python reading of the rule, written from the definition (Faster R-CNN / matterport RPN targets).

    Returns None for a reference box whose best IoU is tied between GT boxes (the index is then arbitrary).
    """
    g = len(iou)
    n = len(iou[0]) if g else 0
    if g == 0:
        return [BACKGROUND] * n
    if n == 0:
        return []
    result = []
    for j in range(n):
        column = [iou[i][j] for i in range(g)]
        best = max(column)
        owners = [i for i in range(g) if column[i] == best]
        if best >= pos:
            result.append(owners if len(owners) > 1 else owners[0])
        elif best < neg:
            result.append(BACKGROUND)
        else:
            result.append(IGNORE)
    if low_quality:
        for i in range(g):
            top = max(iou[i])
            if top <= 0:
                continue
            for j in range(n):
                if iou[i][j] == top:
                    column = [iou[k][j] for k in range(g)]
                    owners = [k for k in range(g) if column[k] == max(column)]
                    result[j] = owners if len(owners) > 1 else owners[0]
    return result


def _assert_matches_reference(got: torch.Tensor, expected: list) -> None:
    assert got.dtype == torch.int64
    assert len(got) == len(expected)
    for j, (g, e) in enumerate(zip(got.tolist(), expected, strict=True)):
        if isinstance(e, list):  # tie between GT boxes: any of them
            assert g in e, (j, g, e)
        else:
            assert g == e, (j, g, e)


# ---------------------------------------------------------------- match_by_iou: hand-built matrices


def test_match_thresholds_positive_negative_ignore():
    # 2 GT x 6 reference boxes, RPN thresholds 0.7 / 0.3, no low-quality matches.
    iou = torch.tensor(
        [
            [0.80, 0.10, 0.50, 0.70, 0.30, 0.00],
            [0.20, 0.90, 0.65, 0.10, 0.29, 0.00],
        ]
    )
    got = match_by_iou(iou, 0.7, 0.3, allow_low_quality=False)
    # 0: GT 0 (0.8); 1: GT 1 (0.9); 2: ignore (0.65); 3: GT 0 (exactly 0.7 is positive);
    # 4: ignore (exactly 0.3 is not negative); 5: background
    assert got.tolist() == [0, 1, IGNORE, 0, IGNORE, BACKGROUND]
    assert got.dtype == torch.int64


def test_match_equal_thresholds_never_ignore():
    iou = torch.tensor([[0.5, 0.49, 0.9, 0.0], [0.1, 0.2, 0.95, 0.51]])
    got = match_by_iou(iou, 0.5, 0.5, allow_low_quality=False)
    assert got.tolist() == [0, BACKGROUND, 1, 1]
    assert (got != IGNORE).all()


def test_match_low_quality_with_ties():
    # GT 1's best IoU is 0.4, reached by reference boxes 1 and 3 (a tie): both become positive for GT 1.
    # GT 0 has a proper positive (0.9), so its low-quality rule adds nothing new.
    iou = torch.tensor(
        [
            [0.9, 0.0, 0.1, 0.0, 0.2],
            [0.0, 0.4, 0.35, 0.4, 0.1],
        ]
    )
    without = match_by_iou(iou, 0.7, 0.3, allow_low_quality=False)
    assert without.tolist() == [0, IGNORE, IGNORE, IGNORE, BACKGROUND]
    with_lq = match_by_iou(iou, 0.7, 0.3)
    assert with_lq.tolist() == [0, 1, IGNORE, 1, BACKGROUND]


def test_match_low_quality_reference_keeps_its_own_best_gt():
    # Reference 0 is GT 1's best box (0.2) but overlaps GT 0 more (0.5): it is made positive, and, as in
    # torchvision's Matcher and matterport's targets, it regresses to its own best GT (0), not to GT 1.
    iou = torch.tensor([[0.5, 0.0, 0.0], [0.2, 0.0, 0.0]])
    got = match_by_iou(iou, 0.7, 0.3)
    assert got.tolist() == [0, BACKGROUND, BACKGROUND]


def test_match_low_quality_below_negative_threshold():
    # Best IoU 0.1 for GT 0 is below the negative threshold: still made positive (every object gets a box).
    iou = torch.tensor([[0.1, 0.05, 0.0]])
    assert match_by_iou(iou, 0.7, 0.3).tolist() == [0, BACKGROUND, BACKGROUND]
    assert match_by_iou(iou, 0.7, 0.3, allow_low_quality=False).tolist() == [BACKGROUND] * 3


def test_match_gt_with_zero_iou_everywhere_claims_nothing():
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.8, 0.1, 0.0]])
    got = match_by_iou(iou, 0.7, 0.3)
    assert got.tolist() == [1, BACKGROUND, BACKGROUND]
    all_zero = torch.zeros(3, 4)
    assert match_by_iou(all_zero, 0.7, 0.3).tolist() == [BACKGROUND] * 4


def test_match_no_gt_all_background():
    got = match_by_iou(torch.zeros(0, 5), 0.7, 0.3)
    assert got.tolist() == [BACKGROUND] * 5
    assert got.dtype == torch.int64


@pytest.mark.parametrize("g", [0, 3])
def test_match_no_references_empty(g):
    got = match_by_iou(torch.zeros(g, 0), 0.7, 0.3)
    assert got.shape == (0,)
    assert got.dtype == torch.int64


def test_match_float64_and_from_real_boxes():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]], dtype=torch.float64)
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with GT 0
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 with GT 0: ignore
            [50.0, 50.0, 60.0, 60.0],  # nothing: background
            [20.0, 20.0, 30.0, 26.0],  # IoU 0.3 with GT 1, its best: low-quality positive
        ],
        dtype=torch.float64,
    )
    got = match_by_iou(box_iou(gt, anchors), 0.7, 0.3)
    assert got.tolist() == [0, IGNORE, BACKGROUND, 1]


# ---------------------------------------------------------------- match_by_iou: random, against the reference


@FAST
@given(
    st.integers(0, 4),
    st.integers(0, 7),
    st.data(),
    st.sampled_from([(0.7, 0.3), (0.5, 0.5), (0.5, 0.4)]),
    st.booleans(),
)
def test_match_against_plain_python(g, n, data, thresholds, low_quality):
    # IoU values on a coarse grid so that ties (between boxes and with the thresholds) happen often.
    values = st.sampled_from([0.0, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 1.0])
    iou_list = data.draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=g, max_size=g))
    iou = torch.tensor(iou_list, dtype=torch.float32).reshape(g, n)
    pos, neg = thresholds
    got = match_by_iou(iou, pos, neg, allow_low_quality=low_quality)
    assert got.shape == (n,)
    if g == 0:
        assert (got == BACKGROUND).all()
        return
    _assert_matches_reference(got, _match_reference(iou_list, pos, neg, low_quality))


def test_match_random_boxes_against_plain_python():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=gen) * 60
    anchors = torch.cat((xy, xy + 5 + torch.rand(40, 2, generator=gen) * 20), dim=1)
    xy = torch.rand(6, 2, generator=gen) * 60
    gt = torch.cat((xy, xy + 5 + torch.rand(6, 2, generator=gen) * 20), dim=1)
    iou = box_iou(gt, anchors)
    got = match_by_iou(iou, 0.5, 0.3)
    _assert_matches_reference(got, _match_reference(iou.tolist(), 0.5, 0.3, True))
    # every GT with any overlap gets at least one positive
    for i in range(len(gt)):
        if iou[i].max() > 0:
            assert (got[iou[i] == iou[i].max()] >= 0).all()
    assert (got >= 0).any() and (got == BACKGROUND).any()


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((torch.zeros(3), 0.7, 0.3), "iou"),
        ((torch.zeros(2, 3, dtype=torch.long), 0.7, 0.3), "iou"),
        (([[0.5, 0.1]], 0.7, 0.3), "iou"),
        ((torch.zeros(2, 3), 0.3, 0.7), "negative_threshold"),
    ],
)
def test_match_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        match_by_iou(*args)


# ---------------------------------------------------------------- sample_balanced


def _labels(num_pos: int, num_neg: int, num_ignore: int, seed: int = 0) -> torch.Tensor:
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignore)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def _check_indices(labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> None:
    assert pos.dtype == torch.int64 and neg.dtype == torch.int64
    assert (labels[pos] == 1).all()
    assert (labels[neg] == 0).all()
    both = torch.cat((pos, neg))
    assert len(set(both.tolist())) == len(both)  # no duplicates


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "num_samples", "fraction", "expected"),
    [
        (500, 5000, 256, 0.5, (128, 128)),  # plenty of both
        (20, 5000, 256, 0.5, (20, 236)),  # few positives: negatives fill up
        (500, 30, 256, 0.5, (128, 30)),  # few negatives: total below num_samples
        (0, 5000, 256, 0.5, (0, 256)),  # no positives
        (100, 0, 256, 0.5, (100, 0)),  # no negatives
        (300, 300, 200, 0.33, (66, 134)),  # matterport's head: 200 ROIs, 33% positive
        (300, 1000, 512, 0.25, (128, 384)),  # torchvision's head
        (0, 0, 256, 0.5, (0, 0)),
        (10, 10, 0, 0.5, (0, 0)),
        (10, 10, 4, 1.0, (4, 0)),
    ],
)
def test_sample_counts_fill_with_negatives(num_pos, num_neg, num_samples, fraction, expected):
    labels = _labels(num_pos, num_neg, 50)
    pos, neg = sample_balanced(labels, num_samples, fraction, generator=torch.Generator().manual_seed(1))
    assert (len(pos), len(neg)) == expected
    assert len(pos) + len(neg) <= num_samples
    assert len(pos) <= int(num_samples * fraction)
    _check_indices(labels, pos, neg)


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "num_samples", "fraction", "expected"),
    [
        (300, 300, 200, 0.33, (66, 134)),  # int(66 / 0.33) - 66 = 134
        (20, 5000, 200, 0.33, (20, 40)),  # int(20 / 0.33) - 20 = 60 - 20 (no filling up to 200)
        (10, 5000, 256, 0.5, (10, 10)),
        (0, 5000, 200, 0.33, (0, 0)),  # matterport: no positives means no negatives either
        (20, 15, 200, 0.33, (20, 15)),  # not enough negatives
        (7, 100, 200, 0.25, (7, 21)),
    ],
)
def test_sample_counts_matterport_ratio(num_pos, num_neg, num_samples, fraction, expected):
    labels = _labels(num_pos, num_neg, 10)
    pos, neg = sample_balanced(labels, num_samples, fraction, fill_with_negatives=False)
    assert (len(pos), len(neg)) == expected
    _check_indices(labels, pos, neg)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 20),
    st.integers(0, 80),
    st.floats(0.01, 1.0),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_sample_properties(num_pos, num_neg, num_ignore, num_samples, fraction, fill, seed):
    labels = _labels(num_pos, num_neg, num_ignore, seed)
    gen = torch.Generator().manual_seed(seed)
    pos, neg = sample_balanced(labels, num_samples, fraction, generator=gen, fill_with_negatives=fill)
    _check_indices(labels, pos, neg)
    assert len(pos) + len(neg) <= num_samples
    assert len(pos) == min(num_pos, int(num_samples * fraction))
    if fill:
        assert len(neg) == min(num_neg, num_samples - len(pos))
    else:
        assert len(neg) == min(num_neg, int(len(pos) / fraction) - len(pos))


def test_sample_ignores_other_labels():
    labels = torch.tensor([-1, 2, 1, -1, 0, -2, 1, 0, 3, -1])
    for seed in range(20):
        pos, neg = sample_balanced(labels, 10, 0.5, generator=torch.Generator().manual_seed(seed))
        assert sorted(pos.tolist()) == [2, 6]
        assert sorted(neg.tolist()) == [4, 7]


def test_sample_reproducible_and_seed_dependent():
    labels = _labels(400, 4000, 100)

    def run(seed):
        return sample_balanced(labels, 256, 0.5, generator=torch.Generator().manual_seed(seed))

    a_pos, a_neg = run(7)
    b_pos, b_neg = run(7)
    c_pos, c_neg = run(8)
    assert torch.equal(a_pos, b_pos) and torch.equal(a_neg, b_neg)
    assert not torch.equal(a_pos, c_pos)
    assert not torch.equal(a_neg, c_neg)
    # one generator used twice continues its stream: two different draws
    gen = torch.Generator().manual_seed(7)
    first = sample_balanced(labels, 256, 0.5, generator=gen)
    second = sample_balanced(labels, 256, 0.5, generator=gen)
    assert torch.equal(first[0], a_pos)
    assert not torch.equal(first[0], second[0])


def test_sample_is_roughly_uniform():
    # 10 positives, 2 drawn each time, 3000 times: each index expected 600 times (sd ~ 22).
    labels = torch.tensor([1] * 10 + [0] * 10)
    gen = torch.Generator().manual_seed(3)
    counts = torch.zeros(20)
    for _ in range(3000):
        pos, neg = sample_balanced(labels, 4, 0.5, generator=gen)
        counts[pos] += 1
        counts[neg] += 1
    assert ((counts - 600).abs() < 120).all(), counts


def test_sample_without_generator_and_float_labels():
    labels = _labels(30, 30, 5).float()
    pos, neg = sample_balanced(labels, 16, 0.25)
    assert (len(pos), len(neg)) == (4, 12)
    _check_indices(labels, pos, neg)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((torch.zeros(2, 3), 4, 0.5), "labels"),
        (([0, 1, 1], 4, 0.5), "labels"),
        ((torch.zeros(5), -1, 0.5), "num_samples"),
        ((torch.zeros(5), 2.5, 0.5), "num_samples"),
        ((torch.zeros(5), 4, 0.0), "positive_fraction"),
        ((torch.zeros(5), 4, 1.5), "positive_fraction"),
        ((torch.zeros(5), 4, float("nan")), "positive_fraction"),
    ],
)
def test_sample_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        sample_balanced(*args)


@pytest.mark.parametrize("fill", [True, False])
def test_sample_batch_is_sample_balanced_row_by_row(fill):
    # The same generator state gives each row exactly sample_balanced's indices, in its order.
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 2, (5, 300), generator=gen)
    labels[1] = -1  # nothing to sample
    labels[2, :290] = 0  # few positives at most
    seeded = torch.Generator().manual_seed(4)
    pos, neg, num_pos, num_neg = sample_balanced_batch(labels, 64, 0.25, seeded, fill)
    gen = torch.Generator().manual_seed(4)
    want = [sample_balanced(row, 64, 0.25, gen, fill) for row in labels]
    assert num_pos == [len(p) for p, _ in want] and num_neg == [len(q) for _, q in want]
    assert torch.equal(pos, torch.cat([p + 300 * b for b, (p, _) in enumerate(want)]))
    assert torch.equal(neg, torch.cat([q + 300 * b for b, (_, q) in enumerate(want)]))
    assert num_pos[1] == num_neg[1] == 0 and num_pos[0] == 16


def test_match_batch_equals_match_of_each_row():
    gen = torch.Generator().manual_seed(1)
    iou = torch.rand(3, 4, 50, generator=gen) ** 3
    iou[1, 2:] = -1.0  # padding rows: no GT there
    for low_quality in (True, False):
        batch = match_by_iou(iou, 0.5, 0.2, low_quality)
        rows = [match_by_iou(iou[0], 0.5, 0.2, low_quality), match_by_iou(iou[1, :2], 0.5, 0.2, low_quality),
                match_by_iou(iou[2], 0.5, 0.2, low_quality)]  # fmt: skip
        assert torch.equal(batch, torch.stack(rows))
