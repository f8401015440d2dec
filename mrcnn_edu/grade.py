"""Grading students' exercises: ``mrcnn-edu grade PATH...`` (also ``python -m mrcnn_edu.grade``).

Each path is a student's notebook (``.ipynb``) or Python module (``.py``). For each file the grader

1. starts a fresh Python process (a *worker*) so that nothing the student's code does can affect the grader
   or the next file;
2. executes the student's code there (working directory: the file's folder; ``__name__`` is
   ``"submission"``, so an ``if __name__ == "__main__":`` block does not run):

   * a module: the whole file, as an import would. If it raises, every exercise of the file fails;
   * a notebook: the cells tagged ``exercise`` whole (the cells where the student writes the functions),
     and from every other code cell only its top-level imports and ``def`` / ``class`` statements: checks,
     plots and detector runs are not executed (see :func:`mrcnn_edu.exercise_notebooks.grading_code`).
     A cell that raises is reported and the other cells still run. Helpers the student's function needs
     belong in the exercise cell (or in a ``def`` of their own);

3. takes the functions named like the exercises (:data:`mrcnn_edu.exercises.EXERCISES`) that the student's
   code defines (a function imported from mrcnn_edu does not count) and runs
   :func:`mrcnn_edu.exercises.run_check` on each.

Which exercises are expected: ``--only`` if given; else for a notebook those listed in its metadata
(``mrcnn_edu.exercises``, set in every exercise notebook), else every exercise. An expected exercise the
file does not define fails as "not found".

Limits: loading the file and each check get ``--timeout`` seconds (default 60); past that the worker is
killed, that exercise fails ("timed out after N s") and a new worker goes on with the rest. Everything the
code prints is captured, counted and kept only in part (never echoed to the terminal); ``--json`` includes
its beginning.
``OMP_NUM_THREADS`` is 1 in the worker unless set. There is no memory limit and no sandbox: grade code you
would run yourself.

Exit status: 0 every expected exercise of every file passed; 1 some failed (or were not found, or timed out);
2 usage error (no such file, a file that is neither .py nor .ipynb, an unknown exercise name).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_TIMEOUT",
    "ExerciseResult",
    "FileReport",
    "grade_file",
    "grade_paths",
    "format_report",
    "exit_status",
    "add_arguments",
    "run",
    "main",
]

#: Seconds allowed for loading a submission and for each exercise's check.
DEFAULT_TIMEOUT = 60.0
#: Seconds allowed for a worker to start (import torch and mrcnn_edu) before it runs any student code.
STARTUP_TIMEOUT = 180.0
#: Characters of the code's printed output kept (the rest is only counted).
OUTPUT_KEPT = 2000
#: Longest message kept per exercise (run_check's explanation, an exception).
MESSAGE_KEPT = 2000
_TABLE_MESSAGE = 88  # characters of a message shown in the table


@dataclass(frozen=True)
class ExerciseResult:
    """One exercise of one file. status: "pass", "fail", "not found", "timeout" or "error" (worker died)."""

    exercise: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class FileReport:
    """The grading of one file: a result per expected exercise, notes (load errors), captured output."""

    path: str
    kind: str  # "notebook" or "module"
    results: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    output_chars: int = 0
    output_head: str = ""

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["results"] = [{**asdict(r), "passed": r.passed} for r in self.results]
        d.update(passed=self.passed, total=self.total)
        return d


def _clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 15] + f"... [{len(text) - limit + 15} more]"


# --------------------------------------------------------------------------------------------------------
# the worker: runs in its own process, reports on a private pipe (one JSON object per line)


def _student_functions(namespace: dict) -> dict:
    """The exercises defined by the student's code (not imported from elsewhere), name -> function."""
    from .exercises import EXERCISES

    found = {}
    for name in EXERCISES:
        fn = namespace.get(name)
        if callable(fn) and getattr(fn, "__module__", None) == "submission":
            found[name] = fn
    return found


