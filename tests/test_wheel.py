"""The built wheel carries the course: installed into a fresh virtual environment, used from another folder.

The fresh environment gets only the wheel (``--no-deps``); its dependencies (torch, ...) are read from this
test environment through a ``.pth`` file, so the test installs nothing from a package index. A ``.pth`` line
adds a folder to ``sys.path`` without processing the ``.pth`` files inside it, so this environment's
editable install of mrcnn_edu is not seen there: the package imported is the wheel's (checked).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run([*command, "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp / "dist").glob("mrcnn_edu-*.whl")
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(purelib, "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, env, work


def _run(env: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(env / "bin" / args[0]), *args[1:]], cwd=work, capture_output=True, text=True,
                          env=environ, timeout=600)  # fmt: skip


def test_wheel_holds_the_model_and_the_notebooks(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mrcnn_edu/weights/shapes.pt" in names
    assert "mrcnn_edu/_notebooks/00_quickstart.ipynb" in names
    assert any(n.startswith("mrcnn_edu/_notebooks/exercises/student/") for n in names)
    assert any(n.startswith("mrcnn_edu/_notebooks/exercises/instructor/") for n in names)


def test_installed_package_is_the_wheels_and_has_the_trained_model(installed):
    _, env, work = installed
    done = _run(env, work, "python", "-c",
                "import mrcnn_edu, mrcnn_edu.notebook as nb; m = nb.shapes_model(); "
                "print(mrcnn_edu.__file__); print(nb.course_source())")  # fmt: skip
    assert done.returncode == 0, done.stderr
    module, course = done.stdout.split()
    assert Path(module).is_relative_to(env) and Path(course).is_relative_to(env)


def test_notebooks_command_from_the_installed_package(installed):
    _, env, work = installed
    done = _run(env, work, "mrcnn-edu", "notebooks", "course")
    assert done.returncode == 0, done.stderr
    assert (work / "course" / "00_quickstart.ipynb").is_file()
    assert list((work / "course" / "exercises").glob("*.ipynb"))


def test_exercises_build_check_from_the_installed_package(installed):
    _, env, work = installed
    done = _run(env, work, "mrcnn-edu", "exercises", "build", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_short_demo_from_the_installed_package(installed):
    _, env, work = installed
    done = _run(env, work, "mrcnn-edu", "demo", "--out", "demo", "--train-images", "4", "--val-images", "2",
                "--set", "steps=2", "--set", "batch_size=2", "--set", "warmup_steps=1")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mask AP@0.5 =" in done.stdout
    assert list((work / "demo").glob("*/demo_predictions.png"))


def test_explore_command_from_the_installed_package(installed):
    wheel, env, work = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mrcnn_edu/web/explore.{ext}" for ext in ("html", "css", "js")} <= names
    done = _run(env, work, "mrcnn-edu", "explore", "shapes:3", "--out", "page.html")
    assert done.returncode == 0, done.stderr
    page = (work / "page.html").read_text()
    assert "held-out shapes image 3" in page and "/*@JS@*/" not in page
