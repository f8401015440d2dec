"""The course book (book/build.py, ``make book``) and the Colab cell of the notebooks.

The Colab cell is tested by running it, with and without a Colab kernel. The book is built once here on a
cheap subset: every page is there (all stage notebooks, the exercises, the orientation, the API reference,
the explorer), but only notebook 03 is executed (the others are published without outputs), since
tests/test_notebooks.py already executes every notebook; ``make book`` executes them all. Then Chromium
(Playwright) opens every page: no console error, no request off the disk, every image and internal link
resolves, widget figures show their static fallback, MathJax typesets offline, the launch buttons point at
the repository, and the explorer opens from the book. Skipped, saying why, without the book's packages
(``pip install -e .[book]``) or without Chromium.
"""

from __future__ import annotations

import html.parser
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ["03_anchors"]
BOOK_PACKAGES = ("sphinx", "myst_nb", "sphinx_book_theme", "sphinx-mathjax-offline")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"book_{name}", ROOT / "book" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab = _load("colab")


# ------------------------------------------------------------------------------------- the Colab cell
def _run_cell(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    exec(compile(colab.cell_source(colab.repository_url()), "colab-cell", "exec"), {})
    return calls


def test_the_colab_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert _run_cell(monkeypatch) == []


def test_the_colab_cell_installs_the_package_in_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    calls = _run_cell(monkeypatch)
    url = colab.repository_url()
    pip = [sys.executable, "-m", "pip", "install", "-q", f"mrcnn-edu @ git+{url}"]
    assert calls == [((pip,), {"check": True})]
    assert url.startswith("https://github.com/")


def test_every_notebook_opens_with_the_colab_cell():
    source = colab.cell_source(colab.repository_url())
    paths = sorted(ROOT.glob("notebooks/**/*.ipynb"))
    assert len(paths) >= 15 + 2 * 16
    for path in paths:
        cells = json.loads(path.read_text())["cells"]
        first = next(c for c in cells if c["cell_type"] == "code")
        assert colab.COLAB_TAG in first["metadata"].get("tags", []), path
        assert "".join(first["source"]) == source, path
        assert sum(colab.COLAB_TAG in c.get("metadata", {}).get("tags", []) for c in cells) == 1, path
    assert colab.main(["--check"]) == 0


def test_putting_the_cell_twice_changes_nothing_and_replaces_a_stale_one():
    nb = {"nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "markdown", "id": "t", "metadata": {}, "source": ["# Title"]},
        {"cell_type": "code", "id": "c", "metadata": {}, "outputs": [], "execution_count": None,
         "source": []},
    ]}  # fmt: skip
    assert colab.put_cell(nb, "old") and not colab.put_cell(nb, "old")
    assert [c.get("id") for c in nb["cells"]] == ["t", colab.COLAB_TAG, "c"]
    assert colab.put_cell(nb, "new") and "".join(nb["cells"][1]["source"]) == "new" and len(nb["cells"]) == 3