def _describe_exception(err: BaseException) -> str:
    """``Type: message (file, line N)`` with the innermost frame of the student's code."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return _clip(f"{type(err).__name__}: {err}{where}", MESSAGE_KEPT)


def _load(path: Path, namespace: dict) -> list[str]:
    """Execute the submission in ``namespace``; returns the errors (a module stops at its first)."""
    if path.suffix == ".ipynb":
        from .exercise_notebooks import grading_code, read_notebook

        errors = []
        for index, source in grading_code(read_notebook(path)):
            try:
                exec(compile(source, f"{path.name} cell {index}", "exec"), namespace)
            except BaseException as err:  # noqa: BLE001 - anything the student's cell raises is reported
                errors.append(f"cell {index} raised {_describe_exception(err)}")
        return errors
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    except BaseException as err:  # noqa: BLE001
        return [f"the module raised at import: {_describe_exception(err)}"]
    return []


def _worker(report_fd: int, path: str, names: list[str]) -> int:
    report = os.fdopen(report_fd, "w", buffering=1, encoding="utf-8")

    def send(**event) -> None:
        report.write(json.dumps(event) + "\n")
        report.flush()

    from .exercises import run_check

    send(event="ready")
    module = types.ModuleType("submission")
    module.__file__ = str(Path(path).resolve())
    sys.modules["submission"] = module
    errors = _load(Path(path), module.__dict__)
    found = _student_functions(module.__dict__)
    send(event="loaded", found=sorted(found), errors=errors, module=Path(path).suffix == ".py")
    for name in names:
        send(event="start", name=name)
        if name not in found:
            send(event="result", name=name, status="not found", message=f"no function {name}() defined")
            continue
        try:
            result = run_check(name, found[name])
            status, message = ("pass" if result.passed else "fail"), result.message
        except BaseException as err:  # noqa: BLE001 - run_check should not raise; SystemExit and co. can
            status, message = "fail", f"the check raised {_describe_exception(err)}"
        send(event="result", name=name, status=status, message=_clip(message, MESSAGE_KEPT))
    send(event="done")
    return 0


# --------------------------------------------------------------------------------------------------------
# the parent: starts workers, enforces the time limits, collects the results


class _Worker:
    """One worker process with threads draining its report pipe (into a queue) and its output."""

    def __init__(self, path: Path, names: list[str], output: dict):
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["MPLBACKEND"] = "Agg"
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        cmd = [
            sys.executable,
            "-m",
            "mrcnn_edu.grade",
            "_worker",
            str(write_fd),
            str(path.resolve()),
            ",".join(names),
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=path.resolve().parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=(os.name == "posix"),
        )
        os.close(write_fd)
        self.events: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_events, args=(os.fdopen(read_fd, "rb"),), daemon=True),
            threading.Thread(target=self._drain, args=(output,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_events(self, stream) -> None:
        with stream:
            for line in stream:
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    pass  # the student's code wrote into the report pipe: ignore what is not ours
        self.events.put(None)  # end of file: the worker exited

    def _drain(self, output: dict) -> None:
        decoder_errors = "replace"
        while chunk := self.proc.stdout.read1(65536):
            text = chunk.decode("utf-8", errors=decoder_errors)
            output["chars"] += len(text)
            room = OUTPUT_KEPT - len(output["head"])
            if room > 0:
                output["head"] += text[:room]

    def next_event(self, timeout: float):
        """The next event, None when the worker has exited, or "timeout"."""
        try:
            return self.events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return "timeout"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            try:
                if os.name == "posix":
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and anything it started
                else:
                    self.proc.kill()
            except ProcessLookupError:
                pass
        code = self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        return code


def _expected(path: Path, only: list[str] | None) -> tuple[list[str], list[str]]:
    """(expected exercise names, notes) for one file."""
    from .exercise_notebooks import notebook_exercises, read_notebook
    from .exercises import EXERCISES

    if only:
        return list(only), []
    if path.suffix == ".ipynb":
        try:
            listed = notebook_exercises(read_notebook(path))
        except ValueError as err:
            return list(EXERCISES), [str(err)]
        if listed:
            unknown = [n for n in listed if n not in EXERCISES]
            return [n for n in listed if n in EXERCISES], [
                f"unknown exercises in metadata: {unknown}"
            ] * bool(unknown)
    return list(EXERCISES), []


def grade_file(
    path: str | Path, timeout: float = DEFAULT_TIMEOUT, only: list[str] | None = None
) -> FileReport:
    """Grade one submission (a ``.py`` module or an ``.ipynb`` notebook) in worker processes.

    path: the file. timeout: seconds for loading it and for each exercise's check. only: the exercises to
    grade (default: the notebook's listed exercises, else all). Returns its :class:`FileReport`; never raises
    because of the student's code.
    """
    path = Path(path)
    kind = "notebook" if path.suffix == ".ipynb" else "module"
    names, notes = _expected(path, only)
    report = FileReport(str(path), kind, notes=notes)
    done: dict[str, ExerciseResult] = {}
    output = {"chars": 0, "head": ""}
    remaining = list(names)
    loaded_once = False
    while remaining:
        before = len(remaining)
        worker = _Worker(path, remaining, output)
        stopped = False
        try:
            event = worker.next_event(STARTUP_TIMEOUT)
            if not (isinstance(event, dict) and event.get("event") == "ready"):
                why = "did not start in time" if event == "timeout" else "exited before starting"
                code = worker.stop()
                stopped = True
                tail = output["head"][-300:].strip()
                for name in remaining:
                    done[name] = ExerciseResult(name, "error", f"grader worker {why} (exit {code}): {tail}")
                break
            event = worker.next_event(timeout)
            if not (isinstance(event, dict) and event.get("event") == "loaded"):
                why = f"timed out after {timeout:g} s" if event == "timeout" else "the worker died"
                message = f"{why} while loading the file"
                for name in remaining:
                    done[name] = ExerciseResult(name, "timeout" if event == "timeout" else "error", message)
                break
            if not loaded_once:
                report.notes += event["errors"]
                loaded_once = True
            if event["module"] and event["errors"]:
                for name in remaining:
                    done[name] = ExerciseResult(name, "fail", event["errors"][0])
                break
            current, deadline = None, time.monotonic() + timeout
            while True:
                event = worker.next_event(deadline - time.monotonic() if current else timeout)
                if event == "timeout" or event is None:
                    if current is None:  # between checks: cannot happen unless the worker hangs at exit
                        break
                    status = "timeout" if event == "timeout" else "error"
                    message = (
                        f"timed out after {timeout:g} s"
                        if event == "timeout"
                        else f"the worker process died during the check (exit {worker.stop()})"
                    )
                    done[current] = ExerciseResult(current, status, message)
                    remaining.remove(current)
                    break
                if event["event"] == "start":
                    current, deadline = event["name"], time.monotonic() + timeout
                elif event["event"] == "result":
                    done[event["name"]] = ExerciseResult(event["name"], event["status"], event["message"])
                    remaining.remove(event["name"])
                    current = None
                elif event["event"] == "done":
                    break
        finally:
            if not stopped:
                worker.stop()
        if len(remaining) == before:  # a worker that ends without deciding anything: do not loop forever
            for name in remaining:
                done.setdefault(name, ExerciseResult(name, "error", "the worker stopped without grading it"))
            break
    report.results = [done.get(n, ExerciseResult(n, "error", "not graded")) for n in names]
    report.output_chars = output["chars"]
    report.output_head = output["head"]
    return report


def grade_paths(paths, timeout: float = DEFAULT_TIMEOUT, only: list[str] | None = None) -> list[FileReport]:
    """:func:`grade_file` for each path, in order."""
    return [grade_file(p, timeout, only) for p in paths]


def exit_status(reports: list[FileReport]) -> int:
    """0 if every expected exercise of every file passed, else 1."""
    return 0 if all(r.passed == r.total for r in reports) else 1


def format_report(reports: list[FileReport]) -> str:
    """The score table: per file one line per exercise (PASS / FAIL / ...), the file's score, the total."""
    lines = []
    width = max([len(r.exercise) for rep in reports for r in rep.results] + [8])
    for rep in reports:
        lines.append(f"{rep.path} ({rep.kind})")
        lines.append(f"  {'exercise':<{width}}  result     message")
        for r in rep.results:
            label = {"pass": "PASS", "timeout": "TIMEOUT", "error": "ERROR"}.get(r.status, "FAIL")
            message = " ".join(r.message.split())  # one line, whatever the message holds
            for prefix in (f"PASS {r.exercise}: ", f"PASS {r.exercise}, ", f"FAIL {r.exercise}: ",
                           f"FAIL {r.exercise}, "):
                message = message.removeprefix(prefix)
            if r.status == "not found":
                message = "not found: " + message
            if len(message) > _TABLE_MESSAGE:
                message = message[: _TABLE_MESSAGE - 3] + "..."
            lines.append(f"  {r.exercise:<{width}}  {label:<9}  {message}")
        for note in rep.notes:
            lines.append(f"  note: {_clip(' '.join(note.split()), 2 * _TABLE_MESSAGE)}")
        if rep.output_chars:
            lines.append(
                f"  note: the code printed {rep.output_chars:,} characters (not shown; --json keeps "
                f"the first {OUTPUT_KEPT:,})"
            )
        lines.append(f"  score: {rep.passed}/{rep.total}")
        lines.append("")
    passed, total = sum(r.passed for r in reports), sum(r.total for r in reports)
    lines.append(f"total: {passed}/{total} exercises passed in {len(reports)} file(s)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mrcnn-edu grade``."""
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="student notebooks (.ipynb) or modules (.py)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds allowed for loading a file and for each exercise (default %(default)g)",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="grade only these exercises (default: a notebook's own, else all)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Grade ``args.paths``; print the table (or JSON).

    Exit status 0 all passed, 1 some failed, 2 usage error.
    """
    from .exercises import EXERCISES

    problems = []
    for p in args.paths:
        if not p.is_file():
            problems.append(f"{p}: no such file")
        elif p.suffix not in (".py", ".ipynb"):
            problems.append(f"{p}: not a .py module or .ipynb notebook")
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    if only:
        problems += [
            f"--only: unknown exercise {n!r} (known: {', '.join(EXERCISES)})"
            for n in only
            if n not in EXERCISES
        ]
    if not args.timeout > 0:
        problems.append(f"--timeout must be > 0, got {args.timeout}")
    if problems:
        for line in problems:
            print(f"grade: {line}", file=sys.stderr)
        return 2
    reports = grade_paths(args.paths, args.timeout, only)
    status = exit_status(reports)
    if args.json:
        passed, total = sum(r.passed for r in reports), sum(r.total for r in reports)
        print(
            json.dumps(
                {
                    "files": [r.to_dict() for r in reports],
                    "passed": passed,
                    "total": total,
                    "exit_status": status,
                },
                indent=2,
            )
        )
    else:
        print(format_report(reports))
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_worker"]:  # internal: python -m mrcnn_edu.grade _worker FD PATH NAMES
        return _worker(int(argv[1]), argv[2], [n for n in argv[3].split(",") if n])
    parser = argparse.ArgumentParser(
        prog="mrcnn-edu grade", description="Grade students' exercise submissions."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
