"""How a check runs: cases, calling the student's function safely, comparing, diagnosing known mistakes.

The stage checks (``check_*.py``) build their cases and known-wrong variants on these helpers;
:func:`run_check` and :func:`check` run the check of an exercise.
"""

from __future__ import annotations

import math
import os
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .catalog import EXERCISES, _exercise_name
from .swap import _references_only


class _Fail(Exception):
    """A wrong answer: ``message`` is the explanation shown to the student."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class _Case:
    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    names: tuple[str, ...] = ()
    note: str = ""


def _fmt(x, limit: int = 96) -> str:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.numel() > limit:
            return f"<tensor of shape {list(t.shape)}, dtype {t.dtype}>"
        try:
            with torch._tensor_str.printoptions(precision=4, sci_mode=False, linewidth=100):
                return repr(t)
        except Exception:  # private printing API changed: the default repr is fine
            return repr(t)
    if isinstance(x, torch.Generator):
        return "torch.Generator(...)"
    if isinstance(x, float):
        return repr(x) if len(repr(x)) <= 10 else f"{x:.6g}"
    if isinstance(x, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in x):
        inner = ", ".join(_fmt(v, limit) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    text = repr(x)
    return text if len(text) <= 300 else text[:300] + " ..."


def _indent(text: str, spaces: int = 4) -> str:
    pad = " " * spaces
    return "\n".join(pad + line for line in text.splitlines())


def _inputs_text(case: _Case) -> str:
    names = case.names or tuple(f"arg{i}" for i in range(len(case.args)))
    pairs = list(zip(names, case.args, strict=False)) + list(case.kwargs.items())
    return "\n".join(_indent(f"{k} = {_fmt(v)}") for k, v in pairs)


_HERE = os.path.dirname(os.path.abspath(__file__))  # this package: mrcnn_edu/exercises


def _library_file(filename: str) -> bool:
    """Frames of torch, Python, this package: not the student's code."""
    path = os.path.abspath(filename)
    roots = [
        os.path.dirname(_HERE),  # mrcnn_edu
        os.path.dirname(os.path.abspath(torch.__file__)),
        os.path.dirname(os.path.abspath(os.__file__)),
    ]
    return any(path.startswith(root + os.sep) for root in roots)


def _exception_text(name: str, exc: BaseException) -> str:
    # frames of the exercises package itself (the check, the adapters) are left out
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.dirname(os.path.abspath(f.filename)) != _HERE
    ]
    student = [f for f in frames if not _library_file(f.filename)]
    text = f"your {name} raised {type(exc).__name__}: {exc}"
    if student:
        lines = [f"  line {f.lineno} in {f.name}: {(f.line or '').strip()}" for f in student[-3:]]
        text += "\n  where (most recent call last):\n" + "\n".join(_indent(line, 2) for line in lines)
        if frames and frames[-1] is not student[-1]:
            text += f"\n    (raised inside {os.path.basename(frames[-1].filename)}, called from that line)"
    return text


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_clone(v) for v in value)
    return value


def _call(fn: Callable, name: str, case: _Case, where: str):
    """Call the student's function on copies of the case's inputs; a raise or an in-place change fails."""
    args = tuple(_clone(a) for a in case.args)
    kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:  # the stub of the student notebook, not yet replaced
        signature = EXERCISES[name].signature if name in EXERCISES else name
        raise _Fail(f"FAIL {name}: not implemented yet. Write `{signature}` and check it again.") from None
    except Exception as exc:  # the student's bug: report it, never propagate it
        raise _Fail(
            f"FAIL {name}, {where}: {_exception_text(name, exc)}\n  Inputs:\n{_inputs_text(case)}"
        ) from None
    names = case.names or tuple(f"arg{i}" for i in range(len(case.args)))
    passed = list(zip(names, args, case.args, strict=False)) + [
        (k, kwargs[k], v) for k, v in case.kwargs.items()
    ]
    for label, given, kept in passed:
        if isinstance(kept, torch.Tensor) and not torch.equal(given, kept):
            raise _Fail(
                f"FAIL {name}, {where}: your function changed its input `{label}` in place (an in-place "
                f"operation such as `{label}[:, 2] -= ...`, `+=` or `.clamp_()` on the input or on a view of "
                f"it). Callers reuse their tensors: work on new tensors (or on `{label}.clone()`)."
            )
    return out


