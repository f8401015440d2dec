"""The grading sandbox's side: a supervisor process that forks one worker per (submission, exercise).

Started by the grader (:mod:`.grading`) as ``python -m mrcnn_edu.exercises.worker FD``, ``FD`` being its
end of a control socket. The supervisor imports torch and the library once, makes itself the *subreaper* of
everything it starts (``PR_SET_CHILD_SUBREAPER``: a process whose parent dies is re-parented to it, not to
init, so ``os.setsid()`` and double forks cannot leave its tree), and then serves the grader's commands:

``fork``
    Fork a worker for one exercise of one submission. The worker starts its own session, keeps only the two
    descriptors the grader sent (its message socket; the pipe that collects what it prints), sets its limits
    (address space, CPU seconds, file size, processes), moves into the fresh folder that holds the copy of the
    submission, makes the library's own implementation of the graded stage unusable
    (:func:`.forbid.forbid`), refuses imports of other detection libraries, runs the submission's code, and
    then answers ``call`` messages: it calls the student's function on the inputs it is sent and sends back
    the result and the inputs as the function left them. It never sees a reference output or a comparison.
``end``
    Stop (SIGSTOP) and kill (SIGKILL) every process below the supervisor, repeatedly until none is left, reap
    them, and report how the worker ended.
``quit`` (or the grader's end of the socket closing)
    The same, then exit.

Nothing in this module imports the checks (:mod:`.harness`, :mod:`.registry`, :mod:`.swap`): what a worker
could tamper with holds no verdict.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.abc
import json
import linecache
import os
import resource
import signal
import socket
import sys
import time
import traceback
import types

from .forbid import forbid
from .protocol import MAX_TEXT, decode, encode, read_message, write_message

#: Top-level packages a graded submission cannot import (other libraries' implementations of the stages).
BLOCKED_IMPORTS = (
    "torchvision", "detectron2", "mmcv", "mmdet", "tensorflow", "keras", "onnxruntime", "jax", "cv2",
)  # fmt: skip
#: Processes (tasks) a worker may add to its user's count (RLIMIT_NPROC): a fork bomb stops there.
EXTRA_PROCESSES = 64
#: Largest file a worker may write (RLIMIT_FSIZE), bytes.
MAX_FILE_BYTES = 64 << 20
_PR_SET_CHILD_SUBREAPER = 36


class _ImportBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED_IMPORTS:
            raise ImportError(
                f"{fullname} cannot be imported while grading: graded exercises use torch, numpy, math and "
                "mrcnn_edu only"
            )
        return None


def _block_imports() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED_IMPORTS:
            del sys.modules[name]
    sys.meta_path.insert(0, _ImportBlocker())


# --------------------------------------------------------------------------------------------------------
# processes


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
        if len(fields) >= 2:
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int) -> list[int]:
    """The living (not zombie) processes below ``root``."""
    children: dict[int, list[int]] = {}
    table = _processes()
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if table[child][1] != "Z":
                found.append(child)
    return found


def _signal_all(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status


def end_all(statuses: dict[int, int]) -> set[int]:
    """Stop, then kill, every process below this one until none is left; reap them into ``statuses``.

    Stopping first freezes a process tree that keeps forking; the loop then kills what it froze. Returns the
    pids killed.
    """
    killed: set[int] = set()
    for _ in range(200):
        _reap(statuses)
        pids = descendants(os.getpid())
        if not pids:
            break
        seen: set[int] = set()
        while set(pids) - seen:  # freeze, and freeze again what was forked meanwhile
            _signal_all(set(pids) - seen, signal.SIGSTOP)
            seen |= set(pids)
            pids = descendants(os.getpid())
        _signal_all(seen, signal.SIGKILL)
        killed |= seen
        time.sleep(0.01)
    return killed


def _user_tasks() -> int:
    """Threads and processes of this user (what RLIMIT_NPROC counts)."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return count


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def _set_limits(memory_mb: int, cpu_seconds: int) -> None:
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    _limit(resource.RLIMIT_AS, vm + memory_mb * (1 << 20))
    _limit(resource.RLIMIT_CPU, cpu_seconds)
    _limit(resource.RLIMIT_FSIZE, MAX_FILE_BYTES)
    _limit(resource.RLIMIT_CORE, 0)
    if os.getuid() != 0:  # root ignores RLIMIT_NPROC; a container is its bound there
        _limit(resource.RLIMIT_NPROC, _user_tasks() + EXTRA_PROCESSES)


# --------------------------------------------------------------------------------------------------------
# the worker: runs the submission and calls the student's function


def _student_frames(err: BaseException) -> list[list]:
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:  # the worker's own frames
        tb = tb.tb_next
    return [[f.filename, f.lineno or 0, f.name, f.line or ""] for f in traceback.extract_tb(tb)][-20:]


