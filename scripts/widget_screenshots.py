"""Drive the notebooks' widgets in JupyterLab in a real browser and save screenshots.

Starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token) over a temporary copy of the notebooks (so
that the run's outputs never land in the repository's files), opens each notebook in headless Chromium through
Playwright, runs all its cells, moves one of its widgets and saves a PNG of the widget's figure before and
after the move. Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` package
(``pip install playwright``; never ``playwright install``: the system browser is used).

    python scripts/widget_screenshots.py --out /tmp/screenshots          # notebooks 03, 05 and 07
    python scripts/widget_screenshots.py --out /tmp/shots 07_roi_align  # one of them

Each notebook's kernel imports the ``mrcnn_edu`` next to this script (PYTHONPATH) with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# notebook -> the widget to move: the description of each control, and the value to give it. A slider is set
# by typing into its readout, a dropdown by choosing the option with that label, a checkbox by clicking it.
MOVES = {
    "03_anchors": [("level", "P4"), ("scale (px)", "32"), ("every k-th cell", "2")],
    "05_proposals_and_nms": [("image", "two overlapping squares"), ("IoU thr.", "0.3")],
    "07_roi_align": [("ratio", "adaptive (-1)"), ("width", "7.5"), ("output", "3")],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(notebooks: list[str], timeout: float = 120.0):
    """A JupyterLab server over a temporary copy of ``notebooks`` (stems); yields ``(base_url, token)``."""
    with tempfile.TemporaryDirectory(prefix="mrcnn_edu_lab_") as tmp:
        work = Path(tmp) / "notebooks"
        work.mkdir()
        for stem in notebooks:
            shutil.copyfile(ROOT / "notebooks" / f"{stem}.ipynb", work / f"{stem}.ipynb")
        # every cell in the DOM (no virtual scrolling), so that the cells can be found and waited for
        settings = Path(tmp) / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True)
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        # no "get notified about news?" toast over the screenshots, no update check (nothing is fetched)
        notification = Path(tmp) / "settings" / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        port, token = _free_port(), secrets.token_hex(16)
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                   JUPYTER_CONFIG_DIR=str(Path(tmp) / "config"),
                   JUPYTERLAB_SETTINGS_DIR=str(Path(tmp) / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(Path(tmp) / "workspaces"))  # fmt: skip
        env.pop("MPLBACKEND", None)
        log = open(Path(tmp) / "lab.log", "w")  # noqa: SIM115 (closed below)
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                    break
                except OSError as error:
                    if server.poll() is not None or time.monotonic() > deadline:
                        tail = (Path(tmp) / "lab.log").read_text()[-2000:]
                        raise RuntimeError(f"jupyter lab did not start: {tail}") from error
                    time.sleep(0.5)
            yield base, token
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


def _figure_png(page, cell) -> bytes:
    """The bytes of the last figure (an <img>) that ``cell`` shows."""
    return cell.locator(".jp-OutputArea-output img").last.get_attribute("src").encode()


def _label(page, description: str):
    """The label of an ipywidgets control whose text is exactly ``description``."""
    return page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(description)}$"))


def _control(cell, description: str):
    """The widget whose label reads ``description`` inside ``cell``."""
    return cell.locator(".widget-inline-hbox", has=_label(cell.page, description)).first


def _move(page, cell, description: str, value: str) -> None:
    control = _control(cell, description)
    if control.locator("select").count():
        control.locator("select").select_option(label=value)
    elif control.locator("input[type=checkbox]").count():
        control.locator("input[type=checkbox]").click()
    else:  # a slider: type the value into its readout
        readout = control.locator(".widget-readout")
        readout.click()
        readout.press("Control+a")
        readout.type(value)
        readout.press("Enter")


def drive(stem: str, out_dir: Path, base: str, token: str, browser, timeout: float = 300.0) -> dict:
    """Open ``stem`` in JupyterLab, run all cells, move its widget (:data:`MOVES`), screenshot it before and
    after.

    Returns ``{"before", "after"}`` (PNG paths) and ``"changed"`` (whether the figure was redrawn) and
    ``"errors"`` (the text of any error output).
    """
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.set_default_timeout(timeout * 1000)
    page.goto(f"{base}/lab/tree/{stem}.ipynb?reset&token={token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()  # the kernel is ready
    page.locator(".jp-Notebook").click(position={"x": 5, "y": 5})  # focus on the notebook, not the file list
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    deadline = time.monotonic() + timeout
    started = None
    while True:  # every code cell has run: its prompt shows a number, not "[ ]:" or "[*]:"
        texts = prompts.all_inner_texts()
        if started is None or (time.monotonic() - started > 30 and all(t.strip() == "[ ]:" for t in texts)):
            # the menu bar's Run menu; again if the first click was lost while the page was still settling
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
            started = time.monotonic()
        elif texts and all(t.strip() not in ("[ ]:", "[*]:", "") for t in texts):
            break
        if time.monotonic() > deadline:
            out_dir.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out_dir / f"{stem}_timeout.png"), full_page=True)
            raise TimeoutError(f"{stem}: cells still running after {timeout} s (prompts {texts}); the page "
                               f"is in {out_dir / f'{stem}_timeout.png'}")
        time.sleep(1.0)
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    errors = stderr.all_inner_texts()
    errors = [e for e in errors if "Traceback" in e or "Error" in e]
    first = MOVES[stem][0][0]
    cell = page.locator(".jp-CodeCell", has=_label(page, first)).last
    cell.scroll_into_view_if_needed()
    out_dir.mkdir(parents=True, exist_ok=True)
    before_png = out_dir / f"{stem}_before.png"
    cell.locator(".jp-Cell-outputWrapper").screenshot(path=str(before_png))
    before = _figure_png(page, cell)
    for description, value in MOVES[stem]:
        current = _figure_png(page, cell)
        _move(page, cell, description, value)
        end = time.monotonic() + 120
        while _figure_png(page, cell) == current and time.monotonic() < end:  # wait for the redraw
            time.sleep(0.5)
    after_png = out_dir / f"{stem}_after.png"
    cell.locator(".jp-Cell-outputWrapper").screenshot(path=str(after_png))
    changed = _figure_png(page, cell) != before
    page.close()
    return {"before": before_png, "after": after_png, "changed": changed, "errors": errors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=list(MOVES), help=f"stems, of {list(MOVES)}")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    args = parser.parse_args(argv)
    unknown = [n for n in args.notebooks if n not in MOVES]
    if unknown:
        print(f"widget_screenshots: no widget move defined for {unknown[0]!r}; known: {list(MOVES)}",
              file=sys.stderr)
        return 2
    if not CHROMIUM.is_file():
        print(f"widget_screenshots: {CHROMIUM} is missing: install Debian's chromium "
              "(apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    status = 0
    with jupyter_lab(args.notebooks) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for stem in args.notebooks:
                result = drive(stem, Path(args.out), base, token, browser)
                print(f"{stem}: before {result['before']}, after {result['after']}, figure redrawn: "
                      f"{result['changed']}, errors: {len(result['errors'])}")
                status |= int(not result["changed"] or bool(result["errors"]))
        finally:
            browser.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
