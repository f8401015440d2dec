"""Build the course book, a static site, offline: ``make book`` (or ``python book/build.py``).

    python book/build.py [--out DIR] [--work DIR] [--execute NAME ...] [--jobs N]

1. The stage notebooks (``notebooks/NN_*.ipynb``) are executed in full with the shipped shapes model, one
   kernel each with one torch thread, in a copy of their folder (nothing is written into the clone). An
   executed notebook is cached (``WORK/executed``) and reused while neither it nor the package changes.
   ``--execute`` names the ones to execute (the others are published without outputs): for quick builds.
2. In each executed notebook the output of a widget's controls (which need a kernel) becomes a note, under the
   figure :func:`mrcnn_edu.widgets.interactive_figure` drew with the controls' default values: that figure is
   its static fallback. The widget state saved in the notebook is dropped.
3. The sources are staged in ``WORK/src`` at their paths in the repository (so that the Colab and Binder
   buttons open the right file): the pages of ``book/``, the README (the orientation), ``docs/*.md`` and
   their figures, the exercise notebooks (student versions, not executed) and the teachers' guide, and the API
   reference written from :data:`API_PARTS` (every public module of the package is in it).
4. The explorer page (``mrcnn-edu explore``: the shipped model on held-out shapes image 0) goes to the site's
   root as ``explore.html``.
5. Sphinx builds the site into ``OUT`` (default ``book/_build/html``) with ``book/conf.py``: myst-nb reads the
   notebooks, sphinx-book-theme lays them out; all assets come from installed wheels (see conf.py).

Open ``OUT/index.html`` in a browser; the site needs no server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
NOTEBOOKS = ROOT / "notebooks"
#: The pages of the book written by hand (copied to the staged sources' root).
PAGES = ("index.md", "explorer.md", "exercises.md")
#: Files of the repository published as pages, at their own paths (README.md is the orientation).
REPO_PAGES = ("README.md", "docs/benchmarks.md", "docs/conventions.md", "notebooks/exercises/README.md")
#: The API reference: the package's modules, in the three parts it is made of (docs/conventions.md).
API_PARTS = {
    "detector": ("The detector: stages, layers, model", [
        "boxes", "anchors", "matching", "rpn_targets", "proposals", "nms", "roi_align", "detection_targets",
        "detection", "masks", "losses", "molding", "backbone", "fpn", "heads", "model", "config", "ops",
    ]),
    "running": ("Running it: data, training, evaluation, the command line", [
        "data", "data.shapes", "data.coco", "data.coco_names", "data.images", "data.photos",
        "data.transforms", "data.export", "data.convert", "train", "checkpoint", "evaluate", "pretrained",
        "demo", "cli", "references",
    ]),
    "teaching": ("Teaching it: notebooks, pictures, the explorer, exercises and grading", [
        "notebook", "visualize", "widgets", "explore", "exercises", "exercises.catalog", "exercises.checking",
        "exercises.check_boxes", "exercises.check_anchors", "exercises.check_nms", "exercises.check_targets",
        "exercises.check_roi_align", "exercises.check_pooling", "exercises.check_masks",
        "exercises.check_layers", "exercises.check_losses", "exercises.swap", "exercises.forbid",
        "exercises.notebooks", "exercises.registry", "exercises.grading", "exercises.harness",
        "exercises.worker", "exercises.protocol", "exercises.export",
    ]),
}  # fmt: skip
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def say(text: str) -> None:
    print(f"book: {text}", flush=True)


# ------------------------------------------------------------------------------------------ 1-2 notebooks
def package_digest() -> str:
    """A hash of all the package's files (code, weights, page files): what a notebook's outputs depend on."""
    digest = hashlib.sha256()
    package = ROOT / "mrcnn_edu"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def execute(source: Path, target: Path, run_dir: Path, timeout: int = 1200) -> float:
    """Execute the notebook ``source`` in ``run_dir`` (a copy of its folder) and write it to ``target``."""
    import nbclient
    import nbformat

    nb = nbformat.read(source, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(run_dir)}}).execute()  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return time.perf_counter() - start


def executed_notebooks(names: list[str], cache: Path, jobs: int) -> dict[str, Path]:
    """``{name: executed notebook}``, from the cache where its key (notebook + package) still matches."""
    key_of = {}
    package = package_digest()
    for name in names:
        key_of[name] = hashlib.sha256((NOTEBOOKS / name).read_bytes() + package.encode()).hexdigest()
    todo = [n for n in names if not _cached(cache, n, key_of[n])]
    say(f"{len(names) - len(todo)} executed notebooks reused from {cache}, {len(todo)} to execute")
    if todo:
        run_dir = cache / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(NOTEBOOKS, run_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "exercises"))
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        os.environ.update({k: os.environ.get(k, v) for k, v in env.items()})
        os.environ.pop("MPLBACKEND", None)  # the kernels' inline backend draws the figures
        failed = []
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(execute, run_dir / n, cache / n, run_dir): n for n in todo}
            for future in concurrent.futures.as_completed(futures):
                name = futures[future]
                try:
                    say(f"executed {name} in {future.result():.0f} s")
                except Exception as err:  # a cell's error (nbclient names the cell), a timeout, a dead kernel
                    failed.append(name)
                    say(f"{name} failed:\n{err}")
                    continue
                (cache / f"{name}.key").write_text(key_of[name])
        shutil.rmtree(run_dir, ignore_errors=True)
        if failed:  # a book never shows a notebook that does not run
            raise SystemExit(f"book: {len(failed)} notebooks failed to execute: {', '.join(sorted(failed))}")
    return {name: cache / name for name in names}


def _cached(cache: Path, name: str, key: str) -> bool:
    stamp = cache / f"{name}.key"
    return (cache / name).is_file() and stamp.is_file() and stamp.read_text() == key


def widget_note(output: dict, state: dict) -> dict:
    """The output that stands for a widget in the book, from the widget ``state`` the notebook saved: for a
    progress bar (tqdm's) the text it ended on; for controls, a note naming them under the figure that
    :func:`mrcnn_edu.widgets.interactive_figure` drew with their default values (their static fallback)."""
    model = state.get(output["data"][WIDGET_VIEW].get("model_id", ""), {})
    ids = [child.removeprefix("IPY_MODEL_") for child in model.get("state", {}).get("children", [])]
    children = [state.get(i, {}) for i in ids]
    kinds = [child.get("model_name", "") for child in children]
    states = [child.get("state", {}) for child in children]
    if any(kind.endswith("ProgressModel") for kind in kinds):
        texts = [s.get("value", "") for k, s in zip(kinds, states, strict=True) if k == "HTMLModel"]
        text = " ".join(t for t in texts if t)
        html = f'<pre class="widget-progress">{text}</pre>'  # the HTML widgets' text, already escaped
    else:
        names = [s["description"] for s in states if s.get("description")]
        controls = f" ({', '.join(names)})" if names else ""
        html = (f'<p class="widget-fallback"><em>Controls{controls} appear here when the notebook runs in '
                "Jupyter or Colab; the figure above is drawn with their defaults.</em></p>")  # fmt: skip
    return {"output_type": "display_data", "data": {"text/html": html}, "metadata": {}}


def for_the_book(nb: dict) -> dict:
    """``nb`` with its widget outputs replaced by notes and its saved widget state dropped."""
    nb = json.loads(json.dumps(nb))
    saved = nb.get("metadata", {}).pop("widgets", {})
    state = saved.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = [widget_note(o, state) if WIDGET_VIEW in o.get("data", {}) else o
                               for o in cell.get("outputs", [])]  # fmt: skip
    return nb


# ------------------------------------------------------------------------------------------ 3-4 sources
def public_modules() -> list[str]:
    """Every module of mrcnn_edu whose name has no leading underscore, relative to the package."""
    import mrcnn_edu

    found = []
    for info in pkgutil.walk_packages(mrcnn_edu.__path__, "mrcnn_edu."):
        relative = info.name.removeprefix("mrcnn_edu.")
        if not any(part.startswith("_") for part in relative.split(".")):
            found.append(relative)
    return found


def api_pages() -> dict[str, str]:
    """``{file name: MyST text}`` of the API reference: one page per part, one section per module."""
    listed = [m for _, modules in API_PARTS.values() for m in modules]
    missing = [m for m in public_modules() if m not in listed]
    parts = dict(API_PARTS)
    if missing:  # a new module is never left out: it gets a section until someone places it
        parts["other"] = ("Other modules", missing)
    pages = {}
    for name, (title, modules) in parts.items():
        text = [f"# {title}\n"]
        for module in modules:
            directive = f"```{{eval-rst}}\n.. automodule:: mrcnn_edu.{module}\n```\n"
            text.append(f"## `mrcnn_edu.{module}`\n\n{directive}")
        pages[f"api/{name}.md"] = "\n".join(text)
    toc = "\n".join(f"api/{name}" for name in parts)
    pages["api/index.md"] = (
        "# API reference\n\nGenerated from the docstrings: every tensor's shape is in them.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc.replace('api/', '')}\n```\n"
    )
    return pages


def stage(src: Path, executed: dict[str, Path], stage_names: list[str]) -> None:
    """Lay out the book's sources in ``src`` (emptied first), at their paths in the repository."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for page in PAGES:
        shutil.copy2(BOOK / page, src / page)
    for page in REPO_PAGES:
        (src / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / page, src / page)
    shutil.copytree(ROOT / "docs" / "figures", src / "docs" / "figures")
    architecture_figure(src / "docs" / "figures" / "architecture.png")
    for name in stage_names:
        source = executed.get(name, NOTEBOOKS / name)
        (src / "notebooks" / name).write_text(json.dumps(for_the_book(json.loads(source.read_text()))))
    student = src / "notebooks" / "exercises" / "student"
    shutil.copytree(NOTEBOOKS / "exercises" / "student", student,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))  # fmt: skip
    for name, text in api_pages().items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)


