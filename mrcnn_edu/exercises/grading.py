"""Grading students' exercises: ``mrcnn-edu grade --assignment NAME PATH...``.

Each path is a student's notebook (``.ipynb``) or Python module (``.py``). The design keeps the grade out of
the student's reach: **the student's code only ever computes outputs.**

* The grader (this process) reads every submission into memory first, so a submission that deletes files
  cannot change what the others are graded on. It decides which exercises a file is graded on from the
  assignment (``--assignment``, :data:`.catalog.ASSIGNMENTS`, or ``--only``), never from the file: a
  notebook's metadata is the student's to edit.
* From a notebook the grader takes the code of the cells tagged ``exercise`` whole, and from every other code
  cell only its top-level ``import`` statements and ``def`` statements (:func:`.notebooks.grading_code`):
  checks, plots, demos and class bodies are not run. A module is run whole (as ``submission``, so its
  ``if __name__ == "__main__":`` block does not run).
* For each (file, exercise) a *worker* process is forked by the sandbox supervisor (:mod:`.worker`): its own
  session; limits on address space (``--memory``), CPU time, file size and processes; a fresh temporary
  folder holding a copy of that one submission as its working directory; the library's own implementation
  of the graded stage replaced everywhere by a function that fails with a message saying so; imports of
  other detection libraries refused. It runs the submission's code, then waits for inputs.
* The grader runs the exercise's check (:func:`.harness.run_check`) *here*: it builds the inputs, computes
  the reference outputs and compares. The student's function is a :class:`RemoteFunction`: each call sends
  the inputs to the worker and reads back the result (and the inputs as the function left them), decoded
  as plain data (:mod:`.protocol`: no pickle). The worker never sees a reference, a comparison or a
  verdict, so nothing it does (forging messages, monkeypatching checks or ``torch.allclose``) can pass it.
  A message that is malformed, too large or out of turn fails that exercise; a worker that dies or runs
  past ``--timeout`` fails that exercise; the run goes on.
* After each exercise every process below the supervisor is stopped and killed (the supervisor is their
  subreaper, so ``os.setsid()`` and double forks stay in its tree); processes marked with the run's token
  are hunted down if the supervisor itself is killed.
* Random cases differ per file (its path as given) and per ``--seed`` (default: a new seed each run, printed
  with the results), so answers cannot be copied from a neighbour as numbers.

Not prevented (there is no kernel-level sandbox): the worker runs as your user, so it can read and write your
files, use the network and look for the library's source to copy. For high stakes grade inside a container
(notebooks/exercises/README.md gives the command).

Exit status: 0 every graded exercise of every file passed; 1 some failed (or were not found, or timed out);
2 usage error (no such file, a file that is neither .py nor .ipynb, no or an unknown assignment, not Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .catalog import ASSIGNMENTS, EXERCISES
from .harness import run_check
from .notebooks import grading_code, notebook_exercises
from .protocol import ProtocolError, RemoteError, decode, encode, read_message, write_message

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_MEMORY_MB",
    "ExerciseResult",
    "FileReport",
    "RemoteFunction",
    "grade_paths",
    "format_report",
    "exit_status",
    "resolve_exercises",
    "add_arguments",
    "run",
]

#: Seconds allowed for loading a submission and for each exercise's check.
DEFAULT_TIMEOUT = 60.0
#: Megabytes of address space a worker may add to what the library itself takes.
DEFAULT_MEMORY_MB = 4096
#: Seconds allowed for the sandbox supervisor to start (import torch and mrcnn_edu).
STARTUP_TIMEOUT = 180.0
#: Largest submission graded (bytes).
MAX_SUBMISSION_BYTES = 20 << 20
#: Characters of the code's printed output kept (the rest is only counted).
OUTPUT_KEPT = 2000
#: Longest message kept per exercise.
MESSAGE_KEPT = 2000
#: Environment variable marking every process of one grading run (its value: the run's token).
RUN_MARK = "MRCNN_EDU_GRADING_RUN"
_TABLE_MESSAGE = 88  # characters of a message shown in the table


@dataclass(frozen=True)
class ExerciseResult:
    """One exercise of one file. status: "pass", "fail", "not found", "timeout" or "error" (worker died or
    sent a malformed message)."""

    exercise: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class FileReport:
    """The grading of one file: a result per graded exercise, notes (load errors...), captured output."""

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


def _clip(text, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 15] + f"... [{len(text) - limit + 15} more]"


class _WorkerLost(BaseException):
    """The worker cannot finish this exercise (timed out, died, broke the protocol). A BaseException, so the
    check's own ``except Exception`` (the student's errors) lets it through."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------------------------------------
