"""Packaging beyond pyproject.toml: the course notebooks travel inside the wheel.

The notebooks live in the repository's ``notebooks/`` (where a clone's user finds them); a wheel copies them
to ``mrcnn_edu/_notebooks/``, so ``pip install mrcnn-edu`` brings the course and ``mrcnn-edu notebooks DIR``
can copy it out (``mrcnn_edu.notebook.course_source`` looks in both places).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

COURSE_FILES = ("*.ipynb", "exercises/README.md", "exercises/instructor/*.ipynb", "exercises/student/*.ipynb")


class BuildWithNotebooks(build_py):
    def run(self):
        super().run()
        source = Path(__file__).parent / "notebooks"
        target = Path(self.build_lib) / "mrcnn_edu" / "_notebooks"
        for pattern in COURSE_FILES:
            for path in source.glob(pattern):
                if ".ipynb_checkpoints" not in path.parts:
                    (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target / path.relative_to(source))


setup(cmdclass={"build_py": BuildWithNotebooks})
