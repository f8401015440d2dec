"""The library's own implementation of a stage, made unusable while that stage is checked or graded.

A "solution" that calls ``mrcnn_edu.boxes.box_iou`` (under that name, an alias, ``mrcnn_edu.ops`` or any
module that imported it) is not the student's. :func:`forbid` replaces every module attribute that *is* one
of the exercise's ``forbidden`` functions (:attr:`.catalog.Exercise.forbidden`; the sweep goes by identity,
so every alias is found) by a stand-in that raises :class:`LibraryCallForbidden` with a message saying so.

The grader's worker does it in every module before the submission is loaded and drops the originals: there,
nothing can reach them. An interactive check (``check(...)`` in a notebook) does it in the library's modules
and the student's own module for the time of the check, keeping the originals for callers inside the library
(the references the check compares with call each other), so a direct or aliased call from the student's
code fails there too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from .catalog import EXERCISES


class LibraryCallForbidden(RuntimeError):
    """Raised by the library's own implementation of the stage being checked, whatever name calls it."""


_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # mrcnn_edu/


class Forbidden:
    """Stands in for a library function while its stage is checked. ``original``: None in the grader's worker
    (the stand-in holds only text); in an interactive check the function it stands for, which library code
    may still call."""

    def __init__(self, stage: str, qualname: str, original=None):
        self.stage, self.qualname, self._original = stage, qualname, original
        self.__module__, self.__name__ = qualname.rsplit(".", 1)

    def __call__(self, *args, **kwargs):
        if self._original is not None and sys._getframe(1).f_code.co_filename.startswith(_LIBRARY):
            return self._original(*args, **kwargs)
        raise LibraryCallForbidden(
            f"{self.qualname} is mrcnn_edu's own implementation of {self.stage}: a graded {self.stage} must "
            "compute it with your own code (calling the library's other functions is fine)"
        )


def forbid(stage: str, modules: Iterable, keep_for_library: bool = False) -> list[tuple[dict, str, object]]:
    """Replace, in the namespaces of ``modules``, every attribute that is one of ``stage``'s forbidden
    functions by a :class:`Forbidden` stand-in (which still serves the library's own callers when
    ``keep_for_library``). Returns ``(namespace, attribute, original)`` for :func:`restore`."""
    originals = {}
    for qualname in EXERCISES[stage].forbidden:
        module_name, attr = qualname.rsplit(".", 1)
        fn = getattr(importlib.import_module(module_name), attr)
        fn = getattr(fn, "_exercise_original", fn)  # a student's swap in place: the library's function
        originals.setdefault(id(fn), (fn, Forbidden(stage, qualname, fn if keep_for_library else None)))
    replaced = []
    for module in modules:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            entry = originals.get(id(value))
            if entry is not None and entry[0] is value:
                namespace[attr] = entry[1]
                replaced.append((namespace, attr, value))
    return replaced


def restore(replaced: list[tuple[dict, str, object]]) -> None:
    """Undo :func:`forbid`."""
    for namespace, attr, original in reversed(replaced):
        namespace[attr] = original
