"""Running a check: :func:`run_check` (a :class:`CheckResult`, never raises for a wrong or broken function)
and :func:`check` (prints it). The same harness serves the notebooks and the grader: in the grader the
student's function is a stand-in that runs it in a worker process (:mod:`.grading`)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import torch

from .catalog import EXERCISES, _exercise_name
from .checking import _Fail, case_seed
from .forbid import forbid, restore
from .registry import CHECKS
from .swap import _mrcnn_modules, _references_only


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`run_check`: ``message`` starts with ``"PASS"`` or explains what is wrong."""

    name: str
    passed: bool
    message: str


def _forbid_here(name: str, fn) -> list:
    """While ``fn`` is checked, the library's own implementation of ``name`` raises wherever the library or
    the student's module (a notebook's namespace) holds it: a wrapper around it does not pass. (A function
    that runs in the grader's worker is covered there.)"""
    if hasattr(fn, "call_returning_inputs"):
        return []
    own = sys.modules.get(getattr(fn, "__module__", None) or "")
    return forbid(name, _mrcnn_modules() + ([own] if own is not None else []), keep_for_library=True)


def run_check(name: str, fn, seed=None) -> CheckResult:
    """Check the student's ``fn`` for exercise ``name``; never raises because ``fn`` is wrong or broken.

    fn: the student's function, or None (not written yet). seed: None gives the random cases every notebook
    shows; any other value (an int or a string such as a student id) draws other random cases, so that
    results cannot be copied as numbers. Returns a :class:`CheckResult` whose message starts with ``"PASS"``
    or explains the first problem found (inputs, expected and actual result, diagnosis). Raises ValueError
    only for an unknown ``name``.
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
        with (
            _references_only(),
            case_seed(seed),
            torch.random.fork_rng(devices=[]),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            replaced = _forbid_here(name, fn)
            try:
                message = CHECKS[name](fn)
            finally:
                restore(replaced)
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


def check(name: str, fn, seed=None) -> bool:
    """Run :func:`run_check`, print its message and return whether ``fn`` passed."""
    result = run_check(name, fn, seed)
    print(result.message)
    return result.passed