# submissions: read once, before any student code runs


@dataclass
class _Submission:
    path: Path
    kind: str
    data: bytes = b""
    chunks: list[tuple[str, str]] = field(default_factory=list)
    listed: list[str] | None = None  # a notebook's own list of exercises (its metadata), for a note
    problem: str | None = None  # why it cannot be graded at all


def _read_submission(path: Path) -> _Submission:
    kind = "notebook" if path.suffix == ".ipynb" else "module"
    sub = _Submission(path, kind)
    try:
        size = path.stat().st_size
        if size > MAX_SUBMISSION_BYTES:
            sub.problem = f"the file has {size:,} bytes, more than the {MAX_SUBMISSION_BYTES:,} graded"
            return sub
        sub.data = path.read_bytes()
    except OSError as err:
        sub.problem = f"the file cannot be read ({err.strerror or err})"
        return sub
    if kind == "module":
        try:
            sub.chunks = [(path.name, sub.data.decode("utf-8"))]
        except UnicodeDecodeError:
            sub.problem = "the module is not UTF-8 text"
        return sub
    try:
        nb = json.loads(sub.data.decode("utf-8"))
        if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
        sub.chunks = [(f"{path.name} cell {i}", source) for i, source in grading_code(nb)]
        sub.listed = notebook_exercises(nb)
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as err:
        sub.problem = f"the notebook cannot be read ({_clip(err, 200)})"
    return sub


# --------------------------------------------------------------------------------------------------------
# the sandbox supervisor and its workers


def _worker_env(token: str) -> dict[str, str]:
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),  # each worker gets its own folder as HOME
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        RUN_MARK: token,
    }


def _marked_processes(token: str) -> list[int]:
    """Processes whose environment carries this run's mark (they outlived their supervisor)."""
    mark = f"{RUN_MARK}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _kill_marked(token: str) -> int:
    """Stop and kill every process marked with ``token`` until none is left; returns how many."""
    killed: set[int] = set()
    for _ in range(100):
        pids = [p for p in _marked_processes(token) if p not in killed or _alive(p)]
        if not pids:
            break
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        killed.update(pids)
        time.sleep(0.02)
    return len(killed)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


class _SandboxLost(Exception):
    pass