def _type_problem(got, expected: torch.Tensor, shape_hint: str = "") -> str | None:
    """What is wrong with the result's type, shape or dtype, or None."""
    if got is None:
        return "it returned None: did you forget the `return` statement?"
    if isinstance(got, (list, tuple)):
        return (
            f"it returned a Python {type(got).__name__} of {len(got)} items, not a tensor: build the result "
            "with torch operations, or convert at the end (torch.stack(...) for a list of tensors, "
            "torch.tensor(...) for a list of numbers)."
        )
    if type(got).__module__.startswith("numpy"):
        return "it returned a numpy array, not a torch tensor: use torch operations (or torch.from_numpy)."
    if not isinstance(got, torch.Tensor):
        return f"it returned {type(got).__name__}, not a torch.Tensor."
    if tuple(got.shape) != tuple(expected.shape):
        text = f"the result has shape {list(got.shape)}, expected {list(expected.shape)}."
        if got.dim() == 2 and tuple(got.shape) == tuple(expected.shape)[::-1]:
            text += " It looks transposed (rows and columns swapped)."
        elif got.numel() == expected.numel():
            text += f" Same number of elements: reshape to {list(expected.shape)} (in the right order)."
        return text + (" " + shape_hint if shape_hint else "")
    if got.dtype != expected.dtype:
        text = f"the result has dtype {got.dtype}, expected {expected.dtype}."
        if not expected.is_floating_point() and got.is_floating_point():
            text += " Indices and labels are integers: torch.long (int64)."
        elif expected.dtype == torch.int64 and got.dtype != torch.bool:
            text += " Use .long() (torch.int64, PyTorch's index type)."
        elif got.dtype == torch.bool:
            text += " Return numbers, not a True/False mask."
        elif expected.dtype == torch.float32 and got.dtype == torch.float64:
            text += (
                " Some tensor was created as float64 (e.g. from numpy or with dtype=torch.double); "
                "keep the input's dtype."
            )
        return text
    if got.device != expected.device:
        return (
            f"the result is on {got.device}, expected {expected.device} "
            "(create tensors on the input's device)."
        )
    return None


