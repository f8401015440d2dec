"""A widget driven in JupyterLab in a real browser: the notebook runs, a slider and a dropdown move, the
figure is redrawn, and no cell shows an error (scripts/widget_screenshots.py does the driving).

Needs Debian's chromium (apt-get install chromium) and the playwright package; skipped where either is
missing. One notebook (07, the quickest with a widget) keeps it to well under a minute.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "widget_screenshots.py"


def _script():
    spec = importlib.util.spec_from_file_location("widget_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roi_align_widget_redraws_in_jupyterlab(tmp_path, browser):
    # The session's browser (conftest.py): a second Playwright beside it would find its event loop running.
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    shots = _script()
    with shots.jupyter_lab(["07_roi_align"]) as (base, token):
        result = shots.drive("07_roi_align", tmp_path, base, token, browser)
    assert result["errors"] == []
    assert result["changed"], "moving the widgets did not redraw the figure"
    assert result["before"].stat().st_size > 0 and result["after"].stat().st_size > 0
    assert result["before"].read_bytes() != result["after"].read_bytes()