class _Worker:
    """One forked worker: its message socket and the thread that counts what it prints."""

    def __init__(self, channel: socket.socket, output_fd: int, output: dict, timeout: float):
        self.channel, self.timeout = channel, timeout
        self._thread = threading.Thread(target=self._drain, args=(output_fd, output), daemon=True)
        self._thread.start()

    @staticmethod
    def _drain(fd: int, output: dict) -> None:
        with open(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                text = chunk.decode("utf-8", errors="replace")
                output["chars"] += len(text)
                room = OUTPUT_KEPT - len(output["head"])
                if room > 0:
                    output["head"] += text[:room]

    def exchange(self, message: dict, deadline: float, what: str) -> dict:
        """Send ``message`` (None: send nothing) and return the reply; raises :class:`_WorkerLost`."""
        try:
            if message is not None:
                write_message(self.channel, message)
            reply = read_message(self.channel, deadline)
        except TimeoutError:
            raise _WorkerLost("timeout", f"timed out after {self.timeout:g} s {what}") from None
        except ProtocolError as err:
            raise _WorkerLost("error", f"the worker sent a malformed message {what} ({err})") from None
        except OSError:
            reply = None
        if reply is None:
            raise _WorkerLost("error", f"the worker process died {what}")
        return reply

    def close(self) -> None:
        self.channel.close()
        self._thread.join(timeout=5)


class _Sandbox:
    """The supervisor process (:mod:`.worker`) of one grading run, restarted if a submission kills it."""

    def __init__(self):
        self.token = secrets.token_hex(16)
        self._proc = None
        self.ctl = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mrcnn_edu.exercises.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=_worker_env(self.token),
            cwd=tempfile.gettempdir(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        theirs.close()
        self.ctl = ours
        try:
            self._receive("ready", STARTUP_TIMEOUT)
        except _SandboxLost:
            self._proc.kill()
            err = self._proc.communicate(timeout=30)[1].decode("utf-8", "replace")
            self.close()
            raise RuntimeError(f"the grading sandbox did not start: {err.strip()[-2000:]}") from None
        self._proc.stderr.close()  # from now on it prints nothing

    def _receive(self, op: str, timeout: float) -> dict:
        self.ctl.settimeout(timeout)
        try:
            data = self.ctl.recv(1 << 16)
            reply = json.loads(data) if data else None
        except (OSError, ValueError):
            reply = None
        if not (isinstance(reply, dict) and reply.get("op") == op):
            raise _SandboxLost(f"the sandbox supervisor did not answer {op!r}")
        return reply

    def start(self, folder: Path, exercise: str, memory_mb: int, timeout: float, output: dict) -> _Worker:
        """Fork a worker for ``exercise`` in ``folder``."""
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_fd, write_fd = os.pipe()
        command = {
            "op": "fork",
            "exercise": exercise,
            "folder": str(folder),
            "memory_mb": memory_mb,
            "cpu_seconds": int(2 * timeout) + 10,  # loading and the check, each up to timeout
        }
        try:
            socket.send_fds(self.ctl, [json.dumps(command).encode()], [theirs.fileno(), write_fd])
            self._receive("forked", 60)
        except (OSError, _SandboxLost):
            ours.close()
            os.close(read_fd)
            self._lost()
            raise _WorkerLost(
                "error", "the grading sandbox stopped answering; this exercise was not run"
            ) from None
        finally:
            theirs.close()
            os.close(write_fd)
        return _Worker(ours, read_fd, output, timeout)

    def end(self) -> tuple[str, int]:
        """Kill everything the last worker left; returns (how the worker ended, processes it left)."""
        try:
            self.ctl.send(json.dumps({"op": "end"}).encode())
            reply = self._receive("ended", 120)
            return str(reply.get("status")), int(reply.get("others", 0))
        except (OSError, _SandboxLost, TypeError, ValueError):
            return "ended with its supervisor", self._lost()

    def _lost(self) -> int:
        """The supervisor died (or hung): kill it and everything marked with this run's token."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
        self._proc = None
        return _kill_marked(self.token)

    def close(self) -> int:
        """End the supervisor and everything below it; returns stray processes killed by their mark."""
        if self.ctl is not None:
            try:
                self.ctl.send(json.dumps({"op": "quit"}).encode())
            except OSError:
                pass
            self.ctl.close()
            self.ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        strays = self._lost()
        return strays


# --------------------------------------------------------------------------------------------------------
# the student's function, as the checks in this process see it


class RemoteFunction:
    """The student's function for one exercise, running in a worker: each call sends the inputs there and
    returns what came back. Raises :class:`RemoteError` for the student's exceptions (NotImplementedError as
    itself) and :class:`_WorkerLost` when the worker times out, dies or breaks the protocol."""

    def __init__(self, worker: _Worker, name: str, deadline: float):
        self._worker, self._deadline, self._calls = worker, deadline, 0
        self.__name__ = name

    def call_returning_inputs(self, args: tuple, kwargs: dict):
        self._calls += 1
        request = {
            "kind": "call",
            "id": self._calls,
            "args": encode(list(args)),
            "kwargs": encode(dict(kwargs)),
        }
        reply = self._worker.exchange(request, self._deadline, "during the check")
        try:
            return _reply_values(reply, self._calls, len(args), set(kwargs))
        except ProtocolError as err:
            raise _WorkerLost(
                "error", f"the worker sent a malformed message during the check ({err})"
            ) from None

    def __call__(self, *args, **kwargs):
        return self.call_returning_inputs(args, kwargs)[0]


def _reply_values(reply: dict, call_id: int, num_args: int, keys: set):
    if reply.get("id") != call_id or type(reply.get("id")) is not int:
        raise ProtocolError("a reply that answers no pending call")
    kind = reply.get("kind")
    if kind == "raise" and set(reply) == {"kind", "id", "type", "message", "frames"}:
        type_name, message, frames = (decode(reply[k]) for k in ("type", "message", "frames"))
        ok_frames = isinstance(frames, list) and all(
            isinstance(f, list) and len(f) == 4 and [type(v) for v in f] == [str, int, str, str]
            for f in frames
        )
        if not (isinstance(type_name, str) and isinstance(message, str) and ok_frames):
            raise ProtocolError("a malformed exception report")
        if type_name == "NotImplementedError":
            raise NotImplementedError(message)
        raise RemoteError(type_name[:200], _clip(message, MESSAGE_KEPT), [tuple(f) for f in frames[-20:]])
    if kind == "return" and set(reply) == {"kind", "id", "value", "args", "kwargs"}:
        value, args, kwargs = (decode(reply[k]) for k in ("value", "args", "kwargs"))
        if not (
            isinstance(args, list)
            and len(args) == num_args
            and isinstance(kwargs, dict)
            and set(kwargs) == keys
        ):
            raise ProtocolError("a reply whose inputs do not match the call")
        return value, tuple(args), kwargs
    raise ProtocolError(f"an unexpected message of kind {_clip(kind, 40)!r}")


def _loaded(reply: dict) -> tuple[bool, list[str]]:
    errors = reply.get("errors")
    if not (
        set(reply) == {"kind", "found", "errors"}
        and reply.get("kind") == "loaded"
        and isinstance(reply.get("found"), bool)
        and isinstance(errors, list)
        and len(errors) <= 1000
        and all(isinstance(e, str) for e in errors)
    ):
        raise ProtocolError("a malformed 'loaded' message")
    return reply["found"], [_clip(e, MESSAGE_KEPT) for e in errors[:20]]


# --------------------------------------------------------------------------------------------------------
# grading


def _grade_exercise(sandbox, sub, name, timeout, memory_mb, seed, output, progress) -> ExerciseResult:
    folder = Path(tempfile.mkdtemp(prefix="mrcnn-edu-grade-"))
    worker = None
    try:
        copy = folder / sub.path.name
        copy.write_bytes(sub.data)
        worker = sandbox.start(folder, name, memory_mb, timeout, output)
        load = {"kind": "load", "path": str(copy), "chunks": sub.chunks, "module": sub.kind == "module"}
        reply = worker.exchange(load, time.monotonic() + timeout, "while loading the file")
        try:
            found, errors = _loaded(reply)
        except ProtocolError as err:
            raise _WorkerLost("error", f"the worker sent a malformed message while loading ({err})") from None
        if progress.load_errors is None:
            progress.load_errors = errors
        if sub.kind == "module" and errors:
            return ExerciseResult(name, "fail", errors[0])
        if not found:
            return ExerciseResult(name, "not found", f"no function {name}() defined")
        result = run_check(name, RemoteFunction(worker, name, time.monotonic() + timeout), seed)
        return ExerciseResult(name, "pass" if result.passed else "fail", _clip(result.message, MESSAGE_KEPT))
    except _WorkerLost as lost:
        return ExerciseResult(name, lost.status, lost.message)
    finally:
        if worker is not None:
            how, others = sandbox.end()
            worker.close()
            progress.strays += others
            progress.ended = how
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _Progress:
    load_errors: list[str] | None = None
    strays: int = 0
    ended: str = ""


def _grade_submission(sandbox, sub, names, timeout, memory_mb, seed) -> FileReport:
    report = FileReport(str(sub.path), sub.kind)
    if sub.problem is not None:
        report.results = [ExerciseResult(n, "fail", sub.problem) for n in names]
        return report
    if sub.listed is not None and sorted(sub.listed) != sorted(names):
        report.notes.append(
            f"the notebook's metadata lists {_clip(sub.listed, 200)}; it is graded on the assignment's "
            f"{names}"
        )
    output = {"chars": 0, "head": ""}
    progress = _Progress()
    for name in names:
        result = _grade_exercise(
            sandbox, sub, name, timeout, memory_mb, f"{seed}/{sub.path}", output, progress
        )
        if result.status == "error" and "died" in result.message:
            result = ExerciseResult(name, "error", f"{result.message} ({progress.ended})")
        report.results.append(result)
    report.notes += progress.load_errors or []
    if progress.strays:
        report.notes.append(
            f"the code left {progress.strays} process(es) running after its checks; they were killed"
        )
    report.output_chars, report.output_head = output["chars"], output["head"]
    return report


def grade_paths(
    paths,
    exercises: list[str],
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    seed: str | None = None,
    done: list | None = None,
) -> list[FileReport]:
    """Grade each file on ``exercises`` (names of :data:`.catalog.EXERCISES`), in order.

    Every file is read before any student code runs. timeout: seconds for loading a file and for each
    exercise's check; memory_mb: address space a worker may add; seed: the random cases' seed (each file's
    cases also depend on its path as given: the student's id; None: a new random seed). done: a list that
    receives each report as soon as its file is graded (what is kept if the run is interrupted). Returns
    one :class:`FileReport` per path. Never raises because of a submission. Linux only (see the module
    docstring).
    """
    seed = secrets.token_hex(4) if seed is None else str(seed)
    submissions = [_read_submission(Path(p)) for p in paths]
    done = [] if done is None else done
    sandbox = _Sandbox()
    try:
        for sub in submissions:
            done.append(_grade_submission(sandbox, sub, list(exercises), timeout, memory_mb, seed))
        return list(done)
    finally:  # Ctrl-C included: every process a submission started ends here
        sandbox.close()


def exit_status(reports: list[FileReport]) -> int:
    """0 if every graded exercise of every file passed, else 1."""
    return 0 if all(r.passed == r.total for r in reports) else 1


def format_report(reports: list[FileReport], seed: str | None = None) -> str:
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
                           f"FAIL {r.exercise}, "):  # fmt: skip
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
    if seed is not None:
        lines.append(
            f"random cases: seed {seed} and each file's path (rerun with --seed {seed} to reproduce)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# command line


def resolve_exercises(assignment: str | None, only: str | None) -> list[str]:
    """The exercise names to grade from ``--assignment`` / ``--only``; ValueError (the message for the user)
    when neither is given or a name is unknown."""
    names: list[str] = []
    if assignment:
        for part in (p.strip() for p in assignment.split(",")):
            if part == "all":
                names += list(EXERCISES)
            elif part in ASSIGNMENTS:
                names += ASSIGNMENTS[part]
            elif part in EXERCISES:
                names.append(part)
            elif part:
                raise ValueError(
                    f"--assignment: unknown assignment {part!r} (known: all, {', '.join(ASSIGNMENTS)})"
                )
    if only:
        for part in (p.strip() for p in only.split(",")):
            if part and part not in EXERCISES:
                raise ValueError(f"--only: unknown exercise {part!r} (known: {', '.join(EXERCISES)})")
            if part:
                names.append(part)
    if not names:
        raise ValueError(
            "say what to grade: --assignment NAME (one of all, "
            + ", ".join(ASSIGNMENTS)
            + ") or --only NAMES"
        )
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mrcnn-edu grade``."""
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="student notebooks (.ipynb) or modules (.py)"
    )
    parser.add_argument(
        "--assignment",
        default=None,
        metavar="NAME",
        help="what every file is graded on: an exercise notebook's name (e.g. 04_nms), an exercise, or all",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="grade these exercises (with or without --assignment)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds allowed for loading a file and for each exercise (default %(default)g)",
    )
    parser.add_argument(
        "--memory",
        type=int,
        default=DEFAULT_MEMORY_MB,
        metavar="MB",
        help="memory (address space) a worker may use beyond the library's (default %(default)d)",
    )
    parser.add_argument(
        "--seed",
        default=None,
        help="seed of the random cases (they also depend on each file's path); default: a new one each run",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Grade ``args.paths``; print the table (or JSON). Exit status 0 all passed, 1 some failed, 2 usage
    error."""
    problems = []
    if not sys.platform.startswith("linux"):
        problems.append(
            "grading needs Linux (its sandbox uses /proc and PR_SET_CHILD_SUBREAPER); on macOS or Windows "
            "run "
            "it in the container given in notebooks/exercises/README.md"
        )
    for p in args.paths:
        if not p.is_file():
            problems.append(f"{p}: no such file")
        elif p.suffix not in (".py", ".ipynb"):
            problems.append(f"{p}: not a .py module or .ipynb notebook")
    try:
        names = resolve_exercises(args.assignment, args.only)
    except ValueError as err:
        problems.append(str(err))
    if not args.timeout > 0:
        problems.append(f"--timeout must be > 0, got {args.timeout}")
    if not args.memory >= 64:
        problems.append(f"--memory must be at least 64 (MB), got {args.memory}")
    if problems:
        for line in problems:
            print(f"grade: {line}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else secrets.token_hex(4)
    reports: list[FileReport] = []
    try:
        grade_paths(args.paths, names, args.timeout, args.memory, seed, done=reports)
    except KeyboardInterrupt:  # what was graded is kept: the table of the finished files
        print(format_report(reports, seed) if reports else "", file=sys.stderr)
        print(f"grade: interrupted after {len(reports)} of {len(args.paths)} file(s)", file=sys.stderr)
        return 130
    status = exit_status(reports)
    if args.json:
        passed, total = sum(r.passed for r in reports), sum(r.total for r in reports)
        document = {
            "files": [r.to_dict() for r in reports],
            "passed": passed,
            "total": total,
            "exit_status": status,
            "seed": seed,
        }
        print(json.dumps(document, indent=2))
    else:
        print(format_report(reports, seed))
    return status
