"""What every check is built from: cases, calling the student's function safely, comparing, diagnosing.

The stage checks (``check_*.py``) build their cases and known-wrong variants on these helpers; the registry
(:mod:`.registry`) lists them and the harness (:mod:`.harness`) runs them.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .catalog import EXERCISES
from .protocol import Opaque, RemoteError


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
    if isinstance(exc, RemoteError):  # raised in the grader's worker: its type, message and frames as text
        type_name, message = exc.type_name, exc.message
        frames = [traceback.FrameSummary(f, n, fn, lookup_line=False, line=t) for f, n, fn, t in exc.frames]
    else:
        type_name, message = type(exc).__name__, str(exc)
        frames = list(traceback.extract_tb(exc.__traceback__))
    # frames of the exercises package itself (the check, the adapters) are left out
    frames = [f for f in frames if os.path.dirname(os.path.abspath(f.filename)) != _HERE]
    student = [f for f in frames if not _library_file(f.filename)]
    text = f"your {name} raised {type_name}: {message}"
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
    """Call the student's function on copies of the case's inputs; a raise or an in-place change fails.

    ``fn`` may run elsewhere (the grader's worker): then it has ``call_returning_inputs(args, kwargs)``, which
    returns ``(result, args, kwargs)`` with the inputs as the function left them.
    """
    args = tuple(_clone(a) for a in case.args)
    kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
    remote = getattr(fn, "call_returning_inputs", None)
    try:
        if remote is None:
            out = fn(*args, **kwargs)
        else:
            out, args, kwargs = remote(args, kwargs)
    except NotImplementedError:  # the stub of the student notebook, not yet replaced
        signature = EXERCISES[name].signature if name in EXERCISES else name
        raise _Fail(f"FAIL {name}: not implemented yet. Write `{signature}` and check it again.") from None
    except Exception as exc:  # the student's bug: report it, never propagate it
        raise _Fail(
            f"FAIL {name}, {where}: {_exception_text(name, exc)}\n  Inputs:\n{_inputs_text(case)}"
        ) from None
    names = case.names or tuple(f"arg{i}" for i in range(len(case.args)))
    passed = list(zip(names, args, case.args, strict=False)) + [
        (k, kwargs.get(k), v) for k, v in case.kwargs.items()
    ]
    for label, given, kept in passed:
        unchanged = isinstance(given, torch.Tensor) and torch.equal(given, kept)
        if isinstance(kept, torch.Tensor) and not unchanged:
            raise _Fail(
                f"FAIL {name}, {where}: your function changed its input `{label}` in place (an in-place "
                f"operation such as `{label}[:, 2] -= ...`, `+=` or `.clamp_()` on the input or on a view of "
                f"it). Callers reuse their tensors: work on new tensors (or on `{label}.clone()`)."
            )
    return out


def _type_name(value) -> str:
    """The name of a value's type (for a value the worker could not send, the type it reported)."""
    return value.type_name if isinstance(value, Opaque) else type(value).__name__


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
        return f"it returned {_type_name(got)}, not a torch.Tensor."
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


def _matches_variant(got, make, atol: float, rtol: float) -> bool:
    """Whether ``got`` is what the mistake ``make`` computes (True where the mistake cannot be computed)."""
    try:
        wrong = make()
    except Exception:  # the variant does not apply to this input: no evidence either way
        return True
    if not (isinstance(wrong, torch.Tensor) and isinstance(got, torch.Tensor)):
        return True
    if tuple(wrong.shape) != tuple(got.shape):
        return False
    wrong = wrong.to(got.dtype) if got.is_floating_point() == wrong.is_floating_point() else wrong
    return _close(got, wrong, atol, rtol)


def _compare(
    name,
    case,
    where,
    got,
    expected,
    *,
    atol,
    rtol,
    variants=(),
    shape_hint="",
    show_expected=True,
    confirm=None,
) -> None:
    """Fail with a full explanation unless ``got`` matches ``expected``.

    confirm: optional ``f(diagnoses) -> diagnoses`` keeping those that the student's function also matches
    on the check's other cases; used when several mistakes give the student's output on this case.
    """
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
    if len(diagnoses) > 1 and confirm is not None:
        diagnoses = confirm(diagnoses) or diagnoses
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
    """Hand-made cases, then random cases, each compared with the reference; returns the PASS summary.

    A diagnosis is given only if the student's output is what that mistake gives on the failing case; when
    several mistakes give it (a ``>=`` in NMS and widths ``x2 - x1 + 1`` agree on a box pair exactly at the
    threshold), only those the function also makes on every other case are named.
    """
    call = call or _call

    def confirm(candidates: list[str], failing: _Case) -> list[str]:
        for other in (*fixed, *random):
            if not candidates:
                break
            if other is failing:
                continue
            try:
                got = call(fn, name, other, "another case")
            except _Fail:  # raises or changes its input there: no evidence from this case
                continue
            expected = ref(*other.args, **other.kwargs)
            makes = dict(variants(other, expected))
            candidates = [
                c for c in candidates if c not in makes or _matches_variant(got, makes[c], atol, rtol)
            ]
        return candidates

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
                confirm=lambda found, case=case: confirm(found, case),
            )
    return (
        f"PASS {name}: {len(fixed)} hand-made and {len(random)} random cases agree with "
        f"{EXERCISES[name].reference} (atol {atol:g}, rtol {rtol:g})."
    )


_CASE_SEED: contextvars.ContextVar = contextvars.ContextVar("mrcnn_edu_case_seed", default=None)


@contextlib.contextmanager
def case_seed(seed):
    """Within this context the random cases are drawn for ``seed`` (None: the notebooks' cases)."""
    token = _CASE_SEED.set(None if seed is None else str(seed))
    try:
        yield
    finally:
        _CASE_SEED.reset(token)


def _gen(seed: int) -> torch.Generator:
    """The generator of a check's random cases number ``seed``, moved to other cases by :func:`case_seed`."""
    base = _CASE_SEED.get()
    if base is None:
        return torch.Generator().manual_seed(seed)
    digest = hashlib.sha256(f"{base}\0{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


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