# ------------------------------------------------------------------------------------- the site
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The subset book built here, or the site in ``$MRCNN_EDU_BOOK_SITE`` (e.g. ``make book``'s whole book:
    ``MRCNN_EDU_BOOK_SITE=book/_build/html pytest tests/test_book.py`` checks every page of it)."""
    if os.environ.get("MRCNN_EDU_BOOK_SITE"):
        return Path(os.environ["MRCNN_EDU_BOOK_SITE"]).resolve()
    missing = [p for p in BOOK_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"the book's packages are not installed: {', '.join(missing)} (pip install -e .[book])")
    work = tmp_path_factory.mktemp("book")
    out = work / "html"
    start = time.perf_counter()
    command = [sys.executable, str(ROOT / "book" / "build.py"), "--work", str(work), "--out", str(out),
               "--jobs", "1", "--execute", *EXECUTED]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"book (notebook {', '.join(EXECUTED)} executed): {time.perf_counter() - start:.0f} s")
    return out


def _pages(site: Path) -> list[Path]:
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(p for p in site.rglob("*.html") if not skip & set(p.relative_to(site).parts))


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name in ("id", "name") and value)


def _ids(path: Path, cache: dict) -> set[str]:
    if path not in cache:
        parser = _Ids()
        parser.feed(path.read_text(encoding="utf-8"))
        cache[path] = parser.ids
    return cache[path]


def test_the_site_has_every_page(site):
    pages = {p.relative_to(site).as_posix() for p in _pages(site)}
    stages = {f"notebooks/{p.stem}.html" for p in ROOT.glob("notebooks/[0-9]*.ipynb")}
    student = {f"notebooks/exercises/student/{p.stem}.html"
               for p in ROOT.glob("notebooks/exercises/student/*.ipynb")}  # fmt: skip
    assert len(stages) >= 14 and len(student) >= 16
    expected = {"index.html", "README.html", "explorer.html", "exercises.html", "api/index.html",
                "docs/conventions.html", "docs/benchmarks.html",
                "notebooks/exercises/README.html"}  # fmt: skip
    assert stages | student | expected <= pages
    assert (site / "explore.html").is_file()
    assert "architecture.png" in (site / "index.html").read_text()  # notebook 00's map of the stages
    build = _load("build")
    api = "".join((site / "api" / f"{part}.html").read_text() for part in build.API_PARTS)
    for module in build.public_modules():  # every public module is in the reference, in one of the parts
        assert f'id="module-mrcnn_edu.{module}"' in api, module
    assert not (site / "api" / "other.html").exists()


def test_every_page_loads_offline_with_its_images_and_links(site, open_page):
    id_cache: dict = {}
    broken, fallbacks = [], 0
    pages = _pages(site)
    page, problems = open_page(pages[0].as_uri(), ready=None)  # a first visit (nothing stored yet)
    for path in pages:
        name = path.relative_to(site).as_posix()
        page.goto(path.as_uri(), wait_until="load")
        if page.evaluate("() => Boolean(window.MathJax && window.MathJax.startup)"):
            page.evaluate("() => MathJax.startup.promise")
        loaded = "all => all.map(i => [i.src, i.complete && i.naturalWidth > 0])"
        images = page.eval_on_selector_all("img", loaded)
        broken += [f"{name}: image {src}" for src, ok in images if not ok]
        for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
            parts = urlsplit(href)
            if parts.scheme != "file":
                continue
            target = Path(unquote(parts.path))
            if not target.is_file():
                broken.append(f"{name}: link {href}")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _ids(target, id_cache):
                    broken.append(f"{name}: anchor {href}")
        # each widget's note stands under the figure its cell drew (the static fallback), which shows
        shown = page.eval_on_selector_all(".widget-fallback", """notes => notes.map(note => {
            const img = (note.closest('.cell_output') || note.closest('.cell')).querySelector('img');
            return Boolean(img && img.complete && img.naturalWidth > 0
                && (img.compareDocumentPosition(note) & Node.DOCUMENT_POSITION_FOLLOWING));
        })""")
        broken += [f"{name}: widget note without its figure" for ok in shown if not ok]
        fallbacks += len(shown)
    broken += problems
    assert broken == [], "\n".join(broken)
    assert fallbacks >= 1  # notebook 03 has widgets


def test_notebook_pages_render_math_and_launch_from_the_repository(site, open_page, screenshot_dir):
    url = _load("colab").repository_url()
    org_repo = url.removeprefix("https://github.com/")
    page, problems = open_page((site / "notebooks" / "03_anchors.html").as_uri(), ready=None)
    page.evaluate("() => MathJax.startup.promise")
    assert page.locator("mjx-container").count() > 10  # typeset by the MathJax copied next to the pages
    links = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    path = "notebooks/03_anchors.ipynb"
    assert f"https://colab.research.google.com/github/{org_repo}/blob/main/{path}" in links
    assert f"https://mybinder.org/v2/gh/{org_repo}/main?urlpath=lab/tree/{path}" in links
    assert page.locator("div.cell_output img").count() >= 3  # the executed notebook's figures
    shot = screenshot_dir / "book_page.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    student, _ = open_page((site / "notebooks/exercises/student/04_nms.html").as_uri(), ready=None)
    links = student.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    path = "notebooks/exercises/student/04_nms.ipynb"
    assert f"https://colab.research.google.com/github/{org_repo}/blob/main/{path}" in links
    assert problems == []


def test_the_explorer_opens_from_the_book(site, open_page):
    page, problems = open_page((site / "index.html").as_uri(), ready=None)
    page.click("article a[href='explorer.html']")
    page.wait_for_load_state("load")
    page.click("a.explorer-link")
    page.wait_for_selector("body[data-ready=true]", state="attached")
    assert page.url.endswith("/explore.html")
    assert page.get_attribute("#proposals-canvas", "data-drawn").startswith("after=")
    assert problems == []