def _close(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> bool:
    if tuple(got.shape) != tuple(expected.shape):
        return False
    if not expected.is_floating_point():
        return torch.equal(got.cpu().long(), expected.cpu().long())
    return torch.allclose(
        got.detach().cpu().double(), expected.cpu().double(), atol=atol, rtol=rtol, equal_nan=True
    )


def _diagnose(got: torch.Tensor, expected: torch.Tensor, variants, atol: float, rtol: float) -> list[str]:
    """The explanations of the known-wrong variants whose output on this input equals the student's."""
    found = []
    for explanation, make in variants:
        try:
            wrong = make()
        except Exception:  # a variant that cannot run on this input simply does not apply
            continue
        if not isinstance(wrong, torch.Tensor) or tuple(wrong.shape) != tuple(got.shape):
            continue
        wrong = wrong.to(got.dtype) if got.is_floating_point() == wrong.is_floating_point() else wrong
        if _close(got, wrong, atol, rtol) and not _close(wrong, expected, atol, rtol):
            found.append(explanation)
    return found


def _difference_text(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str:
    if not expected.is_floating_point():
        wrong = (got.cpu().long() != expected.cpu().long()).nonzero()
        return f"{len(wrong)} of {expected.numel()} entries differ (they must be equal)."
    diff = (got.detach().cpu().double() - expected.cpu().double()).abs()
    diff = torch.nan_to_num(diff, nan=math.inf)
    worst = int(diff.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
    return (
        f"largest difference {diff.flatten()[worst].item():.4g} at index {index} "
        f"(allowed: atol {atol:g} + rtol {rtol:g} * |expected|)."
    )


def _compare(
    name, case, where, got, expected, *, atol, rtol, variants=(), shape_hint="", show_expected=True
) -> None:
    """Fail with a full explanation unless ``got`` matches ``expected``."""
    head = f"FAIL {name}, {where}"
    problem = _type_problem(got, expected, shape_hint)
    if problem is None and _close(got, expected, atol, rtol):
        return
    text = f"{head}: " + (problem or "wrong values.") + f"\n  Inputs:\n{_inputs_text(case)}"
    if show_expected:
        text += "\n  Expected" + (f" ({case.note})" if case.note else "") + f":\n{_indent(_fmt(expected))}"
        if isinstance(got, torch.Tensor):
            text += f"\n  Got:\n{_indent(_fmt(got))}"
    diagnoses = _diagnose(got, expected, variants, atol, rtol) if isinstance(got, torch.Tensor) else []
    if problem is None:
        text += "\n  " + _difference_text(got, expected, atol, rtol)
    if diagnoses:
        text += "\n  Diagnosis: " + "\n  Diagnosis: ".join(diagnoses)
    elif problem is None:
        text += (
            "\n  (No common mistake gives exactly your result; compare it with the expected one entry "
            "by entry.)"
        )
    raise _Fail(text)


def _run_exact(name, fn, ref, fixed, random, *, atol, rtol, variants, shape_hint="", call=None) -> str:
    """Hand-made cases, then random cases, each compared with the reference; returns the PASS summary."""
    call = call or _call
    for kind, cases in (("hand-made case", fixed), ("random case", random)):
        for i, case in enumerate(cases):
            where = f"{kind} {i + 1} of {len(cases)}" + (f" ({case.label})" if case.label else "")
            expected = ref(*case.args, **case.kwargs)
            got = call(fn, name, case, where)
            _compare(
                name,
                case,
                where,
                got,
                expected,
                atol=atol,
                rtol=rtol,
                variants=variants(case, expected),
                shape_hint=shape_hint,
                show_expected=(kind == "hand-made case" or expected.numel() <= 96),
            )
    return (
        f"PASS {name}: {len(fixed)} hand-made and {len(random)} random cases agree with "
        f"{EXERCISES[name].reference} (atol {atol:g}, rtol {rtol:g})."
    )


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_boxes(n: int, g: torch.Generator, extent: float = 20.0, min_size: float = 0.5) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * extent / 2 + min_size
    return torch.cat((xy, xy + wh), dim=1)


def _plus_one(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes whose width and height are one more: what ``x2 - x1 + 1`` computes."""
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


_PLUS_ONE = (
    "looks like you used widths x2 - x1 + 1 (the '+ 1' of old VOC / Detectron code). Here a box covers "
    "[x1, x2) x [y1, y2): width = x2 - x1, height = y2 - y1."
)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`run_check`: ``message`` starts with ``"PASS"`` or explains what is wrong."""

    name: str
    passed: bool
    message: str


def _checks() -> dict[str, Callable[[Callable], str]]:
    """The check of each exercise. Imported on first use: the stage modules import this one."""
    from .check_anchors import _check_level_anchors, _check_pyramid_anchors
    from .check_boxes import _check_box_iou, _check_decode_deltas, _check_encode_deltas
    from .check_masks import _check_paste_mask
    from .check_nms import _check_nms
    from .check_roi_align import _check_bilinear, _check_roi_align
    from .check_targets import _check_detection_targets, _check_rpn_targets

    return {
        "box_iou": _check_box_iou,
        "encode_deltas": _check_encode_deltas,
        "decode_deltas": _check_decode_deltas,
        "level_anchors": _check_level_anchors,
        "pyramid_anchors": _check_pyramid_anchors,
        "nms": _check_nms,
        "rpn_targets": _check_rpn_targets,
        "bilinear": _check_bilinear,
        "roi_align": _check_roi_align,
        "detection_targets": _check_detection_targets,
        "paste_mask": _check_paste_mask,
    }


def run_check(name: str, fn) -> CheckResult:
    """Check the student's ``fn`` for exercise ``name``; never raises because ``fn`` is wrong or broken.

    fn: the student's function, or None (not written yet). Returns a :class:`CheckResult` whose message starts
    with ``"PASS"`` or explains the first problem found (inputs, expected and actual result, diagnosis).
    Raises ValueError only for an unknown ``name``.
    """
    name = _exercise_name(name)
    signature = EXERCISES[name].signature
    if fn is None:
        return CheckResult(
            name, False, f"{name}: not implemented yet. Write `{signature}` and check it again."
        )
    if not callable(fn):
        return CheckResult(
            name, False, f"{name}: expected a function ({signature}), got {type(fn).__name__}."
        )
    try:
        with _references_only(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            message = _checks()[name](fn)
        return CheckResult(name, True, message)
    except _Fail as failure:
        return CheckResult(name, False, failure.message)
    except Exception as exc:  # an output too odd for the comparisons above; still the student's problem
        return CheckResult(
            name,
            False,
            f"FAIL {name}: could not check your result ({type(exc).__name__}: {exc}). "
            "Compare its type and shape with the task (describe(name)).",
        )


def check(name: str, fn) -> bool:
    """Run :func:`run_check`, print its message and return whether ``fn`` passed."""
    result = run_check(name, fn)
    print(result.message)
    return result.passed
