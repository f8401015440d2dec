"""Shared fixtures."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def torchvision_reference():
    """torchvision, for its Python detection code as a reference (its ops on its own or onnxruntime kernels).

    Skips where torchvision's Python code or onnxruntime is not installed. Tests that compare against
    torchvision's *kernels* use :func:`mrcnn_edu._tv.torchvision_ops` instead (compiled kernels only).
    """
    from mrcnn_edu.references import import_torchvision

    try:
        torchvision, _ = import_torchvision()
    except ImportError as exc:
        pytest.skip(f"torchvision's Python code is not installed here: {exc}")
    return torchvision


# ------------------------------------------------------------------------------------------ a real browser
def _browser_settings():
    """Debian's Chromium and its flags, as scripts/widget_screenshots.py (the one place they are written)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "widget_screenshots.py"
    spec = importlib.util.spec_from_file_location("widget_screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHROMIUM, module.CHROMIUM_ARGS


CHROMIUM, CHROMIUM_ARGS = _browser_settings()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright; skips, saying which is missing, where one of them is."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; never `playwright install`)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does, as root)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    """``open_page(url, ready=...)`` -> ``(page, problems)``: the page, loaded (with ``ready``, a selector,
    in it), and a list that collects its console errors, uncaught exceptions, failed requests and every
    request that leaves the disk (anything but file: and data: URLs): what would break for a student offline.
    """
    contexts = []

    def open_(url: str, ready: str | None = "body[data-ready=true]", width: int = 1300):
        context = browser.new_context(viewport={"width": width, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        problems: list[str] = []

        def note(text: str) -> None:  # with the page that was open when it happened
            problems.append(f"{page.url.rsplit('/', 1)[-1]}: {text}")

        page.on("console", lambda m: m.type == "error" and note(f"console error: {m.text}"))
        page.on("pageerror", lambda e: note(f"exception: {e}"))
        page.on("requestfailed", lambda r: note(f"failed request: {r.url[:200]}"))
        page.on("request", lambda r: r.url.startswith(("file:", "data:", "blob:"))
                or note(f"network request: {r.url[:200]}"))  # fmt: skip
        page.goto(url, wait_until="load")
        if ready:
            page.wait_for_selector(ready, state="attached", timeout=30_000)
        return page, problems

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where browser tests keep their screenshots: ``$MRCNN_EDU_SCREENSHOTS``, else pytest's temporary folder
    (kept for the last runs; each test prints the path)."""
    folder = os.environ.get("MRCNN_EDU_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