def architecture_figure(target: Path) -> None:
    """The map of the course on the front page: notebook 00's figure of the trace stages."""
    from mrcnn_edu.visualize import architecture_figure as figure

    figure().savefig(target, dpi=100)


def explorer_page(target: Path) -> None:
    """The explorer page of the book: the shipped model on held-out shapes image 0."""
    from mrcnn_edu.cli import main

    if main(["explore", "shapes:0", "--out", str(target)]) != 0:
        raise RuntimeError("mrcnn-edu explore failed (see above)")


# ------------------------------------------------------------------------------------------ 5 the site
def sphinx(src: Path, out: Path, doctrees: Path) -> None:
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(BOOK), "-d", str(doctrees), "-q",
               "--keep-going", str(src), str(out)]  # fmt: skip
    subprocess.run(command, check=True)


def site_size(out: Path) -> tuple[int, int]:
    files = [p for p in out.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def build(out: Path, work: Path, execute_names: list[str] | None = None, jobs: int = 1) -> Path:
    """Build the site into ``out``; ``execute_names``: the stage notebooks to execute (None: all)."""
    start = time.perf_counter()
    stage_names = sorted(p.name for p in NOTEBOOKS.glob("[0-9]*.ipynb"))
    chosen = stage_names if execute_names is None else [_notebook_name(n, stage_names) for n in execute_names]
    executed = executed_notebooks(chosen, work / "executed", jobs)
    src = work / "src"
    stage(src, executed, stage_names)
    explorer_page(src / "_extra" / "explore.html")
    shutil.rmtree(out, ignore_errors=True)
    sphinx(src, out, work / "doctrees")
    count, size = site_size(out)
    seconds = time.perf_counter() - start
    say(f"site: {out / 'index.html'} ({count} files, {size / 1e6:.1f} MB), built in {seconds:.0f} s")
    return out


def _notebook_name(name: str, stage_names: list[str]) -> str:
    """``03_anchors``, ``03_anchors.ipynb`` or ``03``: the stage notebook's file name."""
    matches = [s for s in stage_names if name in (s, s.removesuffix(".ipynb")) or s.startswith(f"{name}_")]
    if len(matches) != 1:
        raise SystemExit(f"book: --execute {name}: not one of the stage notebooks ({', '.join(stage_names)})")
    return matches[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BOOK / "_build" / "html", help="the site's folder")
    parser.add_argument("--work", type=Path, default=BOOK / "_build", help="staged sources, cache, doctrees")
    parser.add_argument("--execute", nargs="*", metavar="NAME", default=None,
                        help="execute only these stage notebooks, e.g. 00 03_anchors (default: all)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="notebooks executed at once (one kernel and one thread each)")  # fmt: skip
    args = parser.parse_args(argv)
    build(args.out.resolve(), args.work.resolve(), args.execute, max(1, args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