def _describe(err: BaseException) -> str:
    frames = _student_frames(err)
    where = f" ({frames[-1][0]}, line {frames[-1][1]})" if frames else ""
    return f"{type(err).__name__}: {_safe_str(err)}{where}"


def _safe_str(err: BaseException) -> str:
    try:
        text = str(err)
    except BaseException:  # noqa: BLE001 - an exception whose __str__ raises
        text = "<message unavailable>"
    return text[:MAX_TEXT]


def _load(chunks: list, stop_at_first_error: bool, namespace: dict) -> list[str]:
    errors = []
    for label, source in chunks:
        linecache.cache[label] = (len(source), None, source.splitlines(True), label)  # tracebacks show lines
        try:
            exec(compile(source, label, "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - whatever the student's code raises is reported
            errors.append(f"{label} raised {_describe(err)}")
            if stop_at_first_error:
                break
    return errors


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the student may have replaced or closed them
            pass


def serve(channel: socket.socket, stage: str) -> int:
    """Run one exercise's worker on ``channel`` (after the sandbox is set up); returns the exit status."""
    forbid(stage, list(sys.modules.values()))  # the originals are dropped with the returned list
    _block_imports()
    load = read_message(channel)
    if not load or load.get("kind") != "load":
        return 3
    module = types.ModuleType("submission")
    module.__file__ = os.path.abspath(load["path"])
    sys.modules["submission"] = module
    errors = _load(load["chunks"], load["module"], module.__dict__)
    fn = module.__dict__.get(stage)
    found = callable(fn) and getattr(fn, "__module__", None) == "submission"
    _flush()
    write_message(channel, {"kind": "loaded", "found": bool(found), "errors": errors})
    while True:
        request = read_message(channel)
        if request is None or request.get("kind") != "call":
            return 0
        args, kwargs = decode(request["args"]), decode(request["kwargs"])
        try:
            out = fn(*args, **kwargs)
            reply = {"kind": "return", "value": encode(out), "args": encode(args), "kwargs": encode(kwargs)}
        except BaseException as err:  # noqa: BLE001 - the student's exception is the answer
            reply = {
                "kind": "raise",
                "type": type(err).__name__,
                "message": _safe_str(err),
                "frames": _student_frames(err),
            }
        _flush()  # what it printed reaches the grader before the worker is killed
        write_message(channel, {**reply, "id": request["id"]})


def _worker(ctl: socket.socket, fds: list[int], command: dict) -> None:
    """The forked child: sandbox itself, serve, exit (never returns)."""
    status = 70
    try:
        os.setsid()
        ctl.close()
        channel_fd, output_fd = fds
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        keep = sorted({0, 1, 2, channel_fd})
        for low, high in zip(keep, keep[1:] + [os.sysconf("SC_OPEN_MAX")], strict=True):
            os.closerange(low + 1, high)
        for name in ("SIGINT", "SIGTERM", "SIGPIPE"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        folder = command["folder"]
        os.chdir(folder)
        os.environ.update(HOME=folder, TMPDIR=folder, MPLCONFIGDIR=folder)
        _set_limits(int(command["memory_mb"]), int(command["cpu_seconds"]))
        status = serve(socket.socket(fileno=channel_fd), command["exercise"])
    except BaseException:  # noqa: BLE001 - the worker reports through its exit status and its output
        traceback.print_exc()
    finally:
        _flush()
        os._exit(status)


def _describe_status(status: int | None) -> str:
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def supervise(ctl: socket.socket) -> int:
    """The supervisor's loop (see the module docstring)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    statuses: dict[int, int] = {}
    worker = None
    ctl.send(json.dumps({"op": "ready", "pid": os.getpid()}).encode())
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 4)
        except OSError:
            break
        if not data:  # the grader is gone
            break
        command = json.loads(data)
        op = command.get("op")
        if op == "fork":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _worker(ctl, fds, command)
            for fd in fds:
                os.close(fd)
            worker = pid
            ctl.send(json.dumps({"op": "forked", "pid": pid}).encode())
        elif op == "end":
            others = end_all(statuses) - {worker}  # what the worker started and left running
            status = _describe_status(statuses.pop(worker, None))
            reply = {"op": "ended", "status": status, "others": len(others)}
            statuses.clear()
            worker = None
            ctl.send(json.dumps(reply).encode())
        else:
            break
    end_all(statuses)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ctl = socket.socket(fileno=int(argv[0]))
    # Imported once here, so that each fork starts with them (notebooks import them in their first cell).
    # Not the exercises' checks: the saved references there must not exist in a worker.
    import matplotlib.pyplot  # noqa: F401
    import torch

    import mrcnn_edu.notebook  # noqa: F401
    import mrcnn_edu.ops  # noqa: F401
    import mrcnn_edu.visualize  # noqa: F401

    torch.set_num_threads(1)  # no thread pool exists when the workers fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader ends it (Ctrl-C reaches the grader only)
    return supervise(ctl)


if __name__ == "__main__":
    sys.exit(main())
