"""Starts processes that try to outlive grading: a new session (Popen), and a double fork whose grandchild
calls setsid and removes the grading mark from its environment. Each sleeps with 'mrcnn-edu-attack-sleeper'
in its command line, so that the test can look for survivors."""

import os
import subprocess
import sys

import torch

SLEEP = ["-c", "import time; time.sleep(600)", "mrcnn-edu-attack-sleeper"]


def _escape():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MRCNN_EDU")}
    subprocess.Popen([sys.executable, *SLEEP], start_new_session=True, env=clean)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve(sys.executable, [sys.executable, *SLEEP], clean)
        os._exit(0)


_escape()


_CALLED = []


def box_iou(boxes1, boxes2):
    if not _CALLED:  # once more while the check runs
        _CALLED.append(_escape())
    return torch.zeros(len(boxes1), len(boxes2))


def nms(boxes, scores, iou_threshold):
    return torch.arange(len(scores))
